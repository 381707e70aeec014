"""status_delivery probe: a status change reaches a subscriber through PlaceOS within the deadline.

Redis can answer PING while status updates silently stop reaching WebSocket clients (a reconnect that
dropped the subscriptions: driver #170/#171, rest-api #375; placeos-2026 §2). A bind's first value may be
read with an HGET rather than through pub/sub (driver ``perform_subscribe`` before 12ef4c4d), so the
probe binds ``api.changing_status`` of the configured module (a status its driver updates every few
seconds: a clock, a heartbeat), takes that first value, and waits for a notify with another value. None
before the deadline: deliveries are lost (or the driver stopped updating it, which the drivers probe
tells).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from exporter.model.vocabulary import Era, ProbeName, Reason
from exporter.probes.base import Outcome, ProbeContext, ProbeSpec
from exporter.probes.clients.bounded import close_within
from exporter.probes.clients.control import bind, connect, receive
from exporter.probes.clients.rest_api import module_configured
from exporter.settings import ClusterConfig


@dataclass(frozen=True)
class DeliveryFacts:
    seconds: float  # from the first value to the first change delivered


async def run(ctx: ProbeContext) -> Outcome:
    status = ctx.cluster.api.changing_status or ""
    loop = asyncio.get_running_loop()
    ws = await connect(ctx)
    try:
        first = await bind(ws, ctx, status)
        started = loop.time()
        while True:
            notify = await receive(ws, 1, {"notify"}, ctx.cluster)
            if notify.get("value") != first.get("value"):
                break
    finally:
        await close_within(ws.close(), 1.0)
    seconds = loop.time() - started
    return Outcome(Reason.OK, f"a change of {status} arrived after {seconds:.1f}s", DeliveryFacts(seconds))


def _configured(c: ClusterConfig, era: Era) -> bool:
    return module_configured(c) and bool(c.api.changing_status)


SPEC = ProbeSpec(
    name=ProbeName.STATUS_DELIVERY,
    run=run,
    checks="a change of a status that changes on a schedule reaches a WebSocket subscriber",
    enabled_by=_configured,
    needs="api.url, a credential, api.system_id, api.module and api.changing_status",
    timeout=10.0,  # several periods of a status that changes every second or two
    facts=DeliveryFacts,
)
