"""The PlaceOS rest-api as a user reaches it (internals §5): the troubleshooting page's triage steps.

- ``api_health``: ``GET /api/engine/v2/`` without auth (internals §5.1).
- ``login``: "Can you log in?" with an API key or an OAuth password/client-credentials grant. A 401
  ``unknown X-API-Key`` is also what PlaceOS answers when its database is down (internals §5.2), so
  the diagnosis reads it together with the database probe.
- ``systems_list``: "Does Backoffice list the systems?" (Elasticsearch behind it, internals §4).
- ``module_functions``: "Does the list of modules and module functions load?" (Redis, §3.3).
- ``triggers_health``: ``GET /api/triggers/v2/`` (internals §6).

Requests carry the authority's domain as Host, because rest-api finds the authority by the request's
host (internals §5.2). Credentials travel in headers, never in URLs, so no log line can carry them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from exporter.probes.base import (
    Outcome,
    ProbeContext,
    ProbeFailure,
    http_status_reason,
    parse_json,
    read_bounded,
    read_json,
    ssl_context,
)
from exporter.reasons import Reason
from exporter.settings import ApiSettings, ClusterConfig, ProbeName

ENGINE = "/api/engine/v2"
TOKEN_PATH = "/auth/oauth/token"  # noqa: S105 (a route, not a secret)
TRIGGERS_HEALTH = "/api/triggers/v2/"
# Refresh an OAuth token this long before it expires (tokens live 2 h, internals §5.2).
TOKEN_MARGIN = 60.0


def base_url(settings: ApiSettings) -> str:
    if not settings.url:
        raise ProbeFailure(Reason.NOT_FOUND, "api.url is not configured")
    return settings.url.rstrip("/")


def request_headers(settings: ApiSettings) -> dict[str, str]:
    """Host = the authority's domain (host only, lower-case, no port: internals §2.2) and JSON."""
    headers = {"Accept": "application/json"}
    if settings.host_header:
        headers["Host"] = settings.host_header
    return headers


def tls(settings: ApiSettings, url: str | None = None) -> Any:
    if urlsplit(url or settings.url or "").scheme in ("https", "wss"):
        return ssl_context(settings)
    return False


def timeout(ctx: ProbeContext) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=ctx.remaining())


def has_credentials(settings: ApiSettings) -> bool:
    return bool(settings.api_key or (settings.client_id and (settings.username or settings.client_secret)))


async def credential_headers(ctx: ProbeContext, fresh: bool = False) -> dict[str, str]:
    """X-API-Key, or a bearer token from the OAuth grant (cached per cluster until near expiry)."""
    settings = ctx.cluster.api
    if settings.api_key:
        return {"X-API-Key": settings.api_key.get_secret_value()}
    if not settings.client_id:
        raise ProbeFailure(Reason.AUTH_FAILED, "no API credential configured (api.api_key or OAuth client)")
    cached = ctx.shared.get("oauth_token")
    if not fresh and cached and cached[1] - TOKEN_MARGIN > time.time():
        return {"Authorization": f"Bearer {cached[0]}"}
    token, expires_in = await oauth_token(ctx)
    ctx.shared["oauth_token"] = (token, time.time() + expires_in)
    return {"Authorization": f"Bearer {token}"}


async def oauth_token(ctx: ProbeContext) -> tuple[str, float]:
    """Doorkeeper's token endpoint: password grant with a user, else client credentials (§5.2)."""
    settings = ctx.cluster.api
    form: dict[str, str] = {"client_id": settings.client_id or "", "scope": "public"}
    if settings.client_secret:
        form["client_secret"] = settings.client_secret.get_secret_value()
    if settings.username:
        form |= {"grant_type": "password", "username": settings.username,
                 "password": settings.password.get_secret_value() if settings.password else ""}  # fmt: skip
    else:
        form["grant_type"] = "client_credentials"
    url = base_url(settings) + TOKEN_PATH
    async with ctx.http.post(
        url, data=form, headers=request_headers(settings), ssl=tls(settings), timeout=timeout(ctx)
    ) as resp:
        body = await read_json(resp)
        if resp.status != 200:
            error = body.get("error") if isinstance(body, dict) else None
            reason = Reason.AUTH_FAILED if resp.status in (400, 401) else http_status_reason(resp.status)
            raise ProbeFailure(reason, f"OAuth token: HTTP {resp.status} {error or ''}".rstrip())
    if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
        raise ProbeFailure(Reason.PROTOCOL_ERROR, "OAuth token: no access_token in the answer")
    return body["access_token"], float(body.get("expires_in") or 7200)


async def api_get(ctx: ProbeContext, path: str, *, auth: bool = True, base: str | None = None) -> tuple[int, Any, Any]:
    """GET with Host and credentials; returns (status, JSON body or None, headers)."""
    settings = ctx.cluster.api
    headers = request_headers(settings) | (await credential_headers(ctx) if auth else {})
    url = (base or base_url(settings)) + path
    async with ctx.http.get(url, headers=headers, ssl=tls(settings, url), timeout=timeout(ctx)) as resp:
        raw = await read_bounded(resp)
        return resp.status, parse_json(raw), resp.headers


def error_text(body: Any) -> str:
    """The ``error`` and ``message`` fields of a PlaceOS error body, joined (internals §5.3)."""
    if not isinstance(body, dict):
        return ""
    return " ".join(str(body[k]) for k in ("error", "message") if body.get(k))[:300]


def fail_for(status: int, body: Any, what: str) -> ProbeFailure:
    return ProbeFailure(http_status_reason(status), f"{what}: HTTP {status} {error_text(body)}".rstrip())


def module_parts(slug: str) -> tuple[str, int]:
    """``Display_2`` -> (Display, 2): split on the last ``_`` only if the suffix is an integer (§5.3)."""
    name, _, index = slug.rpartition("_")
    if name and index.isdigit():
        return name, int(index)
    return slug, 1


# --- probes ----------------------------------------------------------------------------------------


async def api_health(ctx: ProbeContext) -> Outcome:
    status, body, _ = await api_get(ctx, f"{ENGINE}/", auth=False)
    if status != 200:
        raise fail_for(status, body, "health route")
    return Outcome(Reason.OK, "rest-api health route answers 200")


async def login(ctx: ProbeContext) -> Outcome:
    """A real login every run: the API key is checked against the database on each request; an OAuth
    grant is made afresh (its token then serves the other probes)."""
    settings = ctx.cluster.api
    method = "api_key" if settings.api_key else "oauth"
    if method == "oauth":
        await credential_headers(ctx, fresh=True)
    status, body, _ = await api_get(ctx, f"{ENGINE}/api_keys/inspect")
    if status != 200:
        raise fail_for(status, body, "login")
    if not isinstance(body, dict):  # rest-api answers the key's claims; anything else is not rest-api
        raise ProbeFailure(Reason.PROTOCOL_ERROR, "login: /api_keys/inspect answered 200 without a JSON object")
    return Outcome(Reason.OK, f"logged in with {method.replace('_', ' ')}", {"method": method})


async def systems_list(ctx: ProbeContext) -> Outcome:
    status, body, headers = await api_get(ctx, f"{ENGINE}/systems?limit=1")
    if status != 200:
        raise fail_for(status, body, "systems list")
    total = headers.get("X-Total-Count")
    if total is None or not total.isdigit() or not isinstance(body, list):
        raise ProbeFailure(Reason.PROTOCOL_ERROR, "systems list: no X-Total-Count or not a list")
    return Outcome(Reason.OK, f"{total} systems listed", {"systems_total": int(total)})


async def module_functions(ctx: ProbeContext) -> Outcome:
    settings = ctx.cluster.api
    path = f"{ENGINE}/systems/{quote(settings.system_id or '')}/functions/{quote(settings.module or '')}"
    status, body, _ = await api_get(ctx, path)
    if status != 200:
        raise fail_for(status, body, "functions")
    if not isinstance(body, dict) or not body:
        raise ProbeFailure(Reason.NOT_FOUND, "functions: the module reports no functions")
    return Outcome(Reason.OK, f"{len(body)} functions of {settings.module}", {"functions": len(body)})


async def triggers_health(ctx: ProbeContext) -> Outcome:
    settings = ctx.cluster.api
    base = (settings.triggers_url or base_url(settings)).rstrip("/")
    status, body, _ = await api_get(ctx, TRIGGERS_HEALTH, auth=False, base=base)
    if status != 200:
        raise fail_for(status, body, "triggers health")
    return Outcome(Reason.OK, "triggers health route answers 200")


async def platform_version(cluster: ClusterConfig, http: aiohttp.ClientSession, seconds: float) -> str | None:
    """``platform_version`` from /api/engine/v2/version, or None if the API cannot tell (§5.1)."""
    ctx = ProbeContext(cluster, ProbeName.LOGIN, cluster.inferred_era(), seconds,
                       asyncio.get_running_loop().time() + seconds, http)  # fmt: skip
    status, body, _ = await api_get(ctx, f"{ENGINE}/version")
    if status != 200 or not isinstance(body, dict):
        return None
    version = body.get("platform_version")
    return str(version) if version else None
