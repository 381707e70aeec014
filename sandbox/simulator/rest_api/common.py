"""What every part of the rest-api simulator shares: constants, response helpers, HS256 JWTs, the
authenticated user and the execute error types.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import hashlib
import hmac
import json
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

API = "/api/engine/v2"
ERAS = ("A", "B", "C", "D")
# Era D has no platform release (placeos-2026.md §1): rest-api's PLATFORM_VERSION is the PLACE_VERSION
# build argument, "DEV" unless a release build sets it (rest-api Dockerfile, src/constants.cr @ee8db8e).
DEFAULT_PLATFORM_VERSION = {"A": "1.2303.4", "B": "2.2403.0", "C": "2.2409.0", "D": "DEV"}
# rest-api commits of the releases read for each era (internals §11 table); D: master with #445 and #446.
REST_API_COMMIT = {"A": "76bed72", "B": "d5171ac", "C": "afea979", "D": "ee8db8e"}
REST_API_SHARD_VERSION = "2.0.0"  # rest-api shard.yml `version` (VERSION in src/constants.cr), unchanged by #445
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
