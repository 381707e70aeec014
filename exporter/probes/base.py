"""The one probe signature, its result, and the mapping from exceptions to the closed reason set.

Like blackbox_exporter's probers (style.md): every probe is ``async def probe(ctx) -> Outcome``; the
deadline belongs to the caller (the scheduler cancels an overrunning probe and records ``timeout``),
and a probe may simply raise: ``classify`` turns any exception into a bounded reason plus a short,
secret-free detail for logs and /diagnose.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from exporter.reasons import Reason
from exporter.settings import ClusterConfig, Era, ProbeName, TLSSettings

# Responses we read are small JSON documents; anything larger is hostile or broken (issue 10).
MAX_BODY_BYTES = 1 << 20

Facts = Mapping[str, Any]


@dataclass(frozen=True)
class Outcome:
    """What a probe found. ``success`` is derived: only ``ok`` is success."""

    reason: Reason
    detail: str = ""
    facts: Facts = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return self.reason is Reason.OK


class ProbeFailure(Exception):
    """Raised by a probe that knows exactly why it failed."""

    def __init__(self, reason: Reason, detail: str, facts: Facts | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.facts = dict(facts or {})


@dataclass
class ProbeContext:
    """Everything a probe run may use, built afresh for each run.

    ``state`` survives between runs of the same probe of a cluster (e.g. last launch counts);
    ``shared`` is shared by all probes of a cluster (e.g. an OAuth token). ``deadline`` is in
    event-loop time; the scheduler enforces it, and probes use ``remaining()`` to bound sub-steps
    that must not be cut off mid-way (closing a connection).
    """

    cluster: ClusterConfig
    probe: ProbeName
    era: Era
    timeout: float
    deadline: float
    http: aiohttp.ClientSession
    state: dict[str, Any] = field(default_factory=dict)
    shared: dict[str, Any] = field(default_factory=dict)

    def remaining(self) -> float:
        """Seconds left before the deadline (never below a small floor)."""
        return max(0.05, self.deadline - asyncio.get_running_loop().time())


Probe = Callable[[ProbeContext], Awaitable[Outcome]]


async def close_within(closing: Awaitable[Any], seconds: float) -> bool:
    """Run a close/cleanup for at most ``seconds``; True if it finished.

    Unlike ``asyncio.wait_for``, a close that ignores cancellation (some drivers' do, on a hung peer)
    is abandoned rather than waited for, so cleanup can never hold a probe, or shutdown, forever.
    """
    task = asyncio.ensure_future(closing)
    done, _ = await asyncio.wait({task}, timeout=max(0.01, seconds))
    if not done:
        task.cancel()
        task.add_done_callback(_consume)
        return False
    _consume(task)
    return True


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio never logs "exception was never retrieved"


def ssl_context(tls: TLSSettings) -> ssl.SSLContext:
    """Client TLS context from a section's ca/cert/key/skip-verify settings."""
    ctx = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    if tls.cert_file:
        ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
    if tls.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def parse_json(raw: bytes) -> Any:
    """The body as JSON, or None when it is empty or not JSON (callers classify by status first)."""
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


async def read_json(resp: aiohttp.ClientResponse) -> Any:
    """The body as JSON, bounded in size; anything else is a protocol error."""
    body = await read_bounded(resp)
    try:
        return json.loads(body) if body else None
    except ValueError:
        raise ProbeFailure(Reason.PROTOCOL_ERROR, f"HTTP {resp.status}: body is not JSON") from None


async def read_bounded(resp: aiohttp.ClientResponse, limit: int = MAX_BODY_BYTES) -> bytes:
    """Read at most ``limit`` bytes; a larger body is refused, not buffered."""
    if resp.content_length is not None and resp.content_length > limit:
        raise ProbeFailure(Reason.PROTOCOL_ERROR, f"HTTP {resp.status}: body of {resp.content_length} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            raise ProbeFailure(Reason.PROTOCOL_ERROR, f"HTTP {resp.status}: body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def http_status_reason(status: int) -> Reason:
    """The reason for an unexpected HTTP status."""
    if status in (401,):
        return Reason.AUTH_FAILED
    if status == 403:
        return Reason.ACCESS_DENIED
    if status == 404:
        return Reason.NOT_FOUND
    if 400 <= status < 500:
        return Reason.HTTP_4XX
    if status >= 500:
        return Reason.HTTP_5XX
    return Reason.PROTOCOL_ERROR


def classify(exc: BaseException) -> tuple[Reason, str]:
    """Map any exception to a reason and a short detail. The detail is type + message, one line."""
    if isinstance(exc, ProbeFailure):
        return exc.reason, exc.detail
    reason = _reason_for(exc)
    text = " ".join(str(exc).split())[:300]
    return reason, f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _reason_for(exc: BaseException) -> Reason:
    # Most specific first. Library exception classes are matched by name so this module stays free of
    # optional imports; each backend module may raise ProbeFailure itself for finer cases.
    names = {cls.__name__ for cls in type(exc).__mro__}
    if isinstance(exc, TimeoutError) or names & {"ServerTimeoutError", "ReqlTimeoutError", "TimeoutError"}:
        return Reason.TIMEOUT
    if names & {
        "AuthenticationError",
        "AuthenticationWrongNumberOfArgsError",
        "ReqlAuthError",
        "InvalidPasswordError",
        "InvalidAuthorizationSpecificationError",
        "AuthenticationException",
    }:
        return Reason.AUTH_FAILED
    # Client libraries wrap the handshake's ssl.SSLError in their own connection errors (redis
    # ConnectionError, rethinkdb ReqlDriverError, elastic_transport TlsError): look down the chain.
    if _caused_by(exc, ssl.SSLError) or names & {
        "ClientSSLError",
        "ClientConnectorCertificateError",
        "ClientConnectorSSLError",
        "SSLError",
        "TlsError",
    }:
        return Reason.TLS
    if isinstance(exc, socket.gaierror) or _caused_by(exc, socket.gaierror):
        return Reason.DNS
    if isinstance(exc, ConnectionRefusedError) or _caused_by(exc, ConnectionRefusedError):
        return Reason.CONNECTION_REFUSED
    text = str(exc).lower()
    if names & {"ReqlDriverError", "ConnectionError", "TransportError"} and "timed out" in text:
        return Reason.TIMEOUT  # a driver's own timeout (RethinkDB handshake, ES transport)
    if names & {"ClientConnectorError", "ReqlDriverError", "ConnectionError"} and any(
        marker in text for marker in ("refused", "connect call failed", "errno 111")
    ):
        return Reason.CONNECTION_REFUSED
    # A reset (also one wrapped in a connect error) means something listened and hung up on us: the
    # port is open, so it is not "refused" (e.g. a plaintext server resetting a TLS handshake).
    if _caused_by(exc, ConnectionResetError) or _caused_by(exc, BrokenPipeError) or names & {"ServerDisconnectedError"}:
        return Reason.PROTOCOL_ERROR
    if names & {
        "InvalidResponse",
        "ResponseError",
        "ClientPayloadError",
        "ClientResponseError",
        "ContentTypeError",
        "ProtocolError",
        "ReqlDriverError",
        "JSONDecodeError",
        "UnicodeDecodeError",
        "InterfaceError",
        "ProtocolViolationError",
    }:
        return Reason.PROTOCOL_ERROR
    if isinstance(exc, ConnectionError | OSError) or names & {"ClientConnectorError", "ClientOSError"}:
        return Reason.CONNECTION_REFUSED
    return Reason.PROTOCOL_ERROR


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, kind):
            return True
        cur = cur.__cause__ or cur.__context__
    return False
