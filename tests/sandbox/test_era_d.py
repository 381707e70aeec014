"""Era D end to end (placeos-2026.md): PostgreSQL search without Elasticsearch or search-ingest, the era-D
signal on the wire, and the failures operators meet now: pub/sub lost while Redis answers PING, modules
not loaded, and an unreachable build service.

One era-D sandbox serves the whole module (short TTLs); each test breaks a part, checks the symptom over
plain HTTP, WebSocket or Redis, heals it, and the ``healthy_after`` fixture waits until the user path
works again. Waits are polls with deadlines. The query translation is tested without processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
from support import poll

from sandbox.cluster import Sandbox, SandboxError, SandboxInputError, http_json
from sandbox.procs import pid_alive
from sandbox.simulator import fts, seed
from sandbox.simulator.db import PostgresConfigDB, open_db

API = "/api/engine/v2"
DEADLINE = 30.0
NOTIFY_DEADLINE = 3 * seed.TICK_INTERVAL  # a ticking status must reach a subscriber within this
PROBE_MODULE_ID = seed.system_mappings(seed.PROBE_SYSTEM)["Display/1"]
LIGHTING_ID = seed.system_mappings(seed.PROBE_SYSTEM)["Lighting/1"]


# ----------------------------------------------------------------------------------------- helpers


def health(sb: Sandbox) -> tuple[int, Any]:
    """rest-api's unauthenticated health route, as a JSON client asks it."""
    return http_json("GET", f"{sb.api_url}{API}/", headers={"Accept": "application/json"})


def get_with_headers(sb: Sandbox, path: str) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(
        f"{sb.api_url}{API}{path}", headers={"X-API-Key": sb.api_key, "Host": seed.AUTHORITY_DOMAIN}
    )
    with urllib.request.urlopen(req, timeout=15) as resp:
        return resp.status, dict(resp.headers), resp.read()


def execute(sb: Sandbox) -> tuple[int, Any]:
    return sb.api("POST", sb.probe_execute_path, [])


def loaded_modules(sb: Sandbox) -> dict[str, list[str]]:
    """Driver key -> modules, over every core's `GET /cluster/<id>` (internals §11.1)."""
    status, cores = sb.api("GET", "/cluster")
    assert status == 200 and cores, cores
    out: dict[str, list[str]] = {}
    for core in cores:
        status, entries = sb.api("GET", f"/cluster/{core['id']}?include_status=true")
        assert status == 200, entries
        for entry in entries:
            out.setdefault(entry["driver"], []).extend(entry["local"]["modules"])
    return out


class Ws:
    """A `/systems/control` socket with a reader that sorts notifies from the rest."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def bind(self, rid: int, mod: str, name: str) -> Any:
        """Bind: a success, and a first notify (the value rest-api read with an HGET); that value."""
        await self.ws.send_json({"id": rid, "cmd": "bind", "sys": seed.PROBE_SYSTEM, "mod": mod, "name": name})
        success, value = False, None
        while not success or value is None:
            msg = await self.ws.receive_json(timeout=10)
            if msg.get("id") == rid and msg.get("type") == "success":
                success = True
            elif msg.get("id") == rid and msg.get("type") == "notify" and value is None:
                value = msg["value"]
        return value

    async def notify_within(
        self, rid: int, deadline: float, accept: Callable[[Any], bool] = lambda value: True
    ) -> dict[str, Any] | None:
        """The next notify of binding `rid` whose value `accept`s, or None at the deadline."""
        end = time.monotonic() + deadline
        while (left := end - time.monotonic()) > 0:
            try:
                msg = await self.ws.receive_json(timeout=left)
            except TimeoutError:
                return None
            if msg.get("type") == "notify" and msg.get("id") == rid and accept(msg.get("value")):
                return dict(msg)
        return None


# ----------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def sandbox_d(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    sb = Sandbox("D", tmp_path_factory.mktemp("era-d"), etcd_ttl=3, redis_ttl=4)
    sb.start()
    try:
        yield sb
    finally:
        pids = sb.pids()
        sb.stop()
        assert not [pid for pid in pids if pid_alive(pid)], "processes left behind after stop"


@pytest.fixture
def healthy_after(sandbox_d: Sandbox) -> Iterator[Sandbox]:
    """After a test: heal whatever it left broken and wait until the user path works again."""
    yield sandbox_d
    for name, part in sandbox_d.status()["parts"].items():
        if str(part["state"]).startswith("broken:") or part["state"] == "stopped":
            with contextlib.suppress(SandboxError):
                sandbox_d.heal("core" if name.startswith("core") else name)
    sandbox_d.wait_working(DEADLINE)


# ----------------------------------------------------------------------------------------- up, lists, signal


def test_up_without_elasticsearch_or_search_ingest(healthy_after: Sandbox) -> None:
    sb = healthy_after
    assert sb.timings["up"] < 20.0, sb.timings
    parts = sb.status()["parts"]
    assert set(parts) == {"postgres", "redis", "build-service", "core", "rest-api", "triggers", "driver", "module"}
    assert all(p["state"] == "running" for p in parts.values()), parts
    for pid in sb.pids():  # no process of an Elasticsearch stand-in or search-ingest at all
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            assert "elasticsearch" not in cmdline and "search_ingest" not in cmdline, cmdline
    env = sb.exporter_env()
    assert "PG_DATABASE_URL" in env and not [k for k in env if k.startswith(("ELASTIC_", "ETCD_"))], sorted(env)
    assert "elasticsearch" not in sb.exporter_cluster()
    assert health(sb) == (200, None)
    for part, word in (("elasticsearch", "Elasticsearch"), ("search-ingest", "search-ingest")):
        with pytest.raises(SandboxInputError, match=f"not part of era D.*no {word}") as info:
            sb.break_part(part, "kill")
        assert "\n" not in str(info.value)
    with pytest.raises(SandboxInputError, match="etcd is not part of era D"):
        sb.break_part("etcd", "kill")
    with pytest.raises(SandboxInputError, match="era D does not use etcd"):
        sb.break_part("rest-api", "etcd-unreachable")


def test_lists_come_from_postgres_full_text_search(healthy_after: Sandbox) -> None:
    sb = healthy_after
    status, headers, _ = get_with_headers(sb, "/systems")
    assert status == 200 and (headers["X-Total-Count"], headers["Content-Range"]) == ("2", "sys 0-2/2")
    assert sb.api("GET", "/systems?q=2")[1][0]["id"] == "sys-room-2"
    assert [s["id"] for s in sb.api("GET", "/systems?q=meeting")[1]] == ["sys-room-1", "sys-room-2"]
    assert [s["id"] for s in sb.api("GET", "/systems?q=meet")[1]] == ["sys-room-1", "sys-room-2"]  # last: prefix
    assert sb.api("GET", "/systems?q=sys-room-1@sandbox.local")[1][0]["id"] == "sys-room-1"  # email kept whole
    assert sb.api("GET", "/systems?q=nothing-like-this") == (200, [])
    # modules also match their driver's text (rest-api modules.cr EXISTS join): "lighting" is the driver
    assert [m["id"] for m in sb.api("GET", "/modules?q=Lighting")[1]] == [LIGHTING_ID]
    assert [d["id"] for d in sb.api("GET", "/drivers?q=camera")[1]] == ["driver-camera"]

    # No second store and no index lag: a row written to PostgreSQL is found by the next search.
    async def insert() -> None:
        db = await open_db(sb._db_url, 5.0)
        await db.upsert("sys", {"id": "sys-lobby", "name": "Lobby Kiosk", "modules": [], "zones": []})

    asyncio.run(insert())
    try:
        assert [s["id"] for s in sb.api("GET", "/systems?q=kiosk")[1]] == ["sys-lobby"]
    finally:

        async def remove() -> None:
            db = await open_db(sb._db_url, 5.0)
            assert isinstance(db, PostgresConfigDB)
            await db.run("cleanup", lambda c: c.execute("delete from sys where id = 'sys-lobby'"))

        asyncio.run(remove())


def test_the_era_d_signal(healthy_after: Sandbox) -> None:
    """rest-api #445 (51faa1a) moved listing to `paginate_sql`, whose Link offset is the range end."""
    sb = healthy_after
    status, headers, body = get_with_headers(sb, "/systems?limit=0")
    assert (status, body) == (200, b"[]")
    assert headers["Link"] == f'<{API}/systems?limit=0&offset=0>; rel="next"', headers  # A-C: offset=1
    status, versions = sb.api("GET", "/cluster/versions")
    assert status == 200 and {v["service"] for v in versions} == {"core", "rest-api", "triggers"}, versions
    assert sb.api("GET", "/version") == (
        200,
        {
            "service": "rest-api",
            "commit": "ee8db8e",
            "version": "2.0.0",
            "build_time": "Thu Aug 13 04:12:55 UTC 2026",
            "platform_version": "DEV",
        },
    )
    assert sb.api("POST", "/reindex?backfill=true") == (200, None)  # deprecated no-ops
    assert sb.api("POST", "/backfill") == (200, None)


def test_health_is_redis_and_postgres(healthy_after: Sandbox) -> None:
    sb = healthy_after
    for part in ("postgres", "redis"):
        sb.break_part(part, "kill")
        assert health(sb) == (500, {}), part
        if part == "postgres":
            assert sb.api("GET", "/systems?q=room")[0] == 401  # the API key lookup needs the database too
        sb.heal(part)
        poll(lambda: health(sb) == (200, None), DEADLINE, f"health 200 once {part} is back")
    sb.break_part("build-service", "kill")  # not a dependency of the health route
    assert health(sb) == (200, None)


# ----------------------------------------------------------------------------------------- pub/sub


async def test_redis_pubsub_drop_binds_work_but_changes_stop(healthy_after: Sandbox) -> None:
    sb = healthy_after
    channel = f"status/{PROBE_MODULE_ID}/{seed.TICK_STATUS}"
    headers = {"X-API-Key": sb.api_key, "Host": seed.AUTHORITY_DOMAIN}
    with redis.Redis.from_url(sb._redis_url, socket_timeout=5) as r:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(f"{sb.api_url}{API}/systems/control", headers=headers) as socket,
        ):
            ws = Ws(socket)
            first = await ws.bind(1, "Display", seed.TICK_STATUS)
            assert await ws.notify_within(1, NOTIFY_DEADLINE, lambda v: v > first), "the heartbeat ticks"
            assert dict(r.pubsub_numsub(channel))[channel.encode()] == 1

            message = sb.break_part("redis", "pubsub-drop")
            dropped_ms = time.time() * 1000  # ticks set from now on must not arrive
            assert "CLIENT KILL TYPE pubsub" in message
            assert sb.status()["parts"]["redis"]["state"] == "broken:pubsub-drop"
            assert r.ping() is True  # Redis is up and answers
            assert dict(r.pubsub_numsub(channel))[channel.encode()] == 0  # nobody subscribed any more
            late = await ws.notify_within(1, NOTIFY_DEADLINE, lambda v: v > dropped_ms)
            assert late is None, "no change reaches the bound socket"
            assert int(r.hget(f"status/{PROBE_MODULE_ID}", seed.TICK_STATUS) or 0) > dropped_ms  # it did change
            # A new bind still succeeds, with its first value (an HGET), and then hears nothing either.
            value = await ws.bind(2, "Display", "power")
            status, result = sb.api("POST", f"/systems/{seed.PROBE_SYSTEM}/Display_1/power", [not value])
            assert (status, result) == (200, not value)  # execute works: the change is in Redis...
            assert sb.api("GET", f"/systems/{seed.PROBE_SYSTEM}/Display_1/power") == (200, not value)
            assert await ws.notify_within(2, NOTIFY_DEADLINE) is None  # ...but not on the socket

            assert "subscribed to every bound channel again" in sb.heal("redis")
            assert dict(r.pubsub_numsub(channel))[channel.encode()] == 1
            assert await ws.notify_within(1, NOTIFY_DEADLINE), "changes reach the socket again"
            sb.api("POST", f"/systems/{seed.PROBE_SYSTEM}/Display_1/power", [value])
            assert await ws.notify_within(2, DEADLINE, lambda v: v == value) is not None


# ----------------------------------------------------------------------------------------- modules, build


def test_core_modules_not_loaded(healthy_after: Sandbox) -> None:
    sb = healthy_after
    display = next(k for k in loaded_modules(sb) if k.startswith("drivers_sandbox_display_"))
    message = sb.break_part("core", "modules-not-loaded")
    assert PROBE_MODULE_ID in message and LIGHTING_ID in message
    loaded = loaded_modules(sb)
    assert loaded[display] == ["mod-display-2"], loaded  # the driver runs, without the probe system's module
    assert not [k for k in loaded if k.startswith("drivers_sandbox_lighting_")], loaded  # no module: no driver
    status, body = sb.api("GET", f"/systems/{seed.PROBE_SYSTEM}")
    assert status == 200 and set(body["modules"]) == {PROBE_MODULE_ID, LIGHTING_ID}  # what the system expects
    # Era D's core (>= 37aab5c) loads a running module on execute, so the probe heals its own module...
    assert execute(sb)[0] == 200
    loaded = loaded_modules(sb)
    assert sorted(loaded[display]) == [PROBE_MODULE_ID, "mod-display-2"], loaded
    assert not [k for k in loaded if k.startswith("drivers_sandbox_lighting_")], loaded  # ...not the others
    assert "modules reloaded" in sb.heal("core")
    assert [k for k in loaded_modules(sb) if k.startswith("drivers_sandbox_lighting_")]


def test_build_service_kill_stop_heal(healthy_after: Sandbox) -> None:
    sb = healthy_after
    assert sb.api("GET", "/build/monitor") == (200, [])
    status, jobs = sb.api("GET", "/build/monitor?state=done")
    assert status == 200 and {j["driver"] for j in jobs} == {d.file_name for d in seed.DRIVERS}, jobs
    assert set(jobs[0]) == {"state", "id", "message", "driver", "repo", "branch", "commit", "timestamp"}
    recompile = "/drivers/driver-display/recompile"
    assert sb.api("POST", recompile) == (200, "OK")

    sb.break_part("build-service", "kill")
    status, text = sb.api("GET", "/build/monitor")
    assert status == 500 and text.startswith("request to 127.0.0.1:"), text
    assert "/api/core/v1/build/monitor?state=pending failed with Call to Build service endpoint failed" in text
    assert text.endswith(": Connection refused"), text
    status, text = sb.api("POST", recompile)
    assert status == 500 and "/recompile?commit=a1b2c3d4e5f6&repository=sandbox-drivers&tag=driver-display" in text
    assert "failed with Error connecting to '127.0.0.1:" in text, text
    assert execute(sb)[0] == 200  # running drivers are not affected
    sb.heal("build-service")
    assert sb.api("GET", "/build/monitor")[0] == 200

    sb.break_part("build-service", "stop")
    status, text = sb.api("GET", "/build/monitor", timeout=60)
    assert (status, text.partition("/api/core/v1/build/monitor?state=pending failed with ")[2]) == (
        500,
        "Call to Build service endpoint failed with error  Read timed out",
    )
    sb.heal("build-service")
    assert sb.api("POST", recompile) == (200, "OK")


# ----------------------------------------------------------------------------------------- q -> tsquery


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        (None, None),
        ("", None),
        ("*", None),
        ("room", "room:*"),
        ("meeting room", "meeting | room:*"),
        ("tags:(+level AND +building)", "level | building:*"),
        ("cam.reeves@place.tech", "'cam.reeves@place.tech':*"),
        ("a@b.com display", "'a@b.com' | display:*"),
        ("it's; DROP TABLE sys --", "it | s | DROP | TABLE | sys:*"),
        (" ".join(f"w{i}" for i in range(20)), " | ".join(f"w{i}" for i in range(15)) + " | w15:*"),
    ],
)
def test_tsquery_follows_rest_api_text_search(q: str | None, expected: str | None) -> None:
    assert fts.tsquery(q) == expected
