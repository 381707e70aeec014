"""PostgreSQL probe (eras B/C): PlaceOS's own health query, then its key tables (internals §2.2)."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.model.placeos import KEY_TABLES, POSTGRES_HEALTH_QUERY
from exporter.model.vocabulary import Era, ProbeName, Reason
from exporter.probes.base import Outcome, ProbeContext, ProbeFailure, ProbeSpec
from exporter.probes.clients.postgres import ERRORS, bounded_messages, close, connect, missing_tables


@dataclass(frozen=True)
class PostgresFacts:
    server_version: str
    tables_missing: int


async def run(ctx: ProbeContext) -> Outcome:
    async with bounded_messages():
        conn = await connect(ctx)
        try:
            row = await conn.fetchrow(POSTGRES_HEALTH_QUERY)
            if row is None:
                raise ProbeFailure(Reason.UNHEALTHY, "pg_stat_activity returned no row")
            missing = await missing_tables(conn, KEY_TABLES)
            version = conn.get_server_version()
        finally:
            await close(conn, ctx)
    facts = PostgresFacts(f"{version.major}.{version.minor}", len(missing))
    if missing:
        raise ProbeFailure(Reason.NOT_FOUND, f"PlaceOS tables missing: {', '.join(missing)}", facts)
    return Outcome(Reason.OK, f"PostgreSQL {facts.server_version} answers; PlaceOS tables present", facts)


SPEC = ProbeSpec(
    name=ProbeName.POSTGRES,
    run=run,
    checks="PlaceOS's health query answers and the tables logins and systems need exist",
    eras=frozenset({Era.B, Era.C, Era.D}),
    section="postgres",
    needs="postgres settings (PG_DATABASE_URL or PG_HOST, ...)",
    facts=PostgresFacts,
    errors=ERRORS,
)
