"""The rest-api and triggers simulators against real backends: the symptoms come from real failures.

Real Redis, etcd and PostgreSQL (sandbox.backends), the config database through sandbox.simulator.db
(seeded), and a real core simulator process (sandbox.simulator.core) that registers in etcd / Redis
and runs the seed drivers. The rest-api app runs in-process on a free port (its factory), except in
the CLI test. Faults are made for real: a database behind a TCP relay that is cut, a closed port, an
etcd with nothing registered, a core registered at a dead address.

Era B (etcd + PostgreSQL) is the main stack; era C (Redis discovery) gets its own Redis and core;
era A runs only once the RethinkDB stand-in exists (sandbox/standins/rethinkdb/).
Helpers are in rest_api_stack.py, fixtures in conftest.py; more tests in test_rest_api_sim_lists_eras.py.
"""

from __future__ import annotations

import secrets
from typing import Any

import aiohttp
from rest_api_stack import API, EXEC_URL, HOST, Runner, Stack, TcpRelay, apoll, get_json, key_headers, post_json

from sandbox import backends
from sandbox.ports import free_port
from sandbox.simulator import seed
from sandbox.simulator.discovery import EtcdDiscovery
from sandbox.simulator.rest_api import parse_ws_request

# ----------------------------------------------------------------------------------------- health


async def test_health_200_then_500_when_a_backend_is_down(
    stack_b: Stack, run_api: Runner, http: aiohttp.ClientSession
) -> None:
    base = await run_api(stack_b.config())
    async with http.get(f"{base}{API}/") as resp:
        assert resp.status == 200
        assert await resp.text() == ""

    # Redis down (nothing listens): the production error handler's 500 (§5.1).
    broken = await run_api(stack_b.config(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    async with http.get(f"{broken}{API}/", headers={"Accept": "application/json"}) as resp:
        assert resp.status == 500
        assert await resp.text() == "{}"
    async with http.get(f"{broken}{API}/") as resp:
        assert resp.status == 500
        assert await resp.text() == ""

    # etcd unreachable from the API (era B health includes etcd).
    async with http.post(f"{base}/_sandbox/etcd-unreachable", json={"on": True}) as resp:
        assert resp.status == 200
    async with http.get(f"{base}{API}/") as resp:
        assert resp.status == 500
    async with http.post(f"{base}/_sandbox/etcd-unreachable", json={"on": False}) as resp:
        assert resp.status == 200
    async with http.get(f"{base}{API}/") as resp:
        assert resp.status == 200

    # The load balancer cannot reach rest-api: nginx's 502 on every PlaceOS route.
    async with http.post(f"{base}/_sandbox/unreachable", json={"on": True}) as resp:
        assert resp.status == 200
    async with http.get(f"{base}{API}/") as resp:
        assert resp.status == 502 and "502 Bad Gateway" in await resp.text()
    async with http.post(f"{base}/_sandbox/unreachable", json={"on": False}) as resp:
        assert resp.status == 200
    async with http.get(f"{base}{API}/") as resp:
        assert resp.status == 200


# ----------------------------------------------------------------------------------------- auth


async def test_api_key_auth(stack_b: Stack, run_api: Runner, http: aiohttp.ClientSession) -> None:
    base = await run_api(stack_b.config())
    status, body = await get_json(http, f"{base}{API}/api_keys/inspect", headers=key_headers(stack_b))
    assert status == 200
    assert body["sub"] == seed.SUPPORT_USER_ID and body["aud"] == HOST and body["u"]["p"] == 3

    # ?api-key= works too, and the Host may carry a port (host only is compared).
    status, _ = await get_json(
        http, f"{base}{API}/version", params={"api-key": stack_b.api_key}, headers={"Host": f"{HOST}:8443"}
    )
    assert status == 200

    wrong = f"{seed.API_KEY_ID}.{secrets.token_urlsafe(16)}"
    for headers in ({"Host": HOST, "X-API-Key": wrong}, {"Host": "127.0.0.1", "X-API-Key": stack_b.api_key}):
        async with http.get(f"{base}{API}/version", headers=headers) as resp:
            assert resp.status == 401
            assert await resp.text() == '{"error":"unknown X-API-Key"}'

    async with http.get(f"{base}{API}/version", headers={"Host": HOST}) as resp:
        assert resp.status == 401
        assert await resp.text() == "{}"


async def test_database_down_gives_401_but_open_websocket_keeps_working(
    stack_b: Stack, postgres: backends.PostgresServer, run_api: Runner, http: aiohttp.ClientSession
) -> None:
    relay = TcpRelay(postgres.port)
    await relay.start()
    db_url = postgres.dsn.replace(f":{postgres.port}/", f":{relay.port}/")
    base = await run_api(stack_b.config(db_url=db_url))
    status, _ = await get_json(http, f"{base}{API}/version", headers=key_headers(stack_b))
    assert status == 200
    ws = await http.ws_connect(f"{base}{API}/systems/control", headers=key_headers(stack_b))
    try:
        await relay.cut()  # the database is gone for this rest-api

        async with http.get(f"{base}{API}/version", headers=key_headers(stack_b)) as resp:
            assert resp.status == 401
            assert await resp.text() == '{"error":"unknown X-API-Key"}'
        async with http.get(f"{base}{API}/", headers={"Accept": "application/json"}) as resp:
            assert (resp.status, await resp.text()) == (500, "{}")
        form = {"grant_type": "password", "username": seed.SUPPORT_EMAIL, "password": stack_b.password}
        form["client_id"] = seed.OAUTH_CLIENT_ID
        async with http.post(f"{base}/auth/oauth/token", data=form, headers={"Host": HOST}) as resp:
            assert resp.status == 500

        # Authentication happened at upgrade: the open socket still executes (§9).
        await ws.send_json(
            {"id": 7, "cmd": "exec", "sys": seed.PROBE_SYSTEM, "mod": "Display", "name": "status", "args": []}
        )
        reply = await ws.receive_json(timeout=10)
        assert reply["id"] == 7 and reply["type"] == "success" and reply["code"] == 200, reply
        assert reply["value"]["connected"] is True
    finally:
        await ws.close()


async def test_oauth_password_grant_and_bearer(stack_b: Stack, run_api: Runner, http: aiohttp.ClientSession) -> None:
    base = await run_api(stack_b.config())
    form = {
        "grant_type": "password",
        "username": seed.SUPPORT_EMAIL,
        "password": stack_b.password,
        "client_id": seed.OAUTH_CLIENT_ID,
    }
    status, token = await post_json(http, f"{base}/auth/oauth/token", None, data=form, headers={"Host": HOST})
    assert status == 200
    assert token["token_type"] == "Bearer" and token["expires_in"] == 7200 and token["scope"] == "public"
    assert token["refresh_token"]

    bearer = {"Host": HOST, "Authorization": f"Bearer {token['access_token']}"}
    status, version = await get_json(http, f"{base}{API}/version", headers=bearer)
    assert status == 200
    assert version["platform_version"] == "2.2403.0" and version["service"] == "rest-api"
    assert set(version) == {"service", "commit", "version", "build_time", "platform_version"}

    status, body = await post_json(
        http, f"{base}/auth/oauth/token", None, data={**form, "password": "not-it"}, headers={"Host": HOST}
    )
    assert (status, body["error"]) == (400, "invalid_grant")
    status, body = await post_json(
        http, f"{base}/auth/oauth/token", None, data={**form, "client_id": "nope"}, headers={"Host": HOST}
    )
    assert (status, body["error"]) == (401, "invalid_client")

    forged = token["access_token"][:-4] + ("AAAA" if not token["access_token"].endswith("AAAA") else "BBBB")
    async with http.get(f"{base}{API}/version", headers={"Host": HOST, "Authorization": f"Bearer {forged}"}) as resp:
        assert resp.status == 401
        assert await resp.json() == {"error": "Signature verification failed"}


# ----------------------------------------------------------------------------------------- functions, state


async def test_functions_and_state(stack_b: Stack, run_api: Runner, http: aiohttp.ClientSession) -> None:
    base = await run_api(stack_b.config())
    status, fns = await get_json(
        http, f"{base}{API}/systems/{seed.PROBE_SYSTEM}/functions/{seed.PROBE_MODULE}", headers=key_headers(stack_b)
    )
    assert status == 200
    assert fns["power"] == {"arity": 1, "params": {"state": {"type": "boolean"}}, "order": ["state"]}
    assert fns["status"] == {"arity": 0, "params": {}, "order": []}

    async with http.get(
        f"{base}{API}/systems/{seed.PROBE_SYSTEM}/functions/Display_9", headers=key_headers(stack_b)
    ) as resp:
        assert resp.status == 404
        assert await resp.text() == f'{{"error":"metadata not found for Display_9 on {seed.PROBE_SYSTEM}"}}'

    status, state = await get_json(
        http, f"{base}{API}/systems/{seed.PROBE_SYSTEM}/Display", headers=key_headers(stack_b)
    )
    assert status == 200 and state["connected"] == "true" and "power" in state
    status, value = await get_json(
        http, f"{base}{API}/systems/{seed.PROBE_SYSTEM}/Display_1/connected", headers=key_headers(stack_b)
    )
    assert (status, value) == (200, True)
    status, value = await get_json(
        http, f"{base}{API}/systems/{seed.PROBE_SYSTEM}/Nope_1", headers=key_headers(stack_b)
    )
    assert (status, value) == (200, {})

    # Redis down: functions is a 500 through the error handler (the "modules and functions" triage).
    broken = await run_api(stack_b.config(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    async with http.get(
        f"{broken}{API}/systems/{seed.PROBE_SYSTEM}/functions/{seed.PROBE_MODULE}",
        headers=key_headers(stack_b, Accept="application/json"),
    ) as resp:
        assert (resp.status, await resp.text()) == (500, "{}")
    # ... and execute is render_error's 500 {"message": ...} (§5.3 "other exceptions").
    status, body = await post_json(http, f"{broken}{EXEC_URL}", [], headers=key_headers(stack_b))
    assert status == 500 and set(body) == {"message"}


# ----------------------------------------------------------------------------------------- execute


async def test_execute_through_core(stack_b: Stack, run_api: Runner, http: aiohttp.ClientSession) -> None:
    base = await run_api(stack_b.config())
    status, value = await post_json(http, f"{base}{EXEC_URL}", [], headers=key_headers(stack_b))
    assert status == 200
    assert value["connected"] is True and "power" in value

    status, value = await post_json(
        http, f"{base}{API}/modules/mod-display-1/exec/status", [], headers=key_headers(stack_b)
    )
    assert status == 200 and value["connected"] is True

    # Function missing from the interface: 400 bad request (§5.3).
    status, body = await post_json(
        http, f"{base}{API}/systems/{seed.PROBE_SYSTEM}/Display_1/fly", [], headers=key_headers(stack_b)
    )
    assert status == 400
    assert body == {
        "error": "bad request",
        "sys_id": seed.PROBE_SYSTEM,
        "module_name": "Display",
        "index": 1,
        "message": "could not find function fly",
        "backtrace": None,
    }
    # No interface for the module: 404 module not found.
    status, body = await post_json(
        http, f"{base}{API}/systems/{seed.PROBE_SYSTEM}/Display_7/status", [], headers=key_headers(stack_b)
    )
    assert (status, body["error"], body["message"], body["index"]) == (
        404,
        "module not found",
        "could not find module",
        7,
    )
    # The driver raised: core 203 -> "request failed" with the driver's code.
    status, body = await post_json(
        http, f"{base}{API}/systems/{seed.PROBE_SYSTEM}/Display_1/switch_to", [1, 2, 3], headers=key_headers(stack_b)
    )
    assert status >= 400 and body["error"] == "request failed" and body["message"].startswith("module raised: ")
    # A body that is not a JSON array: 400.
    status, _ = await post_json(http, f"{base}{EXEC_URL}", {"a": 1}, headers=key_headers(stack_b))
    assert status == 400


async def test_no_core_registered_exact_body(
    stack_b: Stack, empty_etcd: backends.EtcdServer, run_api: Runner, http: aiohttp.ClientSession
) -> None:
    base = await run_api(stack_b.config(etcd_url=empty_etcd.url))
    async with http.post(f"{base}{EXEC_URL}", json=[], headers=key_headers(stack_b)) as resp:
        assert resp.status == 500
        assert await resp.text() == (
            '{"error":"unexpected failure","sys_id":"sys-room-1","module_name":"Display","index":1,'
            '"message":"No registered core instances","backtrace":null}'
        )


async def test_core_registered_but_unreachable(
    stack_b: Stack, empty_etcd: backends.EtcdServer, run_api: Runner, http: aiohttp.ClientSession
) -> None:
    dead_port = free_port()
    ghost = EtcdDiscovery(empty_etcd.url, ttl=30)
    await ghost.register(f"http://127.0.0.1:{dead_port}")
    try:
        base = await run_api(stack_b.config(etcd_url=empty_etcd.url))
        status, body = await post_json(http, f"{base}{EXEC_URL}", [], headers=key_headers(stack_b))
        assert status == 500
        assert body["error"] == "unexpected failure"
        assert body["message"] == f"Error connecting to '127.0.0.1:{dead_port}': Connection refused"
        # The cluster route silently drops a core that does not answer (§11.1).
        status, nodes = await get_json(http, f"{base}{API}/cluster?include_status=true", headers=key_headers(stack_b))
        assert (status, nodes) == (200, [])
        status, nodes = await get_json(http, f"{base}{API}/cluster", headers=key_headers(stack_b))
        assert status == 200 and nodes == [{"id": ghost.name, "uri": f"http://127.0.0.1:{dead_port}"}]
    finally:
        await ghost.unregister()
        await ghost.close()


async def test_etcd_unreachable_execute_message(stack_b: Stack, run_api: Runner, http: aiohttp.ClientSession) -> None:
    base = await run_api(stack_b.config())
    status, _ = await post_json(http, f"{base}{EXEC_URL}", [], headers=key_headers(stack_b))
    assert status == 200
    async with http.post(f"{base}/_sandbox/etcd-unreachable", json={"on": True}) as resp:
        assert resp.status == 200
    expected = f"Could not connect to etcd endpoint: {stack_b.etcd_url}"

    async def says_etcd() -> bool:
        status, body = await post_json(http, f"{base}{EXEC_URL}", [], headers=key_headers(stack_b))
        return status == 500 and body["error"] == "unexpected failure" and body["message"] == expected

    await apoll(says_etcd, 10.0, "execute reports etcd unreachable once the cached nodes' TTL ran out")
    async with http.post(f"{base}/_sandbox/etcd-unreachable", json={"on": False}) as resp:
        assert resp.status == 200
    status, _ = await post_json(http, f"{base}{EXEC_URL}", [], headers=key_headers(stack_b))
    assert status == 200


# ----------------------------------------------------------------------------------------- websocket


def test_ws_request_parsing_is_strict() -> None:
    ok = '{"id": 1, "cmd": "bind", "sys": "s", "mod": "Display", "name": "power"}'
    assert parse_ws_request(ok) is not None
    assert parse_ws_request('{"id": "1", "cmd": "bind", "sys": "s", "mod": "M", "name": "n"}') is None
    assert parse_ws_request('{"id": 1, "cmd": "bind", "sys": "s", "mod": "M", "name": "n", "x": 1}') is None
    assert parse_ws_request('{"id": 1, "cmd": "bind", "sys": "s", "mod": "M"}') is None
    assert parse_ws_request('{"id": 1, "cmd": "jump", "sys": "s", "mod": "M", "name": "n"}') is None
    assert parse_ws_request("not json") is None


async def test_websocket_bind_notify_exec_ping(stack_b: Stack, run_api: Runner, http: aiohttp.ClientSession) -> None:
    base = await run_api(stack_b.config())
    ws = await http.ws_connect(f"{base}{API}/systems/control", headers=key_headers(stack_b))
    try:
        await ws.send_str("ping")
        assert (await ws.receive(timeout=5)).data == "pong"

        # Unparseable requests get no reply at all: the next frame is the pong.
        await ws.send_str('{"id": "5", "cmd": "bind", "sys": "sys-room-1", "mod": "Display", "name": "power"}')
        await ws.send_str('{"id": 5, "cmd": "bind", "sys": "sys-room-1", "mod": "Display", "name": "power", "x": 1}')
        await ws.send_str("ping")
        assert (await ws.receive(timeout=5)).data == "pong"

        meta = {"sys": seed.PROBE_SYSTEM, "mod": "Display", "index": 1, "name": "power"}
        await ws.send_json({"id": 1, "cmd": "bind", "sys": seed.PROBE_SYSTEM, "mod": "Display", "name": "power"})
        assert await ws.receive_json(timeout=5) == {"id": 1, "type": "success", "meta": meta}
        first = await ws.receive_json(timeout=5)
        assert first["type"] == "notify" and first["id"] == 1 and first["meta"] == meta
        start = first["value"]
        assert isinstance(start, bool)

        await ws.send_json(
            {"id": 2, "cmd": "exec", "sys": seed.PROBE_SYSTEM, "mod": "Display", "name": "power", "args": [not start]}
        )
        seen: dict[str, dict[str, Any]] = {}
        while len(seen) < 2:
            msg = await ws.receive_json(timeout=10)
            seen[msg["type"]] = msg
        assert seen["success"]["id"] == 2 and seen["success"]["code"] == 200
        assert seen["success"]["meta"] == meta
        assert seen["notify"] == {"id": 1, "type": "notify", "value": (not start), "meta": meta}

        # exec with null args: rest-api's TypeCastError, answered as request_failed (3).
        await ws.send_json({"id": 3, "cmd": "exec", "sys": seed.PROBE_SYSTEM, "mod": "Display", "name": "power"})
        err = await ws.receive_json(timeout=5)
        assert (err["id"], err["type"], err["error_code"]) == (3, "error", 3)
        # exec on a module with no interface: module_not_found (6).
        await ws.send_json({"id": 4, "cmd": "exec", "sys": seed.PROBE_SYSTEM, "mod": "Nope", "name": "x", "args": []})
        err = await ws.receive_json(timeout=5)
        assert (err["error_code"], err["msg"]) == (6, "could not find module")

        await ws.send_json({"id": 8, "cmd": "unbind", "sys": seed.PROBE_SYSTEM, "mod": "Display", "name": "power"})
        assert await ws.receive_json(timeout=5) == {"id": 8, "type": "success"}
        # Put the state back for other tests.
        await ws.send_json(
            {"id": 9, "cmd": "exec", "sys": seed.PROBE_SYSTEM, "mod": "Display", "name": "power", "args": [start]}
        )
        assert (await ws.receive_json(timeout=10))["type"] == "success"
    finally:
        await ws.close()


async def test_websocket_no_core_error_code_7(
    stack_b: Stack, empty_etcd: backends.EtcdServer, run_api: Runner, http: aiohttp.ClientSession
) -> None:
    base = await run_api(stack_b.config(etcd_url=empty_etcd.url))
    async with http.ws_connect(
        f"{base}{API}/systems/control", params={"api-key": stack_b.api_key}, headers={"Host": HOST}
    ) as ws:
        await ws.send_json(
            {"id": 1, "cmd": "exec", "sys": seed.PROBE_SYSTEM, "mod": "Display", "name": "status", "args": []}
        )
        assert await ws.receive_json(timeout=5) == {
            "id": 1,
            "type": "error",
            "error_code": 7,
            "msg": "No registered core instances",
            "code": 500,
        }
