"""The sandbox without its faults: layout, URLs, part factories, start/stop, the views handed to the
exporter, and the helpers seeding and status share with the faults (default targets, admin passwords).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import yaml

from sandbox import backends
from sandbox.cluster.common import (
    _CONFIG_ENV_PREFIXES_EXPORTER,
    API,
    BACKENDS_BY_ERA,
    ERAS,
    ES_USER,
    ES_VERSION,
    HOST,
    MARKER,
    PARTS,
    RETHINKDB_DB,
    SERVICES_BY_ERA,
    SandboxError,
    SandboxInputError,
    _child_env,
    _core_loaded,
    _http_ready,
    _poll,
    _python_argv,
    http_json,
)
from sandbox.cluster.parts import _BackendPart, _Fault, _Part, _ProcPart
from sandbox.ports import free_port
from sandbox.procs import Proc, pid_alive
from sandbox.simulator import db as config_db
from sandbox.simulator import fts, seed

# ------------------------------------------------------------------------------------------- sandbox


class SandboxBase:
    """Everything of `Sandbox` but breaking and healing parts (see `Sandbox` for the arguments)."""

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
            raise SandboxInputError(f"unknown era {era!r}: choose A, B, C or D")
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
        self.es_version = es_version or ES_VERSION.get(era, "")
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
    def service_names(self) -> tuple[str, ...]:
        """The simulated services of this era besides the cores (SERVICES_BY_ERA)."""
        return SERVICES_BY_ERA[self.era]

    @property
    def part_names(self) -> list[str]:
        """Every addressable part of this era, in PARTS order (all cores together as `core`)."""
        present = {*self.backend_names, *self.service_names, "core", "driver", "module"}
        return [p for p in PARTS if p in present]

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
        env = {"SANDBOX_REDIS_URL": self._redis_url, "SANDBOX_DB_URL": self._db_url}
        if "elasticsearch" in self.backend_names:
            env["SANDBOX_ES_URL"] = self._es_url
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
            if "build-service" in self.service_names:
                args += ["--build-url", f"http://{HOST}:{self._port('build-service')}"]
            argv = _python_argv("sandbox.simulator.core", args, launcher=True)
        elif name == "search-ingest":
            args = ["--port", str(port), "--db=@env:SANDBOX_DB_URL", "--es=@env:SANDBOX_ES_URL"]
            args += ["--interval", str(self.search_interval)]
            argv = _python_argv("sandbox.simulator.search_ingest", args, launcher=True)
        elif name == "build-service":
            argv = _python_argv("sandbox.simulator.build_service", ["--port", str(port)])
        elif name == "rest-api":
            args = ["--port", str(port), "--era", self.era, "--etcd-ttl", str(self.etcd_ttl)]
            args += ["--retries", str(self.api_retries), "--data-dir", str(self._data(name))]
            args += ["--triggers-url", f"http://{HOST}:{self._port('triggers')}"]
            if "search-ingest" in self.service_names:
                args += ["--search-ingest-url", f"http://{HOST}:{self._port('search-ingest')}"]
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
        argv += ["serve", "--web.listen-address", self.exporter_listen]
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
                if self.era == "D":  # models 6d3a9ad: the generated search_vector columns
                    await fts.migrate(db, seed.TABLES)
            finally:
                await db.close()

        # In a worker thread: asyncio.run must not be called from a thread with a running loop.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            try:
                pool.submit(asyncio.run, go()).result()
            except config_db.DBError as e:
                raise SandboxError(f"seeding the config database failed: {e}") from e

    def _start_simulators(self) -> None:
        parts = [self._sim_part(name) for name in [*self.core_names, *self.service_names]]
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

        source = "search-ingest mirrored them" if "search-ingest" in self.service_names else "from PostgreSQL"
        _poll(listed, deadline, f"rest-api lists the seeded systems ({source})")

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
        if "elasticsearch" in self.backend_names:
            env |= {
                "ELASTIC_HOST": HOST,
                "ELASTIC_PORT": str(self._parts["elasticsearch"].port),
                "ELASTIC_USER": ES_USER,
                "ELASTIC_PASSWORD": self._es_password,
            }
        env |= {
            "PLACE_URI": self.api_url,
            "PLACE_DOMAIN": seed.AUTHORITY_DOMAIN,
            "PLACEOS_EXPORTER_API_API_KEY": self.api_key,
            "PLACEOS_EXPORTER_API_SYSTEM_ID": seed.PROBE_SYSTEM,
            "PLACEOS_EXPORTER_API_MODULE": seed.PROBE_MODULE,
            "PLACEOS_EXPORTER_API_FUNCTION": seed.PROBE_FUNCTION,
            "PLACEOS_EXPORTER_API_CHANGING_STATUS": seed.TICK_STATUS,
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
                "changing_status": seed.TICK_STATUS,
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
        if "elasticsearch" in self.backend_names:
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

    # ------------------------------------------------------------------------------------ fault helpers

    def _default_target(self, part: str) -> str:
        module_id = seed.system_mappings(seed.PROBE_SYSTEM)["{}/{}".format(*seed.PROBE_MODULE.rsplit("_", 1))]
        if part == "module":
            return module_id
        return dict(seed.MODULES)[module_id]

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
