"""Scale: 50 clusters, each with all its probes at a 5 s interval, in one exporter process.

Setup: real etcd + Redis on loopback; a YAML config of N clusters that all point at them (era A:
etcd, redis, core_discovery today, i.e. 3 probes per cluster; sections configured with
``--extra-config`` add theirs); the exporter in its own process (``bench.exporter_child``: the real
``Exporter`` with ``Scheduler._run_and_record`` wrapped to record schedule lag, see there). Prometheus-
like scrapes from this process: every cluster's ``/probe?cluster=`` and ``/metrics`` once per
``--scrape-interval``, spread over it.

Schedule lag is measured in-process (patched scheduler, not from /metrics timestamps): for every run
after a probe's first, the loop time at which its run starts minus the time its loop planned it for.
CPU use is the process's user+system CPU time (/proc/<pid>/stat) over the wall time of the window
after the warm-up, as a percentage of one core.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
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

LAG_TARGET_MS = 100.0
PROBES_GOAL = 13  # probes per cluster once every probe of the design exists


@dataclass
class Options:
    clusters: int = 50
    interval: float = 5.0
    duration: float = 60.0  # seconds measured after the warm-up
    warmup: float | None = None  # default: one interval + 2 s
    scrape_interval: float = 15.0
    backends: tuple[str, ...] = ("etcd", "redis")
    era: str = "A"
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def quick(cls) -> Options:
        return cls(clusters=3, interval=0.5, duration=1.0, warmup=0.5, scrape_interval=0.5)


def expected_keys(opts: Options) -> set[str]:
    return {
        "clusters", "probes_per_cluster", "probe_tasks", "runs_measured", "runs_per_s", "lag_p50_ms",
        "lag_p99_ms", "lag_max_ms", "cpu_pct", "rss_mb", "scrapes", "scrape_p99_ms", "window_s",
    }  # fmt: skip


async def run(opts: Options, exp: ExporterProcess) -> Figures:
    loop = asyncio.get_running_loop()
    warmup = opts.interval + 2 if opts.warmup is None else opts.warmup
    targets = [f"/probe?cluster=c{i:02d}" for i in range(opts.clusters)] + ["/metrics"]
    latencies: list[float] = []
    scraping = True

    async def scraper() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            tick = loop.time()
            for i in range(1 << 62):
                if not scraping:
                    return
                t0 = time.perf_counter()
                async with session.get(exp.url + targets[i % len(targets)], headers=PROMETHEUS_HEADERS) as resp:
                    await resp.read()
                latencies.append(time.perf_counter() - t0)
                tick += opts.scrape_interval / len(targets)
                await pace_until(tick)

    task = asyncio.create_task(scraper())
    try:
        await pace_until(loop.time() + warmup)
        latencies.clear()
        wall0, cpu0 = time.time(), exp.sample()
        await pace_until(loop.time() + opts.duration)
        wall1, cpu1 = time.time(), exp.sample()
    finally:
        scraping = False
        await task

    stats = await exp.stats_after(wall1)
    lags = [lag for at, _, _, lag in stats["lag"] if wall0 <= at <= wall1]
    per_cluster = Counter(key.split("/", 1)[0] for key in stats["runs"])
    probes = median(list(per_cluster.values())) if per_cluster else 0
    cpu = (cpu1.cpu_seconds - cpu0.cpu_seconds) / (cpu1.at - cpu0.at) * 100
    window = cpu1.at - cpu0.at
    return {
        "clusters": info(len(per_cluster), "count", f"configured {opts.clusters}", key=True),
        "probes_per_cluster": Figure(
            probes,
            "count",
            f">= {PROBES_GOAL} (goal)",
            probes >= PROBES_GOAL,
            f"probes that ran per cluster: {', '.join(sorted({k.split('/', 1)[1] for k in stats['runs']}))}",
        ),
        "probe_tasks": info(len(stats["runs"]), "count", "(cluster, probe) loops"),
        "runs_measured": info(len(lags), "count", "runs in the window (lag samples)"),
        "runs_per_s": info(len(lags) / window, "1/s"),
        "lag_p50_ms": info(median(lags) * 1000, "ms", "in-process: start - planned start", key=True),
        "lag_p99_ms": target_max(percentile(lags, 99) * 1000, LAG_TARGET_MS, "ms", f"{len(lags)} runs", strict=True),
        "lag_max_ms": info(max(lags, default=float("nan")) * 1000, "ms", key=True),
        "cpu_pct": info(cpu, "%", "process CPU time / wall time, % of one core", key=True),
        "rss_mb": info(cpu1.rss_bytes / (1024 * 1024), "MB", key=True),
        "scrapes": info(len(latencies), "count", f"{len(targets)} targets every {opts.scrape_interval:g} s"),
        "scrape_p99_ms": info(percentile(latencies, 99) * 1000, "ms", "/probe?cluster= and /metrics", key=True),
        "window_s": info(window, "s", f"after {warmup:g} s warm-up; interval {opts.interval:g} s"),
    }


def measure(opts: Options, backends: Backends | None = None) -> Figures:
    with backends_for(opts.backends, backends) as bk, workdir("scale") as wd:
        clusters = [bk.cluster(name=f"c{i:02d}", era=opts.era, extra=opts.extra) for i in range(opts.clusters)]
        settings = exporter_settings(clusters, opts.interval, opts.interval * 0.8)
        stats_interval = min(1.0, opts.duration / 4)
        with ExporterProcess(
            settings, wd / "exporter", mode="child", record_lag=True, stats_interval=stats_interval
        ) as exp:
            return asyncio.run(run(opts, exp))


def parse_args(argv: Sequence[str] | None) -> Options:
    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="3 clusters for a second (smoke test)")
    p.add_argument("--clusters", type=int, help="clusters in the config (50)")
    p.add_argument("--interval", type=float, help="probe interval, s (5); timeout 80 %% of it")
    p.add_argument("--duration", type=float, help="seconds measured after the warm-up (60)")
    p.add_argument("--warmup", type=float, help="seconds before measuring (interval + 2)")
    p.add_argument("--scrape-interval", type=float, help="each target scraped once per this, s (15)")
    p.add_argument("--backends", help="real servers to start: etcd,redis[,postgres]")
    p.add_argument("--era", choices=["A", "B", "C"])
    p.add_argument("--extra-config", type=Path, help="YAML merged into every cluster (configures more probes)")
    a = p.parse_args(argv)
    opts = Options.quick() if a.quick else Options()
    changes: dict[str, Any] = {
        k: v
        for k, v in {
            "clusters": a.clusters, "interval": a.interval, "duration": a.duration, "warmup": a.warmup,
            "scrape_interval": a.scrape_interval, "era": a.era,
        }.items()
        if v is not None
    }  # fmt: skip
    if a.backends:
        changes["backends"] = tuple(a.backends.split(","))
    changes["extra"] = load_extra(a.extra_config)
    return replace(opts, **changes)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    return run_main("scale", "scale", argv, lambda: measure(opts))


if __name__ == "__main__":
    raise SystemExit(main())
