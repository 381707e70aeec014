"""websocket probe: a Backoffice control session over ``/api/engine/v2/systems/control`` (internals §5.4).

Connect (credential in a header, never in the URL), ``bind`` a status of the configured module and
wait for its first ``notify``, ``exec`` the configured function when one is set, then ``ping`` ->
``pong``. Errors are classified by ``error_code`` 0-7, and ``unexpected_failure`` (7) by its
message like the execute probe (no core instances, etcd, core unreachable).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from exporter.model.vocabulary import ProbeName, Reason
from exporter.probes.base import Outcome, ProbeContext, ProbeSpec
from exporter.probes.clients.bounded import close_within
from exporter.probes.clients.control import bind, connect, receive
from exporter.probes.clients.rest_api import module_configured, module_parts


@dataclass(frozen=True)
class WebSocketFacts:
    steps: int  # bind, notify, exec, pong: how far the session got


async def run(ctx: ProbeContext) -> Outcome:
    settings = ctx.cluster.api
    name, index = module_parts(settings.module or "")
    ws = await connect(ctx)
    steps = ["bind"]
    try:
        await bind(ws, ctx, settings.status_key)
        steps.append("notify")
        if settings.function:
            exec_ = {"id": 2, "cmd": "exec", "sys": settings.system_id, "mod": name, "index": index,
                     "name": settings.function, "args": settings.args}  # fmt: skip
            await ws.send_str(json.dumps(exec_))
            await receive(ws, 2, {"success"}, ctx.cluster)
            steps.append("exec")
        await ws.send_str("ping")
        await receive(ws, None, {"pong"})
        steps.append("pong")
    finally:
        await close_within(ws.close(), 1.0)
    return Outcome(Reason.OK, f"websocket {' + '.join(steps)} ok", WebSocketFacts(len(steps)))


SPEC = ProbeSpec(
    name=ProbeName.WEBSOCKET,
    run=run,
    checks="a control session binds a status, gets its notify, execs the function and pongs",
    enabled_by=module_configured,
    needs="api.url, a credential, api.system_id and api.module",
    timeout=12.0,  # the exec waits on core retries, as execute does
    facts=WebSocketFacts,
)
