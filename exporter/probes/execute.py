"""execute probe: "Does executing a function work? View the response to see the error." (internals §9)

``POST /api/engine/v2/systems/<sys>/<Mod>_<idx>/<fn>`` with a JSON array of arguments, as Backoffice
does. Configure an idempotent, read-only function (a status getter): the probe runs it on every
cycle. Failures are classified by status and the ``error``/``message`` of the body exactly as
rest-api words them (internals §1.4, §5.3, ``model.placeos.EXECUTE_ERRORS``).

PlaceOS retries a failing core request with back-off (10 retries up to 40 s apart in eras A/B, 4 in
C), so a registered core that does not answer can hold the request for minutes. The probe's deadline
(12 s by default) is far shorter: such an execute reads as ``timeout``, and the core_discovery probe
tells whether a stale or unreachable core is why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import quote

from exporter.model.vocabulary import Era, ProbeName, Reason
from exporter.probes.base import Outcome, ProbeContext, ProbeFailure, ProbeSpec
from exporter.probes.clients.bounded import parse_json, read_bounded
from exporter.probes.clients.rest_api import (
    ENGINE,
    base_url,
    classify_error,
    credential_headers,
    error_text,
    module_configured,
    request_headers,
    timeout,
    tls,
)
from exporter.settings import ClusterConfig


@dataclass(frozen=True)
class ExecuteFacts:
    status: int  # the HTTP status of the execute


async def run(ctx: ProbeContext) -> Outcome:
    settings = ctx.cluster.api
    path = (
        f"{ENGINE}/systems/{quote(settings.system_id or '')}/{quote(settings.module or '')}"
        f"/{quote(settings.function or '')}"
    )
    headers = request_headers(settings) | await credential_headers(ctx) | {"Content-Type": "application/json"}
    url = base_url(settings) + path
    async with ctx.http.post(
        url, data=json.dumps(settings.args), headers=headers, ssl=tls(settings), timeout=timeout(ctx)
    ) as resp:
        raw = await read_bounded(resp)
        status = resp.status
    body = parse_json(raw)
    if 200 <= status < 300:
        return Outcome(Reason.OK, f"{settings.module}.{settings.function} answered {status}", ExecuteFacts(status))
    detail = f"execute: HTTP {status} {error_text(body)}".rstrip()
    raise ProbeFailure(classify_error(status, body, ctx.cluster), detail, ExecuteFacts(status))


def _configured(c: ClusterConfig, era: Era) -> bool:
    return module_configured(c) and bool(c.api.function)


SPEC = ProbeSpec(
    name=ProbeName.EXECUTE,
    run=run,
    checks="the configured (idempotent) function executes, as Backoffice runs it",
    enabled_by=_configured,
    needs="api.url, a credential, api.system_id, api.module and api.function",
    # The execute path waits on PlaceOS's own core-client retries (internals §5.3): more time than a
    # backend ping; still capped below the interval.
    timeout=12.0,
    facts=ExecuteFacts,
)
