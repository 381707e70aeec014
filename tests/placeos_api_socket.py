"""The PlaceOS API double's control WebSocket (internals §5.4)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import WSMsgType, web
from placeos_api_wire import (
    ERROR_CODES,
    MODULE_ID,
    _dumps,
    _Session,
)


class ControlSocket:
    """Routes of the PlaceOS API double (tests/placeos_api.py); mixed into ``PlaceOSApi``."""

    # ------------------------------------------------------------------ WebSocket (internals §5.4)

    @staticmethod
    def _meta(sys_id: str, mod: str, index: int, name: str) -> dict[str, Any]:
        return {"sys": sys_id, "mod": mod, "index": index, "name": name}

    def _notify(self, bind_id: int, sys_id: str, mod: str, index: int, name: str, raw: str) -> str:
        meta = _dumps(self._meta(sys_id, mod, index, name))
        return f'{{"id":{bind_id},"type":"notify","value":{raw},"meta":{meta}}}'

    @staticmethod
    def _error(req_id: int, code: str, msg: str, response_code: int = 500) -> str:
        return _dumps(
            {"id": req_id, "type": "error", "error_code": ERROR_CODES[code], "msg": msg, "code": response_code}
        )

    @staticmethod
    def _parse(data: str) -> dict[str, Any] | None:
        """``JSON::Serializable::Strict`` Request: unknown keys, wrong types -> None (no reply is sent)."""
        try:
            req = json.loads(data)
        except ValueError:
            return None
        if not isinstance(req, dict) or not set(req) <= {"id", "cmd", "sys", "mod", "index", "name", "args"}:
            return None
        if not all(k in req for k in ("id", "cmd", "sys", "mod", "name")):
            return None
        if not isinstance(req["id"], int) or isinstance(req["id"], bool):
            return None
        if not (isinstance(req["cmd"], str) and req["cmd"].replace("_", "").lower() in _COMMANDS):
            return None
        if not all(isinstance(req[k], str) for k in ("sys", "mod", "name")):
            return None
        index = req.get("index", 1)
        if not isinstance(index, int) or isinstance(index, bool):
            return None
        args = req.get("args")
        if args is not None and not isinstance(args, list):
            return None
        req["cmd"] = req["cmd"].replace("_", "").lower()
        req["index"] = index
        return req

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        p = self._authorize(request)
        self._require(p, ["systems", "control"], "write")
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return web.Response(
                status=426, text="This service requires use of the WebSocket protocol", content_type="text/plain"
            )
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        if self._etcd_fresh_failure():
            # Systems.session_manager cannot be built: the exception ends the upgraded connection (no close frame)
            if request.transport is not None:
                request.transport.abort()
            return ws
        session = _Session(ws, p)
        self._sessions.add(session)
        pinger = asyncio.ensure_future(self._pong_loop(session))
        tasks: set[asyncio.Future[None]] = set()
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                if msg.data == "ping":
                    await session.send("pong")
                    continue
                req = self._parse(msg.data)
                if req is None:
                    continue
                task = asyncio.ensure_future(self._handle(session, req))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            pinger.cancel()
            for task in tasks:
                task.cancel()
            self._sessions.discard(session)
        return ws

    async def _pong_loop(self, session: _Session) -> None:
        while not session.ws.closed:
            await asyncio.sleep(float(self.knobs["ws_pong_interval"]))
            await session.send("pong")

    async def _handle(self, session: _Session, req: dict[str, Any]) -> None:
        req_id, cmd, sys_id, mod, index, name = (req[k] for k in ("id", "cmd", "sys", "mod", "index", "name"))
        if cmd == "bind":
            await self._bind(session, req_id, sys_id, mod, index, name)
        elif cmd == "exec":
            out = await self._exec(session.principal, sys_id, mod, index, name, req.get("args") or [])
            if out.kind == "ok":
                reply = {
                    "id": req_id,
                    "type": "success",
                    "meta": self._meta(sys_id, mod, index, name),
                    "value": "__RAW__",
                    "code": out.code,
                }
                await session.send(_dumps(reply).replace('"__RAW__"', out.value))
            elif out.kind == "generic":  # session.cr exec: rescue e -> unexpected_failure
                await session.send(self._error(req_id, "unexpected_failure", "failed to execute request"))
            else:
                await session.send(self._error(req_id, out.error, out.message, out.code))
        elif cmd == "unbind":
            session.bindings.pop(f"{sys_id}_{mod}_{index}_{name}", None)
            await session.send(_dumps({"id": req_id, "type": "success"}))
        else:  # debug / ignore: not modelled beyond the acknowledgement
            await session.send(_dumps({"id": req_id, "type": "success"}))

    async def _bind(self, session: _Session, req_id: int, sys_id: str, mod: str, index: int, name: str) -> None:
        """session.cr ``bind`` / ``create_binding`` with driver subscriptions.cr ``perform_subscribe``."""
        if self._on("redis_down"):  # the module-id lookup raises inside create_binding
            await session.send(
                self._error(req_id, "module_not_found", f"could not find module: sys={sys_id} mod={mod}")
            )
            return
        if mod.startswith("_") and not session.principal.support:
            await session.send(self._error(req_id, "access_denied", "attempted to access protected module"))
            return
        key = f"{sys_id}_{mod}_{index}_{name}"
        session.bindings[key] = (req_id, sys_id, mod, index, name)
        module_id = self._module_id(sys_id, mod, index)
        broken = self._on("redis_pubsub_broken")
        if broken and self.era == "D" and module_id is not None:
            await asyncio.sleep(float(self.knobs["subscribe_ack_timeout"]))
        success = {"id": req_id, "type": "success", "meta": self._meta(sys_id, mod, index, name)}
        await session.send(_dumps(success))
        if module_id is None or (broken and self.era == "D"):
            return
        if module_id == MODULE_ID and self._on("driver_never_compiled"):
            return  # the status hash was never written
        raw = self._status.get(module_id, {}).get(name)
        if raw is not None:
            await session.send(self._notify(req_id, sys_id, mod, index, name, raw))


_COMMANDS = {"exec", "bind", "unbind", "debug", "ignore"}
