"""What core does in 2026 (era D) beyond sandbox.simulator.core: the build service client, the build
monitor, driver recompile and reload, loading a module on execute, and the modules-not-loaded fault.

Reproduced from core ``3351920`` (2026-08-14), read not copied:

* ``src/placeos-core/driver_manager/build_api.cr`` (``BuildApi``): every call goes to
  ``<BUILD_URL>/api/build/v1/...`` with a connect and a read timeout (10 s / 60 s in core; the
  sandbox's ``--build-timeout``, default 2 s, for both). ``compile`` POSTs
  ``/<arch>/<file>?url&branch&commit&force``, expects 202 and ``Content-Location``, then polls that
  task until ``cancelled``/``error``/``done`` and expects a 303 for ``done``; its error texts are
  core's ("Build API returned <code> while 202 was expected. Returned error: <body>", ...). An IO
  failure is Crystal's message (``Error connecting to '<host>:<port>': Connection refused``, ``Read
  timed out``).
* ``src/api/build_monitor.cr`` + ``driver_store.cr`` ``monitor_jobs`` (core #282, 1af87d4):
  ``GET /api/core/v1/build/monitor?state=`` answers the build service's job list as JSON; a non-2xx
  from it is ``<code>`` with text ``Build service returned <code> with reponse <body>``; an exception
  is 500 with text ``Call to Build service endpoint failed with error  <message>`` (both typos and the
  double space are core's).
* ``src/api/drivers.cr`` ``recompile`` (``store.compile(..., force: true, fetch: false)``): 200 ``OK``
  or 500 with the compile error as text; ``reload`` (``store.reload_driver``): 200 ``OK`` when the
  binary is local or the build service has it, else 404 ``Driver not compiled or not available on
  S3``; 404 ``Driver with id <id> not found `` for an unknown driver.
* ``src/placeos-core/process_manager/local.cr`` ``execute`` (since 37aab5c, 2026-02-05): a module that
  is not loaded but ``running`` in the database is loaded on demand (``ensure_lazy_module_loaded``)
  from the local binary or the build service (``fetch_or_build?``) and then executed; without a
  binary: ``Driver not compiled for lazy module <id>: the build service could not supply or build
  <file>@<commit>``. Eras A-C answer 404 ``module <id> not loaded`` instead (sandbox.simulator.core).

The modules-not-loaded fault (ai-support-agent ``playbooks/diagnostics/modules-not-loaded.yml`` @
f56fcc9: "Core did not reload every module after a restart because the discovery events did not
fire"): ``POST /_sandbox/modules/not-loaded {"modules": [ids]}`` makes this core leave those modules
unloaded (it stops placing them; a driver left with none stops), ``POST /_sandbox/modules/reload``
loads them again, as restarting the core does. Not kept on disk: a restarted core loads everything.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote, urlencode

import aiohttp
from aiohttp import web

from sandbox.simulator import seed
from sandbox.simulator.discovery import DiscoveryError
from sandbox.simulator.driver_procs import DriverProcess
from sandbox.simulator.rest_api.common import io_error_message

if TYPE_CHECKING:  # core.py imports this module
    from sandbox.simulator.core import Core

log = logging.getLogger("sandbox.core")

BUILD_BASE = "/api/build/v1"
ARCH = "amd64"
COMPILE_POLL_INTERVAL = 0.2  # core: 5 s
COMPILE_TIMEOUT = 30.0  # core: 600 s
STATES = ("pending", "running", "cancelled", "error", "done")


class BuildError(Exception):
    """A build service call failed; the message is core's."""


class LoadError(Exception):
    """A module could not be loaded on demand (core ``ModuleError``)."""


class BuildApi:
    """core's ``BuildApi``: the build service over HTTP with bounded connect and read."""

    def __init__(self, base_url: str | None, timeout: float) -> None:
        self.base_url = base_url.rstrip("/") if base_url else None
        self.timeout = timeout
        self._http: aiohttp.ClientSession | None = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout, sock_read=self.timeout)
            self._http = aiohttp.ClientSession(timeout=timeout, headers={"User-Agent": "PlaceOS/4.10.3 sandbox"})
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def request(self, method: str, path: str) -> tuple[int, str, dict[str, str]]:
        """One call; (status, body, headers). Raises BuildError with Crystal's IO message."""
        if self.base_url is None:
            raise BuildError("No build service configured (BUILD_URL)")
        try:
            async with self._session().request(method, f"{self.base_url}{path}", allow_redirects=False) as resp:
                return resp.status, await resp.text(), dict(resp.headers)
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise BuildError(io_error_message(e)) from e

    async def monitor(self, state: str) -> tuple[int, str]:
        status, body, _ = await self.request("GET", f"{BUILD_BASE}/monitor?{urlencode({'state': state})}")
        return status, body

    async def compiled(self, file_name: str, commit: str) -> bool:
        """``compiled?`` at the build service: is there an artifact for this file and commit?"""
        query = urlencode({"url": seed.REPOSITORY_URI, "branch": seed.REPOSITORY_BRANCH, "commit": commit})
        status, _, _ = await self.request("GET", f"{BUILD_BASE}/{ARCH}/compiled/{quote(file_name, safe='')}?{query}")
        return status == 200

    async def compile(self, file_name: str, commit: str, force: bool) -> None:
        """``BuildApi.compile`` with ``fetch: false``: request a build and wait for it to be done."""
        query = urlencode(
            {
                "url": seed.REPOSITORY_URI,
                "branch": seed.REPOSITORY_BRANCH,
                "commit": commit,
                "force": "true" if force else "false",
            }
        )
        status, body, headers = await self.request("POST", f"{BUILD_BASE}/{ARCH}/{quote(file_name, safe='')}?{query}")
        if status != 202:
            raise BuildError(f"Build API returned {status} while 202 was expected. Returned error: {body}")
        link = headers.get("Content-Location")
        if not link:
            raise BuildError("Build API returned invalid response, missing Content-Location header")
        deadline = time.monotonic() + COMPILE_TIMEOUT
        while True:
            status, body, headers = await self.request("GET", link)
            if not (200 <= status < 300 or status == 303):
                raise BuildError(f"Returned invalid response code: {status}, {link}, resp: {body}")
            task = json.loads(body)
            if task.get("state") in ("cancelled", "error", "done"):
                break
            if time.monotonic() >= deadline:
                raise BuildError(
                    f"Build API end-point {link} did not reach a terminal state within {COMPILE_TIMEOUT:g}s, "
                    f"last state: {task.get('state')}"
                )
            await asyncio.sleep(COMPILE_POLL_INTERVAL)
        if 200 <= status < 300 and task.get("state") in ("cancelled", "error"):
            raise BuildError(str(task.get("message")))
        if status != 303:
            raise BuildError(f"Build API end-point {link} returned invalid response code {status}, expected 303")


# --------------------------------------------------------------------------- loading on demand


async def lazy_load(core: Core, mod_id: str) -> DriverProcess:
    """``ensure_lazy_module_loaded``: load a running module that is not loaded, from its binary."""
    mod = core.modules.get(mod_id)
    if mod is None:
        raise LoadError(f"Could not locate module {mod_id}, no matching database record")
    if mod.get("running") is False:
        raise LoadError(f"Could not locate module {mod_id}, it is stopped")
    driver = core.drivers.get(str(mod.get("driver_id")))
    if driver is None or driver["id"] not in {d.id for d in seed.DRIVERS}:
        raise LoadError(f"Could not locate module {mod_id}, no matching database record")
    from sandbox.simulator.core import driver_key  # core.py imports this module

    async with core._lock:
        if driver["id"] not in core.compiled and driver["id"] not in core.faults.compile_failed:
            try:
                if await core.build.compiled(str(driver["file_name"]), str(driver.get("commit"))):
                    core.compiled.add(driver["id"])
            except BuildError as e:
                log.warning("lazy load of %s: build service: %s", mod_id, e)
        if driver["id"] not in core.compiled:
            raise LoadError(
                f"Driver not compiled for lazy module {mod_id}: the build service could not supply or build "
                f"{driver['file_name']}@{driver.get('commit')}"
            )
        core.not_loaded.discard(mod_id)
        key = driver_key(core.era, driver)
        manager = core.processes.get(key)
        if manager is None:
            manager = core.processes[key] = DriverProcess(core, driver, key)
        await manager.add_module(mod_id)
    deadline = time.monotonic() + 10.0
    while not manager.running and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    log.info("spawned driver for lazy module execution: %s", mod_id)
    return manager


# --------------------------------------------------------------------------- routes


def _text(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/plain")


def add_routes(core: Core, app: web.Application) -> None:
    """Era D's build routes (when the core has a build service) and the modules-not-loaded controls."""
    r = app.router
    r.add_post("/_sandbox/modules/not-loaded", lambda request: h_not_loaded(core, request))
    r.add_post("/_sandbox/modules/reload", lambda request: h_reload_modules(core, request))
    if core.era != "D":
        return
    r.add_get("/api/core/v1/build/monitor", lambda request: h_monitor(core, request))
    r.add_post("/api/core/v1/drivers/{file}/recompile", lambda request: h_recompile(core, request))
    r.add_post("/api/core/v1/drivers/{driver_id}/reload", lambda request: h_reload_driver(core, request))


async def h_monitor(core: Core, request: web.Request) -> web.Response:
    state = request.query.get("state", "pending").lower()
    if state not in STATES:
        error = {"error": f"Unknown enum PlaceOS::Core::DriverStore::State value: {state}", "parameter": "state"}
        return web.json_response(error, status=400)
    try:
        status, body = await core.build.monitor(state)
        if 200 <= status < 300:
            return web.Response(text=json.dumps(json.loads(body)), content_type="application/json")
        return _text(f"Build service returned {status} with reponse {body}", status)
    except (BuildError, ValueError) as e:
        return _text(f"Call to Build service endpoint failed with error  {e}", 500)


async def h_recompile(core: Core, request: web.Request) -> web.Response:
    driver = core.drivers.get(request.query.get("tag", ""))
    if driver is None:
        return web.json_response({"error": f"driver {request.query.get('tag')} not found"}, status=404)
    file_name = unquote(request.match_info["file"])
    commit = request.query.get("commit") or str(driver.get("commit"))
    log.info("Requesting build service to compile driver %s", file_name)
    try:
        await core.build.compile(file_name, commit, force=True)
    except (BuildError, ValueError) as e:
        log.error("failed to compile %s: %s", file_name, e)
        return _text(str(e), 500)
    return _text("OK")


async def h_reload_driver(core: Core, request: web.Request) -> web.Response:
    driver_id = request.match_info["driver_id"]
    driver = core.drivers.get(driver_id)
    if driver is None:
        return _text(f"Driver with id {driver_id} not found ", 404)
    if driver_id not in core.compiled:
        try:
            if await core.build.compiled(str(driver["file_name"]), str(driver.get("commit"))):
                core.compiled.add(driver_id)
        except BuildError as e:
            log.warning("reload %s: build service: %s", driver_id, e)
    if driver_id not in core.compiled or driver_id in core.faults.compile_failed:
        return _text("Driver not compiled or not available on S3", 404)
    await _place(core)
    return _text("OK")


async def _place(core: Core) -> None:
    if not core.registered:
        return
    async with core._lock:
        try:
            await core._place_modules()
        except DiscoveryError as e:
            log.warning("cannot place modules: %s", e)


def _loaded(core: Core) -> set[str]:
    return {m for p in core.processes.values() for m in p.modules}


async def h_not_loaded(core: Core, request: web.Request) -> web.Response:
    try:
        body = await request.json()
        modules = {str(m) for m in body["modules"]}
    except (ValueError, KeyError, TypeError):
        return web.json_response({"error": 'expected {"modules": [ids]}'}, status=400)
    before = _loaded(core)
    core.not_loaded |= modules
    log.warning("sandbox fault: modules not loaded: %s", ", ".join(sorted(modules)))
    await _place(core)
    return web.json_response({"ok": True, "unloaded": sorted(before - _loaded(core))})


async def h_reload_modules(core: Core, request: web.Request) -> web.Response:
    core.not_loaded.clear()
    before = _loaded(core)
    await _place(core)
    log.info("sandbox heal: modules reloaded")
    return web.json_response({"ok": True, "loaded": sorted(_loaded(core) - before)})
