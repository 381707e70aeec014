"""Leaks (issue "Reliability"): descriptors and asyncio tasks stay flat over 1,000 probe cycles.

``Scheduler.run_once()`` is driven directly, 1,000 times after a warm-up, with one long-lived HTTP
session as ``serve`` keeps. Cluster ``live`` probes a real etcd and a real Redis that change state
every 100 cycles: killed (connection refused), restarted, SIGSTOPped (every run cut at its deadline:
the cancellation paths), continued. Cluster ``closed`` points every backend and the rest-api (so
the user-path, WebSocket and execute probes too) at a port nothing listens on. Each phase's reasons
are checked, so the cycles really went through the failure paths; at the end the open descriptors
(/proc/self/fd) and the asyncio tasks must be within a small constant of where they were after the
warm-up, and no socket or transport may have been left for the garbage collector to close.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

from support import settings_for

from exporter.model.vocabulary import ProbeName
from exporter.runtime.scheduler import Scheduler, new_http_session
from exporter.runtime.snapshot import Snapshot
from sandbox.backends import EtcdServer, RedisServer
from sandbox.ports import free_port

PHASES = ("up", "killed", "up", "stopped", "up", "killed", "up", "killed", "up", "up")
CYCLES_PER_PHASE = 100
WARM_UP = 30
LIVE_TIMEOUT = 0.1  # per run of a live probe: a stopped phase costs 100 x this
FD_SLACK = 4
TASK_SLACK = 1
LIVE_PROBES = (ProbeName.ETCD, ProbeName.REDIS)  # core_discovery runs too (no cores registered: no_core_instances)
EXPECTED = {"killed": "connection_refused", "stopped": "timeout"}


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def clusters(etcd: EtcdServer, redis: RedisServer) -> list[dict[str, Any]]:
    port = free_port()
    # The live probes' deadline is short (a stopped phase costs 100 of them); the closed port refuses at
    # once, so its probes keep a longer deadline and a busy machine cannot turn them into timeouts.
    live = {
        "name": "live",
        "era": "A",
        "etcd": {"host": etcd.host, "port": etcd.port},
        "redis": {"url": redis.url},
        "rethinkdb": {"enabled": False},
        "elasticsearch": {"enabled": False},
        "probes": {p: {"timeout": LIVE_TIMEOUT} for p in ("etcd", "redis", "core_discovery")},
    }
    closed = {"name": "closed", "era": "B", "etcd": {"host": "127.0.0.1", "port": port},
              "postgres": {"host": "127.0.0.1", "port": port, "password": "x"},
              "redis": {"url": f"redis://127.0.0.1:{port}/0"},
              "rethinkdb": {"enabled": True, "host": "127.0.0.1", "port": port},
              "elasticsearch": {"host": "127.0.0.1", "port": port},
              "api": {"url": f"http://127.0.0.1:{port}", "api_key": "key-id.key-secret", "system_id": "sys-1",
                      "module": "Display_1", "function": "power?"}}  # fmt: skip
    return [live, closed]


async def change(phase: str, previous: str, servers: tuple[EtcdServer, RedisServer]) -> None:
    for server in servers:
        if phase == "killed":
            server.proc.kill()
        elif phase == "stopped":
            server.proc.stop()
        elif previous == "killed":
            await asyncio.to_thread(server.restart)
        elif previous == "stopped":
            server.proc.cont()


async def test_fds_and_tasks_stay_flat_over_1000_cycles(etcd: EtcdServer, redis_server: RedisServer) -> None:
    settings = settings_for({}, clusters=clusters(etcd, redis_server), interval=2.0, timeout=1.0)
    scheduler = Scheduler(settings, Snapshot())
    scheduler.http = new_http_session()
    live = scheduler.snapshot.clusters["live"]
    closed = scheduler.snapshot.clusters["closed"]
    try:
        for _ in range(WARM_UP):
            await scheduler.run_once()
        assert all(live.probes[p].reason == "ok" for p in LIVE_PROBES), {p: live.probes[p].reason for p in LIVE_PROBES}
        closed_probes = [s.probe for s in closed.enabled()]
        assert len(closed_probes) >= 10, closed_probes
        gc.collect()
        fds, tasks, rss = open_fds(), len(asyncio.all_tasks()), rss_mib()
        started = time.monotonic()
        trace: list[str] = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            previous = "up"
            for phase in PHASES:
                await change(phase, previous, (etcd, redis_server))
                seen: Counter[str] = Counter()
                for _ in range(CYCLES_PER_PHASE):
                    await scheduler.run_once()
                    seen.update(str(live.probes[p].reason) for p in LIVE_PROBES)
                    assert all(closed.probes[p].reason == "connection_refused" for p in closed_probes), {
                        p: closed.probes[p].reason
                        for p in closed_probes
                        if closed.probes[p].reason != "connection_refused"
                    }
                # Each run of a phase fails the phase's way; a busy machine may cut some of them at the
                # 0.1 s deadline instead (hardly any: a run takes milliseconds).
                expected = EXPECTED.get(phase, "ok")
                assert set(seen) <= {expected, "timeout"}, f"phase {phase}: {dict(seen)}"
                assert seen[expected] >= 0.8 * CYCLES_PER_PHASE * len(LIVE_PROBES), f"phase {phase}: {dict(seen)}"
                trace.append(f"{phase}: fds {open_fds()}, tasks {len(asyncio.all_tasks())}")
                previous = phase
            gc.collect()
        elapsed = time.monotonic() - started
        end_fds, end_tasks = open_fds(), len(asyncio.all_tasks())
        print(f"\n1000 cycles in {elapsed:.1f}s; fds {fds} -> {end_fds}, tasks {tasks} -> {end_tasks}, "
              f"RSS {rss:.1f} -> {rss_mib():.1f} MiB; " + "; ".join(trace))  # fmt: skip
        assert end_fds - fds <= FD_SLACK, f"descriptors {fds} -> {end_fds}: " + "; ".join(trace)
        assert end_tasks - tasks <= TASK_SLACK, f"tasks {tasks} -> {end_tasks}: {asyncio.all_tasks()}"
        unclosed = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
        assert not unclosed, f"{len(unclosed)} left to the garbage collector, e.g. {unclosed[:3]}"
    finally:
        for server in (etcd, redis_server):
            server.proc.cont()
        await scheduler.http.close()
