"""The sandbox's PlaceOS rest-api: the HTTP and WebSocket surface of internals §5, on real backends.

``python -m sandbox.simulator.rest_api --port P --era A|B|C --etcd URL --redis URL --db URL --es URL
[--platform-version V --retries N --retry-interval S --backend-timeout S --core-timeout S --etcd-ttl S
--data-dir DIR]`` (``--etcd`` is needed in eras A/B; ``--data-dir`` keeps the token signing key). Each
URL may come from ``$SANDBOX_ETCD_URL``, ``$SANDBOX_REDIS_URL``, ``$SANDBOX_DB_URL``, ``$SANDBOX_ES_URL``
instead, so credentials in URLs stay out of the process list.

What it reproduces, and from where (cited as "internals §N"):

* ``GET /api/engine/v2/`` health (§5.1): era A Redis ``PING`` + etcd ``POST /v3/maintenance/status`` +
  RethinkDB ``server_status``; era B Redis + etcd + PostgreSQL; era C Redis + PostgreSQL. 200 with an
  empty body, else the production error handler's 500: ``{}`` when ``Accept`` has
  ``application/json``, an empty text/plain body otherwise (§5.1, action-controller error_handler).
* Authentication (§5.2, rest-api ``utilities/current-user.cr``): ``X-API-Key: <id>.<secret>`` (or
  ``?api-key=`` / cookie ``api-key``); the Authority is found by the request's Host (host only,
  lower-case, no port), the key loaded by id from ``api_key`` and compared as
  ``HMAC-SHA512(key=secret, data=id)`` hex, its user loaded. Every exception in that block, a database
  outage included, becomes ``401 {"error":"unknown X-API-Key"}``. Bearer JWTs (``Authorization:
  Bearer``, ``?bearer_token=``, cookie) are HS256 tokens issued by this process's OAuth token route;
  era C also loads the user and the Authority from the database (an outage there is a 500), eras A/B
  only verify the token. No credential at all is ``401 {}``.
* ``POST /auth/oauth/token`` (§5.2): the auth service's Doorkeeper token endpoint, folded into this
  process (in PlaceOS it is the Rails ``auth`` service behind the same nginx Host). ``password`` grant
  (Authority by Host, application by ``client_id`` = ``doorkeeper_app.uid``, user by email in that
  Authority, bcrypt ``password_digest``) and ``client_credentials``. Tokens carry ``iss: "POS"``,
  ``aud`` = the Authority domain, ``sub``, ``scope`` and ``u: {n, e, p, r}`` and expire in 2 h. A
  database outage is Rails' production 500.
* ``GET /api/engine/v2/version``, ``/api_keys/inspect`` (§5.1).
* ``GET /api/engine/v2/systems`` (and ``/modules``) from Elasticsearch (eras A-C, §4, §5.3) with
  ``X-Total-Count``, ``Content-Range: sys <start>-<end>/<total>`` and ``Link`` exactly as rest-api's
  ``paginate_results`` builds them (including its ``offset = end + 1``); ES down or failing is a 500.
* ``GET /systems/:id`` from the database; ``/systems/:sys/functions/:slug`` from Redis ``system/<sys>``
  and ``interface/<mod>`` (§3.3); ``/systems/:sys/:slug[/:key]`` from Redis ``status/<mod>`` (§5.3).
* Execute (``POST /systems/:sys/:slug/:method``, ``POST /modules/:id/exec/:method``) along the
  RemoteDriver + core-client path of §5.3: interface lookup, function check, clearance, rendezvous over
  the discovered cores (§1.3), ``POST <core>/api/core/v1/command/<mod>/execute?user_id=<id>``, retries on
  IO errors and non-2xx, and the §5.3 error table for the reply. Retries: ``--retries`` (default 2)
  re-tries after the first attempt, ``--retry-interval`` seconds apart (default 0.5). The real client
  retries 10 times (eras A/B) or 4 (era C) with exponential back-off up to 40 s per interval, which
  pins a caller for minutes; the sandbox keeps the same shape but short so demos and tests stay fast.
* Execute replies (§5.3 table, rest-api ``handle_execute_error``): the driver's raw JSON with its
  ``Response-Code``; ``{"error","sys_id","module_name","index","message","backtrace"}`` otherwise:
  404 ``module not found``/``could not find module``, 400 ``bad request``/``could not find function
  <fn>``, 401 ``access denied``, core 203 -> ``request failed``/``module raised: <err>`` with the
  driver's code, 500 ``unexpected failure`` with ``No registered core instances``, the IO text
  (``Error connecting to '127.0.0.1:P': Connection refused``, ``Read timed out``) or ``request to
  <host>:<port>/api/core/v1/command/<id>/execute?user_id=<id> failed with <body>`` (core-client
  ``src/error.cr``: the path it reports is the one it requested, query included). Redis failing
  during execute is ``render_error``'s 500 ``{"message": ...}``.
* When the API cannot reach etcd to list cores (eras A/B) it routes with the cores it last saw for one
  TTL (``--etcd-ttl``, hound-dog's 15 s; the real API keeps a watched list), then execute answers
  500 ``unexpected failure`` with ``message: "Could not connect to etcd endpoint: <url>"``. That is
  crystal-etcd's later ``Etcd::ConnectionError`` text (§1.4): the 1.2.5 release PlaceOS pinned had
  no such class and let the raw socket error through, and the docs' "unable to connect to etcd"
  appears in no code. The sandbox uses the crystal-etcd wording so the message names etcd, as the
  docs' triage expects. An etcd that answers with no core registered gives "No registered core
  instances".
* WebSocket ``GET /api/engine/v2/systems/control`` (§5.4, rest-api ``session.cr``): strict request
  parsing (unknown keys, a string ``id`` or a missing field get no reply at all), ``bind`` (success
  with ``meta`` only, then a ``notify`` with the current value and one per change on Redis channel
  ``status/<mod>/<name>``), ``unbind``, ``exec`` (same core path; a null ``args`` is rest-api's
  ``Cast from Nil`` error 3), ``debug``/``ignore`` accepted, text ``ping`` -> ``pong`` and a server
  ``pong`` every 80 s. Authentication happens once at upgrade, so an open socket keeps working when
  the database dies (the documented symptom, §9).
* Cluster and driver routes (§11.1, §11.3): ``/cluster`` (cores that fail are silently dropped),
  ``/cluster/:core_id`` (404 ``core not registered: <id>``), ``/drivers/:id`` with ``compilation_output``
  and ``compilation_status``, ``/drivers/:id/compiled`` (200 / 404 ``Driver not compiled yet`` / 503
  ``{"compilation_output": ...}``; core errors count as not compiled).

Sandbox-only controls (README contract point 5), not part of PlaceOS:

* ``POST /_sandbox/etcd-unreachable {"on": true|false}``: the API loses its route to etcd while etcd
  stays up (its etcd client is pointed at a closed loopback port), for discovery and health alike.
* ``POST /_sandbox/unreachable {"on": true|false}``: every PlaceOS route answers nginx's 502 page, as
  when the load balancer cannot reach rest-api (design §3 component ``api``).
* ``GET /_sandbox/ready``: 200 once the app is serving.

Left out: scopes and permission groups are not enforced (the seeded key has ``public``/Full), edge
modules, ``_TRIGGER_`` binds, the debug stream (``debug`` is acknowledged, no log lines follow),
binds to modules not yet mapped in ``system/<sys>`` waiting for ``lookup-change``, era C's extra
re-discovery retry, and every other controller. Secrets (API keys, passwords, tokens, credentials in
URLs) are never logged: the access log prints the path without its query string.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import enum
import hashlib
import hmac
import json
import logging
import os
import secrets
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
import bcrypt
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from sandbox.ports import free_port
from sandbox.simulator import discovery as core_discovery
from sandbox.simulator import seed
from sandbox.simulator.db import ConfigDB, mask_url, open_db

log = logging.getLogger("sandbox.rest_api")

API = "/api/engine/v2"
ERAS = ("A", "B", "C")
DEFAULT_PLATFORM_VERSION = {"A": "1.2303.4", "B": "2.2403.0", "C": "2.2409.0"}
# rest-api commits of the releases read for each era (internals §11 table).
REST_API_COMMIT = {"A": "76bed72", "B": "d5171ac", "C": "afea979"}
TOKEN_TTL = 7200  # Doorkeeper access tokens: 2 h (internals §5.2)
WS_PONG_INTERVAL = 80.0  # the server sends "pong" to every socket every 80 s (internals §5.4)
OAUTH_APP_TABLE = "doorkeeper_app"  # the seed's name for the OAuth application table in every era

NGINX_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
RAILS_500_HTML = (
    "<!DOCTYPE html>\n<html>\n<head>\n  <title>We're sorry, but something went wrong (500)</title>\n"
    "</head>\n<body>\n  <h1>We're sorry, but something went wrong.</h1>\n</body>\n</html>\n"
)


def dumps(obj: Any) -> str:
    """Compact JSON, as Crystal's ``to_json`` writes it."""
    return json.dumps(obj, separators=(",", ":"))


def json_response(obj: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(text=dumps(obj), status=status, content_type="application/json", headers=headers)


def production_error(request: web.Request) -> web.Response:
    """action-controller's production error handler: 500, ``{}`` for JSON clients, else empty (§5.1)."""
    if "application/json" in request.headers.get("Accept", ""):
        return web.Response(text="{}", status=500, content_type="application/json")
    return web.Response(text="", status=500, content_type="text/plain")


def request_host(request: web.Request) -> str:
    """``request.hostname``: the Host header's host only, lower-case, no port (internals §5.2)."""
    host = request.headers.get("Host", "")
    if host.startswith("["):
        return host[1 : host.find("]")].lower() if "]" in host else host.lower()
    return host.rsplit(":", 1)[0].lower() if ":" in host else host.lower()


def get_parts(module_slug: str) -> tuple[str, int]:
    """``Display_2`` -> ``("Display", 2)``; split on the last ``_`` only if the suffix is an integer.

    RemoteDriver ``get_parts`` (internals §5.3); the index defaults to 1.
    """
    name, sep, suffix = module_slug.rpartition("_")
    if sep and suffix.isdigit():
        return name, int(suffix)
    return module_slug, 1


# ---------------------------------------------------------------------------------------------------
# HS256 JWTs (doorkeeper-jwt in PlaceOS). Small on purpose: PyJWT is not a dependency.


class JWTError(Exception):
    """The bearer token is malformed, forged or expired (crystal-jwt's messages)."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwt_encode(payload: Mapping[str, Any], key: bytes) -> str:
    head = _b64url(dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64url(dumps(payload).encode())
    sig = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64url(sig)}"


def jwt_decode(token: str, key: bytes, now: float | None = None) -> dict[str, Any]:
    parts = token.split(".")
    if len(parts) != 3:
        raise JWTError("Not enough or too many segments")
    try:
        header = json.loads(_b64url_decode(parts[0]))
        payload = json.loads(_b64url_decode(parts[1]))
        sig = _b64url_decode(parts[2])
    except ValueError as e:
        raise JWTError("Invalid segment encoding") from e
    if not isinstance(header, dict) or header.get("alg") != "HS256" or not isinstance(payload, dict):
        raise JWTError("Signature verification failed")
    expected = hmac.new(key, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(sig, expected):
        raise JWTError("Signature verification failed")
    exp = payload.get("exp")
    if isinstance(exp, int | float) and (now if now is not None else time.time()) >= exp:
        raise JWTError("Signature is expired")
    return payload


# ---------------------------------------------------------------------------------------------------
# Users and errors


class Clearance(enum.IntEnum):
    """RemoteDriver clearance: what the user may call (driver ``security`` metadata, internals §5.2)."""

    USER = 0
    SUPPORT = 1
    ADMIN = 2


@dataclass(frozen=True)
class AuthUser:
    """The request's user as rest-api's ``UserJWT`` carries it."""

    id: str
    name: str
    email: str
    domain: str
    admin: bool
    support: bool
    scope: tuple[str, ...]
    via: str  # "api_key" or "bearer"

    @property
    def clearance(self) -> Clearance:
        if self.admin:
            return Clearance.ADMIN
        if self.support:
            return Clearance.SUPPORT
        return Clearance.USER

    def jwt_claims(self, now: int, ttl: int = TOKEN_TTL) -> dict[str, Any]:
        """UserJWT claims: ``p`` bit 1 = support, bit 2 = admin (internals §5.2)."""
        perms = (1 if self.support else 0) | (2 if self.admin else 0)
        return {
            "iss": "POS",
            "iat": now,
            "exp": now + ttl,
            "jti": str(uuid.uuid4()),
            "aud": self.domain,
            "scope": list(self.scope),
            "sub": self.id,
            "u": {"n": self.name, "e": self.email, "p": perms, "r": []},
        }


USER_KEY = web.RequestKey("user", AuthUser)  # the authenticated user, set by the middleware


def user_from_docs(user: Mapping[str, Any], domain: str, scope: tuple[str, ...], via: str) -> AuthUser:
    return AuthUser(
        id=str(user["id"]),
        name=str(user.get("name") or ""),
        email=str(user.get("email") or ""),
        domain=domain,
        admin=bool(user.get("sys_admin")),
        support=bool(user.get("support")),
        scope=scope,
        via=via,
    )


def user_from_claims(claims: Mapping[str, Any], via: str = "bearer") -> AuthUser:
    u = claims.get("u") if isinstance(claims.get("u"), dict) else {}
    assert isinstance(u, dict)
    perms = int(u.get("p") or 0)
    scope = claims.get("scope") or []
    return AuthUser(
        id=str(claims.get("sub") or ""),
        name=str(u.get("n") or ""),
        email=str(u.get("e") or ""),
        domain=str(claims.get("aud") or ""),
        admin=bool(perms & 2),
        support=bool(perms & 1),
        scope=tuple(str(s) for s in (scope if isinstance(scope, list) else [scope])),
        via=via,
    )


class Unauthorized(Exception):
    """rest-api ``Error::Unauthorized``: 401 with ``{"error": message}``, or ``{}`` without one."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or "")
        self.body: dict[str, Any] = {"error": message} if message is not None else {}


class ErrorCode(enum.IntEnum):
    """RemoteDriver ``ErrorCode`` (driver ``proxy/remote_driver.cr``; WebSocket ``error_code``, §5.4)."""

    PARSE_ERROR = 0
    BAD_REQUEST = 1
    ACCESS_DENIED = 2
    REQUEST_FAILED = 3
    UNKNOWN_COMMAND = 4
    SYSTEM_NOT_FOUND = 5
    MODULE_NOT_FOUND = 6
    UNEXPECTED_FAILURE = 7

    @property
    def label(self) -> str:
        """``error_code.to_s.gsub('_', ' ')``: ``unexpected failure``, ``module not found``, ..."""
        return self.name.lower().replace("_", " ")


class ExecError(Exception):
    """``RemoteDriver::Error``: rendered by ``handle_execute_error`` (internals §5.3 table)."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        sys_id: str,
        module_name: str,
        index: int,
        backtrace: list[str] | None = None,
        response_code: int = 500,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.sys_id = sys_id
        self.module_name = module_name
        self.index = index
        self.backtrace = backtrace
        self.response_code = response_code

    @property
    def http_status(self) -> int:
        if self.code in (ErrorCode.MODULE_NOT_FOUND, ErrorCode.SYSTEM_NOT_FOUND):
            return 404
        if self.code in (ErrorCode.PARSE_ERROR, ErrorCode.BAD_REQUEST, ErrorCode.UNKNOWN_COMMAND):
            return 400
        if self.code == ErrorCode.ACCESS_DENIED:
            return 401
        return self.response_code

    def body(self) -> dict[str, Any]:
        return {
            "error": self.code.label,
            "sys_id": self.sys_id,
            "module_name": self.module_name,
            "index": self.index,
            "message": self.message,
            "backtrace": self.backtrace,
        }


def io_error_message(exc: BaseException) -> str:
    """The text Crystal's HTTP client gives for an IO failure, which core-client passes on (§5.3).

    ``Error connecting to '127.0.0.1:3000': Connection refused`` (``Socket::ConnectError``),
    ``Read timed out`` (``IO::TimeoutError``), and so on.
    """
    if isinstance(exc, aiohttp.ClientConnectorError):
        err = exc.os_error
        reason = os.strerror(err.errno) if err.errno else (err.strerror or str(err))
        return f"Error connecting to '{exc.host}:{exc.port}': {reason}"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return "Read timed out"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "Unexpected end of http response"
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientResponseError):
        return "Unexpected end of http response"
    return str(exc) or type(exc).__name__


class EtcdUnreachable(Exception):
    """The API could not list cores because etcd did not answer (eras A/B)."""


# ---------------------------------------------------------------------------------------------------
# Configuration and shared state


@dataclass
class RestApiConfig:
    """Everything the command line sets. URLs may carry credentials; they are never logged unmasked."""

    port: int
    era: str
    redis_url: str = field(repr=False)
    db_url: str = field(repr=False)
    es_url: str = field(repr=False)
    etcd_url: str | None = field(default=None, repr=False)
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


class AccessLogger(AbstractAccessLogger):
    """Method, path (never the query string: it may hold ``api-key`` or ``bearer_token``), status."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info("%s %s %s %.1fms", request.method, request.path, response.status, time * 1000)


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
        self.stopping = asyncio.Event()
        es = urlsplit(config.es_url)
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

    async def stop(self) -> None:
        self.stopping.set()
        for session in list(self.sessions):
            await session.close()
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
        """The API-side discovery client (etcd in A/B, Redis in C); rebuilt when the etcd URL changes."""
        if self.era == "C":
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

        Era C: ``HGETALL {service_core}_lookup`` (stale entries kept, as real). Eras A/B: the
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
        if self.era == "C":
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
        """``paginate_results`` (rest-api ``controllers/application.cr``): the headers of internals §4."""
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


# ---------------------------------------------------------------------------------------------------
# WebSocket session (internals §5.4)

WS_COMMANDS = ("exec", "bind", "unbind", "debug", "ignore")
WS_FIELDS = frozenset({"id", "cmd", "sys", "mod", "index", "name", "args"})


@dataclass(frozen=True)
class WsRequest:
    id: int
    cmd: str
    sys: str
    mod: str
    index: int
    name: str
    args: list[Any] | None


def parse_ws_request(text: str) -> WsRequest | None:
    """``Request.from_json`` with ``JSON::Serializable::Strict``; None when it would not parse.

    Unknown keys, a string ``id``, a missing ``sys``/``mod``/``name``/``cmd`` or an unknown command
    all fail, and rest-api then sends nothing back (session.cr ``parse_request``).
    """
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or not set(data) <= WS_FIELDS:
        return None
    rid, cmd, index, args = data.get("id"), data.get("cmd"), data.get("index", 1), data.get("args")
    if not isinstance(rid, int) or isinstance(rid, bool) or not -(2**63) <= rid < 2**63:
        return None
    if not isinstance(cmd, str) or cmd.lower() not in WS_COMMANDS:
        return None
    if not isinstance(index, int) or isinstance(index, bool) or not -(2**31) <= index < 2**31:
        return None
    if args is not None and not isinstance(args, list):
        return None
    strings = [data.get(k) for k in ("sys", "mod", "name")]
    if not all(isinstance(s, str) for s in strings):
        return None
    sys_id, mod, name = (str(s) for s in strings)
    return WsRequest(id=rid, cmd=cmd.lower(), sys=sys_id, mod=mod, index=index, name=name, args=args)


def raw_json(value: str) -> Any:
    """A Redis status value (a JSON string) as JSON; rest-api splices it in raw."""
    try:
        return json.loads(value)
    except ValueError:
        return value


@dataclass
class _Binding:
    id: int
    sys: str
    mod: str
    index: int
    name: str
    channel: str

    @property
    def meta(self) -> dict[str, Any]:
        return {"sys": self.sys, "mod": self.mod, "index": self.index, "name": self.name}


class WsSession:
    """One ``/systems/control`` socket: bindings on Redis pub/sub, exec through the core path."""

    def __init__(self, api: RestApi, ws: web.WebSocketResponse, user: AuthUser) -> None:
        self.api = api
        self.ws = ws
        self.user = user
        self.bindings: dict[tuple[str, str, int, str], _Binding] = {}
        self._pubsub: Any = None
        self._listener: asyncio.Task[None] | None = None
        self._pinger: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        self._pinger = asyncio.create_task(self._pong_every())
        try:
            async for msg in self.ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                if msg.data == "ping":
                    await self.send_text("pong")
                    continue
                request = parse_ws_request(msg.data)
                if request is None:
                    log.info("websocket: request failed to parse; no reply (as rest-api)")
                    continue
                task = asyncio.create_task(self.dispatch(request))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            await self.close()

    async def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        for task in [self._pinger, self._listener, *self._tasks]:
            if task is not None:
                task.cancel()
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
        if not self.ws.closed:
            with contextlib.suppress(Exception):
                await self.ws.close()

    async def send_text(self, text: str) -> None:
        if not self.ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.send_str(text)

    async def send(self, obj: Mapping[str, Any]) -> None:
        await self.send_text(dumps(obj))

    async def error(self, rid: int, code: ErrorCode, msg: str, status: int = 500) -> None:
        await self.send({"id": rid, "type": "error", "error_code": int(code), "msg": msg, "code": status})

    async def _pong_every(self) -> None:
        while not await self._closed_within(WS_PONG_INTERVAL):
            await self.send_text("pong")

    async def _closed_within(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self._closed.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True

    async def dispatch(self, req: WsRequest) -> None:
        try:
            if req.cmd == "bind":
                await self.bind(req)
            elif req.cmd == "unbind":
                await self.unbind(req)
            elif req.cmd == "exec":
                await self.exec(req)
            else:  # debug / ignore: acknowledged; the sandbox's cores stream no debug output
                await self.send({"id": req.id, "type": "success"})
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("websocket request failed")
            await self.error(req.id, ErrorCode.UNEXPECTED_FAILURE, "failed to execute request")

    async def exec(self, req: WsRequest) -> None:
        if req.args is None:
            # ``request.args.as(Array(JSON::Any))`` raises; on_message answers RequestFailed (session.cr).
            await self.error(req.id, ErrorCode.REQUEST_FAILED, "Cast from Nil to Array(JSON::Any) failed")
            return
        try:
            value, code = await self.api.execute(
                sys_id=req.sys,
                module_name=req.mod,
                index=req.index,
                function=req.name,
                args=req.args,
                user=self.user,
            )
        except ExecError as e:
            await self.error(req.id, e.code, e.message, e.response_code)
            return
        except Exception as e:
            log.warning("websocket exec failed: %s", type(e).__name__)
            await self.error(req.id, ErrorCode.UNEXPECTED_FAILURE, "failed to execute request")
            return
        meta = {"sys": req.sys, "mod": req.mod, "index": req.index, "name": req.name}
        await self.send({"id": req.id, "type": "success", "meta": meta, "value": raw_json(value), "code": code})

    async def bind(self, req: WsRequest) -> None:
        key = (req.sys, req.mod, req.index, req.name)
        meta = {"sys": req.sys, "mod": req.mod, "index": req.index, "name": req.name}
        if req.mod.startswith("_") and self.user.clearance < Clearance.SUPPORT:
            await self.error(req.id, ErrorCode.ACCESS_DENIED, "attempted to access protected module")
            return
        if key in self.bindings:
            await self.send({"id": req.id, "type": "success", "meta": meta})
            return
        try:
            module_id = await self.api.module_id(req.sys, req.mod, req.index)
            binding = _Binding(req.id, req.sys, req.mod, req.index, req.name, "")
            current: str | None = None
            if module_id is not None:
                binding.channel = f"status/{module_id}/{req.name}"
                await self._subscribe(binding.channel)
                value = await self.api.redis.hget(f"status/{module_id}", req.name)
                current = str(value) if value is not None else None
        except Exception as e:
            log.warning("websocket binding could not find system (%s)", type(e).__name__)
            await self.error(req.id, ErrorCode.MODULE_NOT_FOUND, f"could not find module: sys={req.sys} mod={req.mod}")
            return
        self.bindings[key] = binding
        await self.send({"id": req.id, "type": "success", "meta": meta})
        if current is not None:
            await self.notify(binding, current)

    async def unbind(self, req: WsRequest) -> None:
        binding = self.bindings.pop((req.sys, req.mod, req.index, req.name), None)
        still_used = binding is not None and any(b.channel == binding.channel for b in self.bindings.values())
        if binding is not None and binding.channel and self._pubsub is not None and not still_used:
            with contextlib.suppress(Exception):
                await self._pubsub.unsubscribe(binding.channel)
        await self.send({"id": req.id, "type": "success"})

    async def notify(self, binding: _Binding, value: str) -> None:
        await self.send({"id": binding.id, "type": "notify", "value": raw_json(value), "meta": binding.meta})

    async def _subscribe(self, channel: str) -> None:
        if self._pubsub is None:
            self._pubsub = self.api.redis.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(channel)
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen())

    async def _listen(self) -> None:
        """Forward ``status/<mod>/<name>`` messages; after a Redis failure, resubscribe when it is back."""
        while not self._closed.is_set():
            try:
                msg = await self._pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("websocket status subscription lost (%s); retrying", type(e).__name__)
                if await self._closed_within(1.0):
                    return
                await self._resubscribe()
                continue
            if not msg or msg.get("type") != "message":
                continue
            channel = str(msg.get("channel"))
            for binding in list(self.bindings.values()):
                if binding.channel == channel:
                    await self.notify(binding, str(msg.get("data")))

    async def _resubscribe(self) -> None:
        channels = sorted({b.channel for b in self.bindings.values() if b.channel})
        old, self._pubsub = self._pubsub, self.api.redis.pubsub(ignore_subscribe_messages=True)
        with contextlib.suppress(Exception):
            await old.aclose()
        if channels:
            with contextlib.suppress(Exception):
                await self._pubsub.subscribe(*channels)


# ---------------------------------------------------------------------------------------------------
# Routes

RouteHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def routes(api: RestApi) -> web.RouteTableDef:
    r = web.RouteTableDef()

    # -- health, version, auth ------------------------------------------------------------------------

    @r.get(f"{API}/")
    async def health(request: web.Request) -> web.StreamResponse:
        checks = api.health_checks()
        results = await asyncio.gather(*(c() for c in checks.values()), return_exceptions=True)
        failed = [name for name, res in zip(checks, results, strict=True) if isinstance(res, BaseException)]
        if failed:
            log.warning("not healthy: %s", ", ".join(failed))
            return production_error(request)
        return web.Response(status=200, text="", content_type="text/plain")

    @r.get(f"{API}/version")
    async def version(request: web.Request) -> web.StreamResponse:
        return json_response(
            {
                "service": "rest-api",
                "commit": REST_API_COMMIT[api.era],
                "version": f"sandbox-{api.era.lower()}",
                "build_time": "2024-01-01T00:00:00Z",
                "platform_version": api.config.platform_version,
            }
        )

    @r.get(f"{API}/api_keys/inspect")
    async def inspect(request: web.Request) -> web.StreamResponse:
        user: AuthUser = request[USER_KEY]
        return json_response(user.jwt_claims(int(time.time())))

    @r.post("/auth/oauth/token")
    async def oauth_token(request: web.Request) -> web.StreamResponse:
        return await token_route(api, request)

    # -- systems --------------------------------------------------------------------------------------

    @r.get(f"{API}/systems")
    async def systems_index(request: web.Request) -> web.StreamResponse:
        return await api.paginate(request, "sys", f"{API}/systems")

    @r.get(f"{API}/modules")
    async def modules_index(request: web.Request) -> web.StreamResponse:
        return await api.paginate(request, "mod", f"{API}/modules")

    @r.get(f"{API}/drivers")
    async def drivers_index(request: web.Request) -> web.StreamResponse:
        return await api.paginate(request, "driver", f"{API}/drivers")

    @r.get(f"{API}/systems/control")
    async def control(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        session = WsSession(api, ws, request[USER_KEY])
        api.sessions.add(session)
        try:
            await session.run()
        finally:
            api.sessions.discard(session)
        return ws

    @r.get(f"{API}/systems/{{sys_id}}")
    async def system_show(request: web.Request) -> web.StreamResponse:
        sys_id = request.match_info["sys_id"]
        doc = await api.db.get("sys", sys_id)
        if doc is None:
            return json_response({"error": f"could not find ControlSystem {sys_id}"}, 404)
        return json_response(doc)

    @r.get(f"{API}/systems/{{sys_id}}/functions/{{module_slug}}")
    async def functions(request: web.Request) -> web.StreamResponse:
        sys_id, slug = request.match_info["sys_id"], request.match_info["module_slug"]
        name, index = get_parts(slug)
        module_id = await api.module_id(sys_id, name, index)
        meta = await api.metadata(module_id) if module_id else None
        if meta is None:
            return json_response({"error": f"metadata not found for {slug} on {sys_id}"}, 404)
        user: AuthUser = request[USER_KEY]
        out: dict[str, Any] = {}
        for fn, params in interface_of(meta).items():
            if function_visible(meta, user.clearance, fn):
                out[fn] = {"arity": len(params), "params": params, "order": list(params)}
        return json_response(out)

    @r.get(f"{API}/systems/{{sys_id}}/{{module_slug}}")
    async def state(request: web.Request) -> web.StreamResponse:
        name, index = get_parts(request.match_info["module_slug"])
        module_id = await api.module_id(request.match_info["sys_id"], name, index)
        if module_id is None:
            return json_response({})
        return json_response(await api.redis.hgetall(f"status/{module_id}"))

    @r.get(f"{API}/systems/{{sys_id}}/{{module_slug}}/{{key}}")
    async def state_key(request: web.Request) -> web.StreamResponse:
        name, index = get_parts(request.match_info["module_slug"])
        module_id = await api.module_id(request.match_info["sys_id"], name, index)
        if module_id is None:
            return json_response(None)
        value = await api.redis.hget(f"status/{module_id}", request.match_info["key"])
        if value is None:
            raise KeyError(request.match_info["key"])  # rest-api raises KeyError -> 500 (§5.3)
        return web.Response(text=str(value), content_type="application/json")

    @r.post(f"{API}/systems/{{sys_id}}/{{module_slug}}/{{method}}")
    async def system_execute(request: web.Request) -> web.StreamResponse:
        args = await json_array_body(request)
        if isinstance(args, web.Response):
            return args
        name, index = get_parts(request.match_info["module_slug"])
        return await execute_response(
            api,
            sys_id=request.match_info["sys_id"],
            module_name=name,
            index=index,
            function=request.match_info["method"],
            args=args,
            user=request[USER_KEY],
        )

    @r.post(f"{API}/modules/{{module_id}}/exec/{{method}}")
    async def module_execute(request: web.Request) -> web.StreamResponse:
        module_id = request.match_info["module_id"]
        mod = await api.db.get("mod", module_id)
        if mod is None:
            return json_response({"error": f"could not find Module {module_id}"}, 404)
        args = await json_array_body(request)
        if isinstance(args, web.Response):
            return args
        return await execute_response(
            api,
            sys_id=str(mod.get("control_system_id") or ""),
            module_name=str(mod.get("custom_name") or mod.get("name") or ""),
            index=1,
            function=request.match_info["method"],
            args=args,
            user=request[USER_KEY],
            module_id=module_id,
        )

    @r.get(f"{API}/modules/{{module_id}}/state")
    async def module_state(request: web.Request) -> web.StreamResponse:
        return json_response(await api.redis.hgetall(f"status/{request.match_info['module_id']}"))

    # -- cluster and drivers (internals §11) ----------------------------------------------------------

    @r.get(f"{API}/cluster")
    async def cluster_index(request: web.Request) -> web.StreamResponse:
        require_admin(request)
        cores = await api.cores()
        if not truthy(request.query.get("include_status")):
            return json_response([{"id": c.id, "uri": c.uri} for c in cores])

        async def node_status(core: Core) -> dict[str, Any] | None:
            try:
                load, status = await asyncio.gather(
                    api.core_get_json(core, "/status/load"), api.core_get_json(core, "/status")
                )
            except Exception as e:
                log.warning("failed to request core status from %s: %s", core.id, type(e).__name__)
                return None  # silently dropped, as real (internals §11.1)
            return {"id": core.id, "uri": core.uri, "load": load, "status": status}

        found = await asyncio.gather(*(node_status(c) for c in cores))
        return json_response([n for n in found if n is not None])

    @r.get(f"{API}/cluster/{{core_id}}")
    async def cluster_show(request: web.Request) -> web.StreamResponse:
        require_admin(request)
        core_id = request.match_info["core_id"]
        core = next((c for c in await api.cores() if c.id == core_id), None)
        if core is None:
            return json_response({"error": f"core not registered: {core_id}"}, 404)
        loaded = await api.core_get_json(core, "/status/loaded")
        local: dict[str, list[str]] = dict(loaded.get("local") or {})
        edge: dict[str, dict[str, list[str]]] = dict(loaded.get("edge") or {})
        keys = sorted({k.rpartition("/")[2] for k in local} | {k.rpartition("/")[2] for p in edge.values() for k in p})
        include = truthy(request.query.get("include_status"))

        async def entry(key: str) -> dict[str, Any]:
            status: dict[str, Any] = {}
            if include:
                try:
                    status = await api.core_get_json(core, f"/status/driver?path={quote(key, safe='')}")
                except Exception:
                    status = {}  # core-client's driver_status returns an empty DriverStatus on error
                if isinstance(status, dict) and "running" in status:
                    status = {"local": status, "edge": {}}  # a bare Metadata: the local process's
            return {
                "driver": key,
                "local": {"modules": local.get(key, []), "status": status.get("local")},
                "edge": {
                    eid: {"modules": procs.get(key, []), "status": (status.get("edge") or {}).get(eid)}
                    for eid, procs in edge.items()
                },
            }

        return json_response(list(await asyncio.gather(*(entry(k) for k in keys))))

    @r.get(f"{API}/drivers/{{driver_id}}")
    async def driver_show(request: web.Request) -> web.StreamResponse:
        driver = await api.db.get("driver", request.match_info["driver_id"])
        if driver is None:
            return json_response({"error": f"could not find Driver {request.match_info['driver_id']}"}, 404)
        cores = await api.cores()
        compiled = await asyncio.gather(*(driver_compiled(api, c, driver) for c in cores))
        out = dict(driver)
        out.setdefault("compilation_output", None)
        out["compilation_status"] = {c.id: ok for c, ok in zip(cores, compiled, strict=True)}
        return json_response(out)

    @r.get(f"{API}/drivers/{{driver_id}}/compiled")
    async def driver_is_compiled(request: web.Request) -> web.StreamResponse:
        driver = await api.db.get("driver", request.match_info["driver_id"])
        if driver is None:
            return json_response({"error": f"could not find Driver {request.match_info['driver_id']}"}, 404)
        core = await api.which_core(str(driver.get("file_name") or ""))
        if core is not None and await driver_compiled(api, core, driver):
            return web.Response(status=200, text="", content_type="text/plain")
        output = driver.get("compilation_output")
        if output is None or str(driver.get("commit") or "").startswith("RECOMPILE"):
            return json_response({"error": "Driver not compiled yet"}, 404)
        return json_response({"compilation_output": output}, 503)

    # -- sandbox controls -----------------------------------------------------------------------------

    @r.get("/_sandbox/ready")
    async def ready(request: web.Request) -> web.StreamResponse:
        return json_response({"ready": True, "era": api.era})

    @r.post("/_sandbox/etcd-unreachable")
    async def etcd_unreachable(request: web.Request) -> web.StreamResponse:
        if api.era == "C":
            return json_response({"error": "era C does not use etcd"}, 400)
        on = await switch_body(request)
        if on is None:
            return json_response({"error": 'body must be {"on": true|false}'}, 400)
        api.etcd_unreachable = on
        log.warning("sandbox: etcd %s from rest-api", "unreachable" if on else "reachable again")
        return json_response({"etcd_unreachable": on})

    @r.post("/_sandbox/unreachable")
    async def unreachable(request: web.Request) -> web.StreamResponse:
        on = await switch_body(request)
        if on is None:
            return json_response({"error": 'body must be {"on": true|false}'}, 400)
        api.unreachable = on
        log.warning("sandbox: rest-api %s behind the load balancer", "unreachable" if on else "reachable")
        return json_response({"unreachable": on})

    return r


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true")


def require_admin(request: web.Request) -> None:
    """``check_admin``: 403 with an empty body for non-admins (rest-api ``Error::Forbidden``)."""
    user: AuthUser = request[USER_KEY]
    if not user.admin:
        raise web.HTTPForbidden(text="", content_type="text/plain")


async def switch_body(request: web.Request) -> bool | None:
    try:
        body = await request.json()
    except ValueError:
        return None
    on = body.get("on") if isinstance(body, dict) else None
    return on if isinstance(on, bool) else None


async def json_array_body(request: web.Request) -> list[Any] | web.Response:
    """``Array(JSON::Any).from_json(body)``: a non-array is a 400 parse error (internals §5.3)."""
    if not request.headers.get("Content-Type", "").startswith("application/json"):
        return json_response({"error": "Unsupported Media Type", "accepts": ["application/json"]}, 415)
    text = await request.text()
    try:
        body = json.loads(text)
    except ValueError:
        return json_response({"error": "Unexpected token at line 1, column 1"}, 400)
    if not isinstance(body, list):
        kind = {dict: "BeginObject", str: "String", bool: "Bool", type(None): "Null"}.get(type(body), "Number")
        return json_response({"error": f"Expected BeginArray but was {kind} at line 1, column 1"}, 400)
    return body


async def execute_response(api: RestApi, **kwargs: Any) -> web.StreamResponse:
    """systems/modules ``execute``: raw driver JSON with its code, or the §5.3 error body."""
    try:
        value, code = await api.execute(**kwargs)
    except ExecError as e:
        log.info("execute failed: %s: %s", e.code.label, e.message)
        return json_response(e.body(), e.http_status)
    except Exception as e:
        # Other exceptions (Redis down): render_error(500, e.message) in production (§5.3).
        log.warning("core execute request failed: %s", type(e).__name__)
        return json_response({"message": str(e) or type(e).__name__}, 500)
    return web.Response(text=value, status=code, content_type="application/json")


async def driver_compiled(api: RestApi, core: Core, driver: Mapping[str, Any]) -> bool:
    """core ``GET /drivers/<file>/compiled``; any error counts as not compiled (internals §11.3)."""
    params = urlencode(
        {
            "commit": str(driver.get("commit") or ""),
            "repository": str(driver.get("repository_id") or ""),
            "tag": str(driver.get("id") or ""),
        }
    )
    path = f"/drivers/{quote(str(driver.get('file_name') or ''), safe='')}/compiled?{params}"
    try:
        return bool(await api.core_get_json(core, path) is True)
    except Exception:
        return False


# ---------------------------------------------------------------------------------------------------
# OAuth token route (auth service, Doorkeeper)


def oauth_error(error: str, description: str, status: int) -> web.Response:
    return json_response({"error": error, "error_description": description}, status)


INVALID_GRANT = (
    "The provided authorization grant is invalid, expired, revoked, does not match the redirection URI "
    "used in the authorization request, or was issued to another client."
)
INVALID_CLIENT = (
    "Client authentication failed due to unknown client, no client authentication included, or "
    "unsupported authentication method."
)


def rails_500(request: web.Request) -> web.Response:
    """Rails' production 500: JSON for JSON clients, the static page otherwise."""
    if "application/json" in request.headers.get("Accept", ""):
        return json_response({"status": 500, "error": "Internal Server Error"}, 500)
    return web.Response(text=RAILS_500_HTML, status=500, content_type="text/html")


async def token_route(api: RestApi, request: web.Request) -> web.StreamResponse:
    """``POST /auth/oauth/token``: password and client_credentials grants (internals §5.2)."""
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except ValueError:
            body = None
        params: dict[str, str] = {k: str(v) for k, v in body.items()} if isinstance(body, dict) else {}
    else:
        params = {k: str(v) for k, v in (await request.post()).items()}
    grant = params.get("grant_type", "")
    if grant not in ("password", "client_credentials"):
        return oauth_error(
            "unsupported_grant_type", "The authorization grant type is not supported by the authorization server.", 400
        )
    try:
        authority = await api.authority_for(request)
        apps = await api.db.find_by(OAUTH_APP_TABLE, "uid", params.get("client_id", ""))
        app = apps[0] if apps else None
        if app is None or (authority is not None and app.get("owner_id") not in (None, authority.get("id"))):
            return oauth_error("invalid_client", INVALID_CLIENT, 401)
        if grant == "client_credentials":
            stored = app.get("secret")
            if stored is not None and not hmac.compare_digest(str(stored), params.get("client_secret", "")):
                return oauth_error("invalid_client", INVALID_CLIENT, 401)
            user = AuthUser(
                id=str(app["id"]),
                name=str(app.get("name") or ""),
                email="",
                domain=str((authority or {}).get("domain", "")),
                admin=False,
                support=False,
                scope=tuple(str(app.get("scopes") or "public").split()),
                via="bearer",
            )
        else:
            if authority is None:
                return oauth_error("invalid_grant", INVALID_GRANT, 400)
            candidates = await api.db.find_by("user", "email", params.get("username", "").lower())
            user_doc = next((u for u in candidates if u.get("authority_id") == authority.get("id")), None)
            digest = str((user_doc or {}).get("password_digest") or "")
            password = params.get("password", "")
            if user_doc is None or not digest or not bcrypt.checkpw(password.encode(), digest.encode()):
                return oauth_error("invalid_grant", INVALID_GRANT, 400)
            scope = tuple(params.get("scope", "public").split()) or ("public",)
            user = user_from_docs(user_doc, str(authority.get("domain", "")), scope, "bearer")
    except Exception as e:
        log.warning("oauth token: database failure (%s)", type(e).__name__)
        return rails_500(request)
    now = int(time.time())
    token = jwt_encode(user.jwt_claims(now), api.config.jwt_secret)
    reply: dict[str, Any] = {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": TOKEN_TTL,
        "scope": " ".join(user.scope),
        "created_at": now,
    }
    if grant == "password":
        reply["refresh_token"] = secrets.token_urlsafe(32)
    return json_response(reply)


# ---------------------------------------------------------------------------------------------------
# App factory


def _needs_auth(request: web.Request) -> bool:
    path = request.path
    return path.startswith(f"{API}/") and path != f"{API}/"


API_KEY = web.AppKey("api", RestApi)


def make_app(config: RestApiConfig, db: ConfigDB | None = None) -> web.Application:
    """The rest-api app. ``db`` may be given (tests); otherwise it is opened from ``config.db_url``."""
    api = RestApi(config, db)

    @web.middleware
    async def middleware(request: web.Request, handler: RouteHandler) -> web.StreamResponse:
        if api.unreachable and not request.path.startswith("/_sandbox/"):
            return web.Response(text=NGINX_502, status=502, content_type="text/html")
        try:
            if _needs_auth(request):
                try:
                    request[USER_KEY] = await api.authenticate(request)
                except Unauthorized as e:
                    return json_response(e.body, 401)
            response = await handler(request)
        except web.HTTPException:
            raise
        except Exception as e:
            # The production error handler (§5.1): the reason goes to the log, never to the client.
            log.warning("%s %s failed: %s: %s", request.method, request.path, type(e).__name__, e)
            response = production_error(request)
        if not response.prepared:
            response.headers.setdefault("X-Request-ID", request.headers.get("X-Request-ID", str(uuid.uuid4())))
        return response

    app = web.Application(middlewares=[middleware])
    app[API_KEY] = api

    async def on_startup(app: web.Application) -> None:
        await api.start()
        log.info(
            "rest-api era %s on %s:%d (redis %s, db %s, es %s, etcd %s)",
            config.era,
            config.host,
            config.port,
            mask_url(config.redis_url),
            mask_url(config.db_url),
            mask_url(config.es_url),
            mask_url(config.etcd_url) if config.etcd_url else "-",
        )

    async def on_shutdown(app: web.Application) -> None:
        api.stopping.set()
        for session in list(api.sessions):
            await session.close()

    async def on_cleanup(app: web.Application) -> None:
        await api.stop()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    app.router.add_routes(routes(api))
    return app


def parse_args(argv: list[str] | None = None) -> RestApiConfig:
    p = argparse.ArgumentParser(prog="python -m sandbox.simulator.rest_api", description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--era", choices=[*ERAS, *(e.lower() for e in ERAS)], default="A")
    p.add_argument(
        "--etcd",
        default=os.environ.get("SANDBOX_ETCD_URL"),
        help="etcd gRPC-gateway URL (eras A/B), e.g. http://127.0.0.1:2379 (or $SANDBOX_ETCD_URL)",
    )
    p.add_argument(
        "--redis", default=os.environ.get("SANDBOX_REDIS_URL"), help="redis://127.0.0.1:6379 (or $SANDBOX_REDIS_URL)"
    )
    p.add_argument(
        "--db",
        default=os.environ.get("SANDBOX_DB_URL"),
        help="rethinkdb://... (era A) or postgresql://... (B/C) (or $SANDBOX_DB_URL)",
    )
    p.add_argument(
        "--es",
        default=os.environ.get("SANDBOX_ES_URL"),
        help="Elasticsearch URL, e.g. http://127.0.0.1:9200 (or $SANDBOX_ES_URL)",
    )
    p.add_argument("--platform-version", help="reported by /version (default per era)")
    p.add_argument("--retries", type=int, default=2, help="core execute re-tries (real: 10 in A/B, 4 in C)")
    p.add_argument("--retry-interval", type=float, default=0.5, help="seconds between core retries")
    p.add_argument("--backend-timeout", type=float, default=2.0, help="per-call timeout to Redis/DB/ES/etcd")
    p.add_argument("--core-timeout", type=float, default=10.0, help="per-attempt timeout to core")
    p.add_argument("--etcd-ttl", type=int, default=15, help="seconds the API routes with cores last seen in etcd")
    p.add_argument("--data-dir", type=Path, help="keeps the token signing key across restarts")
    a = p.parse_args(argv)
    if not a.redis:
        p.error("--redis (or $SANDBOX_REDIS_URL) is required")
    if not a.db:
        p.error("--db (or $SANDBOX_DB_URL) is required")
    if not a.es:
        p.error("--es (or $SANDBOX_ES_URL) is required")
    return RestApiConfig(
        port=a.port,
        host=a.host,
        era=a.era,
        etcd_url=a.etcd,
        redis_url=a.redis,
        db_url=a.db,
        es_url=a.es,
        platform_version=a.platform_version,
        retries=max(0, a.retries),
        retry_interval=max(0.0, a.retry_interval),
        backend_timeout=a.backend_timeout,
        core_timeout=a.core_timeout,
        etcd_ttl=a.etcd_ttl,
        jwt_secret=load_jwt_secret(a.data_dir),
    )


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = parse_args(argv)
    # run_app handles SIGTERM/SIGINT: graceful shutdown, then exit 0 (README contract point 1).
    web.run_app(
        make_app(config),
        host=config.host,
        port=config.port,
        print=None,
        access_log_class=AccessLogger,
        access_log=logging.getLogger("sandbox.rest_api.access"),
        shutdown_timeout=5.0,
    )


if __name__ == "__main__":
    main()
