"""The RethinkDB connection of one probe run, bounded in time and frame size (rethinkdb, search_index_lag).

The official driver in asyncio mode. Its connect waits on the handshake without a deadline of ours and
its ``close()`` can wait on a dead peer, so both run under the probe's deadline and a hung close drops
the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from typing import Any

from rethinkdb import RethinkDB
from rethinkdb.asyncio_net import net_asyncio
from rethinkdb.errors import ReqlAuthError, ReqlDriverError, ReqlTimeoutError

from exporter.model.vocabulary import Reason
from exporter.probes.base import ProbeContext
from exporter.probes.clients.bounded import MAX_BODY_BYTES, close_within, ssl_context
from exporter.settings import RethinkDBSettings

# The driver's exception for a rejected credential (the probes' specs' ``errors``).
ERRORS: dict[str, Reason] = {"ReqlAuthError": Reason.AUTH_FAILED}

r = RethinkDB()
r.set_loop_type("asyncio")  # this instance only: other code may use the driver in sync mode


class _BoundedReader:
    """The driver's stream, refusing a response frame announced above MAX_BODY_BYTES: the driver reads
    a frame's announced length with readexactly, whatever it is (garbage reads as gigabytes)."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    async def readexactly(self, n: int) -> bytes:
        if n > MAX_BODY_BYTES:
            raise ReqlDriverError(f"response frame of {n} bytes")
        return await self._reader.readexactly(n)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)


class _BoundedInstance(net_asyncio.ConnectionInstance):  # type: ignore[misc]
    """The driver's connection, with our TLS context and a bounded frame reader."""

    _parent: Any
    _streamreader: Any
    _streamwriter: Any
    _reader_task: Any

    def __init__(self, parent: Any, io_loop: Any = None, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(parent, io_loop)
        self._tls = tls

    async def connect(self, timeout: Any) -> Any:
        """Mirrors ``ConnectionInstance.connect`` of rethinkdb 2.4.10 (asyncio_net/net_asyncio.py) line
        for line, except for the SSLContext, the reader and ``asyncio.timeout`` for ``wait_for`` (whose
        3.11 version can swallow a cancellation that coincides with the read finishing).

        The driver takes TLS only as ``ssl={"ca_certs": path}`` and builds its own context from it, so a
        client certificate (cert_file, key_file) and insecure_skip_verify cannot reach it; this opens the
        connection with the exporter's ``ssl_context`` instead (None: plaintext). The stream reader is
        wrapped before the handshake, so the frame-reader task started last reads through the bound.
        Review this against the driver's connect when upgrading rethinkdb (pinned <2.5 in pyproject).
        """
        host, port = self._parent.host, self._parent.port
        try:
            reader, self._streamwriter = await asyncio.open_connection(host, port, ssl=self._tls)
            self._streamreader = _BoundedReader(reader)
            sock = self._streamwriter.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        except Exception as err:
            raise ReqlDriverError(f"Could not connect to {host}:{port}. Error: {err}") from err

        try:
            self._parent.handshake.reset()
            response: Any = None
            with net_asyncio.translate_timeout_errors():
                while True:
                    request = self._parent.handshake.next_message(response)
                    if request is None:
                        break
                    # V1_0 sends two requests at once, then reads each answer separately.
                    if request != "":
                        self._streamwriter.write(request)
                    async with asyncio.timeout(timeout):
                        response = await net_asyncio._read_until(self._streamreader, b"\0")
                    response = response[:-1]
        except ReqlAuthError:
            await self.close()
            raise
        except ReqlTimeoutError as err:
            await self.close()
            raise ReqlDriverError(f"Connection interrupted during handshake with {host}:{port}. Error: {err}") from err
        except Exception as err:
            await self.close()
            raise ReqlDriverError(f"Could not connect to {host}:{port}. Error: {err}") from err

        # The driver's parallel reader of response frames (it keeps the reference, as the driver does).
        self._reader_task = asyncio.ensure_future(self._reader())
        return self._parent


class _BoundedConnection(net_asyncio.Connection):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # make_connection passes its extra keyword arguments (here ``tls``) to every ConnectionInstance.
        super().__init__(*args, **kwargs)
        self._conn_type = _BoundedInstance


async def connect(ctx: ProbeContext) -> Any:
    settings: RethinkDBSettings = ctx.cluster.rethinkdb
    kwargs: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "user": settings.user,
        "password": settings.password.get_secret_value() if settings.password else "",
        "timeout": max(1, int(ctx.remaining())),
    }
    if settings.tls:
        # Not the driver's ssl={"ca_certs": ...}: see _BoundedInstance.connect. Without ca_file the
        # context trusts the system's CAs.
        kwargs["tls"] = ssl_context(settings)
    async with asyncio.timeout(ctx.remaining()):  # not wait_for: see _BoundedInstance.connect
        return await r.make_connection(_BoundedConnection, **kwargs)


async def close(conn: Any, ctx: ProbeContext) -> None:
    """Close within the deadline; if the peer hangs, abort the transport instead of waiting."""
    if not await close_within(conn.close(noreply_wait=False), min(1.0, ctx.remaining())):
        writer = getattr(getattr(conn, "_instance", None), "_streamwriter", None)
        transport = getattr(writer, "transport", None)
        if transport is not None:
            with contextlib.suppress(Exception):
                transport.abort()


async def count_rows(ctx: ProbeContext, tables: tuple[str, ...]) -> dict[str, int]:
    """Row counts of the tables that exist (for the search-index lag)."""
    conn = await connect(ctx)
    try:
        db = ctx.cluster.rethinkdb.db
        present = set(await r.db(db).table_list().run(conn))
        return {t: int(await r.db(db).table(t).count().run(conn)) for t in tables if t in present}
    finally:
        await close(conn, ctx)
