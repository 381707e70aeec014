"""The real exporter (``exporter.cli.Exporter``) in a child process, plus a stats writer for the benches.

Same settings loading, same ``Exporter`` (scheduler + aiohttp server) as ``placeos-exporter serve``;
the only addition is one task that writes, every ``--stats-interval`` seconds and at exit, a JSON
file with the bound port, the number of asyncio tasks and (``--record-lag``) schedule-lag samples.

Schedule lag (``--record-lag``): ``Scheduler._run_and_record`` is wrapped. ``Scheduler._probe_loop``
runs a probe once soon after start, then moves it to a random phase of its interval and from there
plans each run at ``previous plan + interval`` (``now + interval`` after an overrun). The first two
runs give no sample (their times are the random start and phase); from the third on, the lag of a run
is the loop time at which ``_run_and_record`` is entered minus ``previous plan + interval``, the
second run's start standing for its plan.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from exporter import log
from exporter.cli import Exporter
from exporter.scheduler import Scheduler
from exporter.settings import ClusterConfig, ProbeName, load_settings
from exporter.snapshot import ClusterSnapshot

# (wall-clock start, cluster, probe, lag seconds)
LagSample = tuple[float, str, str, float]


def record_lag(samples: list[LagSample], runs: dict[str, int]) -> None:
    """Wrap ``Scheduler._run_and_record`` to record how late each run starts vs its planned time."""
    original = Scheduler._run_and_record
    planned: dict[tuple[int, str, str], float] = {}
    seen: dict[tuple[int, str, str], int] = {}

    async def timed(self: Scheduler, cluster: ClusterConfig, cs: ClusterSnapshot, probe: ProbeName) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        key = (id(self), cluster.name, str(probe))
        seen[key] = seen.get(key, 0) + 1
        expected = planned.get(key) if seen[key] > 2 else None
        if expected is not None:
            samples.append((time.time(), cluster.name, str(probe), start - expected))
        runs[f"{cluster.name}/{probe}"] = runs.get(f"{cluster.name}/{probe}", 0) + 1
        try:
            await original(self, cluster, cs, probe)
        finally:
            interval, _ = self.settings.schedule(cluster, probe)
            end = loop.time()
            nxt = (start if expected is None else expected) + interval
            planned[key] = end + interval if nxt < end else nxt

    Scheduler._run_and_record = timed  # type: ignore[method-assign]


def write_stats(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)  # readers never see a half-written file


async def serve(args: argparse.Namespace) -> None:
    overrides = {"listen_address": args.listen_address, "log_level": args.log_level}
    settings = load_settings(args.config, overrides=overrides)
    log.setup(settings.log_format, settings.log_level, settings.secrets())
    samples: list[LagSample] = []
    runs: dict[str, int] = {}
    if args.record_lag:
        record_lag(samples, runs)
    exporter = Exporter(settings, args.config, overrides)
    port = await exporter.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def dump() -> None:
        write_stats(
            args.stats,
            {
                "pid": os.getpid(),
                "port": port,
                "time": time.time(),
                "tasks": len(asyncio.all_tasks()),
                "lag": samples,
                "runs": runs,
            },
        )

    try:
        while not stop.is_set():
            dump()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.stats_interval)
    finally:
        dump()
        await exporter.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--listen-address", default="127.0.0.1:0")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--stats", type=Path, required=True)
    parser.add_argument("--stats-interval", type=float, default=1.0)
    parser.add_argument("--record-lag", action="store_true")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
