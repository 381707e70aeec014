"""The rest-api simulator's listing, cluster and driver routes, eras C and A, and rest-api and triggers
as processes, against real backends (see test_rest_api_sim.py for the setup).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.parse
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from rest_api_stack import (
    API,
    DEADLINE,
    EXEC_URL,
    HOST,
    REPO,
    RethinkStandIn,
    Runner,
    Stack,
    get_json,
    http_ok,
    key_headers,
    post_json,
)

from sandbox.ports import free_port
from sandbox.procs import Proc
from sandbox.simulator import seed
from sandbox.simulator.triggers import TriggersConfig
from sandbox.simulator.triggers import make_app as make_triggers_app

# ----------------------------------------------------------------------------------------- lists, cluster, drivers


async def test_systems_list_elasticsearch_down_is_500(
    stack_b: Stack, run_api: Runner, http: aiohttp.ClientSession
) -> None:
    base = await run_api(stack_b.config())  # es_url points at a closed port
    async with http.get(f"{base}{API}/systems", headers=key_headers(stack_b, Accept="application/json")) as resp:
        assert (resp.status, await resp.text()) == (500, "{}")
    status, doc = await get_json(http, f"{base}{API}/systems/{seed.PROBE_SYSTEM}", headers=key_headers(stack_b))
    assert status == 200 and doc["name"] == "Meeting Room 1"


async def test_systems_list_paging_headers(stack_b: Stack, run_api: Runner, http: aiohttp.ClientSession) -> None:
    """rest-api's ``paginate_results`` headers over an ES ``_search`` answer (internals §4).

    The ES side is a minimal ``/<index>/_search`` responder recording the query; the real stand-in is
    used by the next test once it exists.
    """
    seen: list[dict[str, Any]] = []

    async def search(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append({"index": request.match_info["index"], **body})
        docs = [{"_id": f"sys-{i}", "_source": {"id": f"sys-{i}", "name": f"Room {i}"}} for i in range(2)]
        return web.json_response({"hits": {"total": {"value": 5, "relation": "eq"}, "hits": docs}})

    es_app = web.Application()
    es_app.router.add_post("/{index}/_search", search)
    es_runner = web.AppRunner(es_app)
    await es_runner.setup()
    es_port = free_port()
    await web.TCPSite(es_runner, "127.0.0.1", es_port).start()
    try:
        base = await run_api(stack_b.config(es_url=f"http://127.0.0.1:{es_port}"))
        async with http.get(
            f"{base}{API}/systems", params={"limit": "2", "offset": "1"}, headers=key_headers(stack_b)
        ) as resp:
            assert resp.status == 200
            assert [d["id"] for d in await resp.json()] == ["sys-0", "sys-1"]
            assert resp.headers["X-Total-Count"] == "5"
            assert resp.headers["Content-Range"] == "sys 1-3/5"
            assert resp.headers["Link"] == f'<{API}/systems?limit=2&offset=4>; rel="next"'
        assert seen[0]["index"] == "sys" and seen[0]["from"] == 1 and seen[0]["size"] == 2
    finally:
        await es_runner.cleanup()


async def test_systems_list_from_elasticsearch_standin(
    stack_b: Stack, tmp_path: Path, run_api: Runner, http: aiohttp.ClientSession
) -> None:
    """Systems listed from the ES stand-in's ``sys`` index (documents indexed here, as search-ingest would)."""
    if not (REPO / "sandbox" / "standins" / "elasticsearch" / "__init__.py").exists():
        pytest.skip("sandbox/standins/elasticsearch/ is not there yet")
    port = free_port()
    argv = [sys.executable, "-m", "sandbox.standins.elasticsearch", "--port", str(port), "--data-dir", str(tmp_path)]
    proc = Proc.start(argv, log_path=tmp_path / "es.log", name="elasticsearch", cwd=REPO)
    try:
        proc.wait_ready(lambda: http_ok(f"http://127.0.0.1:{port}/_cluster/health"), deadline=DEADLINE)
        docs = seed.seed_documents("x", "y")["sys"]
        for doc in docs:
            async with http.put(f"http://127.0.0.1:{port}/sys/_doc/{doc['id']}?refresh=true", json=doc) as resp:
                assert resp.status in (200, 201), await resp.text()
        base = await run_api(stack_b.config(es_url=f"http://127.0.0.1:{port}"))
        async with http.get(f"{base}{API}/systems", headers=key_headers(stack_b)) as resp:
            assert resp.status == 200, await resp.text()
            assert sorted(d["id"] for d in await resp.json()) == sorted(d["id"] for d in docs)
            assert resp.headers["Content-Range"] == f"sys 0-{len(docs)}/{len(docs)}"
        async with http.get(f"{base}{API}/systems", params={"q": "2"}, headers=key_headers(stack_b)) as resp:
            assert resp.status == 200, await resp.text()
            assert [d["id"] for d in await resp.json()] == ["sys-room-2"]
            assert (resp.headers["X-Total-Count"], resp.headers["Content-Range"]) == ("1", "sys 0-1/1")
    finally:
        proc.terminate()


async def test_cluster_and_driver_routes(stack_b: Stack, run_api: Runner, http: aiohttp.ClientSession) -> None:
    base = await run_api(stack_b.config())
    status, nodes = await get_json(http, f"{base}{API}/cluster?include_status=true", headers=key_headers(stack_b))
    assert status == 200 and len(nodes) == 1
    node = nodes[0]
    assert node["uri"] == f"http://127.0.0.1:{stack_b.core_port}"
    assert {"local", "edge"} <= set(node["load"]) and "compiled_drivers" in node["status"]

    status, drivers = await get_json(
        http, f"{base}{API}/cluster/{node['id']}?include_status=true", headers=key_headers(stack_b)
    )
    assert status == 200 and len(drivers) == len(seed.DRIVERS)
    display = next(d for d in drivers if d["driver"].endswith("driver-display"))
    assert sorted(display["local"]["modules"]) == ["mod-display-1", "mod-display-2"]
    assert display["local"]["status"]["running"] is True and display["edge"] == {}

    async with http.get(f"{base}{API}/cluster/nope", headers=key_headers(stack_b)) as resp:
        assert (resp.status, await resp.json()) == (404, {"error": "core not registered: nope"})

    async with http.get(f"{base}{API}/drivers/driver-display/compiled", headers=key_headers(stack_b)) as resp:
        assert (resp.status, await resp.text()) == (200, "")
    status, driver = await get_json(http, f"{base}{API}/drivers/driver-display", headers=key_headers(stack_b))
    assert status == 200 and driver["compilation_output"] is None
    assert driver["compilation_status"] == {node["id"]: True}


# ----------------------------------------------------------------------------------------- era C


async def test_era_c_health_and_execute(stack_c: Stack, run_api: Runner, http: aiohttp.ClientSession) -> None:
    base = await run_api(stack_c.config())
    async with http.get(f"{base}{API}/") as resp:
        assert resp.status == 200  # Redis + PostgreSQL only: no etcd in era C
    status, value = await post_json(http, f"{base}{EXEC_URL}", [], headers=key_headers(stack_c))
    assert status == 200 and value["connected"] is True
    status, nodes = await get_json(http, f"{base}{API}/cluster", headers=key_headers(stack_c))
    assert status == 200 and [n["uri"] for n in nodes] == [f"http://127.0.0.1:{stack_c.core_port}"]


# ----------------------------------------------------------------------------------------- era A


async def test_era_a_rethinkdb_killed(
    stack_a: Stack, rethinkdb: RethinkStandIn, run_api: Runner, http: aiohttp.ClientSession
) -> None:
    """The troubleshooting page's RethinkDB failure: logins and API requests fail, open sockets live."""
    base = await run_api(stack_a.config())
    async with http.get(f"{base}{API}/") as resp:
        assert resp.status == 200  # Redis + etcd + RethinkDB server_status
    status, version = await get_json(http, f"{base}{API}/version", headers=key_headers(stack_a))
    assert (status, version["platform_version"]) == (200, "1.2303.4")
    status, value = await post_json(http, f"{base}{EXEC_URL}", [], headers=key_headers(stack_a))
    assert status == 200 and value["connected"] is True
    form = {
        "grant_type": "password",
        "username": seed.SUPPORT_EMAIL,
        "password": stack_a.password,
        "client_id": seed.OAUTH_CLIENT_ID,
    }
    status, token = await post_json(http, f"{base}/auth/oauth/token", None, data=form, headers={"Host": HOST})
    assert status == 200
    bearer = {"Host": HOST, "Authorization": f"Bearer {token['access_token']}"}

    ws = await http.ws_connect(f"{base}{API}/systems/control", headers=key_headers(stack_a))
    assert rethinkdb.proc is not None
    rethinkdb.proc.kill()
    try:
        async with http.get(f"{base}{API}/version", headers=key_headers(stack_a)) as resp:
            assert (resp.status, await resp.text()) == (401, '{"error":"unknown X-API-Key"}')
        async with http.get(f"{base}{API}/", headers={"Accept": "application/json"}) as resp:
            assert (resp.status, await resp.text()) == (500, "{}")
        async with http.post(f"{base}/auth/oauth/token", data=form, headers={"Host": HOST}) as resp:
            assert resp.status == 500
        # Eras A/B verify a bearer JWT without the database: a token issued before still works.
        status, _ = await get_json(http, f"{base}{API}/version", headers=bearer)
        assert status == 200
        # ... but a route that reads the database does not.
        async with http.get(f"{base}{API}/systems/{seed.PROBE_SYSTEM}", headers=bearer) as resp:
            assert resp.status == 500
        await ws.send_json(
            {"id": 1, "cmd": "exec", "sys": seed.PROBE_SYSTEM, "mod": "Display", "name": "status", "args": []}
        )
        reply = await ws.receive_json(timeout=10)
        assert (reply["type"], reply["code"]) == ("success", 200), reply
    finally:
        await ws.close()
        rethinkdb.start()  # heal: same port, same data dir
    status, _ = await get_json(http, f"{base}{API}/version", headers=key_headers(stack_a))
    assert status == 200


# ----------------------------------------------------------------------------------------- processes


def test_rest_api_cli_process_serves_and_exits_on_sigterm(stack_b: Stack, tmp_path: Path) -> None:
    """The part contract: ``python -m``, ready on ``/_sandbox/ready``, exit 0 on SIGTERM, data dir kept."""
    port = free_port()
    argv = [sys.executable, "-m", "sandbox.simulator.rest_api", "--port", str(port), "--era", "B"]
    argv += ["--etcd", str(stack_b.etcd_url), "--redis", stack_b.redis_url]
    argv += ["--es", f"http://127.0.0.1:{free_port()}", "--platform-version", "2.2304.0"]
    argv += ["--data-dir", str(tmp_path / "data")]
    env = {**os.environ, "SANDBOX_DB_URL": stack_b.db_url}  # the DSN's password stays out of argv
    base = f"http://127.0.0.1:{port}"

    def start() -> Proc:
        proc = Proc.start(argv, log_path=tmp_path / "rest-api.log", name="rest-api", cwd=REPO, env=env)
        proc.wait_ready(lambda: http_ok(f"{base}/_sandbox/ready"), deadline=DEADLINE)
        return proc

    def get(path: str, headers: dict[str, str]) -> Any:
        with urllib.request.urlopen(urllib.request.Request(f"{base}{path}", headers=headers), timeout=5) as resp:
            return json.loads(resp.read())

    proc = start()
    try:
        assert http_ok(f"{base}{API}/")
        assert get(f"{API}/version", key_headers(stack_b))["platform_version"] == "2.2304.0"
        form = {
            "grant_type": "password",
            "username": seed.SUPPORT_EMAIL,
            "password": stack_b.password,
            "client_id": seed.OAUTH_CLIENT_ID,
        }
        req = urllib.request.Request(
            f"{base}/auth/oauth/token", data=urllib.parse.urlencode(form).encode(), headers={"Host": HOST}
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            token = json.loads(resp.read())["access_token"]
    finally:
        assert proc.terminate() == 0
    proc = start()  # restarted on the same port and data dir: the token it issued is still good
    try:
        bearer = {"Host": HOST, "Authorization": f"Bearer {token}"}
        assert get(f"{API}/version", bearer)["service"] == "rest-api"
    finally:
        assert proc.terminate() == 0
    log = (tmp_path / "rest-api.log").read_text()
    for secret in (stack_b.api_key.split(".", 1)[1], stack_b.password, token):
        assert secret not in log  # secrets never logged
    assert "GET /api/engine/v2/version 200" in log


def test_triggers_cli_process(stack_c: Stack, tmp_path: Path) -> None:
    """triggers as a process (era C: Redis + PostgreSQL checks), exit 0 on SIGTERM."""
    port = free_port()
    argv = [sys.executable, "-m", "sandbox.simulator.triggers", "--port", str(port), "--era", "C"]
    env = {**os.environ, "SANDBOX_REDIS_URL": stack_c.redis_url, "SANDBOX_DB_URL": stack_c.db_url}
    proc = Proc.start(argv, log_path=tmp_path / "triggers.log", name="triggers", cwd=REPO, env=env)
    try:
        proc.wait_ready(lambda: http_ok(f"http://127.0.0.1:{port}/_sandbox/ready"), deadline=DEADLINE)
        assert http_ok(f"http://127.0.0.1:{port}/api/triggers/v2/")
    finally:
        assert proc.terminate() == 0


async def test_triggers_health(stack_b: Stack, http: aiohttp.ClientSession) -> None:
    async def serve(config: TriggersConfig) -> tuple[web.AppRunner, str]:
        runner = web.AppRunner(make_triggers_app(config))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", config.port).start()
        return runner, f"http://127.0.0.1:{config.port}"

    good = TriggersConfig(
        port=free_port(), era="B", redis_url=stack_b.redis_url, db_url=stack_b.db_url, etcd_url=stack_b.etcd_url
    )
    bad_etcd = replace(good, port=free_port(), etcd_url=f"http://127.0.0.1:{free_port()}")
    runners = []
    try:
        runner, base = await serve(good)
        runners.append(runner)
        async with http.get(f"{base}/api/triggers/v2/") as resp:
            assert resp.status == 200
        status, version = await get_json(http, f"{base}/api/triggers/v2/version")
        assert status == 200 and version["service"] == "triggers" and version["platform_version"] == "2.2403.0"
        runner, base = await serve(bad_etcd)
        runners.append(runner)
        async with http.get(f"{base}/api/triggers/v2/", headers={"Accept": "application/json"}) as resp:
            assert (resp.status, await resp.text()) == (500, "{}")
        runner, base = await serve(replace(bad_etcd, port=free_port(), health="always-ok"))
        runners.append(runner)
        async with http.get(f"{base}/api/triggers/v2/") as resp:
            assert resp.status == 200
    finally:
        for r in runners:
            await r.cleanup()
