"""HTTP routes (aiohttp): /metrics, /probe?cluster=, /diagnose, the status page, /-/healthy, /-/ready.

No handler does I/O to a backend: everything renders the snapshot the scheduler writes, so a hung
backend can never slow or hang a scrape (design §1, anchors §8.3 items 3-4). /metrics bytes come from
the render cache; /diagnose, the status page and ``check`` share one report (``expose.report``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from exporter import log
from exporter.expose import status_page
from exporter.expose.render_cache import RenderCache
from exporter.expose.report import cluster_report
from exporter.runtime.snapshot import ClusterSnapshot, Snapshot
from exporter.settings import Settings

ReloadHook = Callable[[], Awaitable[tuple[bool, str]]]


@dataclass
class AppState:
    """What the handlers read. ``exporter_version`` bumps when exporter-level series change."""

    settings: Settings
    snapshot: Snapshot
    ready: Callable[[], bool] = lambda: True
    reload: ReloadHook | None = None
    exporter_series: Callable[[], Iterable[Any]] | None = None
    exporter_version: Callable[[], int] = lambda: 0
    renders: RenderCache = field(init=False)

    def __post_init__(self) -> None:
        self.renders = RenderCache(
            self.snapshot, lambda: self.exporter_series, lambda: self.exporter_version, self.settings.revision
        )

    def metrics_bytes(
        self, cluster: ClusterSnapshot, with_exporter: bool, accept: str, gzipped: bool
    ) -> tuple[bytes, str]:
        return self.renders.metrics_bytes(cluster, with_exporter, accept, gzipped)


STATE_KEY = web.AppKey("state", AppState)


def make_app(state: AppState, middlewares: Iterable[Any] = ()) -> web.Application:
    """The app factory: tests start the real server on a free port with it."""
    app = web.Application(middlewares=list(middlewares))
    app[STATE_KEY] = state
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/probe", probe_handler)
    app.router.add_get("/diagnose", diagnose_handler)
    app.router.add_get("/", index_handler)
    app.router.add_get("/-/healthy", healthy_handler)
    app.router.add_get("/-/ready", ready_handler)
    app.router.add_post("/-/reload", reload_handler)
    return app


def _metrics_response(request: web.Request, cluster: ClusterSnapshot, with_exporter: bool) -> web.Response:
    state = request.app[STATE_KEY]
    gzipped = "gzip" in request.headers.get("Accept-Encoding", "")
    body, content_type = state.metrics_bytes(cluster, with_exporter, request.headers.get("Accept", ""), gzipped)
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = content_type
    if gzipped:
        resp.headers["Content-Encoding"] = "gzip"
    return resp


async def metrics_handler(request: web.Request) -> web.Response:
    """The exporter's own series plus the default (first) cluster's."""
    state = request.app[STATE_KEY]
    return _metrics_response(request, state.snapshot.default, with_exporter=True)


def _cluster_or_error(request: web.Request) -> ClusterSnapshot:
    state = request.app[STATE_KEY]
    name = request.query.get("cluster")
    if name is None:
        if request.path == "/probe":
            raise web.HTTPBadRequest(text="missing parameter: cluster\n")
        return state.snapshot.default
    cluster = state.snapshot.cluster(name)
    if cluster is None:
        raise web.HTTPNotFound(text=f"unknown cluster: {name[:64]!r}\n")
    return cluster


async def probe_handler(request: web.Request) -> web.Response:
    """One cluster's series from a fresh registry (blackbox's multi-target pattern)."""
    return _metrics_response(request, _cluster_or_error(request), with_exporter=False)


async def diagnose_handler(request: web.Request) -> web.Response:
    report = cluster_report(_cluster_or_error(request)).to_json()
    return web.json_response(report, dumps=lambda o: log.REDACT(json.dumps(o, indent=2)))


async def index_handler(request: web.Request) -> web.Response:
    """One cluster's page; with several clusters and none asked for, the fleet overview."""
    state = request.app[STATE_KEY]
    names = list(state.snapshot.clusters)
    if len(names) > 1 and "cluster" not in request.query:
        html = status_page.fleet([cluster_report(c) for c in state.snapshot.clusters.values()])
        return web.Response(text=log.REDACT(html), content_type="text/html")
    cluster = _cluster_or_error(request)
    html = status_page.render(cluster_report(cluster), names)
    return web.Response(text=log.REDACT(html), content_type="text/html")


async def healthy_handler(request: web.Request) -> web.Response:
    """Liveness: the process serves HTTP. Never touches a backend (anchors §8.3 item 10)."""
    return web.Response(text="Healthy\n")


async def ready_handler(request: web.Request) -> web.Response:
    """Readiness: configuration loaded and the first round of probes done (results to serve)."""
    state = request.app[STATE_KEY]
    if state.ready():
        return web.Response(text="Ready\n")
    return web.Response(status=503, text="Not ready: first probe round still running\n")


async def reload_handler(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    if state.reload is None:  # as Prometheus answers without --web.enable-lifecycle
        raise web.HTTPForbidden(text="Lifecycle API is not enabled (--web.enable-lifecycle); SIGHUP reloads\n")
    ok, message = await state.reload()
    return web.Response(status=200 if ok else 500, text=log.REDACT(message) + "\n")
