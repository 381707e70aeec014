"""module_functions probe: "Does the list of modules and module functions load?" (Redis behind it,
internals §3.3): ``GET /systems/<sys>/functions/<Mod_idx>``."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from exporter.model.vocabulary import ProbeName, Reason
from exporter.probes.base import Outcome, ProbeContext, ProbeFailure, ProbeSpec
from exporter.probes.clients.rest_api import ENGINE, api_get, fail_for, module_configured


@dataclass(frozen=True)
class FunctionsFacts:
    functions: int


async def run(ctx: ProbeContext) -> Outcome:
    settings = ctx.cluster.api
    path = f"{ENGINE}/systems/{quote(settings.system_id or '')}/functions/{quote(settings.module or '')}"
    status, body, _ = await api_get(ctx, path)
    if status != 200:
        raise fail_for(status, body, "functions")
    if not isinstance(body, dict) or not body:
        raise ProbeFailure(Reason.NOT_FOUND, "functions: the module reports no functions")
    return Outcome(Reason.OK, f"{len(body)} functions of {settings.module}", FunctionsFacts(len(body)))


SPEC = ProbeSpec(
    name=ProbeName.MODULE_FUNCTIONS,
    run=run,
    checks="the configured module's functions load",
    enabled_by=module_configured,
    needs="api.url, a credential, api.system_id and api.module",
    facts=FunctionsFacts,
)
