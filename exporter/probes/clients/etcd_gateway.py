"""A minimal client of etcd's v3 JSON gateway, as PlaceOS's crystal-etcd speaks it (internals §1.1).

Shared by the etcd and core_discovery probes. aiohttp, not etcd3-py: etcd3-py 0.1.6's client
constructor makes a blocking version call and raises AttributeError when etcd is down, so the client
cannot even be built during the outage we must report (README "Why not etcd3-py").
"""

from __future__ import annotations

import base64
from typing import Any

from exporter.model.vocabulary import Reason
from exporter.probes.base import ProbeContext, ProbeFailure
from exporter.probes.clients.bounded import http_status_reason, read_json, ssl_context
from exporter.settings import EtcdSettings


def b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def prefix_range(prefix: str) -> tuple[str, str]:
    """(key, range_end) for a prefix scan, as crystal-etcd computes it (internals §1.1)."""
    raw = prefix.encode()
    end = raw[:-1] + bytes([raw[-1] + 1])
    return b64(raw), b64(end)


class EtcdGateway:
    """Minimal client of etcd's v3 JSON gateway, bounded by the probe's context."""

    def __init__(self, ctx: ProbeContext, settings: EtcdSettings) -> None:
        self.ctx = ctx
        self.settings = settings
        self.ssl = ssl_context(settings) if settings.tls else False
        self.token: str | None = None
        version = settings.api_version
        self.prefix = ctx.state.get("etcd_prefix", "v3" if version == "auto" else version)

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return await self._post(path, body)
        except ProbeFailure as exc:
            # crystal-etcd before 1.2.5 spoke /v3beta (internals §1.1): fall back once, remember it.
            if exc.reason is Reason.NOT_FOUND and self.settings.api_version == "auto" and self.prefix == "v3":
                self.prefix = "v3beta"
                result = await self._post(path, body)
                self.ctx.state["etcd_prefix"] = "v3beta"
                return result
            raise

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Authorization": self.token} if self.token else {}
        url = f"{self.settings.base_url}/{self.prefix}/{path}"
        async with self.ctx.http.post(url, json=body, headers=headers, ssl=self.ssl) as resp:
            data = await read_json(resp)
            if resp.status != 200:
                message = str(data.get("error") or data.get("message") or "") if isinstance(data, dict) else ""
                raise ProbeFailure(gateway_reason(resp.status, message), f"etcd {path}: HTTP {resp.status} {message}")
        if not isinstance(data, dict):
            raise ProbeFailure(Reason.PROTOCOL_ERROR, f"etcd {path}: not a JSON object")
        return data

    async def authenticate(self) -> None:
        password = self.settings.password.get_secret_value() if self.settings.password else ""
        data = await self.call("auth/authenticate", {"name": self.settings.username, "password": password})
        token = data.get("token")
        if not isinstance(token, str):
            raise ProbeFailure(Reason.PROTOCOL_ERROR, "etcd auth/authenticate: no token in the answer")
        self.token = token

    async def count_prefix(self, prefix: str) -> int:
        key, range_end = prefix_range(prefix)
        data = await self.call("kv/range", {"key": key, "range_end": range_end, "count_only": True})
        return int(data.get("count", 0))


def gateway_reason(status: int, message: str) -> Reason:
    """Reasons for gateway errors; the gRPC error text says more than the HTTP status."""
    text = message.lower()
    # "authentication is not enabled" (HTTP 412): credentials configured for an etcd without auth.
    if any(m in text for m in ("authentication failed", "invalid auth token", "user name is empty", "not enabled")):
        return Reason.AUTH_FAILED
    if "permission denied" in text:
        return Reason.ACCESS_DENIED
    if "no leader" in text:
        return Reason.UNHEALTHY
    if status == 404:
        return Reason.NOT_FOUND
    return http_status_reason(status)


async def connect(ctx: ProbeContext) -> EtcdGateway:
    """A gateway client, authenticated if a user is configured."""
    gateway = EtcdGateway(ctx, ctx.cluster.etcd)
    if ctx.cluster.etcd.username:
        await gateway.authenticate()
    return gateway


def core_prefix(settings: EtcdSettings) -> str:
    """hound-dog's key prefix for core registrations: ``<namespace>/core/`` (internals §1.1)."""
    return f"{settings.namespace}/core/"
