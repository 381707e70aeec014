"""etcd probe (eras A/B): what PlaceOS itself checks, over the same JSON gateway PlaceOS uses.

PlaceOS's crystal-etcd client speaks etcd's gRPC-JSON gateway (POST, base64 keys), and rest-api/core
health is ``POST /v3/maintenance/status`` (internals §1.1). We do the same with aiohttp rather than
etcd3-py: etcd3-py 0.1.6's client constructor makes a blocking version call and raises
AttributeError when etcd is down, so the client cannot even be built during the outage we must
report (README "Why not etcd3-py").

Steps: authenticate (if a user is configured), maintenance/status (leader present, alarms), then a
count-only range over ``<namespace>/core/`` = core registrations under live leases (hound-dog keys,
internals §1.1).
"""

from __future__ import annotations

import base64
from typing import Any

from exporter.probes.base import (
    Outcome,
    ProbeContext,
    ProbeFailure,
    http_status_reason,
    read_json,
    ssl_context,
)
from exporter.reasons import Reason
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

    async def range_prefix(self, prefix: str) -> dict[str, str]:
        """key -> value for every key under ``prefix`` (values decoded as text)."""
        key, range_end = prefix_range(prefix)
        data = await self.call("kv/range", {"key": key, "range_end": range_end})
        out: dict[str, str] = {}
        for kv in data.get("kvs", []) or []:
            out[base64.b64decode(kv["key"]).decode(errors="replace")] = base64.b64decode(kv.get("value", "")).decode(
                errors="replace"
            )
        return out


def gateway_reason(status: int, message: str) -> Reason:
    """Reasons for gateway errors; the gRPC error text says more than the HTTP status."""
    text = message.lower()
    if "authentication failed" in text or "invalid auth token" in text or "user name is empty" in text:
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


async def probe(ctx: ProbeContext) -> Outcome:
    gateway = await connect(ctx)
    status = await gateway.call("maintenance/status", {})
    leader = int(status.get("leader") or 0)
    facts: dict[str, Any] = {
        "has_leader": 1 if leader else 0,
        "version": str(status.get("version", "")),
        "api_prefix": gateway.prefix,
    }
    alarms = status.get("errors") or []
    if alarms:
        raise ProbeFailure(Reason.UNHEALTHY, f"etcd alarms: {', '.join(map(str, alarms))[:200]}", facts)
    if not leader:
        raise ProbeFailure(Reason.UNHEALTHY, "etcd has no leader", facts)
    # Proves the keys PlaceOS needs are readable (a quorum read), and counts live registrations.
    facts["core_registrations"] = await gateway.count_prefix(core_prefix(ctx.cluster.etcd))
    return Outcome(Reason.OK, f"etcd {facts['version']} has a leader", facts)
