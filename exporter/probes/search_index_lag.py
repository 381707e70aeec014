"""search_index_lag probe: database rows minus search documents, per PlaceOS index (internals §4).

search-ingest mirrors each table into an index of the same name; when it stalls, lists and searches
go stale while Elasticsearch itself is green. Counting is heavier than a health check, so this runs on
its own, longer interval (``elasticsearch.index_lag_interval``) and never delays the health probes.
A positive lag means the index is behind; child documents copied into parent indices (join fields)
can make an index hold more documents than its table has rows (a negative value).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from exporter.model.metric import MetricSpec
from exporter.model.placeos import SEARCH_INDICES
from exporter.model.vocabulary import Era, ProbeName, Reason
from exporter.probes.base import MetricRow, Outcome, ProbeContext, ProbeFailure, ProbeSpec, Samples
from exporter.probes.clients import postgres, rethinkdb
from exporter.probes.clients.elasticsearch import request
from exporter.settings import ClusterConfig


@dataclass(frozen=True)
class LagFacts:
    lag: dict[str, int] = field(default_factory=dict)  # index -> rows minus documents


async def run(ctx: ProbeContext) -> Outcome:
    count_rows = rethinkdb.count_rows if ctx.era is Era.A else postgres.count_rows
    rows = await count_rows(ctx, SEARCH_INDICES)
    settings = ctx.cluster.elasticsearch
    lag: dict[str, int] = {}
    for index, row_count in rows.items():
        try:
            answer = await request(ctx, settings, "GET", f"/{index}/_count")
            docs = int(answer.get("count", 0))
        except ProbeFailure as exc:
            if exc.reason is not Reason.NOT_FOUND:  # a missing index holds no documents
                raise
            docs = 0
        lag[index] = row_count - docs
    behind = {i: n for i, n in lag.items() if n > 0}
    detail = f"{len(lag)} indices counted" + (f"; behind: {behind}" if behind else "")
    # A slow failure: search-ingest stalled leaves lists stale while everything answers. A lag over the
    # threshold that did not shrink since the previous count is a stall (a first count only watches).
    previous: dict[str, int] = ctx.state.get("lag", {})
    ctx.state["lag"] = lag
    threshold = settings.index_lag_threshold
    stalled = {i: n for i, n in behind.items() if n > threshold and i in previous and n >= previous[i]}
    if stalled:
        raise ProbeFailure(
            Reason.UNHEALTHY,
            f"search-ingest is not catching up: {stalled} documents behind, not shrinking since the last count",
            LagFacts(lag),
        )
    return Outcome(Reason.OK, detail, LagFacts(lag))


def _lag(facts: LagFacts | None, last_ok: LagFacts | None) -> Samples:
    """Indices seen once stay present; while counting fails their lag is unknown (NaN)."""
    lag = facts.lag if facts else {}
    known = last_ok.lag if last_ok else {}
    for index in SEARCH_INDICES:
        if index in lag or index in known:
            yield (index,), float(lag[index]) if index in lag else float("nan")


def _database_configured(c: ClusterConfig, era: Era) -> bool:
    return (c.rethinkdb if era is Era.A else c.postgres).probed


def _interval(c: ClusterConfig) -> float:
    return c.elasticsearch.index_lag_interval


SPEC = ProbeSpec(
    name=ProbeName.SEARCH_INDEX_LAG,
    run=run,
    eras=frozenset({Era.A, Era.B, Era.C}),  # era D has no Elasticsearch (placeos-2026 §1)
    checks="database rows minus search documents, per PlaceOS index (search-ingest keeping up)",
    needs_probes=(ProbeName.ELASTICSEARCH,),
    enabled_by=_database_configured,
    needs="the database (RethinkDB in era A, PostgreSQL after) configured",
    timeout=30.0,
    interval=_interval,
    facts=LagFacts,
    errors={**postgres.ERRORS, **rethinkdb.ERRORS},
    metrics=(
        MetricRow(MetricSpec("placeos_search_index_lag_documents", "gauge",
                             "Database rows minus search documents per PlaceOS index (search-ingest lag).",
                             ("index",), {"index": SEARCH_INDICES}), _lag),
    ),
)  # fmt: skip
