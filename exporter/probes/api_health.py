"""api_health probe: ``GET /api/engine/v2/`` without auth, the rest-api's own health route (internals §5.1).

The route checks Redis, etcd and the database as the API sees them, and answers 5xx (or hangs) while
one is down; the diagnosis reads it beside the backend probes.
"""

from __future__ import annotations

from exporter.model.vocabulary import ProbeName, Reason
from exporter.probes.base import Outcome, ProbeContext, ProbeFailure, ProbeSpec
from exporter.probes.clients.rest_api import ENGINE, api_configured, api_get, fail_for


async def run(ctx: ProbeContext) -> Outcome:
    status, body, _ = await api_get(ctx, f"{ENGINE}/", auth=False)
    if status == 500:
        # rest-api's own "not healthy": a backend it checks failed (internals §5.1); a proxy in front
        # answers 502/503/504 when rest-api itself is down.
        raise ProbeFailure(Reason.UNHEALTHY, "health route: HTTP 500: rest-api reports a backend unhealthy")
    if status != 200:
        raise fail_for(status, body, "health route")
    return Outcome(Reason.OK, "rest-api health route answers 200")


SPEC = ProbeSpec(
    name=ProbeName.API_HEALTH,
    run=run,
    checks="the rest-api health route answers 200 (its backends, as the API sees them)",
    enabled_by=api_configured,
    needs="api.url",
)
