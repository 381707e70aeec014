"""The Grafana dashboards (dashboards/*.json) from one description, so panels stay consistent.

Built with ``generate/grafana.py``'s helpers from the failure model (causes, impacts, components) and
the reasons' meanings, so value mappings say what the exporter's docs say.
tests/integration/test_dashboards.py checks the committed JSON equals this output and runs every query
against a real Prometheus that scraped the real exporter.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable

from exporter.generate.grafana import (
    BLUE,
    ES_COLOUR_EXPR,
    GREEN,
    GREY,
    OK_FAIL,
    ORANGE,
    RED,
    RUNBOOK,
    YELLOW,
    Json,
    Layout,
    Panel,
    colour_by_name,
    dashboard,
    describe,
    failure_rate_expr,
    impact_short,
    m,
    quantile_expr,
    rename,
    runbook,
    sel,
    stat,
    status_expr,
    table,
    targets,
    thresholds,
    timeline,
    timeseries,
    value_map,
)
from exporter.model.failure_model import CAUSES, COMPONENTS, IMPACTS
from exporter.model.vocabulary import REASON_MEANING

CAUSE_TEXT = {c.id: f"{c.title}: {c.advice}" if c.advice else c.title for c in CAUSES.values() if c.id != "none"}
IMPACT_TEXT = {i.id: i.text for i in IMPACTS.values()}
REASON_LABEL = {r.value: f"{r.value}: {text}" for r, text in REASON_MEANING.items()}


def probe_status(title: str, probes: str | None, what: str, when_red: str, *, w: int, h: int,
                 links: Iterable[Json] = ()) -> Panel:  # fmt: skip
    return stat(title, describe(what, when_red), targets((status_expr(probes), "{{probe}}: {{reason}}")),
                w=w, h=h, mappings=OK_FAIL, links=links, no_value="probe not enabled")  # fmt: skip


def failure_rate(title: str, probes: str, *, w: int, h: int, when_red: str, links: Iterable[Json] = ()) -> Panel:
    what = (f"Failed runs per second of the {probes.replace('|', ' / ')} probe, by reason "
            "(placeos_probe_failures_total). A flapping backend shows as short spikes.")  # fmt: skip
    return timeseries(title, describe(what, when_red, maybe_empty=True),
                      targets((failure_rate_expr(probes), "{{probe}}: {{reason}}")),
                      w=w, h=h, unit="ops", no_value="no failures", links=links)  # fmt: skip


def overview() -> Json:
    lay = Layout()
    cause_list = ", ".join(f"{c}" for c in CAUSE_TEXT)
    lay.add(
        stat(
            "PlaceOS",
            describe(
                "Healthy when the diagnosis finds no root cause (placeos_root_cause{cause=\"none\"} = 1); "
                "FAILING as soon as any probe's failure is pinned on a cause.",
                "read 'What is broken' to the right, then follow its runbook link. 'No data' means Prometheus "
                "has no fresh series from the exporter: check the 'Exporter scraped' panel.",
            ),
            targets(("min(" + m("placeos_root_cause", 'cause="none"') + ")", "PlaceOS")),
            w=4, h=7, text_mode="value", mappings=value_map({"1": ("Healthy", GREEN), "0": ("FAILING", RED)}),
            no_value="NO DATA",
        ),
        table(
            "What is broken",
            describe(
                "Root causes the exporter's diagnosis names now (placeos_root_cause = 1), as the PlaceOS "
                f"troubleshooting page names them. Possible causes: {cause_list}.",
                "click the cause for its runbook section: how to confirm and how to recover.",
                maybe_empty=True,
            ),
            m("placeos_root_cause", 'cause!="none"') + " == 1",
            {"cause": ("Root cause", CAUSE_TEXT)},
            w=8, h=7, no_value="Nothing is broken",
            column_links={"cause": {"title": "Runbook for this cause", "url": f"{RUNBOOK}#${{__value.raw}}",
                                    "targetBlank": True}},
        ),
        table(
            "What users feel",
            describe(
                "User impacts implied by the failed components (placeos_impact_active = 1), in the "
                "troubleshooting page's words.",
                "tell users what is affected (and what keeps working, see the runbook); fixing the root cause "
                "clears these.",
                maybe_empty=True,
            ),
            f"placeos_impact_active{sel()} == 1",
            {"impact": ("Impact on users", IMPACT_TEXT)},
            w=8, h=7, no_value="No user impact",
        ),
    )  # fmt: skip
    lay.column(
        stat(
            "Exporter scraped",
            describe("Prometheus' up series for the exporter (or its /probe target).",
                     "the exporter is down or unreachable: nothing else here is current. Check its pod and "
                     "/-/healthy."),
            targets((f"up{sel()}", "{{instance}}")),
            w=4, h=3, text_mode="value", mappings=value_map({"1": ("scraped", GREEN), "0": ("DOWN", RED)}),
            no_value="no target", links=[runbook("exporter", "the exporter itself")],
        ),
        stat(
            "PlaceOS release",
            describe("The release era (A: etcd + RethinkDB, B: etcd + PostgreSQL, C: PostgreSQL + Redis "
                     "discovery) and platform version the exporter probes for (placeos_platform_info).",
                     "never red; if the era is wrong, backends of the wrong era are probed: set era in the "
                     "exporter's cluster config."),
            targets((f"placeos_platform_info{sel()}", "era {{era}} {{platform_version}}")),
            w=4, h=4, text_mode="name", colour_mode="none", steps=thresholds((BLUE, None)),
        ),
    )  # fmt: skip
    lay.row("Since when")
    lay.add(
        timeline(
            "Components",
            describe(
                "Diagnosis verdict per PlaceOS component over the time range (placeos_component_up). "
                + " ".join(f"{c.id}: {c.role}." for c in COMPONENTS.values()),
                "the component has failed since the red bar starts; see its runbook section.",
            ),
            targets((f"placeos_component_up{sel()}", "{{component}}")),
            w=12, h=8, mappings=value_map({"1": ("up", GREEN), "0": ("FAILED", RED)}),
        ),
        timeline(
            "Root causes",
            describe(
                "Each root cause the diagnosis can name, over the time range (placeos_root_cause, multi-hot).",
                "that cause was found from the start of the bar; several at once means several failures, "
                "or one failure and what it brought down.",
            ),
            targets((m("placeos_root_cause", 'cause!="none"'), "{{cause}}")),
            w=12, h=8, mappings=value_map({"0": ("no", GREEN), "1": ("ROOT CAUSE", RED)}),
        ),
        timeline(
            "User impact over time",
            describe(
                "Each documented user impact over the time range (placeos_impact_active).",
                "users have felt this since the bar turned red.",
            ),
            targets((f"placeos_impact_active{sel()}", "{{impact}}")),
            w=24, h=9, mappings=value_map({"0": ("ok", GREEN), "1": ("AFFECTED", RED)}),
            overrides=rename({i: f"{impact_short(i)}: {t}" for i, t in IMPACT_TEXT.items()}),
        ),
    )  # fmt: skip
    lay.row("Probes")
    lay.add(
        probe_status(
            "Probe status",
            None,
            "Last result of every enabled probe and its reason (placeos_probe_success, "
            "placeos_probe_failure_reason = 1). Backends first, then the user path.",
            "the tile names the probe and the reason (closed set: timeout, connection_refused, auth_failed, "
            "unhealthy, http_5xx, no_core_instances, ...). 'What is broken' says which failure explains it.",
            w=24, h=5,
        ),
        table(
            "Failing probes and why",
            describe("Probes whose last run failed, with the reason in words.",
                     "the reason says where to look: connection_refused = nothing listens, timeout = hung, "
                     "auth_failed = credentials, unhealthy = the backend says so.", maybe_empty=True),
            m("placeos_probe_failure_reason", 'reason!="ok"') + " == 1",
            {"probe": ("Probe", {}), "reason": ("Reason", REASON_LABEL)},
            w=8, h=8, no_value="Every probe passes",
        ),
        timeseries(
            "Probe duration",
            describe("Duration of each probe's last run (placeos_probe_duration_seconds).",
                     "a probe close to its timeout is a slow backend; one that hits it reports reason timeout."),
            targets((f"placeos_probe_duration_seconds{sel()}", "{{probe}}")),
            w=8, h=8, unit="s",
        ),
        timeseries(
            "Seconds since each probe last ran",
            describe("Age of each probe's last completed run (time() - placeos_probe_last_run_timestamp_seconds). "
                     "search_index_lag runs every few minutes by default; the others every interval.",
                     "a steadily growing line means that probe stopped completing: the other panels show stale "
                     "results. Check the exporter's logs."),
            targets((f"time() - (placeos_probe_last_run_timestamp_seconds{sel()} > 0)", "{{probe}}")),
            w=8, h=8, unit="s", links=[runbook("exporter", "the exporter itself")],
        ),
    )  # fmt: skip
    return dashboard(
        "placeos-overview",
        "PlaceOS overview",
        "What is broken in PlaceOS, what it breaks for users, and since when (placeos-exporter).",
        lay.panels,
    )


# User paths in the troubleshooting page's triage order: (probe, title, question, runbook anchor and title).
USER_PATHS: tuple[tuple[str, str, str, str, str], ...] = (
    ("api_health", "API health", "does rest-api answer its health route?", "api", CAUSES["api"].title),
    ("login", "Login", "can you log in?", "symptom-login", "users cannot log in"),
    ("systems_list", "Systems list", "does Backoffice list the systems?", "symptom-systems_list",
     "Backoffice cannot list systems"),
    ("module_functions", "Module functions", "do the modules and their functions load?", "symptom-module_functions",
     "modules and their functions do not load"),
    ("execute", "Execute", "does executing a function work?", "symptom-execute", "executing module functions fails"),
    ("websocket", "WebSocket", "do WebSocket control sessions bind and exec?", "symptom-websocket",
     "WebSocket control sessions fail"),
    ("triggers_health", "Triggers", "does the triggers service answer its health route?", "unknown",
     CAUSES["unknown"].title),
)  # fmt: skip


def backends() -> Json:
    lay = Layout()
    lay.add(
        stat(
            "Components",
            describe("Diagnosis verdict per component now (placeos_component_up); the rows below give each "
                     "component's detail.", "go to that component's row; the overview says what users feel."),
            targets((f"placeos_component_up{sel()}", "{{component}}")),
            w=24, h=3, mappings=value_map({"1": ("up", GREEN), "0": ("FAILED", RED)}),
        ),
    )  # fmt: skip

    lay.row("etcd (eras A/B: core discovery and module placement)")
    etcd_links = [runbook("etcd", "etcd failure")]
    lay.add(
        probe_status("etcd probe", "etcd", "The etcd probe: its JSON gateway's status (as PlaceOS asks it).",
                     "etcd is down, hung or has no leader: drivers, core clustering, execute, WebSocket and "
                     "triggers fail. No data in era C (no etcd).", w=6, h=6, links=etcd_links),
        stat("etcd has a leader", describe("placeos_etcd_has_leader: etcd reports a leader (eras A/B).",
                                           "no leader: etcd cannot commit writes, so cores cannot register. "
                                           "Check etcd's members and quorum."),
             targets((f"placeos_etcd_has_leader{sel()}", "leader")), w=4, h=6, text_mode="value",
             mappings=value_map({"1": ("leader", GREEN), "0": ("NO LEADER", RED)}), links=etcd_links),
        timeseries("Core registrations", describe(
            "Core instances registered for discovery (placeos_core_instances: in etcd in eras A/B, Redis in C); "
            "stale = era C lookup entries whose live key expired.",
            "live 0 means no core can serve executes; stale > 0 means the API may route to a dead core."),
            targets((f"placeos_core_instances{sel()}", "{{state}}")), w=7, h=6,
            overrides=colour_by_name({"live": GREEN, "stale": ORANGE}), links=[runbook("core", "core failure")]),
        failure_rate("etcd probe failures", "etcd", w=7, h=6, when_red="see the reason; the runbook's etcd section.",
                     links=etcd_links),
    )  # fmt: skip

    lay.row("Database (RethinkDB in era A, PostgreSQL in B/C: the configuration)")
    db_links = [runbook("database", "database failure")]
    lay.add(
        probe_status("Database probe", "rethinkdb|postgres",
                     "The configuration database probe of this era: a connection, PlaceOS's own health query and "
                     "its key tables.", "logins and most API requests fail; existing WebSockets keep working.",
                     w=6, h=6, links=db_links),
        timeseries("Database probe duration", describe("Last run duration of the database probe.",
                                                       "slow answers come before timeouts: check the database's "
                                                       "load and disk."),
                   targets((m("placeos_probe_duration_seconds", 'probe=~"rethinkdb|postgres"'), "{{probe}}")),
                   w=9, h=6, unit="s", links=db_links),
        failure_rate("Database probe failures", "rethinkdb|postgres", w=9, h=6,
                     when_red="auth_failed = credentials (the exporter's, or PlaceOS's if login fails too); "
                              "connection_refused or timeout = the database is down or hung.", links=db_links),
    )  # fmt: skip

    lay.row("Redis (runtime state: module metadata and status)")
    redis_links = [runbook("redis", "Redis failure")]
    lay.add(
        probe_status("Redis probe", "redis", "The Redis probe: PING and a capped scan of module status hashes.",
                     "status updates, signals, execute and cross-driver calls fail.", w=6, h=6, links=redis_links),
        timeseries("Modules by state", describe(
            "Modules by the connected field of their Redis status hash (placeos_modules).",
            "disconnected modules: the device behind the driver is unreachable (check the device and "
            "Backoffice > Modules)."),
            targets((f"placeos_modules{sel()}", "{{state}}")), w=8, h=6, stacked=True,
            overrides=colour_by_name({"connected": GREEN, "disconnected": RED, "unknown": GREY}),
            links=[runbook("modules", "disconnected modules")]),
        stat("Module scan", describe("placeos_modules_scan_truncated: the module scan stopped at "
                                     "redis.module_scan_cap, so the counts are lower bounds.",
                                     "raise redis.module_scan_cap if the counts matter."),
             targets((f"placeos_modules_scan_truncated{sel()}", "scan")), w=4, h=6, text_mode="value",
             mappings=value_map({"0": ("complete", GREEN), "1": ("TRUNCATED", ORANGE)}),
             steps=thresholds((GREEN, None), (ORANGE, 1))),
        failure_rate("Redis probe failures", "redis", w=6, h=6, when_red="see the reason; the runbook's Redis "
                     "section.", links=redis_links),
    )  # fmt: skip

    lay.row("Elasticsearch (search behind every list route)")
    es_links = [runbook("elasticsearch", "Elasticsearch failure")]
    es_colours = value_map({"0": ("green", GREEN), "1": ("yellow", YELLOW), "2": ("RED", RED)})
    lay.add(
        probe_status("Elasticsearch probe", "elasticsearch", "The Elasticsearch probe: cluster health (red fails it).",
                     "index, list and search requests fail (mostly seen in Backoffice); everything else works.",
                     w=6, h=6, links=es_links),
        stat("Cluster health", describe("Elasticsearch cluster health colour (placeos_elasticsearch_cluster_status, "
                                        "a state set). Yellow still serves searches.",
                                        "red: some primary shards are unassigned; check the cluster's nodes and "
                                        "disk."),
             targets((ES_COLOUR_EXPR, "health")), w=4, h=6, text_mode="value", mappings=es_colours,
             steps=thresholds((GREEN, None), (YELLOW, 1), (RED, 2)), links=es_links),
        timeline("Cluster health over time", describe("The health colour over the time range.",
                                                      "red since the bar starts."),
                 targets((ES_COLOUR_EXPR, "health")), w=14, h=6, mappings=es_colours, links=es_links),
        timeseries("Search-index lag", describe(
            "Database rows minus search documents per PlaceOS index (placeos_search_index_lag_documents): "
            "how far search-ingest is behind.",
            "a lag that grows or stays up: search-ingest has stalled; new rows do not show in Backoffice lists."),
            targets((f"placeos_search_index_lag_documents{sel()}", "{{index}}")), w=12, h=7, min_zero=False,
            links=[runbook("search-lag", "search index lag")]),
        failure_rate("Elasticsearch probe failures", "elasticsearch|search_index_lag", w=12, h=7,
                     when_red="unhealthy = red cluster; auth_failed = the exporter's credentials.", links=es_links),
    )  # fmt: skip

    lay.row("Core (runs the drivers, serves executes)")
    core_links = [runbook("core", "core failure")]
    lay.add(
        probe_status("Core discovery probe", "core_discovery",
                     "Registered cores (etcd in A/B, Redis in C) and whether each answers.",
                     "no_core_instances: no live core; core_unreachable: a registered core does not answer. "
                     "Execute, WebSocket and drivers fail.", w=6, h=6, links=core_links),
        stat("Core instances", describe("Live and stale core registrations now (placeos_core_instances).",
                                        "live 0: start or fix core; stale > 0 (era C): a dead core is still "
                                        "listed and the API may route to it."),
             targets((f"placeos_core_instances{sel()}", "{{state}}")), w=6, h=6,
             overrides=[{"matcher": {"id": "byName", "options": "stale"},
                         "properties": [{"id": "thresholds", "value": thresholds((GREEN, None), (ORANGE, 1))}]}],
             links=[*core_links, runbook("core-stale", "stale core registration")]),
        failure_rate("Core discovery failures", "core_discovery", w=12, h=6,
                     when_red="see the reason; the runbook's core section.", links=core_links),
    )  # fmt: skip

    lay.row("Drivers")
    driver_links = [runbook("driver", "driver failure")]
    lay.add(
        probe_status("Drivers probe", "drivers", "The cluster routes' driver states (compile failures confirmed, "
                     "down with modules, crash loops).", "a driver failed to compile, is down or crash-loops: "
                     "executes to its modules fail; other drivers keep working.", w=6, h=6, links=driver_links),
        stat("Drivers by state", describe("Drivers by state from the cluster routes (placeos_drivers).",
                                          "down or failed_compile above 0: see 'Drivers down' for which."),
             targets((f"placeos_drivers{sel()}", "{{state}}")), w=6, h=6,
             steps=thresholds((GREEN, None), (RED, 1)),
             overrides=[{"matcher": {"id": "byName", "options": "running"},
                         "properties": [{"id": "thresholds", "value": thresholds((BLUE, None))}]}],
             links=driver_links),
        table("Drivers down", describe("Drivers whose process is down with modules assigned, failed to compile or "
                                       "relaunched since the last run (placeos_driver_up = 0).",
                                       "check the driver's compile output and logs in Backoffice > Drivers.",
                                       maybe_empty=True),
              f"placeos_driver_up{sel()} == 0", {"driver": ("Driver", {})}, w=12, h=6,
              no_value="Every driver runs", links=driver_links),
        timeline("Driver up", describe("Each driver over the time range (placeos_driver_up; capped at 100 drivers, "
                                       "the rest in 'other').", "that driver has been failing since the bar "
                                       "starts."),
                 targets((f"placeos_driver_up{sel()}", "{{driver}}")), w=12, h=8,
                 mappings=value_map({"1": ("up", GREEN), "0": ("DOWN", RED)}), links=driver_links),
        timeseries("Driver launches per minute", describe(
            "Driver process launches per minute (rate of placeos_driver_launches_total, core's launch_count).",
            "a driver launched again and again is crash-looping: check its logs."),
            targets((f"rate(placeos_driver_launches_total{sel()}[$__rate_interval]) * 60", "{{driver}}")),
            w=12, h=8, unit="short", links=driver_links),
    )  # fmt: skip

    for probe, title, question, anchor, anchor_title in USER_PATHS:
        lay.row(f"User path: {title} ({question})")
        links = [runbook(anchor, anchor_title)]
        lay.add(
            probe_status(f"{title}: status", probe, f"The {probe} probe's last result and reason: {question}",
                         "'What is broken' on the overview names the cause if a backend explains it; otherwise "
                         "the reason says where to look.", w=6, h=6, links=links),
            timeseries(f"{title}: latency", describe(
                f"Quantiles of the {probe} probe's run time (placeos_probe_latency_seconds histogram).",
                "a rising p90/p99 is what users feel as a slow PlaceOS before it fails."),
                targets((quantile_expr(0.5, probe), "p50"), (quantile_expr(0.9, probe), "p90"),
                        (quantile_expr(0.99, probe), "p99")), w=9, h=6, unit="s", links=links),
            failure_rate(f"{title}: failures by reason", probe, w=9, h=6,
                         when_red="the reason classifies the error PlaceOS returned (runbook link).", links=links),
        )  # fmt: skip

    return dashboard(
        "placeos-backends",
        "PlaceOS backends and user paths",
        "Detail per PlaceOS backend and per user path (placeos-exporter). Start at the PlaceOS overview.",
        lay.panels,
    )


DASHBOARDS: dict[str, Callable[[], Json]] = {"placeos-overview.json": overview, "placeos-backends.json": backends}


def render(board: Json) -> str:
    return json.dumps(board, indent=2, ensure_ascii=False) + "\n"


def built() -> dict[str, str]:
    """File name -> the JSON text the builder produces."""
    return {name: render(make()) for name, make in DASHBOARDS.items()}
