"""Redis probe (all eras): PlaceOS's own PING, then proof that PlaceOS's keys are readable.

Redis holds module metadata and status (internals §3.1): ``status/<module_id>`` hashes whose
``connected`` field is a JSON-encoded "true"/"false". We count modules by that field with SCAN and
pipelined HGETs, capped per cycle so a 20,000-module cluster costs a bounded amount.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import redis.asyncio as aioredis

from exporter.model.metric import MetricSpec
from exporter.model.vocabulary import ProbeName, Reason
from exporter.probes.base import MetricRow, Outcome, ProbeContext, ProbeSpec, Samples
from exporter.probes.clients.redis import ERRORS, client, close

# Module ids are "mod-<...>" in PlaceOS (models); trigger instances also keep status/<trig-...>
# hashes (internals §3.1) and must not be counted as modules.
MODULE_STATUS_MATCH = "status/mod-*"
SCAN_BATCH = 1000
MODULE_STATES = ("connected", "disconnected", "unknown")


@dataclass(frozen=True)
class RedisFacts:
    connected: int
    disconnected: int
    unknown: int
    truncated: bool  # the scan stopped at redis.module_scan_cap


async def count_modules(conn: aioredis.Redis, cap: int) -> dict[str, int]:
    """Modules by ``connected`` state from ``status/mod-*`` hashes, reading at most ``cap`` of them."""
    counts = {"connected": 0, "disconnected": 0, "unknown": 0, "truncated": 0}
    seen = 0
    cursor: int = 0
    while True:
        cursor, keys = await conn.scan(cursor=cursor, match=MODULE_STATUS_MATCH, count=SCAN_BATCH)
        if keys:
            keys = keys[: max(0, cap - seen)]
            pipe = conn.pipeline(transaction=False)
            for key in keys:
                pipe.hget(key, "connected")
            for value in await pipe.execute():
                counts[module_state(value)] += 1
            seen += len(keys)
        if cursor == 0:
            break
        if seen >= cap:
            counts["truncated"] = 1
            break
    return counts


def module_state(raw: str | None) -> str:
    """connected / disconnected / unknown from the hash field (a JSON-encoded bool, internals §3.1)."""
    if raw is None:
        return "unknown"
    try:
        value = json.loads(raw)
    except ValueError:
        return "unknown"
    if value is True:
        return "connected"
    if value is False:
        return "disconnected"
    return "unknown"


async def run(ctx: ProbeContext) -> Outcome:
    settings = ctx.cluster.redis
    conn = client(settings, ctx.timeout)
    try:
        await conn.ping()
        counts = await count_modules(conn, settings.module_scan_cap)
    finally:
        await close(conn, ctx)
    facts = RedisFacts(counts["connected"], counts["disconnected"], counts["unknown"], bool(counts["truncated"]))
    total = facts.connected + facts.disconnected + facts.unknown
    return Outcome(Reason.OK, f"PONG; {total} module status hashes read", facts)


def _modules(facts: RedisFacts | None, _: object) -> Samples:
    for state in MODULE_STATES:
        yield (state,), float("nan") if facts is None else float(getattr(facts, state))


def _truncated(facts: RedisFacts | None, _: object) -> Samples:
    yield (), float("nan") if facts is None else float(facts.truncated)


SPEC = ProbeSpec(
    name=ProbeName.REDIS,
    run=run,
    checks="Redis answers PING and the module status hashes are readable",
    section="redis",
    needs="redis.url (REDIS_URL)",
    facts=RedisFacts,
    metrics=(
        MetricRow(MetricSpec("placeos_modules", "gauge",
                             "Modules by the connected field of their Redis status hash (capped scan).",
                             ("state",), {"state": MODULE_STATES}), _modules),
        MetricRow(MetricSpec("placeos_modules_scan_truncated", "gauge",
                             "1 if the module scan stopped at redis.module_scan_cap."), _truncated),
    ),
    errors=ERRORS,
)  # fmt: skip
