"""The PlaceOS rest-api as a user reaches it (internals §5): base URL, Host header, credentials.

Shared by the user-path probes and by era detection (``GET /api/engine/v2/version`` returns
``platform_version``, internals §5.1). Requests carry the authority's domain as Host, because
rest-api finds the authority by the request's host (internals §5.2).
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from exporter.probes.base import ProbeFailure, http_status_reason, read_json, ssl_context
from exporter.reasons import Reason
from exporter.settings import ApiSettings, ClusterConfig

ENGINE = "/api/engine/v2"


def base_url(settings: ApiSettings) -> str:
    if not settings.url:
        raise ProbeFailure(Reason.NOT_FOUND, "api.url is not configured")
    return settings.url.rstrip("/")


def request_headers(settings: ApiSettings) -> dict[str, str]:
    """Host = the authority domain (host only, no port: internals §2.2) and JSON accept."""
    headers = {"Accept": "application/json"}
    if settings.host_header:
        headers["Host"] = settings.host_header
    return headers


def tls(settings: ApiSettings) -> ssl.SSLContext | bool:
    if settings.url and urlsplit(settings.url).scheme == "https":
        return ssl_context(settings)
    return False


def credential_headers(settings: ApiSettings) -> dict[str, str]:
    """X-API-Key for an API key (internals §5.2); OAuth tokens are added by the login probe."""
    if settings.api_key:
        return {"X-API-Key": settings.api_key.get_secret_value()}
    return {}


async def platform_version(cluster: ClusterConfig, http: aiohttp.ClientSession, timeout: float) -> str | None:
    """``platform_version`` from /api/engine/v2/version, or None if the API cannot tell."""
    settings = cluster.api
    headers = request_headers(settings) | credential_headers(settings)
    async with http.get(
        f"{base_url(settings)}{ENGINE}/version",
        headers=headers,
        ssl=tls(settings),
        timeout=aiohttp.ClientTimeout(total=timeout),
    ) as resp:
        if resp.status != 200:
            raise ProbeFailure(http_status_reason(resp.status), f"version: HTTP {resp.status}")
        data: Any = await read_json(resp)
    version = data.get("platform_version") if isinstance(data, dict) else None
    return str(version) if version else None
