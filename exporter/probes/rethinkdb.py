"""RethinkDB probe (era A): PlaceOS's own health query, then its database and key tables.

PlaceOS's check (internals §2.1): connect with the ORM's user and password and read
``r.db("rethinkdb").table("server_status").pluck("id", "name")``'s first row. We do the same, then check
``RETHINKDB_DB`` exists with the tables logins and systems need.
"""

from __future__ import annotations

from dataclasses import dataclass

from rethinkdb.errors import ReqlOpFailedError

from exporter.model.placeos import KEY_TABLES, RETHINKDB_HEALTH_DB, RETHINKDB_HEALTH_TABLE
from exporter.model.vocabulary import Era, ProbeName, Reason
from exporter.probes.base import Outcome, ProbeContext, ProbeFailure, ProbeSpec
from exporter.probes.clients.rethinkdb import ERRORS, close, connect, r


@dataclass(frozen=True)
class RethinkDBFacts:
    tables_missing: int
    server: str
    version: str


async def run(ctx: ProbeContext) -> Outcome:
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
    facts = RethinkDBFacts(len(missing), str(status.get("name", "")), str(version or ""))
    if missing:
        raise ProbeFailure(Reason.NOT_FOUND, f"PlaceOS tables missing in {db!r}: {', '.join(missing)}", facts)
    return Outcome(Reason.OK, f"server_status answers; {db!r} has the PlaceOS tables", facts)


SPEC = ProbeSpec(
    name=ProbeName.RETHINKDB,
    run=run,
    checks="PlaceOS's health query answers and its database has the tables logins and systems need",
    eras=frozenset({Era.A}),
    section="rethinkdb",
    needs="rethinkdb settings (RETHINKDB_HOST, ...)",
    facts=RethinkDBFacts,
    errors=ERRORS,
)
