"""rest-api's platform routes: its version, the cluster's versions, reindex/backfill, and the build routes
of era D (build monitor, driver recompile and reload), with the core-client calls they make.

Reproduced from rest-api (read, not copied):

* ``controllers/root.cr`` ``version`` / ``construct_versions``: ``GET /version`` is this service's
  ``Model::Version`` ``{service, commit, version, build_time, platform_version}``; ``GET
  /cluster/versions`` asks every service in ``SERVICES`` and leaves out the ones that fail. ``SERVICES``
  is ``core dispatch frontend_loader rest_api search_ingest source triggers`` up to #445 and loses
  ``search_ingest`` at ``51faa1a`` (era D). Core is reached through ``core_for("version")``. The sandbox
  runs no dispatch, frontend-loader or source, so they are always left out, as unreachable ones are.
* ``root.cr`` ``reindex`` / ``backfill`` (admin): eras A-C ask search-ingest and answer 500 when it
  fails; era D (51faa1a) keeps them as deprecated no-ops that answer 200 with no body.
* ``controllers/build_monitor.cr`` (#413 ``cd3ae1f``, era D only; earlier eras have no such route and
  answer rest-api's 404): ``GET /build/monitor?state=`` races every core's ``GET
  /api/core/v1/build/monitor`` (``Promise.race``: the first answer wins, a failure included). Below 500
  the core's ``TaskStatus`` list is the JSON answer; otherwise the failure is a 500 with text: core-client
  retries a non-2xx answer, then ``request to <host>:<port>/api/core/v1/build/monitor?state=<s> failed
  with <core's text>``, or an IO error's message.
* ``controllers/drivers.cr`` ``recompile`` / ``reload`` (after ``ef4f02f``, era D here):
  ``core_for(file_name)`` ``POST /api/core/v1/drivers/<file>/recompile?commit&repository&tag``; a
  non-2xx (after core-client's retries) is rendered with its status as text (500 ``request to ...
  failed with <core's text>``); then ``POST /api/core/v1/drivers/<id>/reload`` on every core: 200 when
  all succeed, 422 ``Unable to reload driver on all core cluster`` when all fail, else 417 with the
  first failure (``failed to request a driver reload on core <uri>: error: <message>``).

core-client (``src/placeos-core-client.cr`` 1.3.0, ``src/error.cr``): each call retries IO errors and
non-2xx answers (``--retries`` times here, ``--retry-interval`` apart; 10 with back-off to 40 s in
PlaceOS) and then raises ``request to <host>:<port><path> failed with <body>``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
from aiohttp import web

from sandbox.simulator.rest_api.api import Core, RestApi
from sandbox.simulator.rest_api.common import (
    API,
    REST_API_COMMIT,
    REST_API_SHARD_VERSION,
    USER_KEY,
    io_error_message,
    json_response,
)

log = logging.getLogger("sandbox.rest_api")

BUILD_STATES = ("pending", "running", "cancelled", "error", "done")
VERSION_SERVICES = ("core", "dispatch", "frontend_loader", "rest_api", "search_ingest", "source", "triggers")
BUILD_TIME_D = "Thu Aug 13 04:12:55 UTC 2026"  # `date -u` at build time (src/constants.cr BUILD_TIME)


class CoreClientError(Exception):
    """A core-client call that failed after its retries; the message is core-client's."""


def rest_api_version(api: RestApi) -> dict[str, Any]:
    """``Root.version``. Era D as a build of master reports: shard version, ``date -u`` build time."""
    if api.era == "D":
        version, build_time = REST_API_SHARD_VERSION, BUILD_TIME_D
    else:
        version, build_time = f"sandbox-{api.era.lower()}", "2024-01-01T00:00:00Z"
    return {
        "service": "rest-api",
        "commit": REST_API_COMMIT[api.era],
        "version": version,
        "build_time": build_time,
        "platform_version": api.config.platform_version,
    }


async def core_call(api: RestApi, core: Core, method: str, path: str) -> str:
    """One core-client request with its retries; the body of a 2xx answer, else CoreClientError."""
    parts = urlsplit(core.uri)
    full = f"/api/core/v1{path}"
    failure = "no attempt made"
    for attempt in range(api.config.retries + 1):
        if attempt and await api._stopping_within(api.config.retry_interval):
            break
        try:
            async with api.session.request(
                method,
                f"{core.uri.rstrip('/')}{full}",
                headers={"Content-Type": "application/json"},
                timeout=api.timeout(api.config.core_timeout),
            ) as resp:
                status, body = resp.status, await resp.text()
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            failure = io_error_message(e)
            log.info("core %s %s attempt %d failed: %s", method, full.split("?")[0], attempt + 1, failure)
            continue
        if 200 <= status < 300:
            return body
        failure = f"request to {parts.hostname}:{parts.port or 3000}{full} failed with {body}"
    raise CoreClientError(failure)


def _text(text: str, status: int) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/plain")


def _admin(request: web.Request) -> None:
    """``check_admin``: 403 with an empty body for non-admins (as routes.require_admin)."""
    if not request[USER_KEY].admin:
        raise web.HTTPForbidden(text="", content_type="text/plain")


def add_platform_routes(api: RestApi, r: web.RouteTableDef) -> None:
    """Register before ``/cluster/{core_id}``: ``/cluster/versions`` must win over it."""

    @r.get(f"{API}/cluster/versions")
    async def cluster_versions(request: web.Request) -> web.StreamResponse:
        services = [s for s in VERSION_SERVICES if not (s == "search_ingest" and api.era == "D")]
        found = await asyncio.gather(*(service_version(api, s) for s in services), return_exceptions=True)
        versions = []
        for service, result in zip(services, found, strict=True):
            if isinstance(result, BaseException):
                log.warning("failed to request version of %s: %s", service, type(result).__name__)
            elif result is not None:
                versions.append(result)
        return json_response(versions)

    @r.post(f"{API}/reindex")
    async def reindex(request: web.Request) -> web.StreamResponse:
        _admin(request)
        backfill = request.query.get("backfill", "false").lower() in ("1", "true")
        return await search_ingest_call(api, f"/reindex?{urlencode({'backfill': str(backfill).lower()})}")

    @r.post(f"{API}/backfill")
    async def backfill(request: web.Request) -> web.StreamResponse:
        _admin(request)
        return await search_ingest_call(api, "/backfill")

    if api.era != "D":
        return

    @r.get(f"{API}/build/monitor")
    async def build_monitor(request: web.Request) -> web.StreamResponse:
        state = request.query.get("state", "pending").lower()
        if state not in BUILD_STATES:
            body = {"error": "invalid parameter 'state'", "parameter": "state", "restriction": "State"}
            return json_response(body, 400)
        code, result = await monitor_jobs(api, state)
        if code < 500:
            try:
                return json_response(json.loads(result), code)
            except ValueError:
                return _text(result, 500)
        return _text(result, code)

    @r.post(f"{API}/drivers/{{driver_id}}/recompile")
    async def recompile(request: web.Request) -> web.StreamResponse:
        driver = await api.db.get("driver", request.match_info["driver_id"])
        if driver is None:
            return json_response({"error": f"could not find Driver {request.match_info['driver_id']}"}, 404)
        repository = await api.db.get("repo", str(driver.get("repository_id") or ""))
        if repository is None:
            raise RuntimeError("failed to load driver's repository")
        code, text = await driver_recompile(api, driver, repository)
        if not 200 <= code <= 299:
            return _text(text, code)
        code, text = await driver_reload(api, str(driver["id"]))
        return _text(text, code)

    @r.post(f"{API}/drivers/{{driver_id}}/reload")
    async def reload(request: web.Request) -> web.StreamResponse:
        driver_id = request.match_info["driver_id"]
        if await api.db.get("driver", driver_id) is None:
            return json_response({"error": f"could not find Driver {driver_id}"}, 404)
        code, text = await driver_reload(api, driver_id)
        return _text(text, code)


async def service_version(api: RestApi, service: str) -> dict[str, Any] | None:
    """One service's ``Model::Version``; None when it is not part of the sandbox (unreachable)."""
    if service == "rest_api":
        return rest_api_version(api)
    if service == "core":
        core = await api.which_core("version")
        if core is None:
            raise RuntimeError("no core instances registered!")
        doc = json.loads(await core_call(api, core, "GET", "/version"))
    elif service == "triggers" and api.config.triggers_url:
        doc = await _get_json(api, f"{api.config.triggers_url.rstrip('/')}/api/triggers/v2/version")
    elif service == "search_ingest" and api.config.search_ingest_url:
        doc = await _get_json(api, f"{api.config.search_ingest_url.rstrip('/')}/api/search-ingest/v1/version")
    else:
        return None
    # Model::Version.from_json: these are required; platform_version defaults to rest-api's own.
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), str) for k in ("service", "commit", "version")):
        raise ValueError(f"{service}: not a version")
    if not isinstance(doc.get("build_time"), str):
        raise ValueError(f"{service}: no build_time")
    return {
        "service": doc["service"],
        "commit": doc["commit"],
        "version": doc["version"],
        "build_time": doc["build_time"],
        "platform_version": doc.get("platform_version") or api.config.platform_version,
    }


async def _get_json(api: RestApi, url: str) -> Any:
    async with api.session.get(url, timeout=api.timeout()) as resp:
        return json.loads(await resp.text())


async def search_ingest_call(api: RestApi, path: str) -> web.StreamResponse:
    """Eras A-C: ``SearchIngest::Client`` reindex/backfill, 500 when it fails; era D: a no-op (51faa1a)."""
    if api.era != "D":
        if not api.config.search_ingest_url:
            raise RuntimeError("no search-ingest configured")
        url = f"{api.config.search_ingest_url.rstrip('/')}/api/search-ingest/v1{path}"
        async with api.session.post(url, timeout=api.timeout(30.0)) as resp:
            if not 200 <= resp.status < 300:
                raise RuntimeError(f"{path.split('?')[0].lstrip('/')} failed")
    return web.Response(status=200, content_type="application/json")


async def monitor_jobs(api: RestApi, state: str) -> tuple[int, str]:
    """``BuildMonitor.monitor_jobs``: ``Promise.race`` over every core; a failure is ``{500, message}``."""
    cores = await api.cores()
    if not cores:
        return 500, "failure to request a build service job status"

    async def one(core: Core) -> tuple[int, str]:
        try:
            return 200, await core_call(api, core, "GET", f"/build/monitor?{urlencode({'state': state})}")
        except CoreClientError as e:
            log.error("failure to request a build service job status from %s: %s", core.id, e)
            return 500, str(e) or "failure to request a build service job status"

    tasks = [asyncio.create_task(one(core)) for core in cores]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    return next(iter(done)).result()


async def driver_recompile(api: RestApi, driver: dict[str, Any], repository: dict[str, Any]) -> tuple[int, str]:
    """``Drivers.driver_recompile``: the owning core's recompile, ``{500, message}`` on any failure."""
    try:
        core = await api.which_core(str(driver.get("file_name") or ""))
        if core is None:
            raise CoreClientError("no core instances registered!")
        query = urlencode(
            {
                "commit": str(driver.get("commit") or ""),
                "repository": str(repository.get("folder_name") or ""),
                "tag": str(driver["id"]),
            }
        )
        file_name = quote(str(driver.get("file_name") or ""), safe="")
        return 200, await core_call(api, core, "POST", f"/drivers/{file_name}/recompile?{query}")
    except Exception as e:
        log.error("failed to request driver recompilation from core: %s", e)
        return 500, str(e) or "failed to request driver recompilation"


async def driver_reload(api: RestApi, driver_id: str) -> tuple[int, str]:
    """``Drivers.driver_reload``: every core reloads the driver; 200, 417 (some failed) or 422 (all)."""

    async def one(core: Core) -> tuple[int, str]:
        try:
            return 200, await core_call(api, core, "POST", f"/drivers/{quote(driver_id, safe='')}/reload")
        except CoreClientError as e:
            return 500, f"failed to request a driver reload on core {core.uri}: error: {e}"

    answers = await asyncio.gather(*(one(core) for core in await api.cores()))
    if all(200 <= code <= 299 for code, _ in answers):
        return 200, answers[-1][1] if answers else ""
    if all(code >= 300 for code, _ in answers):
        return 422, "Unable to reload driver on all core cluster"
    return 417, next(text for code, text in answers if not 200 <= code <= 299)
