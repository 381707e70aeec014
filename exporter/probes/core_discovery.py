"""core_discovery probe: can the API find a live core? (internals §1.1 eras A/B, §1.2 era C).

Eras A/B: hound-dog keys ``service/core/<ULID>`` live under 15 s leases, so every key is live.
Era C: ``{service_core}_lookup`` entries whose ``{service_core}.<ULID>`` key has expired are stale:
PlaceOS keeps routing to them (internals §1.2), so a stale entry is a failure even with a live core.
"""

from __future__ import annotations

from exporter.probes import api
from exporter.probes import etcd as etcd_probe
from exporter.probes import redis as redis_probe
from exporter.probes.base import Outcome, ProbeContext, ProbeFailure
from exporter.reasons import Reason
from exporter.settings import Era


async def registrations(ctx: ProbeContext) -> dict[str, int]:
    """Live and stale core registrations, from wherever this era keeps them."""
    if ctx.era is Era.C:
        conn = redis_probe.client(ctx.cluster.redis, ctx.timeout)
        try:
            return await redis_probe.core_registrations(conn)
        finally:
            await redis_probe.close(conn, ctx)
    gateway = await etcd_probe.connect(ctx)
    live = await gateway.count_prefix(etcd_probe.core_prefix(ctx.cluster.etcd))
    return {"live": live, "stale": 0}


async def unanswered(ctx: ProbeContext) -> list[str]:
    """Cores in discovery that do not answer the API's cluster route: rest-api silently drops a core
    whose status request fails, so compare the list without and with status (internals §11.1)."""
    status, listed, _ = await api.api_get(ctx, f"{api.ENGINE}/cluster?include_status=false")
    status_full, answered, _ = await api.api_get(ctx, f"{api.ENGINE}/cluster?include_status=true")
    if status != 200 or status_full != 200 or not isinstance(listed, list) or not isinstance(answered, list):
        return []  # the API's own trouble is the api/login probes' to report
    ids = {str(c.get("id")) for c in answered if isinstance(c, dict)}
    return [str(c.get("id")) for c in listed if isinstance(c, dict) and str(c.get("id")) not in ids]


async def probe(ctx: ProbeContext) -> Outcome:
    counts = await registrations(ctx)
    facts: dict[str, object] = {"cores_live": counts["live"], "cores_stale": counts["stale"]}
    if ctx.cluster.api.url and api.has_credentials(ctx.cluster.api) and counts["live"]:
        try:
            silent = await unanswered(ctx)
        except Exception:  # the API unreachable or failing is the api/login probes' to report
            silent = []
        facts["cores_unanswered"] = len(silent)
        if silent:
            raise ProbeFailure(
                Reason.CORE_UNREACHABLE, f"core(s) registered but not answering the API: {', '.join(silent)}", facts
            )
    where = "Redis" if ctx.era is Era.C else "etcd"
    if counts["live"] == 0:
        raise ProbeFailure(Reason.NO_CORE_INSTANCES, f"no live core registered in {where}", facts)
    if counts["stale"]:
        raise ProbeFailure(
            Reason.CORE_UNREACHABLE,
            f"{counts['stale']} stale core registration(s) in {where}: the API still routes to them",
            facts,
        )
    return Outcome(Reason.OK, f"{counts['live']} live core(s) in {where}", facts)
