"""systems_list probe: "Does Backoffice list the systems?" (``GET /systems``; Elasticsearch behind it,
internals §4)."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.model.vocabulary import ProbeName, Reason
from exporter.probes.base import Outcome, ProbeContext, ProbeFailure, ProbeSpec
from exporter.probes.clients.rest_api import ENGINE, api_get, can_log_in, fail_for


@dataclass(frozen=True)
class SystemsFacts:
    total: int


async def run(ctx: ProbeContext) -> Outcome:
    status, body, headers = await api_get(ctx, f"{ENGINE}/systems?limit=1")
    if status != 200:
        raise fail_for(status, body, "systems list")
    total = headers.get("X-Total-Count")
    if total is None or not total.isdigit() or not isinstance(body, list):
        raise ProbeFailure(Reason.PROTOCOL_ERROR, "systems list: no X-Total-Count or not a list")
    return Outcome(Reason.OK, f"{total} systems listed", SystemsFacts(int(total)))


SPEC = ProbeSpec(
    name=ProbeName.SYSTEMS_LIST,
    run=run,
    checks="the systems list answers with X-Total-Count, as Backoffice asks it",
    enabled_by=can_log_in,
    needs="api.url and a credential",
    facts=SystemsFacts,
)
