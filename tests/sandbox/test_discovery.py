"""sandbox.simulator.discovery against real etcd and Redis: leases, keep-alive, stale entries, hashing.

Facts checked come from internals §1.1-§1.3. Waits are polls with deadlines.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from sandbox import backends
from sandbox.simulator.discovery import (
    DiscoveryError,
    EtcdDiscovery,
    RedisDiscovery,
    make_discovery,
    murmur3_h1,
    murmur3_x64_128,
    new_ulid,
    rendezvous,
)


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` at the deadline."""
    end = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < end:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


# --------------------------------------------------------------------------- MurmurHash3, rendezvous

# MurmurHash3_x64_128, seed 0, both words unsigned: computed with the `mmh3` package (5.3.1);
# "foo" is also the example in mmh3's README (hash64 -> (-2129773440516405919, 9128664383759220103)).
VECTORS: dict[str, tuple[int, int]] = {
    "": (0, 0),
    "a": (9607679276477937801, 16624257681780017498),
    "hello": (14688674573012802306, 6565844092913065241),
    "foo": (16316970633193145697, 9128664383759220103),
    "12345678": (4272337174398058908, 10464973996478965079),
    "123456789": (4360720697772133540, 11094893415607738629),
    "abcdefghijklmno": (9997468155419308027, 7661902993592560225),
    "abcdefghijklmnop": (14180213048082216739, 4842449962798279450),
    "abcdefghijklmnopq": (8459014091212432983, 17067034679234858468),
    "The quick brown fox jumps over the lazy dog": (16378391709484522348, 8809951995912426311),
    "http://127.0.0.1:3000-mod-display-1": (11804400722366169442, 14900274138712069375),
    "01HZZZZZZZZZZZZZZZZZZZZZZZ:http://core:3000-mod-camera-1": (8010149920073529211, 17959470697384460329),
    "héllo wörld ✓": (16386973453689880180, 9663561033314719765),
}


@pytest.mark.parametrize("text", list(VECTORS))
def test_murmur3_x64_128_vectors(text: str) -> None:
    assert murmur3_x64_128(text.encode()) == VECTORS[text]
    assert murmur3_h1(text) == VECTORS[text][0]


def test_murmur3_seed() -> None:
    assert murmur3_x64_128(b"foo", 42) == (17606432766137750514, 11707588649648429737)
    assert murmur3_x64_128(b"foo", 42) != murmur3_x64_128(b"foo", 0)


def test_rendezvous_picks_highest_score() -> None:
    nodes = ["http://core-a:3000", "http://core-b:3000", "http://core-c:3000"]
    for key in ("mod-display-1", "mod-lighting-1", "mod-camera-1", "mod-x"):
        expected = max(nodes, key=lambda n: murmur3_h1(f"{n}-{key}"))
        assert rendezvous(nodes, key) == expected
        assert rendezvous(list(reversed(nodes)), key) == expected  # order does not matter
    assert rendezvous([], "mod-display-1") is None
    assert rendezvous(["only"], "anything") == "only"


def test_rendezvous_tie_goes_to_larger_node() -> None:
    def constant(_: str) -> int:
        return 7

    assert rendezvous(["http://a:1", "http://c:1", "http://b:1"], "mod", hash_fn=constant) == "http://c:1"
    assert rendezvous(["b", "a"], "mod", hash_fn=constant) == "b"


def test_rendezvous_spreads_modules() -> None:
    nodes = [f"{new_ulid()}:http://127.0.0.1:{3000 + i}" for i in range(3)]
    owners = {rendezvous(nodes, f"mod-{i}") for i in range(60)}
    assert owners == set(nodes)


def test_ulid_shape() -> None:
    a, b = new_ulid(), new_ulid()
    assert len(a) == 26 and a != b
    assert set(a) <= set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")


def test_factory_by_era() -> None:
    assert isinstance(make_discovery("A", etcd_url="http://127.0.0.1:1"), EtcdDiscovery)
    assert make_discovery("b", etcd_url="http://127.0.0.1:1").ttl == 15
    c = make_discovery("C", redis_url="redis://127.0.0.1:1/0")
    assert isinstance(c, RedisDiscovery) and c.ttl == 20
    with pytest.raises(ValueError):
        make_discovery("C")
    with pytest.raises(ValueError):
        make_discovery("Z", etcd_url="http://x")


# --------------------------------------------------------------------------- real backends


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[backends.RedisServer]:
    with backends.start_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def etcd_server(tmp_path: Path) -> Iterator[backends.EtcdServer]:
    with backends.start_etcd(tmp_path / "etcd") as server:
        yield server


def _etcd(server: backends.EtcdServer, path: str, body: dict[str, Any]) -> Any:
    return server.call(path, body)


def _etcd_keys(server: backends.EtcdServer, prefix: str = "service/core/") -> dict[str, str]:
    end = bytearray(prefix.encode())
    end[-1] += 1
    res = server.call(
        "kv/range", {"key": base64.b64encode(prefix.encode()).decode(), "range_end": base64.b64encode(end).decode()}
    )
    return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv["value"]).decode() for kv in res.get("kvs", [])}


async def test_etcd_lease_keepalive_and_api_cache(etcd_server: backends.EtcdServer) -> None:
    """A registration lives under a lease, outlives its TTL while kept alive, and the API side keeps a
    node it cannot confirm (etcd killed) for one TTL only."""
    core = EtcdDiscovery(etcd_server.url, ttl=2)
    api = EtcdDiscovery(etcd_server.url, ttl=2)
    try:
        await core.register("http://127.0.0.1:3999")
        key = f"service/core/{core.name}"
        assert _etcd_keys(etcd_server) == {key: "http://127.0.0.1:3999"}
        ttl = _etcd(etcd_server, "kv/lease/timetolive", {"ID": core.lease, "keys": True})
        assert int(ttl["grantedTTL"]) == 2 and 0 < int(ttl["TTL"]) <= 2
        assert [base64.b64decode(k).decode() for k in ttl["keys"]] == [key]

        # Kept alive every ttl // 3 (here 1 s): still there after twice the TTL.
        deadline = time.monotonic() + 4.5
        while time.monotonic() < deadline:
            assert key in _etcd_keys(etcd_server)
            await asyncio.sleep(0.25)

        nodes = await api.nodes()
        assert [(n.name, n.uri, n.hash_value) for n in nodes] == [
            (core.name, "http://127.0.0.1:3999", f"{core.name}:http://127.0.0.1:3999")
        ]
        assert (await api.locate("mod-display-1")) == nodes[0]

        # etcd killed: the API keeps what it last saw for one TTL, then has no core.
        await asyncio.to_thread(etcd_server.proc.kill)
        killed = time.monotonic()
        assert await api.nodes() == nodes
        with pytest.raises(DiscoveryError):
            await api.health()
        await eventually(lambda: _empty(api), 6, "the cached node to expire")
        assert time.monotonic() - killed >= 1.0
        assert await api.locate("mod-display-1") is None

        # etcd back with its data: the lease was restored and is kept alive again.
        await asyncio.to_thread(etcd_server.restart)
        await eventually(api.nodes, 10, "the core to be listed again")
        await api.health()
    finally:
        await core.unregister()
        await core.close()
        await api.close()
    assert _etcd_keys(etcd_server) == {}


async def _empty(d: EtcdDiscovery) -> bool:
    return await d.nodes() == []


async def test_etcd_lost_lease_is_granted_again(etcd_server: backends.EtcdServer) -> None:
    core = EtcdDiscovery(etcd_server.url, ttl=2)
    try:
        await core.register("http://127.0.0.1:3998")
        first = core.lease
        _etcd(etcd_server, "kv/lease/revoke", {"ID": first})  # the lease is gone, and the key with it
        assert _etcd_keys(etcd_server) == {}
        await eventually(lambda: _has_key(etcd_server, core), 5, "the key to be registered again")
        assert core.lease != first
    finally:
        await core.unregister()
        await core.close()


async def _has_key(server: backends.EtcdServer, d: EtcdDiscovery) -> bool:
    return f"service/core/{d.name}" in _etcd_keys(server)


async def test_etcd_credentials(tmp_path: Path) -> None:
    """Credentials in the URL are used (``/v3/auth/authenticate``); changed ones fail registration."""
    server = await asyncio.to_thread(backends.start_etcd, tmp_path / "etcd", auth=True)
    try:
        url = f"http://{server.user}:{server.password}@{server.host}:{server.port}"
        anonymous = EtcdDiscovery(server.url, ttl=2)
        with pytest.raises(DiscoveryError):
            await anonymous.register("http://127.0.0.1:3997")
        await anonymous.close()
        core = EtcdDiscovery(url, ttl=2)
        await core.register("http://127.0.0.1:3997")
        assert server.password not in core.url
        await core.unregister()
        await core.close()
        await asyncio.to_thread(server.break_credentials)
        again = EtcdDiscovery(url, ttl=2)
        with pytest.raises(DiscoveryError) as err:
            await again.register("http://127.0.0.1:3997")
        assert server.password not in str(err.value)
        await again.close()
    finally:
        await asyncio.to_thread(server.close)


async def test_redis_registration_stale_entry_and_prune(redis_server: backends.RedisServer) -> None:
    """§1.2: SET EX + GETEX refresh; a core that stops without unregistering leaves its lookup entry,
    which the API still lists; the next registered core prunes it; a graceful stop removes both."""
    url = redis_server.url.rsplit("/", 1)[0] + "/3"
    r = aioredis.Redis.from_url(url, decode_responses=True)
    await r.flushdb()
    lookup = "{service_core}_lookup"
    first = RedisDiscovery(url, ttl=2, version="9.9.9")
    second = RedisDiscovery(url, ttl=2)
    api = RedisDiscovery(url)
    api.LIST_REFRESH = 0.0  # the 5 s client cache would only slow the test
    try:
        await first.register("http://127.0.0.1:4001")
        key = first.node_key(str(first.name))
        assert await r.hgetall(lookup) == {key: "http://127.0.0.1:4001"}
        assert json.loads(str(await r.get(key))) == {"u": "http://127.0.0.1:4001", "r": False, "v": "9.9.9"}
        assert 0 < await r.ttl(key) <= 2
        assert str(await r.get("{service_core}_version")).startswith("1-")
        await first.set_ready(True)
        assert json.loads(str(await r.get(key)))["r"] is True

        # Refreshed every ttl // 3: alive after twice the TTL.
        deadline = time.monotonic() + 4.5
        while time.monotonic() < deadline:
            assert await r.exists(key)
            await asyncio.sleep(0.25)
        assert [n.hash_value for n in await api.nodes()] == ["http://127.0.0.1:4001"]

        # Stopped without unregistering (what SIGKILL does): the key expires, the lookup entry stays.
        await first.close()
        await eventually(lambda: _gone(r, key), 5, "the node key to expire")
        assert await r.hgetall(lookup) == {key: "http://127.0.0.1:4001"}
        assert [n.uri for n in await api.nodes()] == ["http://127.0.0.1:4001"]  # stale, still routed to

        # A registered core prunes entries whose key expired.
        await second.register("http://127.0.0.1:4002")
        key2 = second.node_key(str(second.name))
        assert await r.hgetall(lookup) == {key2: "http://127.0.0.1:4002"}
        assert (await api.locate("mod-display-1")) is not None

        await second.unregister()
        assert await r.hgetall(lookup) == {}
        assert not await r.exists(key2)
        assert await api.nodes() == []
    finally:
        await second.close()
        await api.close()
        await r.aclose()


async def _gone(r: aioredis.Redis, key: str) -> bool:
    return not await r.exists(key)


async def test_redis_down_raises_promptly() -> None:
    d = RedisDiscovery("redis://127.0.0.1:1/0", timeout=1.0)
    start = time.monotonic()
    with pytest.raises(DiscoveryError):
        await d.nodes()
    with pytest.raises(DiscoveryError):
        await d.register("http://127.0.0.1:4003")
    assert time.monotonic() - start < 5
    await d.close()
