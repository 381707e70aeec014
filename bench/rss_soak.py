"""RSS of the exporter process at steady state and its growth over a soak with failing backends.

Setup: real etcd + Redis on loopback; the exporter in its own process (``bench.exporter_child``: the
real ``Exporter`` plus a task that reports the number of asyncio tasks), probing every second.
Prometheus-like scrapes of /metrics every second (OpenMetrics, gzip, keep-alive). Every
``--fault-every`` seconds the next fault of a cycle is applied: kill etcd, restart it, SIGSTOP Redis,
SIGCONT it, kill Redis, restart it, SIGSTOP etcd, SIGCONT it, ... A warm-up (scrapes and faults
already running) comes first; the steady-state RSS is the median of the first samples after it, the
growth compares it with the median of the last samples. RSS, threads and open fds come from
/proc/<pid>; asyncio tasks from the child.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import (
    PROMETHEUS_HEADERS,
    Backends,
    ExporterProcess,
    Figure,
    Figures,
    ProcSample,
    backends_for,
    exporter_settings,
    info,
    load_extra,
    median,
    pace_until,
    percentile,
    run_main,
    target_max,
    workdir,
)

MB = 1024 * 1024
RSS_TARGET_MB = 80.0
GROWTH_TARGET_PCT = 5.0
EDGE_SAMPLES = 3  # samples whose median is the start (after warm-up) and the end


@dataclass
class Options:
    minutes: float = 10.0
    warmup: float = 60.0  # seconds of scrapes and faults before the steady-state sample
    scrape_interval: float = 1.0
    fault_every: float = 30.0
    sample_every: float = 5.0
    interval: float = 1.0
    timeout: float = 0.8
    backends: tuple[str, ...] = ("etcd", "redis")
    era: str = "A"
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def quick(cls) -> Options:
        return cls(
            minutes=0.03, warmup=0.5, scrape_interval=0.2, fault_every=0.4, sample_every=0.3, interval=0.5,
            timeout=0.3,
        )  # fmt: skip


def expected_keys(opts: Options) -> set[str]:
    return {
        "rss_steady_mb", "rss_end_mb", "rss_max_mb", "rss_growth_pct", "rss_trend_mb_per_h", "fds_start",
        "fds_end", "fds_max", "tasks_start", "tasks_end", "tasks_max", "threads_end", "scrapes",
        "scrape_errors", "scrape_p99_ms", "faults", "soak_minutes",
    }  # fmt: skip


def fault_cycle(names: Sequence[str]) -> list[tuple[str, str]]:
    """kill + restart one backend, then SIGSTOP + SIGCONT another, and so on through all of them."""
    out: list[tuple[str, str]] = []
    for i, name in enumerate(names):
        other = names[-1 - i]
        out += [("kill", name), ("restart", name), ("stop", other), ("cont", other)]
    return out


async def apply(action: str, name: str, backends: Backends) -> None:
    """One fault action, in a thread: scanning /proc and waiting for a restart must not stall the scraper."""
    server = backends[name]
    actions = {"kill": server.proc.kill, "restart": server.restart, "stop": server.proc.stop, "cont": server.proc.cont}
    await asyncio.to_thread(actions[action])


@dataclass
class Sample:
    proc: ProcSample
    tasks: int


def slope_per_hour(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per hour."""
    if len(points) < 2:
        return float("nan")
    n = len(points)
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    sxx = sum((p[0] - mx) ** 2 for p in points)
    if sxx == 0:
        return float("nan")
    return sum((p[0] - mx) * (p[1] - my) for p in points) / sxx * 3600


async def soak(opts: Options, backends: Backends, exp: ExporterProcess) -> Figures:
    loop = asyncio.get_running_loop()
    start = loop.time()
    measure_from = start + opts.warmup
    end = measure_from + opts.minutes * 60
    latencies: list[float] = []
    errors = 0
    faults = 0
    samples: list[Sample] = []

    async def scraper() -> None:
        nonlocal errors
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            tick = loop.time()
            while tick < end:
                t0 = time.perf_counter()
                try:
                    async with session.get(exp.url + "/metrics", headers=PROMETHEUS_HEADERS) as resp:
                        await resp.read()
                        if resp.status != 200:
                            errors += 1
                except aiohttp.ClientError:
                    errors += 1
                latencies.append(time.perf_counter() - t0)
                tick += opts.scrape_interval
                await pace_until(tick)

    async def faulter() -> None:
        nonlocal faults
        tick = loop.time()
        for action, name in itertools.cycle(fault_cycle(backends.names)):
            tick += opts.fault_every
            if tick >= end:
                return
            await pace_until(tick)
            await apply(action, name, backends)
            faults += 1

    async def sampler() -> None:
        tick = measure_from
        while tick <= end + 1e-9:
            await pace_until(tick)
            proc = exp.sample()
            stats = await exp.stats_after(time.time() - 1.5 * exp.stats_interval)
            samples.append(Sample(proc, int(stats["tasks"])))
            tick += opts.sample_every

    try:
        await asyncio.gather(scraper(), faulter(), sampler())
    finally:
        backends.heal()

    first, last = samples[:EDGE_SAMPLES], samples[-EDGE_SAMPLES:]
    rss0 = median([s.proc.rss_bytes for s in first]) / MB
    rss1 = median([s.proc.rss_bytes for s in last]) / MB
    trend = slope_per_hour([(s.proc.at, s.proc.rss_bytes / MB) for s in samples])
    growth = (rss1 - rss0) / rss0 * 100
    soak_note = f"{opts.minutes:g} min after {opts.warmup:g} s warm-up; {len(samples)} samples"
    return {
        "rss_steady_mb": target_max(rss0, RSS_TARGET_MB, "MB", f"median of the first {len(first)} samples"),
        "rss_end_mb": info(rss1, "MB", f"median of the last {len(last)} samples", key=True),
        "rss_max_mb": info(max(s.proc.rss_bytes for s in samples) / MB, "MB", key=True),
        "rss_growth_pct": target_max(growth, GROWTH_TARGET_PCT, "%", soak_note, strict=True),
        "rss_trend_mb_per_h": info(trend, "MB/h", "least-squares slope over the soak", key=True),
        "fds_start": info(first[0].proc.fds, "count", "open fds (/proc/<pid>/fd)", key=True),
        "fds_end": info(last[-1].proc.fds, "count", key=True),
        "fds_max": info(max(s.proc.fds for s in samples), "count"),
        "tasks_start": info(first[0].tasks, "count", "asyncio tasks in the exporter", key=True),
        "tasks_end": info(last[-1].tasks, "count", key=True),
        "tasks_max": info(max(s.tasks for s in samples), "count"),
        "threads_end": info(last[-1].proc.threads, "count"),
        "scrapes": info(len(latencies), "count", f"every {opts.scrape_interval:g} s, Prometheus headers"),
        "scrape_errors": Figure(errors, "count", "= 0", errors == 0, "non-200 or failed scrapes"),
        "scrape_p99_ms": info(percentile(latencies, 99) * 1000, "ms", "during faults", key=True),
        "faults": info(faults, "count", f"one every {opts.fault_every:g} s: kill/restart, SIGSTOP/SIGCONT"),
        "soak_minutes": info(opts.minutes, "min"),
    }


def measure(opts: Options, backends: Backends | None = None) -> Figures:
    with backends_for(opts.backends, backends) as bk, workdir("soak") as wd:
        settings = exporter_settings([bk.cluster(era=opts.era, extra=opts.extra)], opts.interval, opts.timeout)
        with ExporterProcess(settings, wd / "exporter", mode="child", stats_interval=opts.sample_every / 2) as exp:
            return asyncio.run(soak(opts, bk, exp))


def parse_args(argv: Sequence[str] | None) -> Options:
    p = argparse.ArgumentParser(prog="python -m bench.rss_soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a few seconds (smoke test)")
    p.add_argument("--minutes", type=float, help="soak length after the warm-up (10)")
    p.add_argument("--warmup", type=float, help="seconds before the steady-state sample (60)")
    p.add_argument("--scrape-interval", type=float, help="seconds between scrapes (1)")
    p.add_argument("--fault-every", type=float, help="seconds between fault actions (30)")
    p.add_argument("--sample-every", type=float, help="seconds between RSS samples (5)")
    p.add_argument("--interval", type=float, help="probe interval, s (1)")
    p.add_argument("--timeout", type=float, help="probe timeout, s (0.8)")
    p.add_argument("--backends", help="real servers to start and break: etcd,redis[,postgres]")
    p.add_argument("--era", choices=["A", "B", "C"])
    p.add_argument("--extra-config", type=Path, help="YAML merged into the cluster (configures more probes)")
    a = p.parse_args(argv)
    opts = Options.quick() if a.quick else Options()
    changes: dict[str, Any] = {
        k: v
        for k, v in {
            "minutes": a.minutes, "warmup": a.warmup, "scrape_interval": a.scrape_interval,
            "fault_every": a.fault_every, "sample_every": a.sample_every, "interval": a.interval,
            "timeout": a.timeout, "era": a.era,
        }.items()
        if v is not None
    }  # fmt: skip
    if a.backends:
        changes["backends"] = tuple(a.backends.split(","))
    changes["extra"] = load_extra(a.extra_config)
    return replace(opts, **changes)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    return run_main("rss_soak", "rss_soak", argv, lambda: measure(opts))


if __name__ == "__main__":
    raise SystemExit(main())
