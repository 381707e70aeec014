"""Elasticsearch probe: cluster health as search-ingest reads it (internals §4).

``GET /_cluster/health``: green or yellow = healthy, red or an error = down; the colour becomes
``placeos_elasticsearch_cluster_status``. PlaceOS ran Elasticsearch 7.17 and 8.x. The official 8.x
client rewrites every ``application/json`` header to ``compatible-with=8``, which 7.x servers reject
(``media_type_header_exception``), so we use the client's transport (pooling, TLS, timeouts) with plain
``application/json``, which both majors accept, and make the client's product check ourselves
(README "Elasticsearch versions").
"""

from __future__ import annotations

import base64
import ssl
from typing import Any

from elastic_transport import ApiError, AsyncTransport, ObjectApiResponse, TransportError

from exporter.probes.base import Outcome, ProbeContext, ProbeFailure, close_within, http_status_reason, ssl_context
from exporter.reasons import Reason
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


def transport(settings: ElasticsearchSettings, timeout: float) -> AsyncTransport:
    """A one-node transport without retries or sniffing: one honest attempt per probe run."""
    base = url(settings)
    node: dict[str, Any] = {"request_timeout": timeout}
    if base.startswith("https"):
        context: ssl.SSLContext = ssl_context(settings)
        node["ssl_context"] = context
    from elastic_transport import NodeConfig

    scheme, _, rest = base.partition("://")
    hostport = rest.split("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    config = NodeConfig(scheme, host.strip("[]") or hostport, int(port) if port else 9200, **node)
    return AsyncTransport([config], node_class="aiohttp", max_retries=0, retry_on_timeout=False)


async def request(tp: AsyncTransport, settings: ElasticsearchSettings, method: str, path: str) -> Any:
    """One request with plain JSON media types; status, product header and body checked."""
    headers = PLAIN_JSON | auth_headers(settings)
    try:
        meta, body = await tp.perform_request(method, path, headers=headers)
    except ApiError as exc:  # not raised by the bare transport, kept for safety
        raise ProbeFailure(http_status_reason(exc.meta.status), f"{path}: HTTP {exc.meta.status}") from None
    except TransportError as exc:
        cause = exc.errors[0] if getattr(exc, "errors", None) else exc
        raise cause if isinstance(cause, BaseException) and cause is not exc else exc from None
    if not 200 <= meta.status < 300:
        error = body.get("error") if isinstance(body, dict) else None
        kind = error.get("type", "") if isinstance(error, dict) else ""
        raise ProbeFailure(http_status_reason(meta.status), f"{path}: HTTP {meta.status} {kind}".rstrip())
    if meta.headers.get(PRODUCT_HEADER) != "Elasticsearch":
        # What the official client's product check refuses: not Elasticsearch, or a proxy's answer.
        raise ProbeFailure(Reason.PROTOCOL_ERROR, f"{path}: answer lacks {PRODUCT_HEADER}: Elasticsearch")
    if isinstance(body, ObjectApiResponse):
        body = body.body
    if not isinstance(body, dict | list):
        raise ProbeFailure(Reason.PROTOCOL_ERROR, f"{path}: answer is not JSON")
    return body


async def probe(ctx: ProbeContext) -> Outcome:
    settings = ctx.cluster.elasticsearch
    tp = transport(settings, ctx.remaining())
    try:
        health = await request(tp, settings, "GET", "/_cluster/health")
    finally:
        await close_within(tp.close(), 1.0)
    status = health.get("status") if isinstance(health, dict) else None
    if status not in ("green", "yellow", "red"):
        raise ProbeFailure(Reason.PROTOCOL_ERROR, "/_cluster/health: no status colour")
    facts = {"status": status, "nodes": int(health.get("number_of_nodes", 0))}
    if status == "red":
        raise ProbeFailure(Reason.UNHEALTHY, "cluster health is red: some primary shards are unassigned", facts)
    return Outcome(Reason.OK, f"cluster health {status}", facts)
