"""Scale: 50 clusters, each with all its probes at a 5 s interval, in one exporter process.

Setup (default, ``--sandbox``): one ``placeos-sandbox`` of the era (``sandbox.cluster.Sandbox``: real
etcd, Redis, PostgreSQL; the RethinkDB and Elasticsearch stand-ins; simulated core, search-ingest,
rest-api, triggers) and a YAML config of N clusters that all point at it, each the sandbox's own
exporter settings (``Sandbox.exporter_cluster``, as ``placeos-sandbox up`` prints them). Era A runs
13 probes per cluster at the interval (etcd, rethinkdb, redis, elasticsearch and the user path:
api_health, login, systems_list, module_functions, execute, websocket, core_discovery, drivers,
triggers_health) plus search_index_lag on its own interval (``elasticsearch.index_lag_interval``,
300 s). ``--no-sandbox``: real etcd + Redis only (``--backends``), 3 probes per cluster (etcd, redis,
core_discovery), plus what ``--extra-config`` configures. The exporter runs in its own process
(``bench.exporter_child``: the real ``Exporter`` with ``Scheduler._run_and_record`` wrapped to record
every run, see there). Prometheus-like scrapes from this process: every cluster's
``/probe?cluster=`` and ``/metrics`` once per ``--scrape-interval``, spread over it.

Schedule lag is measured in-process (patched scheduler, not from /metrics timestamps): for every run
after a probe's first, the loop time at which its run starts minus the time its loop planned it for.
It is the exporter's own event-loop delay (CPU work of the process, or the machine not giving it a
core): a slow backend makes a probe's *duration* long, not its start late (timeout < interval). So
the bench prints, per probe, the runs in the window, their outcomes and durations (the backends'
side) apart from the lag. CPU use is user+system CPU time (/proc/<pid>/stat) over the wall time of
the window after the warm-up, as a percentage of one core: the exporter's, and the sandbox's (all of
its processes; they share the machine's cores with the exporter). ``--profile`` runs cProfile in
the exporter over the window and prints its top functions (it slows the exporter: not for figures).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import pstats
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
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
    RunSample,
    backends_for,
    cpu_seconds,
    exporter_settings,
    info,
    load_extra,
    median,
    pace_until,
    percentile,
    print_table,
    run_main,
    sandbox_cluster,
    sandbox_for,
    target_max,
    workdir,
)
from exporter.probes import REGISTRY
from exporter.runtime.schedule import schedule
from exporter.settings import load_settings
from sandbox.cluster import Sandbox

LAG_TARGET_MS = 100.0
# Probes per cluster at the interval: every probe of the era but search_index_lag (era C has no etcd).
PROBES_GOAL = {"A": 13, "B": 13, "C": 12}


@dataclass
class Options:
    clusters: int = 50
    interval: float = 5.0
    duration: float = 60.0  # seconds measured after the warm-up
    warmup: float | None = None  # default: one interval + 2 s
    scrape_interval: float = 15.0
    backends: tuple[str, ...] = ("etcd", "redis")  # without the sandbox
    era: str = "A"
    extra: dict[str, Any] = field(default_factory=dict)
    sandbox: bool = True  # every cluster points at one placeos-sandbox (all probes); else at `backends`
    profile: bool = False

    @classmethod
    def quick(cls) -> Options:
        return cls(clusters=3, interval=0.5, duration=1.0, warmup=0.5, scrape_interval=0.5, sandbox=False)


def expected_keys(opts: Options) -> set[str]:
    return {
        "clusters", "probes_per_cluster", "probe_tasks", "runs_measured", "runs_per_s", "lag_p50_ms",
        "lag_p99_ms", "lag_max_ms", "cpu_pct", "rss_mb", "scrapes", "scrape_p99_ms", "window_s", "failed_runs",
        "duration_p99_ms", "load_1min",
    } | ({"sandbox_cpu_pct"} if opts.sandbox else set())  # fmt: skip


def probe_table(runs: Sequence[RunSample]) -> list[list[str]]:
    """Per probe: runs, failures by reason, duration p50/p99/max (the backends' side of the figures)."""
    by_probe: dict[str, list[RunSample]] = defaultdict(list)
    for run in runs:
        by_probe[run[2]].append(run)
    rows = []
    for probe, samples in sorted(by_probe.items()):
        durations = [d for *_, d in samples]
        failed = Counter(r for *_, r, _ in samples if r != "ok")
        lags = [g for _, _, _, g, _, _ in samples if g is not None]
        rows.append([
            probe, str(len(samples)), str(sum(failed.values())),
            ", ".join(f"{r} {n}" for r, n in failed.most_common()) or "-",
            f"{median(durations) * 1000:.1f}", f"{percentile(durations, 99) * 1000:.1f}",
            f"{max(durations) * 1000:.1f}", f"{percentile(lags, 99) * 1000:.1f}" if lags else "n/a",
        ])  # fmt: skip
    return rows


def print_profile(path: Path, top: int = 30) -> None:
    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    print(f"\n== cProfile of the exporter over the window (top {top} by tottime, then by cumulative)")
    print(out.getvalue())


def load_1min() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


async def run(opts: Options, exp: ExporterProcess, sb: Sandbox | None, intervals: Mapping[str, float]) -> Figures:
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
        sb_pids = sb.pids() if sb is not None else []
        parts = {n: p["pid"] for n, p in sb.status()["parts"].items() if p.get("pid")} if sb is not None else {}
        if opts.profile:
            exp.profile_start()
        wall0, cpu0, sb0, load0 = time.time(), exp.sample(), cpu_seconds(sb_pids), load_1min()
        await pace_until(loop.time() + opts.duration)
        wall1, cpu1, sb1, load1 = time.time(), exp.sample(), cpu_seconds(sb_pids), load_1min()
        profile = await exp.profile_stop() if opts.profile else None
    finally:
        scraping = False
        await task

    await exp.stats_after(wall1)
    every = exp.runs()
    runs = [r for r in every if wall0 <= r[0] <= wall1]
    lags = [lag for _, _, _, lag, _, _ in runs if lag is not None]
    loops = {(c, p) for _, c, p, _, _, _ in every}
    per_cluster = Counter(c for c, _ in loops)
    at_interval = {(c, p) for c, p in loops if intervals.get(p) == opts.interval}
    probes = median(list(Counter(c for c, _ in at_interval).values())) if at_interval else 0
    goal = PROBES_GOAL[opts.era]
    names = sorted({p for _, p in at_interval})
    others = sorted({f"{p} every {intervals.get(p, float('nan')):g} s" for _, p in loops - at_interval})
    cpu = (cpu1.cpu_seconds - cpu0.cpu_seconds) / (cpu1.at - cpu0.at) * 100
    window = cpu1.at - cpu0.at
    failed = Counter(f"{p}: {r}" for _, _, p, _, r, _ in runs if r != "ok")
    durations = [d for *_, d in runs]
    print(f"\nper probe, runs in the window ({window:.1f} s; lag is the exporter's, durations the backends'):")
    print_table(("probe", "runs", "failed", "reasons", "dur p50 ms", "dur p99 ms", "dur max ms", "lag p99 ms"),
                probe_table(runs))  # fmt: skip
    figures: Figures = {
        "clusters": info(len(per_cluster), "count", f"configured {opts.clusters}", key=True),
        "probes_per_cluster": Figure(
            probes,
            "count",
            f">= {goal} (goal)",
            probes >= goal,
            f"probes at the {opts.interval:g} s interval that ran per cluster: {', '.join(names)}"
            + (f"; also {', '.join(others)}" if others else ""),
        ),
        "probe_tasks": info(len(loops), "count", "(cluster, probe) loops that ran"),
        "runs_measured": info(len(lags), "count", f"lag samples in the window ({len(runs)} runs)"),
        "runs_per_s": info(len(runs) / window, "1/s"),
        "lag_p50_ms": info(median(lags) * 1000, "ms", "in-process: start - planned start", key=True),
        "lag_p99_ms": target_max(
            percentile(lags, 99) * 1000,
            LAG_TARGET_MS,
            "ms",
            f"{len(lags)} runs" + (" (under cProfile: slower than without)" if opts.profile else ""),
            strict=True,
        ),
        "lag_max_ms": info(max(lags, default=float("nan")) * 1000, "ms", key=True),
        "cpu_pct": info(cpu, "%", "exporter CPU time / wall time, % of one core", key=True),
        "rss_mb": info(cpu1.rss_bytes / (1024 * 1024), "MB", key=True),
        "failed_runs": info(
            sum(failed.values()), "count", ", ".join(f"{k} {n}" for k, n in failed.most_common(6)) or "", key=True
        ),
        "duration_p99_ms": info(percentile(durations, 99) * 1000, "ms", "probe run durations (backends' side)"),
        "scrapes": info(len(latencies), "count", f"{len(targets)} targets every {opts.scrape_interval:g} s"),
        "scrape_p99_ms": info(percentile(latencies, 99) * 1000, "ms", "/probe?cluster= and /metrics", key=True),
        "window_s": info(window, "s", f"after {warmup:g} s warm-up; interval {opts.interval:g} s"),
        "load_1min": info(max(load0, load1), "", f"1-min load average at start/end: {load0:g}/{load1:g}", key=True),
    }
    if sb is not None:
        total = sum(sb1.get(pid, cpu) - cpu for pid, cpu in sb0.items())  # a pid gone meanwhile: 0
        used = {n: sb1.get(pid, sb0[pid]) - sb0[pid] for n, pid in parts.items() if pid in sb0}
        by_part = sorted(((u, n) for n, u in used.items()), reverse=True)
        top = ", ".join(f"{name} {u / window * 100:.0f}" for u, name in by_part[:4])
        figures["sandbox_cpu_pct"] = info(total / window * 100, "%", f"all sandbox processes; top: {top}", key=True)
    if profile is not None:
        print_profile(profile)
    return figures


def measure(opts: Options, backends: Backends | None = None) -> Figures:
    """With ``opts.sandbox`` a sandbox of its own (``backends``, if given, are not used)."""
    if opts.sandbox:
        with sandbox_for(opts.era) as sb, workdir("scale") as wd:
            clusters = [sandbox_cluster(sb, f"c{i:02d}", opts.era, opts.extra) for i in range(opts.clusters)]
            return _measure(opts, clusters, wd, sb)
    with backends_for(opts.backends, backends) as bk, workdir("scale") as wd:
        clusters = [bk.cluster(name=f"c{i:02d}", era=opts.era, extra=opts.extra) for i in range(opts.clusters)]
        return _measure(opts, clusters, wd, None)


def _measure(opts: Options, clusters: list[dict[str, Any]], wd: Path, sb: Sandbox | None) -> Figures:
    settings = exporter_settings(clusters, opts.interval, opts.interval * 0.8)
    stats_interval = min(1.0, opts.duration / 4)
    with ExporterProcess(
        settings, wd / "exporter", mode="child", record_lag=True, stats_interval=stats_interval, profile=opts.profile
    ) as exp:
        loaded = load_settings(exp.config_path, environ={})
        intervals = {s.name: schedule(loaded, loaded.clusters[0], s)[0] for s in REGISTRY}
        return asyncio.run(run(opts, exp, sb, intervals))


def parse_args(argv: Sequence[str] | None) -> Options:
    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="3 clusters for a second, no sandbox (smoke test)")
    p.add_argument("--clusters", type=int, help="clusters in the config (50)")
    p.add_argument("--interval", type=float, help="probe interval, s (5); timeout 80 %% of it")
    p.add_argument("--duration", type=float, help="seconds measured after the warm-up (60)")
    p.add_argument("--warmup", type=float, help="seconds before measuring (interval + 2)")
    p.add_argument("--scrape-interval", type=float, help="each target scraped once per this, s (15)")
    p.add_argument(
        "--sandbox",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="point every cluster at one placeos-sandbox of the era, all probes (default); "
        "--no-sandbox: at --backends only",
    )
    p.add_argument("--backends", help="with --no-sandbox: real servers to start: etcd,redis[,postgres]")
    p.add_argument("--era", choices=["A", "B", "C"])
    p.add_argument("--extra-config", type=Path, help="YAML merged into every cluster (configures more probes)")
    p.add_argument("--profile", action="store_true", help="cProfile the exporter over the window, print the top")
    a = p.parse_args(argv)
    opts = Options.quick() if a.quick else Options()
    changes: dict[str, Any] = {
        k: v
        for k, v in {
            "clusters": a.clusters, "interval": a.interval, "duration": a.duration, "warmup": a.warmup,
            "scrape_interval": a.scrape_interval, "era": a.era, "sandbox": a.sandbox,
        }.items()
        if v is not None
    }  # fmt: skip
    if a.backends:
        changes["backends"] = tuple(a.backends.split(","))
    if a.profile:
        changes["profile"] = True
    changes["extra"] = load_extra(a.extra_config)
    return replace(opts, **changes)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    return run_main("scale", "scale", argv, lambda: measure(opts))


if __name__ == "__main__":
    raise SystemExit(main())
