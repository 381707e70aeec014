"""The PlaceOS API double's seed data, wire constants and small helpers (tests/placeos_api.py).

Split out of the double so that no file is over ~800 lines; the facts and their sources are cited where
the double uses them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

ERAS: tuple[str, ...] = ("A", "B", "C", "D")
_ALL = ERAS
_AB = ("A", "B")
_ABC = ("A", "B", "C")

API_BASE = "/api/engine/v2"
SYSTEM_ID = "sys-1"
SYSTEM_NAME = "Meeting Room 1"
ZONE_ID = "zone-1"
MODULE_ID = "mod-1"
MODULE_NAME = "Display"
MODULE_INDEX = 1
MODULE_SLUG = f"{MODULE_NAME}_{MODULE_INDEX}"
FUNCTION = "power_state"  # idempotent getter: returns the "power" status
STATUS = "connected"
OTHER_MODULE_ID = "mod-2"  # Lighting, in no system
USER_ID = "user-1"
USER_NAME = "Support"
USER_EMAIL = "support@place.tech"
USER_PASSWORD = "development"
API_KEY_ID = "keys-7Hq2Lr"
API_KEY = f"{API_KEY_ID}.probe-secret-5fd3a0c1"
OAUTH_CLIENT_ID = "2b5e6e0b5c9d4f7aa1c3e8f0d4b6a9c2"
OAUTH_CLIENT_SECRET = "client-secret-9d1f"
CORE_ID = "01J0CQ5Z8R3W7N4T6V2X9KMB1P"  # a ULID: node_hash key in every era (hound-dog, redis_service_manager)
CORE_HOST = "core"
CORE_PORT = 3000
CORE_URI = f"http://{CORE_HOST}:{CORE_PORT}"
REDIS_HOSTPORT = "redis:6379"  # partner-environment REDIS_URL=redis://redis:6379 (internals §8)
ETCD_HOSTPORT = "etcd:2379"  # partner-environment ETCD_HOST=etcd, ETCD_PORT=2379 (internals §8)
BUILD_HOSTPORT = "build.placeos.run:443"  # core's default BUILD_URL https://build.placeos.run (internals §11.3)
DRIVER_COMMIT = "4f9a1c2"

PLATFORM_VERSIONS: Mapping[str, str] = {"A": "1.2303.4", "B": "2.2310.0", "C": "2.2410.0", "D": "2.2410.0"}
# rest-api commits read for each era (internals header and §11 table); rest-api shard version is 2.0.0 in all.
REST_API_COMMITS: Mapping[str, str] = {"A": "76bed72", "B": "d5171ac", "C": "afea979", "D": "ee8db8e"}

# failure switch -> (eras it exists in, parameters with defaults)
FAILURES: Mapping[str, tuple[tuple[str, ...], Mapping[str, Any]]] = {
    "api_down": (_ALL, {"status": 502}),
    "database_down": (_ALL, {}),
    "redis_down": (_ALL, {}),
    "redis_pubsub_broken": (_ALL, {}),
    "etcd_down": (_AB, {"discovery": "fresh", "style": "crystal"}),
    "api_etcd_unreachable": (_AB, {"discovery": "fresh", "style": "crystal"}),
    "elasticsearch_down": (_ABC, {}),
    "core_down": (_ALL, {}),
    "core_stale": (_ALL, {"error": "refused"}),
    "driver_raises": (_ALL, {"error": "display did not respond (PlaceOS::Driver::Error)", "response_code": 500}),
    "driver_crashloop": (_ALL, {}),
    "driver_compile_failed": (_ALL, {}),
    "driver_never_compiled": (_ALL, {}),
    "module_not_loaded": (_ALL, {}),
    "key_unknown": (_ALL, {}),
    "key_forbidden": (_ALL, {}),
    "system_not_found": (_ALL, {}),
    "module_not_found": (_ALL, {}),
    "build_service_unreachable": (("D",), {}),
}

_KNOBS = {
    "core_retry_delay": 0.0,
    "proxy_delay": 0.0,
    "health_delay": 0.0,
    "subscribe_ack_timeout": 2.0,  # driver 673a7c08 subscriptions.cr SUBSCRIBE_ACK_TIMEOUT = 2.seconds
    "ws_pong_interval": 80.0,  # rest-api websocket/manager.cr ping_sockets: sleep 80
    "sg_env": "production",
    "platform_version": None,
    "authority_domain": None,  # None: any Host is the authority's domain
}

# RemoteDriver::ErrorCode (driver proxy/remote_driver.cr); ``to_s`` is underscore, rest-api swaps "_" for " ".
ERROR_CODES: Mapping[str, int] = {
    "parse_error": 0,
    "bad_request": 1,
    "access_denied": 2,
    "request_failed": 3,
    "unknown_command": 4,
    "system_not_found": 5,
    "module_not_found": 6,
    "unexpected_failure": 7,
}
# rest-api utilities/responders.cr handle_execute_error
_STATUS_FOR_CODE = {
    "module_not_found": 404,
    "system_not_found": 404,
    "parse_error": 400,
    "bad_request": 400,
    "unknown_command": 400,
    "access_denied": 401,
}

_NGINX_REASONS = {502: "Bad Gateway", 503: "Service Temporarily Unavailable", 504: "Gateway Time-out"}

_INTERFACE: Mapping[str, Mapping[str, Any]] = {
    "power": {"state": {"type": "boolean"}},
    "power_state": {},
    "reboot": {},
}
_SECURITY: Mapping[str, list[str]] = {"administrator": ["reboot"]}

_CRYSTAL_BACKTRACE = ["src/placeos-rest-api/controllers/systems.cr:423:7 in 'execute'", "src/app.cr:1:1 in 'main'"]


def _dumps(value: Any) -> str:
    """Compact JSON, as Crystal's ``to_json`` writes it."""
    return json.dumps(value, separators=(",", ":"))


class _Reply(Exception):
    """Short-circuits a handler with a finished response (a before_action that rendered)."""

    def __init__(self, response: web.StreamResponse) -> None:
        super().__init__()
        self.response = response


class _Unhandled(Exception):
    """An exception PlaceOS leaves to ActionController::ErrorHandler (internals §5.1)."""


@dataclass
class _Principal:
    user_id: str
    scopes: list[str]
    permissions: int  # UserJWT::Permissions: 0 user, 1 support, 2 admin, 3 admin+support
    domain: str

    @property
    def admin(self) -> bool:
        return self.permissions >= 2

    @property
    def support(self) -> bool:
        return self.permissions >= 1

    def can(self, resources: list[str], access: str) -> bool:
        # rest-api utilities/scopes.cr: public, or any of the resources with the access ("systems" = full)
        if "public" in self.scopes:
            return True
        return any(s == r or s == f"{r}.{access}" for r in resources for s in self.scopes)


@dataclass
class _Outcome:
    """What RemoteDriver#exec gave: a result, a RemoteDriver::Error, or another exception."""

    kind: str  # "ok" | "rd_error" | "generic"
    value: str = "null"
    code: int = 200  # ok: the driver's Response-Code; rd_error: RemoteDriver::Error#response_code (default 500)
    error: str = ""
    message: str = ""
    backtrace: list[str] | None = None


@dataclass(eq=False)
class _Session:
    ws: web.WebSocketResponse
    principal: _Principal
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    bindings: dict[str, tuple[int, str, str, int, str]] = field(default_factory=dict)

    async def send(self, data: str) -> None:
        async with self.lock:
            if not self.ws.closed:
                await self.ws.send_str(data)


def _json(status: int, body: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=_dumps(body), content_type="application/json", headers=headers)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def get_parts(slug: str) -> tuple[str, int]:
    """driver proxy/remote_driver.cr ``get_parts``: split on the last ``_`` when the suffix is an integer."""
    name, sep, index = slug.rpartition("_")
    if not sep:
        return slug, 1
    if re.fullmatch(r"\s*[+-]?\d+\s*", index):
        return name, int(index)
    return slug, 1
