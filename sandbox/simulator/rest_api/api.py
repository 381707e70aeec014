"""The rest-api process state (RestApi): its configuration, backend clients, core discovery,
authentication, listing (Elasticsearch in eras A-C, PostgreSQL full-text search in era D) and the
execute path through core.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from sandbox.ports import free_port
from sandbox.simulator import discovery as core_discovery
from sandbox.simulator import fts, seed
from sandbox.simulator.db import ConfigDB, mask_url, open_db
from sandbox.simulator.rest_api.common import (
    DEFAULT_PLATFORM_VERSION,
    ERAS,
    AuthUser,
    Clearance,
    ErrorCode,
    EtcdUnreachable,
    ExecError,
    JWTError,
    Unauthorized,
    dumps,
    io_error_message,
    json_response,
    jwt_decode,
    request_host,
    user_from_claims,
    user_from_docs,
)
from sandbox.simulator.rest_api.subscriptions import Subscriptions

if TYPE_CHECKING:  # websocket.py imports this module
    from sandbox.simulator.rest_api.websocket import WsSession

log = logging.getLogger("sandbox.rest_api")


# ---------------------------------------------------------------------------------------------------
# Configuration and shared state


@dataclass
class RestApiConfig:
    """Everything the command line sets. URLs may carry credentials; they are never logged unmasked."""

    port: int
    era: str
    redis_url: str = field(repr=False)
    db_url: str = field(repr=False)
    es_url: str | None = field(default=None, repr=False)  # eras A-C; era D has no Elasticsearch
    etcd_url: str | None = field(default=None, repr=False)
    triggers_url: str | None = None  # TRIGGERS_URI, for /cluster/versions
    search_ingest_url: str | None = None  # search-ingest (eras A-C), for /cluster/versions, /reindex, /backfill
    platform_version: str | None = None
    retries: int = 2
    retry_interval: float = 0.5
    backend_timeout: float = 2.0
    core_timeout: float = 10.0
    etcd_ttl: int = 15
    host: str = "127.0.0.1"
    jwt_secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)

    def __post_init__(self) -> None:
        self.era = self.era.upper()
        if self.era not in ERAS:
            raise ValueError(f"era must be one of {ERAS}, not {self.era!r}")
        if self.era in ("A", "B") and not self.etcd_url:
            raise ValueError(f"era {self.era} needs --etcd (core discovery and health use etcd)")
        if self.era != "D" and not self.es_url:
            raise ValueError(f"era {self.era} needs --es (its list routes query Elasticsearch)")
        if self.platform_version is None:
            self.platform_version = DEFAULT_PLATFORM_VERSION[self.era]


def load_jwt_secret(data_dir: Path | None) -> bytes:
    """The token signing key: kept in ``<data-dir>/jwt-secret`` (0600) so a restarted rest-api still
    accepts the tokens it issued, as PlaceOS's configured secret does; random without a data dir."""
    if data_dir is None:
        return secrets.token_bytes(32)
    path = data_dir / "jwt-secret"
    if path.exists():
        return bytes.fromhex(path.read_text().strip())
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.hex())
    return key


def redis_client(url: str, timeout: float) -> aioredis.Redis:
    """A Redis client that fails within ``timeout`` and does not retry on its own (no hidden delays)."""
    client: aioredis.Redis = aioredis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
    )
    return client


@dataclass(frozen=True)
class Core:
    """A discovered core: its discovery id (the ULID) and its URI (internals §1.1, §1.2)."""

    id: str
    uri: str


class RestApi:
    """The rest-api process: clients for the backends, the discovery view, and the route handlers."""

    def __init__(self, config: RestApiConfig, db: ConfigDB | None = None) -> None:
        self.config = config
        self.era = config.era
        self._db = db
        self.redis = redis_client(config.redis_url, config.backend_timeout)
        self.http: aiohttp.ClientSession | None = None
        self.etcd_unreachable = False
        self.unreachable = False
        # A loopback port nothing listens on: where the etcd client points while "unreachable".
        self._closed_etcd_url = f"http://127.0.0.1:{free_port()}"
        self._discovery: core_discovery.EtcdDiscovery | core_discovery.RedisDiscovery | None = None
        self._discovery_url: str | None = None
        self._seen: dict[str, tuple[core_discovery.CoreNode, float]] = {}
        self.sessions: set[WsSession] = set()
        self.subscriptions = Subscriptions(config.redis_url, config.backend_timeout)
        self.stopping = asyncio.Event()
        es = urlsplit(config.es_url or "")
        self.es_base = f"{es.scheme}://{es.hostname}" + (f":{es.port}" if es.port else "")
        self.es_auth = aiohttp.BasicAuth(es.username or "", es.password or "") if es.username is not None else None

    # -- lifecycle ------------------------------------------------------------------------------------

    @property
    def db(self) -> ConfigDB:
        assert self._db is not None, "RestApi.start() was not awaited"
        return self._db

    async def start(self) -> None:
        if self._db is None:
            self._db = await open_db(self.config.db_url, self.config.backend_timeout)
        self.http = aiohttp.ClientSession()
        self.subscriptions.start()

    async def stop(self) -> None:
        self.stopping.set()
        for session in list(self.sessions):
            await session.close()
        await self.subscriptions.close()
        await self._close_discovery()
        if self.http is not None:
            await self.http.close()
        await self.redis.aclose()
        if self._db is not None:
            await self._db.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self.http is not None, "RestApi.start() was not awaited"
        return self.http

    def timeout(self, seconds: float | None = None) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=seconds if seconds is not None else self.config.backend_timeout)

    # -- etcd and core discovery ----------------------------------------------------------------------

    @property
    def etcd_url(self) -> str:
        """Where the API's etcd client points now (a closed port while etcd-unreachable is on)."""
        assert self.config.etcd_url is not None
        return self._closed_etcd_url if self.etcd_unreachable else self.config.etcd_url

    async def _close_discovery(self) -> None:
        disc, self._discovery = self._discovery, None
        if disc is not None:
            with contextlib.suppress(Exception):
                await disc.close()

    async def discovery(self) -> core_discovery.EtcdDiscovery | core_discovery.RedisDiscovery:
        """The API-side discovery client (etcd in A/B, Redis in C/D); rebuilt when the etcd URL changes."""
        if self.era in ("C", "D"):
            if self._discovery is None:
                self._discovery = core_discovery.RedisDiscovery(
                    self.config.redis_url, timeout=self.config.backend_timeout
                )
            return self._discovery
        url = self.etcd_url
        if self._discovery is None or self._discovery_url != url:
            await self._close_discovery()
            self._discovery = core_discovery.EtcdDiscovery(
                url, self.config.etcd_ttl, timeout=self.config.backend_timeout
            )
            self._discovery_url = url
        return self._discovery

    async def core_nodes(self) -> list[core_discovery.CoreNode]:
        """The node list the API routes with (internals §1.1, §1.2).

        Eras C/D: ``HGETALL {service_core}_lookup`` (stale entries kept, as real). Eras A/B: the
        ``service/core/`` prefix; while etcd cannot be read the nodes last seen are kept for one TTL
        (the real API keeps a watched list), after which :class:`EtcdUnreachable` is raised so execute
        can say that etcd, not core, is what failed.
        """
        disc = await self.discovery()
        if isinstance(disc, core_discovery.RedisDiscovery):
            return await disc.nodes()
        now = time.monotonic()
        try:
            current = await disc.list_registered()
        except core_discovery.DiscoveryError as e:
            kept = [node for node, seen in self._seen.values() if now - seen < self.config.etcd_ttl]
            if not kept:
                raise EtcdUnreachable(str(e)) from e
            log.warning("cannot list cores (%s); routing with %d node(s) seen within the TTL", e, len(kept))
            return kept
        self._seen = {n.name: (n, now) for n in current}
        return current

    async def cores(self) -> list[Core]:
        return [Core(id=n.name, uri=n.uri) for n in await self.core_nodes()]

    async def which_core(self, key: str) -> Core | None:
        """Rendezvous hashing over the discovered cores' hash strings (internals §1.3)."""
        by_value = {n.hash_value: n for n in await self.core_nodes()}
        owner = core_discovery.rendezvous(sorted(by_value), key)
        if owner is None:
            return None
        node = by_value[owner]
        return Core(id=node.name, uri=node.uri)

    # -- backend checks -------------------------------------------------------------------------------

    async def check_redis(self) -> None:
        await self.redis.ping()

    async def check_etcd(self) -> None:
        """PlaceOS's etcd check: ``POST /v3/maintenance/status`` (internals §1.1)."""
        await (await self.discovery()).health()

    async def check_db(self) -> None:
        await self.db.health()

    def health_checks(self) -> dict[str, Callable[[], Awaitable[None]]]:
        checks: dict[str, Callable[[], Awaitable[None]]] = {"redis": self.check_redis}
        if self.era in ("A", "B"):
            checks["etcd"] = self.check_etcd
        checks["rethinkdb" if self.era == "A" else "postgres"] = self.check_db
        return checks

    # -- authentication -------------------------------------------------------------------------------

    async def authority_for(self, request: web.Request) -> dict[str, Any] | None:
        """``Authority.find_by_domain(request.hostname)`` (internals §2.1, §2.2)."""
        found = await self.db.find_by("authority", "domain", request_host(request))
        return found[0] if found else None

    async def authenticate(self, request: web.Request) -> AuthUser:
        """rest-api ``authorize!`` (internals §5.2); raises :class:`Unauthorized`."""
        raw_key = request.headers.get("X-API-Key") or request.query.get("api-key") or request.cookies.get("api-key")
        if raw_key:
            return await self._api_key_user(request, raw_key)
        token = bearer_token(request)
        if not token:
            raise Unauthorized()
        try:
            claims = jwt_decode(token, self.config.jwt_secret)
        except JWTError as e:
            raise Unauthorized(str(e)) from e
        user = user_from_claims(claims)
        if self.era in ("C", "D"):
            # Era C looks the user and the Authority up; a database outage here is a 500 (§5.2).
            user_doc = await self.db.get("user", user.id)
            if user_doc is not None:
                user = user_from_docs(user_doc, user.domain, user.scope, "bearer")
            authority = await self.authority_for(request)
            if authority is None:
                raise Unauthorized("authority not found")
            if str(authority.get("domain", "")).lower() != user.domain.lower():
                raise Unauthorized("authority domain does not match token's")
        return user

    async def _api_key_user(self, request: web.Request, raw_key: str) -> AuthUser:
        """``ApiKey.find_key!`` + ``build_jwt``; every exception becomes ``unknown X-API-Key``."""
        try:
            key_id, secret = raw_key.split(".", 1)
            authority = await self.authority_for(request)
            if authority is None:
                raise LookupError("authority not found")
            key = await self.db.get("api_key", key_id)
            if key is None:
                raise LookupError("api key not found")
            if not hmac.compare_digest(str(key.get("secret", "")), seed.api_key_hash(key_id, secret)):
                raise LookupError("api key secret mismatch")
            if key.get("authority_id") not in (None, authority.get("id")):
                raise LookupError("authority domain does not match token's")
            user_doc = await self.db.get("user", str(key["user_id"]))
            if user_doc is None:
                raise LookupError("api key user not found")
        except Exception as e:
            # Logged by type and reason only: never the key.
            log.warning("bad or unknown X-API-Key (%s: %s)", type(e).__name__, e if isinstance(e, LookupError) else "")
            raise Unauthorized("unknown X-API-Key") from e
        expires = key.get("expires_at")
        if isinstance(expires, int | float) and expires <= time.time():
            raise Unauthorized("API key has expired")
        scopes = tuple(str(s.get("id")) for s in key.get("scopes") or [] if isinstance(s, dict)) or ("public",)
        return user_from_docs(user_doc, str(authority.get("domain", "")), scopes, "api_key")

    # -- Elasticsearch --------------------------------------------------------------------------------

    async def es_search(self, index: str, q: str, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        """neuroplastic's ``/<index>/_search`` (internals §4): ``simple_query_string``, name sort."""
        query: dict[str, Any] = (
            {"match_all": {}}
            if q.strip() in ("", "*")
            else {"simple_query_string": {"query": q, "fields": ["name", "description", "email"]}}
        )
        body = {
            "query": query,
            "from": offset,
            "size": limit,
            "sort": [{"name.keyword": {"order": "asc"}}],
            "track_total_hits": True,
        }
        async with self.session.post(
            f"{self.es_base}/{index}/_search", json=body, auth=self.es_auth, timeout=self.timeout()
        ) as resp:
            text = await resp.text()
            if resp.status != 200:
                raise RuntimeError(f"elasticsearch {index}/_search answered {resp.status}")
        data = json.loads(text)
        hits = data.get("hits", {})
        total = hits.get("total", 0)
        total_n = int(total.get("value", 0) if isinstance(total, dict) else total)
        results = []
        for hit in hits.get("hits", []):
            doc = dict(hit.get("_source") or {})
            doc.setdefault("id", hit.get("_id"))
            results.append(doc)
        return results, total_n

    async def paginate(self, request: web.Request, index: str, route: str) -> web.Response:
        """``paginate_results`` (rest-api ``controllers/application.cr``): the headers of internals §4.

        Era D: ``paginate_search``/``paginate_sql`` (application.cr @51faa1a, sandbox.simulator.fts):
        the page from PostgreSQL, and the Link header's next ``offset`` is the range end, no longer the
        range end + 1 that skipped a row per page (the era-D signal: ``?limit=0`` gives ``offset=0``).
        """
        if self.era == "D":
            return await self._paginate_search(request, index, route)
        try:
            limit = int(request.query.get("limit", "100"))
            offset = int(request.query.get("offset", "0"))
            if limit < 0 or offset < 0:
                raise ValueError
        except ValueError:
            bad = "limit" if not request.query.get("limit", "0").isdigit() else "offset"
            return json_response(
                {"error": f"invalid parameter '{bad}'", "parameter": bad, "restriction": "UInt32"}, 400
            )
        q = request.query.get("q", "*")
        results, total = await self.es_search(index, q, limit, offset)
        range_end = len(results) + offset
        headers = {"X-Total-Count": str(total), "Content-Range": f"{index} {offset}-{range_end}/{total}"}
        if range_end < total:
            params = dict(request.query)
            params["offset"] = str(range_end + 1)
            params["limit"] = str(limit)
            headers["Link"] = f'<{route}?{urlencode(params)}>; rel="next"'
        return json_response(results, headers=headers)

    async def _paginate_search(self, request: web.Request, table: str, route: str) -> web.Response:
        for name in ("limit", "offset"):  # build_search_params' UInt32 params (400 when not one)
            value = request.query.get(name)
            if value is not None and not (value.isdigit() and int(value) < 2**32):
                return json_response(
                    {"error": f"invalid parameter '{name}'", "parameter": name, "restriction": "UInt32"}, 400
                )
        limit = fts.clamp(request.query.get("limit"), 100, fts.MAX_LIMIT)
        offset = fts.clamp(request.query.get("offset"), 0, fts.MAX_OFFSET)
        results, total = await fts.search(self.db, table, request.query.get("q", "*"), limit, offset)
        range_end = offset + len(results)
        headers = {"X-Total-Count": str(total), "Content-Range": f"{table} {offset}-{range_end}/{total}"}
        if range_end < total:
            params = dict(request.query)
            params["offset"] = str(range_end)
            params["limit"] = str(limit)
            headers["Link"] = f'<{route}?{urlencode(params)}>; rel="next"'
        return json_response(results, headers=headers)

    # -- Redis lookups --------------------------------------------------------------------------------

    async def module_id(self, sys_id: str, module_name: str, index: int) -> str | None:
        """``Proxy::System.module_id?``: ``HGET system/<sys> <Name>/<index>`` (internals §3.1)."""
        value = await self.redis.hget(f"system/{sys_id}", f"{module_name}/{index}")
        return str(value) if value is not None else None

    async def metadata(self, module_id: str) -> dict[str, Any] | None:
        """``Proxy::System.driver_metadata?``: ``GET interface/<mod>`` (internals §3.1, §3.3)."""
        raw = await self.redis.get(f"interface/{module_id}")
        if raw is None:
            return None
        meta = json.loads(raw)
        return meta if isinstance(meta, dict) else None

    # -- execute (RemoteDriver + core-client) ---------------------------------------------------------

    async def execute(
        self,
        *,
        sys_id: str,
        module_name: str,
        index: int,
        function: str,
        args: list[Any],
        user: AuthUser,
        module_id: str | None = None,
    ) -> tuple[str, int]:
        """RemoteDriver ``exec`` (internals §5.3): the driver's raw JSON and its response code.

        Raises :class:`ExecError` for the §5.3 error table; anything else (Redis down) propagates.
        """
        details = (sys_id, module_name, index)
        if module_id is None:
            module_id = await self.module_id(sys_id, module_name, index)
        meta = await self.metadata(module_id) if module_id else None
        if meta is None or module_id is None:
            raise ExecError(ErrorCode.MODULE_NOT_FOUND, "could not find module", *details)
        interface = interface_of(meta)
        if function not in interface:
            raise ExecError(ErrorCode.BAD_REQUEST, f"could not find function {function}", *details)
        if not function_visible(meta, user.clearance, function):
            raise ExecError(ErrorCode.ACCESS_DENIED, f"attempted to access privileged function {function}", *details)
        try:
            core = await self.which_core(module_id)
        except EtcdUnreachable as e:
            log.warning("cannot list cores: %s", e)
            endpoint = mask_url(self.config.etcd_url or "")
            raise ExecError(
                ErrorCode.UNEXPECTED_FAILURE, f"Could not connect to etcd endpoint: {endpoint}", *details
            ) from e
        if core is None:
            raise ExecError(ErrorCode.UNEXPECTED_FAILURE, "No registered core instances", *details)
        return await self.core_execute(core, module_id, function, args, user.id, details)

    async def core_execute(
        self,
        core: Core,
        module_id: str,
        function: str,
        args: list[Any],
        user_id: str,
        details: tuple[str, str, int],
    ) -> tuple[str, int]:
        """core-client ``execute`` with its ``Retriable`` loop (core-client ``src/placeos-core-client.cr``).

        IO errors and non-2xx answers are retried ``--retries`` times; the last failure becomes
        ``unexpected failure`` with the IO text, or ``request to <host>:<port><path> failed with
        <body>`` (core-client ``src/error.cr``; the path includes the ``?user_id=`` query it sent).
        """
        parts = urlsplit(core.uri)
        host, port = parts.hostname or "", parts.port or 3000
        path = f"/api/core/v1/command/{module_id}/execute?{urlencode({'user_id': user_id} if user_id else {})}"
        url = f"{parts.scheme}://{parts.netloc}{path}"
        payload = dumps({"__exec__": function, function: args})
        headers = {"Content-Type": "application/json", "X-Request-ID": str(uuid.uuid4())}
        failure = ""
        for attempt in range(self.config.retries + 1):
            if attempt and await self._stopping_within(self.config.retry_interval):
                break
            try:
                async with self.session.post(
                    url, data=payload, headers=headers, timeout=self.timeout(self.config.core_timeout)
                ) as resp:
                    body = await resp.text()
                    status = resp.status
                    response_code = resp.headers.get("Response-Code")
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                failure = io_error_message(e)
                log.info("core execute attempt %d to %s:%d failed: %s", attempt + 1, host, port, failure)
                continue
            if 200 <= status < 300:
                return self._core_reply(status, body, response_code, details)
            failure = f"request to {host}:{port}{path} failed with {body}"
            log.info("core execute attempt %d to %s:%d answered %d", attempt + 1, host, port, status)
        raise ExecError(ErrorCode.UNEXPECTED_FAILURE, failure, *details)

    @staticmethod
    def _core_reply(
        status: int, body: str, response_code: str | None, details: tuple[str, str, int]
    ) -> tuple[str, int]:
        """200 -> the driver's JSON; 203 -> ``request failed`` with the driver's code (§5.3)."""
        if status == 200:
            return body, int(response_code) if response_code and response_code.isdigit() else 200
        if status == 203:
            code = int(response_code) if response_code and response_code.isdigit() else 500
            try:
                info = json.loads(body)
                err = info.get("error", info.get("message"))
                if not isinstance(err, str):
                    raise ValueError("no error field")
            except (ValueError, AttributeError) as e:
                raise RuntimeError(f"failed to parse exception response, response code {code}\n{body}") from e
            backtrace = info.get("backtrace")
            raise ExecError(
                ErrorCode.REQUEST_FAILED,
                f"module raised: {err}",
                *details,
                backtrace=[str(b) for b in backtrace] if isinstance(backtrace, list) else None,
                response_code=code,
            )
        raise ExecError(ErrorCode.UNEXPECTED_FAILURE, f"unexpected response code {status}", *details)

    async def _stopping_within(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for shutdown (the retry back-off); True if the process is stopping."""
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True

    async def core_get_json(self, core: Core, path: str) -> Any:
        """One GET to a core's API; raises on IO errors and non-2xx (core-client ``parse_to_return_type``)."""
        async with self.session.get(
            f"{core.uri.rstrip('/')}/api/core/v1{path}", timeout=self.timeout(self.config.core_timeout)
        ) as resp:
            if not 200 <= resp.status < 300:
                raise RuntimeError(f"core {core.id} {path.split('?')[0]} answered {resp.status}")
            return json.loads(await resp.text())


def interface_of(meta: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``interface`` map of driver metadata (fn -> {arg -> JSON schema}); ``functions`` is the old name."""
    iface = meta.get("interface", meta.get("functions"))
    if not isinstance(iface, dict):
        return {}
    return {str(k): (v if isinstance(v, dict) else {}) for k, v in iface.items()}


def function_visible(meta: Mapping[str, Any], clearance: Clearance, function: str) -> bool:
    """RemoteDriver ``function_visible?``: ``security`` lists gate functions by clearance (§5.2)."""
    security = meta.get("security")
    if not isinstance(security, dict):
        return True
    for level, functions in security.items():
        if isinstance(functions, list) and function in functions:
            if level == "support":
                return clearance >= Clearance.SUPPORT
            if level == "administrator":
                return clearance == Clearance.ADMIN
            return False
    return True


def bearer_token(request: web.Request) -> str | None:
    """``acquire_token``: Authorization (``Bearer``/``Token`` prefixes stripped), query, cookie (§5.2)."""
    header = request.headers.get("Authorization")
    if header is not None:
        token = header.removeprefix("Bearer ").removeprefix("Token ").rstrip()
        return token or None
    other = request.query.get("bearer_token") or request.cookies.get("bearer_token")
    return other.strip() if other else None
