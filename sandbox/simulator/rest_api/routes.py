"""The HTTP routes of rest-api (health, version, systems, modules, execute, cluster, drivers) and the
sandbox-only controls, with the helpers they share. The platform routes (cluster versions, reindex,
backfill, build monitor, recompile, reload) are in platform.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from sandbox.simulator.rest_api.api import Core, RestApi, function_visible, interface_of
from sandbox.simulator.rest_api.common import (
    API,
    USER_KEY,
    AuthUser,
    ExecError,
    get_parts,
    json_response,
    production_error,
)
from sandbox.simulator.rest_api.oauth import token_route
from sandbox.simulator.rest_api.platform import add_platform_routes, rest_api_version
from sandbox.simulator.rest_api.websocket import WsSession

log = logging.getLogger("sandbox.rest_api")


# ---------------------------------------------------------------------------------------------------
# Routes

RouteHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def routes(api: RestApi) -> web.RouteTableDef:
    r = web.RouteTableDef()

    # -- health, version, auth ------------------------------------------------------------------------

    @r.get(f"{API}/")
    async def health(request: web.Request) -> web.StreamResponse:
        # root.cr logs the WebSocket subscriber's reconnect count with every health check.
        log.debug("healthcheck (redis_reconnects=%d)", api.subscriptions.reconnects)
        checks = api.health_checks()
        results = await asyncio.gather(*(c() for c in checks.values()), return_exceptions=True)
        failed = [name for name, res in zip(checks, results, strict=True) if isinstance(res, BaseException)]
        if failed:
            log.warning("not healthy: %s", ", ".join(failed))
            return production_error(request)
        return web.Response(status=200, text="", content_type="text/plain")

    @r.get(f"{API}/version")
    async def version(request: web.Request) -> web.StreamResponse:
        return json_response(rest_api_version(api))

    @r.get(f"{API}/api_keys/inspect")
    async def inspect(request: web.Request) -> web.StreamResponse:
        user: AuthUser = request[USER_KEY]
        return json_response(user.jwt_claims(int(time.time())))

    @r.post("/auth/oauth/token")
    async def oauth_token(request: web.Request) -> web.StreamResponse:
        return await token_route(api, request)

    # -- systems --------------------------------------------------------------------------------------

    @r.get(f"{API}/systems")
    async def systems_index(request: web.Request) -> web.StreamResponse:
        return await api.paginate(request, "sys", f"{API}/systems")

    @r.get(f"{API}/modules")
    async def modules_index(request: web.Request) -> web.StreamResponse:
        return await api.paginate(request, "mod", f"{API}/modules")

    @r.get(f"{API}/drivers")
    async def drivers_index(request: web.Request) -> web.StreamResponse:
        return await api.paginate(request, "driver", f"{API}/drivers")

    @r.get(f"{API}/systems/control")
    async def control(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        session = WsSession(api, ws, request[USER_KEY])
        api.sessions.add(session)
        try:
            await session.run()
        finally:
            api.sessions.discard(session)
        return ws

    @r.get(f"{API}/systems/{{sys_id}}")
    async def system_show(request: web.Request) -> web.StreamResponse:
        sys_id = request.match_info["sys_id"]
        doc = await api.db.get("sys", sys_id)
        if doc is None:
            return json_response({"error": f"could not find ControlSystem {sys_id}"}, 404)
        return json_response(doc)

    @r.get(f"{API}/systems/{{sys_id}}/functions/{{module_slug}}")
    async def functions(request: web.Request) -> web.StreamResponse:
        sys_id, slug = request.match_info["sys_id"], request.match_info["module_slug"]
        name, index = get_parts(slug)
        module_id = await api.module_id(sys_id, name, index)
        meta = await api.metadata(module_id) if module_id else None
        if meta is None:
            return json_response({"error": f"metadata not found for {slug} on {sys_id}"}, 404)
        user: AuthUser = request[USER_KEY]
        out: dict[str, Any] = {}
        for fn, params in interface_of(meta).items():
            if function_visible(meta, user.clearance, fn):
                out[fn] = {"arity": len(params), "params": params, "order": list(params)}
        return json_response(out)

    @r.get(f"{API}/systems/{{sys_id}}/{{module_slug}}")
    async def state(request: web.Request) -> web.StreamResponse:
        name, index = get_parts(request.match_info["module_slug"])
        module_id = await api.module_id(request.match_info["sys_id"], name, index)
        if module_id is None:
            return json_response({})
        return json_response(await api.redis.hgetall(f"status/{module_id}"))

    @r.get(f"{API}/systems/{{sys_id}}/{{module_slug}}/{{key}}")
    async def state_key(request: web.Request) -> web.StreamResponse:
        name, index = get_parts(request.match_info["module_slug"])
        module_id = await api.module_id(request.match_info["sys_id"], name, index)
        if module_id is None:
            return json_response(None)
        value = await api.redis.hget(f"status/{module_id}", request.match_info["key"])
        if value is None:
            raise KeyError(request.match_info["key"])  # rest-api raises KeyError -> 500 (§5.3)
        return web.Response(text=str(value), content_type="application/json")

    @r.post(f"{API}/systems/{{sys_id}}/{{module_slug}}/{{method}}")
    async def system_execute(request: web.Request) -> web.StreamResponse:
        args = await json_array_body(request)
        if isinstance(args, web.Response):
            return args
        name, index = get_parts(request.match_info["module_slug"])
        return await execute_response(
            api,
            sys_id=request.match_info["sys_id"],
            module_name=name,
            index=index,
            function=request.match_info["method"],
            args=args,
            user=request[USER_KEY],
        )

    @r.post(f"{API}/modules/{{module_id}}/exec/{{method}}")
    async def module_execute(request: web.Request) -> web.StreamResponse:
        module_id = request.match_info["module_id"]
        mod = await api.db.get("mod", module_id)
        if mod is None:
            return json_response({"error": f"could not find Module {module_id}"}, 404)
        args = await json_array_body(request)
        if isinstance(args, web.Response):
            return args
        return await execute_response(
            api,
            sys_id=str(mod.get("control_system_id") or ""),
            module_name=str(mod.get("custom_name") or mod.get("name") or ""),
            index=1,
            function=request.match_info["method"],
            args=args,
            user=request[USER_KEY],
            module_id=module_id,
        )

    @r.get(f"{API}/modules/{{module_id}}/state")
    async def module_state(request: web.Request) -> web.StreamResponse:
        return json_response(await api.redis.hgetall(f"status/{request.match_info['module_id']}"))

    # -- cluster and drivers (internals §11) ----------------------------------------------------------

    add_platform_routes(api, r)  # before /cluster/{core_id}: /cluster/versions must match first

    @r.get(f"{API}/cluster")
    async def cluster_index(request: web.Request) -> web.StreamResponse:
        require_admin(request)
        cores = await api.cores()
        if not truthy(request.query.get("include_status")):
            return json_response([{"id": c.id, "uri": c.uri} for c in cores])

        async def node_status(core: Core) -> dict[str, Any] | None:
            try:
                load, status = await asyncio.gather(
                    api.core_get_json(core, "/status/load"), api.core_get_json(core, "/status")
                )
            except Exception as e:
                log.warning("failed to request core status from %s: %s", core.id, type(e).__name__)
                return None  # silently dropped, as real (internals §11.1)
            return {"id": core.id, "uri": core.uri, "load": load, "status": status}

        found = await asyncio.gather(*(node_status(c) for c in cores))
        return json_response([n for n in found if n is not None])

    @r.get(f"{API}/cluster/{{core_id}}")
    async def cluster_show(request: web.Request) -> web.StreamResponse:
        require_admin(request)
        core_id = request.match_info["core_id"]
        core = next((c for c in await api.cores() if c.id == core_id), None)
        if core is None:
            return json_response({"error": f"core not registered: {core_id}"}, 404)
        loaded = await api.core_get_json(core, "/status/loaded")
        local: dict[str, list[str]] = dict(loaded.get("local") or {})
        edge: dict[str, dict[str, list[str]]] = dict(loaded.get("edge") or {})
        keys = sorted({k.rpartition("/")[2] for k in local} | {k.rpartition("/")[2] for p in edge.values() for k in p})
        include = truthy(request.query.get("include_status"))

        async def entry(key: str) -> dict[str, Any]:
            status: dict[str, Any] = {}
            if include:
                try:
                    status = await api.core_get_json(core, f"/status/driver?path={quote(key, safe='')}")
                except Exception:
                    status = {}  # core-client's driver_status returns an empty DriverStatus on error
                if isinstance(status, dict) and "running" in status:
                    status = {"local": status, "edge": {}}  # a bare Metadata: the local process's
            return {
                "driver": key,
                "local": {"modules": local.get(key, []), "status": status.get("local")},
                "edge": {
                    eid: {"modules": procs.get(key, []), "status": (status.get("edge") or {}).get(eid)}
                    for eid, procs in edge.items()
                },
            }

        return json_response(list(await asyncio.gather(*(entry(k) for k in keys))))

    @r.get(f"{API}/drivers/{{driver_id}}")
    async def driver_show(request: web.Request) -> web.StreamResponse:
        driver = await api.db.get("driver", request.match_info["driver_id"])
        if driver is None:
            return json_response({"error": f"could not find Driver {request.match_info['driver_id']}"}, 404)
        cores = await api.cores()
        compiled = await asyncio.gather(*(driver_compiled(api, c, driver) for c in cores))
        out = dict(driver)
        out.setdefault("compilation_output", None)
        out["compilation_status"] = {c.id: ok for c, ok in zip(cores, compiled, strict=True)}
        return json_response(out)

    @r.get(f"{API}/drivers/{{driver_id}}/compiled")
    async def driver_is_compiled(request: web.Request) -> web.StreamResponse:
        driver = await api.db.get("driver", request.match_info["driver_id"])
        if driver is None:
            return json_response({"error": f"could not find Driver {request.match_info['driver_id']}"}, 404)
        core = await api.which_core(str(driver.get("file_name") or ""))
        if core is not None and await driver_compiled(api, core, driver):
            return web.Response(status=200, text="", content_type="text/plain")
        output = driver.get("compilation_output")
        if output is None or str(driver.get("commit") or "").startswith("RECOMPILE"):
            return json_response({"error": "Driver not compiled yet"}, 404)
        return json_response({"compilation_output": output}, 503)

    # -- sandbox controls -----------------------------------------------------------------------------

    @r.get("/_sandbox/ready")
    async def ready(request: web.Request) -> web.StreamResponse:
        return json_response({"ready": True, "era": api.era, "subscriber": api.subscriptions.state()})

    @r.post("/_sandbox/pubsub-drop")
    async def pubsub_drop(request: web.Request) -> web.StreamResponse:
        on = await switch_body(request)
        if on is None:
            return json_response({"error": 'body must be {"on": true|false}'}, 400)
        api.subscriptions.set_drop(on)
        log.warning("sandbox: status subscriber %s", "loses its channels on reconnect" if on else "reconnects whole")
        return json_response({"pubsub_drop": on, "subscriber": api.subscriptions.state()})

    @r.post("/_sandbox/etcd-unreachable")
    async def etcd_unreachable(request: web.Request) -> web.StreamResponse:
        if api.era in ("C", "D"):
            return json_response({"error": f"era {api.era} does not use etcd"}, 400)
        on = await switch_body(request)
        if on is None:
            return json_response({"error": 'body must be {"on": true|false}'}, 400)
        api.etcd_unreachable = on
        log.warning("sandbox: etcd %s from rest-api", "unreachable" if on else "reachable again")
        return json_response({"etcd_unreachable": on})

    @r.post("/_sandbox/unreachable")
    async def unreachable(request: web.Request) -> web.StreamResponse:
        on = await switch_body(request)
        if on is None:
            return json_response({"error": 'body must be {"on": true|false}'}, 400)
        api.unreachable = on
        log.warning("sandbox: rest-api %s behind the load balancer", "unreachable" if on else "reachable")
        return json_response({"unreachable": on})

    return r


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true")


def require_admin(request: web.Request) -> None:
    """``check_admin``: 403 with an empty body for non-admins (rest-api ``Error::Forbidden``)."""
    user: AuthUser = request[USER_KEY]
    if not user.admin:
        raise web.HTTPForbidden(text="", content_type="text/plain")


async def switch_body(request: web.Request) -> bool | None:
    try:
        body = await request.json()
    except ValueError:
        return None
    on = body.get("on") if isinstance(body, dict) else None
    return on if isinstance(on, bool) else None


async def json_array_body(request: web.Request) -> list[Any] | web.Response:
    """``Array(JSON::Any).from_json(body)``: a non-array is a 400 parse error (internals §5.3)."""
    if not request.headers.get("Content-Type", "").startswith("application/json"):
        return json_response({"error": "Unsupported Media Type", "accepts": ["application/json"]}, 415)
    text = await request.text()
    try:
        body = json.loads(text)
    except ValueError:
        return json_response({"error": "Unexpected token at line 1, column 1"}, 400)
    if not isinstance(body, list):
        kind = {dict: "BeginObject", str: "String", bool: "Bool", type(None): "Null"}.get(type(body), "Number")
        return json_response({"error": f"Expected BeginArray but was {kind} at line 1, column 1"}, 400)
    return body


async def execute_response(api: RestApi, **kwargs: Any) -> web.StreamResponse:
    """systems/modules ``execute``: raw driver JSON with its code, or the §5.3 error body."""
    try:
        value, code = await api.execute(**kwargs)
    except ExecError as e:
        log.info("execute failed: %s: %s", e.code.label, e.message)
        return json_response(e.body(), e.http_status)
    except Exception as e:
        # Other exceptions (Redis down): render_error(500, e.message) in production (§5.3).
        log.warning("core execute request failed: %s", type(e).__name__)
        return json_response({"message": str(e) or type(e).__name__}, 500)
    return web.Response(text=value, status=code, content_type="application/json")


async def driver_compiled(api: RestApi, core: Core, driver: Mapping[str, Any]) -> bool:
    """core ``GET /drivers/<file>/compiled``; any error counts as not compiled (internals §11.3)."""
    params = urlencode(
        {
            "commit": str(driver.get("commit") or ""),
            "repository": str(driver.get("repository_id") or ""),
            "tag": str(driver.get("id") or ""),
        }
    )
    path = f"/drivers/{quote(str(driver.get('file_name') or ''), safe='')}/compiled?{params}"
    try:
        return bool(await api.core_get_json(core, path) is True)
    except Exception:
        return False
