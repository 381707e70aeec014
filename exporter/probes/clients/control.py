"""The control WebSocket ``/api/engine/v2/systems/control`` (internals §5.4), as Backoffice speaks it.

Shared by the websocket and status_delivery probes: connect with the credential in a header (never in
the URL), bind a module's status, read replies; errors are classified by ``error_code`` 0-7, and
``unexpected_failure`` (7) by its message like an execute.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from exporter.model.vocabulary import Reason
from exporter.probes.base import ProbeContext, ProbeFailure
from exporter.probes.clients.bounded import MAX_BODY_BYTES, http_status_reason
from exporter.probes.clients.rest_api import (
    ENGINE,
    base_url,
    classify_error,
    credential_headers,
    module_parts,
    request_headers,
    tls,
)
from exporter.settings import ClusterConfig

# error_code -> reason (internals §5.4: 0 parse_error ... 7 unexpected_failure).
ERROR_CODES: dict[int, Reason] = {
    0: Reason.PROTOCOL_ERROR,
    1: Reason.NOT_FOUND,  # bad_request: the function does not exist
    2: Reason.ACCESS_DENIED,
    3: Reason.DRIVER_ERROR,  # request_failed: the driver raised
    4: Reason.PROTOCOL_ERROR,
    5: Reason.NOT_FOUND,
    6: Reason.NOT_FOUND,
}


def ws_url(http_url: str) -> str:
    parts = urlsplit(http_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, f"{parts.path.rstrip('/')}{ENGINE}/systems/control", "", ""))


def error_reason(message: dict[str, Any], cluster: ClusterConfig | None = None) -> Reason:
    code = message.get("error_code")
    if isinstance(code, int) and code in ERROR_CODES:
        return ERROR_CODES[code]
    status = message.get("code")
    return classify_error(status if isinstance(status, int) else 500, {"message": message.get("msg", "")}, cluster)


async def receive(
    ws: aiohttp.ClientWebSocketResponse, want_id: int | None, kinds: set[str], cluster: ClusterConfig | None = None
) -> dict[str, Any]:
    """The next JSON message with this id and one of these types; an error reply fails the probe."""
    while True:
        msg = await ws.receive()
        if msg.type is aiohttp.WSMsgType.TEXT:
            if msg.data == "pong":
                if "pong" in kinds:
                    return {"type": "pong"}
                continue
            try:
                data = json.loads(msg.data)
            except ValueError:
                raise ProbeFailure(Reason.PROTOCOL_ERROR, "websocket: a message that is not JSON") from None
            if not isinstance(data, dict) or data.get("id") != want_id:
                continue  # e.g. notifies of an earlier bind
            if data.get("type") == "error":
                raise ProbeFailure(
                    error_reason(data, cluster),
                    f"websocket: error_code {data.get('error_code')} {data.get('msg', '')}"[:300],
                )
            if data.get("type") in kinds:
                return data
        elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
            raise ProbeFailure(Reason.PROTOCOL_ERROR, "websocket: closed by the server")
        elif msg.type is aiohttp.WSMsgType.ERROR:
            raise ProbeFailure(Reason.PROTOCOL_ERROR, "websocket: transport error")


async def connect(ctx: ProbeContext) -> aiohttp.ClientWebSocketResponse:
    """A control session with the probe's credential; a refused upgrade fails the probe by its status."""
    settings = ctx.cluster.api
    headers = request_headers(settings) | await credential_headers(ctx)
    url = ws_url(base_url(settings))
    try:
        return await ctx.http.ws_connect(
            url, headers=headers, ssl=tls(settings, url), max_msg_size=MAX_BODY_BYTES, autoping=True,
            timeout=aiohttp.ClientWSTimeout(ws_close=1.0),
        )  # fmt: skip
    except aiohttp.WSServerHandshakeError as exc:
        reason = Reason.AUTH_FAILED if exc.status == 401 else http_status_reason(exc.status)
        raise ProbeFailure(reason, f"websocket upgrade: HTTP {exc.status}") from None


async def bind(ws: aiohttp.ClientWebSocketResponse, ctx: ProbeContext, status: str, bind_id: int = 1) -> dict[str, Any]:
    """Bind a status of the configured module; returns its first notify (the value as it is now)."""
    settings = ctx.cluster.api
    name, index = module_parts(settings.module or "")
    request = {"id": bind_id, "cmd": "bind", "sys": settings.system_id, "mod": name, "index": index, "name": status}
    await ws.send_str(json.dumps(request))
    await receive(ws, bind_id, {"success"}, ctx.cluster)
    return await receive(ws, bind_id, {"notify"}, ctx.cluster)
