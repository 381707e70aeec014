"""Elasticsearch over the probes' aiohttp session, bodies bounded (elasticsearch, search_index_lag).

Not through the official client (README "Elasticsearch: aiohttp, not the official client"): the 8.x
client rewrites every ``application/json`` header to ``compatible-with=8``, which 7.x servers reject,
and its transport reads every body whole. We send plain ``application/json``, which both majors
accept, read at most MAX_BODY_BYTES, and make the client's product check ourselves.
"""

from __future__ import annotations

import base64
from typing import Any

import aiohttp

from exporter.model.vocabulary import Reason
from exporter.probes.base import ProbeContext, ProbeFailure
from exporter.probes.clients.bounded import http_status_reason, parse_json, read_bounded, ssl_context
from exporter.settings import ElasticsearchSettings

PLAIN_JSON = {"accept": "application/json", "content-type": "application/json"}
PRODUCT_HEADER = "X-Elastic-Product"


def url(settings: ElasticsearchSettings) -> str:
    """ELASTIC_URI wins; otherwise scheme from ELASTIC_TLS plus host and port (internals §4)."""
    if settings.uri:
        return settings.uri.rstrip("/")
    return f"{'https' if settings.tls else 'http'}://{settings.host}:{settings.port}"


def auth_headers(settings: ElasticsearchSettings) -> dict[str, str]:
    if settings.api_key:
        return {"authorization": f"ApiKey {settings.api_key.get_secret_value()}"}
    if settings.username:
        password = settings.password.get_secret_value() if settings.password else ""
        token = base64.b64encode(f"{settings.username}:{password}".encode()).decode()
        return {"authorization": f"Basic {token}"}
    return {}


async def request(ctx: ProbeContext, settings: ElasticsearchSettings, method: str, path: str) -> Any:
    """One request with plain JSON media types over the probes' HTTP session; status, product header
    and body checked, the body read through ``read_bounded`` (never more than MAX_BODY_BYTES)."""
    base = url(settings)
    tls = ssl_context(settings) if base.startswith("https") else False
    timeout = aiohttp.ClientTimeout(total=ctx.remaining())
    headers = PLAIN_JSON | auth_headers(settings)
    async with ctx.http.request(method, base + path, headers=headers, ssl=tls, timeout=timeout) as resp:
        body = parse_json(await read_bounded(resp))
        status, product = resp.status, resp.headers.get(PRODUCT_HEADER)
    if not 200 <= status < 300:
        error = body.get("error") if isinstance(body, dict) else None
        kind = error.get("type", "") if isinstance(error, dict) else ""
        raise ProbeFailure(http_status_reason(status), f"{path}: HTTP {status} {kind}".rstrip())
    if product != "Elasticsearch":
        # What the official client's product check refuses: not Elasticsearch, or a proxy's answer.
        raise ProbeFailure(Reason.PROTOCOL_ERROR, f"{path}: answer lacks {PRODUCT_HEADER}: Elasticsearch")
    if not isinstance(body, dict | list):
        raise ProbeFailure(Reason.PROTOCOL_ERROR, f"{path}: answer is not JSON")
    return body
