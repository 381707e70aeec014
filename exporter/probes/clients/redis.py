"""The Redis client of one probe run, bounded in time and reply size (shared by redis and core_discovery).

Redis holds module metadata and status (internals §3.1) and, in era C, core discovery (§1.2).
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis
from redis._parsers import _AsyncRESP3Parser
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.driver_info import DriverInfo
from redis.exceptions import InvalidResponse

from exporter.model.vocabulary import Reason
from exporter.probes.base import ProbeContext
from exporter.probes.clients.bounded import MAX_BODY_BYTES, close_within, ssl_context
from exporter.settings import RedisSettings

# Named once: without it redis-py looks its own version up in the package metadata on every connect,
# about a third of a Redis probe's CPU (bench/README.md "scale").
DRIVER_INFO = DriverInfo(name="placeos-exporter", lib_version=redis.__version__)
# redis_service_manager keys for service "core" (internals §1.2).
CORE_LOOKUP = "{service_core}_lookup"
CORE_NODE = "{service_core}.%s"
# redis-py's exceptions for a rejected credential (the probes' specs' ``errors``).
ERRORS: dict[str, Reason] = {
    "AuthenticationError": Reason.AUTH_FAILED,
    "AuthenticationWrongNumberOfArgsError": Reason.AUTH_FAILED,
}


class BoundedParser(_AsyncRESP3Parser):
    """redis-py's pure-Python RESP3 parser, refusing a reply announced above MAX_BODY_BYTES bytes or
    elements instead of buffering it: redis-py itself reads any announced length. RESP3 is redis-py 8's
    default protocol, and on connect it swaps any RESP2 parser for its own RESP3 one, so the bound lives
    in a RESP3 subclass and the protocol is pinned beside it. ``_readline`` is private API (redis <9)."""

    SIZED = (b"$", b"*", b"~", b"%", b"=", b"!", b">", b"|")  # bulk/verbatim/error strings, aggregates

    async def _readline(self) -> bytes:
        line: bytes = await super()._readline()
        if line[:1] in self.SIZED and line[1:].isdigit() and int(line[1:]) > MAX_BODY_BYTES:
            raise InvalidResponse(f"Protocol Error: a reply announced at {int(line[1:])} bytes or elements")
        return line


def client(settings: RedisSettings, timeout: float) -> aioredis.Redis:
    """A client for one probe run: every socket operation bounded by the probe's timeout."""
    kwargs: dict[str, Any] = {
        "socket_connect_timeout": timeout,
        "socket_timeout": timeout,
        "retry_on_timeout": False,
        # No hidden retries: one attempt, so a failure is reported as it happened (anchors §1.9 item 2).
        "retry": Retry(NoBackoff(), 0),
        "decode_responses": True,
        "health_check_interval": 0,
        "driver_info": DRIVER_INFO,
        "protocol": 3,
        "parser_class": BoundedParser,
    }
    if settings.username:
        kwargs["username"] = settings.username
    if settings.password:
        kwargs["password"] = settings.password.get_secret_value()
    if settings.url.startswith("rediss://"):
        kwargs["ssl_ca_certs"] = str(settings.ca_file) if settings.ca_file else None
        kwargs["ssl_certfile"] = str(settings.cert_file) if settings.cert_file else None
        kwargs["ssl_keyfile"] = str(settings.key_file) if settings.key_file else None
        kwargs["ssl_cert_reqs"] = "none" if settings.insecure_skip_verify else "required"
        kwargs["ssl_check_hostname"] = not settings.insecure_skip_verify
        ssl_context(settings)  # fail early, as a TLS reason, on unreadable certificate files
    return aioredis.from_url(settings.url, **kwargs)


async def close(conn: aioredis.Redis, ctx: ProbeContext) -> None:
    """Close without letting a hung peer hold the probe past its deadline."""
    await close_within(conn.aclose(), ctx.remaining())


async def core_registrations(conn: aioredis.Redis) -> dict[str, int]:
    """Era C: lookup entries whose live key exists (live) or has expired (stale).

    PlaceOS's API does not check the live keys, so a stale entry keeps getting traffic
    (internals §1.2); this is exactly what we want to surface.
    """
    lookup = await conn.hgetall(CORE_LOOKUP)
    if not lookup:
        return {"live": 0, "stale": 0}
    pipe = conn.pipeline(transaction=False)
    for node_key in lookup:
        key = str(node_key)
        pipe.exists(key if key.startswith("{service_core}.") else CORE_NODE % key)
    alive = [bool(x) for x in await pipe.execute()]
    return {"live": sum(alive), "stale": len(alive) - sum(alive)}
