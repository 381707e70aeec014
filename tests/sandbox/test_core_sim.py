"""The core simulator as a real process against real etcd, Redis and PostgreSQL.

Checks the behaviours of internals §1 (registration, leases, stale era C entries), §3 (Redis keys
the drivers write), §5.3 (execute answers) and §11 (driver crash, crash loop, compile failure).
Era B (etcd + PostgreSQL) and era C (Redis + PostgreSQL) run here; era A needs the RethinkDB
stand-in. Each core gets its own Redis database number so cores in different tests never share
status keys. Waits are polls with deadlines.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from sandbox import backends
from sandbox.ports import free_port
from sandbox.procs import Proc
from sandbox.simulator import db as dbm
from sandbox.simulator import seed
from sandbox.simulator.core import driver_key

REPO = Path(__file__).resolve().parents[2]
DISPLAY, LIGHTING, CAMERA = "driver-display", "driver-lighting", "driver-camera"


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` at the deadline."""
    end = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < end:
        try:
            last = await check()
        except (aiohttp.ClientError, aioredis.RedisError, OSError) as e:
            last = e
        else:
            if last:
                return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def run_async(make: Callable[[], Awaitable[None]]) -> None:
    """Run a coroutine to completion from a sync fixture, even one set up inside a running loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(lambda: asyncio.run(_call(make))).result()


async def _call(make: Callable[[], Awaitable[None]]) -> None:
    await make()


@dataclass
class Stack:
    etcd: backends.EtcdServer
    redis: backends.RedisServer
    postgres: backends.PostgresServer

    def redis_url(self, db: int) -> str:
        return self.redis.url.rsplit("/", 1)[0] + f"/{db}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("backends")
    etcd = backends.start_etcd(base / "etcd")
    redis = backends.start_redis(base / "redis")
    postgres = backends.start_postgres(base / "postgres")

    async def fill() -> None:
        db = await dbm.open_db(postgres.dsn, 10)
        await dbm.seed(db, seed.seed_documents("api-secret", "user-password"))

    run_async(fill)
    try:
        yield Stack(etcd, redis, postgres)
    finally:
        for server in (etcd, redis, postgres):
            server.close()


@dataclass
class CoreProc:
    proc: Proc
    port: int
    era: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=1) as resp:
        return bool(resp.status == 200)


def start_core(
    tmp: Path,
    era: str,
    *,
    redis_url: str,
    db_url: str,
    etcd_url: str | None = None,
    ttl: int = 3,
    port: int | None = None,
    name: str = "core",
) -> CoreProc:
    """Start ``python -m sandbox.simulator.core`` and wait until its HTTP port serves."""
    port = port or free_port()
    argv = [sys.executable, "-m", "sandbox.simulator.core", "--port", str(port), "--era", era]
    argv += ["--redis", redis_url, "--db", db_url, "--data-dir", str(tmp / f"{name}-data")]
    if etcd_url:
        argv += ["--etcd", etcd_url, "--etcd-ttl", str(ttl)]
    else:
        argv += ["--redis-ttl", str(ttl)]
    proc = Proc.start(argv, log_path=tmp / f"{name}.log", name=name, cwd=REPO)
    proc.wait_ready(lambda: _http_ok(f"http://127.0.0.1:{port}/_sandbox/ready"), deadline=20)
    return CoreProc(proc, port, era)


async def get_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as resp:
        return await resp.json()


async def all_drivers_up(http: aiohttp.ClientSession, core: CoreProc) -> bool:
    """Every driver process of the core answers with its modules (what ``/status/loaded`` asks)."""
    async with http.get(f"{core.url}/api/core/v1/ready") as resp:
        if resp.status != 200:
            return False
    loaded = (await get_json(http, f"{core.url}/api/core/v1/status/loaded"))["local"]
    return bool(loaded) and all(isinstance(m, list) and m for m in loaded.values())


async def execute(http: aiohttp.ClientSession, core: CoreProc, mod: str, fn: str, args: Any) -> tuple[int, Any, str]:
    url = f"{core.url}/api/core/v1/command/{mod}/execute?user_id={seed.SUPPORT_USER_ID}"
    async with http.post(url, json={"__exec__": fn, fn: args}) as resp:
        return resp.status, await resp.json(content_type=None), resp.headers.get("Response-Code", "")


def etcd_cores(etcd: backends.EtcdServer) -> dict[str, str]:
    prefix = b"service/core/"
    res = etcd.call(
        "kv/range",
        {"key": base64.b64encode(prefix).decode(), "range_end": base64.b64encode(prefix[:-1] + b"0").decode()},
    )
    return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv["value"]).decode() for kv in res.get("kvs", [])}


# --------------------------------------------------------------------------- one era B core, many checks


@pytest.fixture(scope="module")
def core_b(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CoreProc]:
    """An era B core on the shared etcd, alone in it for the module's tests."""
    core = start_core(
        tmp_path_factory.mktemp("core_b"),
        "B",
        redis_url=stack.redis_url(1),
        db_url=stack.postgres.dsn,
        etcd_url=stack.etcd.url,
    )

    async def wait() -> None:
        async with aiohttp.ClientSession() as http:
            await eventually(lambda: all_drivers_up(http, core), 20, "the core's drivers")

    run_async(wait)
    try:
        yield core
    finally:
        core.proc.terminate()


@pytest.fixture
async def http() -> Any:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield session


@pytest.fixture
async def redis_b(stack: Stack) -> Any:
    r = aioredis.Redis.from_url(stack.redis_url(1), decode_responses=True)
    yield r
    await r.aclose()


def key_of(driver_id: str, era: str = "B") -> str:
    spec = seed.driver_by_id(driver_id)
    return driver_key(era, {"id": spec.id, "file_name": spec.file_name, "commit": "a1b2c3d4e5f6"})


async def driver_status(http: aiohttp.ClientSession, core: CoreProc, driver_id: str) -> dict[str, Any]:
    async with http.get(f"{core.url}/api/core/v1/status/driver", params={"path": key_of(driver_id)}) as resp:
        assert resp.status == 200, await resp.text()
        return dict(await resp.json())


async def test_routes_and_redis_keys(core_b: CoreProc, http: aiohttp.ClientSession, redis_b: aioredis.Redis) -> None:
    async with http.get(f"{core_b.url}/api/core/v1/") as resp:
        assert resp.status == 200, await resp.text()
    version = await get_json(http, f"{core_b.url}/api/core/v1/version")
    assert version["service"] == "core" and version["platform_version"].startswith("2.")
    loaded = await get_json(http, f"{core_b.url}/api/core/v1/status/loaded")
    assert loaded == {
        "local": {
            key_of(DISPLAY): ["mod-display-1", "mod-display-2"],
            key_of(LIGHTING): ["mod-lighting-1"],
            key_of(CAMERA): ["mod-camera-1"],
        },
        "edge": {},
    }
    assert key_of(DISPLAY) == "drivers_sandbox_display_a1b2c3d4e5f6_driver-display"
    status = await get_json(http, f"{core_b.url}/api/core/v1/status")
    assert status["available_repositories"] == ["sandbox-drivers"]
    assert sorted(status["compiled_drivers"]) == sorted(key_of(d) for d in (DISPLAY, LIGHTING, CAMERA))
    assert status["run_count"] == {"local": {"drivers": 3, "modules": 4}, "edge": {}}
    load = (await get_json(http, f"{core_b.url}/api/core/v1/status/load"))["local"]
    assert {"hostname", "cpu_count", "core_cpu", "total_cpu", "memory_total", "memory_usage", "core_memory"} <= set(
        load
    )
    ds = await driver_status(http, core_b, DISPLAY)
    assert ds["running"] is True and ds["module_instances"] == 2 and ds["launch_count"] >= 1
    assert {"percentage_cpu", "memory_total", "memory_usage"} <= set(ds)
    compiled = f"{core_b.url}/api/core/v1/drivers/drivers%2Fsandbox%2Fdisplay.cr/compiled"
    assert await get_json(http, f"{compiled}?commit=a1b2c3d4e5f6&tag={DISPLAY}") is True

    # Redis, as the drivers and core write it (internals §3.1).
    for sys_id, _, _ in seed.SYSTEMS:
        assert await redis_b.hgetall(f"system/{sys_id}") == seed.system_mappings(sys_id)
    meta = json.loads(str(await redis_b.get("interface/mod-display-1")))
    assert meta["interface"] == seed.driver_by_id(DISPLAY).interface
    assert {"functions", "implements", "requirements", "security"} <= set(meta)
    state = await redis_b.hgetall("status/mod-lighting-1")
    assert state["connected"] == "true" and json.loads(state["scene"]) == 1


async def test_execute_200_203_404(core_b: CoreProc, http: aiohttp.ClientSession, redis_b: aioredis.Redis) -> None:
    pubsub = redis_b.pubsub()
    await pubsub.subscribe("status/mod-display-1/input")
    code, body, response_code = await execute(http, core_b, "mod-display-1", "switch_to", ["hdmi2"])
    assert (code, body, response_code) == (200, "hdmi2", "200")
    assert await redis_b.hget("status/mod-display-1", "input") == '"hdmi2"'

    async def published() -> Any:
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        return msg and msg["data"]

    assert await eventually(published, 5, "the status change to be published") == '"hdmi2"'
    await pubsub.aclose()  # type: ignore[no-untyped-call]

    code, body, _ = await execute(http, core_b, "mod-display-1", "status", [])
    assert code == 200 and body["input"] == "hdmi2" and body["connected"] is True

    code, body, response_code = await execute(http, core_b, "mod-display-1", "power", ["not a boolean"])
    assert code == 203 and response_code == "500"
    assert "expected boolean" in body["error"] and isinstance(body["backtrace"], list) and body["backtrace"]
    code, body, _ = await execute(http, core_b, "mod-display-1", "no_such_function", [])
    assert code == 203 and "undefined method" in body["error"]

    code, body, _ = await execute(http, core_b, "mod-nowhere", "status", [])
    assert (code, body) == (404, {"error": "module mod-nowhere not loaded"})


async def test_driver_crash_is_relaunched(core_b: CoreProc, http: aiohttp.ClientSession) -> None:
    before = await driver_status(http, core_b, DISPLAY)
    async with http.post(f"{core_b.url}/_sandbox/driver/crash", json={"driver": DISPLAY}) as resp:
        assert resp.status == 200, await resp.text()

    async def relaunched() -> Any:
        s = await driver_status(http, core_b, DISPLAY)
        return s["running"] and s["launch_count"] == before["launch_count"] + 1 and s

    after = await eventually(relaunched, 10, "the driver to be relaunched")
    assert after["last_exit_code"] == 0  # killed by a signal: Crystal's exit_code is 0
    assert after["module_instances"] == 2
    await eventually(lambda: all_drivers_up(http, core_b), 10, "the relaunched driver to answer")
    code, _, _ = await execute(http, core_b, "mod-display-1", "status", [])
    assert code == 200


async def test_crash_loop_and_500_while_down(core_b: CoreProc, http: aiohttp.ClientSession) -> None:
    before = await driver_status(http, core_b, CAMERA)
    async with http.post(f"{core_b.url}/_sandbox/driver/crash-loop", json={"driver": CAMERA}) as resp:
        assert resp.status == 200

    async def down_500() -> Any:
        code, body, _ = await execute(http, core_b, "mod-camera-1", "preset", [3])
        return code == 500 and body

    body = await eventually(down_500, 10, "an execute on the down driver to answer 500")
    assert "not running" in body["error"]

    async def looping() -> Any:
        s = await driver_status(http, core_b, CAMERA)
        return s["launch_count"] >= before["launch_count"] + 3 and s["last_exit_code"] == 1 and s

    await eventually(looping, 15, "the launch count to keep rising")
    down = await driver_status(http, core_b, CAMERA)
    assert down["module_instances"] == 1

    async with http.post(f"{core_b.url}/_sandbox/driver/heal", json={"driver": CAMERA}) as resp:
        assert resp.status == 200
    await eventually(lambda: all_drivers_up(http, core_b), 10, "the healed driver to answer")
    healed = (await driver_status(http, core_b, CAMERA))["launch_count"]
    deadline = time.monotonic() + 2.0  # a crash-looping process would exit within ~0.5 s of launch
    while time.monotonic() < deadline:
        s = await driver_status(http, core_b, CAMERA)
        assert s["running"] and s["launch_count"] == healed
        await asyncio.sleep(0.2)
    code, body, _ = await execute(http, core_b, "mod-camera-1", "preset", [3])
    assert (code, body) == (200, 3)


async def test_compile_fail_and_heal(core_b: CoreProc, http: aiohttp.ClientSession, stack: Stack) -> None:
    db = await dbm.open_db(stack.postgres.dsn, 10)
    async with http.post(f"{core_b.url}/_sandbox/driver/compile-fail", json={"driver": LIGHTING}) as resp:
        assert resp.status == 200
        assert (await resp.json())["db_updated"] is True
    status = await get_json(http, f"{core_b.url}/api/core/v1/status")
    entry = next(e for e in status["unavailable_drivers"] if e["name"] == "Sandbox Lighting")
    assert entry["reason"].startswith("failed to compile Sandbox Lighting from sandbox-drivers: ")
    assert key_of(LIGHTING) not in status["compiled_drivers"]
    output = (await db.get("driver", LIGHTING) or {})["compilation_output"]
    assert output and "Error" in output
    loaded = await get_json(http, f"{core_b.url}/api/core/v1/status/loaded")
    assert key_of(LIGHTING) not in loaded["local"]
    compiled = f"{core_b.url}/api/core/v1/drivers/drivers%2Fsandbox%2Flighting.cr/compiled?tag={LIGHTING}"
    assert await get_json(http, compiled) is False
    code, body, _ = await execute(http, core_b, "mod-lighting-1", "trigger", [1, 2])
    assert (code, body) == (404, {"error": "module mod-lighting-1 not loaded"})

    async with http.post(f"{core_b.url}/_sandbox/driver/heal", json={"driver": LIGHTING}) as resp:
        assert resp.status == 200
    assert (await db.get("driver", LIGHTING) or {})["compilation_output"] is None
    await eventually(lambda: all_drivers_up(http, core_b), 10, "the recompiled driver to run")
    code, body, _ = await execute(http, core_b, "mod-lighting-1", "trigger", [1, 2])
    assert (code, body) == (200, 2)
    status = await get_json(http, f"{core_b.url}/api/core/v1/status")
    assert any(e["name"] == "Sandbox Lighting" for e in status["unavailable_drivers"])  # an event log
    assert key_of(LIGHTING) in status["compiled_drivers"]


async def test_module_disconnect_sets_redis(
    core_b: CoreProc, http: aiohttp.ClientSession, redis_b: aioredis.Redis
) -> None:
    async with http.post(f"{core_b.url}/_sandbox/module/disconnect", json={"module": "mod-display-2"}) as resp:
        assert resp.status == 200
    assert await redis_b.hget("status/mod-display-2", "connected") == "false"
    assert await redis_b.hget("status/mod-display-1", "connected") == "true"
    # Kept across a driver relaunch, as a device that stays unreachable would be.
    before = (await driver_status(http, core_b, DISPLAY))["launch_count"]
    async with http.post(f"{core_b.url}/_sandbox/driver/crash", json={"driver": DISPLAY}) as resp:
        assert resp.status == 200

    async def relaunched() -> bool:
        s = await driver_status(http, core_b, DISPLAY)
        return bool(s["running"] and s["launch_count"] > before)

    await eventually(relaunched, 10, "the relaunch")
    await eventually(lambda: all_drivers_up(http, core_b), 10, "the relaunched driver to answer")
    assert await redis_b.hget("status/mod-display-2", "connected") == "false"
    async with http.post(f"{core_b.url}/_sandbox/module/connect", json={"module": "mod-display-2"}) as resp:
        assert resp.status == 200
    assert await redis_b.hget("status/mod-display-2", "connected") == "true"


# --------------------------------------------------------------------------- registration lifecycles


async def test_etcd_registration_sigkill_and_sigterm(tmp_path: Path, stack: Stack, http: aiohttp.ClientSession) -> None:
    """A core registers under a kept-alive lease; SIGKILL leaves the key until the TTL, SIGTERM removes it."""
    etcd = await asyncio.to_thread(backends.start_etcd, tmp_path / "etcd")
    try:
        core = start_core(tmp_path, "B", redis_url=stack.redis_url(2), db_url=stack.postgres.dsn, etcd_url=etcd.url)

        async def registered() -> Any:
            return {k: v for k, v in etcd_cores(etcd).items() if v == core.url}

        keys = await eventually(registered, 10, "the core's etcd key")
        (key,) = keys
        res = etcd.call("kv/range", {"key": base64.b64encode(key.encode()).decode()})
        lease = res["kvs"][0]["lease"]
        ttl = etcd.call("kv/lease/timetolive", {"ID": lease})
        assert int(ttl["grantedTTL"]) == 3
        await eventually(lambda: all_drivers_up(http, core), 20, "the drivers")
        deadline = time.monotonic() + 4.0  # longer than the TTL: kept alive
        while time.monotonic() < deadline:
            assert key in etcd_cores(etcd)
            await asyncio.sleep(0.25)

        await asyncio.to_thread(core.proc.kill)
        killed = time.monotonic()
        assert key in etcd_cores(etcd)

        async def expired() -> bool:
            return key not in etcd_cores(etcd)

        await eventually(expired, 8, "the lease to expire")
        assert time.monotonic() - killed <= 6

        core2 = start_core(
            tmp_path, "B", redis_url=stack.redis_url(2), db_url=stack.postgres.dsn, etcd_url=etcd.url, name="core2"
        )

        async def registered2() -> Any:
            return [k for k, v in etcd_cores(etcd).items() if v == core2.url]

        await eventually(registered2, 10, "the second core's etcd key")
        assert await asyncio.to_thread(core2.proc.terminate) == 0
        assert etcd_cores(etcd) == {}  # deregistered before exiting
    finally:
        await asyncio.to_thread(etcd.close)


async def test_era_c_stale_entry_after_sigkill(tmp_path: Path, stack: Stack) -> None:
    """Era C: SIGKILL leaves the lookup entry (stale) after the node key expires; the next core prunes
    it; SIGTERM removes the entry and the key (internals §1.2)."""
    url = stack.redis_url(3)
    r = aioredis.Redis.from_url(url, decode_responses=True)
    await r.flushdb()
    lookup = "{service_core}_lookup"
    try:
        core = start_core(tmp_path, "C", redis_url=url, db_url=stack.postgres.dsn, ttl=2)

        async def entry_of(c: CoreProc) -> Any:
            return next((k for k, v in (await r.hgetall(lookup)).items() if v == c.url), None)

        node_key = await eventually(lambda: entry_of(core), 10, "the lookup entry")
        assert json.loads(str(await r.get(node_key)))["u"] == core.url
        await asyncio.to_thread(core.proc.kill)

        async def key_gone() -> bool:
            return not await r.exists(node_key)

        await eventually(key_gone, 6, "the node key to expire")
        assert await r.hgetall(lookup) == {node_key: core.url}  # stale: nobody pruned it

        core2 = start_core(tmp_path, "C", redis_url=url, db_url=stack.postgres.dsn, ttl=2, name="core2")
        key2 = await eventually(lambda: entry_of(core2), 10, "the second core's entry")

        async def pruned() -> bool:
            return await r.hgetall(lookup) == {key2: core2.url}

        await eventually(pruned, 5, "the stale entry to be pruned")
        assert await asyncio.to_thread(core2.proc.terminate) == 0
        assert await r.hgetall(lookup) == {}
        assert not await r.exists(key2)
    finally:
        await r.aclose()


async def test_core_waits_for_etcd(tmp_path: Path, stack: Stack, http: aiohttp.ClientSession) -> None:
    """With etcd unreachable a core does not join the cluster nor launch drivers; it does once etcd is up."""
    etcd_port = free_port()
    core = start_core(
        tmp_path,
        "B",
        redis_url=stack.redis_url(4),
        db_url=stack.postgres.dsn,
        etcd_url=f"http://127.0.0.1:{etcd_port}",
    )
    try:
        async with http.get(f"{core.url}/api/core/v1/ready") as resp:
            assert resp.status == 503
        async with http.get(f"{core.url}/api/core/v1/") as resp:
            assert resp.status == 500
            assert "etcd" in (await resp.json())["failed"]
        assert (await get_json(http, f"{core.url}/api/core/v1/status/loaded"))["local"] == {}
        assert (await get_json(http, f"{core.url}/_sandbox/ready"))["registered"] is False

        etcd = await asyncio.to_thread(backends.start_etcd, tmp_path / "etcd", port=etcd_port)
        try:
            await eventually(lambda: all_drivers_up(http, core), 20, "the drivers after etcd came up")
            assert list(etcd_cores(etcd).values()) == [core.url]
            async with http.get(f"{core.url}/api/core/v1/") as resp:
                assert resp.status == 200
        finally:
            await asyncio.to_thread(core.proc.terminate)
            await asyncio.to_thread(etcd.close)
    finally:
        await asyncio.to_thread(core.proc.terminate)


# --------------------------------------------------------------------------- era A: RethinkDB stand-in


@pytest.fixture(scope="module")
def rethink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The RethinkDB stand-in as its own process; yields the era A config DB URL (seeded)."""
    tmp = tmp_path_factory.mktemp("rethinkdb")
    port = free_port()
    argv = [sys.executable, "-m", "sandbox.standins.rethinkdb", "--port", str(port), "--data-dir", str(tmp / "data")]
    proc = Proc.start([*argv, "--admin-password", "rdb-pass"], log_path=tmp / "rethinkdb.log", cwd=REPO)
    proc.wait_ready(port, deadline=20)
    url = f"rethinkdb://admin:rdb-pass@127.0.0.1:{port}/place_development"

    async def fill() -> None:
        await dbm.seed(await dbm.open_db(url, 10), seed.seed_documents("api-secret", "user-password"))

    run_async(fill)
    try:
        yield url
    finally:
        proc.terminate()


@pytest.mark.parametrize("backend", ["rethinkdb", "postgres"])
async def test_config_db(backend: str, request: pytest.FixtureRequest) -> None:
    """db.py answers the same on both backends, runs PlaceOS's health check, fails promptly."""
    url = (
        request.getfixturevalue("rethink") if backend == "rethinkdb" else request.getfixturevalue("stack").postgres.dsn
    )
    db = await dbm.open_db(url, 5)
    await dbm.seed(db, {"zone": [{"id": "zone-dbtest", "name": "DB test", "tags": ["x"]}]})  # idempotent
    assert (await db.get("driver", DISPLAY) or {})["file_name"] == "drivers/sandbox/display.cr"
    assert await db.get("driver", "driver-none") is None
    assert [a["id"] for a in await db.find_by("authority", "domain", "localhost")] == [seed.AUTHORITY_ID]
    assert [m["id"] for m in await db.find_by("mod", "driver_id", DISPLAY)] == ["mod-display-1", "mod-display-2"]
    assert await db.count("mod") == len(seed.MODULES)
    assert len(await db.all("mod", limit=2)) == 2
    await db.upsert("zone", {"id": "zone-dbtest", "name": "DB test 2", "tags": []})
    await db.update("zone", "zone-dbtest", {"name": "DB test 3"})
    assert await db.get("zone", "zone-dbtest") == {"id": "zone-dbtest", "name": "DB test 3", "tags": []}
    await db.health()
    wrong = await dbm.open_db(url.replace(url.split("@")[0].split(":")[-1], "not-the-password"), 5)
    with pytest.raises(dbm.DBError) as err:
        await wrong.health()
    assert "not-the-password" not in str(err.value) and "***" in str(err.value)
    down = await dbm.open_db(url.replace(str(urllib.parse.urlsplit(url).port), str(free_port())), 5)
    start = time.monotonic()
    with pytest.raises(dbm.DBError):
        await down.get("mod", "mod-display-1")
    assert time.monotonic() - start < 5


async def test_era_a_core(tmp_path: Path, rethink: str, stack: Stack, http: aiohttp.ClientSession) -> None:
    """Era A: modules from RethinkDB, compile failure recorded in RethinkDB's ``driver`` table."""
    etcd = await asyncio.to_thread(backends.start_etcd, tmp_path / "etcd")
    core = start_core(tmp_path, "A", redis_url=stack.redis_url(5), db_url=rethink, etcd_url=etcd.url)
    try:
        await eventually(lambda: all_drivers_up(http, core), 20, "the era A core's drivers")
        async with http.get(f"{core.url}/api/core/v1/") as resp:
            assert resp.status == 200, await resp.text()
        assert (await get_json(http, f"{core.url}/api/core/v1/version"))["platform_version"].startswith("1.")
        assert (await execute(http, core, "mod-lighting-1", "trigger", [1, 4]))[:2] == (200, 4)
        async with http.post(f"{core.url}/_sandbox/driver/compile-fail", json={"driver": CAMERA}) as resp:
            assert (await resp.json())["db_updated"] is True
        db = await dbm.open_db(rethink, 5)
        assert (await db.get("driver", CAMERA) or {})["compilation_output"]
        async with http.post(f"{core.url}/_sandbox/driver/heal", json={"driver": CAMERA}) as resp:
            assert resp.status == 200
        assert (await db.get("driver", CAMERA) or {})["compilation_output"] is None
    finally:
        await asyncio.to_thread(core.proc.terminate)
        await asyncio.to_thread(etcd.close)


# --------------------------------------------------------------------------- search-ingest


async def es_count(http: aiohttp.ClientSession, es: str, index: str) -> int:
    async with http.get(f"{es}/{index}/_count") as resp:
        return int((await resp.json())["count"]) if resp.status == 200 else -1


async def test_search_ingest_mirrors_pauses_and_checks_health(
    tmp_path: Path, stack: Stack, http: aiohttp.ClientSession
) -> None:
    es_port, si_port = free_port(), free_port()
    es_proc = Proc.start(
        [
            sys.executable,
            "-m",
            "sandbox.standins.elasticsearch",
            "--port",
            str(es_port),
            "--data-dir",
            str(tmp_path / "es"),
        ],
        log_path=tmp_path / "es.log",
        cwd=REPO,
    )
    es = f"http://127.0.0.1:{es_port}"
    si = f"http://127.0.0.1:{si_port}"
    si_proc: Proc | None = None
    try:
        es_proc.wait_ready(lambda: _http_ok(f"{es}/_sandbox/ready"), deadline=20)
        argv = [sys.executable, "-m", "sandbox.simulator.search_ingest", "--port", str(si_port)]
        argv += ["--db", stack.postgres.dsn, "--es", es, "--interval", "0.5"]
        si_proc = Proc.start(argv, log_path=tmp_path / "search-ingest.log", cwd=REPO)
        si_proc.wait_ready(lambda: _http_ok(f"{si}/_sandbox/ready"), deadline=20)
        await eventually(lambda: _ok(http, f"{si}/api/search-ingest/v1/ready"), 10, "search-ingest to load")
        db = await dbm.open_db(stack.postgres.dsn, 5)
        for table in seed.TABLES:
            assert await es_count(http, es, table) == await db.count(table), table
        async with http.get(f"{si}/api/search-ingest/v1/") as resp:
            assert resp.status == 200

        # Paused: a new row stays out of the index; resumed: it arrives.
        async with http.post(f"{si}/_sandbox/pause") as resp:
            assert resp.status == 200
        zones = await db.count("zone")
        await db.upsert("zone", {"id": "zone-ingest-test", "name": "Ingest test", "tags": []})
        deadline = time.monotonic() + 1.5  # three mirroring intervals
        while time.monotonic() < deadline:
            assert await es_count(http, es, "zone") == zones
            await asyncio.sleep(0.2)
        async with http.post(f"{si}/_sandbox/resume") as resp:
            assert resp.status == 200

        async def caught_up() -> bool:
            return await es_count(http, es, "zone") == zones + 1

        await eventually(caught_up, 5, "the index to catch up")

        # Elasticsearch red, then gone: the health route fails.
        async with http.post(f"{es}/_sandbox/health", json={"status": "red"}) as resp:
            assert resp.status == 200
        async with http.get(f"{si}/api/search-ingest/v1/") as resp:
            assert resp.status == 500 and "elasticsearch" in (await resp.json())["failed"]
        async with http.post(f"{es}/_sandbox/health", json={"status": "green"}) as resp:
            assert resp.status == 200
        async with http.get(f"{si}/api/search-ingest/v1/") as resp:
            assert resp.status == 200
        await asyncio.to_thread(es_proc.kill)
        async with http.get(f"{si}/api/search-ingest/v1/") as resp:
            assert resp.status == 500
    finally:
        if si_proc is not None:
            assert await asyncio.to_thread(si_proc.terminate) == 0
        await asyncio.to_thread(es_proc.terminate)


async def _ok(http: aiohttp.ClientSession, url: str) -> bool:
    async with http.get(url) as resp:
        return resp.status == 200


async def test_redis_restarted_empty_is_refilled(tmp_path: Path, stack: Stack, http: aiohttp.ClientSession) -> None:
    """Era C with a Redis that is killed and comes back empty (no persistence): the core registers
    again, the drivers rewrite interface/status, core rewrites ``system/<sys>`` (so a healed sandbox
    is healthy again), and executes keep working throughout."""
    server = await asyncio.to_thread(backends.start_redis, tmp_path / "redis")
    r = aioredis.Redis.from_url(server.url, decode_responses=True)
    core = start_core(tmp_path, "C", redis_url=server.url, db_url=stack.postgres.dsn, ttl=2)
    try:
        await eventually(lambda: all_drivers_up(http, core), 20, "the drivers")
        assert await r.exists("interface/mod-camera-1", "system/sys-room-2") == 2
        await asyncio.to_thread(server.proc.kill)
        async with http.get(f"{core.url}/api/core/v1/") as resp:
            assert resp.status == 500 and "redis" in (await resp.json())["failed"]
        assert (await execute(http, core, "mod-camera-1", "preset", [5]))[:2] == (200, 5)
        await asyncio.to_thread(server.restart)

        async def refilled() -> bool:
            keys = ("interface/mod-camera-1", "status/mod-camera-1", "system/sys-room-2", "{service_core}_lookup")
            return bool(await r.exists(*keys) == len(keys))

        await eventually(refilled, 12, "Redis to be refilled")
        assert json.loads(await r.hget("status/mod-camera-1", "preset") or "null") == 5  # the live value
        assert list((await r.hgetall("{service_core}_lookup")).values()) == [core.url]
        async with http.get(f"{core.url}/api/core/v1/") as resp:
            assert resp.status == 200
    finally:
        await asyncio.to_thread(core.proc.terminate)
        await r.aclose()
        await asyncio.to_thread(server.close)
