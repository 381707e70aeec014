"""The rest-api and triggers simulators against real backends: the symptoms come from real failures.

Real Redis, etcd and PostgreSQL (sandbox.backends), the config database through sandbox.simulator.db
(seeded), and a real core simulator process (sandbox.simulator.core) that registers in etcd / Redis
and runs the seed drivers. The rest-api app runs in-process on a free port (its factory), except in
the CLI test. Faults are made for real: a database behind a TCP relay that is cut, a closed port, an
etcd with nothing registered, a core registered at a dead address.

Era B (etcd + PostgreSQL) is the main stack; era C (Redis discovery) gets its own Redis and core;
era A runs only once the RethinkDB stand-in exists (sandbox/standins/rethinkdb.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis as redis_sync
from aiohttp import web

from sandbox import backends
from sandbox.ports import free_port
from sandbox.procs import Proc
from sandbox.simulator import seed
from sandbox.simulator.db import open_db
from sandbox.simulator.db import seed as seed_db
from sandbox.simulator.discovery import EtcdDiscovery
from sandbox.simulator.rest_api import RestApiConfig, make_app, parse_ws_request
from sandbox.simulator.triggers import TriggersConfig
from sandbox.simulator.triggers import make_app as make_triggers_app

REPO = Path(__file__).resolve().parents[2]
HOST = "localhost"  # the seeded Authority's domain: rest-api finds the Authority by Host (§5.2)
API = "/api/engine/v2"
DEADLINE = 20.0


# ----------------------------------------------------------------------------------------- helpers


def poll(check: Callable[[], bool], deadline: float, what: str, interval: float = 0.1) -> None:
    """Poll ``check`` until true; fail after ``deadline`` seconds."""
    end = time.monotonic() + deadline
    last: Exception | None = None
    while time.monotonic() < end:
        try:
            if check():
                return
        except Exception as e:
            last = e
        time.sleep(interval)
    pytest.fail(f"{what}: not true after {deadline:g}s (last error: {last!r})")


async def apoll(check: Callable[[], Awaitable[bool]], deadline: float, what: str, interval: float = 0.1) -> None:
    end = time.monotonic() + deadline
    last: Exception | None = None
    while time.monotonic() < end:
        try:
            if await check():
                return
        except Exception as e:
            last = e
        await asyncio.sleep(interval)
    pytest.fail(f"{what}: not true after {deadline:g}s (last error: {last!r})")


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return bool(resp.status == 200)


@dataclass(frozen=True)
class Stack:
    """One era's backends plus a core simulator, and the seeded credentials."""

    era: str
    redis_url: str = field(repr=False)
    db_url: str = field(repr=False)  # holds the PostgreSQL password
    etcd_url: str | None = field(repr=False)
    api_key: str = field(repr=False)
    password: str = field(repr=False)
    core_port: int = 0

    def config(self, **overrides: Any) -> RestApiConfig:
        base = RestApiConfig(
            port=free_port(),
            era=self.era,
            redis_url=self.redis_url,
            db_url=self.db_url,
            es_url=f"http://127.0.0.1:{free_port()}",  # no Elasticsearch unless a test gives one
            etcd_url=self.etcd_url,
            retries=1,
            retry_interval=0.1,
            backend_timeout=2.0,
            core_timeout=5.0,
            etcd_ttl=1,
        )
        return replace(base, **overrides)


def start_core(tmp: Path, era: str, redis_url: str, db_url: str, etcd_url: str | None) -> tuple[Proc, int]:
    port = free_port()
    argv = [sys.executable, "-m", "sandbox.simulator.core", "--port", str(port), "--era", era]
    argv += ["--redis", redis_url, "--db", db_url, "--data-dir", str(tmp / f"core-{era}"), "--etcd-ttl", "5"]
    if etcd_url:
        argv += ["--etcd", etcd_url]
    proc = Proc.start(argv, log_path=tmp / f"core-{era}.log", name=f"core-{era}", cwd=REPO)
    proc.wait_ready(lambda: http_ok(f"http://127.0.0.1:{port}/api/core/v1/ready"), deadline=DEADLINE)
    proc.wait_ready(lambda: modules_published(redis_url), deadline=DEADLINE)
    return proc, port


def modules_published(redis_url: str) -> bool:
    """Every seed module mapped in ``system/<sys>`` and its driver's ``interface/<mod>`` written."""
    with redis_sync.Redis.from_url(redis_url, socket_timeout=2) as r:
        mapped = all(r.hlen(f"system/{sys_id}") == len(mods) for sys_id, _, mods in seed.SYSTEMS)
        return mapped and all(r.exists(f"interface/{mod_id}") for mod_id, _ in seed.MODULES)


def seed_database(db_url: str, api_key_secret: str, password: str) -> None:
    async def go() -> None:
        db = await open_db(db_url, 10.0)
        await seed_db(db, seed.seed_documents(api_key_secret, password))
        await db.close()

    asyncio.run(go())


class TcpRelay:
    """A loopback TCP relay to a backend; ``cut()`` closes it, so clients get connection refused."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(Exception):
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for w in self._writers:
            w.close()
        self._writers.clear()


# ----------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tmp_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rest-api-sim")


@pytest.fixture(scope="module")
def postgres(tmp_module: Path) -> Iterator[backends.PostgresServer]:
    server = backends.start_postgres(tmp_module / "pg")
    yield server
    server.close()


@pytest.fixture(scope="module")
def secrets_pair() -> tuple[str, str]:
    return secrets.token_urlsafe(16), secrets.token_urlsafe(12)


@pytest.fixture(scope="module")
def stack_b(tmp_module: Path, postgres: backends.PostgresServer, secrets_pair: tuple[str, str]) -> Iterator[Stack]:
    """Era B: etcd discovery, PostgreSQL, Redis, one core with every seed module."""
    key_secret, password = secrets_pair
    redis = backends.start_redis(tmp_module / "redis-b")
    etcd = backends.start_etcd(tmp_module / "etcd-b")
    seed_database(postgres.dsn, key_secret, password)
    core, core_port = start_core(tmp_module, "B", redis.url, postgres.dsn, etcd.url)
    yield Stack("B", redis.url, postgres.dsn, etcd.url, f"{seed.API_KEY_ID}.{key_secret}", password, core_port)
    core.terminate()
    etcd.close()
    redis.close()


@pytest.fixture(scope="module")
def stack_c(tmp_module: Path, postgres: backends.PostgresServer, secrets_pair: tuple[str, str]) -> Iterator[Stack]:
    """Era C: Redis discovery, PostgreSQL (the same seeded database), its own Redis and core."""
    key_secret, password = secrets_pair
    redis = backends.start_redis(tmp_module / "redis-c")
    seed_database(postgres.dsn, key_secret, password)
    core, core_port = start_core(tmp_module, "C", redis.url, postgres.dsn, None)
    yield Stack("C", redis.url, postgres.dsn, None, f"{seed.API_KEY_ID}.{key_secret}", password, core_port)
    core.terminate()
    redis.close()


@dataclass
class RethinkStandIn:
    """The RethinkDB stand-in as a process that a test can kill and start again on the same port."""

    data_dir: Path
    port: int
    proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"rethinkdb://admin:@127.0.0.1:{self.port}/place_development"

    def start(self) -> None:
        argv = [sys.executable, "-m", "sandbox.standins.rethinkdb", "--port", str(self.port)]
        argv += ["--data-dir", str(self.data_dir)]
        self.proc = Proc.start(argv, log_path=self.data_dir.parent / "rethinkdb.log", name="rethinkdb", cwd=REPO)
        self.proc.wait_ready(self.port, deadline=DEADLINE)


@pytest.fixture(scope="module")
def rethinkdb(tmp_module: Path) -> Iterator[RethinkStandIn]:
    if not (REPO / "sandbox" / "standins" / "rethinkdb.py").exists():
        pytest.skip("sandbox/standins/rethinkdb.py is not there yet (era A needs it)")
    server = RethinkStandIn(tmp_module / "rethinkdb" / "data", free_port())
    server.data_dir.mkdir(parents=True)
    server.start()
    yield server
    if server.proc is not None:
        server.proc.terminate()


@pytest.fixture(scope="module")
def stack_a(tmp_module: Path, rethinkdb: RethinkStandIn, secrets_pair: tuple[str, str]) -> Iterator[Stack]:
    """Era A: etcd discovery, the RethinkDB stand-in, Redis, one core."""
    key_secret, password = secrets_pair
    redis = backends.start_redis(tmp_module / "redis-a")
    etcd = backends.start_etcd(tmp_module / "etcd-a")
    seed_database(rethinkdb.url, key_secret, password)
    core, core_port = start_core(tmp_module, "A", redis.url, rethinkdb.url, etcd.url)
    yield Stack("A", redis.url, rethinkdb.url, etcd.url, f"{seed.API_KEY_ID}.{key_secret}", password, core_port)
    core.terminate()
    etcd.close()
    redis.close()


@pytest.fixture(scope="module")
def empty_etcd(tmp_module: Path) -> Iterator[backends.EtcdServer]:
    """An etcd where no core is registered."""
    etcd = backends.start_etcd(tmp_module / "etcd-empty")
    yield etcd
    etcd.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


Runner = Callable[[RestApiConfig], Awaitable[str]]


@pytest.fixture
async def run_api() -> AsyncIterator[Runner]:
    """Start rest-api apps in-process (the factory), each on its own port; stopped after the test."""
    runners: list[web.AppRunner] = []

    async def start(config: RestApiConfig) -> str:
        runner = web.AppRunner(make_app(config))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", config.port).start()
        runners.append(runner)
        return f"http://127.0.0.1:{config.port}"

    yield start
    for runner in reversed(runners):
        await runner.cleanup()


def key_headers(stack: Stack, **extra: str) -> dict[str, str]:
    return {"Host": HOST, "X-API-Key": stack.api_key, **extra}


async def get_json(http: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, Any]:
    async with http.get(url, **kw) as resp:
        text = await resp.text()
        return resp.status, (json.loads(text) if text else text)


async def post_json(http: aiohttp.ClientSession, url: str, body: Any, **kw: Any) -> tuple[int, Any]:
    async with http.post(url, json=body, **kw) as resp:
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


EXEC_URL = f"{API}/systems/{seed.PROBE_SYSTEM}/{seed.PROBE_MODULE}/{seed.PROBE_FUNCTION}"


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
    if not (REPO / "sandbox" / "standins" / "elasticsearch.py").exists():
        pytest.skip("sandbox/standins/elasticsearch.py is not there yet")
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
