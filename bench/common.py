"""What every bench shares: real backends, the exporter as a child process, /proc readings, figures.

Everything runs on 127.0.0.1. Every process a bench starts is a ``sandbox.procs.Proc`` (own session,
SIGKILLed by the kernel if this process dies) and is stopped by its PID in a ``finally``/``with``,
also on Ctrl-C and SIGTERM (``interrupts_as_keyboard_interrupt``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import json
import math
import os
import re
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Self, TypeVar

import aiohttp
import yaml

from sandbox.backends import (
    Backend,
    EtcdServer,
    PostgresServer,
    RedisServer,
    start_etcd,
    start_postgres,
    start_redis,
)
from sandbox.cluster import Sandbox
from sandbox.ports import free_port
from sandbox.procs import Proc, ProcError

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
HOST = "127.0.0.1"

# What Prometheus 2.x/3.x sends when scraping (scrape_protocols default, plus gzip).
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=underscores;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)
PROMETHEUS_HEADERS = {"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip", "User-Agent": "Prometheus/bench"}

# Sections of a cluster the bench can back with a real server, and the probe each one feeds.
BACKEND_NAMES = ("etcd", "redis", "postgres")
# Sections the bench never starts a server for: switched off unless --extra-config configures them.
OTHER_SECTIONS = ("rethinkdb", "postgres", "elasticsearch")
CORE_KEY = "service/core/01HBENCH0000000000000000000"


# (wall-clock start, cluster, probe, lag seconds or None, reason, duration seconds): bench.exporter_child
RunSample = tuple[float, str, str, float | None, str, float]

# ------------------------------------------------------------------------------------------ figures


@dataclass(frozen=True)
class Figure:
    """One printed figure. ``target`` empty = informational; ``met`` None = no target."""

    value: float
    unit: str
    target: str = ""
    met: bool | None = None
    note: str = ""
    key: bool = True  # shown in run_all's summary table

    def shown(self) -> str:
        if math.isnan(self.value):
            return "n/a"
        if self.unit in ("", "count") and float(self.value).is_integer():
            return f"{int(self.value)}"
        digits = 3 if abs(self.value) < 10 else 1
        return f"{self.value:.{digits}f}{' ' + self.unit if self.unit not in ('', 'count') else ''}"


Figures = dict[str, Figure]


def target_max(value: float, limit: float, unit: str, note: str = "", key: bool = True, strict: bool = False) -> Figure:
    """A figure whose target is an upper bound (``strict``: below, not at)."""
    met = not math.isnan(value) and (value < limit if strict else value <= limit)
    shown_limit = f"{limit:g}{' ' + unit if unit not in ('', 'count', 'x') else ''}"
    return Figure(value, unit, f"{'<' if strict else '<='} {shown_limit}", met, note, key)


def info(value: float, unit: str, note: str = "", key: bool = False) -> Figure:
    return Figure(value, unit, "", None, note, key)


def print_figures(title: str, figures: Figures, command: str) -> None:
    """The figures of one bench as an aligned table."""
    print(f"\n== {title}   ({command})")
    rows = [(name, f.shown(), f.target, "" if f.met is None else ("yes" if f.met else "NO"), f.note)
            for name, f in figures.items()]  # fmt: skip
    print_table(("figure", "value", "target", "met", "note"), rows)


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def command_line(module: str, argv: Sequence[str] | None) -> str:
    args = list(sys.argv[1:] if argv is None else argv)
    return shlex.join([".venv/bin/python", "-m", f"bench.{module}", *args])


def machine_load() -> str:
    """The 1/5/15-minute load averages and the core count (other developers share this machine)."""
    try:
        one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        return "load unknown"
    return f"load {one} {five} {fifteen} on {os.cpu_count()} cores at {time.strftime('%Y-%m-%d %H:%M:%S')}"


# ---------------------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks; NaN for no values."""
    if not values:
        return float("nan")
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


# ------------------------------------------------------------------------------------------ signals


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def interrupts_as_keyboard_interrupt() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C: unwinds through every ``finally`` so child processes get stopped."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_main(title: str, module: str, argv: Sequence[str] | None, body: Callable[[], Figures]) -> int:
    """Print the load, run ``body`` (with Ctrl-C/SIGTERM cleanup), print its figures."""
    command = command_line(module, argv)
    print(f"{title}: {machine_load()}", flush=True)
    try:
        with interrupts_as_keyboard_interrupt():
            figures = body()
    except KeyboardInterrupt:
        print("interrupted: every process this bench started has been stopped", file=sys.stderr)
        return 130
    print_figures(title, figures, command)
    print(f"after: {machine_load()}")
    return 0


# ------------------------------------------------------------------------------------------ waiting

T = TypeVar("T")


async def wait_until(check: Callable[[], Awaitable[T | None]], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``check`` until it returns something truthy; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    last: T | str | None = None
    while True:
        try:
            result = await check()
        except (TimeoutError, OSError, aiohttp.ClientError) as exc:  # the server is not there (yet)
            last = f"{type(exc).__name__}: {exc}"
        else:
            if result:
                return result
            last = result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}; last: {last!r}")
        await asyncio.sleep(interval)


async def pace_until(deadline: float) -> None:
    """Sleep until loop-time ``deadline`` (a pacing step, not a wait for a condition)."""
    delay = deadline - asyncio.get_running_loop().time()
    if delay > 0:
        await asyncio.sleep(delay)


# ------------------------------------------------------------------------------------------ /metrics

_LABELLED = re.compile(r'^(placeos_[a-z_]+)\{probe="([^"]+)"(?:,reason="([^"]+)")?\} (\S+)', re.M)


def probe_series(text: str, metric: str) -> dict[str, float]:
    """``{probe: value}`` of a per-probe series in a text or OpenMetrics body."""
    return {m[2]: float(m[4]) for m in _LABELLED.finditer(text) if m[1] == metric and m[3] is None}


def probe_reasons(text: str) -> dict[str, str]:
    """``{probe: reason}``: the reason whose state-set series is 1."""
    return {m[2]: m[3] for m in _LABELLED.finditer(text) if m[1] == "placeos_probe_failure_reason" and m[4] == "1.0"}


def enabled_probes(text: str) -> list[str]:
    return [p for p, v in probe_series(text, "placeos_probe_enabled").items() if v == 1]


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, str]:
    """A blocking GET on loopback (for readiness checks outside an event loop)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


# ------------------------------------------------------------------------------------------- /proc


@dataclass(frozen=True)
class ProcSample:
    """A reading of a process from /proc."""

    at: float  # monotonic
    rss_bytes: int
    threads: int
    fds: int
    cpu_seconds: float  # user + system


def read_proc(pid: int) -> ProcSample:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss = int(fields["VmRSS"].split()[0]) * 1024
    threads = int(fields["Threads"].strip())
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(stat[11]) + int(stat[12])) / ticks  # utime, stime (fields 14, 15 of stat)
    return ProcSample(time.monotonic(), rss, threads, fds, cpu)


# ---------------------------------------------------------------------------------------- backends


def deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class Backends:
    """Real backend servers on loopback (``sandbox.backends``) in a temp dir, stopped by PID on exit.

    etcd gets a core registration (``service/core/<id>``) so core_discovery is healthy too: the
    healthy state is all probes ``ok``.
    """

    def __init__(self, names: Sequence[str] = ("etcd", "redis"), root: Path | None = None) -> None:
        unknown = set(names) - set(BACKEND_NAMES)
        if unknown:
            raise ValueError(f"unknown backend(s) {sorted(unknown)}; known: {', '.join(BACKEND_NAMES)}")
        self.names = tuple(names)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if root is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="placeos-bench-")
            root = Path(self._tmp.name)
        self.root = root
        self.servers: dict[str, Backend] = {}

    def start(self) -> Self:
        try:
            for name in self.names:
                if name == "etcd":
                    etcd = start_etcd(self.root / "etcd")
                    self.servers["etcd"] = etcd
                    self.register_core()
                elif name == "redis":
                    self.servers["redis"] = start_redis(self.root / "redis")
                else:
                    self.servers["postgres"] = start_postgres(self.root / "postgres")
        except BaseException:
            self.close()
            raise
        return self

    def register_core(self) -> None:
        """A core registration without a lease (persists across restarts of etcd)."""
        etcd = self.servers["etcd"]
        assert isinstance(etcd, EtcdServer)
        key = base64.b64encode(CORE_KEY.encode()).decode()
        value = base64.b64encode(json.dumps({"uri": "http://127.0.0.1:1"}).encode()).decode()
        etcd.call("kv/put", {"key": key, "value": value})

    def __getitem__(self, name: str) -> Backend:
        return self.servers[name]

    def cluster(self, name: str = "default", era: str = "A", extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A cluster config for these servers. Sections not backed here are off unless ``extra`` sets them."""
        cluster: dict[str, Any] = {"name": name, "era": era}
        for section in (*OTHER_SECTIONS, "etcd", "redis"):
            if section not in self.servers:
                cluster[section] = {"enabled": False}
        if "etcd" in self.servers:
            etcd = self.servers["etcd"]
            cluster["etcd"] = {"host": etcd.host, "port": etcd.port}
        if "redis" in self.servers:
            redis = self.servers["redis"]
            assert isinstance(redis, RedisServer)
            cluster["redis"] = {"url": redis.url}
        if "postgres" in self.servers:
            postgres = self.servers["postgres"]
            assert isinstance(postgres, PostgresServer)
            cluster["postgres"] = {"url": postgres.dsn, "enabled": True}
        if extra:
            for section in extra:  # a section the user configures is theirs: drop our "enabled: false"
                if isinstance(cluster.get(section), dict) and cluster[section] == {"enabled": False}:
                    del cluster[section]
            cluster = deep_merge(cluster, extra)
        return cluster

    def heal(self) -> None:
        """Undo any fault a bench left: SIGCONT the stopped, restart the dead (same port, same data)."""
        for server in self.servers.values():
            if server.proc.stopped:
                server.proc.cont()
            if not server.proc.alive:
                server.restart()

    def close(self) -> None:
        for server in self.servers.values():
            with contextlib.suppress(Exception):
                server.close()
        self.servers.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Self:
        return self.start() if not self.servers else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@contextlib.contextmanager
def backends_for(names: Sequence[str], given: Backends | None) -> Iterator[Backends]:
    """The given (already running) backends, healed afterwards; or new ones, closed afterwards."""
    if given is not None:
        try:
            yield given
        finally:
            given.heal()
        return
    with Backends(names) as backends:
        yield backends


@contextlib.contextmanager
def sandbox_for(era: str) -> Iterator[Sandbox]:
    """A whole sandbox PlaceOS of ``era`` (``sandbox.cluster.Sandbox``: real etcd/Redis/PostgreSQL, the
    RethinkDB and Elasticsearch stand-ins, core, search-ingest, rest-api, triggers) in a temp dir,
    every process of it stopped by PID afterwards (also when it fails to start)."""
    sb = Sandbox(era)
    sb.start()
    try:
        yield sb
    finally:
        sb.stop()


def sandbox_cluster(sb: Sandbox, name: str, era: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One cluster entry pointing at the sandbox: the sandbox's own exporter settings
    (``Sandbox.exporter_cluster``, what ``placeos-sandbox up`` prints and ``--with-exporter`` uses;
    every backend and the user path), renamed, with ``era`` fixed and ``extra`` merged in."""
    return deep_merge(sb.exporter_cluster() | {"name": name, "era": era}, extra or {})


def cpu_seconds(pids: Sequence[int]) -> dict[int, float]:
    """user+system CPU seconds of each of these processes still alive."""
    out: dict[int, float] = {}
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            out[pid] = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
    return out


def load_extra(path: Path | None) -> dict[str, Any]:
    """``--extra-config``: YAML merged into every cluster the bench configures (e.g. an api section)."""
    if path is None:
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: top level must be a mapping of cluster settings")
    return data


# --------------------------------------------------------------------------------- child processes


def child_env() -> dict[str, str]:
    """Our environment without exporter settings (env beats the YAML file we write) and with the repo."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLACEOS_EXPORTER_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    return env


class ExporterProcess:
    """The exporter in its own process, on a loopback port, stopped by PID.

    ``mode="cli"`` runs ``python -m exporter.cli serve`` (exactly ``placeos-exporter serve``).
    ``mode="child"`` runs ``bench.exporter_child`` (the same ``Exporter``, plus a task that writes
    asyncio task counts to a JSON file and, with ``record_lag``, every probe run (schedule lag,
    outcome) to a JSON-lines file; with ``profile``, cProfile between ``profile_start`` and
    ``profile_stop``).
    """

    def __init__(
        self,
        settings: Mapping[str, Any],
        workdir: Path,
        *,
        mode: str = "cli",
        record_lag: bool = False,
        stats_interval: float = 1.0,
        log_level: str = "warning",
        ready_timeout: float = 60.0,
        profile: bool = False,
    ) -> None:
        self.settings = dict(settings)
        self.workdir = workdir
        self.mode = mode
        self.record_lag = record_lag
        self.stats_interval = stats_interval
        self.log_level = log_level
        self.ready_timeout = ready_timeout
        self.profile = profile
        self.config_path = workdir / "exporter.yaml"
        self.stats_path = workdir / "exporter-stats.json"
        self.runs_path = workdir / "exporter-runs.jsonl"
        self.profile_path = workdir / "exporter.prof"
        self.log_path = workdir / "exporter.log"
        self.proc: Proc | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _argv(self, port: int) -> list[str]:
        common = ["--config", str(self.config_path), "--log-level", self.log_level]
        if self.mode == "cli":
            return [PYTHON, "-m", "exporter.cli", "serve", *common, "--listen-address", f"{HOST}:{port}"]
        argv = [PYTHON, "-m", "bench.exporter_child", *common, "--listen-address", f"{HOST}:0"]
        argv += ["--stats", str(self.stats_path), "--stats-interval", str(self.stats_interval)]
        if self.record_lag:
            argv += ["--record-lag", "--runs", str(self.runs_path)]
        if self.profile:
            argv += ["--profile", str(self.profile_path)]
        return argv

    def start(self) -> Self:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.settings, sort_keys=False), encoding="utf-8")
        for attempt in range(3):  # a free port picked for the CLI may be taken meanwhile
            port = free_port() if self.mode == "cli" else 0
            for path in (self.stats_path, self.runs_path, self.profile_path):
                path.unlink(missing_ok=True)
            self.proc = Proc.start(self._argv(port), log_path=self.log_path, name="exporter", env=child_env(), cwd=REPO)
            self.port = port
            try:
                self.proc.wait_ready(self._ready, self.ready_timeout)
                return self
            except ProcError as exc:
                self.proc.kill()
                if attempt == 2 or "cannot listen" not in exc.log_tail:
                    raise
            except BaseException:  # Ctrl-C while it starts: stop it before unwinding
                self.proc.kill()
                raise
        raise AssertionError("unreachable")

    def _ready(self) -> bool:
        if self.mode == "child" and not self.port:
            stats = self.stats()
            if not stats.get("port"):
                return False
            self.port = int(stats["port"])
        status, _ = http_get(self.port, "/-/ready", timeout=1.0)
        return status == 200

    def stats(self) -> dict[str, Any]:
        """The last stats the child wrote ({} before the first)."""
        try:
            data: dict[str, Any] = json.loads(self.stats_path.read_text())
            return data
        except (OSError, ValueError):
            return {}

    async def stats_after(self, since: float) -> dict[str, Any]:
        """The first stats the child wrote at or after wall-clock ``since`` (polls the file)."""

        async def written() -> dict[str, Any] | None:
            stats = self.stats()
            return stats if stats.get("time", 0) >= since else None

        return await wait_until(written, 10 + 2 * self.stats_interval, "the exporter child's stats")

    def runs(self) -> list[RunSample]:
        """Every probe run the child recorded (``record_lag``) up to its last stats write: (wall-clock
        start, cluster, probe, lag seconds or None for a loop's first two runs, reason, duration)."""
        try:
            lines = self.runs_path.read_text().splitlines()
        except FileNotFoundError:
            return []
        return [(float(a), str(c), str(p), None if g is None else float(g), str(r), float(d))
                for a, c, p, g, r, d in map(json.loads, lines)]  # fmt: skip

    def profile_start(self) -> None:
        """Start the child's cProfile (``profile=True``)."""
        os.kill(self.pid, signal.SIGUSR1)

    async def profile_stop(self) -> Path:
        """Stop the child's cProfile; the stats file once it is written."""
        os.kill(self.pid, signal.SIGUSR2)

        async def dumped() -> Path | None:
            return self.profile_path if self.profile_path.exists() else None

        return await wait_until(dumped, 10, "the exporter child's profile")

    def sample(self) -> ProcSample:
        return read_proc(self.pid)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def exporter_settings(clusters: list[dict[str, Any]], interval: float, timeout: float) -> dict[str, Any]:
    """Exporter-wide YAML: the clusters, one interval and timeout for every probe, history default."""
    return {"interval": interval, "timeout": timeout, "clusters": clusters}


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"placeos-bench-{prefix}-") as d:
        yield Path(d)
