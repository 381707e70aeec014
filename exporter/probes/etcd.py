"""etcd probe (eras A/B): what PlaceOS itself checks, over the same JSON gateway PlaceOS uses.

PlaceOS's crystal-etcd client speaks etcd's gRPC-JSON gateway (POST, base64 keys), and rest-api/core
health is ``POST /v3/maintenance/status`` (internals §1.1); ``clients/etcd_gateway.py`` does the same.

Steps: authenticate (if a user is configured), maintenance/status (leader present, alarms), then a
count-only range over ``<namespace>/core/`` = core registrations under live leases (hound-dog keys,
internals §1.1).
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.model.metric import MetricSpec
from exporter.model.vocabulary import Era, ProbeName, Reason
from exporter.probes.base import MetricRow, Outcome, ProbeContext, ProbeFailure, ProbeSpec, Samples
from exporter.probes.clients.etcd_gateway import connect, core_prefix


@dataclass(frozen=True)
class EtcdFacts:
    has_leader: bool
    version: str
    api_prefix: str  # v3 or v3beta
    core_registrations: int | None = None  # unknown when the probe failed before counting


async def run(ctx: ProbeContext) -> Outcome:
    gateway = await connect(ctx)
    status = await gateway.call("maintenance/status", {})
    leader = int(status.get("leader") or 0)
    facts = EtcdFacts(bool(leader), str(status.get("version", "")), gateway.prefix)
    alarms = status.get("errors") or []
    if alarms:
        raise ProbeFailure(Reason.UNHEALTHY, f"etcd alarms: {', '.join(map(str, alarms))[:200]}", facts)
    if not leader:
        raise ProbeFailure(Reason.UNHEALTHY, "etcd has no leader", facts)
    # Proves the keys PlaceOS needs are readable (a quorum read), and counts live registrations.
    count = await gateway.count_prefix(core_prefix(ctx.cluster.etcd))
    facts = EtcdFacts(True, facts.version, facts.api_prefix, count)
    return Outcome(Reason.OK, f"etcd {facts.version} has a leader", facts)


def _has_leader(facts: EtcdFacts | None, _: object) -> Samples:
    yield (), float("nan") if facts is None else float(facts.has_leader)


SPEC = ProbeSpec(
    name=ProbeName.ETCD,
    run=run,
    checks="etcd has a leader and no alarms, and the core registrations are readable",
    eras=frozenset({Era.A, Era.B}),
    section="etcd",
    needs="etcd.host/port (ETCD_HOST, ETCD_PORT)",
    facts=EtcdFacts,
    metrics=(
        MetricRow(
            MetricSpec("placeos_etcd_has_leader", "gauge", "1 if etcd reports a leader (eras A/B)."), _has_leader
        ),
    ),
)
