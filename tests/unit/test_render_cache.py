"""/metrics bytes are rendered per exposition format, ahead of the scraper, off the request path.

What a scraper sees: the answer to any Accept header is the format it names, a scrape never pays a
render that a previous scrape of the same format already paid: a scraper that asks on a period (as
Prometheus does) gets bytes rendered just before its request, showing every result that landed.
"""

from __future__ import annotations

import asyncio
import gzip
import time

import pytest
from support import settings_for, wait_for

from exporter.expose import render_cache, routes
from exporter.model.vocabulary import ProbeName, Reason
from exporter.runtime.snapshot import ClusterSnapshot, ProbeResult, Snapshot

PROMETHEUS = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,"
    "text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)


def state_with_redis() -> tuple[routes.AppState, ClusterSnapshot]:
    cluster = ClusterSnapshot("default", 10)
    cluster.set_enabled([ProbeName.REDIS])
    snapshot = Snapshot({"default": cluster})
    return routes.AppState(settings_for({"era": "C"}), snapshot), cluster


def land(cluster: ClusterSnapshot, reason: Reason) -> None:
    cluster.record(ProbeResult(ProbeName.REDIS, reason, "", 0.01, time.time()))


def counting_renders(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = render_cache.render

    def render(collectors: object, accept: str | None) -> tuple[bytes, str]:
        calls.append(accept or "")
        return real(collectors, accept)  # type: ignore[arg-type]

    monkeypatch.setattr(render_cache, "render", render)
    return calls


def test_accept_headers_naming_one_format_share_one_render(monkeypatch: pytest.MonkeyPatch) -> None:
    state, cluster = state_with_redis()
    renders = counting_renders(monkeypatch)
    plain = [state.metrics_bytes(cluster, True, accept, False) for accept in ("", "*/*", "text/plain", "x/y;q=1")]
    assert len({body for body, _ in plain}) == 1 and len(renders) == 1
    assert plain[0][1].startswith("text/plain; version=0.0.4")
    # Prometheus's Accept with a unique parameter appended (what a scraper cannot be told apart by).
    om = [state.metrics_bytes(cluster, True, PROMETHEUS + f",x/{n}", False) for n in range(5)]
    assert len(renders) == 2 and om[0][1].startswith("application/openmetrics-text")
    assert om[0][0].rstrip().endswith(b"# EOF") and len({body for body, _ in om}) == 1
    body, _ = state.metrics_bytes(cluster, True, PROMETHEUS, True)
    assert gzip.decompress(body) == om[0][0] and len(renders) == 2  # gzip of the same render


async def test_a_periodic_scraper_gets_the_latest_result_rendered_ahead_of_its_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state, cluster = state_with_redis()
    renders = counting_renders(monkeypatch)
    period = 0.4
    before, _ = state.metrics_bytes(cluster, False, PROMETHEUS, False)
    await asyncio.sleep(period)  # the scraper's period: it asks again
    state.metrics_bytes(cluster, False, PROMETHEUS, False)
    asked = time.monotonic()
    assert len(renders) == 1  # nothing changed: cached
    land(cluster, Reason.TIMEOUT)  # a probe result lands between two scrapes

    async def rendered_ahead() -> bool:
        return len(renders) == 2

    await wait_for(rendered_ahead, 2 * period + 1, "the render ahead of the next scrape", interval=0.01)
    assert time.monotonic() - asked < period  # before the request is due, off the request path
    await asyncio.sleep(max(0.0, asked + period - time.monotonic()))
    after, _ = state.metrics_bytes(cluster, False, PROMETHEUS, False)
    assert b'reason="timeout"} 1' in after and b'reason="timeout"} 1' not in before
    assert len(renders) == 2  # the request itself rendered nothing


def test_the_exporters_own_series_are_never_served_old() -> None:
    state, cluster = state_with_redis()
    reloads = [0]
    state.exporter_version = lambda: reloads[0]
    state.metrics_bytes(cluster, True, "", False)
    state.metrics_bytes(cluster, True, "", False)  # a scraper with a period: old bytes would be allowed
    land(cluster, Reason.AUTH_FAILED)
    reloads[0] += 1  # e.g. a reload failed: must show on the very next scrape
    body, _ = state.metrics_bytes(cluster, True, "", False)
    assert b'placeos_probe_failure_reason{probe="redis",reason="auth_failed"} 1.0' in body


def test_a_first_request_renders_the_latest() -> None:
    state, cluster = state_with_redis()
    land(cluster, Reason.AUTH_FAILED)
    body, _ = state.metrics_bytes(cluster, False, "", False)
    assert b'placeos_probe_failure_reason{probe="redis",reason="auth_failed"} 1.0' in body
