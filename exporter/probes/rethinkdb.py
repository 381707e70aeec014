"""RethinkDB probe (era A): PlaceOS's own health query, then its database and key tables.

PlaceOS's check (internals §2.1): connect with the ORM's user and password and read
``r.db("rethinkdb").table("server_status").pluck("id", "name")``'s first row. We do the same with the
official driver in asyncio mode, then check ``RETHINKDB_DB`` exists with the tables logins and systems
need. The driver's connect waits on the handshake without a deadline of ours and its ``close()`` can
wait on a dead peer, so both run under the probe's deadline and a hung close drops the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from typing import Any

from rethinkdb import RethinkDB
from rethinkdb.asyncio_net import net_asyncio
from rethinkdb.errors import ReqlDriverError, ReqlOpFailedError

from exporter.placeos import KEY_TABLES, RETHINKDB_HEALTH_DB, RETHINKDB_HEALTH_TABLE
from exporter.probes.base import MAX_BODY_BYTES, Outcome, ProbeContext, ProbeFailure, close_within
from exporter.reasons import Reason
from exporter.settings import RethinkDBSettings

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
    _streamreader: Any

    async def connect(self, timeout: Any) -> Any:
        parent = await super().connect(timeout)
        # connect() created the frame-reader task last, and it has not run yet: wrap before it does.
        self._streamreader = _BoundedReader(self._streamreader)
        return parent


class _BoundedConnection(net_asyncio.Connection):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._conn_type = _BoundedInstance


def ca_bundle(settings: RethinkDBSettings) -> str:
    """The CA file to trust. The driver takes only a file and calls load_verify_locations(ca_certs)
    with it (None is a TypeError): without ca_file, the system bundle's path."""
    if settings.ca_file:
        return str(settings.ca_file)
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and os.path.isfile(candidate):
            return candidate
    raise ProbeFailure(Reason.TLS, "tls is on without ca_file and this system has no CA bundle file")


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
        kwargs["ssl"] = {"ca_certs": ca_bundle(settings)}
    return await asyncio.wait_for(r.make_connection(_BoundedConnection, **kwargs), timeout=ctx.remaining())


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


async def probe(ctx: ProbeContext) -> Outcome:
    db = ctx.cluster.rethinkdb.db
    conn = await connect(ctx)
    try:
        status = await r.db(RETHINKDB_HEALTH_DB).table(RETHINKDB_HEALTH_TABLE).pluck("id", "name").nth(0).run(conn)
        if not isinstance(status, dict) or "id" not in status:
            raise ProbeFailure(Reason.PROTOCOL_ERROR, "server_status answered without an id")
        try:
            tables = set(await r.db(db).table_list().run(conn))
        except ReqlOpFailedError as exc:
            raise ProbeFailure(Reason.NOT_FOUND, f"database {db!r}: {exc.message}") from None
        version = getattr(conn, "server_info", None)
    finally:
        await close(conn, ctx)
    missing = [t for t in KEY_TABLES if t not in tables]
    facts = {"tables_missing": len(missing), "server": str(status.get("name", "")), "version": str(version or "")}
    if missing:
        raise ProbeFailure(Reason.NOT_FOUND, f"PlaceOS tables missing in {db!r}: {', '.join(missing)}", facts)
    return Outcome(Reason.OK, f"server_status answers; {db!r} has the PlaceOS tables", facts)
