"""HTTP (aiohttp): /metrics, /probe?cluster=, /diagnose, the status page, /-/healthy, /-/ready.

No handler does I/O to a backend: everything renders the snapshot the scheduler writes, so a hung
backend can never slow or hang a scrape (design §1, anchors §8.3 items 3-4). Rendered metrics are
cached per snapshot version, so repeated scrapes of an unchanged snapshot cost a dictionary lookup.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client.registry import Collector

from exporter import log, status_page
from exporter.diagnosis import Diagnosis, Observation, diagnose
from exporter.metrics import ClusterCollector, ExporterCollector, encoder_for, render
from exporter.settings import Settings
from exporter.snapshot import ClusterSnapshot, Snapshot

ReloadHook = Callable[[], Awaitable[tuple[bool, str]]]
# Re-render this long after a result lands (results of one cycle arrive together: render once), for
# formats asked for within PRERENDER_FOR seconds. While that re-render is pending a scrape gets the
# previous bytes, so they are at most PRERENDER_DELAY (+ one render) older than the snapshot.
PRERENDER_DELAY = 0.05
PRERENDER_FOR = 600.0


@dataclass
class Rendered:
    """One cluster's series in one exposition format, as of one snapshot version."""

    version: tuple[int, int]
    body: bytes
    content_type: str
    gzipped: bytes | None = None


# (cluster, with the exporter's own series, exposition format = its Content-Type)
RenderKey = tuple[str, bool, str]


@dataclass
class AppState:
    """What the handlers read. ``exporter_version`` bumps when exporter-level series change."""

    settings: Settings
    snapshot: Snapshot
    ready: Callable[[], bool] = lambda: True
    reload: ReloadHook | None = None
    exporter_series: Callable[[], Iterable[Any]] | None = None
    exporter_version: Callable[[], int] = lambda: 0
    _diagnoses: dict[str, tuple[int, Diagnosis]] = field(default_factory=dict)
    _rendered: dict[RenderKey, Rendered] = field(default_factory=dict)
    _asked: dict[tuple[RenderKey, bool], tuple[float, str]] = field(default_factory=dict)
    _prerender: asyncio.TimerHandle | None = None

    def snapshot_changed(self) -> None:
        """A probe result landed: render what scrapers recently asked for, soon and off the request path,
        so a scrape finds its bytes ready (a render costs milliseconds; a cached answer microseconds)."""
        if self._prerender is None:
            self._prerender = asyncio.get_running_loop().call_later(PRERENDER_DELAY, self._render_asked)

    def _render_asked(self) -> None:
        self._prerender = None
        now = time.monotonic()
        for (key, gzipped), (asked, accept) in list(self._asked.items()):
            if now - asked > PRERENDER_FOR:
                del self._asked[(key, gzipped)]
                continue
            name, with_exporter, _ = key
            cluster = self.snapshot.cluster(name)
            if cluster is not None:
                self.metrics_bytes(cluster, with_exporter, accept, gzipped, remember=False)

    def diagnosis(self, cluster: ClusterSnapshot) -> Diagnosis:
        """The cluster's diagnosis, recomputed only when its snapshot changed."""
        cached = self._diagnoses.get(cluster.name)
        if cached is None or cached[0] != cluster.version:
            observations = {s.probe: Observation(s.reason, s.last.detail if s.last else "") for s in cluster.enabled()}
            cached = (cluster.version, diagnose(observations))
            self._diagnoses[cluster.name] = cached
        return cached[1]

    def metrics_bytes(
        self, cluster: ClusterSnapshot, with_exporter: bool, accept: str, gzipped: bool, remember: bool = True
    ) -> tuple[bytes, str]:
        """Rendered series (optionally gzipped), cached per exposition format until the snapshot changes;
        while a re-render is pending (``snapshot_changed``), the previous bytes."""
        content_type = encoder_for(accept)[1]
        key: RenderKey = (cluster.name, with_exporter, content_type)
        if remember:
            self._asked[(key, gzipped)] = (time.monotonic(), accept)
            if len(self._asked) > 32:  # formats scrapers use are few; forget odd ones
                self._asked.pop(next(iter(self._asked)))
        version = (cluster.version, self.exporter_version() if with_exporter else 0)
        entry = self._rendered.get(key)
        # Stale bytes only for probe results while their re-render is pending; the exporter's own
        # series (a reload's outcome) show at once.
        stale_ok = entry is not None and self._prerender is not None and entry.version[1] == version[1]
        if entry is None or (entry.version != version and not stale_ok):
            collectors: list[Collector] = [ClusterCollector(cluster, self.diagnosis(cluster))]
            if with_exporter:
                collectors.insert(0, ExporterCollector(self.exporter_series))
            if entry is None and len(self._rendered) > 4 * len(self.snapshot.clusters) + 16:
                self._rendered.clear()  # clusters dropped by a reload
            entry = self._rendered[key] = Rendered(version, *render(collectors, accept))
        if not gzipped:
            return entry.body, entry.content_type
        if entry.gzipped is None:
            entry.gzipped = gzip.compress(entry.body, compresslevel=1, mtime=0)
        return entry.gzipped, entry.content_type


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


def cluster_report(state: AppState, cluster: ClusterSnapshot) -> dict[str, Any]:
    """The /diagnose document: verdict, causes with evidence, impacts, and every probe's state."""
    d = state.diagnosis(cluster)
    probes = []
    for s in cluster.enabled():
        probes.append(
            {
                "probe": s.probe.value,
                "success": s.success,
                "reason": s.reason.value,
                "detail": s.last.detail if s.last else "",
                "duration_seconds": round(s.last.duration, 4) if s.last else None,
                "last_run": s.last.finished if s.last else None,
                "last_change": s.last_change,
                "history": [
                    {"at": r.finished, "reason": r.reason.value, "duration_seconds": round(r.duration, 4)}
                    for r in s.history
                ],
            }
        )
    return {
        "cluster": cluster.name,
        "era": cluster.era.value if cluster.era else None,
        "era_source": cluster.era_source,
        "platform_version": cluster.platform_version or None,
        "generated_at": time.time(),
        **d.to_json(),
        "probes": probes,
    }


async def diagnose_handler(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    report = cluster_report(state, _cluster_or_error(request))
    return web.json_response(report, dumps=lambda o: log.REDACT(json.dumps(o, indent=2)))


async def index_handler(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    cluster = _cluster_or_error(request)
    names = list(state.snapshot.clusters)
    html = status_page.render(cluster_report(state, cluster), names)
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
    if state.reload is None:
        raise web.HTTPNotFound(text="reload is not enabled\n")
    ok, message = await state.reload()
    return web.Response(status=200 if ok else 500, text=log.REDACT(message) + "\n")
