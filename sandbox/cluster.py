"""The sandbox orchestrator: one small PlaceOS of a given era on loopback, and its faults.

Why this exists (design §6): the exporter's diagnosis is only worth something if the symptoms it reads
are the ones a real failure produces. So the sandbox does not fake symptoms: it starts real backends
(etcd, Redis, PostgreSQL) and wire-faithful stand-ins (RethinkDB, Elasticsearch), seeds the config
database, then starts the PlaceOS simulators (core, search-ingest, rest-api, triggers) that really
depend on them. Breaking a part is done to that part only, by PID or over its own protocol, and the
symptoms follow by themselves (the troubleshooting page, internals §9).

Eras (design §2, internals §0): A = etcd + RethinkDB + Redis + ES; B = etcd + PostgreSQL + Redis + ES;
C = PostgreSQL + Redis (also core discovery) + ES. Every era also runs search-ingest, one or more cores,
rest-api and triggers (internals §8, the partner environment's set).

Faults (``break_part``; each undone by ``heal``):

* every process part: ``kill`` (SIGKILL of the whole process tree; a core is not deregistered, so era
  A/B keep its etcd key until the lease runs out and era C keeps a stale lookup entry), ``stop``
  (SIGSTOP, a hung process) and ``garbage`` (the part goes away and ``sandbox.garbage`` answers
  nonsense on its port). Heal restarts the part on the same port with the same data dir.
* backends and stand-ins: ``wrong-credentials``: the password clients were given stops working,
  changed over the part's own protocol (sandbox.backends; RethinkDB ``users`` table update;
  Elasticsearch ``POST /_security/user/elastic/_password``). Heal restores it.
* part-specific (README contract 5): elasticsearch ``red``, search-ingest ``pause``, driver ``crash`` /
  ``crash-loop`` / ``compile-fail`` and module ``disconnect`` (core's ``/_sandbox/...`` routes),
  rest-api ``unreachable`` (its listener gone), ``bad-gateway`` (nginx's 502 in front of it) and
  ``etcd-unreachable`` (eras A/B: the API loses its route to etcd).

Secrets (the API key secret, the support user's password, the database and Elasticsearch passwords)
are generated per run with ``secrets.token_urlsafe`` and never logged. The simulators that take a
database or Elasticsearch URL only on their command line are started through a tiny launcher that
reads ``@env:NAME`` arguments from their environment, so no password shows in the process list.
``exporter_env()`` / ``exporter_yaml()`` hand the settings (secrets included) to the exporter.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import json
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import yaml

from sandbox import backends, garbage
from sandbox.ports import free_port
from sandbox.procs import Proc, ProcError, ReadyCheck, pid_alive
from sandbox.simulator import db as config_db
from sandbox.simulator import seed

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
ERAS = ("A", "B", "C")
API = "/api/engine/v2"
RETHINKDB_DB = "place_development"  # the partner environment's database (internals §8)
ES_VERSION = {"A": "7.17.6", "B": "7.17.6", "C": "8.14.3"}  # partner environment images (internals §8)
ES_USER = "elastic"
MARKER = ".placeos-sandbox"  # marks a root dir whose data/ and logs/ the sandbox may wipe

PARTS = (
    "etcd",
    "rethinkdb",
    "postgres",
    "redis",
    "elasticsearch",
    "search-ingest",
    "core",
    "driver",
    "module",
    "rest-api",
    "triggers",
)
BACKENDS_BY_ERA: dict[str, tuple[str, ...]] = {
    "A": ("etcd", "rethinkdb", "redis", "elasticsearch"),
    "B": ("etcd", "postgres", "redis", "elasticsearch"),
    "C": ("postgres", "redis", "elasticsearch"),
}
GENERIC_MODES = ("kill", "stop", "garbage")
MODES: dict[str, tuple[str, ...]] = {
    "etcd": (*GENERIC_MODES, "wrong-credentials"),
    "rethinkdb": (*GENERIC_MODES, "wrong-credentials"),
    "postgres": (*GENERIC_MODES, "wrong-credentials"),
    "redis": (*GENERIC_MODES, "wrong-credentials"),
    "elasticsearch": (*GENERIC_MODES, "wrong-credentials", "red"),
    "search-ingest": (*GENERIC_MODES, "pause"),
    "core": GENERIC_MODES,
    "driver": ("crash", "crash-loop", "compile-fail"),
    "module": ("disconnect",),
    "rest-api": (*GENERIC_MODES, "unreachable", "bad-gateway", "etcd-unreachable"),
    "triggers": GENERIC_MODES,
}

# `python -c _LAUNCHER <module> <args>`: runs the module as `python -m` would, replacing an
# `@env:NAME` at the end of an argument (`--db=@env:SANDBOX_DB_URL`) by that environment variable, so
# secrets stay out of /proc/<pid>/cmdline. Always `--flag=value`: a secret may start with "-".
_LAUNCHER = (
    "import os,re,runpy,sys;"
    "sys.argv=[sys.argv[1]]+[re.sub(r'@env:(\\w+)$',lambda m:os.environ[m[1]],a) for a in sys.argv[2:]];"
    "runpy.run_module(sys.argv[0],run_name='__main__',alter_sys=True)"
)
# Environment variables a child could read as its own configuration: never inherited from ours.
_CONFIG_ENV_PREFIXES = ("SANDBOX_", "PLACEOS_EXPORTER_", "ETCD", "REDIS_", "RETHINKDB_", "PG_", "ELASTIC_", "ES_")
_CONFIG_ENV_PREFIXES_EXPORTER = (*_CONFIG_ENV_PREFIXES, "PLACE_", "HD_SERVICE_NAMESPACE")


class SandboxError(RuntimeError):
    """Something in the sandbox failed (a part did not start, a fault could not be applied)."""


class SandboxInputError(SandboxError, ValueError):
    """The request itself is wrong: unknown part or mode, part not in this era, already broken."""


def _python_argv(module: str, args: Iterable[str], *, launcher: bool = False) -> list[str]:
    if launcher:
        return [sys.executable, "-c", _LAUNCHER, module, *args]
    return [sys.executable, "-m", module, *args]


def _child_env(extra: Mapping[str, str], prefixes: tuple[str, ...] = _CONFIG_ENV_PREFIXES) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(extra)
    return env


def http_json(
    method: str,
    url: str,
    body: Any = None,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 5.0,
) -> tuple[int, Any]:
    """One HTTP request with a JSON body; (status, parsed JSON or text). Raises OSError if unreachable."""
    data = json.dumps(body).encode() if body is not None else None
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http URL: {url}")
    req = urllib.request.Request(url, data=data, method=method)  # noqa: S310 (checked above)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    for key, value in (headers or {}).items():
        req.add_header(key, value)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    text = raw.decode("utf-8", "replace")
    try:
        return status, json.loads(text) if text else None
    except ValueError:
        return status, text


def _http_ready(url: str) -> Callable[[], bool]:
    def check() -> bool:
        status, _ = http_json("GET", url, timeout=1.0)
        return status == 200

    return check


def _core_loaded(url: str) -> Callable[[], bool]:
    """A core has registered and loaded its modules (its `/_sandbox/ready` says `loaded`)."""

    def check() -> bool:
        status, body = http_json("GET", f"{url}/_sandbox/ready", timeout=2.0)
        return status == 200 and isinstance(body, dict) and bool(body.get("loaded"))

    return check


def _poll(check: Callable[[], object], deadline: float, what: str, interval: float = 0.1) -> None:
    """Poll until `check` is truthy (exceptions count as not yet); SandboxError at the deadline."""
    end = time.monotonic() + deadline
    last = "no check ran"
    while True:
        try:
            result = check()
            if result:
                return
            last = f"got {result!r}"
        except Exception as e:
            last = f"{type(e).__name__}: {e}"
        if time.monotonic() >= end:
            raise SandboxError(f"{what}: not true after {deadline:g}s ({last[:300]})")
        time.sleep(interval)


# --------------------------------------------------------------------------------------------- parts


class _Part:
    """One process part: started, restarted on the same port and data dir, stopped."""

    name: str

    @property
    def proc(self) -> Proc | None:
        raise NotImplementedError

    @property
    def port(self) -> int:
        raise NotImplementedError

    @property
    def log_path(self) -> Path | None:
        proc = self.proc
        return proc.log_path if proc is not None else None

    def start(self) -> None:
        """Start (or start again, same port and data) and wait until ready."""
        raise NotImplementedError

    def terminate(self) -> None:
        proc = self.proc
        if proc is not None:
            proc.terminate()

    @property
    def alive(self) -> bool:
        proc = self.proc
        return proc is not None and proc.alive


class _BackendPart(_Part):
    """A real server from sandbox.backends (etcd, Redis, PostgreSQL), restarted through its handle."""

    def __init__(self, name: str, factory: Callable[[], backends.Backend]) -> None:
        self.name = name
        self._factory = factory
        self.backend: backends.Backend | None = None

    @property
    def proc(self) -> Proc | None:
        return self.backend.proc if self.backend is not None else None

    @property
    def port(self) -> int:
        assert self.backend is not None, f"{self.name} never started"
        return self.backend.port

    def start(self) -> None:
        if self.backend is None:
            self.backend = self._factory()
        else:
            self.backend.restart()

    def terminate(self) -> None:
        if self.backend is not None:
            self.backend.close()


class _ProcPart(_Part):
    """A `python -m sandbox....` part (stand-in or simulator) on a fixed port."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        port: int,
        log_path: Path,
        env: dict[str, str],
        ready: ReadyCheck,
        ready_timeout: float,
    ) -> None:
        self.name = name
        self.argv = argv
        self._port = port
        self._log_path = log_path
        self.env = env
        self.ready = ready
        self.ready_timeout = ready_timeout
        self._proc: Proc | None = None

    @property
    def proc(self) -> Proc | None:
        return self._proc

    @property
    def port(self) -> int:
        return self._port

    @property
    def log_path(self) -> Path:
        return self._log_path

    def launch(self) -> None:
        if self._proc is not None and self._proc.alive:
            self._proc.terminate()
        self._proc = Proc.start(self.argv, log_path=self._log_path, name=self.name, env=self.env, cwd=REPO)

    def wait_ready(self) -> None:
        assert self._proc is not None
        try:
            self._proc.wait_ready(self.ready, self.ready_timeout)
        except BaseException:
            self._proc.kill()
            raise

    def start(self) -> None:
        self.launch()
        self.wait_ready()


@dataclass
class _Fault:
    """An active fault: its mode, its target (driver or module id) and what heal needs."""

    mode: str
    target: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------- sandbox


class Sandbox:
    """A small PlaceOS of era A, B or C on loopback. `start()`, `stop()`, break and heal its parts.

    `root_dir` holds `data/<part>` and `logs/<part>.log` (both wiped at start: passwords are new each
    run, so old data would not match them); None makes a temp dir removed at `stop()`.
    `etcd_ttl` is the cores' lease TTL and how long rest-api keeps routing with cores it saw when etcd
    cannot be read (hound-dog's 15 s; short in tests). `redis_ttl` is era C's node key TTL.
    `exporter_listen` ("host:port") also runs `placeos-exporter serve` against the sandbox.
    """

    def __init__(
        self,
        era: str = "A",
        root_dir: Path | str | None = None,
        *,
        cores: int = 1,
        etcd_ttl: int = 15,
        redis_ttl: int = 20,
        es_version: str | None = None,
        search_interval: float = 2.0,
        api_retries: int = 2,
        ready_timeout: float = 30.0,
        exporter_listen: str | None = None,
        exporter_interval: float = 5.0,
    ) -> None:
        era = era.upper()
        if era not in ERAS:
            raise SandboxInputError(f"unknown era {era!r}: choose A, B or C")
        if cores < 1:
            raise SandboxInputError("--cores must be at least 1")
        if etcd_ttl < 1 or redis_ttl < 1:
            raise SandboxInputError("TTLs must be at least 1 s")
        self.era = era
        self._own_root = root_dir is None
        self.root_dir = Path(root_dir or tempfile.mkdtemp(prefix="placeos-sandbox-")).resolve()
        self.cores = cores
        self.etcd_ttl = etcd_ttl
        self.redis_ttl = redis_ttl
        self.es_version = es_version or ES_VERSION[era]
        self.search_interval = search_interval
        self.api_retries = api_retries
        self.ready_timeout = ready_timeout
        self.exporter_listen = exporter_listen
        self.exporter_interval = exporter_interval

        # Generated per run; never logged.
        self.api_key_secret = secrets.token_urlsafe(24)
        self.user_password = secrets.token_urlsafe(18)
        self._rethinkdb_password = secrets.token_urlsafe(18)
        self._es_password = secrets.token_urlsafe(18)

        self.core_names = ["core"] if cores == 1 else [f"core-{i}" for i in range(1, cores + 1)]
        self._parts: dict[str, _Part] = {}
        self._start_order: list[str] = []
        self._garbage: dict[str, Proc] = {}
        self._faults: dict[str, _Fault] = {}
        self._lock = threading.RLock()
        self._started = False
        self._ports: dict[str, int] = {}
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------------------------ layout

    @property
    def data_root(self) -> Path:
        return self.root_dir / "data"

    @property
    def log_dir(self) -> Path:
        return self.root_dir / "logs"

    def _data(self, part: str) -> Path:
        return self.data_root / part

    def _log(self, part: str) -> Path:
        return self.log_dir / f"{part}.log"

    def _port(self, part: str) -> int:
        """A fixed port per simulator part, picked once, so a restart comes back where it was."""
        if part not in self._ports:
            self._ports[part] = free_port()
        return self._ports[part]

    @property
    def backend_names(self) -> tuple[str, ...]:
        return BACKENDS_BY_ERA[self.era]

    @property
    def part_names(self) -> list[str]:
        """Every addressable part of this era, in PARTS order (all cores together as `core`)."""
        databases = ("etcd", "rethinkdb", "postgres")
        return [p for p in PARTS if p not in databases or p in self.backend_names]

    # ------------------------------------------------------------------------------------ URLs

    def url(self, part: str) -> str:
        """A part's URL without credentials."""
        if part not in self._parts:
            raise SandboxError(f"{part} is not running in this sandbox")
        port = self._parts[part].port
        if part == "redis":
            return f"redis://{HOST}:{port}/0"
        if part == "postgres":
            return f"postgresql://{backends.PostgresServer.user}@{HOST}:{port}/{backends.PostgresServer.database}"
        if part == "rethinkdb":
            return f"rethinkdb://{HOST}:{port}/{RETHINKDB_DB}"
        return f"http://{HOST}:{port}"

    @property
    def api_url(self) -> str:
        return self.url("rest-api")

    @property
    def api_key(self) -> str:
        """The seeded API key as clients send it: `<id>.<secret>` (internals §5.2)."""
        return f"{seed.API_KEY_ID}.{self.api_key_secret}"

    def _require_started(self) -> None:
        if not all(name in self._parts for name in (*self.backend_names, "rest-api", "triggers")):
            raise SandboxError("the sandbox is not running")

    def _backend(self, name: str) -> backends.Backend:
        part = self._parts[name]
        assert isinstance(part, _BackendPart) and part.backend is not None
        return part.backend

    @property
    def _redis_url(self) -> str:
        backend = self._backend("redis")
        assert isinstance(backend, backends.RedisServer)
        return backend.url

    @property
    def _db_url(self) -> str:
        if self.era == "A":
            pw = quote(self._rethinkdb_password, safe="")
            return f"rethinkdb://admin:{pw}@{HOST}:{self._parts['rethinkdb'].port}/{RETHINKDB_DB}"
        backend = self._backend("postgres")
        assert isinstance(backend, backends.PostgresServer)
        return backend.dsn

    @property
    def _etcd_url(self) -> str:
        backend = self._backend("etcd")
        assert isinstance(backend, backends.EtcdServer)
        return backend.url

    @property
    def _es_url(self) -> str:
        pw = quote(self._es_password, safe="")
        return f"http://{ES_USER}:{pw}@{HOST}:{self._parts['elasticsearch'].port}"

    def _sim_env(self) -> dict[str, str]:
        env = {
            "SANDBOX_REDIS_URL": self._redis_url,
            "SANDBOX_DB_URL": self._db_url,
            "SANDBOX_ES_URL": self._es_url,
        }
        if self.era in ("A", "B"):
            env["SANDBOX_ETCD_URL"] = self._etcd_url
        return _child_env(env)

    # ------------------------------------------------------------------------------------ part factories

    def _backend_part(self, name: str) -> _Part:
        data = self._data(name)
        if name == "etcd":
            return _BackendPart(name, lambda: backends.start_etcd(data, ready_timeout=self.ready_timeout))
        if name == "redis":
            return _BackendPart(name, lambda: backends.start_redis(data, ready_timeout=self.ready_timeout))
        if name == "postgres":
            return _BackendPart(name, lambda: backends.start_postgres(data, ready_timeout=self.ready_timeout))
        port = self._port(name)
        if name == "rethinkdb":
            argv = _python_argv("sandbox.standins.rethinkdb", ["--port", str(port), "--data-dir", str(data)])
            return _ProcPart(
                name,
                argv,
                port=port,
                log_path=self._log(name),
                env=_child_env({}),
                ready=port,
                ready_timeout=self.ready_timeout,
            )
        if name == "elasticsearch":
            args = ["--port", str(port), "--data-dir", str(data), "--version", self.es_version]
            args += ["--password=@env:SANDBOX_ES_PASSWORD"]  # seeds the password on first start
            return _ProcPart(
                name,
                _python_argv("sandbox.standins.elasticsearch", args, launcher=True),
                port=port,
                log_path=self._log(name),
                env=_child_env({"SANDBOX_ES_PASSWORD": self._es_password}),
                ready=_http_ready(f"http://{HOST}:{port}/_sandbox/ready"),
                ready_timeout=self.ready_timeout,
            )
        raise AssertionError(name)

    def _sim_part(self, name: str) -> _ProcPart:
        port = self._port(name)
        env = self._sim_env()
        ready = _http_ready(f"http://{HOST}:{port}/_sandbox/ready")
        if name in self.core_names:
            args = ["--port", str(port), "--era", self.era, "--redis=@env:SANDBOX_REDIS_URL"]
            args += ["--db=@env:SANDBOX_DB_URL", "--data-dir", str(self._data(name))]
            if self.era in ("A", "B"):
                args += ["--etcd=@env:SANDBOX_ETCD_URL", "--etcd-ttl", str(self.etcd_ttl)]
            else:
                args += ["--redis-ttl", str(self.redis_ttl)]
            argv = _python_argv("sandbox.simulator.core", args, launcher=True)
        elif name == "search-ingest":
            args = ["--port", str(port), "--db=@env:SANDBOX_DB_URL", "--es=@env:SANDBOX_ES_URL"]
            args += ["--interval", str(self.search_interval)]
            argv = _python_argv("sandbox.simulator.search_ingest", args, launcher=True)
        elif name == "rest-api":
            args = ["--port", str(port), "--era", self.era, "--etcd-ttl", str(self.etcd_ttl)]
            args += ["--retries", str(self.api_retries), "--data-dir", str(self._data(name))]
            argv = _python_argv("sandbox.simulator.rest_api", args)
        elif name == "triggers":
            argv = _python_argv("sandbox.simulator.triggers", ["--port", str(port), "--era", self.era])
        else:
            raise AssertionError(name)
        return _ProcPart(
            name, argv, port=port, log_path=self._log(name), env=env, ready=ready, ready_timeout=self.ready_timeout
        )

    def _exporter_part(self) -> _ProcPart:
        assert self.exporter_listen is not None
        host, _, port = self.exporter_listen.rpartition(":")
        env = _child_env(self.exporter_env(), _CONFIG_ENV_PREFIXES_EXPORTER)
        env["PLACEOS_EXPORTER_INTERVAL"] = f"{self.exporter_interval:g}"
        env["PLACEOS_EXPORTER_TIMEOUT"] = f"{min(5.0, self.exporter_interval * 0.6):g}"
        exe = Path(sys.executable).with_name("placeos-exporter")
        argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "exporter.cli"]
        argv += ["serve", "--listen-address", self.exporter_listen]
        check_host = host.strip("[]") or HOST
        return _ProcPart(
            "exporter",
            argv,
            port=int(port),
            log_path=self._log("exporter"),
            env=env,
            ready=(HOST if check_host in ("0.0.0.0", "::") else check_host, int(port)),
            ready_timeout=self.ready_timeout,
        )

    # ------------------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start every part (backends in parallel, seed, then simulators) and wait until execute works.

        On any error (or Ctrl-C) everything started so far is stopped before the exception propagates.
        """
        if self._started:
            raise SandboxError("this sandbox was already started")
        self._started = True
        t0 = time.monotonic()
        try:
            self._prepare_dirs()
            self._start_backends()
            self.timings["backends"] = time.monotonic() - t0
            self._seed()
            self.timings["seed"] = time.monotonic() - t0
            self._start_simulators()
            self.timings["simulators"] = time.monotonic() - t0
            self.wait_working()
            self.timings["working"] = time.monotonic() - t0
            if self.exporter_listen:
                part = self._exporter_part()
                self._add(part)
                part.start()
                self.timings["exporter"] = time.monotonic() - t0
        except BaseException:
            self.stop()
            raise
        self.timings["up"] = time.monotonic() - t0

    def _prepare_dirs(self) -> None:
        """Fresh `data/` and `logs/` (0700), wiping a previous run's only if a marker says they are ours."""
        self.root_dir.mkdir(parents=True, exist_ok=True)
        marker = self.root_dir / MARKER
        previous = [sub for sub in (self.data_root, self.log_dir) if sub.exists()]
        if previous and not marker.exists():
            raise SandboxInputError(
                f"{self.root_dir} already holds data/ or logs/ that placeos-sandbox did not create; "
                "choose another directory"
            )
        marker.write_text("placeos-sandbox: data/ and logs/ here are wiped at every start.\n")
        for sub in previous:
            shutil.rmtree(sub)
        self.data_root.mkdir(mode=0o700)
        self.log_dir.mkdir(mode=0o700)

    def _add(self, part: _Part) -> None:
        with self._lock:
            self._parts[part.name] = part
            self._start_order.append(part.name)

    def _start_backends(self) -> None:
        parts = [self._backend_part(name) for name in self.backend_names]
        for part in parts:
            self._add(part)
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(parts), thread_name_prefix="sandbox-start")
        try:
            futures = [pool.submit(part.start) for part in parts]
            errors: list[BaseException] = []
            for fut in futures:
                try:
                    fut.result()
                except Exception as e:
                    errors.append(e)
            if errors:
                raise SandboxError(f"a backend did not start: {errors[0]}") from errors[0]
        finally:
            # On Ctrl-C too: let every start finish so that stop() sees (and stops) what it started.
            pool.shutdown(wait=True, cancel_futures=True)

    def _seed(self) -> None:
        if self.era == "A":
            # The stand-in starts with admin's empty password (the RethinkDB default, internals §8);
            # set the run's password over the protocol, as an operator would, keeping it out of argv.
            self._rethinkdb_set_password("", self._rethinkdb_password)
        docs = seed.seed_documents(self.api_key_secret, self.user_password)

        async def go() -> None:
            db = await config_db.open_db(self._db_url, timeout=10.0)
            try:
                await config_db.seed(db, docs)
            finally:
                await db.close()

        # In a worker thread: asyncio.run must not be called from a thread with a running loop.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            try:
                pool.submit(asyncio.run, go()).result()
            except config_db.DBError as e:
                raise SandboxError(f"seeding the config database failed: {e}") from e

    def _start_simulators(self) -> None:
        parts = [self._sim_part(name) for name in [*self.core_names, "search-ingest", "rest-api", "triggers"]]
        for part in parts:
            self._add(part)
            part.launch()  # in start order; they retry their backends, so readiness is awaited together
        errors: list[BaseException] = []
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(parts), thread_name_prefix="sandbox-ready")
        try:
            for fut in [pool.submit(part.wait_ready) for part in parts]:
                try:
                    fut.result()
                except Exception as e:
                    errors.append(e)
        finally:
            # Not waiting: on Ctrl-C, stop() kills the processes and the readiness polls end at once.
            pool.shutdown(wait=False, cancel_futures=True)
        if errors:
            raise SandboxError(f"a simulator did not start: {errors[0]}") from errors[0]

    def wait_working(self, deadline: float | None = None) -> None:
        """Wait until the user path works end to end: cores loaded, systems listed, execute answers."""
        deadline = deadline or self.ready_timeout
        for name in self.core_names:
            _poll(_core_loaded(self.url(name)), deadline, f"{name} registered and loaded its modules")

        def listed() -> bool:
            status, body = self.api("GET", "/systems")
            return status == 200 and isinstance(body, list) and len(body) == len(seed.SYSTEMS)

        _poll(listed, deadline, "rest-api lists the seeded systems (search-ingest mirrored them)")

        def executes() -> bool:
            return self.api("POST", self.probe_execute_path, [])[0] == 200

        _poll(executes, deadline, "execute of the probe function answers 200")

    @property
    def probe_execute_path(self) -> str:
        return f"/systems/{seed.PROBE_SYSTEM}/{seed.PROBE_MODULE}/{seed.PROBE_FUNCTION}"

    def api(self, method: str, path: str, body: Any = None, timeout: float = 15.0) -> tuple[int, Any]:
        """Call rest-api `/api/engine/v2<path>` with the seeded API key and the Authority's Host."""
        headers = {"X-API-Key": self.api_key, "Host": seed.AUTHORITY_DOMAIN, "Accept": "application/json"}
        return http_json(method, f"{self.api_url}{API}{path}", body, headers=headers, timeout=timeout)

    def stop(self) -> None:
        """Stop every child by PID (the exporter and simulators first, backends last); nothing is left.

        Safe to call more than once and after a failed start. Raises SandboxError if a process survived.
        """
        with self._lock:
            pids: set[int] = set()
            for proc in [*(p.proc for p in self._parts.values()), *self._garbage.values()]:
                if proc is not None:
                    pids.update(proc.tree())
            errors: list[str] = []
            for name, proc in list(self._garbage.items()):
                try:
                    proc.terminate()
                except Exception as e:
                    errors.append(f"garbage on {name}: {e}")
                del self._garbage[name]
            for name in reversed(self._start_order):
                try:
                    self._parts[name].terminate()
                except Exception as e:
                    errors.append(f"{name}: {e}")
            left = [pid for pid in sorted(pids) if pid_alive(pid)]
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
            if self._own_root and self.root_dir.exists():
                shutil.rmtree(self.root_dir, ignore_errors=True)
        if errors or left:
            raise SandboxError(f"stop: {'; '.join(errors)}" + (f" (SIGKILLed leftovers {left})" if left else ""))

    def pids(self) -> list[int]:
        """Every live process of the sandbox (parts with their descendants, garbage listeners)."""
        with self._lock:
            procs = [*(p.proc for p in self._parts.values()), *self._garbage.values()]
            return sorted({pid for proc in procs if proc is not None for pid in proc.tree()})

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------ views

    def endpoints(self) -> dict[str, str]:
        """Part name -> URL, no credentials."""
        with self._lock:
            return {name: self.url(name) for name in self._start_order}

    def status(self) -> dict[str, Any]:
        """Era, root dir, every part (pid, port, state: running / stopped / broken:<mode>), all PIDs."""
        with self._lock:
            parts: dict[str, dict[str, Any]] = {}
            for name in self._start_order:
                part = self._parts[name]
                proc = part.proc
                fault = self._faults.get(name)
                entry: dict[str, Any] = {
                    "pid": proc.pid if proc is not None and proc.alive else None,
                    "port": part.port,
                    "state": f"broken:{fault.mode}" if fault else ("running" if part.alive else "stopped"),
                }
                if name in self._garbage:
                    entry["garbage_pid"] = self._garbage[name].pid
                parts[name] = entry
            for name in ("driver", "module"):
                fault = self._faults.get(name)
                parts[name] = {
                    "pid": None,
                    "port": None,
                    "state": f"broken:{fault.mode}" if fault else "running",
                    "target": fault.target if fault else self._default_target(name),
                }
            return {"era": self.era, "root_dir": str(self.root_dir), "parts": parts, "pids": self.pids()}

    def exporter_env(self) -> dict[str, str]:
        """The exporter's env block, in PlaceOS's own env names (exporter/settings.py); holds secrets."""
        self._require_started()
        env: dict[str, str] = {}
        if "etcd" in self.backend_names:
            env |= {"ETCD_HOST": HOST, "ETCD_PORT": str(self._parts["etcd"].port)}
        env["REDIS_URL"] = self._redis_url
        if self.era == "A":
            env |= {
                "RETHINKDB_HOST": HOST,
                "RETHINKDB_PORT": str(self._parts["rethinkdb"].port),
                "RETHINKDB_DB": RETHINKDB_DB,
                "RETHINKDB_USER": "admin",
                "RETHINKDB_PASSWORD": self._rethinkdb_password,
            }
        else:
            env["PG_DATABASE_URL"] = self._db_url
        env |= {
            "ELASTIC_HOST": HOST,
            "ELASTIC_PORT": str(self._parts["elasticsearch"].port),
            "ELASTIC_USER": ES_USER,
            "ELASTIC_PASSWORD": self._es_password,
            "PLACE_URI": self.api_url,
            "PLACE_DOMAIN": seed.AUTHORITY_DOMAIN,
            "PLACEOS_EXPORTER_API_API_KEY": self.api_key,
            "PLACEOS_EXPORTER_API_SYSTEM_ID": seed.PROBE_SYSTEM,
            "PLACEOS_EXPORTER_API_MODULE": seed.PROBE_MODULE,
            "PLACEOS_EXPORTER_API_FUNCTION": seed.PROBE_FUNCTION,
            "PLACEOS_EXPORTER_API_TRIGGERS_URL": self.url("triggers"),
            "PLACEOS_EXPORTER_ERA": "auto",
        }
        return env

    def exporter_cluster(self) -> dict[str, Any]:
        """The same settings as one cluster entry of the exporter's YAML file."""
        self._require_started()
        cluster: dict[str, Any] = {
            "name": f"sandbox-{self.era.lower()}",
            "era": "auto",
            "api": {
                "url": self.api_url,
                "host_header": seed.AUTHORITY_DOMAIN,
                "api_key": self.api_key,
                "system_id": seed.PROBE_SYSTEM,
                "module": seed.PROBE_MODULE,
                "function": seed.PROBE_FUNCTION,
                "triggers_url": self.url("triggers"),
            },
        }
        if "etcd" in self.backend_names:
            cluster["etcd"] = {"host": HOST, "port": self._parts["etcd"].port}
        cluster["redis"] = {"url": self._redis_url}
        if self.era == "A":
            cluster["rethinkdb"] = {
                "host": HOST,
                "port": self._parts["rethinkdb"].port,
                "db": RETHINKDB_DB,
                "user": "admin",
                "password": self._rethinkdb_password,
            }
        else:
            cluster["postgres"] = {"url": self._db_url}
        cluster["elasticsearch"] = {
            "host": HOST,
            "port": self._parts["elasticsearch"].port,
            "username": ES_USER,
            "password": self._es_password,
        }
        return cluster

    def exporter_yaml(self) -> str:
        """A complete exporter config file (`--config`) holding this sandbox as its one cluster."""
        return yaml.safe_dump({"clusters": [self.exporter_cluster()]}, sort_keys=False)

    # ------------------------------------------------------------------------------------ faults

    def _default_target(self, part: str) -> str:
        module_id = seed.system_mappings(seed.PROBE_SYSTEM)["{}/{}".format(*seed.PROBE_MODULE.rsplit("_", 1))]
        if part == "module":
            return module_id
        return dict(seed.MODULES)[module_id]

    def _resolve(self, part: str) -> list[str]:
        """The process parts a name addresses (`core` = every core); SandboxInputError if none."""
        if part == "core":
            return list(self.core_names)
        if part in self.core_names:
            return [part]
        if part not in PARTS:
            names = ", ".join(self.part_names + (self.core_names if self.cores > 1 else []))
            raise SandboxInputError(f"unknown part {part!r}; parts in era {self.era}: {names}")
        if part in ("etcd", "rethinkdb", "postgres") and part not in self.backend_names:
            raise SandboxInputError(
                f"{part} is not part of era {self.era} (its backends: {', '.join(self.backend_names)})"
            )
        return [part]

    def _check_mode(self, part: str, mode: str) -> None:
        kind = "core" if part.startswith("core") else part
        if mode not in MODES[kind]:
            raise SandboxInputError(f"{part} has no mode {mode!r}; its modes: {', '.join(MODES[kind])}")
        if mode == "etcd-unreachable" and self.era == "C":
            raise SandboxInputError("rest-api etcd-unreachable: era C does not use etcd")

    def _check_target(self, part: str, driver: str | None, module: str | None) -> str | None:
        if driver is not None and part != "driver":
            raise SandboxInputError("--driver only applies to part driver")
        if module is not None and part != "module":
            raise SandboxInputError("--module only applies to part module")
        if part == "driver":
            target = driver or self._default_target("driver")
            known = [d.id for d in seed.DRIVERS]
            if target not in known:
                raise SandboxInputError(f"unknown driver {target!r}; drivers: {', '.join(known)}")
            return target
        if part == "module":
            target = module or self._default_target("module")
            known = [m for m, _ in seed.MODULES]
            if target not in known:
                raise SandboxInputError(f"unknown module {target!r}; modules: {', '.join(known)}")
            return target
        return None

    def break_part(self, part: str, mode: str, *, driver: str | None = None, module: str | None = None) -> str:
        """Apply a fault; returns what was done. SandboxInputError for a bad request."""
        with self._lock:
            if not self._started or not self._parts:
                raise SandboxError("the sandbox is not running")
            names = self._resolve(part)
            self._check_mode(part, mode)
            target = self._check_target(part, driver, module)
            for name in names:
                if name in self._faults:
                    raise SandboxInputError(f"{name} is already broken ({self._faults[name].mode}); heal it first")
            done = [self._break_one(name, mode, target) for name in names]
            return "; ".join(done) + f" (undo: placeos-sandbox heal {part})"

    def heal(self, part: str) -> str:
        """Undo the fault on `part` (restart a dead part on its port and data); returns what was done."""
        with self._lock:
            if not self._started or not self._parts:
                raise SandboxError("the sandbox is not running")
            names = self._resolve(part)
            return "; ".join(self._heal_one(name) for name in names)

    def _break_one(self, name: str, mode: str, target: str | None) -> str:
        if name in ("driver", "module"):
            assert target is not None
            return self._break_core_route(name, mode, target)
        part = self._parts[name]
        proc = part.proc
        fault = _Fault(mode, target)
        if proc is None or not proc.alive:
            raise SandboxError(f"{name} is not running; heal it first")
        if mode == "kill":
            pid = proc.pid
            proc.kill()
            msg = f"{name}: SIGKILL pid {pid} and its children"
        elif mode == "stop":
            pids = proc.tree()
            proc.stop()
            msg = f"{name}: SIGSTOP {pids}"
        elif mode == "garbage":
            if name in self.core_names:
                proc.kill()  # no deregistration: the API keeps routing to the port
            else:
                part.terminate()
            self._garbage[name] = garbage.start(part.port, log_path=self._log(f"garbage-{name}"))
            msg = f"{name}: stopped; nonsense listener on port {part.port} (pid {self._garbage[name].pid})"
        elif mode == "wrong-credentials":
            msg = self._break_credentials(name, fault)
        elif mode == "red":
            self._sandbox_route(name, "/_sandbox/health", {"status": "red"})
            msg = "elasticsearch: cluster health red (searches fail with all shards failed)"
        elif mode == "pause":
            self._sandbox_route(name, "/_sandbox/pause", {})
            msg = "search-ingest: mirroring paused (indices lag behind the database)"
        elif mode == "unreachable":
            part.terminate()
            msg = f"rest-api: listener on port {part.port} gone (connections refused)"
        elif mode == "bad-gateway":
            self._sandbox_route(name, "/_sandbox/unreachable", {"on": True})
            msg = "rest-api: every route answers nginx's 502 page"
        elif mode == "etcd-unreachable":
            self._sandbox_route(name, "/_sandbox/etcd-unreachable", {"on": True})
            msg = "rest-api: cannot reach etcd (etcd itself stays up)"
        else:
            raise AssertionError(mode)
        self._faults[name] = fault
        return msg

    def _heal_one(self, name: str) -> str:
        fault = self._faults.get(name)
        if name in ("driver", "module"):
            if fault is None:
                return f"{name}: not broken, nothing to heal"
            assert fault.target is not None
            msg = self._heal_core_route(name, fault.target)
            del self._faults[name]
            return msg
        part = self._parts[name]
        if fault is None:
            if part.alive:
                return f"{name}: not broken, nothing to heal"
            self._restart(name)
            return f"{name}: was not running; restarted on port {part.port}"
        mode = fault.mode
        if mode == "stop":
            proc = part.proc
            if proc is not None:
                proc.cont()
            msg = f"{name}: SIGCONT"
        elif mode in ("kill", "unreachable"):
            self._restart(name)
            msg = f"{name}: restarted on port {part.port} with the same data"
        elif mode == "garbage":
            listener = self._garbage.pop(name, None)
            if listener is not None:
                listener.terminate()
            self._restart(name)
            msg = f"{name}: nonsense listener stopped; restarted on port {part.port}"
        elif mode == "wrong-credentials":
            msg = self._heal_credentials(name, fault)
        elif mode == "red":
            self._sandbox_route(name, "/_sandbox/health", {"status": "green"})
            msg = "elasticsearch: cluster health green"
        elif mode == "pause":
            self._sandbox_route(name, "/_sandbox/resume", {})
            msg = "search-ingest: mirroring resumed"
        elif mode == "bad-gateway":
            self._sandbox_route(name, "/_sandbox/unreachable", {"on": False})
            msg = "rest-api: reachable again"
        elif mode == "etcd-unreachable":
            self._sandbox_route(name, "/_sandbox/etcd-unreachable", {"on": False})
            msg = "rest-api: reaches etcd again"
        else:
            raise AssertionError(mode)
        del self._faults[name]
        return msg

    def _restart(self, name: str) -> None:
        part = self._parts[name]
        try:
            part.start()
        except ProcError as e:
            raise SandboxError(f"{name} did not come back: {e}") from e
        if name in self.core_names:
            # A core is back once it has re-registered and loaded its modules; if a backend it needs
            # is still broken it keeps retrying (as real core does), so this wait is best effort.
            with contextlib.suppress(SandboxError):
                _poll(_core_loaded(self.url(name)), 10.0, f"{name} loaded")

    def _sandbox_route(self, name: str, path: str, body: dict[str, Any]) -> Any:
        url = f"http://{HOST}:{self._parts[name].port}{path}"
        try:
            status, answer = http_json("POST", url, body, timeout=10.0)
        except OSError as e:
            raise SandboxError(f"{name} {path}: {e}") from e
        if status != 200:
            raise SandboxError(f"{name} {path}: HTTP {status} {answer}")
        return answer

    def _break_core_route(self, name: str, mode: str, target: str) -> str:
        key = "driver" if name == "driver" else "module"
        path = f"/_sandbox/driver/{mode}" if name == "driver" else "/_sandbox/module/disconnect"
        applied = self._core_routes(path, {key: target}, f"{name} {mode} {target}")
        self._faults[name] = _Fault(mode, target)
        return f"{name} {target}: {mode} on {', '.join(applied)}"

    def _heal_core_route(self, name: str, target: str) -> str:
        key = "driver" if name == "driver" else "module"
        path = "/_sandbox/driver/heal" if name == "driver" else "/_sandbox/module/connect"
        applied = self._core_routes(path, {key: target}, f"heal {name} {target}")
        return f"{name} {target}: healed on {', '.join(applied)}"

    def _core_routes(self, path: str, body: dict[str, Any], what: str) -> list[str]:
        """POST to every running core; the cores that answered 200 (SandboxError if none did)."""
        applied: list[str] = []
        refusals: list[str] = []
        for core in self.core_names:
            if core in self._garbage or not self._parts[core].alive:
                refusals.append(f"{core}: not running")
                continue
            try:
                status, answer = http_json("POST", f"http://{HOST}:{self._parts[core].port}{path}", body, timeout=10)
            except OSError as e:
                refusals.append(f"{core}: {e}")
                continue
            if status == 200:
                applied.append(core)
            else:
                refusals.append(f"{core}: HTTP {status} {answer}")
        if not applied:
            raise SandboxError(f"{what}: no core applied it ({'; '.join(refusals)})")
        return applied

    # -- credentials

    def _break_credentials(self, name: str, fault: _Fault) -> str:
        if name in ("etcd", "redis", "postgres"):
            backend = self._backend(name)
            backend.break_credentials()
            if isinstance(backend, backends.RedisServer):
                # Redis checks a password once per connection: the clients' open connections would go
                # on working. An operator rotating it drops them too (CLIENT KILL), so every client
                # has to authenticate again, with the password it was given.
                with backend.admin() as conn:
                    for kind in ("normal", "pubsub"):
                        conn.client_kill_filter(_type=kind, skipme=True)
            return f"{name}: the clients' credentials no longer work (changed over its own protocol)"
        wrong = secrets.token_urlsafe(18)
        if name == "rethinkdb":
            self._rethinkdb_set_password(self._rethinkdb_password, wrong)
        elif name == "elasticsearch":
            self._es_set_password(self._es_password, wrong)
        else:
            raise AssertionError(name)
        fault.data["password"] = wrong  # heal authenticates with it to set the right one back
        return f"{name}: admin password changed; the clients' one no longer works"

    def _heal_credentials(self, name: str, fault: _Fault) -> str:
        if name in ("etcd", "redis", "postgres"):
            self._backend(name).heal_credentials()
        elif name == "rethinkdb":
            self._rethinkdb_set_password(fault.data["password"], self._rethinkdb_password)
        elif name == "elasticsearch":
            self._es_set_password(fault.data["password"], self._es_password)
        return f"{name}: the clients' credentials work again"

    def _rethinkdb_set_password(self, current: str, new: str) -> None:
        """`r.db("rethinkdb").table("users").get("admin").update({"password": new})` (README contract 4)."""
        from rethinkdb import RethinkDB

        r = RethinkDB()
        port = self._parts["rethinkdb"].port
        try:
            conn = r.connect(host=HOST, port=port, user="admin", password=current, timeout=5)
            try:
                result = r.db("rethinkdb").table("users").get("admin").update({"password": new}).run(conn)
            finally:
                conn.close()
        except Exception as e:  # the driver's messages never hold the password
            raise SandboxError(f"rethinkdb: changing admin's password failed: {type(e).__name__}: {e}") from e
        if not isinstance(result, dict) or result.get("errors"):
            raise SandboxError(f"rethinkdb: changing admin's password failed: {result}")

    def _es_set_password(self, current: str, new: str) -> None:
        """`POST /_security/user/elastic/_password` with basic auth (README contract 4)."""
        url = f"{self.url('elasticsearch')}/_security/user/{ES_USER}/_password"
        auth = base64.b64encode(f"{ES_USER}:{current}".encode()).decode()
        try:
            status, _ = http_json("POST", url, {"password": new}, headers={"Authorization": f"Basic {auth}"})
        except OSError as e:
            raise SandboxError(f"elasticsearch: changing {ES_USER}'s password failed: {e}") from e
        if status != 200:
            raise SandboxError(f"elasticsearch: changing {ES_USER}'s password failed: HTTP {status}")


__all__ = [
    "ERAS",
    "MODES",
    "PARTS",
    "Sandbox",
    "SandboxError",
    "SandboxInputError",
    "http_json",
]
