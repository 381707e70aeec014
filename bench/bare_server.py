"""A bare aiohttp server that serves captured /metrics bodies verbatim: the baseline of metrics_latency.

It answers ``GET /metrics`` with the bytes the exporter returned for the same kind of request (plain
text, gzip, OpenMetrics + gzip), with the same Content-Type and Content-Encoding, choosing the body by
the request's Accept / Accept-Encoding as the exporter does. Nothing is rendered or compressed per
request: what is left is aiohttp's own cost, the floor the exporter is compared with.

    python -m bench.bare_server --bodies DIR/bodies.json --port-file DIR/port
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

# (openmetrics, gzip) -> (body, content type, content encoding)
Bodies = dict[tuple[bool, bool], tuple[bytes, str, str]]
BODIES_KEY = web.AppKey("bodies", dict)


def save_bodies(path: Path, captured: Sequence[tuple[bool, bool, bytes, str, str]]) -> None:
    """Write captured (openmetrics, gzip, body, content type, content encoding) rows for the server."""
    rows = [
        {"openmetrics": om, "gzip": gz, "body": base64.b64encode(body).decode(), "type": ct, "encoding": enc}
        for om, gz, body, ct, enc in captured
    ]
    path.write_text(json.dumps(rows))


def load_bodies(path: Path) -> Bodies:
    rows = json.loads(path.read_text())
    return {(r["openmetrics"], r["gzip"]): (base64.b64decode(r["body"]), r["type"], r["encoding"]) for r in rows}


async def metrics_handler(request: web.Request) -> web.Response:
    bodies: Bodies = request.app[BODIES_KEY]
    gzipped = "gzip" in request.headers.get("Accept-Encoding", "")
    openmetrics = "application/openmetrics-text" in request.headers.get("Accept", "")
    body, content_type, encoding = bodies.get((openmetrics, gzipped)) or bodies[(False, False)]
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = content_type
    if encoding:
        resp.headers["Content-Encoding"] = encoding
    return resp


def make_app(bodies: Bodies) -> web.Application:
    app = web.Application()
    app[BODIES_KEY] = bodies
    app.router.add_get("/metrics", metrics_handler)
    return app


async def serve(bodies: Bodies, port_file: Path) -> None:
    # Same runner options as the exporter's (exporter.cli.Exporter.start).
    runner = web.AppRunner(make_app(bodies), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, reuse_address=True)
    await site.start()
    sockets = getattr(site._server, "sockets", None) or []
    port = int(sockets[0].getsockname()[1])
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(str(port))
    os.replace(tmp, port_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="serve captured /metrics bodies verbatim")
    parser.add_argument("--bodies", type=Path, required=True)
    parser.add_argument("--port-file", type=Path, required=True)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(load_bodies(args.bodies), args.port_file))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
