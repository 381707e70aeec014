"""The PlaceOS core simulator: joins the cluster, runs driver processes, serves core's HTTP API.

``python -m sandbox.simulator.core --port P --era A|B|C|D --etcd URL --redis URL --db URL --data-dir DIR
[--etcd-ttl S] [--redis-ttl S] [--build-url URL --build-timeout S]``

What it reproduces of core (internals sections in brackets):

* Discovery [§1.1, §1.2]: registers ``http://127.0.0.1:<port>`` in etcd (A/B, lease kept alive) or in
  Redis (C/D, ``{service_core}`` keys), deregisters on SIGTERM (etcd credentials, if etcd runs with auth, come from
  ``ETCD_USERNAME``/``ETCD_PASSWORD`` or the URL, as crystal-etcd reads them); a SIGKILL leaves the etcd key until its
  lease runs out and, in era C, a stale lookup entry until another core registers.
* Module placement [§1.3]: loads from the config database the modules whose rendezvous owner is
  itself (node strings ``"<ULID>:<uri>"`` in A/B, the URI in C) and re-balances when cores come and go.
  It writes Redis ``system/<sys>`` (``"<Name>/<index>" -> module id``) and publishes ``lookup-change``
  [§3.1, §3.2].
* Drivers [§3, §11]: one process per driver (``sandbox.simulator.driver``), keyed like core's binary
  name: A/B ``<file slug>_<commit>_<driver id>``, C/D ``<file slug>_<commit[0..6]>_amd64``. A driver
  process that dies is relaunched at once (placeos-driver >= 6.9), ``launch_count`` + 1 and
  ``last_exit_code`` set. ``last_exit_code`` is computed as Crystal's ``Process::Status#exit_code`` did
  (``(status & 0xff00) >> 8``), so it stays 0 when the process was killed by a signal.
* Compile failures [§11.1, §11.3, A/B behaviour]: the driver is not loaded, ``unavailable_drivers`` gets
  ``{name, reason: "failed to compile <name> from <repo folder>: <output>"}`` and the database's
  ``driver.compilation_output`` is set; a later successful compile resets it to null, but the
  ``unavailable_drivers`` entry stays (an event log cleared only when core restarts).
* HTTP API [§5.3, §7, §11]: ``POST /api/core/v1/command/<module_id>/execute?user_id=`` with
  ``{"__exec__": fn, fn: [args]}``: 200 + the driver's JSON + ``Response-Code``; 203 ``{error,
  backtrace}`` when the driver raised; 404 ``{"error": "module <id> not loaded"}``; 500 when the module
  is loaded but its process is down (era D loads a not-loaded module on execute instead, and has the
  build monitor, recompile and reload routes: sandbox.simulator.core_d). ``GET /api/core/v1/`` (health: Redis PING, etcd
  ``maintenance/status`` in A/B, the config database; 500 when one fails), ``/ready`` (503 until the
  modules are loaded), ``/version``, ``/status``, ``/status/load``, ``/status/loaded``,
  ``/status/driver?path=<key>``, ``/drivers/<file>/compiled`` (bool).

Modelled as the troubleshooting page says: a core that cannot reach its discovery backend (etcd in A/B,
Redis in C) or the config database at start "won't be able to join the cluster and won't launch
drivers": it keeps retrying and ``/api/core/v1/ready`` stays 503. A core that loses etcd later keeps
its drivers running (its lease just cannot be renewed) and re-registers when etcd returns. Sandbox
deviation: ``system/<sys>`` mappings are re-asserted every few seconds so a Redis restarted empty
recovers.

Sandbox-only control routes (README contract point 5; JSON body, 200 on success):
``POST /_sandbox/driver/crash {"driver": id}`` (SIGKILL the process; it is relaunched),
``POST /_sandbox/driver/crash-loop {"driver": id}`` (the process exits ~0.5 s after each launch and is
relaunched after ~1 s), ``POST /_sandbox/driver/compile-fail {"driver": id}``,
``POST /_sandbox/driver/heal {"driver": id}`` (compiles and launches again, ends a crash loop),
``POST /_sandbox/module/disconnect {"module": id}`` / ``/_sandbox/module/connect`` (the driver sets
status ``connected``), ``POST /_sandbox/modules/not-loaded`` / ``/_sandbox/modules/reload``
(sandbox.simulator.core_d), ``GET /_sandbox/ready``. Driver faults and module disconnections are kept in
``<data-dir>/faults.json`` so a restarted core keeps them until healed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import redis.asyncio as aioredis
from aiohttp import web

from sandbox.simulator import core_d
from sandbox.simulator import seed as seed_data
from sandbox.simulator.db import ConfigDB, DBError, mask_url, open_db
from sandbox.simulator.discovery import (
    DEFAULT_TTL,
    DiscoveryError,
    EtcdDiscovery,
    RedisDiscovery,
    make_discovery,
    redis_client,
    rendezvous,
)
from sandbox.simulator.driver_procs import (
    CpuSampler,
    DriverProcess,
    DriverRaisedError,
    ProcessDown,
    _meminfo_kb,
    _proc_rss_kb,
    _system_cpu,
)

log = logging.getLogger("sandbox.core")

REPO_FOLDER = seed_data.REPOSITORY_FOLDER  # the repository folder drivers are compiled from (A/B)
CORE_VERSION = "4.10.3"
# Era D has no platform release (placeos-2026.md §1): a build without PLACE_VERSION reports "DEV".
PLATFORM_VERSION = {"A": "1.2303.4", "B": "2.2403.0", "C": "2.2409.0", "D": "DEV"}
TICK = 1.0


def driver_slug(file_name: str) -> str:
    """core's ``driver_slug``: ``.cr`` dropped, slashes and dots to underscores."""
    return file_name.removesuffix(".cr").replace("/", "_").replace(".", "_")


def driver_key(era: str, driver: dict[str, Any]) -> str:
    """The driver binary's name, which is also the key of ``/status/loaded`` (internals §11.1)."""
    slug = driver_slug(str(driver["file_name"]))
    commit = str(driver.get("commit") or "HEAD")
    if era in ("C", "D"):
        return f"{slug}_{commit[:7]}_amd64"
    return f"{slug}_{commit}_{driver['id']}"


def _compile_output(driver: dict[str, Any]) -> str:
    return (
        "Showing last frame. Use --error-trace for full trace.\n\n"
        f"In {driver.get('file_name')}:1:1\n\n"
        ' 1 | require "placeos-driver"\n     ^\n'
        "Error: sandbox compile-fail fault: this driver does not compile"
    )


# --------------------------------------------------------------------------- faults kept on disk


@dataclass
class Faults:
    """Injected driver faults and disconnected modules, saved in the data dir."""

    path: Path
    crash_loop: set[str] = field(default_factory=set)
    compile_failed: set[str] = field(default_factory=set)
    disconnected: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, path: Path) -> Faults:
        faults = cls(path)
        with contextlib.suppress(OSError, ValueError):
            raw = json.loads(path.read_text())
            faults.crash_loop = set(raw.get("crash_loop", []))
            faults.compile_failed = set(raw.get("compile_failed", []))
            faults.disconnected = set(raw.get("disconnected", []))
        return faults

    def save(self) -> None:
        data = {k: sorted(getattr(self, k)) for k in ("crash_loop", "compile_failed", "disconnected")}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self.path)


# --------------------------------------------------------------------------- core


class Core:
    """The core process: cluster membership, module placement, driver processes, HTTP API."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.era: str = args.era
        self.uri = f"http://127.0.0.1:{args.port}"
        self.data_dir = Path(args.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.faults = Faults.load(self.data_dir / "faults.json")
        self.redis: aioredis.Redis = redis_client(args.redis, timeout=2.0)
        ttl = args.etcd_ttl if self.era in ("A", "B") else args.redis_ttl
        self.discovery: EtcdDiscovery | RedisDiscovery = make_discovery(
            self.era,
            etcd_url=args.etcd,
            redis_url=args.redis,
            ttl=ttl,
            version=CORE_VERSION,
            etcd_username=os.environ.get("ETCD_USERNAME") or None,
            etcd_password=os.environ.get("ETCD_PASSWORD") or None,
            etcd_ca_file=args.etcd_ca,
        )
        self.db: ConfigDB | None = None
        self.drivers: dict[str, dict[str, Any]] = {}  # driver id -> driver doc
        self.modules: dict[str, dict[str, Any]] = {}  # module id -> module doc
        self.systems: list[dict[str, Any]] = []
        self.processes: dict[str, DriverProcess] = {}  # driver key -> manager (compiled and loaded)
        self.compiled: set[str] = set()  # driver ids whose binary exists
        self.unavailable_drivers: list[dict[str, str]] = []
        self.not_loaded: set[str] = set()  # the modules-not-loaded fault (core_d)
        self.build = core_d.BuildApi(args.build_url, args.build_timeout)
        self.registered = False
        self.loaded = False
        self.started = time.time()
        self._mappings_written = 0.0
        self._cpu = CpuSampler()
        self._sys_cpu = _system_cpu()
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()  # placement and driver faults change the same managers

    # -- lifecycle

    async def run(self) -> None:
        self.db = await open_db(self.args.db, timeout=self.args.db_timeout)
        app = self.make_app()
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.args.port)
        await site.start()
        log.info("core (era %s) listening on %s, db %s", self.era, self.uri, mask_url(self.args.db))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        cluster = asyncio.create_task(self._cluster_loop())
        await self._stop.wait()
        log.info("stopping: deregistering and stopping drivers")
        cluster.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await cluster
        await self.discovery.unregister()
        await asyncio.gather(*(p.stop() for p in self.processes.values()))
        await self.discovery.close()
        await self.build.close()
        await self.redis.aclose()
        await runner.cleanup()

    async def _load_config(self) -> None:
        """What core reads at start from the config database: drivers, modules, systems."""
        assert self.db is not None
        self.drivers = {d["id"]: d for d in await self.db.all("driver")}
        self.modules = {m["id"]: m for m in await self.db.all("mod")}
        self.systems = await self.db.all("sys")

    async def _cluster_loop(self) -> None:
        """Config, then registration, then compile and place modules; retried until each step works."""
        waiting: str | None = None

        def wait_log(msg: str) -> None:
            nonlocal waiting
            if waiting != msg:
                log.warning("%s", msg)
                waiting = msg

        while True:
            try:
                await self._load_config()
                break
            except DBError as e:
                wait_log(f"config database unavailable, not launching drivers: {e}")
            await asyncio.sleep(TICK)
        backend = "etcd" if self.era in ("A", "B") else "redis"
        while True:
            try:
                await self.discovery.register(self.uri)
                self.registered = True
                break
            except DiscoveryError as e:
                wait_log(f"cannot join the cluster ({backend} unreachable), not launching drivers: {e}")
            await asyncio.sleep(TICK)
        async with self._lock:
            await self._compile_all()
        while True:
            try:
                async with self._lock:
                    await self._place_modules()
            except DiscoveryError as e:
                wait_log(f"cannot list cluster nodes, keeping current modules: {e}")
            else:
                waiting = None
            await self._write_mappings()
            await asyncio.sleep(TICK)

    async def _compile_all(self) -> None:
        """Compile every driver used by a module (A/B: each core compiles; C: build service)."""
        for driver in self.drivers.values():
            if driver["id"] in self.faults.compile_failed:
                await self._mark_compile_failed(driver)
            elif driver["id"] not in self.compiled:
                await self._mark_compiled(driver)

    async def _mark_compiled(self, driver: dict[str, Any]) -> str | None:
        """Binary exists: ``compilation_output`` back to null. Returns a DB error, if any."""
        self.compiled.add(driver["id"])
        if driver.get("compilation_output") is None:
            return None
        assert self.db is not None
        try:
            await self.db.update("driver", driver["id"], {"compilation_output": None})
            driver["compilation_output"] = None
        except DBError as e:
            return str(e)
        return None

    async def _mark_compile_failed(self, driver: dict[str, Any]) -> str | None:
        """Failed compile: no binary, ``unavailable_drivers`` entry, ``compilation_output`` set."""
        self.compiled.discard(driver["id"])
        output = _compile_output(driver)
        self.unavailable_drivers.append(
            {"name": str(driver["name"]), "reason": f"failed to compile {driver['name']} from {REPO_FOLDER}: {output}"}
        )
        del self.unavailable_drivers[:-50]
        log.error("failed to compile %s from %s", driver["name"], REPO_FOLDER)
        assert self.db is not None
        try:
            await self.db.update("driver", driver["id"], {"compilation_output": output})
            driver["compilation_output"] = output
        except DBError as e:
            return str(e)
        return None

    async def _place_modules(self) -> None:
        """Load the modules this core owns by rendezvous hashing; unload those it no longer owns."""
        nodes = await self.discovery.list_registered()
        values = sorted({n.hash_value for n in nodes})
        own = self.discovery.own_hash_value()
        assert own is not None
        if own not in values:  # our registration is being renewed: still count ourselves
            values.append(own)
        wanted: dict[str, set[str]] = {}
        for mod_id, doc in self.modules.items():
            driver = self.drivers.get(str(doc.get("driver_id")))
            if driver is None or doc.get("running") is False or mod_id in self.not_loaded:
                continue
            if rendezvous(values, mod_id) != own:
                continue
            if driver["id"] not in self.compiled:
                continue  # core logs "driver does not exist for module" and skips it
            wanted.setdefault(driver_key(self.era, driver), set()).add(mod_id)
        for key, running in list(self.processes.items()):
            for mod_id in sorted(running.modules - wanted.get(key, set())):
                log.info("unloading %s (now owned elsewhere)", mod_id)
                await running.remove_module(mod_id)
            if not running.modules:
                await running.stop()
                del self.processes[key]
        for key, mods in wanted.items():
            manager = self.processes.get(key)
            if manager is None:
                driver = self.drivers[str(self.modules[next(iter(mods))]["driver_id"])]
                if driver["id"] not in {d.id for d in seed_data.DRIVERS}:
                    continue  # no sandbox behaviour for this driver
                manager = self.processes[key] = DriverProcess(self, driver, key)
            for mod_id in sorted(mods - manager.modules):
                await manager.add_module(mod_id)
        if not self.loaded:
            self.loaded = True
            log.info("modules loaded: %d driver(s), %d module(s)", len(self.processes), self._module_count())
            if isinstance(self.discovery, RedisDiscovery):
                await self.discovery.set_ready(True)

    def _module_count(self) -> int:
        return sum(len(p.modules) for p in self.processes.values())

    def system_mappings(self) -> dict[str, dict[str, str]]:
        """``system/<sys>``: ``"<Name>/<index>" -> module id``, name = custom_name or name (§3.1)."""
        out: dict[str, dict[str, str]] = {}
        for system in self.systems:
            counts: dict[str, int] = {}
            mapping: dict[str, str] = {}
            for mod_id in system.get("modules", []):
                mod = self.modules.get(mod_id)
                if mod is None:
                    continue
                name = str(mod.get("custom_name") or mod.get("name"))
                counts[name] = counts.get(name, 0) + 1
                mapping[f"{name}/{counts[name]}"] = mod_id
            out[str(system["id"])] = mapping
        return out

    async def _write_mappings(self) -> None:
        """Write the system mappings once, and again every few seconds (sandbox: survive a Redis wipe)."""
        if time.monotonic() - self._mappings_written < 5.0:
            return
        try:
            for sys_id, mapping in self.system_mappings().items():
                key = f"system/{sys_id}"
                current = await asyncio.wait_for(self.redis.hgetall(key), 5)
                if current != mapping:
                    async with self.redis.pipeline(transaction=True) as p:
                        p.delete(key)
                        if mapping:
                            p.hset(key, mapping={k: v for k, v in mapping.items()})
                        p.publish("lookup-change", sys_id)
                        await asyncio.wait_for(p.execute(), 5)
            self._mappings_written = time.monotonic()
        except (aioredis.RedisError, OSError, TimeoutError) as e:
            log.warning("cannot write system mappings to Redis: %s", e)

    # -- lookups

    def process_for_module(self, mod_id: str) -> DriverProcess | None:
        return next((p for p in self.processes.values() if mod_id in p.modules), None)

    def process_for_driver(self, driver_id: str) -> DriverProcess | None:
        return next((p for p in self.processes.values() if p.id == driver_id), None)

    # -- HTTP

    def make_app(self) -> web.Application:
        app = web.Application()
        r = app.router
        r.add_post("/api/core/v1/command/{module_id}/execute", self.h_execute)
        r.add_get("/api/core/v1/", self.h_health)
        r.add_get("/api/core/v1", self.h_health)
        r.add_get("/api/core/v1/ready", self.h_ready)
        r.add_get("/api/core/v1/version", self.h_version)
        r.add_get("/api/core/v1/status", self.h_status)
        r.add_get("/api/core/v1/status/load", self.h_status_load)
        r.add_get("/api/core/v1/status/loaded", self.h_status_loaded)
        r.add_get("/api/core/v1/status/driver", self.h_status_driver)
        r.add_get("/api/core/v1/drivers/{file}/compiled", self.h_compiled)
        r.add_get("/_sandbox/ready", self.h_sandbox_ready)
        r.add_post("/_sandbox/driver/crash", self.h_crash)
        r.add_post("/_sandbox/driver/crash-loop", self.h_crash_loop)
        r.add_post("/_sandbox/driver/compile-fail", self.h_compile_fail)
        r.add_post("/_sandbox/driver/heal", self.h_heal)
        r.add_post("/_sandbox/module/disconnect", self.h_disconnect)
        r.add_post("/_sandbox/module/connect", self.h_connect)
        core_d.add_routes(self, app)
        return app

    async def h_execute(self, request: web.Request) -> web.Response:
        """core ``command.cr`` execute (internals §5.3, §11.2)."""
        mod_id = request.match_info["module_id"]
        try:
            body = await request.json()
            fn = str(body["__exec__"])
            args = body.get(fn, [])
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": 'expected {"__exec__": fn, fn: [args]}'}, status=400)
        proc = self.process_for_module(mod_id)
        if proc is None and self.era == "D":
            try:  # core >= 37aab5c loads a running module on demand (core_d.lazy_load)
                proc = await core_d.lazy_load(self, mod_id)
            except core_d.LoadError as e:
                return web.json_response({"error": str(e)}, status=500)
        if proc is None:
            return web.json_response({"error": f"module {mod_id} not loaded"}, status=404)
        try:
            result = await proc.request({"op": "exec", "module": mod_id, "fn": fn, "args": args})
        except DriverRaisedError as e:
            return web.json_response(
                {"error": str(e), "backtrace": e.backtrace}, status=203, headers={"Response-Code": str(e.code)}
            )
        except ProcessDown as e:
            msg = f"When invoking execute on {mod_id}: module {mod_id} not running on this host ({e})"
            return web.json_response({"error": msg}, status=500)
        return web.Response(text=json.dumps(result), content_type="application/json", headers={"Response-Code": "200"})

    async def h_health(self, request: web.Request) -> web.Response:
        """Redis PING, etcd ``maintenance/status`` (A/B), the config DB's own check (internals §7)."""
        checks: dict[str, Any] = {"redis": asyncio.wait_for(self.redis.ping(), 5)}
        if self.era in ("A", "B"):
            checks["etcd"] = self.discovery.health()
        if self.db is not None:
            checks["rethinkdb" if self.era == "A" else "postgres"] = self.db.health()
        results = await asyncio.gather(*checks.values(), return_exceptions=True)
        failed = {
            name: f"{type(r).__name__}: {r}"[:300]
            for name, r in zip(checks, results, strict=True)
            if isinstance(r, BaseException)
        }
        if failed:
            return web.json_response({"error": "not healthy", "failed": failed}, status=500)
        return web.Response(status=200)

    async def h_ready(self, request: web.Request) -> web.Response:
        if self.loaded:
            return web.Response(status=200)
        return web.json_response({"error": "not ready"}, status=503)

    async def h_version(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "service": "core",
                "commit": "sandbox",
                "version": CORE_VERSION,
                "build_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
                "platform_version": PLATFORM_VERSION[self.era],
            }
        )

    async def h_status(self, request: web.Request) -> web.Response:
        """core ``GET /api/core/v1/status`` (internals §11.1)."""
        compiled = sorted(driver_key(self.era, d) for i, d in self.drivers.items() if i in self.compiled)
        running = sum(1 for p in self.processes.values() if p.running)
        return web.json_response(
            {
                "available_repositories": [REPO_FOLDER] if self.era in ("A", "B") else [],
                "unavailable_repositories": [],
                "compiled_drivers": compiled,
                "unavailable_drivers": self.unavailable_drivers,
                "run_count": {"local": {"drivers": running, "modules": self._module_count()}, "edge": {}},
            }
        )

    async def h_status_load(self, request: web.Request) -> web.Response:
        total, used = _meminfo_kb()
        busy, all_ = _system_cpu()
        prev_busy, prev_all = self._sys_cpu
        self._sys_cpu = (busy, all_)
        total_cpu = round((busy - prev_busy) / (all_ - prev_all) * 100.0, 2) if all_ > prev_all else 0.0
        return web.json_response(
            {
                "local": {
                    "hostname": socket.gethostname(),
                    "cpu_count": os.cpu_count() or 1,
                    "core_cpu": self._cpu.percent("self"),
                    "total_cpu": total_cpu,
                    "memory_total": total,
                    "memory_usage": used,
                    "core_memory": _proc_rss_kb("self"),
                },
                "edge": {},
            }
        )

    async def h_status_loaded(self, request: web.Request) -> web.Response:
        """``{local: {<driver key>: [module ids the process reports]}, edge: {}}``; [] if it is down."""

        async def ask(proc: DriverProcess) -> Any:
            if not proc.running:
                return []
            try:
                info = await proc.request({"op": "info"}, timeout=4.0)
                return list(info["modules"])
            except (ProcessDown, DriverRaisedError) as e:
                return f"query failed: {e}"

        procs = list(self.processes.values())
        answers = await asyncio.gather(*(ask(p) for p in procs))
        return web.json_response({"local": {p.key: a for p, a in zip(procs, answers, strict=True)}, "edge": {}})

    async def h_status_driver(self, request: web.Request) -> web.Response:
        proc = self.processes.get(request.query.get("path", ""))
        if proc is None:
            return web.json_response({"error": "driver not loaded"}, status=404)
        return web.json_response(proc.status())

    async def h_compiled(self, request: web.Request) -> web.Response:
        """Whether the binary exists on this core (A/B): JSON ``true``/``false`` (internals §11.3)."""
        file_name = unquote(request.match_info["file"])
        tag = request.query.get("tag")
        commit = request.query.get("commit")
        for driver in self.drivers.values():
            if tag and driver["id"] != tag:
                continue
            if driver.get("file_name") != file_name and driver_slug(str(driver.get("file_name"))) != file_name:
                continue
            if commit and driver.get("commit") != commit:
                continue
            return web.json_response(driver["id"] in self.compiled)
        return web.json_response(False)

    # -- sandbox control routes

    async def _body(self, request: web.Request, field_name: str) -> str:
        try:
            body = await request.json()
            return str(body[field_name])
        except (ValueError, KeyError, TypeError):
            raise web.HTTPBadRequest(
                text=json.dumps({"error": f"expected a JSON body with {field_name!r}"}), content_type="application/json"
            ) from None

    def _driver_doc(self, driver_id: str) -> dict[str, Any]:
        driver = self.drivers.get(driver_id)
        if driver is None:
            raise web.HTTPNotFound(
                text=json.dumps({"error": f"unknown driver {driver_id}"}), content_type="application/json"
            )
        return driver

    async def h_sandbox_ready(self, request: web.Request) -> web.Response:
        return web.json_response({"ready": True, "loaded": self.loaded, "registered": self.registered})

    async def h_crash(self, request: web.Request) -> web.Response:
        driver_id = await self._body(request, "driver")
        self._driver_doc(driver_id)
        proc = self.process_for_driver(driver_id)
        if proc is None or not proc.kill():
            return web.json_response({"error": f"driver {driver_id} has no running process here"}, status=409)
        log.warning("sandbox fault: SIGKILL driver %s", proc.key)
        return web.json_response({"ok": True, "launch_count": proc.launch_count})

    async def h_crash_loop(self, request: web.Request) -> web.Response:
        driver_id = await self._body(request, "driver")
        self._driver_doc(driver_id)
        self.faults.crash_loop.add(driver_id)
        self.faults.save()
        log.warning("sandbox fault: driver %s crash-loops", driver_id)
        proc = self.process_for_driver(driver_id)
        if proc is not None:
            proc.kill()  # relaunched with the fault
        return web.json_response({"ok": True})

    async def h_compile_fail(self, request: web.Request) -> web.Response:
        driver_id = await self._body(request, "driver")
        driver = self._driver_doc(driver_id)
        self.faults.compile_failed.add(driver_id)
        self.faults.save()
        log.warning("sandbox fault: driver %s fails to compile", driver_id)
        async with self._lock:
            self.compiled.discard(driver_id)
            proc = self.processes.pop(driver_key(self.era, driver), None)
            if proc is not None:
                await proc.stop()
                proc.modules.clear()
            db_error = await self._mark_compile_failed(driver)
        return web.json_response({"ok": True, "db_updated": db_error is None, "db_error": db_error})

    async def h_heal(self, request: web.Request) -> web.Response:
        driver_id = await self._body(request, "driver")
        driver = self._driver_doc(driver_id)
        was_looping = driver_id in self.faults.crash_loop
        self.faults.crash_loop.discard(driver_id)
        self.faults.compile_failed.discard(driver_id)
        self.faults.save()
        async with self._lock:
            db_error = await self._mark_compiled(driver)
            proc = self.process_for_driver(driver_id)
            if was_looping and proc is not None and proc.running:
                with contextlib.suppress(ProcessDown, DriverRaisedError):
                    await proc.request({"op": "heal"}, timeout=2.0)
            if self.registered:
                with contextlib.suppress(DiscoveryError):
                    await self._place_modules()
        log.info("sandbox heal: driver %s", driver_id)
        return web.json_response({"ok": True, "db_updated": db_error is None, "db_error": db_error})

    async def _set_connected(self, request: web.Request, connected: bool) -> web.Response:
        mod_id = await self._body(request, "module")
        if mod_id not in self.modules:
            return web.json_response({"error": f"unknown module {mod_id}"}, status=404)
        if connected:
            self.faults.disconnected.discard(mod_id)
        else:
            self.faults.disconnected.add(mod_id)
        self.faults.save()
        proc = self.process_for_module(mod_id)
        if proc is None:
            return web.json_response({"error": f"module {mod_id} not loaded here"}, status=404)
        try:
            await proc.request({"op": "connected", "module": mod_id, "value": connected}, timeout=5.0)
        except (ProcessDown, DriverRaisedError) as e:
            return web.json_response({"ok": True, "applied": False, "note": str(e)})
        return web.json_response({"ok": True, "applied": True})

    async def h_disconnect(self, request: web.Request) -> web.Response:
        return await self._set_connected(request, False)

    async def h_connect(self, request: web.Request) -> web.Response:
        return await self._set_connected(request, True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox.simulator.core", description="PlaceOS core simulator")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--era", choices=["A", "B", "C", "D"], default="A")
    parser.add_argument("--etcd", default=None, help="etcd URL (eras A/B), e.g. http://127.0.0.1:2379")
    parser.add_argument("--redis", required=True, help="Redis URL")
    parser.add_argument("--db", required=True, help="rethinkdb://... (era A) or postgresql://... (B/C)")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--etcd-ttl", type=int, default=DEFAULT_TTL["A"], help="lease TTL, s (ETCD_TTL)")
    parser.add_argument("--redis-ttl", type=int, default=DEFAULT_TTL["C"], help="node key TTL, s (CLUSTER_NODE_TTL)")
    parser.add_argument("--etcd-ca", default=None, help="CA file for an https etcd")
    parser.add_argument("--db-timeout", type=float, default=5.0, help="bound on each database call, s")
    parser.add_argument("--build-url", default=None, help="the build service (era D), e.g. http://127.0.0.1:3000")
    parser.add_argument("--build-timeout", type=float, default=2.0, help="build service connect/read timeout, s")
    args = parser.parse_args(argv)
    if args.era in ("A", "B") and not args.etcd:
        parser.error(f"era {args.era} needs --etcd")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(Core(args).run())


if __name__ == "__main__":
    main()
