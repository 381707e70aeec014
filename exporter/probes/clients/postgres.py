"""The PostgreSQL connection of one probe run, with server messages bounded (postgres, search_index_lag).

asyncpg rather than psycopg 3: it speaks the protocol natively on asyncio (no libpq in the image),
takes a connect timeout, and ``Connection.terminate()`` drops a connection without a round trip, which
is what a probe needs when the server hangs (README "PostgreSQL driver").
"""

from __future__ import annotations

import contextlib
import contextvars
import ssl
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import asyncpg.protocol

from exporter.model.vocabulary import Reason
from exporter.probes.base import ProbeContext, ProbeFailure
from exporter.probes.clients.bounded import MAX_BODY_BYTES, close_within, ssl_context
from exporter.settings import PostgresSettings

# asyncpg's exceptions for a rejected credential (the probes' specs' ``errors``).
ERRORS: dict[str, Reason] = {
    "InvalidPasswordError": Reason.AUTH_FAILED,
    "InvalidAuthorizationSpecificationError": Reason.AUTH_FAILED,
}

# Bounded messages. asyncpg reads a server message of any announced length and waits for all of it
# (garbage on the port reads as a ~1.4 GB message), and takes no limit or protocol of ours: it builds
# ``asyncpg.protocol.Protocol`` itself inside connect. So that class is replaced by a subclass that, while
# a probe runs (``_GUARD`` set in its task; asyncio runs the connection's callbacks in that context),
# follows the server's framing (a type byte and a 4-byte length) and drops the connection at the first
# message announced over MAX_BODY_BYTES; for anyone else it is asyncpg's Protocol unchanged.
_GUARD: contextvars.ContextVar[list[int]] = contextvars.ContextVar("placeos_pg_guard")


class _Framing:
    """Where the server's byte stream is in its messages."""

    def __init__(self) -> None:
        self.header = b""
        self.remaining = 0  # bytes of the current message body still to come

    def oversized(self, data: bytes) -> int | None:
        """The announced length of the first message in ``data`` over the bound, else None."""
        pos, end = 0, len(data)
        while pos < end:
            if self.remaining:
                step = min(self.remaining, end - pos)
                self.remaining -= step
                pos += step
                continue
            take = 5 - len(self.header)
            self.header += data[pos : pos + take]
            pos += take
            if len(self.header) == 5:
                length = int.from_bytes(self.header[1:], "big")
                self.header = b""
                if length < 4 or length - 4 > MAX_BODY_BYTES:
                    return length
                self.remaining = length - 4
        return None


class _BoundedProtocol(asyncpg.protocol.Protocol):  # type: ignore[misc]
    _framing: _Framing | None = None

    def data_received(self, data: bytes) -> None:
        seen = _GUARD.get(None)
        if seen is not None:
            if self._framing is None:
                self._framing = _Framing()
            size = self._framing.oversized(data)
            if size is not None:
                seen.append(size)
                self.transport.abort()
                return
        super().data_received(data)


asyncpg.protocol.Protocol = _BoundedProtocol


@contextlib.asynccontextmanager
async def bounded_messages() -> AsyncIterator[None]:
    """Run PostgreSQL I/O with messages bounded; a refused one is ``protocol_error``."""
    seen: list[int] = []
    token = _GUARD.set(seen)
    try:
        yield
    except Exception:
        if seen:
            raise ProbeFailure(
                Reason.PROTOCOL_ERROR, f"a server message announced at {seen[0]} bytes (limit {MAX_BODY_BYTES})"
            ) from None
        raise
    finally:
        _GUARD.reset(token)


def connect_args(settings: PostgresSettings) -> dict[str, Any]:
    """asyncpg arguments from PG_DATABASE_URL or the PG_* parts (the URL wins, as in pg-orm)."""
    args: dict[str, Any] = {}
    if settings.url:
        args["dsn"] = settings.url
    else:
        args |= {"host": settings.host, "port": settings.port, "database": settings.db, "user": settings.user}
    if settings.password:
        args["password"] = settings.password.get_secret_value()
    args["ssl"] = tls_arg(settings)
    return args


def tls_arg(settings: PostgresSettings) -> ssl.SSLContext | str | bool:
    """asyncpg's ``ssl``: the sslmode, or our context where a CA file, a client certificate or a
    verifying mode must reach the connection (asyncpg then insists on TLS, as with ``require``)."""
    if settings.sslmode == "disable":
        return "disable"  # a certificate setting is no reason to encrypt
    if settings.sslmode in ("verify-ca", "verify-full") or settings.ca_file or settings.cert_file:
        ctx = ssl_context(settings)
        if settings.sslmode == "verify-ca":
            ctx.check_hostname = False
        elif settings.sslmode != "verify-full" and not settings.ca_file:
            # allow/prefer/require do not verify the server (libpq; asyncpg's own sslmode likewise): a
            # client certificate alone must not make the probe check it against the system CAs.
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return settings.sslmode


async def connect(ctx: ProbeContext) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(**connect_args(ctx.cluster.postgres), timeout=ctx.remaining())
    except asyncpg.InvalidCatalogNameError as exc:
        raise ProbeFailure(Reason.NOT_FOUND, f"database does not exist: {exc}") from None
    except asyncpg.InvalidAuthorizationSpecificationError as exc:
        if "no encryption" in str(exc):  # pg_hba has only hostssl entries: the server wants TLS
            raise ProbeFailure(Reason.TLS, f"server requires TLS: {exc}") from None
        raise
    except ConnectionError as exc:
        if "rejected SSL upgrade" in str(exc):  # the port answered the SSLRequest with garbage
            raise ProbeFailure(Reason.PROTOCOL_ERROR, f"not PostgreSQL: {exc}") from None
        raise


async def close(conn: asyncpg.Connection, ctx: ProbeContext) -> None:
    """Close politely within the deadline, else drop the socket."""
    if not await close_within(conn.close(), min(1.0, ctx.remaining())):
        with contextlib.suppress(Exception):
            conn.terminate()


async def missing_tables(conn: asyncpg.Connection, tables: tuple[str, ...]) -> list[str]:
    rows = await conn.fetch(
        "select t from unnest($1::text[]) as t where to_regclass(quote_ident(t)) is null", list(tables)
    )
    return [r["t"] for r in rows]


async def count_rows(ctx: ProbeContext, tables: tuple[str, ...]) -> dict[str, int]:
    """Row counts of the tables that exist (for the search-index lag)."""
    async with bounded_messages():
        conn = await connect(ctx)
        try:
            present = [t for t in tables if t not in await missing_tables(conn, tables)]
            counts: dict[str, int] = {}
            for table in present:
                counts[table] = int(await conn.fetchval(f'select count(*) from "{table}"'))  # noqa: S608 (closed set)
            return counts
        finally:
            await close(conn, ctx)
