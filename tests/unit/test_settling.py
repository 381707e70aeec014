"""The seconds after a change: the scheduler re-checks a cluster's other probes at once, and until they
have reported the diagnosis says it is settling and keeps the last settled causes, never a wrong one.

Seen by a user: after Redis was killed, /diagnose said "rest-api or load balancer failure", then api +
unknown, before settling on Redis 4-5 s later (each probe waited for its own slot). Here the probes are
stubs over a shared "world" (so the test is about the scheduler, not a backend); their intervals are
long, except the health route's, whose scheduled run is the first to see Redis die.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

from support import settings_for

from exporter.model.vocabulary import ProbeName, Reason
from exporter.probes import REGISTRY
from exporter.probes.base import Outcome, ProbeContext, ProbeFailure
from exporter.runtime.scheduler import Scheduler
from exporter.runtime.snapshot import Snapshot

WORLD = {"redis": True}
WHEN_REDIS_IS_DOWN = {
    ProbeName.REDIS: Reason.CONNECTION_REFUSED,
    ProbeName.API_HEALTH: Reason.UNHEALTHY,
    ProbeName.MODULE_FUNCTIONS: Reason.HTTP_5XX,
    ProbeName.LOGIN: Reason.OK,
}


def stub(name: str):  # type: ignore[no-untyped-def]
    async def run(ctx: ProbeContext) -> Outcome:
        await asyncio.sleep(0.02)
        reason = Reason.OK if WORLD["redis"] else WHEN_REDIS_IS_DOWN[ProbeName(name)]
        if reason is not Reason.OK:
            raise ProbeFailure(reason, "stub")
        return Outcome(Reason.OK, "stub")

    return run


async def test_a_change_is_settled_by_rechecking_not_by_waiting_for_each_slot() -> None:
    registry = [dataclasses.replace(s, run=stub(s.name)) for s in REGISTRY if s.name in WHEN_REDIS_IS_DOWN]
    slow = {"interval": 60.0, "timeout": 5.0, "enabled": True}
    probes = {name.value: dict(slow) for name in WHEN_REDIS_IS_DOWN}
    probes[ProbeName.API_HEALTH.value] = {"interval": 0.3, "timeout": 0.2, "enabled": True}
    settings = settings_for({"era": "C", "probes": probes}, interval=60.0, timeout=5.0)
    snapshot = Snapshot()
    scheduler = Scheduler(settings, snapshot, registry=registry)
    cluster = snapshot.clusters["default"]
    WORLD["redis"] = True
    await scheduler.start()
    try:
        async with asyncio.timeout(5):
            while set(cluster.diagnosis.causes) != {"none"}:
                await asyncio.sleep(0.01)
        WORLD["redis"] = False
        seen: list[tuple[frozenset[str], bool]] = []
        deadline = time.monotonic() + 5  # the health route's next slot is <= 0.3 s away; re-checks follow
        while time.monotonic() < deadline:
            d = cluster.diagnosis
            seen.append((frozenset(d.causes), bool(d.settling)))
            if set(d.causes) == {"redis"} and not d.settling:
                break
            await asyncio.sleep(0.005)
        assert seen[-1] == (frozenset({"redis"}), False), seen[-1]
        assert {causes for causes, _ in seen} <= {frozenset({"none"}), frozenset({"redis"})}, set(seen)
        assert any(settling for _, settling in seen)  # the held picture said it was settling
        # Re-checked at once: Redis's own slot is a minute away.
        assert cluster.probes[ProbeName.REDIS].runs == 2
        assert "Settling" not in cluster.diagnosis.verdict()
    finally:
        WORLD["redis"] = True
        await scheduler.stop()
