"""The status page at ``/``: the diagnosis for a browser, verdict first (design §1, issue 7).

Rendered from the same report as /diagnose; every value is HTML-escaped, and the page refreshes
itself. No JavaScript, no external assets: it must work on an air-gapped ops network.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from html import escape
from typing import Any

from exporter.expose.report import ClusterReport
from exporter.model.failure_model import RUNBOOK_URL

REFRESH_SECONDS = 5

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5rem;color:#1d1d1f;background:#fafafa}
h1{font-size:1.3rem;margin:0 0 .3rem}.meta{color:#666;font-size:.85rem;margin-bottom:1rem}
.verdict{padding:1rem 1.2rem;border-radius:8px;font-size:1.15rem;font-weight:600;margin-bottom:1rem}
.ok{background:#e3f6e8;border-left:6px solid #1f9d55}.bad{background:#fde8e8;border-left:6px solid #d64545}
.wait{background:#eef2f7;border-left:6px solid #8795a1}
h2{font-size:1rem;margin:1.2rem 0 .4rem}ul{margin:.2rem 0 .6rem 1.2rem;padding:0}
table{border-collapse:collapse;width:100%;background:#fff;font-size:.9rem}
th,td{text-align:left;padding:.35rem .6rem;border-bottom:1px solid #eee;vertical-align:top}
th{background:#f2f2f2}.pass{color:#1f9d55;font-weight:600}.fail{color:#d64545;font-weight:600}
.pend{color:#8795a1}.hist span{display:inline-block;width:8px;height:14px;margin-right:1px;border-radius:1px}
.h-ok{background:#1f9d55}.h-bad{background:#d64545}.detail{color:#555;font-size:.8rem}
nav a{margin-right:.8rem}
"""


def _ago(ts: float | None, now: float) -> str:
    """Relative and absolute (UTC): an on-call engineer compares it with logs and other dashboards."""
    if not ts:
        return "never"
    seconds = max(0, int(now - ts))
    if seconds < 120:
        ago = f"{seconds}s ago"
    elif seconds < 7200:
        ago = f"{seconds // 60}m ago"
    else:
        ago = f"{seconds // 3600}h ago"
    at = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{ago}<div class=detail>{at}</div>"


def _links(cause: dict[str, Any]) -> str:
    """The runbook section of the cause (its alert's runbook_url) and PlaceOS's playbook id."""
    parts = [f'<a href="{RUNBOOK_URL}#{escape(cause["cause"])}">runbook</a>']
    if cause.get("alert"):
        parts.append(f"alert {escape(cause['alert'])}")
    if cause.get("playbook"):
        parts.append(f"PlaceOS playbook {escape(cause['playbook'])}")
    return f"<div class=detail>{' &middot; '.join(parts)}</div>"


def _steps(title: str, steps: list[str]) -> str:
    if not steps:
        return ""
    items = "".join(f"<li>{escape(step)}</li>" for step in steps)
    return f"<div class=detail><b>{title}:</b><ol>{items}</ol></div>"


def fleet(reports: list[ClusterReport]) -> str:
    """``/`` with several clusters: one row per cluster (verdict, causes, last change, its own page)."""
    now = time.time()
    rows = []
    for r in reports:
        d = r.diagnosis
        css = "pass" if d.healthy and d.configured else ("pend" if not d.configured or d.pending else "fail")
        causes = ", ".join(c for c in d.causes if c != "none") or "-"
        changed = max((p.last_change for p in r.probes if p.last_change), default=None)
        rows.append(
            f'<tr><td><a href="/?cluster={escape(r.cluster)}">{escape(r.cluster)}</a></td>'
            f"<td>{escape(str(r.era or '?'))}</td><td class={css}>{escape(d.verdict())}</td>"
            f"<td>{escape(causes)}</td><td>{_ago(changed, now)}</td></tr>"
        )
    failing = sum(1 for r in reports if not r.diagnosis.healthy)
    return "".join(
        [
            "<!doctype html><html lang=en><head><meta charset=utf-8>",
            f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">',
            f"<title>PlaceOS fleet: {failing} of {len(reports)} failing</title>",
            f"<style>{_CSS}</style></head><body><h1>PlaceOS fleet</h1>",
            f'<div class="meta">{len(reports)} clusters &middot; refreshed every {REFRESH_SECONDS}s &middot; '
            '<a href="/metrics">metrics</a></div>',
            "<table id=fleet><tr><th>cluster</th><th>era</th><th>verdict</th><th>causes</th><th>last change</th></tr>",
            *rows,
            "</table></body></html>",
        ]
    )


def render(cluster_report: ClusterReport, clusters: list[str]) -> str:
    """The page for one cluster's report (the document /diagnose serves)."""
    report = cluster_report.to_json()
    now = time.time()
    healthy = report["healthy"]
    waiting = healthy and report.get("pending_probes") and not any(p["last_run"] for p in report["probes"])
    css_class = "wait" if waiting else ("ok" if healthy else "bad")
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">',
        f"<title>PlaceOS {escape(report['cluster'])}: {'healthy' if healthy else 'FAILING'}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>PlaceOS cluster <b>{escape(report['cluster'])}</b></h1>",
        f'<div class="meta">era {escape(str(report.get("era") or "?"))} ({escape(report.get("era_source", ""))})'
        f"{', platform ' + escape(report['platform_version']) if report.get('platform_version') else ''}"
        f" &middot; refreshed every {REFRESH_SECONDS}s &middot; "
        '<a href="/metrics">metrics</a> &middot; <a href="/diagnose'
        f'?cluster={escape(report["cluster"])}">diagnose JSON</a></div>',
    ]
    if len(clusters) > 1:
        links = " ".join(f'<a href="/?cluster={escape(c)}">{escape(c)}</a>' for c in clusters)
        parts.append(f"<nav>Clusters: {links}</nav>")
    parts.append(f'<div class="verdict {css_class}" id="verdict">{escape(report["verdict"])}</div>')
    if not healthy:
        parts.append("<h2>Root causes</h2><ul id=causes>")
        for cause in report["root_causes"]:
            evidence = ", ".join(f"{e['probe']}: {e['reason']}" for e in cause["evidence"])
            explains = ", ".join(f"{e['probe']}: {e['reason']}" for e in cause["explains"])
            parts.append(
                f"<li><b>{escape(cause['title'])}</b>"
                f"{' &mdash; evidence: ' + escape(evidence) if evidence else ''}"
                f"{'; also explains ' + escape(explains) if explains else ''}"
                f"{'<br><span class=detail>' + escape(cause['advice']) + '</span>' if cause['advice'] else ''}"
                f"{_steps('Confirm', cause.get('confirm', []))}{_steps('Recover', cause.get('recover', []))}"
                f"{_links(cause)}</li>"
            )
        parts.append("</ul>")
        if report["impacts"]:
            parts.append("<h2>What users feel</h2><ul id=impacts>")
            parts.extend(f"<li>{escape(i['text'])}</li>" for i in report["impacts"])
            parts.append("</ul>")
    parts.append(
        "<h2>Probes</h2><table id=probes><tr><th>probe</th><th>result</th><th>duration</th>"
        "<th>last change</th><th>recent</th></tr>"
    )
    for p in report["probes"]:
        if p["last_run"] is None:
            result = '<span class="pend">pending</span>'
        elif p["success"]:
            result = '<span class="pass">ok</span>'
        else:
            result = f'<span class="fail">{escape(p["reason"])}</span><div class=detail>{escape(p["detail"])}</div>'
        duration = f"{p['duration_seconds'] * 1000:.0f} ms" if p["duration_seconds"] is not None else ""
        history = "".join(
            f'<span class="{"h-ok" if h["reason"] == "ok" else "h-bad"}" title="{escape(h["reason"])}"></span>'
            for h in p["history"]
        )
        parts.append(
            f"<tr><td>{escape(p['probe'])}</td><td>{result}</td><td>{duration}</td>"
            f"<td>{_ago(p['last_change'], now)}</td><td class=hist>{history}</td></tr>"
        )
    parts.append("</table></body></html>")
    return "".join(parts)
