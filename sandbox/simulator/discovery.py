"""Core discovery as PlaceOS does it: etcd leases (eras A/B), Redis keys (era C), rendezvous hashing.

Reproduces (internals §1):

* §1.1 etcd, eras A/B (hound-dog over crystal-etcd, i.e. etcd's v3 JSON gateway): a core registers
  ``service/core/<ULID>`` = ``http://host:port`` under a lease with TTL ``ETCD_TTL`` (default 15 s),
  keeps the lease alive every ``ttl // 3`` s with ``/v3/lease/keepalive`` and re-grants a lost lease.
  Clients list the prefix with ``/v3/kv/range`` (base64 key, ``range_end`` = prefix + 1). rest-api and
  triggers only list. The health check is ``/v3/maintenance/status``. The real API side watches the
  prefix and keeps its own list; here :meth:`EtcdDiscovery.nodes` re-reads it and, when etcd cannot be
  reached, keeps each node it last saw for one TTL only. So "etcd killed" turns into "No registered
  core instances" once the lease would have run out, which is the documented symptom.
* §1.2 Redis, era C (redis_service_manager): hash ``{service_core}_lookup`` node_key -> uri, string
  ``{service_core}.<ULID>`` = ``{"u","r","v"}`` with ``SET .. EX ttl`` (default 20 s) refreshed by
  ``GETEX .. EX ttl`` every ``ttl // 3`` s, ``{service_core}_version`` = ``"<size>-<ULID>"``. A graceful
  stop HDELs and DELs. Registered cores prune lookup entries whose key expired; clients that do not
  register (rest-api) rebuild their list from ``HGETALL`` at most every 5 s and do NOT check the keys,
  so a SIGKILLed only core stays listed (stale) until another core registers.
* §1.3 rendezvous hashing (caspiano/rendezvous-hash): score ``Murmur3.h1("#{node}-#{key}")``
  (MurmurHash3 x64_128, seed 0, first 64-bit word), highest wins, a tie goes to the lexicographically
  larger node string. Node strings: era C the URIs; eras A/B ``"<ULID>:<uri>"`` (hound-dog
  ``to_hash_value``).

hound-dog used etcd without auth (§1.1); credentials (``user:password@`` in the URL, or ``username`` /
``password``, as crystal-etcd's ``ETCD_USERNAME``/``ETCD_PASSWORD``) are honoured through
``/v3/auth/authenticate`` so the sandbox can run etcd with auth, and ``ca_file`` trusts a TLS etcd.
Passwords never reach the logs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import aiohttp
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

log = logging.getLogger("sandbox.discovery")

_MASK64 = (1 << 64) - 1

NO_CORES = "No registered core instances"  # RemoteDriver's message when the hash has no node (§1.4)


# --------------------------------------------------------------------------- MurmurHash3, rendezvous


def _rotl64(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _MASK64


def _fmix64(k: int) -> int:
    k ^= k >> 33
    k = (k * 0xFF51AFD7ED558CCD) & _MASK64
    k ^= k >> 33
    k = (k * 0xC4CEB9FE1A85EC53) & _MASK64
    k ^= k >> 33
    return k


def murmur3_x64_128(data: bytes, seed: int = 0) -> tuple[int, int]:
    """MurmurHash3_x64_128 (Appleby's reference), as two unsigned 64-bit words ``(h1, h2)``."""
    c1, c2 = 0x87C37B91114253D5, 0x4CF5AD432745937F
    length = len(data)
    h1 = h2 = seed & _MASK64
    n_blocks = length // 16
    for i in range(n_blocks):
        k1 = int.from_bytes(data[i * 16 : i * 16 + 8], "little")
        k2 = int.from_bytes(data[i * 16 + 8 : i * 16 + 16], "little")
        k1 = (_rotl64((k1 * c1) & _MASK64, 31) * c2) & _MASK64
        h1 ^= k1
        h1 = (((_rotl64(h1, 27) + h2) & _MASK64) * 5 + 0x52DCE729) & _MASK64
        k2 = (_rotl64((k2 * c2) & _MASK64, 33) * c1) & _MASK64
        h2 ^= k2
        h2 = (((_rotl64(h2, 31) + h1) & _MASK64) * 5 + 0x38495AB5) & _MASK64
    tail = data[n_blocks * 16 :]
    if len(tail) > 8:
        k2 = int.from_bytes(tail[8:], "little")
        h2 ^= (_rotl64((k2 * c2) & _MASK64, 33) * c1) & _MASK64
    if tail:
        k1 = int.from_bytes(tail[:8], "little")
        h1 ^= (_rotl64((k1 * c1) & _MASK64, 31) * c2) & _MASK64
    h1 ^= length
    h2 ^= length
    h1 = (h1 + h2) & _MASK64
    h2 = (h2 + h1) & _MASK64
    h1 = _fmix64(h1)
    h2 = _fmix64(h2)
    h1 = (h1 + h2) & _MASK64
    h2 = (h2 + h1) & _MASK64
    return h1, h2


def murmur3_h1(text: str) -> int:
    """aca-labs/murmur3 ``Murmur3.h1``: the first 64-bit word of x64_128 with seed 0 (§1.3)."""
    return murmur3_x64_128(text.encode("utf-8"), 0)[0]


def rendezvous(nodes: list[str], key: str, hash_fn: Callable[[str], int] = murmur3_h1) -> str | None:
    """The node that owns ``key``: highest ``hash("<node>-<key>")``; a tie goes to the larger node."""
    best: str | None = None
    best_score = -1
    for node in nodes:
        score = hash_fn(f"{node}-{key}")
        if score > best_score:
            best, best_score = node, score
        elif score == best_score and best is not None:
            best = max(best, node)
    return best


# --------------------------------------------------------------------------- ULIDs, Redis client

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_ulid() -> str:
    """A ULID (48-bit ms timestamp + 80 random bits, Crockford base32), as hound-dog names nodes."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))


def redis_client(url: str, timeout: float) -> aioredis.Redis:
    """A Redis client that fails within ``timeout`` (one quick retry covers a restarted server)."""
    return aioredis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 1),
        decode_responses=True,
    )


class DiscoveryError(Exception):
    """The discovery backend (etcd or Redis) could not be reached or refused the request."""


@dataclass(frozen=True)
class CoreNode:
    """A registered core: ``name`` (its ULID), ``uri``, and the string rendezvous hashing scores."""

    name: str
    uri: str
    hash_value: str


class Discovery(Protocol):
    """What core (register) and rest-api (list + locate) need; one implementation per era."""

    name: str | None
    uri: str | None

    async def register(self, uri: str) -> None:
        """Register once (raises DiscoveryError if the backend is down), then keep it alive."""
        ...

    async def unregister(self) -> None: ...
    async def nodes(self) -> list[CoreNode]: ...
    async def locate(self, key: str) -> CoreNode | None: ...
    async def health(self) -> None: ...
    async def close(self) -> None: ...
    def own_hash_value(self) -> str | None: ...


def _mask(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@")


async def _locate(nodes: list[CoreNode], key: str) -> CoreNode | None:
    by_value = {n.hash_value: n for n in nodes}
    owner = rendezvous(sorted(by_value), key)
    return by_value[owner] if owner is not None else None


# --------------------------------------------------------------------------- etcd (eras A/B)


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def _unb64(s: str) -> str:
    return base64.b64decode(s).decode()


def _prefix_end(prefix: str) -> str:
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return base64.b64encode(bytes(raw)).decode()


class EtcdDiscovery:
    """hound-dog over etcd's v3 JSON gateway: ``service/core/<ULID>`` under a kept-alive lease (§1.1)."""

    def __init__(
        self,
        url: str,
        ttl: int = 15,
        *,
        namespace: str = "service",
        service: str = "core",
        timeout: float = 2.0,
        api_version: str = "v3",
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
    ) -> None:
        parts = urlsplit(url)
        self.base = f"{parts.scheme or 'http'}://{parts.hostname}:{parts.port or 2379}/{api_version}"
        self.url = _mask(url)
        self._user = unquote(parts.username) if parts.username else username
        self._password = unquote(parts.password) if parts.password else (password or "")
        self._ssl: ssl.SSLContext | None = ssl.create_default_context(cafile=ca_file) if ca_file else None
        self._token: str | None = None
        self.ttl = int(ttl)
        self.prefix = f"{namespace}/{service}/"
        self.timeout = timeout
        self.name: str | None = None
        self.uri: str | None = None
        self.lease: str | None = None
        self._session: aiohttp.ClientSession | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self._seen: dict[str, tuple[CoreNode, float]] = {}
        self.healthy_registration = False

    # -- gateway

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                connector=aiohttp.TCPConnector(ssl=self._ssl) if self._ssl else None,
            )
        return self._session

    async def _post_once(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Authorization": self._token} if self._token else {}
        async with self._http().post(f"{self.base}/{path}", json=body, headers=headers) as resp:
            text = await resp.text()
            try:
                data = json.loads(text) if text else {}
            except ValueError:
                raise DiscoveryError(f"etcd {path}: HTTP {resp.status}, not JSON") from None
            if resp.status != 200 or (isinstance(data, dict) and "error" in data and "result" not in data):
                msg = data.get("error") or data.get("message") if isinstance(data, dict) else text
                raise DiscoveryError(f"etcd {path}: HTTP {resp.status}: {msg}")
            if not isinstance(data, dict):
                raise DiscoveryError(f"etcd {path}: unexpected body")
            return data

    async def _authenticate(self) -> None:
        assert self._user is not None
        async with self._http().post(
            f"{self.base}/auth/authenticate", json={"name": self._user, "password": self._password}
        ) as resp:
            data = await resp.json(content_type=None)
            if resp.status != 200 or not isinstance(data, dict) or "token" not in data:
                raise DiscoveryError(f"etcd auth/authenticate: HTTP {resp.status}: authentication failed")
            self._token = str(data["token"])

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """One gateway call, bounded; authenticates (again) when a user is configured."""
        try:
            if self._user and self._token is None:
                await self._authenticate()
            try:
                return await self._post_once(path, body)
            except DiscoveryError as e:
                if not self._user or "token" not in str(e).lower():
                    raise
                self._token = None
                await self._authenticate()
                return await self._post_once(path, body)
        except DiscoveryError:
            raise
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as e:
            raise DiscoveryError(f"etcd {path}: {type(e).__name__}: {e or 'failed'} ({self.url})") from e

    async def health(self) -> None:
        """PlaceOS's etcd health check: ``POST /v3/maintenance/status`` (§1.1)."""
        await self._post("maintenance/status", {})

    # -- registration (core)

    def _key(self) -> str:
        assert self.name is not None
        return self.prefix + self.name

    async def _grant_and_put(self) -> None:
        assert self.uri is not None
        grant = await self._post("lease/grant", {"TTL": self.ttl})
        self.lease = str(grant["ID"])
        await self._post("kv/put", {"key": _b64(self._key()), "value": _b64(self.uri), "lease": self.lease})
        self.healthy_registration = True

    async def register(self, uri: str) -> None:
        if self.name is None:
            self.name = new_ulid()
        self.uri = uri
        await self._grant_and_put()
        log.info("registered %s = %s (lease %s, ttl %ss)", self._key(), uri, self.lease, self.ttl)
        if self._keepalive is None or self._keepalive.done():
            self._keepalive = asyncio.create_task(self._keep_alive())

    async def _keep_alive(self) -> None:
        """Every ``ttl // 3`` s: keep the lease alive; a lease that is gone is granted again."""
        period = max(1, self.ttl // 3)
        failing = False
        while True:
            await asyncio.sleep(period)
            try:
                res = await self._post("lease/keepalive", {"ID": self.lease})
                if int(res.get("result", {}).get("TTL", 0)) <= 0:
                    log.warning("lease %s lost, granting a new one", self.lease)
                    await self._grant_and_put()
                if failing:
                    log.info("etcd reachable again, registration kept alive")
                failing = False
            except DiscoveryError as e:
                self.healthy_registration = False
                if not failing:
                    log.warning("keep-alive failed: %s", e)
                failing = True

    async def unregister(self) -> None:
        """Graceful stop: stop keeping alive, revoke the lease (which deletes the key)."""
        if self._keepalive is not None:
            self._keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keepalive
            self._keepalive = None
        if self.lease is not None:
            try:
                await self._post("kv/lease/revoke", {"ID": self.lease})
                await self._post("kv/deleterange", {"key": _b64(self._key())})
                log.info("unregistered %s", self._key())
            except DiscoveryError as e:
                log.warning("unregister failed (the key expires with its lease): %s", e)
            self.lease = None

    def own_hash_value(self) -> str | None:
        return f"{self.name}:{self.uri}" if self.name and self.uri else None

    # -- listing (rest-api, core)

    async def list_registered(self) -> list[CoreNode]:
        """The prefix as etcd has it now; raises DiscoveryError when etcd cannot answer."""
        res = await self._post("kv/range", {"key": _b64(self.prefix), "range_end": _prefix_end(self.prefix)})
        out = []
        for kv in res.get("kvs", []):
            name = _unb64(kv["key"])[len(self.prefix) :]
            uri = _unb64(kv.get("value", ""))
            out.append(CoreNode(name=name, uri=uri, hash_value=f"{name}:{uri}"))
        return sorted(out, key=lambda n: n.name)

    async def nodes(self) -> list[CoreNode]:
        """The API's view: etcd's list, or while etcd is unreachable what it last saw, for one TTL."""
        now = time.monotonic()
        try:
            current = await self.list_registered()
        except DiscoveryError as e:
            kept = [node for node, seen in self._seen.values() if now - seen < self.ttl]
            log.warning("cannot list cores (%s); %d cached node(s) still within their TTL", e, len(kept))
            return kept
        self._seen = {n.name: (n, now) for n in current}
        return current

    async def locate(self, key: str) -> CoreNode | None:
        return await _locate(await self.nodes(), key)

    async def close(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keepalive
            self._keepalive = None
        if self._session is not None:
            await self._session.close()
            self._session = None


# --------------------------------------------------------------------------- Redis (era C)


class RedisDiscovery:
    """redis_service_manager: ``{service_core}_lookup`` + ``{service_core}.<ULID>`` keys (§1.2)."""

    LIST_REFRESH = 5.0  # Clustering::Discovery rebuilds a client's node list at most this often

    def __init__(
        self, url: str, ttl: int = 20, *, service: str = "core", timeout: float = 2.0, version: str = ""
    ) -> None:
        self.url = _mask(url)
        self._redis = redis_client(url, timeout)
        self.ttl = int(ttl)
        self.timeout = timeout
        self.service = service
        self.lookup_key = f"{{service_{service}}}_lookup"
        self.version_key = f"{{service_{service}}}_version"
        self.name: str | None = None
        self.uri: str | None = None
        self.ready = False
        self.version = version
        self._refresh: asyncio.Task[None] | None = None
        self._cached: tuple[float, list[CoreNode]] | None = None
        self.healthy_registration = False

    def node_key(self, name: str) -> str:
        return f"{{service_{self.service}}}.{name}"

    async def _call(self, make: Callable[[], Awaitable[Any]], what: str) -> Any:
        """One Redis command, bounded, with failures as DiscoveryError."""
        try:
            return await asyncio.wait_for(make(), self.timeout * 2 + 1)
        except (aioredis.RedisError, TimeoutError, OSError) as e:
            raise DiscoveryError(f"redis {what}: {type(e).__name__}: {e or 'failed'} ({self.url})") from e

    async def health(self) -> None:
        await self._call(lambda: self._redis.ping(), "PING")

    def _value(self) -> str:
        return json.dumps({"u": self.uri, "r": self.ready, "v": self.version}, separators=(",", ":"))

    async def _write_registration(self) -> None:
        assert self.name is not None and self.uri is not None
        key = self.node_key(self.name)
        await self._call(lambda: self._redis.set(key, self._value(), ex=self.ttl), "SET")
        await self._call(lambda: self._redis.hset(self.lookup_key, key, self.uri or ""), "HSET")

    async def register(self, uri: str) -> None:
        if self.name is None:
            self.name = new_ulid()
        self.uri = uri
        await self._write_registration()
        await self._prune_and_version()
        self.healthy_registration = True
        log.info("registered %s = %s (ttl %ss)", self.node_key(self.name), uri, self.ttl)
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.create_task(self._keep_alive())

    async def set_ready(self, ready: bool) -> None:
        """The ``r`` flag: a core is ready once its modules are loaded."""
        self.ready = ready
        if self.name is not None:
            with contextlib.suppress(DiscoveryError):
                await self._write_registration()

    async def _exists(self, key: str) -> bool:
        return bool(await self._call(lambda: self._redis.exists(key), "EXISTS"))

    async def _prune_and_version(self) -> None:
        """What a registered core does: drop lookup entries whose key expired, publish the version."""
        lookup: dict[str, str] = await self._call(lambda: self._redis.hgetall(self.lookup_key), "HGETALL")
        stale = []
        for key in lookup:
            if not await self._exists(key):
                stale.append(key)
        if stale:
            log.info("pruning %d expired core(s) from %s", len(stale), self.lookup_key)
            await self._call(lambda: self._redis.hdel(self.lookup_key, *stale), "HDEL")
        size = len(lookup) - len(stale)
        current = await self._call(lambda: self._redis.get(self.version_key), "GET")
        if not current or not str(current).startswith(f"{size}-") or stale:
            await self._call(lambda: self._redis.set(self.version_key, f"{size}-{new_ulid()}"), "SET")

    async def _refresh_once(self) -> None:
        assert self.name is not None
        key = self.node_key(self.name)
        if await self._call(lambda: self._redis.getex(key, ex=self.ttl), "GETEX") is None:
            log.warning("registration %s expired, registering again", key)
            await self._write_registration()
        elif not await self._call(lambda: self._redis.hexists(self.lookup_key, key), "HEXISTS"):
            await self._write_registration()
        await self._prune_and_version()

    async def _keep_alive(self) -> None:
        """Every ``ttl // 3`` s: GETEX the node key; re-register if it vanished; prune stale entries."""
        period = max(1, self.ttl // 3)
        failing = False
        while True:
            await asyncio.sleep(period)
            try:
                await self._refresh_once()
                if failing:
                    log.info("redis reachable again, registration kept alive")
                failing = False
                self.healthy_registration = True
            except DiscoveryError as e:
                self.healthy_registration = False
                if not failing:
                    log.warning("keep-alive failed: %s", e)
                failing = True

    async def unregister(self) -> None:
        """Graceful stop: HDEL the lookup entry and DEL the node key (§1.2 ``unregister``)."""
        if self._refresh is not None:
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh
            self._refresh = None
        if self.name is not None:
            key = self.node_key(self.name)
            try:
                await self._call(lambda: self._redis.hdel(self.lookup_key, key), "HDEL")
                await self._call(lambda: self._redis.delete(key), "DEL")
                log.info("unregistered %s", key)
            except DiscoveryError as e:
                log.warning("unregister failed: %s", e)

    def own_hash_value(self) -> str | None:
        return self.uri

    async def list_registered(self) -> list[CoreNode]:
        """``HGETALL`` of the lookup, sorted by node key, without checking the node keys (as the API)."""
        lookup: dict[str, str] = await self._call(lambda: self._redis.hgetall(self.lookup_key), "HGETALL")
        prefix = f"{{service_{self.service}}}."
        return [CoreNode(name=key.removeprefix(prefix), uri=uri, hash_value=uri) for key, uri in sorted(lookup.items())]

    async def nodes(self) -> list[CoreNode]:
        """The API's view, rebuilt at most every 5 s; raises DiscoveryError when Redis is down."""
        now = time.monotonic()
        if self._cached is not None and now - self._cached[0] < self.LIST_REFRESH:
            return self._cached[1]
        current = await self.list_registered()
        self._cached = (now, current)
        return current

    async def locate(self, key: str) -> CoreNode | None:
        return await _locate(await self.nodes(), key)

    async def close(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh
            self._refresh = None
        await self._redis.aclose()


# --------------------------------------------------------------------------- factory

DEFAULT_TTL = {"A": 15, "B": 15, "C": 20, "D": 20}


def make_discovery(
    era: str,
    *,
    etcd_url: str | None = None,
    redis_url: str | None = None,
    ttl: int | None = None,
    timeout: float = 2.0,
    version: str = "",
    etcd_username: str | None = None,
    etcd_password: str | None = None,
    etcd_ca_file: str | None = None,
) -> EtcdDiscovery | RedisDiscovery:
    """etcd for eras A/B, Redis for eras C/D (internals §1), with the era's default TTL."""
    era = era.upper()
    if era in ("A", "B"):
        if not etcd_url:
            raise ValueError(f"era {era} discovers cores through etcd: an etcd URL is needed")
        return EtcdDiscovery(
            etcd_url,
            ttl or DEFAULT_TTL[era],
            timeout=timeout,
            username=etcd_username,
            password=etcd_password,
            ca_file=etcd_ca_file,
        )
    if era in ("C", "D"):
        if not redis_url:
            raise ValueError(f"era {era} discovers cores through Redis: a Redis URL is needed")
        return RedisDiscovery(redis_url, ttl or DEFAULT_TTL[era], timeout=timeout, version=version)
    raise ValueError(f"unknown era {era!r} (A, B, C or D)")
