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

# Rendering ahead of the scraper. A render costs milliseconds, a cached answer microseconds, and probe
# results land every few hundred ms per cluster while Prometheus scrapes every 15 s: rendering after
# every result cost 22 renders per served scrape at 50 clusters x 13 probes (bench "scale"). So each
# scraper (one format of one cluster) is rendered once per request it makes, just before it is due:
# scrapers ask on a fixed period, so the next request is expected one period after the last.
PRERENDER_MIN = 0.05  # at most one render per this many seconds per scraper, however often it asks
LEAD_MAX = 0.25  # render at most this long before the expected request
PRERENDER_FOR = 600.0  # forget a scraper silent this long
SCRAPERS_MAX = 64  # scrapers tracked (formats x clusters in use are few; odd ones are forgotten)


@dataclass
class Rendered:
    """One cluster's series in one exposition format, as of one snapshot version."""

    version: tuple[int, int]
    body: bytes
    content_type: str
    at: float = field(default_factory=time.monotonic)
    gzipped: bytes | None = None

    def payload(self, gzipped: bool) -> bytes:
        """The body, gzipped on first demand (then kept)."""
        if not gzipped:
            return self.body
        if self.gzipped is None:
            self.gzipped = gzip.compress(self.body, compresslevel=1, mtime=0)
        return self.gzipped


# (cluster, with the exporter's own series, exposition format = its Content-Type)
RenderKey = tuple[str, bool, str]


@dataclass
class Scraper:
    """One format of one cluster that someone keeps asking for, and when they will ask next."""

    accept: str
    last: float
    period: float | None = None
    timer: asyncio.TimerHandle | None = None

    @property
    def lead(self) -> float:
        """How long before the expected request its bytes are rendered (and how stale they may be)."""
        return min(LEAD_MAX, max(PRERENDER_MIN, (self.period or 0.0) / 8))

    def asked(self, now: float) -> None:
        gap, self.last = now - self.last, now
        self.period = gap if self.period is None else 0.5 * self.period + 0.5 * gap


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
    _scrapers: dict[tuple[RenderKey, bool], Scraper] = field(default_factory=dict)

    def diagnosis(self, cluster: ClusterSnapshot) -> Diagnosis:
        """The cluster's diagnosis, recomputed only when its snapshot changed."""
        cached = self._diagnoses.get(cluster.name)
        if cached is None or cached[0] != cluster.version:
            observations = {s.probe: Observation(s.reason, s.last.detail if s.last else "") for s in cluster.enabled()}
            cached = (cluster.version, diagnose(observations))
            self._diagnoses[cluster.name] = cached
        return cached[1]

    def metrics_bytes(
        self, cluster: ClusterSnapshot, with_exporter: bool, accept: str, gzipped: bool
    ) -> tuple[bytes, str]:
        """Rendered series (optionally gzipped), cached per exposition format. A scraper that asks on a
        period gets bytes rendered just before its request, at most 2 x ``Scraper.lead`` (<= 0.5 s) older
        than the latest probe result; anyone else gets the latest."""
        content_type = encoder_for(accept)[1]
        key: RenderKey = (cluster.name, with_exporter, content_type)
        now = time.monotonic()
        scraper = self._note_request((key, gzipped), accept, now)
        version = self._version(cluster, with_exporter)
        entry = self._rendered.get(key)
        # Older bytes only for probe results; the exporter's own series (a reload's outcome) show at once.
        recent = (
            entry is not None
            and scraper.period is not None
            and entry.version[1] == version[1]
            and now - entry.at <= 2 * scraper.lead
        )
        if entry is None or (entry.version != version and not recent):
            entry = self._render(key, cluster, accept, version)
        return entry.payload(gzipped), entry.content_type

    def _version(self, cluster: ClusterSnapshot, with_exporter: bool) -> tuple[int, int]:
        """What a rendering reflects: the cluster's snapshot and, on /metrics, the exporter's own series."""
        return cluster.version, self.exporter_version() if with_exporter else 0

    def _render(self, key: RenderKey, cluster: ClusterSnapshot, accept: str, version: tuple[int, int]) -> Rendered:
        collectors: list[Collector] = [ClusterCollector(cluster, self.diagnosis(cluster))]
        if key[1]:  # with the exporter's own series
            collectors.insert(0, ExporterCollector(self.exporter_series))
        if key not in self._rendered and len(self._rendered) > 4 * len(self.snapshot.clusters) + 16:
            self._rendered.clear()  # clusters dropped by a reload
        entry = self._rendered[key] = Rendered(version, *render(collectors, accept))
        return entry

    def _note_request(self, scraper_key: tuple[RenderKey, bool], accept: str, now: float) -> Scraper:
        scraper = self._scrapers.get(scraper_key)
        if scraper is None:
            if len(self._scrapers) >= SCRAPERS_MAX:
                self._forget(next(iter(self._scrapers)))
            scraper = self._scrapers[scraper_key] = Scraper(accept, now)
        else:
            scraper.asked(now)
            scraper.accept = accept
        if scraper.period is not None:
            self._plan(scraper_key, scraper)
        return scraper

    def _plan(self, scraper_key: tuple[RenderKey, bool], scraper: Scraper) -> None:
        """Render this scraper's bytes ``lead`` before its next expected request (once, off the request
        path); a render already planned sooner stands."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not serving (an in-process render)
        assert scraper.period is not None
        delay = max(PRERENDER_MIN, scraper.period - scraper.lead)
        if scraper.timer is not None and scraper.timer.when() <= loop.time() + delay:
            return
        if scraper.timer is not None:
            scraper.timer.cancel()
        scraper.timer = loop.call_later(delay, self._prerender, scraper_key)

    def _prerender(self, scraper_key: tuple[RenderKey, bool]) -> None:
        scraper = self._scrapers.get(scraper_key)
        if scraper is None:
            return
        scraper.timer = None
        key, gzipped = scraper_key
        cluster = self.snapshot.cluster(key[0])
        if cluster is None or time.monotonic() - scraper.last > PRERENDER_FOR:
            self._forget(scraper_key)
            return
        entry = self._rendered.get(key)
        version = self._version(cluster, key[1])
        if entry is None or entry.version != version:
            entry = self._render(key, cluster, scraper.accept, version)
        entry.payload(gzipped)

    def _forget(self, scraper_key: tuple[RenderKey, bool]) -> None:
        scraper = self._scrapers.pop(scraper_key)
        if scraper.timer is not None:
            scraper.timer.cancel()


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
