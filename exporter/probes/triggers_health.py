"""triggers_health probe: ``GET /api/triggers/v2/``, the triggers service's health route (internals §6)."""

from __future__ import annotations

from exporter.model.vocabulary import Era, ProbeName, Reason
from exporter.probes.base import Outcome, ProbeContext, ProbeSpec
from exporter.probes.clients.rest_api import api_get, base_url, fail_for
from exporter.settings import ClusterConfig

TRIGGERS_HEALTH = "/api/triggers/v2/"


async def run(ctx: ProbeContext) -> Outcome:
    settings = ctx.cluster.api
    base = (settings.triggers_url or base_url(settings)).rstrip("/")
    status, body, _ = await api_get(ctx, TRIGGERS_HEALTH, auth=False, base=base)
    if status != 200:
        raise fail_for(status, body, "triggers health")
    return Outcome(Reason.OK, "triggers health route answers 200")


def _configured(c: ClusterConfig, era: Era) -> bool:
    return bool(c.api.url or c.api.triggers_url)


SPEC = ProbeSpec(
    name=ProbeName.TRIGGERS_HEALTH,
    run=run,
    checks="the triggers service's health route answers 200",
    enabled_by=_configured,
    needs="api.url or api.triggers_url",
)
