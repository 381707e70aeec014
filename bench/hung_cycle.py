"""A probe cycle with every backend hung (SIGSTOP) ends within timeout + 0.1 s.

Setup: real etcd + Redis on loopback, every one SIGSTOPped (the kernel still accepts connections,
nothing answers). In this process: the exporter's ``Scheduler`` for that cluster and
``Scheduler.run_once()`` (every enabled probe once, concurrently, then the HTTP session closed), timed
from call to return, several times. A healthy cycle is timed first for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.common import (
    Backends,
    Figures,
    backends_for,
    exporter_settings,
    info,
    load_extra,
    median,
    run_main,
    target_max,
)
from exporter import log
from exporter.runtime.scheduler import Scheduler
from exporter.runtime.snapshot import Snapshot
from exporter.settings import Settings, load_settings


@dataclass
class Options:
    repeats: int = 5
    timeout: float = 1.0
    interval: float = 2.0
    backends: tuple[str, ...] = ("etcd", "redis")
    era: str = "A"
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def quick(cls) -> Options:
        return cls(repeats=1, timeout=0.3, interval=0.5)


def expected_keys(opts: Options) -> set[str]:
    return {"healthy_cycle_s", "hung_cycle_median_s", "hung_cycle_max_s", "probes", "probe_max_duration_s"}


async def cycles(settings: Settings, backends: Backends, opts: Options) -> Figures:
    snapshot = Snapshot()
    scheduler = Scheduler(settings, snapshot)
    t0 = time.perf_counter()
    await scheduler.run_once()
    healthy = time.perf_counter() - t0
    cluster = snapshot.default
    healthy_reasons = {s.probe.value: s.reason.value for s in cluster.enabled()}
    durations: list[float] = []
    reasons: dict[str, str] = {}
    for server in backends.servers.values():
        server.proc.stop()
    try:
        for _ in range(opts.repeats):
            t0 = time.perf_counter()
            await scheduler.run_once()
            durations.append(time.perf_counter() - t0)
            reasons = {s.probe.value: s.reason.value for s in cluster.enabled()}
        probe_max = max((s.last.duration for s in cluster.enabled() if s.last), default=float("nan"))
    finally:
        for server in backends.servers.values():
            server.proc.cont()
    limit = opts.timeout + 0.1
    shown = ", ".join(f"{p}={r}" for p, r in reasons.items())
    return {
        "healthy_cycle_s": info(healthy, "s", ", ".join(f"{p}={r}" for p, r in healthy_reasons.items()), key=True),
        "hung_cycle_median_s": target_max(median(durations), limit, "s", f"{len(durations)} cycles; {shown}"),
        "hung_cycle_max_s": target_max(max(durations), limit, "s", f"timeout {opts.timeout:g} + 0.1"),
        "probes": info(len(reasons), "count", "enabled probes per cycle", key=True),
        "probe_max_duration_s": info(probe_max, "s", "longest probe run recorded in the last hung cycle", key=True),
    }


def measure(opts: Options, backends: Backends | None = None) -> Figures:
    log.setup("plain", "error")  # the probes' state-change warnings are expected here
    with backends_for(opts.backends, backends) as bk:
        data = exporter_settings([bk.cluster(era=opts.era, extra=opts.extra)], opts.interval, opts.timeout)
        settings = load_settings(None, environ={}, overrides=data)
        return asyncio.run(cycles(settings, bk, opts))


def parse_args(argv: Sequence[str] | None) -> Options:
    p = argparse.ArgumentParser(prog="python -m bench.hung_cycle", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one cycle, short timeout (smoke test)")
    p.add_argument("--repeats", type=int, help="hung cycles timed (5)")
    p.add_argument("--timeout", type=float, help="probe timeout, s (1)")
    p.add_argument("--interval", type=float, help="probe interval, s (2; only validated)")
    p.add_argument("--backends", help="real servers to start and stop: etcd,redis[,postgres]")
    p.add_argument("--era", choices=["A", "B", "C"])
    p.add_argument("--extra-config", type=Path, help="YAML merged into the cluster (configures more probes)")
    a = p.parse_args(argv)
    opts = Options.quick() if a.quick else Options()
    changes: dict[str, Any] = {
        k: v
        for k, v in {"repeats": a.repeats, "timeout": a.timeout, "interval": a.interval, "era": a.era}.items()
        if v is not None
    }
    if a.backends:
        changes["backends"] = tuple(a.backends.split(","))
    changes["extra"] = load_extra(a.extra_config)
    return replace(opts, **changes)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    return run_main("hung_cycle", "hung_cycle", argv, lambda: measure(opts))


if __name__ == "__main__":
    raise SystemExit(main())
