"""The `/systems/control` WebSocket session (internals §5.4): strict request parsing, bind/notify over
Redis, exec through core, pings.

A bind subscribes through the process's one status subscriber (``RestApi.subscriptions``,
sandbox.simulator.rest_api.subscriptions) and then reads the current value with an HGET on the ordinary
connection, which is sent as the first notify: so a bind succeeds and gets its first value even when
the subscriber has lost its channels (the ``redis pubsub-drop`` fault), and only later changes go
missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from sandbox.simulator.rest_api.api import RestApi
from sandbox.simulator.rest_api.common import WS_PONG_INTERVAL, AuthUser, Clearance, ErrorCode, ExecError, dumps
from sandbox.simulator.rest_api.subscriptions import Subscription

log = logging.getLogger("sandbox.rest_api")


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
    subscription: Subscription | None = None

    @property
    def meta(self) -> dict[str, Any]:
        return {"sys": self.sys, "mod": self.mod, "index": self.index, "name": self.name}


class WsSession:
    """One ``/systems/control`` socket: bindings on the shared subscriber, exec through the core path."""

    def __init__(self, api: RestApi, ws: web.WebSocketResponse, user: AuthUser) -> None:
        self.api = api
        self.ws = ws
        self.user = user
        self.bindings: dict[tuple[str, str, int, str], _Binding] = {}
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
        for task in [self._pinger, *self._tasks]:
            if task is not None:
                task.cancel()
        for binding in list(self.bindings.values()):
            if binding.subscription is not None:
                with contextlib.suppress(Exception):
                    await self.api.subscriptions.unsubscribe(binding.subscription)
        self.bindings.clear()
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
        binding = _Binding(req.id, req.sys, req.mod, req.index, req.name, "")
        try:
            module_id = await self.api.module_id(req.sys, req.mod, req.index)
            current: str | None = None
            if module_id is not None:
                binding.channel = f"status/{module_id}/{req.name}"

                async def forward(value: str, binding: _Binding = binding) -> None:
                    await self.notify(binding, value)

                binding.subscription = await self.api.subscriptions.subscribe(binding.channel, forward)
                value = await self.api.redis.hget(f"status/{module_id}", req.name)
                current = str(value) if value is not None else None
        except Exception as e:
            log.warning("websocket binding could not find system (%s)", type(e).__name__)
            if binding.subscription is not None:
                await self.api.subscriptions.unsubscribe(binding.subscription)
            await self.error(req.id, ErrorCode.MODULE_NOT_FOUND, f"could not find module: sys={req.sys} mod={req.mod}")
            return
        self.bindings[key] = binding
        await self.send({"id": req.id, "type": "success", "meta": meta})
        if current is not None:
            await self.notify(binding, current)

    async def unbind(self, req: WsRequest) -> None:
        binding = self.bindings.pop((req.sys, req.mod, req.index, req.name), None)
        if binding is not None and binding.subscription is not None:
            with contextlib.suppress(Exception):
                await self.api.subscriptions.unsubscribe(binding.subscription)
        await self.send({"id": req.id, "type": "success"})

    async def notify(self, binding: _Binding, value: str) -> None:
        await self.send({"id": binding.id, "type": "notify", "value": raw_json(value), "meta": binding.meta})
