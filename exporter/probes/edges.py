"""edges probe: remote cores ("edges") as rest-api #417 reports them, where the cluster has them.

``GET /api/engine/v2/edges/health`` (rest-api controllers/edges.cr @ee8db8e, support users) answers a map
of edge id -> ``EdgeHealth`` (core-client src/placeos-core-client.cr @0f38fc4: ``connected``,
``last_seen``, ``module_count``, ``failed_modules`` ...). The core routes behind it exist only on a core
branch (placeos-2026 §2), so most clusters answer with an error or an empty map: an absent capability
is never a failure (``placeos_capability_available{capability="edges"} 0``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from exporter.model.metric import MetricSpec
from exporter.model.vocabulary import ProbeName, Reason
from exporter.probes.base import MetricRow, Outcome, ProbeContext, ProbeSpec, Samples
from exporter.probes.clients.rest_api import ENGINE, api_get, can_log_in

EDGE_LABEL_CAP = 100  # per-edge series at most; the rest fold into edge="other"


@dataclass(frozen=True)
class EdgeFacts:
    available: bool
    connected: dict[str, int] = field(default_factory=dict)  # edge id -> 1/0


async def run(ctx: ProbeContext) -> Outcome:
    status, body, _ = await api_get(ctx, f"{ENGINE}/edges/health")
    if status != 200 or not isinstance(body, dict):
        return Outcome(Reason.OK, f"no edge health on this cluster (HTTP {status})", EdgeFacts(False))
    connected = {
        str(edge): int(bool(health.get("connected"))) for edge, health in body.items() if isinstance(health, dict)
    }
    down = sorted(e for e, up in connected.items() if not up)
    detail = f"{len(connected)} edge(s)" + (f"; disconnected: {', '.join(down[:5])}" if down else "")
    return Outcome(Reason.OK, detail, EdgeFacts(True, connected))


def _edges(facts: EdgeFacts | None, _: object) -> Samples:
    if facts is None:
        return
    names = sorted(facts.connected)
    for name in names[:EDGE_LABEL_CAP]:
        yield (name,), float(facts.connected[name])
    rest = names[EDGE_LABEL_CAP:]
    if rest:
        yield ("other",), float(min(facts.connected[n] for n in rest))


SPEC = ProbeSpec(
    name=ProbeName.EDGES,
    run=run,
    checks="where the cluster serves edge health: which edges are connected (an absent capability passes)",
    enabled_by=can_log_in,
    needs="api.url and a credential of a support user",
    facts=EdgeFacts,
    metrics=(
        MetricRow(MetricSpec("placeos_edge_connected", "gauge",
                             f"1 if the edge is connected; capped at {EDGE_LABEL_CAP} edges, rest in 'other'.",
                             ("edge",)), _edges),
    ),
    capability="edges",
)  # fmt: skip
