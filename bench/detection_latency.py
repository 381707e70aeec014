"""Detection latency: from SIGKILL of a backend to ``placeos_probe_success{probe=...} 0`` on /metrics.

Setup: real etcd + Redis on loopback; the exporter as ``python -m exporter.cli serve`` in its own
process (interval 2 s, timeout 1 s by default). Per trial: wait until the backend's probe is ok, wait a
random fraction of the interval (so kills land all over the probe cycle), SIGKILL the server, then GET
/metrics every 20 ms until the probe's success is 0; restart the server (same port, same data) and go
again. The target is interval + timeout + 0.5 s: the worst case is a kill just after a run started.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import (
    Backends,
    ExporterProcess,
    Figures,
    backends_for,
    exporter_settings,
    info,
    load_extra,
    median,
    pace_until,
    probe_reasons,
    probe_series,
    run_main,
    target_max,
    wait_until,
    workdir,
)


@dataclass
class Options:
    trials: int = 5
    kill: tuple[str, ...] = ("etcd", "redis")  # backends to kill, one at a time
    backends: tuple[str, ...] = ("etcd", "redis")
    interval: float = 2.0
    timeout: float = 1.0
    poll: float = 0.02
    era: str = "A"
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def quick(cls) -> Options:
        return cls(trials=1, interval=0.5, timeout=0.3)

    @property
    def target(self) -> float:
        return self.interval + self.timeout + 0.5


def expected_keys(opts: Options) -> set[str]:
    keys = set()
    for name in opts.kill:
        keys |= {f"{name}.median_s", f"{name}.max_s"}
        keys |= {f"{name}.trial{i + 1}_s" for i in range(opts.trials)}
    return keys


async def scrape(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url + "/metrics") as resp:
        return await resp.text()


async def trial(session: aiohttp.ClientSession, exp: ExporterProcess, server_name: str, backends: Backends,
                opts: Options) -> tuple[float, str]:  # fmt: skip
    """One kill; returns (seconds to success 0, the reason then shown)."""
    probe = server_name  # each backend's own probe has its name
    server = backends[server_name]

    async def all_ok() -> bool:
        reasons = probe_reasons(await scrape(session, exp.url))
        return all(reasons.get(n) == "ok" for n in backends.names)

    await wait_until(all_ok, 30, "every backend probe ok before the kill")
    loop = asyncio.get_running_loop()
    await pace_until(loop.time() + random.uniform(0, opts.interval))  # a random point of the probe cycle
    t0 = time.perf_counter()
    server.proc.kill()
    deadline = t0 + opts.target + 10
    next_poll = loop.time()
    while time.perf_counter() < deadline:
        text = await scrape(session, exp.url)
        if probe_series(text, "placeos_probe_success").get(probe) == 0:
            detected = time.perf_counter() - t0
            reason = probe_reasons(text).get(probe, "?")
            break
        next_poll += opts.poll
        await pace_until(next_poll)
    else:
        detected, reason = float("nan"), "not detected"
    await asyncio.to_thread(server.restart)
    return detected, reason


async def measure_async(opts: Options, backends: Backends, exp: ExporterProcess) -> Figures:
    figures: Figures = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        for name in opts.kill:
            results = []
            for i in range(opts.trials):
                detected, reason = await trial(session, exp, name, backends, opts)
                results.append(detected)
                figures[f"{name}.trial{i + 1}_s"] = target_max(
                    detected, opts.target, "s", f"reason {reason}", key=False
                )
            figures[f"{name}.median_s"] = target_max(median(results), opts.target, "s", f"{len(results)} kills")
            figures[f"{name}.max_s"] = target_max(
                max(results), opts.target, "s", f"interval {opts.interval:g} + timeout {opts.timeout:g} + 0.5"
            )
    figures["poll_interval_s"] = info(opts.poll, "s", "GET /metrics period while waiting")
    return figures


def measure(opts: Options, backends: Backends | None = None) -> Figures:
    with backends_for(opts.backends, backends) as bk, workdir("detect") as wd:
        settings = exporter_settings([bk.cluster(era=opts.era, extra=opts.extra)], opts.interval, opts.timeout)
        with ExporterProcess(settings, wd / "exporter") as exp:
            return asyncio.run(measure_async(opts, bk, exp))


def parse_args(argv: Sequence[str] | None) -> Options:
    p = argparse.ArgumentParser(prog="python -m bench.detection_latency", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one kill per backend, short interval (smoke test)")
    p.add_argument("--trials", type=int, help="kills per backend (5)")
    p.add_argument("--kill", help="backends to kill: etcd,redis[,postgres]")
    p.add_argument("--backends", help="real servers to start: etcd,redis[,postgres]")
    p.add_argument("--interval", type=float, help="probe interval, s (2)")
    p.add_argument("--timeout", type=float, help="probe timeout, s (1)")
    p.add_argument("--poll", type=float, help="/metrics poll period, s (0.02)")
    p.add_argument("--era", choices=["A", "B", "C"])
    p.add_argument("--extra-config", type=Path, help="YAML merged into the cluster (configures more probes)")
    a = p.parse_args(argv)
    opts = Options.quick() if a.quick else Options()
    changes: dict[str, Any] = {
        k: v
        for k, v in {
            "trials": a.trials,
            "interval": a.interval,
            "timeout": a.timeout,
            "poll": a.poll,
            "era": a.era,
        }.items()
        if v is not None
    }
    if a.kill:
        changes["kill"] = tuple(a.kill.split(","))
    if a.backends:
        changes["backends"] = tuple(a.backends.split(","))
    changes["extra"] = load_extra(a.extra_config)
    return replace(opts, **changes)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    return run_main("detection_latency", "detection_latency", argv, lambda: measure(opts))


if __name__ == "__main__":
    raise SystemExit(main())
