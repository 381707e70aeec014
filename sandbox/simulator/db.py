"""The PlaceOS config database as the sandbox's simulators see it: RethinkDB (era A) or PostgreSQL (B/C).

Reproduces what the PlaceOS services need from their config database (internals §2):

* Era A: RethinkDB through the official ``rethinkdb`` driver in asyncio mode, database
  ``place_development``, one table per model (``sys``, ``mod``, ``driver``, ``authority``, ...; §2.1).
* Eras B/C/D: PostgreSQL through asyncpg, database ``placeos``, the same table names (§2.2). Each table
  is stored as ``(id text primary key, doc jsonb)``: the simulators only need documents by id and by
  one field, which is what pg-orm's models give the real services. Era D adds the generated
  ``search_vector`` columns (sandbox.simulator.fts).
* ``health()`` runs PlaceOS's own check: RethinkDB ``r.db("rethinkdb").table("server_status")
  .pluck("id","name")`` first row (§2.1); PostgreSQL ``select datname from pg_stat_activity where
  datname is not null`` first row (§2.2), each on a fresh connection as PlaceOS opens one.

Every call opens its own connection and is bounded by the timeout given to ``open_db`` (the rethinkdb
driver's connect has no overall timeout, so it is wrapped). Real services pool connections; connecting
per call means a database that was killed and restarted works again at once, a database that is down
or stopped (SIGSTOP) makes calls fail within the timeout, and changed credentials fail the next call,
all without restarting the simulator. Every failure is raised as :class:`DBError` with a message that
never contains the password.

RethinkDB terms used (what the stand-in must answer): ``db_list``, ``db_create``, ``table_list``,
``table_create``, ``db``, ``table``, ``get``, ``filter`` (object predicate), ``order_by`` + ``limit``,
``count``, ``insert`` (``conflict="replace"``), ``update``, ``pluck``.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg
from rethinkdb import RethinkDB

_T = TypeVar("_T")

# One driver instance for the process, in asyncio mode. ``set_loop_type`` on an instance only changes
# that instance (the module-level ``r`` of other code is untouched).
_r = RethinkDB()
_r.set_loop_type("asyncio")

_TABLE_RE = re.compile(r"^[a-z_][a-z0-9_]*$")
_CREATE = "create table if not exists {t} (id text primary key, doc jsonb not null)"
_UPSERT = "insert into {t} (id, doc) values ($1, $2::jsonb) on conflict (id) do update set doc = excluded.doc"


class DBError(Exception):
    """The config database failed: down, timed out, refused the credentials, or rejected the query."""


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***``, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _check_table(table: str) -> str:
    if not _TABLE_RE.match(table):
        raise DBError(f"invalid table name {table!r}")
    return table


class ConfigDB(Protocol):
    """What the simulators ask of the config database; both backends answer the same way."""

    url: str  # masked

    async def get(self, table: str, id: str) -> dict[str, Any] | None: ...
    async def find_by(self, table: str, field: str, value: Any) -> list[dict[str, Any]]: ...
    async def all(self, table: str, limit: int | None = None) -> list[dict[str, Any]]: ...
    async def count(self, table: str) -> int: ...
    async def upsert(self, table: str, doc: dict[str, Any]) -> None: ...
    async def update(self, table: str, id: str, fields: dict[str, Any]) -> None: ...
    async def health(self) -> None: ...
    async def close(self) -> None: ...


class _Bounded:
    """Shared by both backends: the timeout and the error wrapping (password never in the message)."""

    kind = "db"

    def __init__(self, url: str, timeout: float) -> None:
        self.url = mask_url(url)
        self.timeout = timeout
        self._password = urlsplit(url).password

    async def _bounded(self, make: Callable[[], Awaitable[_T]], what: str) -> _T:
        try:
            return await asyncio.wait_for(make(), self.timeout)
        except DBError:
            raise
        except TimeoutError as e:
            raise DBError(f"{self.kind} {what}: timed out after {self.timeout:g}s ({self.url})") from e
        except Exception as e:
            msg = str(e) or type(e).__name__
            if self._password:
                msg = msg.replace(self._password, "***")
            raise DBError(f"{self.kind} {what}: {type(e).__name__}: {msg} ({self.url})") from e

    async def close(self) -> None:
        """Nothing to release: connections live for one call."""


class RethinkConfigDB(_Bounded):
    """Era A: RethinkDB through the official driver (asyncio loop type), one connection per call."""

    kind = "rethinkdb"

    def __init__(self, url: str, timeout: float) -> None:
        super().__init__(url, timeout)
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 28015
        self.user = unquote(parts.username or "admin")
        self.password = unquote(parts.password or "")
        self.db = parts.path.strip("/") or "place_development"

    async def _connect(self, db: str) -> Any:
        return await _r.connect(
            host=self.host,
            port=self.port,
            db=db,
            user=self.user,
            password=self.password,
            timeout=max(1, round(self.timeout)),
        )

    async def _run(self, build: Callable[[], Any], what: str, db: str | None = None, first: bool = False) -> Any:
        """Run one query on a fresh connection; sequences (cursors) are read to a list."""

        async def go() -> Any:
            conn = await self._connect(db or self.db)
            try:
                res = await build().run(conn)
                if hasattr(res, "__aiter__"):
                    rows: list[Any] = []
                    async for row in res:
                        rows.append(row)
                        if first:
                            break
                    return rows
                return res
            finally:
                await conn.close(noreply_wait=False)

        return await self._bounded(go, what)

    def _table(self, table: str) -> Any:
        return _r.db(self.db).table(_check_table(table))

    async def get(self, table: str, id: str) -> dict[str, Any] | None:
        doc = await self._run(lambda: self._table(table).get(id), f"get {table}")
        return dict(doc) if doc is not None else None

    async def find_by(self, table: str, field: str, value: Any) -> list[dict[str, Any]]:
        rows = await self._run(lambda: self._table(table).filter({field: value}), f"find_by {table}.{field}")
        return sorted((dict(d) for d in rows), key=lambda d: str(d.get("id")))

    async def all(self, table: str, limit: int | None = None) -> list[dict[str, Any]]:
        def build() -> Any:
            q = self._table(table)
            return q.order_by("id").limit(limit) if limit is not None else q

        rows = await self._run(build, f"all {table}")
        return sorted((dict(d) for d in rows), key=lambda d: str(d.get("id")))

    async def count(self, table: str) -> int:
        return int(await self._run(lambda: self._table(table).count(), f"count {table}"))

    async def upsert(self, table: str, doc: dict[str, Any]) -> None:
        res = await self._run(lambda: self._table(table).insert(doc, conflict="replace"), f"upsert {table}")
        _raise_write_errors(res, f"upsert {table}")

    async def update(self, table: str, id: str, fields: dict[str, Any]) -> None:
        res = await self._run(lambda: self._table(table).get(id).update(fields), f"update {table}")
        _raise_write_errors(res, f"update {table}")

    async def health(self) -> None:
        """PlaceOS's probe: a connection to db ``rethinkdb``, ``server_status`` plucked, first row (§2.1)."""
        rows = await self._run(
            lambda: _r.db("rethinkdb").table("server_status").pluck("id", "name"),
            "health",
            db="rethinkdb",
            first=True,
        )
        if not rows:
            raise DBError(f"rethinkdb health: server_status is empty ({self.url})")

    async def seed(self, docs: dict[str, list[dict[str, Any]]]) -> None:
        async def go() -> None:
            conn = await self._connect(self.db)
            try:
                if self.db not in await _r.db_list().run(conn):
                    await _r.db_create(self.db).run(conn)
                existing = set(await _r.db(self.db).table_list().run(conn))
                for table, rows in docs.items():
                    if _check_table(table) not in existing:
                        await _r.db(self.db).table_create(table).run(conn)
                    if rows:
                        res = await _r.db(self.db).table(table).insert(rows, conflict="replace").run(conn)
                        _raise_write_errors(res, f"seed {table}")
            finally:
                await conn.close(noreply_wait=False)

        await self._bounded(go, "seed")


def _raise_write_errors(res: Any, what: str) -> None:
    if isinstance(res, dict) and res.get("errors"):
        raise DBError(f"rethinkdb {what}: {res.get('first_error', 'write failed')}")


class PostgresConfigDB(_Bounded):
    """Eras B/C: PostgreSQL through asyncpg, tables ``(id text primary key, doc jsonb)``."""

    kind = "postgres"

    def __init__(self, url: str, timeout: float) -> None:
        super().__init__(url, timeout)
        self._dsn = url

    async def _run(self, what: str, fn: Callable[[asyncpg.Connection], Awaitable[_T]]) -> _T:
        async def go() -> _T:
            conn = await asyncpg.connect(dsn=self._dsn, timeout=self.timeout)
            try:
                return await fn(conn)
            finally:
                await conn.close(timeout=self.timeout)

        return await self._bounded(go, what)

    async def run(self, what: str, fn: Callable[[asyncpg.Connection], Awaitable[_T]]) -> _T:
        """``fn`` on a fresh connection, bounded and wrapped like every call (era D's search uses it)."""
        return await self._run(what, fn)

    @staticmethod
    def _sql(template: str, table: str) -> str:
        """Table names cannot be bind parameters: ``{t}`` becomes the checked, quoted name."""
        return template.replace("{t}", f'"{_check_table(table)}"')

    async def get(self, table: str, id: str) -> dict[str, Any] | None:
        sql = self._sql("select doc::text from {t} where id = $1", table)
        raw = await self._run(f"get {table}", lambda c: c.fetchval(sql, id))
        return _load(raw) if raw is not None else None

    async def find_by(self, table: str, field: str, value: Any) -> list[dict[str, Any]]:
        sql = self._sql("select doc::text from {t} where doc -> $1 = $2::jsonb order by id", table)
        rows = await self._run(f"find_by {table}.{field}", lambda c: c.fetch(sql, field, json.dumps(value)))
        return [_load(r[0]) for r in rows]

    async def all(self, table: str, limit: int | None = None) -> list[dict[str, Any]]:
        sql = self._sql("select doc::text from {t} order by id", table)
        if limit is not None:
            sql += f" limit {int(limit)}"
        rows = await self._run(f"all {table}", lambda c: c.fetch(sql))
        return [_load(r[0]) for r in rows]

    async def count(self, table: str) -> int:
        sql = self._sql("select count(*) from {t}", table)
        return int(await self._run(f"count {table}", lambda c: c.fetchval(sql)))

    async def upsert(self, table: str, doc: dict[str, Any]) -> None:
        sql = self._sql(_UPSERT, table)
        await self._run(f"upsert {table}", lambda c: c.execute(sql, str(doc["id"]), json.dumps(doc)))

    async def update(self, table: str, id: str, fields: dict[str, Any]) -> None:
        sql = self._sql("update {t} set doc = doc || $2::jsonb where id = $1", table)
        await self._run(f"update {table}", lambda c: c.execute(sql, id, json.dumps(fields)))

    async def health(self) -> None:
        """PlaceOS's probe: a fresh connection, ``pg_stat_activity`` datnames, first row (§2.2)."""
        sql = "select datname from pg_stat_activity where datname is not null"
        row = await self._run("health", lambda c: c.fetchrow(sql))
        if row is None:
            raise DBError(f"postgres health: no row from pg_stat_activity ({self.url})")

    async def seed(self, docs: dict[str, list[dict[str, Any]]]) -> None:
        async def create_database() -> None:
            parts = urlsplit(self._dsn)
            dbname = parts.path.strip("/") or "placeos"
            admin_dsn = urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, parts.fragment))
            try:
                conn = await asyncpg.connect(dsn=self._dsn, timeout=self.timeout)
                await conn.close()
                return
            except asyncpg.InvalidCatalogNameError:
                pass
            conn = await asyncpg.connect(dsn=admin_dsn, timeout=self.timeout)
            try:
                await conn.execute(f'create database "{dbname.replace(chr(34), "")}"')
            except asyncpg.DuplicateDatabaseError:
                pass
            finally:
                await conn.close()

        await self._bounded(create_database, "seed (create database)")

        async def fill(c: asyncpg.Connection) -> None:
            async with c.transaction():
                for table, rows in docs.items():
                    await c.execute(self._sql(_CREATE, table))
                    await c.executemany(self._sql(_UPSERT, table), [(str(d["id"]), json.dumps(d)) for d in rows])

        await self._run("seed", fill)


def _load(raw: str) -> dict[str, Any]:
    doc = json.loads(raw)
    if not isinstance(doc, dict):
        raise DBError("stored document is not an object")
    return doc


async def open_db(url: str, timeout: float) -> ConfigDB:
    """A handle on the config database named by ``url`` (``rethinkdb://`` or ``postgresql://``).

    Opens nothing yet, so a simulator can start while the database is down and work once it is up.
    """
    scheme = urlsplit(url).scheme
    if scheme == "rethinkdb":
        return RethinkConfigDB(url, timeout)
    if scheme in ("postgresql", "postgres"):
        return PostgresConfigDB(url, timeout)
    raise ValueError(f"unsupported config database URL scheme {scheme!r} ({mask_url(url)})")


async def seed(db: ConfigDB, docs: dict[str, list[dict[str, Any]]]) -> None:
    """Create the database and tables as needed and write ``docs`` (replacing same ids): idempotent."""
    if not isinstance(db, RethinkConfigDB | PostgresConfigDB):
        raise TypeError(f"cannot seed {type(db).__name__}")
    await db.seed(docs)
