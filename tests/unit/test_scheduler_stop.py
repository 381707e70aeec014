"""Shutdown never waits on a probe that swallowed its cancellation.

Python 3.11's ``asyncio.wait_for`` (used inside redis-py, for one) can swallow a cancellation that
coincides with its inner read finishing; the probe loop then runs on. ``Scheduler.stop`` cancels again
until the task ends, so a reload or SIGTERM does not sit out STOP_TIMEOUT.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from support import settings_for

from exporter.model.vocabulary import ProbeName, Reason
from exporter.probes import REGISTRY
from exporter.probes.base import Outcome, ProbeContext
from exporter.runtime import scheduler as scheduler_module
from exporter.runtime.scheduler import Scheduler
from exporter.runtime.snapshot import Snapshot


async def test_stop_ends_a_probe_that_swallowed_one_cancellation(monkeypatch: pytest.MonkeyPatch) -> None:
    entered = asyncio.Event()
    swallowed = 0

    async def stubborn(ctx: ProbeContext) -> Outcome:
        nonlocal swallowed
        entered.set()
        while swallowed < 3:  # more than the scheduler's own two cancellations (stop, then its cluster task)
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                swallowed += 1  # what a swallowing wait_for does: carry on as if nothing happened
        await asyncio.sleep(30)
        return Outcome(Reason.OK, "")

    settings = settings_for({"era": "C", "redis": {"url": "redis://127.0.0.1:1"}}, interval=60.0, timeout=50.0)
    registry = [dataclasses.replace(s, run=stubborn) if s.name == ProbeName.REDIS else s for s in REGISTRY]
    scheduler = Scheduler(settings, Snapshot(), registry=registry)
    await scheduler.start()
    async with asyncio.timeout(5):
        await entered.wait()  # the first run started (within the start spread, <= 1 s)
    tasks = [t for ts in scheduler.tasks.values() for t in ts]
    async with asyncio.timeout(scheduler_module.STOP_TIMEOUT / 2):  # well before the bound
        await scheduler.stop()
    assert swallowed == 3
    assert all(t.done() for t in tasks)
