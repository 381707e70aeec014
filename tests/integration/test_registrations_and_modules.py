"""Core registrations (etcd leases, era-C Redis keys) and module counts, against the real servers."""

from __future__ import annotations

import base64
import json
from typing import Any

import redis
from support import RunningExporter, settings_for, wait_for

from sandbox.backends import EtcdServer, RedisServer


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def register_core(etcd: EtcdServer, ulid: str, ttl: int) -> str:
    """A core registration as hound-dog writes it: service/core/<ULID> under a lease (internals §1.1)."""
    lease = etcd.call("lease/grant", {"TTL": ttl})["ID"]
    etcd.call("kv/put", {"key": b64(f"service/core/{ulid}"), "value": b64("http://127.0.0.1:3000"), "lease": lease})
    return str(lease)


async def test_etcd_live_cores_follow_leases(etcd: EtcdServer) -> None:
    cluster: dict[str, Any] = {"era": "A", "etcd": {"host": etcd.host, "port": etcd.port}, "redis": {"enabled": False}}
    async with RunningExporter(settings_for(cluster)) as exp:
        await exp.wait_reason("core_discovery", "no_core_instances")
        assert await exp.value("placeos_core_instances", state="live") == 0
        register_core(etcd, "01HCOREA", ttl=300)
        register_core(etcd, "01HCOREB", ttl=2)  # never kept alive: expires like a dead core's lease

        async def live_is(n: int) -> bool:
            return await exp.value("placeos_core_instances", state="live") == n

        await wait_for(lambda: live_is(2), 10, "two live cores")
        assert await exp.reason("core_discovery") == "ok"
        await wait_for(lambda: live_is(1), 15, "the unrenewed lease to expire")
        assert await exp.value("placeos_etcd_has_leader") == 1


def seed_modules(server: RedisServer, connected: int, disconnected: int, unknown: int) -> None:
    """status/<module> hashes as drivers write them: JSON-encoded values (internals §3.1)."""
    conn = redis.Redis.from_url(server.url)
    pipe = conn.pipeline(transaction=False)
    n = 0
    for state, count in (("true", connected), ("false", disconnected), (None, unknown)):
        for _ in range(count):
            fields = {"power": json.dumps(True)} | ({"connected": state} if state else {})
            pipe.hset(f"status/mod-{n:06d}", mapping=fields)
            n += 1
    pipe.hset("status/trig-000001", mapping={"state": json.dumps({"triggered": False})})  # not a module
    pipe.execute()
    conn.close()


async def test_redis_counts_thousands_of_modules(redis_server: RedisServer) -> None:
    seed_modules(redis_server, connected=3000, disconnected=250, unknown=40)
    async with RunningExporter(settings_for({"era": "C", "redis": {"url": redis_server.url}})) as exp:
        await exp.wait_reason("redis", "ok")
        assert await exp.value("placeos_modules", state="connected") == 3000
        assert await exp.value("placeos_modules", state="disconnected") == 250
        assert await exp.value("placeos_modules", state="unknown") == 40
        assert await exp.value("placeos_modules_scan_truncated") == 0


async def test_redis_module_scan_is_capped(redis_server: RedisServer) -> None:
    seed_modules(redis_server, connected=2500, disconnected=0, unknown=0)
    cluster = {"era": "C", "redis": {"url": redis_server.url, "module_scan_cap": 1000}}
    async with RunningExporter(settings_for(cluster)) as exp:
        await exp.wait_reason("redis", "ok")
        counted = await exp.value("placeos_modules", state="connected")
        assert counted is not None and 1000 <= counted < 2500
        assert await exp.value("placeos_modules_scan_truncated") == 1


async def test_era_c_stale_registration(redis_server: RedisServer) -> None:
    """A core that dies without deregistering leaves its lookup entry (internals §1.2)."""
    conn = redis.Redis.from_url(redis_server.url)
    for ulid, ttl in (("01HLIVE", 300), ("01HDEAD", 2)):
        node = f"{{service_core}}.{ulid}"
        conn.hset("{service_core}_lookup", node, f"http://core-{ulid}:3000")
        conn.set(node, json.dumps({"u": f"http://core-{ulid}:3000", "r": True, "v": "x"}), ex=ttl)
    conn.close()
    async with RunningExporter(settings_for({"era": "C", "redis": {"url": redis_server.url}})) as exp:

        async def stale() -> bool:
            return await exp.value("placeos_core_instances", state="stale") == 1

        await wait_for(stale, 15, "the dead core's key to expire")
        assert await exp.value("placeos_core_instances", state="live") == 1
        assert await exp.reason("core_discovery") == "core_unreachable"
