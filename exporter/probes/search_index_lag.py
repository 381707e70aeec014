"""search_index_lag probe: database rows minus search documents, per PlaceOS index (internals §4).

search-ingest mirrors each table into an index of the same name; when it stalls, lists and searches
go stale while Elasticsearch itself is green. Counting is heavier than a health check, so this runs on
its own, longer interval (``elasticsearch.index_lag_interval``) and never delays the health probes.
A positive lag means the index is behind; child documents copied into parent indices (join fields)
can make an index hold more documents than its table has rows (a negative value).
"""

from __future__ import annotations

from exporter.placeos import SEARCH_INDICES
from exporter.probes import elasticsearch as es
from exporter.probes import postgres, rethinkdb
from exporter.probes.base import Outcome, ProbeContext, ProbeFailure
from exporter.reasons import Reason
from exporter.settings import Era


async def probe(ctx: ProbeContext) -> Outcome:
    count_rows = rethinkdb.count_rows if ctx.era is Era.A else postgres.count_rows
    rows = await count_rows(ctx, SEARCH_INDICES)
    settings = ctx.cluster.elasticsearch
    lag: dict[str, int] = {}
    for index, row_count in rows.items():
        try:
            answer = await es.request(ctx, settings, "GET", f"/{index}/_count")
            docs = int(answer.get("count", 0))
        except ProbeFailure as exc:
            if exc.reason is not Reason.NOT_FOUND:  # a missing index holds no documents
                raise
            docs = 0
        lag[index] = row_count - docs
    behind = {i: n for i, n in lag.items() if n > 0}
    detail = f"{len(lag)} indices counted" + (f"; behind: {behind}" if behind else "")
    return Outcome(Reason.OK, detail, {"index_lag": lag})
