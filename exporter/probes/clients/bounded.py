"""Bounded transports shared by the probes: every body, frame or close is capped in size or time.

Responses the probes read are small JSON documents; anything larger is hostile or broken (issue 10),
so no answer is ever buffered whole before its size is known, and no close can hold a probe past its
deadline.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Awaitable
from typing import Any

import aiohttp

from exporter.model.vocabulary import Reason
from exporter.probes.base import ProbeFailure
from exporter.settings import TLSSettings

MAX_BODY_BYTES = 1 << 20


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
