"""Pins the PlaceOS API double (tests/placeos_api.py) to the status codes and bodies of the reference documents,
and checks that the scenario table (tests/api_scenarios.py) is well formed and drivable.

Sections: "internals" = /work/shared/reference/placeos-internals.md, "2026" = placeos-2026.md.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from api_scenarios import CAUSES, ERAS, PROBES, REASONS, SCENARIOS
from placeos_api import PlaceOSApi
from placeos_api_wire import API_BASE, API_KEY, CORE_ID, FAILURES, PLATFORM_VERSIONS

KEY = {"X-API-Key": API_KEY}
JSON_ACCEPT = {**KEY, "Accept": "application/json"}
EXEC = f"{API_BASE}/systems/sys-1/Display_1/power_state"
FUNCS = f"{API_BASE}/systems/sys-1/functions/Display_1"
BIND = {"id": 1, "cmd": "bind", "sys": "sys-1", "mod": "Display", "name": "connected"}
EXEC_WS = {"id": 2, "cmd": "exec", "sys": "sys-1", "mod": "Display", "name": "power_state", "args": []}


@pytest.fixture
async def api() -> AsyncIterator[PlaceOSApi]:
    async with PlaceOSApi(era="C", subscribe_ack_timeout=0.05) as double:
        yield double


async def call(api: PlaceOSApi, method: str, path: str, headers: dict[str, str] | None = None, **kw: Any) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, api.url + path, headers=headers or KEY, **kw) as resp,
    ):
        return resp.status, resp.headers, await resp.text()


async def execute(api: PlaceOSApi) -> tuple[int, dict[str, Any]]:
    status, _, text = await call(api, "POST", EXEC, json=[])
    return status, json.loads(text)


async def ws_messages(api: PlaceOSApi, *requests: Any, wait: float = 0.3) -> list[Any]:
    """Send requests on the control socket, collect what arrives within ``wait`` (None marks a closed socket)."""
    out: list[Any] = []
    async with aiohttp.ClientSession() as session, session.ws_connect(api.ws_url, headers=KEY) as ws:
        for req in requests:
            await ws.send_str(req if isinstance(req, str) else json.dumps(req))
        while True:
            try:
                msg = await ws.receive(timeout=wait)
            except TimeoutError:
                return out
            if msg.type != aiohttp.WSMsgType.TEXT:
                out.append(None)
                return out
            out.append(msg.data if msg.data == "pong" else json.loads(msg.data))


# ---------------------------------------------------------------- the scenario table


def test_scenario_table_is_well_formed_and_drivable() -> None:
    assert len({s.id for s in SCENARIOS}) == len(SCENARIOS)
    switches_used: set[str] = set()
    double = PlaceOSApi()
    for s in SCENARIOS:
        assert s.eras and set(s.eras) <= set(ERAS), s.id
        assert s.expected_causes_api_only and s.expected_causes_api_only <= CAUSES, s.id
        assert s.expected_causes_with_backends and s.expected_causes_with_backends <= CAUSES, s.id
        differ = s.expected_causes_api_only != s.expected_causes_with_backends
        assert bool(s.why_modes_differ) == differ, s.id
        for era in s.eras:
            reasons = s.reasons_for(era)
            assert set(reasons) <= set(PROBES) and set(reasons.values()) <= REASONS, s.id
            double.set(era=era, failures=s.switches, **s.knobs)  # raises if the double lacks it in that era
        switches_used |= set(s.switches)
    assert switches_used == set(FAILURES)


def test_switches_refuse_eras_without_the_backend() -> None:
    double = PlaceOSApi()
    for era, failure in (("C", "etcd_down"), ("D", "api_etcd_unreachable"), ("D", "elasticsearch_down")):
        with pytest.raises(ValueError, match="does not exist"):
            double.set(era=era, failures={failure: True})


# ---------------------------------------------------------------- healthy, per era


@pytest.mark.parametrize("era", ERAS)
async def test_healthy_paths(api: PlaceOSApi, era: str) -> None:
    api.set(era=era)
    assert (await call(api, "GET", f"{API_BASE}/", headers={}))[::2] == (200, "")  # §5.1, no auth
    status, _, text = await call(api, "GET", f"{API_BASE}/version")
    assert status == 200 and json.loads(text)["platform_version"] == PLATFORM_VERSIONS[era]
    status, headers, text = await call(api, "GET", f"{API_BASE}/systems?limit=1")
    assert status == 200 and json.loads(text)[0]["id"] == "sys-1"
    assert headers["X-Total-Count"] == "1" and headers["Content-Range"] == "sys 0-1/1"  # §4 paging headers
    status, _, text = await call(api, "GET", FUNCS)  # §5.3 {fn: {arity, params, order}}
    assert json.loads(text)["power_state"] == {"arity": 0, "params": {}, "order": []}
    assert await execute(api) == (200, False)
    versions = json.loads((await call(api, "GET", f"{API_BASE}/cluster/versions"))[2])
    assert ("search-ingest" in {v["service"] for v in versions}) == (era != "D")  # 2026 §1 SERVICES
    messages = await ws_messages(api, BIND, EXEC_WS, "ping")  # §5.4
    meta = {"sys": "sys-1", "mod": "Display", "index": 1, "name": "connected"}
    assert {"id": 1, "type": "success", "meta": meta} in messages
    assert {"id": 1, "type": "notify", "value": True, "meta": meta} in messages
    assert {
        "id": 2,
        "type": "success",
        "meta": {**meta, "name": "power_state"},
        "value": False,
        "code": 200,
    } in messages
    assert "pong" in messages
    assert (await call(api, "GET", "/api/triggers/v2/", headers={}))[0] == 200


async def test_websocket_ignores_requests_that_do_not_parse(api: PlaceOSApi) -> None:
    # §5.4: JSON::Serializable::Strict; a request that fails to parse gets no reply
    bad = [{**BIND, "extra": 1}, {**BIND, "id": "1"}, "not json"]
    assert await ws_messages(api, *bad, "ping") == ["pong"]


async def test_cluster_routes(api: PlaceOSApi) -> None:
    status, _, text = await call(api, "GET", f"{API_BASE}/cluster?include_status=true")  # §11.1
    [node] = json.loads(text)
    assert node["id"] == CORE_ID and node["uri"] == "http://core:3000"
    assert set(node["status"]) >= {"compiled_drivers", "unavailable_drivers", "run_count"}
    entries = json.loads((await call(api, "GET", f"{API_BASE}/cluster/{CORE_ID}?include_status=true"))[2])
    assert {e["driver"] for e in entries} == {f"drivers_place_{d}_cr_4f9a1c2_amd64" for d in ("display", "lighting")}
    status, _, text = await call(api, "GET", f"{API_BASE}/cluster/nope")
    assert (status, json.loads(text)) == (404, {"error": "core not registered: nope"})


# ---------------------------------------------------------------- backends


@pytest.mark.parametrize("era", ERAS)
async def test_database_down(api: PlaceOSApi, era: str) -> None:
    api.set(era=era, failures={"database_down": True})
    assert (await call(api, "GET", f"{API_BASE}/", headers={"Accept": "application/json"}))[::2] == (500, "{}")
    status, headers, text = await call(api, "GET", f"{API_BASE}/", headers={})  # §5.1 production handler
    assert (status, text, headers["Content-Type"].split(";")[0]) == (500, "", "text/plain")
    status, _, text = await call(api, "GET", f"{API_BASE}/api_keys/inspect")
    assert (status, json.loads(text)) == (401, {"error": "unknown X-API-Key"})  # §5.2
    assert (await call(api, "GET", "/api/triggers/v2/", headers={}))[0] == (500 if era == "D" else 200)  # §6


@pytest.mark.parametrize("era", ERAS)
async def test_redis_down(api: PlaceOSApi, era: str) -> None:
    api.set(era=era, failures={"redis_down": True})
    assert (await call(api, "GET", f"{API_BASE}/", headers={}))[0] == 500
    assert (await call(api, "GET", FUNCS, headers=JSON_ACCEPT))[::2] == (500, "{}")  # §5.1
    status, body = await execute(api)
    assert status == 500
    assert body["message"] == "Socket::ConnectError: Error connecting to 'redis:6379': Connection refused"
    [error] = await ws_messages(api, BIND)
    assert (error["error_code"], error["msg"]) == (6, "could not find module: sys=sys-1 mod=Display")  # §5.4


@pytest.mark.parametrize("era", ["A", "B"])
async def test_etcd_down(api: PlaceOSApi, era: str) -> None:
    api.set(era=era, failures={"etcd_down": True})
    assert (await call(api, "GET", f"{API_BASE}/", headers={}))[0] == 500  # §5.1 eras A/B check etcd
    status, body = await execute(api)
    assert (status, body["message"]) == (500, "Error connecting to 'etcd:2379': Connection refused")  # §1.4
    assert await ws_messages(api, BIND) == [None]
    api.set(failures={"api_etcd_unreachable": {"discovery": "cached"}})
    assert (await call(api, "GET", f"{API_BASE}/", headers={}))[0] == 500
    assert await execute(api) == (200, False)


@pytest.mark.parametrize("era", ["A", "C"])
async def test_elasticsearch_down(api: PlaceOSApi, era: str) -> None:
    api.set(era=era, failures={"elasticsearch_down": True})
    assert (await call(api, "GET", f"{API_BASE}/systems?limit=1", headers=JSON_ACCEPT))[::2] == (500, "{}")
    assert (await call(api, "GET", f"{API_BASE}/", headers={}))[0] == 200  # §4: rest-api never checked ES


async def test_redis_pubsub_broken(api: PlaceOSApi) -> None:
    api.set(era="D", failures={"redis_pubsub_broken": True})  # 2026 §2: binds succeed, no notify
    assert [m["type"] for m in await ws_messages(api, BIND)] == ["success"]
    api.set(era="A")  # A-C: the first value comes from HGET (driver v6.7.4 perform_subscribe)
    assert [m["type"] for m in await ws_messages(api, BIND)] == ["success", "notify"]


# ---------------------------------------------------------------- core and drivers


@pytest.mark.parametrize("era", ERAS)
async def test_core_down(api: PlaceOSApi, era: str) -> None:
    api.set(era=era, failures={"core_down": True})
    status, body = await execute(api)  # §5.3
    assert (status, body["error"], body["message"], body["backtrace"]) == (
        500,
        "unexpected failure",
        "No registered core instances",
        None,
    )
    error = (await ws_messages(api, EXEC_WS))[0]
    assert (error["type"], error["error_code"], error["msg"]) == ("error", 7, "No registered core instances")
    assert (await call(api, "GET", f"{API_BASE}/cluster?include_status=true"))[2] == "[]"


@pytest.mark.parametrize("era", ["B", "C", "D"])
async def test_core_stale(api: PlaceOSApi, era: str) -> None:
    api.set(era=era, failures={"core_stale": True})
    status, body = await execute(api)
    assert (status, body["message"]) == (500, "Error connecting to 'core:3000': Connection refused")  # §5.3
    assert (await call(api, "GET", f"{API_BASE}/cluster?include_status=true"))[2] == "[]"  # §11.1 dropped
    listed = json.loads((await call(api, "GET", f"{API_BASE}/cluster"))[2])
    assert [n["id"] for n in listed] == ([] if era == "D" else [CORE_ID])


async def test_core_retry_delay_makes_a_short_probe_time_out(api: PlaceOSApi) -> None:
    api.set(failures={"core_stale": True}, core_retry_delay=5.0)
    with pytest.raises(TimeoutError):
        await call(api, "POST", EXEC, json=[], timeout=aiohttp.ClientTimeout(total=0.3))


@pytest.mark.parametrize("era", ["A", "D"])
async def test_driver_raises(api: PlaceOSApi, era: str) -> None:
    api.set(era=era, failures={"driver_raises": {"error": "boom", "response_code": 503}})
    status, body = await execute(api)  # §5.3 step 6: status = the driver's Response-Code
    assert (status, body["error"], body["message"]) == (503, "request failed", "module raised: boom")


@pytest.mark.parametrize("era", ["B", "D"])
async def test_module_not_loaded(api: PlaceOSApi, era: str) -> None:
    api.set(era=era, failures={"module_not_loaded": True})
    status, body = await execute(api)  # §5.3, §11.2
    prefix = "request to core:3000/api/core/v1/command/mod-1/execute?user_id=user-1 failed with "
    assert status == 500 and body["error"] == "unexpected failure" and body["message"].startswith(prefix)
    entries = json.loads((await call(api, "GET", f"{API_BASE}/cluster/{CORE_ID}"))[2])
    assert all("mod-1" not in e["local"]["modules"] for e in entries)  # 2026 §2


async def test_driver_crashloop_and_compile_failure(api: PlaceOSApi) -> None:
    api.set(era="B", failures={"driver_crashloop": True, "driver_compile_failed": True})
    path = f"{API_BASE}/cluster/{CORE_ID}?include_status=true"
    counts = []
    for _ in range(2):
        [display] = [e for e in json.loads((await call(api, "GET", path))[2]) if "display" in e["driver"]]
        status = display["local"]["status"]
        assert (status["running"], status["module_instances"], display["local"]["modules"]) == (False, 1, [])
        counts.append(status["launch_count"])
    assert counts[1] > counts[0]  # §11 implications: launch_count rising = crash loop
    [node] = json.loads((await call(api, "GET", f"{API_BASE}/cluster?include_status=true"))[2])
    [failed] = node["status"]["unavailable_drivers"]
    assert failed["name"] == "Lighting" and failed["reason"].startswith("failed to compile Lighting from drivers: ")


async def test_driver_never_compiled(api: PlaceOSApi) -> None:
    api.set(failures={"driver_never_compiled": True})
    status, body = await execute(api)  # §11.2 item 1
    assert (status, body["error"], body["message"]) == (404, "module not found", "could not find module")
    status, _, text = await call(api, "GET", FUNCS)
    assert (status, json.loads(text)) == (404, {"error": "metadata not found for Display_1 on sys-1"})  # §5.3
    assert [m["type"] for m in await ws_messages(api, BIND)] == ["success"]


# ---------------------------------------------------------------- API, credentials, configuration


@pytest.mark.parametrize("era", ["A", "D"])
async def test_api_down_behind_the_load_balancer(api: PlaceOSApi, era: str) -> None:
    api.set(era=era, failures={"api_down": True})
    status, headers, text = await call(api, "GET", f"{API_BASE}/", headers={})
    assert status == 502 and "<center>nginx</center>" in text and headers["Content-Type"].startswith("text/html")
    assert (await call(api, "GET", "/api/triggers/v2/", headers={}))[0] == 200
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await session.ws_connect(api.ws_url, headers=KEY)
    assert info.value.status == 502


async def test_credentials(api: PlaceOSApi) -> None:
    api.set(era="B", failures={"key_unknown": True})
    assert (await call(api, "GET", f"{API_BASE}/api_keys/inspect"))[::2] == (401, '{"error":"unknown X-API-Key"}')
    assert (await call(api, "GET", f"{API_BASE}/", headers={}))[0] == 200  # §10.5: only health tells DB from key
    api.set(failures={"key_forbidden": True})
    assert (await call(api, "GET", f"{API_BASE}/api_keys/inspect"))[0] == 200
    assert (await call(api, "GET", f"{API_BASE}/systems?limit=1"))[::2] == (403, "")
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await session.ws_connect(api.ws_url, headers=KEY)
    assert info.value.status == 403


async def test_bearer_token_from_the_auth_service(api: PlaceOSApi) -> None:
    form = {"grant_type": "password", "username": "support@place.tech", "password": "development"}
    form["client_id"] = "2b5e6e0b5c9d4f7aa1c3e8f0d4b6a9c2"
    status, _, text = await call(api, "POST", "/auth/oauth/token", headers={}, data=form)
    token = json.loads(text)
    assert (status, token["token_type"], token["expires_in"]) == (200, "Bearer", 7200)  # §5.2: 2 h
    bearer = {"Authorization": f"Bearer {token['access_token']}"}
    assert (await call(api, "GET", f"{API_BASE}/api_keys/inspect", headers=bearer))[0] == 200
    api.set(failures={"database_down": True})
    assert (await call(api, "GET", f"{API_BASE}/api_keys/inspect", headers=bearer))[0] == 500  # §5.2 era C


@pytest.mark.parametrize("failure", ["system_not_found", "module_not_found"])
async def test_not_found(api: PlaceOSApi, failure: str) -> None:
    api.set(era="A", failures={failure: True})
    status, body = await execute(api)
    assert (status, body["error"], body["message"]) == (404, "module not found", "could not find module")
    assert (await call(api, "GET", FUNCS))[0] == 404
    assert [m["type"] for m in await ws_messages(api, BIND)] == ["success"]  # bound, never notified


async def test_build_monitor(api: PlaceOSApi) -> None:
    assert (await call(api, "GET", f"{API_BASE}/build/monitor"))[0] == 404  # era C: route not there yet
    api.set(era="D")
    assert (await call(api, "GET", f"{API_BASE}/build/monitor"))[::2] == (200, "[]")
    api.set(failures={"build_service_unreachable": True})
    status, _, text = await call(api, "GET", f"{API_BASE}/build/monitor")
    assert status == 500 and text.startswith("Call to Build service endpoint failed with error  Error connecting")


# ---------------------------------------------------------------- table and double agree


def _by_status(status: int) -> str:
    if 200 <= status < 300:
        return "ok"
    return {401: "auth_failed", 403: "access_denied", 404: "not_found"}.get(
        status, "http_5xx" if status >= 500 else "http_4xx"
    )


def _by_text(text: str) -> str | None:
    """The execute/WebSocket message rules of the probe definitions (api_scenarios docstring)."""
    if "No registered core instances" in text:
        return "no_core_instances"
    if "etcd:2379" in text:
        return "etcd_unreachable"
    if "redis:6379" in text:
        return "redis_unreachable"
    if ("request to " in text and " failed" in text) or "module raised" in text or text.startswith("request failed"):
        return "driver_error"
    if "core:3000" in text:
        return "core_unreachable"
    if "not found" in text:
        return "not_found"
    if "access denied" in text:
        return "access_denied"
    return None


def _ws_error(msg: dict[str, Any]) -> str:
    code = msg["error_code"]
    if code == 2:
        return "access_denied"
    if code in (5, 6):
        return "not_found"
    if code == 3:
        return "driver_error"
    if code == 7:
        return _by_text(msg["msg"]) or _by_status(msg.get("code", 500))
    return "http_4xx"


async def _reference_probes(api: PlaceOSApi, deadline: float = 0.4) -> dict[str, str]:
    """A minimal prober written from the probe definitions, independent of the exporter."""
    timeout = aiohttp.ClientTimeout(total=deadline)
    out: dict[str, str] = {}
    async with aiohttp.ClientSession(timeout=timeout) as s:

        async def get(path: str, headers: dict[str, str] | None = None) -> tuple[int, Any, str]:
            async with s.get(api.url + path, headers=KEY if headers is None else headers) as r:
                return r.status, r.headers, await r.text()

        async def guarded(name: str, probe: Any) -> None:
            try:
                out[name] = await probe()
            except TimeoutError:
                out[name] = "timeout"

        async def api_health() -> str:
            status = (await get(f"{API_BASE}/", {}))[0]
            return "unhealthy" if status == 500 else _by_status(status)

        async def login() -> str:
            return _by_status((await get(f"{API_BASE}/api_keys/inspect"))[0])

        async def systems_list() -> str:
            status, headers, text = await get(f"{API_BASE}/systems?limit=1")
            if status != 200:
                return _by_status(status)
            return "ok" if isinstance(json.loads(text), list) and "X-Total-Count" in headers else "protocol_error"

        async def module_functions() -> str:
            return _by_status((await get(FUNCS))[0])

        async def execute_probe() -> str:
            async with s.post(api.url + EXEC, json=[], headers=KEY) as r:
                status, text = r.status, await r.text()
            if status == 200:
                return "ok"
            try:
                body = json.loads(text)
                words = f"{body.get('error') or ''} {body.get('message') or ''}".strip()
            except (ValueError, AttributeError):
                words = ""
            return _by_text(words) or _by_status(status)

        async def websocket() -> str:
            try:
                ws = await s.ws_connect(api.ws_url, headers=KEY)
            except aiohttp.WSServerHandshakeError as exc:
                return _by_status(exc.status)
            async with ws:
                await ws.send_str(json.dumps(BIND))
                while True:
                    msg = await ws.receive(timeout=deadline)
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        return "protocol_error"
                    data = json.loads(msg.data)
                    if data["type"] == "error":
                        return _ws_error(data)
                    if data["type"] == "notify":
                        break
                await ws.send_str(json.dumps(EXEC_WS))
                data = json.loads((await ws.receive(timeout=deadline)).data)
                if data["type"] == "error":
                    return _ws_error(data)
                await ws.send_str("ping")
                return "ok" if (await ws.receive(timeout=deadline)).data == "pong" else "protocol_error"

        async def drivers() -> str:
            status, _, text = await get(f"{API_BASE}/cluster?include_status=true")
            if status != 200:
                return _by_status(status)
            nodes = json.loads(text)
            listed = json.loads((await get(f"{API_BASE}/cluster"))[2])
            if {n["id"] for n in listed} - {n["id"] for n in nodes}:
                return "core_unreachable"
            if not nodes:
                return "no_core_instances"
            if any(n["status"]["unavailable_drivers"] for n in nodes):
                return "driver_error"
            seen: set[str] = set()
            for node in nodes:
                status, _, text = await get(f"{API_BASE}/cluster/{node['id']}?include_status=true")
                if status != 200:
                    return _by_status(status)
                for entry in json.loads(text):
                    local = entry["local"]
                    seen.update(local["modules"])
                    if not local["status"]["running"] and local["status"]["module_instances"] > 0:
                        return "driver_error"
            return "ok" if "mod-1" in seen else "not_loaded"

        async def triggers_health() -> str:
            return _by_status((await get("/api/triggers/v2/", {}))[0])

        async def build_service() -> str:
            status = (await get(f"{API_BASE}/build/monitor"))[0]
            return "ok" if status == 404 else _by_status(status)  # 404: the route is absent, a capability

        probes = {
            "api_health": api_health,
            "login": login,
            "systems_list": systems_list,
            "module_functions": module_functions,
            "execute": execute_probe,
            "websocket": websocket,
            "drivers": drivers,
            "triggers_health": triggers_health,
            "build_service": build_service,
        }
        for name, probe in probes.items():
            await guarded(name, probe)
    return {name: reason for name, reason in out.items() if reason != "ok"}


@pytest.mark.parametrize(
    ("row", "era"), [(s, era) for s in SCENARIOS for era in s.eras], ids=lambda v: getattr(v, "id", v)
)
async def test_double_answers_as_the_table_expects(api: PlaceOSApi, row: Any, era: str) -> None:
    api.set(era=era, failures=row.switches, reset_knobs=True, **row.knobs)
    api.set(subscribe_ack_timeout=0.05)
    assert await _reference_probes(api) == dict(row.reasons_for(era))
