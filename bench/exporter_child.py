"""The real exporter (``exporter.cli.Exporter``) in a child process, plus a stats writer for the benches.

Same settings loading, same ``Exporter`` (scheduler + aiohttp server) as ``placeos-exporter serve``;
the only addition is one task that writes, every ``--stats-interval`` seconds and at exit, a JSON
file with the bound port and the number of asyncio tasks and (``--record-lag``) moves the runs since
its last write to a JSON-lines file (``--runs``), so each write costs in proportion to the new runs,
not to all runs so far (a growing JSON document rewritten every second would stall the loop), and the
samples do not pile up in the exporter's memory.

Schedule lag (``--record-lag``): ``Scheduler._run_and_record`` is wrapped. ``Scheduler._probe_loop``
sleeps ``random.uniform(...)`` before a probe's first run, then plans the second at ``now +
random.uniform(0, interval)`` (a random phase) and from there each run at ``previous plan + interval``
(``now + interval`` after an overrun). The scheduler module's ``random`` is replaced by a proxy that
notes, per task, when ``uniform`` was called and what it returned, so the plan of every run is known
exactly: the lag of a run is the loop time at which ``_run_and_record`` is entered minus its plan.
(Should the scheduler stop drawing its phases from ``random.uniform``, a run without a noted plan
stands for its own, as before: no lag for a loop's first two runs, then ``previous start +
interval``.) Each run is one line: ``[wall-clock start, cluster, probe, lag or null, reason,
duration]`` (reason and duration as the scheduler recorded them).

Profiling (``--profile FILE``): SIGUSR1 starts cProfile, SIGUSR2 stops it and writes its stats to
FILE (``pstats`` format), so a bench profiles exactly its measuring window.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import random
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from exporter import log
from exporter.model.vocabulary import ProbeName
from exporter.runtime import scheduler as scheduler_module
from exporter.runtime.process import Exporter
from exporter.runtime.schedule import schedule
from exporter.runtime.scheduler import Scheduler
from exporter.runtime.snapshot import ClusterSnapshot
from exporter.settings import ClusterConfig, load_settings

# (wall-clock start, cluster, probe, lag seconds or None, reason, duration seconds)
RunSample = tuple[float, str, str, float | None, str, float]


class PhaseNotes:
    """Stands in for the scheduler module's ``random``: ``uniform`` also notes, for the calling task,
    the loop time of the call plus the value drawn (= the time the task will sleep until)."""

    def __init__(self) -> None:
        self.wake: dict[asyncio.Task[Any], float] = {}

    def uniform(self, a: float, b: float) -> float:
        value = random.uniform(a, b)
        with contextlib.suppress(RuntimeError):  # not in a task: nothing to note
            task = asyncio.current_task()
            if task is not None:
                self.wake[task] = asyncio.get_running_loop().time() + value
        return value

    def __getattr__(self, name: str) -> Any:
        return getattr(random, name)


def record_lag(samples: list[RunSample]) -> None:
    """Wrap ``Scheduler._run_and_record`` to record every run: how late it started vs its planned time,
    and the outcome the scheduler recorded."""
    original = Scheduler._run_and_record
    notes = PhaseNotes()
    scheduler_module.random = notes  # type: ignore[assignment,attr-defined]
    planned: dict[tuple[int, str, str], float] = {}
    seen: dict[tuple[int, str, str], int] = {}

    async def timed(self: Scheduler, cluster: ClusterConfig, cs: ClusterSnapshot, probe: ProbeName) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        wall = time.time()
        key = (id(self), cluster.name, str(probe))
        seen[key] = seen.get(key, 0) + 1
        task = asyncio.current_task()
        noted = notes.wake.pop(task, None) if task is not None else None  # the plan of run 1 or 2
        expected = noted if noted is not None else planned.get(key) if seen[key] > 2 else None
        try:
            await original(self, cluster, cs, probe)
        finally:
            interval, _ = schedule(self.settings, cluster, self.registry[probe])
            end = loop.time()
            nxt = (start if expected is None else expected) + interval
            planned[key] = end + interval if nxt < end else nxt
            last = cs.probes[probe].last
            reason, duration = (str(last.reason), last.duration) if last is not None else ("none", end - start)
            lag = None if expected is None else start - expected
            samples.append((wall, cluster.name, str(probe), lag, reason, duration))

    Scheduler._run_and_record = timed  # type: ignore[method-assign]


def write_stats(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)  # readers never see a half-written file


def install_profiler(loop: asyncio.AbstractEventLoop, path: Path) -> None:
    """SIGUSR1: start profiling this (the only) thread; SIGUSR2: stop and write the stats to ``path``."""
    profiler = cProfile.Profile()

    def start() -> None:
        profiler.enable()

    def stop() -> None:
        profiler.disable()
        tmp = path.with_suffix(".tmp")
        profiler.dump_stats(tmp)
        os.replace(tmp, path)  # readers never see a half-written file

    loop.add_signal_handler(signal.SIGUSR1, start)
    loop.add_signal_handler(signal.SIGUSR2, stop)


async def serve(args: argparse.Namespace) -> None:
    overrides = {"listen_address": args.listen_address, "log_level": args.log_level}
    settings = load_settings(args.config, overrides=overrides)
    log.setup(settings.log_format, settings.log_level, settings.secrets())
    samples: list[RunSample] = []
    if args.record_lag:
        record_lag(samples)
    loop = asyncio.get_running_loop()
    if args.profile:
        install_profiler(loop, args.profile)
    exporter = Exporter(settings, args.config, overrides)
    port = await exporter.start()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runs_path: Path = args.runs or args.stats.with_suffix(".runs.jsonl")
    written = 0

    def dump() -> None:
        nonlocal written
        if args.record_lag:  # the runs first: a stats file of time T means every run before T is written
            with runs_path.open("a") as f:
                f.write("".join(json.dumps(s) + "\n" for s in samples))
            written += len(samples)
            samples.clear()  # written: not kept in (and not counted in the RSS of) the exporter
        write_stats(
            args.stats,
            {"pid": os.getpid(), "port": port, "time": time.time(), "tasks": len(asyncio.all_tasks()), "runs": written},
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
    parser.add_argument("--record-lag", action="store_true", help="record every probe run (lag, outcome)")
    parser.add_argument("--runs", type=Path, help="JSON-lines file of the runs (default: next to --stats)")
    parser.add_argument("--profile", type=Path, help="cProfile between SIGUSR1 and SIGUSR2, written here")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
