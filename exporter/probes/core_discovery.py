"""core_discovery probe: can the API find a live core? (internals §1.1 eras A/B, §1.2 era C).

Eras A/B: hound-dog keys ``service/core/<ULID>`` live under 15 s leases, so every key is live.
Era C: ``{service_core}_lookup`` entries whose ``{service_core}.<ULID>`` key has expired are stale:
PlaceOS keeps routing to them (internals §1.2), so a stale entry is a failure even with a live core.
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.model.metric import MetricSpec
from exporter.model.vocabulary import Era, ProbeName, Reason
from exporter.probes.base import MetricRow, Outcome, ProbeContext, ProbeFailure, ProbeSpec, Samples
from exporter.probes.clients import redis as redis_client
from exporter.probes.clients.etcd_gateway import connect, core_prefix
from exporter.probes.clients.rest_api import ENGINE, api_get, has_credentials
from exporter.settings import ClusterConfig

CORE_STATES = ("live", "stale")


@dataclass(frozen=True)
class CoreFacts:
    live: int
    stale: int
    unanswered: int | None = None  # registered cores the API's cluster route drops (None: not asked)


async def registrations(ctx: ProbeContext) -> dict[str, int]:
    """Live and stale core registrations, from wherever this era keeps them."""
    if ctx.era in (Era.C, Era.D):
        conn = redis_client.client(ctx.cluster.redis, ctx.timeout)
        try:
            return await redis_client.core_registrations(conn)
        finally:
            await redis_client.close(conn, ctx)
    gateway = await connect(ctx)
    live = await gateway.count_prefix(core_prefix(ctx.cluster.etcd))
    return {"live": live, "stale": 0}


async def unanswered(ctx: ProbeContext) -> list[str]:
    """Cores in discovery that do not answer the API's cluster route: rest-api silently drops a core
    whose status request fails, so compare the list without and with status (internals §11.1)."""
    status, listed, _ = await api_get(ctx, f"{ENGINE}/cluster?include_status=false")
    status_full, answered, _ = await api_get(ctx, f"{ENGINE}/cluster?include_status=true")
    if status != 200 or status_full != 200 or not isinstance(listed, list) or not isinstance(answered, list):
        return []  # the API's own trouble is the api/login probes' to report
    ids = {str(c.get("id")) for c in answered if isinstance(c, dict)}
    return [str(c.get("id")) for c in listed if isinstance(c, dict) and str(c.get("id")) not in ids]


async def run(ctx: ProbeContext) -> Outcome:
    counts = await registrations(ctx)
    facts = CoreFacts(counts["live"], counts["stale"])
    if ctx.cluster.api.url and has_credentials(ctx.cluster.api) and counts["live"]:
        try:
            silent = await unanswered(ctx)
        except Exception:  # the API unreachable or failing is the api/login probes' to report
            silent = []
        facts = CoreFacts(counts["live"], counts["stale"], len(silent))
        if silent:
            raise ProbeFailure(
                Reason.CORE_UNREACHABLE, f"core(s) registered but not answering the API: {', '.join(silent)}", facts
            )
    where = "Redis" if ctx.era in (Era.C, Era.D) else "etcd"
    if counts["live"] == 0:
        raise ProbeFailure(Reason.NO_CORE_INSTANCES, f"no live core registered in {where}", facts)
    if counts["stale"]:
        raise ProbeFailure(
            Reason.CORE_UNREACHABLE,
            f"{counts['stale']} stale core registration(s) in {where}: the API still routes to them",
            facts,
        )
    return Outcome(Reason.OK, f"{counts['live']} live core(s) in {where}", facts)


def _instances(facts: CoreFacts | None, _: object) -> Samples:
    yield ("live",), float("nan") if facts is None else float(facts.live)
    yield ("stale",), float("nan") if facts is None else float(facts.stale)


def _discovery_configured(c: ClusterConfig, era: Era) -> bool:
    """Discovery lives in etcd (A/B) or Redis (C): on where that backend is configured and not off."""
    return (c.redis if era in (Era.C, Era.D) else c.etcd).probed


SPEC = ProbeSpec(
    name=ProbeName.CORE_DISCOVERY,
    run=run,
    checks="a live core is registered (etcd in eras A/B, Redis in C), none stale, each answering the API",
    enabled_by=_discovery_configured,
    needs="etcd (eras A/B) or Redis (era C) configured",
    facts=CoreFacts,
    metrics=(
        MetricRow(MetricSpec("placeos_core_instances", "gauge",
                             "Core registrations: live, or stale (era C lookup entries whose live key expired).",
                             ("state",), {"state": CORE_STATES}), _instances),
    ),
    errors=redis_client.ERRORS,
)  # fmt: skip
