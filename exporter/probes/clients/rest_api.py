"""The PlaceOS rest-api client shared by the user-path probes (internals §5): credentials, Host, errors.

Requests carry the authority's domain as Host, because rest-api finds the authority by the request's
host (internals §5.2). Credentials travel in headers, never in URLs, so no log line can carry them.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from exporter.model.placeos import BACKEND_PORTS, EXECUTE_ERRORS
from exporter.model.vocabulary import Era, Reason
from exporter.probes.base import ProbeContext, ProbeFailure
from exporter.probes.clients.bounded import http_status_reason, parse_json, read_bounded, read_json, ssl_context
from exporter.settings import ApiSettings, ClusterConfig

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


def classify_error(status: int, body: Any, cluster: ClusterConfig | None = None) -> Reason:
    """The reason for a failed execute (HTTP or WebSocket), from its body first and its status second.

    An IO error names the address it could not reach (internals §5.3): a configured backend's address,
    or a backend's default port, says which backend; any other address is a core's.
    """
    text = error_text(body).lower()
    for marker, reason in EXECUTE_ERRORS:
        if marker in text:
            if reason in _IO_REASONS:
                return unreachable(text, cluster) or Reason(reason)
            return Reason(reason)
    if status == 401:
        return Reason.AUTH_FAILED
    return http_status_reason(status)


_IO_REASONS = {"etcd_unreachable", "redis_unreachable", "database_unreachable", "core_unreachable"}
_ADDRESS = re.compile(r"(?:^|[\s'\"/@(])(\[[0-9a-f:]+\]|[a-z0-9][a-z0-9_.-]*):(\d{2,5})\b")


def unreachable(text: str, cluster: ClusterConfig | None) -> Reason | None:
    """Which backend an error's address is: a configured one first, then a default port; None if none."""
    known = backend_addresses(cluster) if cluster is not None else {}
    for host, port in _ADDRESS.findall(text):
        address = (host.strip("[]"), int(port))
        if address in known:
            return known[address]
        if address[1] in BACKEND_PORTS:
            return Reason(BACKEND_PORTS[address[1]])
    return None


def backend_addresses(c: ClusterConfig) -> dict[tuple[str, int], Reason]:
    """(host, port) of every backend the exporter is configured with, lower-cased."""
    out: dict[tuple[str, int], Reason] = {}
    redis = urlsplit(c.redis.url)
    out[((redis.hostname or "").lower(), redis.port or 6379)] = Reason.REDIS_UNREACHABLE
    if c.postgres.url:
        pg = urlsplit(c.postgres.url)
        out[((pg.hostname or "").lower(), pg.port or 5432)] = Reason.DATABASE_UNREACHABLE
    out[(c.postgres.host.lower(), c.postgres.port)] = Reason.DATABASE_UNREACHABLE
    out[(c.rethinkdb.host.lower(), c.rethinkdb.port)] = Reason.DATABASE_UNREACHABLE
    out[(c.etcd.host.lower(), c.etcd.port)] = Reason.ETCD_UNREACHABLE
    return out


def fail_for(status: int, body: Any, what: str) -> ProbeFailure:
    return ProbeFailure(http_status_reason(status), f"{what}: HTTP {status} {error_text(body)}".rstrip())


def module_parts(slug: str) -> tuple[str, int]:
    """``Display_2`` -> (Display, 2): split on the last ``_`` only if the suffix is an integer (§5.3)."""
    name, _, index = slug.rpartition("_")
    if name and index.isdigit():
        return name, int(index)
    return slug, 1


PlatformSigns = tuple[str, list[str] | None, int | None]  # platform_version, /cluster/versions, next offset


async def platform_version(cluster: ClusterConfig, http: aiohttp.ClientSession, seconds: float) -> PlatformSigns | None:
    """What tells the era (runtime/era.py): ``platform_version`` (/version, internals §5.1), the services
    /cluster/versions lists, and the offset /systems?limit=0 links its next page at; None if the API
    cannot tell."""
    ctx = ProbeContext(cluster, cluster.inferred_era(), seconds,
                       asyncio.get_running_loop().time() + seconds, http)  # fmt: skip
    status, body, _ = await api_get(ctx, f"{ENGINE}/version")
    if status != 200 or not isinstance(body, dict) or not body.get("platform_version"):
        return None
    status, listed, _ = await api_get(ctx, f"{ENGINE}/cluster/versions")
    services = None
    if status == 200 and isinstance(listed, list):
        services = [str(v["service"]) for v in listed if isinstance(v, dict) and v.get("service")]
    status, _, headers = await api_get(ctx, f"{ENGINE}/systems?limit=0")
    offset = _NEXT_OFFSET.search(headers.get("Link", "")) if status == 200 else None
    return str(body["platform_version"]), services, int(offset[1]) if offset else None


_NEXT_OFFSET = re.compile(r"[?&]offset=(\d+)[^>]*>\s*;\s*rel=\"?next")


# --- what the user-path probes need configured (their specs' ``enabled_by``) ------------------------


def api_configured(c: ClusterConfig, era: Era | None = None) -> bool:
    return bool(c.api.url)


def can_log_in(c: ClusterConfig, era: Era | None = None) -> bool:
    return api_configured(c) and has_credentials(c.api)


def module_configured(c: ClusterConfig, era: Era | None = None) -> bool:
    return can_log_in(c) and bool(c.api.system_id and c.api.module)
