"""Plain Grafana JSON (schemaVersion 39) from Python: queries, panels, layout, variables.

No third-party code: the dashboards in ``generate/dashboards.py`` are built from these helpers.
Conventions every panel follows (tests/integration/test_dashboards.py checks them):

- datasource ``${datasource}`` (a datasource variable, never a hard-coded UID);
- every selector carries ``job=~"$job", instance=~"$instance"`` (``sel()``);
- a title, and a description that says what to do when the panel is red;
- a panel that shows only failures says ``MAYBE_EMPTY`` in its description: its queries may return no
  series while PlaceOS is healthy (the test then only requires that they parse).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from exporter.generate.config import DEFAULT

Json = dict[str, Any]

SCHEMA_VERSION = 39
RUNBOOK = DEFAULT.runbook_url
DATASOURCE: Json = {"type": "prometheus", "uid": "${datasource}"}
MAYBE_EMPTY = "Empty while healthy."
TAGS = ["placeos", "placeos-exporter"]

GREEN, RED, ORANGE, YELLOW, BLUE, GREY = "green", "red", "orange", "yellow", "blue", "text"


# ------------------------------------------------------------------------------------------ queries


# Every selector: the exporter's scrape job and target, and the PlaceOS cluster. The cluster label exists
# where several clusters share one target (the Helm chart's /probe endpoints set cluster=<name>);
# elsewhere the variable is empty ("None") and cluster=~"" matches the series, which have no such label.
SCOPE = ('job=~"$job"', 'instance=~"$instance"', 'cluster=~"$cluster"')
SCOPE_LABELS = "job, instance, cluster"


def sel(*matchers: str) -> str:
    """A label selector with the dashboard's job, instance and cluster variables, plus ``matchers``."""
    return "{" + ", ".join((*SCOPE, *matchers)) + "}"


def m(metric: str, *matchers: str) -> str:
    """``metric`` with the dashboard's selector and ``matchers``."""
    return metric + sel(*matchers)


def probe_is(probes: str) -> str:
    """A probe matcher: one name, or a regex alternation such as ``rethinkdb|postgres``."""
    return f'probe=~"{probes}"' if "|" in probes else f'probe="{probes}"'


def status_expr(probes: str | None = None) -> str:
    """Success (0/1) per probe, carrying the current reason as a label (the state set's 1)."""
    extra = (probe_is(probes),) if probes else ()
    return (
        f"placeos_probe_success{sel(*extra)} * on ({SCOPE_LABELS}, probe) group_left (reason) "
        f"(placeos_probe_failure_reason{sel(*extra)} == 1)"
    )


def failure_rate_expr(probes: str) -> str:
    """Failed runs per second by probe and reason; only reasons that occur (else no series)."""
    return (
        f"sum by (cluster, probe, reason) "
        f"(rate(placeos_probe_failures_total{sel(probe_is(probes))}[$__rate_interval])) > 0"
    )


def quantile_expr(q: float, probe: str) -> str:
    return (
        f"histogram_quantile({q}, sum by (cluster, le) "
        f"(rate(placeos_probe_latency_seconds_bucket{sel(probe_is(probe))}[$__rate_interval])))"
    )


# ES health as one number: 0 green, 1 yellow, 2 red (NaN while the probe has not learnt it).
ES_COLOUR_EXPR = (
    m("placeos_elasticsearch_cluster_status", 'color="yellow"') + " + ignoring (color) "
    "2 * " + m("placeos_elasticsearch_cluster_status", 'color="red"')
)


# ------------------------------------------------------------------------------------------ mappings


def value_map(entries: Mapping[str, tuple[str, str]], nan: str | None = "unknown") -> list[Json]:
    """Grafana value mappings: raw value -> (text, colour); NaN -> ``nan`` text."""
    options = {
        raw: {"text": text, "color": colour, "index": i} for i, (raw, (text, colour)) in enumerate(entries.items())
    }
    out: list[Json] = [{"type": "value", "options": options}] if options else []
    if nan is not None:
        out.append(
            {
                "type": "special",
                "options": {"match": "nan", "result": {"text": nan, "color": GREY, "index": len(entries)}},
            }
        )
    return out


OK_FAIL = value_map({"1": ("OK", GREEN), "0": ("FAILING", RED)})


def thresholds(*steps: tuple[str, float | None]) -> Json:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]}


def runbook(anchor: str, title: str) -> Json:
    return {"title": f"Runbook: {title}", "url": f"{RUNBOOK}#{anchor}", "targetBlank": True}


def rename(names: Mapping[str, str]) -> list[Json]:
    """Overrides that show a readable name for a series whose legend is a label value."""
    return [
        {"matcher": {"id": "byName", "options": raw}, "properties": [{"id": "displayName", "value": text}]}
        for raw, text in names.items()
    ]


def colour_by_name(colours: Mapping[str, str]) -> list[Json]:
    return [
        {
            "matcher": {"id": "byName", "options": raw},
            "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": c}}],
        }
        for raw, c in colours.items()
    ]


def impact_short(impact_id: str) -> str:
    return impact_id.replace("_", " ")


# ------------------------------------------------------------------------------------------ panels


def target(expr: str, legend: str = "", *, ref: str = "A", table: bool = False) -> Json:
    """A Prometheus query. Table targets are instant (the current state); the rest are ranges."""
    return {
        "datasource": DATASOURCE,
        "editorMode": "code",
        "expr": expr,
        "format": "table" if table else "time_series",
        "instant": table,
        "legendFormat": legend or "__auto",
        "range": not table,
        "refId": ref,
    }


def targets(*pairs: tuple[str, str], table: bool = False) -> list[Json]:
    return [target(expr, legend, ref=chr(ord("A") + i), table=table) for i, (expr, legend) in enumerate(pairs)]


def describe(what: str, when_red: str, *, maybe_empty: bool = False) -> str:
    text = f"{what}\n\nWhen red: {when_red}"
    return f"{text}\n\n{MAYBE_EMPTY} It lists only what is failing." if maybe_empty else text


@dataclass
class Panel:
    """One panel before layout: its JSON without id and gridPos, and its size."""

    body: Json
    w: int
    h: int


def panel(
    kind: str,
    title: str,
    description: str,
    queries: list[Json],
    *,
    w: int,
    h: int,
    defaults: Json | None = None,
    overrides: list[Json] | None = None,
    options: Json | None = None,
    links: Iterable[Json] = (),
    transformations: list[Json] | None = None,
) -> Panel:
    body: Json = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": defaults or {}, "overrides": overrides or []},
        "options": options or {},
        "targets": queries,
    }
    if links:
        body["links"] = list(links)
    if transformations:
        body["transformations"] = transformations
    return Panel(body, w, h)


def stat(
    title: str,
    description: str,
    queries: list[Json],
    *,
    w: int,
    h: int,
    mappings: list[Json] | None = None,
    steps: Json | None = None,
    text_mode: str = "value_and_name",
    colour_mode: str = "background",
    unit: str = "none",
    no_value: str | None = None,
    overrides: list[Json] | None = None,
    links: Iterable[Json] = (),
) -> Panel:
    defaults: Json = {
        "color": {"mode": "thresholds"},
        "mappings": mappings if mappings is not None else value_map({}),
        "thresholds": steps or thresholds((RED, None), (GREEN, 1)),
        "unit": unit,
    }
    if no_value is not None:
        defaults["noValue"] = no_value
    options = {
        "colorMode": colour_mode,
        "graphMode": "none",
        "justifyMode": "auto",
        "orientation": "auto",
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "showPercentChange": False,
        "textMode": text_mode,
        "wideLayout": True,
    }
    return panel("stat", title, description, queries, w=w, h=h, defaults=defaults, overrides=overrides,
                 options=options, links=links)  # fmt: skip


def timeline(
    title: str,
    description: str,
    queries: list[Json],
    *,
    w: int,
    h: int,
    mappings: list[Json],
    overrides: list[Json] | None = None,
    links: Iterable[Json] = (),
) -> Panel:
    defaults: Json = {
        "color": {"mode": "thresholds"},
        "custom": {"fillOpacity": 80, "hideFrom": {"legend": False, "tooltip": False, "viz": False}, "lineWidth": 0},
        "mappings": mappings,
        "thresholds": thresholds((RED, None), (GREEN, 1)),
    }
    options = {
        "alignValue": "left",
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": False},
        "mergeValues": True,
        "rowHeight": 0.85,
        "showValue": "never",
        "tooltip": {"mode": "single", "sort": "none"},
    }
    return panel("state-timeline", title, description, queries, w=w, h=h, defaults=defaults, overrides=overrides,
                 options=options, links=links)  # fmt: skip


def timeseries(
    title: str,
    description: str,
    queries: list[Json],
    *,
    w: int,
    h: int,
    unit: str = "short",
    stacked: bool = False,
    overrides: list[Json] | None = None,
    links: Iterable[Json] = (),
    no_value: str | None = None,
    min_zero: bool = True,
) -> Panel:
    defaults: Json = {
        "color": {"mode": "palette-classic"},
        "custom": {
            "axisPlacement": "auto",
            "drawStyle": "line",
            "fillOpacity": 20 if stacked else 0,
            "lineInterpolation": "stepAfter",
            "lineWidth": 1,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"group": "A", "mode": "normal" if stacked else "none"},
        },
        "unit": unit,
    }
    if min_zero:
        defaults["min"] = 0
    if no_value is not None:
        defaults["noValue"] = no_value
    options = {
        "legend": {
            "calcs": ["lastNotNull", "max"],
            "displayMode": "table",
            "placement": "right" if w >= 12 else "bottom",
            "showLegend": True,
        },
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return panel("timeseries", title, description, queries, w=w, h=h, defaults=defaults, overrides=overrides,
                 options=options, links=links)  # fmt: skip


def table(
    title: str,
    description: str,
    expr: str,
    columns: Mapping[str, tuple[str, Mapping[str, str]]],
    *,
    w: int,
    h: int,
    no_value: str,
    colour: str = RED,
    links: Iterable[Json] = (),
    column_links: Mapping[str, Json] | None = None,
) -> Panel:
    """An instant table of label columns (``columns``: label -> (header, value texts)); the rest hidden."""
    overrides: list[Json] = []
    for label, (header, texts) in columns.items():
        props: list[Json] = [
            {"id": "displayName", "value": header},
            {"id": "mappings", "value": value_map({raw: (text, colour) for raw, text in texts.items()}, nan=None)},
            {"id": "custom.cellOptions", "value": {"type": "color-text"}},
        ]
        if column_links and label in column_links:
            props.append({"id": "links", "value": [column_links[label]]})
        overrides.append({"matcher": {"id": "byName", "options": label}, "properties": props})
    hidden = {name: True for name in ("Time", "Value", "Value #A", "__name__", "job", "instance")}
    order = {label: i for i, label in enumerate(columns)}
    defaults: Json = {
        "color": {"mode": "fixed", "fixedColor": colour},
        "custom": {"align": "left", "cellOptions": {"type": "auto"}, "inspect": False},
        "noValue": no_value,
    }
    options = {"cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"], "fields": ""}, "showHeader": True}
    transformations = [
        {"id": "organize", "options": {"excludeByName": hidden, "indexByName": order, "renameByName": {}}}
    ]
    return panel("table", title, description, [target(expr, table=True)], w=w, h=h, defaults=defaults,
                 overrides=overrides, options=options, links=links, transformations=transformations)  # fmt: skip


@dataclass
class Layout:
    """Places panels left to right in a 24-column grid, wrapping; rows start a new line."""

    panels: list[Json] = field(default_factory=list)
    x: int = 0
    y: int = 0
    line_h: int = 0

    def _next_id(self) -> int:
        return len(self.panels) + 1

    def add(self, *items: Panel) -> None:
        for item in items:
            if self.x + item.w > 24:
                self.newline()
            body = {"id": self._next_id(), "gridPos": {"h": item.h, "w": item.w, "x": self.x, "y": self.y}, **item.body}
            self.panels.append(body)
            self.x += item.w
            self.line_h = max(self.line_h, item.h)

    def column(self, *items: Panel) -> None:
        """Panels stacked in one column at the current position (as wide as the widest)."""
        width, height = max(i.w for i in items), sum(i.h for i in items)
        if self.x + width > 24:
            self.newline()
        top = self.y
        for item in items:
            self.panels.append({"id": self._next_id(), "gridPos": {"h": item.h, "w": width, "x": self.x, "y": top},
                                **item.body})  # fmt: skip
            top += item.h
        self.x += width
        self.line_h = max(self.line_h, height)

    def newline(self) -> None:
        self.y += self.line_h
        self.x, self.line_h = 0, 0

    def row(self, title: str) -> None:
        if self.x:
            self.newline()
        self.panels.append({"id": self._next_id(), "type": "row", "title": title, "collapsed": False,
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": []})  # fmt: skip
        self.y += 1


# ------------------------------------------------------------------------------------------ dashboards


def variables() -> list[Json]:
    def query_var(name: str, label: str, query: str) -> Json:
        return {
            "current": {},
            "datasource": DATASOURCE,
            "definition": query,
            "hide": 0,
            "includeAll": False,
            "label": label,
            "multi": False,
            "name": name,
            "options": [],
            # What Grafana's Prometheus variable editor saves: the classic label_values() string.
            "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
            "refresh": 2,
            "regex": "",
            "skipUrlSync": False,
            "sort": 1,
            "type": "query",
        }

    return [
        {"current": {}, "hide": 0, "includeAll": False, "label": "Data source", "multi": False, "name": "datasource",
         "options": [], "query": "prometheus", "refresh": 1, "regex": "", "skipUrlSync": False, "type": "datasource"},
        query_var("job", "Job", "label_values(placeos_probe_success, job)"),
        query_var("instance", "Instance", 'label_values(placeos_probe_success{job=~"$job"}, instance)'),
        query_var("cluster", "Cluster",
                  'label_values(placeos_probe_success{job=~"$job", instance=~"$instance"}, cluster)'),
    ]  # fmt: skip


def dashboard(uid: str, title: str, description: str, panels: list[Json]) -> Json:
    return {
        "annotations": {
            "list": [
                {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
                 "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"}
            ]
        },
        "description": description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [
            {"asDropdown": False, "icon": "external link", "includeVars": True, "keepTime": True, "tags": ["placeos"],
             "targetBlank": False, "title": "PlaceOS dashboards", "tooltip": "", "type": "dashboards", "url": ""},
            {"asDropdown": False, "icon": "doc", "includeVars": False, "keepTime": False, "tags": [],
             "targetBlank": True, "title": "Runbook", "tooltip": "What each failure means and how to recover",
             "type": "link", "url": RUNBOOK},
        ],
        "panels": panels,
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "tags": TAGS,
        "templating": {"list": variables()},
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    }  # fmt: skip
