"""Small asyncio servers for the hostile-input, slow-answer and TLS tests, and a memory gauge.

* ``FaultProxy``: a TCP proxy on 127.0.0.1 in front of a real backend (or of ``FakeRestApi``). It
  forwards traffic unchanged (``heal()``), delays every answer of the backend (``delay``), or answers
  the client itself with a hostile reply (``turn_hostile``), either from the first byte or only once
  the backend's own valid start is through (``after``: the handshake, the login), so the client sees
  a real server turn hostile mid-conversation. ``tls`` terminates TLS in front of the backend;
  ``pg_tls`` does PostgreSQL's in-protocol SSLRequest upgrade instead. Either may require a client
  certificate (``make_tls(..., client_ca=)``); TLS is done by ``ServerTLS``, which, like a real server,
  sends its alert when it refuses a client's handshake.
* Hostile replies for HTTP, RESP (Redis), and the PostgreSQL and RethinkDB wire protocols: huge
  bodies, bodies that never end, a slow drip, garbage. Each sends from one reused buffer (the server
  never holds more than a chunk) and stops when the client hangs up.
* ``FakeRestApi``: the rest-api routes the user-path probes read, to sit behind the proxy.
* ``MemoryGauge``: the peak growth of this process's resident set over a block.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType

from aiohttp import web

from sandbox.garbage import NONSENSE

MiB = 1 << 20
GiB = 1 << 30
CHUNK = b"x" * (64 * 1024)
# What a "huge" reply actually sends before it stalls: far above any sane bound (1 MiB for the
# exporter's own HTTP reads), small enough for a shared test machine.
HUGE_SENT = 64 * MiB
# The rate of a reply that never ends: slow enough that no bounded reader reaches its limit before
# a sub-second probe timeout, so the outcome is deterministically the timeout.
ENDLESS_RATE = 1 * MiB  # bytes per second
DRIP_EVERY = 0.1  # seconds per byte of a slow drip

# A hostile reply: handed the client's connection once it is the proxy's turn to answer.
Hostile = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
# Given the backend's bytes so far, the length of its valid start once all of it has arrived.
Splitter = Callable[[bytes], int | None]

NET_ERRORS = (ConnectionError, OSError, asyncio.IncompleteReadError, ssl.SSLError, EOFError)


# --------------------------------------------------------------------------------------- the proxy


class FaultProxy:
    """A fault-injecting TCP proxy on a free 127.0.0.1 port; a fault applies to new connections."""

    def __init__(
        self,
        upstream_port: int | None,
        *,
        tls: ssl.SSLContext | None = None,
        pg_tls: ssl.SSLContext | None = None,
    ) -> None:
        self.upstream_port = upstream_port
        self.tls = tls
        self.pg_tls = pg_tls
        self.delay = 0.0  # seconds added before every answer of the backend
        self.hostile: Hostile | None = None
        self.after: Splitter | None = None
        self.answers = 0  # backend answers forwarded: one per request/response turn
        self.connections = 0  # connections accepted so far
        self.port = 0
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()

    def heal(self) -> None:
        self.delay, self.hostile, self.after = 0.0, None, None

    def slow(self, delay: float) -> None:
        self.delay, self.hostile, self.after = delay, None, None

    def turn_hostile(self, hostile: Hostile, after: Splitter | None = None) -> None:
        self.delay, self.hostile, self.after = 0.0, hostile, after

    async def __aenter__(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._conns):
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)
        await self._server.wait_closed()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.get_running_loop().create_task(self._connection(reader, writer))
        self._conns.add(task)
        task.add_done_callback(self._conns.discard)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hostile, after, delay = self.hostile, self.after, self.delay
        upstream: asyncio.StreamWriter | None = None
        try:
            first = await self._pg_upgrade(reader, writer) if self.pg_tls is not None else b""
            context = self.pg_tls if self.pg_tls is not None and not first else self.tls
            if context is not None:
                tls = ServerTLS(reader, writer, context)
                await tls.handshake()
                reader = writer = tls  # it has the stream calls made below
            if hostile is not None and after is None:
                await hostile(reader, writer)
                return
            assert self.upstream_port is not None
            up_reader, upstream = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            if first:
                upstream.write(first)
            await self._pump(reader, writer, up_reader, upstream, delay, hostile, after)
        except NET_ERRORS:
            pass  # either side hung up: the end of this connection
        finally:
            for w in (upstream, writer):
                if w is not None:
                    w.close()
                    with contextlib.suppress(*NET_ERRORS, TimeoutError):
                        await asyncio.wait_for(w.wait_closed(), 1.0)

    @staticmethod
    async def _pg_upgrade(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        """PostgreSQL's SSLRequest: answer 'S' (the caller then upgrades: b"" returned); a plain
        StartupMessage is returned, to be passed on as is."""
        head = await reader.readexactly(8)
        if head != struct.pack(">ii", 8, 80877103):
            return head
        writer.write(b"S")
        await writer.drain()
        return b""

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        upstream: asyncio.StreamWriter,
        delay: float,
        hostile: Hostile | None,
        after: Splitter | None,
    ) -> None:
        asked = asyncio.Event()  # the client sent something the backend has not answered yet

        async def client_to_backend() -> None:
            while data := await reader.read(65536):
                asked.set()
                upstream.write(data)
                await upstream.drain()
            if upstream.can_write_eof():
                upstream.write_eof()

        forward = asyncio.create_task(client_to_backend())
        try:
            seen = b""
            while data := await up_reader.read(65536):
                if asked.is_set():
                    asked.clear()
                    self.answers += 1
                    if delay:
                        await asyncio.sleep(delay)
                if hostile is not None and after is not None:
                    start = after(seen + data)
                    if start is not None:
                        # The backend's valid start is through: forward the rest of it, then answer
                        # the client's next request ourselves.
                        forward.cancel()
                        with contextlib.suppress(asyncio.CancelledError, *NET_ERRORS):
                            await forward
                        upstream.close()
                        writer.write(data[: start - len(seen)])
                        await writer.drain()
                        await hostile(reader, writer)
                        return
                    seen += data
                writer.write(data)
                await writer.drain()
        finally:
            forward.cancel()
            with contextlib.suppress(asyncio.CancelledError, *NET_ERRORS):
                await forward


class ServerTLS:
    """The server side of TLS over a client's plain stream (ssl.MemoryBIO), with the stream calls the
    proxy makes (read, write, drain, close, wait_closed, can_write_eof).

    Not asyncio's own TLS server (``start_server(ssl=)``, ``start_tls``): when it refuses a handshake
    (no client certificate, one of an unknown CA) it drops the connection without sending the alert
    OpenSSL wrote (sslproto aborts on a handshake error), so a client sees a reset where Redis, etcd or
    PostgreSQL send ``certificate required`` or ``unknown ca`` first. Here the alert goes out, the
    client's bytes are read until it hangs up (``LINGER`` at most), then the handshake's error is raised.

    The lingering makes the outcome deterministic. With TLS 1.3 the client's handshake is over before
    the server checks its certificate, so the client has sent its request by then; a server that closes
    with that request unread resets the connection, and a reset that overtakes the alert reaches the
    client as "connection reset" instead (real Redis 7: 3 of 20 runs).
    """

    LINGER = 1.0

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, context: ssl.SSLContext) -> None:
        self._reader, self._writer = reader, writer
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)

    async def handshake(self) -> None:
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self.drain()
                if not await self._fill():
                    raise ConnectionResetError("the client left during the handshake") from None
            except ssl.SSLError:
                await self.drain()  # the alert, as a real server sends it before hanging up
                await self._linger()
                raise
        await self.drain()

    async def _linger(self) -> None:
        if self._writer.can_write_eof():
            self._writer.write_eof()
        with contextlib.suppress(TimeoutError, *NET_ERRORS):
            async with asyncio.timeout(self.LINGER):
                while await self._reader.read(65536):
                    pass

    async def _fill(self) -> bool:
        data = await self._reader.read(65536)
        if not data:
            self._incoming.write_eof()
            return False
        self._incoming.write(data)
        return True

    async def read(self, n: int) -> bytes:
        while True:
            try:
                data = self._tls.read(n)
            except ssl.SSLWantReadError:
                await self.drain()
                if not await self._fill():
                    return b""
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""
            await self.drain()
            return data

    def write(self, data: bytes) -> None:
        self._tls.write(data)
        self._writer.write(self._outgoing.read())

    async def drain(self) -> None:
        if pending := self._outgoing.read():
            self._writer.write(pending)
        await self._writer.drain()

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        with contextlib.suppress(ssl.SSLError):
            self._tls.unwrap()  # close_notify (raises while the client's has not arrived: not waited for)
        if pending := self._outgoing.read():
            self._writer.write(pending)
        self._writer.close()

    async def wait_closed(self) -> None:
        await self._writer.wait_closed()


# ------------------------------------------------------------------------------- hostile building blocks


async def _until_gone(reader: asyncio.StreamReader) -> None:
    """Hold the connection open, reading and dropping whatever the client sends, until it hangs up."""
    while await reader.read(65536):
        pass


async def _while_connected(reader: asyncio.StreamReader, work: Awaitable[None]) -> None:
    """Run ``work`` until it ends or the client hangs up, whichever is first."""
    job = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_until_gone(reader))
    try:
        await asyncio.wait({job, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (job, gone):
            task.cancel()
        await asyncio.gather(job, gone, return_exceptions=True)


async def _stream(writer: asyncio.StreamWriter, total: int | None, rate: float | None = None) -> None:
    """Send ``total`` bytes (None: forever) from one reused chunk, at most ``rate`` bytes a second."""
    chunk = memoryview(CHUNK)
    if rate is not None:
        chunk = chunk[: max(1, int(rate / 64))]  # 64 writes a second
    sent = 0
    while total is None or sent < total:
        part = chunk if total is None else chunk[: total - sent]
        writer.write(part)
        await writer.drain()
        sent += len(part)
        if rate is not None:
            await asyncio.sleep(1 / 64)


async def _drip(writer: asyncio.StreamWriter, data: bytes) -> None:
    for i in range(len(data)):
        writer.write(data[i : i + 1])
        await writer.drain()
        await asyncio.sleep(DRIP_EVERY)


def reply_then(prefix: bytes, total: int | None, rate: float | None = None, *, wait_request: bool = True) -> Hostile:
    """After the client's request: ``prefix``, then ``total`` filler bytes (None: endless), then hold."""

    async def hostile(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if wait_request and not await reader.read(65536):
            return

        async def send() -> None:
            writer.write(prefix)
            await _stream(writer, total, rate)
            await asyncio.Event().wait()  # sent all there is: hold the connection, answer nothing more

        await _while_connected(reader, send())

    return hostile


def garbage() -> Hostile:
    """Bytes of no protocol at once, and in answer to every request (sandbox.garbage's nonsense)."""

    async def hostile(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(NONSENSE)
        await writer.drain()
        while await reader.read(65536):
            writer.write(NONSENSE)
            await writer.drain()

    return hostile


# ------------------------------------------------------------------------------------------------- HTTP


async def _read_http_request(reader: asyncio.StreamReader) -> bool:
    """Read one request's head (the body, if any, is left to be dropped): False if the client left."""
    try:
        await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return False
    return True


def _http_head(status: str, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    return "\r\n".join(lines).encode()


# The headers a healthy answer of any of the probed HTTP backends carries (Elasticsearch's product
# header included, so that hostile bodies get past the product check to the body handling).
JSON_HEADERS = {"Content-Type": "application/json", "X-Elastic-Product": "Elasticsearch", "Connection": "close"}


def http_hostile(kind: str) -> Hostile:
    """The HTTP hostile replies, all with status 200 and JSON headers:

    ``huge_body`` 50 MiB with a true Content-Length; ``huge_length`` a Content-Length of 10 GiB, of
    which HUGE_SENT arrive before the server stalls; ``huge_chunked`` HUGE_SENT in chunks without a
    Content-Length, then a stall; ``broken_json`` a short body that is not JSON;
    ``endless_chunked`` a chunked body that never ends; ``slow_drip`` a small valid answer sent one
    byte per DRIP_EVERY seconds.
    """

    async def hostile(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not await _read_http_request(reader):
            return
        if kind == "huge_body":
            head = _http_head("200 OK", JSON_HEADERS | {"Content-Length": str(50 * MiB)})
            work: Awaitable[None] = _send_all(writer, head, 50 * MiB)
        elif kind == "huge_length":
            head = _http_head("200 OK", JSON_HEADERS | {"Content-Length": str(10 * GiB)})
            work = _send_all(writer, head, HUGE_SENT)
        elif kind == "huge_chunked":
            head = _http_head("200 OK", JSON_HEADERS | {"Transfer-Encoding": "chunked"})
            work = _huge_chunks(writer, head)
        elif kind == "broken_json":
            body = b'{"leader": "1", "count": "0", "status": "gre'
            head = _http_head("200 OK", JSON_HEADERS | {"Content-Length": str(len(body))})
            work = _send_all(writer, head + body, 0)
        elif kind == "endless_chunked":
            head = _http_head("200 OK", JSON_HEADERS | {"Transfer-Encoding": "chunked"})
            work = _endless_chunks(writer, head)
        elif kind == "slow_drip":
            body = b'{"status": "green", "leader": "1", "count": "0"}'
            head = _http_head("200 OK", JSON_HEADERS | {"Content-Length": str(len(body))})
            work = _drip(writer, head + body)
        else:
            raise ValueError(kind)
        await _while_connected(reader, _then_hold(work))

    return hostile


async def _then_hold(work: Awaitable[None]) -> None:
    await work
    await asyncio.Event().wait()


async def _send_all(writer: asyncio.StreamWriter, head: bytes, total: int) -> None:
    writer.write(head)
    await _stream(writer, total)


async def _huge_chunks(writer: asyncio.StreamWriter, head: bytes) -> None:
    writer.write(head)
    chunk = f"{len(CHUNK):x}\r\n".encode() + CHUNK + b"\r\n"
    for _ in range(HUGE_SENT // len(CHUNK)):
        writer.write(chunk)
        await writer.drain()


async def _endless_chunks(writer: asyncio.StreamWriter, head: bytes) -> None:
    writer.write(head)
    size = int(ENDLESS_RATE / 64)
    chunk = f"{size:x}\r\n".encode() + CHUNK[:size] + b"\r\n"
    while True:
        writer.write(chunk)
        await writer.drain()
        await asyncio.sleep(1 / 64)


HTTP_FAULTS = ("huge_body", "huge_length", "huge_chunked", "broken_json", "endless_chunked", "slow_drip")


# ------------------------------------------------------------------------------------------------ Redis


def redis_hostile(kind: str) -> Hostile:
    """``huge_bulk``: a bulk string announced at 10 GiB, HUGE_SENT of it sent, then a stall;
    ``endless_bulk``: the same announced bulk string trickling forever; ``endless_array``: an array
    announced with 2**31-1 elements that keep coming."""
    announced = f"${10 * GiB}\r\n".encode()
    if kind == "huge_bulk":
        return reply_then(announced, HUGE_SENT)
    if kind == "endless_bulk":
        return reply_then(announced, None, ENDLESS_RATE)
    if kind == "endless_array":

        async def hostile(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if not await reader.read(65536):
                return

            async def send() -> None:
                writer.write(b"*2147483647\r\n")
                item = b":1\r\n" * 1024
                while True:
                    writer.write(item)
                    await writer.drain()
                    await asyncio.sleep(1 / 64)

            await _while_connected(reader, send())

        return hostile
    raise ValueError(kind)


REDIS_FAULTS = ("huge_bulk", "endless_bulk", "endless_array")


# ------------------------------------------------------------------------------------------- PostgreSQL


def pg_after_messages(kind: bytes, count: int = 1) -> Splitter:
    """The server's stream is valid up to and including its ``count``-th message of type ``kind``
    (b"R": the first authentication request; b"Z": ReadyForQuery, i.e. login complete)."""

    def split(data: bytes) -> int | None:
        pos = 1 if data[:1] == b"N" else 0  # the server's one-byte refusal of an SSLRequest comes first
        found = 0
        while pos + 5 <= len(data):
            end = pos + 1 + int.from_bytes(data[pos + 1 : pos + 5], "big")
            if end > len(data):
                return None
            if data[pos : pos + 1] == kind:
                found += 1
                if found == count:
                    return end
            pos = end
        return None

    return split


def pg_hostile(kind: str) -> tuple[Hostile, Splitter]:
    """``garbage_in_login``: garbage once the server asked for the password; ``garbage_after_login``:
    garbage in answer to the first query of an authenticated session; ``huge_message``: that answer
    is a RowDescription announced at 2 GiB, HUGE_SENT of it sent, then a stall."""
    if kind == "garbage_in_login":
        return garbage(), pg_after_messages(b"R")
    if kind == "garbage_after_login":
        return garbage(), pg_after_messages(b"Z")
    if kind == "huge_message":
        return reply_then(b"T" + struct.pack(">i", 0x7FFFFFFF), HUGE_SENT), pg_after_messages(b"Z")
    raise ValueError(kind)


PG_FAULTS = ("garbage_in_login", "garbage_after_login", "huge_message")


# -------------------------------------------------------------------------------------------- RethinkDB


def rethinkdb_after_nuls(count: int) -> Splitter:
    """The V1_0 handshake's server messages are NUL-terminated JSON: 1 = the server's hello,
    3 = hello, SCRAM server-first and server-final (authenticated)."""

    def split(data: bytes) -> int | None:
        pos = -1
        for _ in range(count):
            pos = data.find(b"\0", pos + 1)
            if pos < 0:
                return None
        return pos + 1

    return split


def _rethinkdb_huge_frame(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Awaitable[None]:
    async def hostile() -> None:
        # The client's query frame starts with its 8-byte token: answer that token, so the frame is
        # the one the driver waits for, announced at 4 GiB - 1.
        query = await reader.read(65536)
        if len(query) < 8:
            return

        async def send() -> None:
            writer.write(query[:8] + struct.pack("<L", 0xFFFFFFFF))
            await _stream(writer, HUGE_SENT)
            await asyncio.Event().wait()

        await _while_connected(reader, send())

    return hostile()


def rethinkdb_hostile(kind: str) -> tuple[Hostile, Splitter]:
    """``garbage_in_handshake``: garbage after the server's hello; ``no_nul_in_handshake``: after the
    hello, a SCRAM answer that never ends (no NUL) trickling in; ``garbage_after_login``: garbage in
    answer to the first query; ``huge_frame``: that answer is a frame announced at 4 GiB, HUGE_SENT
    of it sent, then a stall."""
    if kind == "garbage_in_handshake":
        return garbage(), rethinkdb_after_nuls(1)
    if kind == "no_nul_in_handshake":
        never_ends = reply_then(b'{"authentication":"', None, ENDLESS_RATE, wait_request=False)
        return never_ends, rethinkdb_after_nuls(1)
    if kind == "garbage_after_login":
        return garbage(), rethinkdb_after_nuls(3)
    if kind == "huge_frame":
        return _rethinkdb_huge_frame, rethinkdb_after_nuls(3)
    raise ValueError(kind)


RETHINKDB_FAULTS = ("garbage_in_handshake", "no_nul_in_handshake", "garbage_after_login", "huge_frame")


# ------------------------------------------------------------------------------------------ the rest-api


class FakeRestApi:
    """The routes api_health, login (API key) and systems_list read, answered as rest-api does."""

    API = "/api/engine/v2"

    def __init__(self) -> None:
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> FakeRestApi:
        app = web.Application()
        app.router.add_get(f"{self.API}/", self._health)
        app.router.add_get(f"{self.API}/api_keys/inspect", self._inspect)
        app.router.add_get(f"{self.API}/systems", self._systems)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _health(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=200, text="", content_type="text/plain")

    async def _inspect(self, request: web.Request) -> web.StreamResponse:
        if not request.headers.get("X-API-Key"):
            return web.json_response({"error": "missing X-API-Key"}, status=401)
        return web.json_response({"sub": "user-support", "scope": ["public"], "aud": "localhost"})

    async def _systems(self, request: web.Request) -> web.StreamResponse:
        return web.json_response([{"id": "sys-1", "name": "Room 1"}], headers={"X-Total-Count": "1"})


# ----------------------------------------------------------------------------------------------- memory


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class MemoryGauge:
    """Peak growth of this process's resident set (MiB) over an ``async with`` block.

    The kernel's high-water mark (VmHWM) is reset through /proc/self/clear_refs where allowed; VmRSS
    is also sampled every 10 ms, so a peak is caught even where the reset is not permitted.
    """

    def __init__(self) -> None:
        self.start_kib = 0
        self.peak_kib = 0
        self._hwm = False
        self._sampler: asyncio.Task[None] | None = None

    @property
    def growth_mib(self) -> float:
        return max(0, self.peak_kib - self.start_kib) / 1024

    async def __aenter__(self) -> MemoryGauge:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
            self._hwm = True
        except OSError:
            self._hwm = False
        self.start_kib = self.peak_kib = _status_kib("VmRSS")
        self._sampler = asyncio.create_task(self._sample())
        return self

    async def _sample(self) -> None:
        while True:
            self.peak_kib = max(self.peak_kib, _status_kib("VmRSS"))
            await asyncio.sleep(0.01)

    async def __aexit__(self, *exc: object) -> None:
        assert self._sampler is not None
        self._sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._sampler
        self.peak_kib = max(self.peak_kib, _status_kib("VmRSS"))
        if self._hwm:
            self.peak_kib = max(self.peak_kib, _status_kib("VmHWM"))


# -------------------------------------------------------------------------------------------------- TLS


def make_tls(directory: Path, client_ca: Path | None = None) -> tuple[Path, ssl.SSLContext]:
    """A throwaway CA (returned as a file) and a server context with its certificate for 127.0.0.1.

    With ``client_ca`` the server requires a client certificate signed by that CA (mutual TLS). The
    same ``directory`` gives the same CA and server certificate again.
    """
    from sandbox.backends import _make_tls  # the sandbox's openssl recipe, reused rather than copied

    ca, cert, key = _make_tls(directory)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(client_ca)
    return ca, context


def make_client_cert(ca_dir: Path, directory: Path) -> tuple[Path, Path]:
    """A client certificate (clientAuth) signed by the CA ``make_tls`` made in ``ca_dir``: (cert, key).

    The openssl CLI, as the sandbox's recipe: the ``cryptography`` package is not a dependency.
    """
    directory.mkdir(parents=True, exist_ok=True)
    cert, key, csr, ext = (directory / name for name in ("client.pem", "client.key", "client.csr", "client.ext"))
    ext.write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                   "extendedKeyUsage=clientAuth\n")  # fmt: skip
    commands = [
        ["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(csr), "-subj", "/CN=placeos-exporter"],
        ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_dir / "ca.pem"), "-CAkey", str(ca_dir / "ca.key"),
         "-CAcreateserial", "-out", str(cert), "-days", "7", "-extfile", str(ext)],
    ]  # fmt: skip
    for argv in commands:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"openssl failed: {result.stderr.strip()[-500:]}")
    key.chmod(0o600)
    return cert, key
