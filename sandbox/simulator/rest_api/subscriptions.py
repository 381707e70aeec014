"""rest-api's one Redis status subscriber, with the reconnect bug that the ``redis pubsub-drop`` fault arms.

Reproduced from the PlaceOS source (read, not copied):

* rest-api ``ee8db8e`` ``src/placeos-rest-api/websocket/session.cr``: one class-level
  ``Driver::Proxy::Subscriptions`` for the whole process; a bind subscribes ``status/<module>/<name>``
  through it, an unbind or a closed socket unsubscribes. ``controllers/root.cr``'s health route logs the
  subscriber's ``reconnect_count`` as ``redis_reconnects``.
* driver ``673a7c08`` ``src/placeos-driver/subscriptions.cr``: its own Redis connection that SUBSCRIBEs
  ``lookup-change`` first and then every bound channel; a new channel is SUBSCRIBEd and waited for (its
  ack, up to 2 s) before the bind goes on; a lost connection is re-made (1 s, backing off to 5 s) and every
  channel subscribed again; every 3 s ``lookup-change`` is re-SUBSCRIBEd and a connection with no
  SUBSCRIBE ack for 15 s is re-made; ``reconnect_count`` counts the re-makes.
* The bug fixed by driver #170 (``12ef4c4d``) and #171 (``2222714b``), 2026-02, and seen through rest-api
  #375: a reconnect could come back subscribed to ``lookup-change`` only, the channel map still full but
  the channels never re-subscribed and new ones never sent (the drain loop gone). Redis answers PING and
  every other command; a bind still succeeds and still gets its first value (an HGET on the ordinary
  connection, ``current_value`` in the pre-fix ``perform_subscribe``, 12ef4c4d~1), but no change reaches
  it afterwards. ``set_drop(True)`` arms the bug for the next reconnect (the orchestrator then has Redis
  drop its pub/sub clients: ``CLIENT KILL TYPE pubsub``); ``set_drop(False)`` forces a reconnect with the
  fixed behaviour, which subscribes every channel again.

The Redis wire is spoken here directly (RESP2 on an asyncio stream) rather than through redis-py, whose
PubSub reconnects and re-subscribes by itself: what is subscribed on the connection is exactly what this
class sent, so ``PUBSUB NUMSUB`` on Redis shows the loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

log = logging.getLogger("sandbox.rest_api")

LOOKUP_CHANGE = "lookup-change"
HEARTBEAT = 3.0
ACK_TIMEOUT = 15.0
SUBSCRIBE_ACK_TIMEOUT = 2.0

Callback = Callable[[str], Coroutine[Any, Any, None]]


class RespError(Exception):
    """Redis answered with an error (``-NOAUTH ...``, ``-WRONGPASS ...``)."""


class _Conn:
    """One RESP2 connection: commands out, replies and pushed messages in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, url: str, timeout: float) -> _Conn:
        parts = urlsplit(url)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(parts.hostname or "127.0.0.1", parts.port or 6379), timeout
        )
        conn = cls(reader, writer)
        try:
            if parts.password is not None:
                user = unquote(parts.username) if parts.username else None
                await conn.send("AUTH", *([user] if user else []), unquote(parts.password))
                await asyncio.wait_for(conn.read(), timeout)
        except BaseException:
            conn.close()
            raise
        return conn

    async def send(self, *args: str) -> None:
        out = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg.encode()
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.writer.write(b"".join(out))
        await self.writer.drain()

    async def read(self) -> Any:
        line = await self.reader.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("Connection closed by server.")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RespError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else (await self.reader.readexactly(size + 2))[:-2].decode(errors="replace")
        if kind == b"*":
            size = int(rest)
            return None if size < 0 else [await self.read() for _ in range(size)]
        raise ConnectionError(f"Protocol Error: {line[:40]!r}")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


@dataclass(eq=False)
class Subscription:
    """One binding's interest in a channel."""

    channel: str
    callback: Callback


class Subscriptions:
    """The process's status subscriber (``Driver::Subscriptions``), shared by every WebSocket."""

    def __init__(self, redis_url: str, timeout: float) -> None:
        self.url = redis_url
        self.timeout = timeout
        self._subs: dict[str, list[Subscription]] = {}
        self._wire: set[str] = set()  # channels Redis acknowledged on the current connection
        self._conn: _Conn | None = None
        self._write = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._callbacks: set[asyncio.Task[None]] = set()
        self._last_ack = time.monotonic()
        self._stopping = False
        self.connected = False
        self.reconnects = 0
        self.drop_armed = False  # the next reconnect loses the channels (driver #170's bug)
        self.dropped = False  # it happened: channels bound locally are not subscribed in Redis

    # -- lifecycle

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._monitor(), name="sub-monitor")

    async def close(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for task in list(self._callbacks):
            task.cancel()
        if self._conn is not None:
            self._conn.close()

    def state(self) -> dict[str, Any]:
        """What `/_sandbox/ready` shows: connected, reconnects, the bug's state, channels and lost ones."""
        lost = set(self._subs) - self._wire if self.connected else set(self._subs)
        return {
            "connected": self.connected,
            "reconnects": self.reconnects,
            "dropped": self.dropped or self.drop_armed,
            "channels": len(self._subs),
            "lost": len(lost),
        }

    def set_drop(self, on: bool) -> None:
        """Arm the reconnect bug, or clear it and reconnect (the fixed code re-subscribes everything)."""
        self.drop_armed = on
        if not on:
            self.dropped = False
            if self._conn is not None:
                self._conn.close()  # the receive loop fails and the monitor reconnects

    # -- bindings

    async def subscribe(self, channel: str, callback: Callback) -> Subscription:
        """Register a binding; SUBSCRIBE the channel if it is new (unless the channels were lost)."""
        sub = Subscription(channel, callback)
        new = channel not in self._subs
        self._subs.setdefault(channel, []).append(sub)
        if new and self.connected and not self.dropped:
            with contextlib.suppress(Exception):  # a failure is the monitor's to notice and repair
                await self._send("SUBSCRIBE", channel)
                end = time.monotonic() + SUBSCRIBE_ACK_TIMEOUT
                while channel not in self._wire and self.connected and time.monotonic() < end:
                    await asyncio.sleep(0.01)
        return sub

    async def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.channel, [])
        if sub in subs:
            subs.remove(sub)
        if not subs and self._subs.pop(sub.channel, None) is not None and sub.channel in self._wire:
            with contextlib.suppress(Exception):
                await self._send("UNSUBSCRIBE", sub.channel)

    # -- the connection

    async def _send(self, *args: str) -> None:
        conn = self._conn
        if conn is None:
            raise ConnectionError("not connected")
        async with self._write:
            await conn.send(*args)

    async def _monitor(self) -> None:
        """Connect, subscribe, receive; on any failure reconnect after 1 s (backing off to 5 s)."""
        first, delay = True, 1.0
        while not self._stopping:
            if not first:
                self.reconnects += 1
            conn: _Conn | None = None
            try:
                conn = await _Conn.open(self.url, self.timeout)
                self._conn, self._wire = conn, set()
                await self._send("SUBSCRIBE", LOOKUP_CHANGE)
                await asyncio.wait_for(self._until_ack(conn, LOOKUP_CHANGE), self.timeout)
                if self.drop_armed and not first:
                    self.dropped = True
                    log.warning("redis subscription re-established WITHOUT its %d channel(s)", len(self._subs))
                elif self._subs:
                    await self._send("SUBSCRIBE", *sorted(self._subs))
                self.connected, delay = True, 1.0
                self._last_ack = time.monotonic()
                heartbeat = asyncio.create_task(self._heartbeat(conn))
                try:
                    while True:
                        self._handle(await conn.read())
                finally:
                    heartbeat.cancel()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("redis subscription loop exited (%s: %s)", type(e).__name__, e)
            finally:
                self.connected, self._conn, self._wire = False, None, set()
                if conn is not None:
                    conn.close()
            first = False
            if self._stopping:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _until_ack(self, conn: _Conn, channel: str) -> None:
        while channel not in self._wire:
            self._handle(await conn.read())

    def _handle(self, reply: Any) -> None:
        if not isinstance(reply, list) or len(reply) < 3:
            return
        kind, channel = reply[0], str(reply[1])
        if kind == "subscribe":
            self._last_ack = time.monotonic()
            self._wire.add(channel)
        elif kind == "unsubscribe":
            self._wire.discard(channel)
        elif kind == "message" and channel != LOOKUP_CHANGE:
            for sub in list(self._subs.get(channel, [])):
                task = asyncio.create_task(sub.callback(str(reply[2])))
                self._callbacks.add(task)
                task.add_done_callback(self._callbacks.discard)

    async def _heartbeat(self, conn: _Conn) -> None:
        """Re-SUBSCRIBE lookup-change every 3 s; no ack for 15 s means a dead connection: re-make it."""
        while True:
            await asyncio.sleep(HEARTBEAT)
            if time.monotonic() - self._last_ack > ACK_TIMEOUT:
                log.warning("no subscribe ack within %gs: forcing reconnect", ACK_TIMEOUT)
                conn.close()
                return
            with contextlib.suppress(Exception):
                await self._send("SUBSCRIBE", LOOKUP_CHANGE)
