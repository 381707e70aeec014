"""build_service probe: can drivers be compiled? ``GET /api/engine/v2/build/monitor`` (rest-api #413,
cd3ae1f 2025-09-16, controllers/build_monitor.cr; core #282 ``GET /monitor``).

rest-api asks every core for the build service's pending jobs; a core that cannot reach the build
service answers 5xx with "Call to Build service endpoint failed ..." as text. A cluster from before
#413 answers 404: the capability is absent, which is never a failure (placeos_capability_available 0).
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.model.vocabulary import ProbeName, Reason
from exporter.probes.base import Outcome, ProbeContext, ProbeSpec
from exporter.probes.clients.rest_api import ENGINE, api_get, can_log_in, fail_for


@dataclass(frozen=True)
class CapabilityFacts:
    available: bool  # the cluster serves the optional route at all


async def run(ctx: ProbeContext) -> Outcome:
    status, body, _ = await api_get(ctx, f"{ENGINE}/build/monitor")
    if status == 404:
        return Outcome(Reason.OK, "no build monitor route (rest-api before #413)", CapabilityFacts(False))
    if status != 200:
        failure = fail_for(status, body, "build monitor")
        failure.facts = CapabilityFacts(True)
        raise failure
    jobs = len(body) if isinstance(body, list) else 0
    return Outcome(Reason.OK, f"build service answers; {jobs} pending job(s)", CapabilityFacts(True))


SPEC = ProbeSpec(
    name=ProbeName.BUILD_SERVICE,
    run=run,
    checks="the build service answers the cores (where the cluster has the build monitor route)",
    enabled_by=can_log_in,
    needs="api.url and a credential",
    facts=CapabilityFacts,
    capability="build_monitor",
)
