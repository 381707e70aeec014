"""/metrics bytes are rendered once per snapshot change and exposition format, off the request path.

What a scraper sees: the answer to any Accept header is the format it names, a scrape never pays a
render that a previous scrape of the same format already paid, and a probe result shows on /metrics
no later than the pending re-render (PRERENDER_DELAY after it landed).
"""

from __future__ import annotations

import gzip
import time

import pytest
from support import settings_for, wait_for

from exporter import web
from exporter.reasons import Reason
from exporter.settings import ProbeName
from exporter.snapshot import ClusterSnapshot, ProbeResult, Snapshot

PROMETHEUS = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,"
    "text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)


def state_with_redis() -> tuple[web.AppState, ClusterSnapshot]:
    cluster = ClusterSnapshot("default", 10)
    cluster.set_enabled([ProbeName.REDIS])
    snapshot = Snapshot({"default": cluster})
    return web.AppState(settings_for({"era": "C"}), snapshot), cluster


def land(cluster: ClusterSnapshot, reason: Reason) -> None:
    cluster.record(ProbeResult(ProbeName.REDIS, reason, "", 0.01, time.time()))


def counting_renders(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = web.render

    def render(collectors: object, accept: str | None) -> tuple[bytes, str]:
        calls.append(accept or "")
        return real(collectors, accept)  # type: ignore[arg-type]

    monkeypatch.setattr(web, "render", render)
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


async def test_a_result_shows_within_the_prerender_delay_without_a_render_on_the_scrape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state, cluster = state_with_redis()
    before, _ = state.metrics_bytes(cluster, False, PROMETHEUS, False)  # a scraper asked for this format
    renders = counting_renders(monkeypatch)
    land(cluster, Reason.TIMEOUT)
    state.snapshot_changed()
    # Until the re-render runs, scrapes get the bytes they had (at most PRERENDER_DELAY old) ...
    assert state.metrics_bytes(cluster, False, PROMETHEUS, False)[0] == before and not renders

    async def rendered() -> bool:
        return bool(renders)

    await wait_for(rendered, 5 * web.PRERENDER_DELAY + 1, "the re-render after the result landed")
    # ... then the new result, rendered once, off the request path, for the format that was asked for.
    after, _ = state.metrics_bytes(cluster, False, PROMETHEUS, False)
    assert b'reason="timeout"} 1' in after and b'reason="timeout"} 1' not in before and len(renders) == 1


def test_without_a_pending_rerender_a_scrape_renders_the_new_snapshot() -> None:
    state, cluster = state_with_redis()
    state.metrics_bytes(cluster, False, "", False)
    land(cluster, Reason.AUTH_FAILED)  # no scheduler hook: nothing pending, so nothing stale is served
    body, _ = state.metrics_bytes(cluster, False, "", False)
    assert b'placeos_probe_failure_reason{probe="redis",reason="auth_failed"} 1.0' in body
