"""Elasticsearch probe: cluster health as search-ingest reads it (internals §4).

``GET /_cluster/health``: green or yellow = healthy, red or an error = down; the colour becomes
``placeos_elasticsearch_cluster_status``. PlaceOS ran Elasticsearch 7.17 and 8.x.
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.model.metric import MetricSpec
from exporter.model.vocabulary import Era, ProbeName, Reason
from exporter.probes.base import MetricRow, Outcome, ProbeContext, ProbeFailure, ProbeSpec, Samples
from exporter.probes.clients.elasticsearch import request

ES_COLORS = ("green", "yellow", "red")


@dataclass(frozen=True)
class ElasticsearchFacts:
    status: str  # green | yellow | red
    nodes: int


async def run(ctx: ProbeContext) -> Outcome:
    health = await request(ctx, ctx.cluster.elasticsearch, "GET", "/_cluster/health")
    status = health.get("status") if isinstance(health, dict) else None
    if status not in ES_COLORS:
        raise ProbeFailure(Reason.PROTOCOL_ERROR, "/_cluster/health: no status colour")
    facts = ElasticsearchFacts(str(status), int(health.get("number_of_nodes", 0)))
    if status == "red":
        raise ProbeFailure(Reason.UNHEALTHY, "cluster health is red: some primary shards are unassigned", facts)
    return Outcome(Reason.OK, f"cluster health {status}", facts)


def _colors(facts: ElasticsearchFacts | None, _: object) -> Samples:
    for color in ES_COLORS:
        yield (color,), float("nan") if facts is None else float(facts.status == color)


SPEC = ProbeSpec(
    name=ProbeName.ELASTICSEARCH,
    run=run,
    eras=frozenset({Era.A, Era.B, Era.C}),  # era D has no Elasticsearch (placeos-2026 §1)
    checks="cluster health is green or yellow",
    section="elasticsearch",
    needs="elasticsearch settings (ELASTIC_URI or ELASTIC_HOST, ...)",
    facts=ElasticsearchFacts,
    metrics=(
        MetricRow(MetricSpec("placeos_elasticsearch_cluster_status", "gauge",
                             "State set of Elasticsearch cluster health colours.", ("color",), {"color": ES_COLORS}),
                  _colors),
    ),
)  # fmt: skip
