"""login probe: "Can you log in?" with an API key or an OAuth password/client-credentials grant.

A real login every run: the API key is checked against the database on each request; an OAuth grant
is made afresh (its token then serves the other probes). A 401 ``unknown X-API-Key`` is also what
PlaceOS answers when its database is down (internals §5.2), so the diagnosis reads it together with
the database probe.
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.model.vocabulary import ProbeName, Reason
from exporter.probes.base import Outcome, ProbeContext, ProbeFailure, ProbeSpec
from exporter.probes.clients.rest_api import ENGINE, api_get, can_log_in, credential_headers, fail_for


@dataclass(frozen=True)
class LoginFacts:
    method: str  # api_key | oauth


async def run(ctx: ProbeContext) -> Outcome:
    method = "api_key" if ctx.cluster.api.api_key else "oauth"
    if method == "oauth":
        await credential_headers(ctx, fresh=True)
    status, body, _ = await api_get(ctx, f"{ENGINE}/api_keys/inspect")
    if status != 200:
        raise fail_for(status, body, "login")
    if not isinstance(body, dict):  # rest-api answers the key's claims; anything else is not rest-api
        raise ProbeFailure(Reason.PROTOCOL_ERROR, "login: /api_keys/inspect answered 200 without a JSON object")
    return Outcome(Reason.OK, f"logged in with {method.replace('_', ' ')}", LoginFacts(method))


SPEC = ProbeSpec(
    name=ProbeName.LOGIN,
    run=run,
    checks="a credential of a support/admin user logs in (GET /api_keys/inspect)",
    enabled_by=can_log_in,
    needs="api.url and api.api_key (or an OAuth client)",
    facts=LoginFacts,
)
