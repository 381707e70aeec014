"""/metrics latency of the real exporter next to a bare aiohttp server serving the same bytes.

Setup: real etcd + Redis (``sandbox.backends``) on loopback; the exporter as ``python -m exporter.cli
serve`` (= ``placeos-exporter serve``) in its own process with a YAML config for those backends (era A:
etcd, redis, core_discovery today; sections configured with ``--extra-config`` get their probes too);
one /metrics body per request kind is captured from it and served verbatim by ``bench.bare_server``
in another process. The load generator is this process: one keep-alive aiohttp session per server,
N sequential requests after a warm-up, in interleaved blocks (exporter, bare, bare, exporter, ...) so
machine noise hits both alike. Each block gives a p50/p99; the figures are medians over blocks.

Request kinds: ``plain`` (no Accept-Encoding), ``gzip`` (Accept-Encoding: gzip) and ``prometheus``
(Prometheus's Accept, OpenMetrics, and gzip). Two modes, each against its own exporter process:

* ``cached``: every probe at ``--interval`` (2 s). The exporter renders each scraper's format ahead
  of its next request, off the request path (``AppState._plan``; a back-to-back client is a scraper
  with a tiny period: at most one render per PRERENDER_MIN), so requests get ready bytes; the render
  still runs on the event loop a request shares.
* ``churn``: every probe at ``--churn-interval`` (0.1 s), so the snapshot changes tens of times a
  second and every planned render finds something new: the worst case for a request that lands
  while a render holds the loop. The bare server still serves fixed bytes.

Then the same while the backends are SIGSTOPped (probes hang until their timeout): "unchanged by the
hung backend" means the same 1.5x target holds in that phase (``hung.*.p99_ratio``); ``hung_change``
shows the exporter's p99 hung / healthy next to the bare server's (machine noise). Also printed: the
in-process cost of one render after a snapshot change (``AppState.metrics_bytes``; what the first
scrape of a format, or a scrape with no re-render pending, pays), next to prometheus-client's own
encoder on the same families, and with ``--profile`` a cProfile summary of it.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gzip
import io
import pstats
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp

from bench import bare_server
from bench.common import (
    PROMETHEUS_ACCEPT,
    PYTHON,
    REPO,
    Backends,
    ExporterProcess,
    Figures,
    backends_for,
    child_env,
    exporter_settings,
    info,
    load_extra,
    median,
    percentile,
    probe_reasons,
    run_main,
    target_max,
    wait_until,
    workdir,
)
from sandbox.procs import Proc

RATIO_TARGET = 1.5  # exporter p99 <= 1.5 x bare p99

# kind -> (Accept, gzip?)
VARIANTS: dict[str, tuple[str, bool]] = {
    "plain": ("*/*", False),
    "gzip": ("*/*", True),
    "prometheus": (PROMETHEUS_ACCEPT, True),
}
MODES = ("cached", "churn")
PHASES = ("healthy", "hung")


@dataclass
class Options:
    requests: int = 4000  # per server, kind and phase (cached mode)
    churn_requests: int = 2000  # per server, kind and phase (churn mode)
    churn_interval: float = 0.1
    warmup: int = 200
    blocks: int = 8
    variants: tuple[str, ...] = ("plain", "gzip", "prometheus")
    interval: float = 2.0
    timeout: float = 1.5
    backends: tuple[str, ...] = ("etcd", "redis")
    hang: tuple[str, ...] = ()  # backends to SIGSTOP in the hung phase; () = all of them
    era: str = "A"
    extra: dict[str, Any] = field(default_factory=dict)
    renders: int = 200  # in-process renders timed per kind
    profile: bool = False

    @classmethod
    def quick(cls) -> Options:
        return cls(
            requests=40, churn_requests=20, warmup=5, blocks=2, variants=("plain", "prometheus"),
            interval=0.5, timeout=0.3, renders=5,
        )  # fmt: skip


def expected_keys(opts: Options) -> set[str]:
    keys = {"probes_enabled", "probes_hung"}
    for variant in opts.variants:
        keys.add(f"render.{variant}.p50_ms")
        keys.add(f"render.{variant}.prometheus_client_p50_ms")
        for mode in MODES:
            keys.add(f"hung_change.{mode}.{variant}")
            for phase in PHASES:
                for stat in ("exporter_p50_ms", "exporter_p99_ms", "bare_p50_ms", "bare_p99_ms", "p99_ratio"):
                    keys.add(f"{phase}.{mode}.{variant}.{stat}")
    return keys


# --------------------------------------------------------------------------------- in-process render


def render_cost(settings: dict[str, Any], opts: Options) -> Figures:
    """Time ``AppState.metrics_bytes`` right after a snapshot change, in this process (no HTTP)."""
    from prometheus_client.exposition import choose_encoder
    from prometheus_client.registry import CollectorRegistry

    from exporter import log
    from exporter.expose.metrics import ClusterCollector, ExporterCollector
    from exporter.expose.routes import AppState
    from exporter.runtime.scheduler import Scheduler
    from exporter.runtime.snapshot import Snapshot
    from exporter.settings import load_settings

    log.setup("plain", "error")
    loaded = load_settings(None, environ={}, overrides=settings)
    snapshot = Snapshot()
    asyncio.run(Scheduler(loaded, snapshot).run_once())
    state = AppState(settings=loaded, snapshot=snapshot)
    cluster = snapshot.default
    figures: Figures = {}

    def render_all(variant: str, count: int) -> list[float]:
        accept, gzipped = VARIANTS[variant]
        times = []
        for _ in range(count):
            cluster.version += 1  # what a recorded probe result does: diagnosis, render, gzip again
            fresh = AppState(settings=loaded, snapshot=snapshot)  # no scraper history: it renders
            t0 = time.perf_counter()
            fresh.metrics_bytes(cluster, True, accept, gzipped)
            times.append(time.perf_counter() - t0)
        return times

    def library_render(variant: str, count: int) -> list[float]:
        """The same families and gzip through prometheus-client's own encoder (what we replaced)."""
        accept, gzipped = VARIANTS[variant]
        encoder = choose_encoder(accept)[0]
        times = []
        for _ in range(count):
            cluster.version += 1
            t0 = time.perf_counter()
            registry = CollectorRegistry(auto_describe=False)
            registry.register(ExporterCollector())
            registry.register(ClusterCollector(cluster))
            body = encoder(registry)
            if gzipped:
                gzip.compress(body, compresslevel=1, mtime=0)
            times.append(time.perf_counter() - t0)
        return times

    for variant in opts.variants:
        render_all(variant, 3)
        times = render_all(variant, opts.renders)
        library = library_render(variant, opts.renders)
        size = len(state.metrics_bytes(cluster, True, VARIANTS[variant][0], VARIANTS[variant][1])[0])
        figures[f"render.{variant}.p50_ms"] = info(
            median(times) * 1000, "ms", f"p99 {percentile(times, 99) * 1000:.2f} ms, body {size} B", key=True
        )
        figures[f"render.{variant}.prometheus_client_p50_ms"] = info(
            median(library) * 1000, "ms", "the same render with prometheus-client's encoder", key=True
        )
    if opts.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        for variant in opts.variants:
            render_all(variant, opts.renders)
        profiler.disable()
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("cumulative").print_stats(25)
        stats.sort_stats("tottime").print_stats(15)
        print(f"\ncProfile of {opts.renders} fresh renders per kind ({', '.join(opts.variants)}):")
        print(out.getvalue())
    return figures


# ------------------------------------------------------------------------------------- bare server


class BareServer:
    """``bench.bare_server`` in its own process, stopped by PID."""

    def __init__(self, bodies: Path, wd: Path) -> None:
        self.bodies = bodies
        self.port_file = wd / "bare.port"
        self.log_path = wd / "bare.log"
        self.proc: Proc | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _ready(self) -> bool:
        if not self.port_file.exists():
            return False
        self.port = int(self.port_file.read_text())
        return True

    def __enter__(self) -> Self:
        argv = [PYTHON, "-m", "bench.bare_server", "--bodies", str(self.bodies), "--port-file", str(self.port_file)]
        self.proc = Proc.start(argv, log_path=self.log_path, name="bare-server", env=child_env(), cwd=REPO)
        try:
            self.proc.wait_ready(self._ready, 30.0)
        except BaseException:
            self.proc.kill()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.proc is not None:
            self.proc.terminate()


# ------------------------------------------------------------------------------------------- load


def new_session() -> aiohttp.ClientSession:
    """Keep-alive, one connection, no automatic Accept-Encoding, bodies read as sent (not decompressed)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=1),
        timeout=aiohttp.ClientTimeout(total=10),
        skip_auto_headers=("Accept-Encoding",),
        auto_decompress=False,
    )


def headers_for(variant: str) -> Callable[[], dict[str, str]]:
    accept, gzipped = VARIANTS[variant]
    headers = {"Accept": accept} | ({"Accept-Encoding": "gzip"} if gzipped else {})
    return lambda: headers


async def timed(session: aiohttp.ClientSession, url: str, headers: Callable[[], dict[str, str]], n: int) -> list[float]:
    """n sequential GETs; seconds from sending each to having read its whole body."""
    out: list[float] = []
    for _ in range(n):
        h = headers()
        t0 = time.perf_counter()
        async with session.get(url, headers=h) as resp:
            await resp.read()
            status = resp.status
        out.append(time.perf_counter() - t0)
        if status != 200:
            raise RuntimeError(f"GET {url}: HTTP {status}")
    return out


async def capture(url: str, variants: Sequence[str], path: Path) -> None:
    """One body per request kind from the exporter, saved for the bare server."""
    rows = []
    async with new_session() as session:
        for variant in variants:
            async with session.get(url + "/metrics", headers=headers_for(variant)()) as resp:
                body = await resp.read()
                rows.append(
                    (
                        "openmetrics" in resp.headers.get("Content-Type", ""),
                        VARIANTS[variant][1],
                        body,
                        resp.headers.get("Content-Type", ""),
                        resp.headers.get("Content-Encoding", ""),
                    )
                )
    bare_server.save_bodies(path, rows)


async def run_phase(phase: str, urls: dict[str, str], bare_url: str, opts: Options) -> Figures:
    """Both modes of one phase; ``urls`` maps each mode to its exporter."""
    figures: Figures = {}
    async with new_session() as exp_session, new_session() as bare_session:
        sessions = {"exporter": exp_session, "bare": bare_session}
        for mode in MODES:
            targets = {"exporter": urls[mode] + "/metrics", "bare": bare_url + "/metrics"}
            total = opts.requests if mode == "cached" else opts.churn_requests
            per_block = max(1, -(-total // opts.blocks))
            for variant in opts.variants:
                headers = headers_for(variant)
                for server in sessions:
                    await timed(sessions[server], targets[server], headers, opts.warmup)
                blocks: dict[str, list[list[float]]] = {"exporter": [], "bare": []}
                for b in range(opts.blocks):
                    order = ("exporter", "bare") if b % 2 == 0 else ("bare", "exporter")
                    for server in order:
                        blocks[server].append(await timed(sessions[server], targets[server], headers, per_block))
                figures.update(summarize(f"{phase}.{mode}.{variant}", blocks))
    return figures


def summarize(prefix: str, blocks: dict[str, list[list[float]]]) -> Figures:
    def stat(server: str, q: float) -> float:
        return median([percentile(b, q) for b in blocks[server]]) * 1000

    ratios = [percentile(e, 99) / percentile(b, 99) for e, b in zip(blocks["exporter"], blocks["bare"], strict=True)]
    n = sum(len(b) for b in blocks["exporter"])
    exp99, bare99 = stat("exporter", 99), stat("bare", 99)
    return {
        f"{prefix}.exporter_p50_ms": info(stat("exporter", 50), "ms"),
        f"{prefix}.exporter_p99_ms": info(exp99, "ms", f"{n} requests"),
        f"{prefix}.bare_p50_ms": info(stat("bare", 50), "ms"),
        f"{prefix}.bare_p99_ms": info(bare99, "ms"),
        f"{prefix}.p99_ratio": target_max(
            median(ratios), RATIO_TARGET, "x", f"exporter {exp99:.2f} ms / bare {bare99:.2f} ms p99"
        ),
    }


async def measure_async(
    opts: Options, backends: Backends, exp: ExporterProcess, churn: ExporterProcess, bare: BareServer
) -> Figures:
    figures: Figures = {}
    mine = {"etcd": "etcd", "redis": "redis", "postgres": "postgres"}

    async def reasons() -> dict[str, str]:
        async with new_session() as s, s.get(exp.url + "/metrics") as resp:
            return probe_reasons(await resp.text())

    async def healthy() -> dict[str, str] | None:
        r = await reasons()
        ok = all(r.get(mine[n]) == "ok" for n in backends.names) and "pending" not in r.values()
        return r if ok else None

    current = await wait_until(healthy, 30, "every probe of the started backends ok")
    figures["probes_enabled"] = info(len(current), "count", ", ".join(f"{p}={r}" for p, r in current.items()), True)
    urls = {"cached": exp.url, "churn": churn.url}
    figures.update(await run_phase("healthy", urls, bare.url, opts))

    hang = opts.hang or backends.names
    try:
        for name in hang:
            backends[name].proc.stop()

        async def hung() -> dict[str, str] | None:
            r = await reasons()
            return r if all(r.get(mine[n]) == "timeout" for n in hang) else None

        current = await wait_until(hung, opts.interval + opts.timeout + 10, f"{', '.join(hang)} probes timing out")
        figures.update(await run_phase("hung", urls, bare.url, opts))
        after = await reasons()
        still = sorted(p for p, r in after.items() if r == "timeout")
        figures["probes_hung"] = info(len(still), "count", f"SIGSTOPped {', '.join(hang)}; timeout: {', '.join(still)}")
    finally:
        for name in hang:
            backends[name].proc.cont()

    for mode in MODES:
        for variant in opts.variants:
            e = [figures[f"{phase}.{mode}.{variant}.exporter_p99_ms"].value for phase in PHASES]
            b = [figures[f"{phase}.{mode}.{variant}.bare_p99_ms"].value for phase in PHASES]
            figures[f"hung_change.{mode}.{variant}"] = info(
                e[1] / e[0], "x", f"exporter p99 hung / healthy (bare: {b[1] / b[0]:.2f}x)", key=True
            )
    return figures


def measure(opts: Options, backends: Backends | None = None) -> Figures:
    """The core of the bench: returns the figures (see ``expected_keys``)."""
    with backends_for(opts.backends, backends) as bk, workdir("latency") as wd:
        settings = exporter_settings([bk.cluster(era=opts.era, extra=opts.extra)], opts.interval, opts.timeout)
        figures = render_cost(settings, opts)
        churn_timeout = min(opts.timeout, opts.churn_interval * 0.8)
        churn_settings = {**settings, "interval": opts.churn_interval, "timeout": churn_timeout}
        with ExporterProcess(settings, wd / "exporter") as exp, ExporterProcess(churn_settings, wd / "churn") as churn:
            asyncio.run(capture(exp.url, opts.variants, wd / "bodies.json"))
            with BareServer(wd / "bodies.json", wd) as bare:
                figures.update(asyncio.run(measure_async(opts, bk, exp, churn, bare)))
        return figures


def parse_args(argv: Sequence[str] | None) -> Options:
    p = argparse.ArgumentParser(prog="python -m bench.metrics_latency", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny counts (smoke test)")
    p.add_argument("--requests", type=int, help="requests per server, kind and phase in cached mode (4000)")
    p.add_argument("--churn-requests", type=int, help="the same in churn mode (2000)")
    p.add_argument("--churn-interval", type=float, help="probe interval of the churn exporter, s (0.1)")
    p.add_argument("--warmup", type=int)
    p.add_argument("--blocks", type=int, help="interleaved blocks; figures are medians over blocks (8)")
    p.add_argument("--variants", help="comma list of plain,gzip,prometheus")
    p.add_argument("--interval", type=float, help="probe interval, s (2)")
    p.add_argument("--timeout", type=float, help="probe timeout, s (1.5)")
    p.add_argument("--backends", help="real servers to start: etcd,redis[,postgres]")
    p.add_argument("--hang", help="backends to SIGSTOP in the hung phase (default: all started)")
    p.add_argument("--era", choices=["A", "B", "C"])
    p.add_argument("--extra-config", type=Path, help="YAML merged into the cluster (configures more probes)")
    p.add_argument("--profile", action="store_true", help="print a cProfile summary of renders")
    a = p.parse_args(argv)
    opts = Options.quick() if a.quick else Options()
    changes: dict[str, Any] = {
        k: v
        for k, v in {
            "requests": a.requests, "churn_requests": a.churn_requests, "churn_interval": a.churn_interval,
            "warmup": a.warmup, "blocks": a.blocks,
            "interval": a.interval, "timeout": a.timeout, "era": a.era,
        }.items()
        if v is not None
    }  # fmt: skip
    if a.variants:
        changes["variants"] = tuple(a.variants.split(","))
    if a.backends:
        changes["backends"] = tuple(a.backends.split(","))
    if a.hang:
        changes["hang"] = tuple(a.hang.split(","))
    changes["extra"] = load_extra(a.extra_config)
    changes["profile"] = a.profile
    return replace(opts, **changes)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    return run_main("metrics_latency", "metrics_latency", argv, lambda: measure(opts))


if __name__ == "__main__":
    raise SystemExit(main())
