"""The /metrics render cache: each scraper's bytes rendered once per snapshot version and format.

A render costs milliseconds, a cached answer microseconds; rendered bytes are kept per cluster and
exposition format (Content-Type), gzipped on first demand.
"""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.registry import Collector

from exporter.expose.metrics import ClusterCollector, ExporterCollector, encoder_for, render
from exporter.runtime.snapshot import ClusterSnapshot, Snapshot

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
class RenderCache:
    """Rendered /metrics bytes per (cluster, with the exporter's series, format), and the scrapers' rhythm.

    ``exporter_series`` and ``exporter_version`` are read on each use (a reload replaces them).
    """

    snapshot: Snapshot
    exporter_series: Callable[[], Callable[[], Iterable[Any]] | None]
    exporter_version: Callable[[], Callable[[], int]]
    revision: str = "unknown"
    _rendered: dict[RenderKey, Rendered] = field(default_factory=dict)
    _scrapers: dict[tuple[RenderKey, bool], Scraper] = field(default_factory=dict)

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
        return cluster.version, self.exporter_version()() if with_exporter else 0

    def _render(self, key: RenderKey, cluster: ClusterSnapshot, accept: str, version: tuple[int, int]) -> Rendered:
        collectors: list[Collector] = [ClusterCollector(cluster)]
        if key[1]:  # with the exporter's own series
            collectors.insert(0, ExporterCollector(self.exporter_series(), self.revision))
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
