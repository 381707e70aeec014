"""Alert rules, Alertmanager inhibit rules, their promtool tests and the runbook, generated from the
failure model (design §5) so they cannot drift from it: ``python -m exporter.docs`` writes them and a
test fails when the committed files differ.

- One root-cause alert per cause of ``failure_model.CAUSES`` (``placeos_root_cause{cause}``), whose
  description lists the documented impacts; symptom alerts for the user paths; alerts for stale core
  registrations, search-index lag, Elasticsearch red, drivers, and the exporter itself.
- Inhibit rules: a root-cause alert silences the symptom alerts it explains. Which cause explains
  which symptom is read from ``failure_model.RULES`` (the same table the diagnosis interprets).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from exporter.failure_model import CAUSES, COMPONENTS, DEBUG_LOGS, IMPACTS, RULES, RUNBOOK, impacts_of
from exporter.settings import ProbeName

RUNBOOK_URL = "https://github.com/PlaceOS/placeos-exporter/blob/main/docs/runbook.md"
JOB = "placeos-exporter"  # the job name the rules' exporter alerts select (change with the scrape config)
GROUP_LABELS = ("instance", "cluster")  # what identifies one PlaceOS cluster in alerts and inhibition
KEEP_FIRING_FOR = "1m"  # > the longest probe interval + timeout of the defaults (15 s + 12 s)


@dataclass(frozen=True)
class Alert:
    """One alert, with what drives it in the promtool tests (series, failing and healthy values)."""

    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str
    anchor: str
    series: str  # the input series of the tests, in promtool notation
    failing: str  # value while the alert condition holds
    healthy: str  # value while it does not
    extra_labels: dict[str, str] = field(default_factory=dict)  # labels the alert carries from the series
    cause: str | None = None
    probe: str | None = None


CAUSE_ALERTS: dict[str, tuple[str, str]] = {
    # cause -> (alert name, severity): critical pages now, warning is a ticket (monitoring mixins).
    "etcd": ("PlaceOSEtcdDown", "critical"),
    "database": ("PlaceOSDatabaseDown", "critical"),
    "redis": ("PlaceOSRedisDown", "critical"),
    "elasticsearch": ("PlaceOSElasticsearchDown", "warning"),
    "core": ("PlaceOSCoreDown", "critical"),
    "driver": ("PlaceOSDriverFailing", "warning"),
    "api": ("PlaceOSApiUnreachable", "critical"),
    "api_etcd": ("PlaceOSApiCannotReachEtcd", "critical"),
    "exporter_config": ("PlaceOSExporterMisconfigured", "warning"),
    "unknown": ("PlaceOSUnexplainedFailure", "warning"),
}

SYMPTOM_ALERTS: dict[ProbeName, tuple[str, str]] = {
    ProbeName.LOGIN: ("PlaceOSLoginFailing", "Users cannot log in"),
    ProbeName.SYSTEMS_LIST: ("PlaceOSSearchFailing", "Backoffice cannot list systems"),
    ProbeName.MODULE_FUNCTIONS: ("PlaceOSModuleFunctionsFailing", "Modules and their functions do not load"),
    ProbeName.EXECUTE: ("PlaceOSExecuteFailing", "Executing module functions fails"),
    ProbeName.WEBSOCKET: ("PlaceOSWebSocketFailing", "WebSocket control sessions fail"),
}

INSTANCE = "{{ $labels.instance }}"
DIAGNOSE = f"See /diagnose on {INSTANCE} for the evidence."


def cause_alert(cause_id: str) -> Alert:
    name, severity = CAUSE_ALERTS[cause_id]
    cause = CAUSES[cause_id]
    impacts = sorted(impacts_of(frozenset({cause_id})))
    users = "; ".join(IMPACTS[i].text for i in impacts) or "nothing documented"
    keeps = " ".join(COMPONENTS[c].unaffected + "." for c in cause.components if COMPONENTS[c].unaffected)
    description = f"{cause.title} on {INSTANCE}. Users: {users}. {keeps} {cause.advice}".strip()
    return Alert(
        name=name,
        expr=f'placeos_root_cause{{cause="{cause_id}"}} == 1',
        for_="1m",
        severity=severity,
        summary=cause.title,
        description=f"{description} {DIAGNOSE}".replace("  ", " "),
        anchor=cause_id,
        series=f'placeos_root_cause{{cause="{cause_id}"}}',
        failing="1",
        healthy="0",
        extra_labels={"cause": cause_id},
        cause=cause_id,
    )


def symptom_alert(probe: ProbeName) -> Alert:
    name, summary = SYMPTOM_ALERTS[probe]
    return Alert(
        name=name,
        expr=f'placeos_probe_success{{probe="{probe}"}} == 0',
        for_="2m",
        severity="warning",
        summary=summary,
        description=(
            f"The {probe} probe on {INSTANCE} has failed for 2 minutes "
            f"(reason: see placeos_probe_failure_reason). Inhibited while a root cause explains it. {DIAGNOSE}"
        ),
        anchor=f"symptom-{probe}",
        series=f'placeos_probe_success{{probe="{probe}"}}',
        failing="0",
        healthy="1",
        extra_labels={"probe": probe.value},
        probe=probe.value,
    )


OTHER_ALERTS: tuple[Alert, ...] = (
    Alert("PlaceOSCoreRegistrationStale", 'placeos_core_instances{state="stale"} > 0', "2m", "warning",
          "A dead core is still registered",
          f"{INSTANCE}: a core registration outlived its core (era C lookup entry whose live key expired). "
          "PlaceOS keeps routing executes to it (internals §1.2).", "core-stale",
          'placeos_core_instances{state="stale"}', "1", "0", {"state": "stale"}),
    Alert("PlaceOSSearchIndexLagging", "placeos_search_index_lag_documents > 10", "15m", "warning",
          "Search indices are behind the database",
          f"{INSTANCE}: index {{{{ $labels.index }}}} is {{{{ $value }}}} documents behind its table: "
          "search-ingest has stalled, lists and searches are stale.", "search-lag",
          'placeos_search_index_lag_documents{index="sys"}', "50", "0", {"index": "sys"}),
    Alert("PlaceOSElasticsearchRed", 'placeos_elasticsearch_cluster_status{color="red"} == 1', "1m", "warning",
          "Elasticsearch cluster health is red",
          f"{INSTANCE}: some primary shards are unassigned; listing and search requests fail.", "elasticsearch",
          'placeos_elasticsearch_cluster_status{color="red"}', "1", "0", {"color": "red"}),
    Alert("PlaceOSDriverDown", "placeos_driver_up == 0", "2m", "info",
          "A driver is down",
          f"{INSTANCE}: driver {{{{ $labels.driver }}}} failed to compile, is down with modules or keeps crashing; "
          "executes to its modules fail.", "driver",
          'placeos_driver_up{driver="display_a1b2c3_driver-display"}', "0", "1",
          {"driver": "display_a1b2c3_driver-display"}),
    Alert("PlaceOSModulesDisconnected", 'placeos_modules{state="disconnected"} > 0', "10m", "info",
          "Modules report connected=false",
          f"{INSTANCE}: {{{{ $value }}}} modules report their device disconnected (Redis status).", "modules",
          'placeos_modules{state="disconnected"}', "3", "0", {"state": "disconnected"}),
    Alert("PlaceOSExporterDown", f'up{{job="{JOB}"}} == 0', "2m", "warning",
          "placeos-exporter is not being scraped",
          f"Prometheus cannot scrape {INSTANCE}: PlaceOS is unwatched.", "exporter",
          f'up{{job="{JOB}"}}', "0", "1"),
    Alert("PlaceOSProbesStale",
          'time() - placeos_probe_last_run_timestamp_seconds{probe!="search_index_lag"} > 120', "2m", "warning",
          "Probe results are stale",
          f"{INSTANCE}: probe {{{{ $labels.probe }}}} has not completed a run for over 2 minutes.", "exporter",
          'placeos_probe_last_run_timestamp_seconds{probe="redis"}', "0", "0+15x100", {"probe": "redis"}),
    Alert("PlaceOSExporterConfigReloadFailed", "placeos_exporter_config_last_reload_successful == 0", "5m",
          "warning", "A configuration reload failed",
          f"{INSTANCE}: the new configuration was rejected; the previous one keeps running.", "exporter",
          "placeos_exporter_config_last_reload_successful", "0", "1"),
)  # fmt: skip


def alerts() -> list[Alert]:
    return [cause_alert(c) for c in CAUSE_ALERTS] + [symptom_alert(p) for p in SYMPTOM_ALERTS] + list(OTHER_ALERTS)


def explaining_causes(probe: ProbeName) -> set[str]:
    """Causes that explain a failing probe, per the diagnosis rules (directly or through login)."""
    out: set[str] = set()
    for _, candidates in RULES.get(probe, ()):
        for target, condition in candidates:
            kind, _, arg = condition.partition(":")
            if target == "explained" and kind == "cause":
                out.add(arg)
            elif target == "explained" and kind == "failing" and arg == ProbeName.LOGIN:
                out |= explaining_causes(ProbeName.LOGIN) | direct_causes(ProbeName.LOGIN)
            elif target not in ("explained", "unknown"):
                out.add(target)
    return out


def direct_causes(probe: ProbeName) -> set[str]:
    return {t for _, cands in RULES.get(probe, ()) for t, _ in cands if t not in ("explained", "unknown")}


# Non-symptom alerts a root cause also explains (so each failure pages exactly once).
EXTRA_INHIBITS: dict[str, tuple[str, ...]] = {
    "elasticsearch": ("PlaceOSElasticsearchRed", "PlaceOSSearchIndexLagging"),
    "database": ("PlaceOSSearchIndexLagging",),
    "core": ("PlaceOSCoreRegistrationStale",),
    "api": ("PlaceOSDriverDown",),
}


def inhibit_rules() -> list[dict[str, Any]]:
    rules = []
    for cause_id, (source, _) in CAUSE_ALERTS.items():
        targets = sorted(
            {name for probe, (name, _) in SYMPTOM_ALERTS.items() if cause_id in explaining_causes(probe)}
            | set(EXTRA_INHIBITS.get(cause_id, ()))
        )
        if targets:
            rules.append(
                {
                    "source_matchers": [f'alertname="{source}"'],
                    "target_matchers": [f'alertname=~"{"|".join(targets)}"'],
                    "equal": list(GROUP_LABELS),
                }
            )
    return rules


def rules_yaml() -> str:
    group = {
        "name": "placeos-exporter",
        "rules": [
            {
                "alert": a.name,
                "expr": a.expr,
                "for": a.for_,
                # A root cause clears a probe cycle before the symptoms it explains (their probes keep
                # their last failure until their next run): keep it firing so its inhibition outlasts them.
                **({"keep_firing_for": KEEP_FIRING_FOR} if a.cause else {}),
                "labels": {"severity": a.severity},
                "annotations": {
                    "summary": a.summary,
                    "description": a.description,
                    "runbook_url": f"{RUNBOOK_URL}#{a.anchor}",
                },
            }
            for a in alerts()
        ],
    }
    return HEADER + yaml.safe_dump({"groups": [group]}, sort_keys=False, width=120, allow_unicode=True)


def inhibit_yaml() -> str:
    return (
        HEADER
        + "# Add to alertmanager.yml: a root-cause alert silences the symptoms it explains.\n"
        + yaml.safe_dump({"inhibit_rules": inhibit_rules()}, sort_keys=False, width=120)
    )


BASE_LABELS = {"instance": "exporter:9864", "job": JOB}
INTERVAL = "15s"


def tests_yaml() -> str:
    """promtool unit tests for every alert: fires when the condition holds, silent when healthy, on a
    single failed scrape, and while flapping."""
    tests = []
    for a in alerts():
        labels = dict(BASE_LABELS)
        series = _with_labels(a.series, labels)
        fire_at = _minutes(a.for_) + 3  # staleness needs 2 minutes before its condition holds
        exp_labels = {**labels, **a.extra_labels, "severity": a.severity}
        annotations = {
            "summary": a.summary,
            "description": _expand(a.description, {**labels, **a.extra_labels}, a.failing),
            "runbook_url": f"{RUNBOOK_URL}#{a.anchor}",
        }
        cases = [
            ("fires", f"{a.failing}x{fire_at * 4 + 4}", [{"exp_labels": exp_labels, "exp_annotations": annotations}]),
            ("healthy", _healthy(a, fire_at * 4 + 4), []),
            ("single failed scrape", _single_failure(a, fire_at * 4 + 4), []),
            ("flapping", _flapping(a, fire_at * 4 + 4), []),
        ]
        for case, values, expected in cases:
            tests.append(
                {
                    "name": f"{a.name}: {case}",
                    "interval": INTERVAL,
                    "input_series": [{"series": series, "values": values}],
                    "alert_rule_test": [{"eval_time": f"{fire_at}m", "alertname": a.name, "exp_alerts": expected}],
                }
            )
    doc = {"rule_files": ["placeos-exporter.rules.yml"], "evaluation_interval": "15s", "tests": tests}
    return HEADER + yaml.safe_dump(doc, sort_keys=False, width=120)


def _expand(template: str, labels: dict[str, str], value: str) -> str:
    """What Prometheus renders for our simple templates: $labels.x and $value."""
    text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m[1], ""), template)
    return text.replace("{{ $value }}", value)


def _healthy(a: Alert, n: int) -> str:
    return a.healthy if "x" in a.healthy else f"{a.healthy}x{n}"


def _single_failure(a: Alert, n: int) -> str:
    if "x" in a.healthy:  # a counter-like healthy series: one sample out of line is not a failure mode
        return a.healthy
    half = n // 2
    return f"{a.healthy}x{half} {a.failing} {a.healthy}x{n - half}"


def _flapping(a: Alert, n: int) -> str:
    if "x" in a.healthy:
        return a.healthy
    return " ".join([a.failing, a.healthy] * (n // 2 + 1))


def _with_labels(series: str, labels: dict[str, str]) -> str:
    name, _, rest = series.partition("{")
    inner = rest.rstrip("}")
    extra = ",".join(f'{k}="{v}"' for k, v in labels.items() if f"{k}=" not in inner)
    return f"{name}{{{inner + ',' if inner else ''}{extra}}}"


def _minutes(duration: str) -> int:
    return int(duration.rstrip("m"))


HEADER = "# generated by `python -m exporter.docs` from exporter/failure_model.py; do not edit by hand\n"


def runbook_md() -> str:
    lines = [
        "<!-- generated by `python -m exporter.docs` from exporter/failure_model.py; do not edit by hand -->\n\n",
        "# Runbook\n\n",
        "What each placeos-exporter alert means, what users feel, how to confirm it and how to recover. The "
        'sections follow the PlaceOS page "Troubleshooting Backend Failures"; its triage (can you log in? does '
        "Backoffice list systems? do modules and functions load? does execute work?) runs continuously as the "
        "user-path probes, and `/diagnose` shows the result.\n\n",
        "## Debug logs\n\n" + DEBUG_LOGS + "\n\n",
        "## Alert timing\n\n",
        "| alert | severity | fires after |\n|---|---|---|\n",
    ]
    for a in alerts():
        lines.append(f"| `{a.name}` | {a.severity} | {a.for_} |\n")
    lines.append(
        "\nRoot-cause alerts wait 1 minute (a probe runs every 15 s by default, so four failed runs in a row; a "
        "single failed run or a flapping backend does not fire). Symptom alerts wait 2 minutes and are "
        "inhibited while a root cause explains them (`alerts/alertmanager-inhibit.yml`), so each failure "
        "pages once. Root-cause alerts keep firing for "
        + KEEP_FIRING_FOR
        + " after recovery (`keep_firing_for`): the symptoms they explain clear a probe cycle later, and "
        "must stay inhibited until they do.\n\n"
    )
    for cause_id, (name, severity) in CAUSE_ALERTS.items():
        cause = CAUSES[cause_id]
        entry = RUNBOOK[cause_id]
        lines.append(f'<a id="{cause_id}"></a>\n## {cause.title} (`{name}`, {severity})\n\n')
        for comp in cause.components:
            lines.append(
                f"{COMPONENTS[comp].title} {COMPONENTS[comp].role}. Detected when {COMPONENTS[comp].detected_by}.\n\n"
            )
        impacts = sorted(impacts_of(frozenset({cause_id})))
        if impacts:
            lines.append("**What users feel:**\n\n")
            lines.extend(f'- {IMPACTS[i].text} (the page: "{IMPACTS[i].page}")\n' for i in impacts)
            lines.append("\n")
        keeps = [COMPONENTS[c].unaffected for c in cause.components if COMPONENTS[c].unaffected]
        if keeps:
            lines.append(f"**Keeps working:** {' '.join(keeps)}.\n\n")
        if cause.advice:
            lines.append(f"{cause.advice[0].upper()}{cause.advice[1:]}.\n\n")
        lines.append("**Confirm:**\n\n")
        lines.extend(f"1. {step}\n" for step in entry.confirm)
        lines.append("\n**Recover:**\n\n")
        lines.extend(f"1. {step}\n" for step in entry.recover)
        lines.append("\n")
    lines.append("## Symptom alerts\n\n")
    for probe, (name, summary) in SYMPTOM_ALERTS.items():
        causes = sorted(explaining_causes(probe))
        lines.append(
            f'<a id="symptom-{probe}"></a>\n### {summary} (`{name}`)\n\n'
            f"The `{probe}` probe fails. Explained by (and silenced while these fire): "
            f"{', '.join(f'[{CAUSE_ALERTS[c][0]}](#{c})' for c in causes if c in CAUSE_ALERTS)}. "
            f'If none fires, check `placeos_probe_failure_reason{{probe="{probe}"}}` and `/diagnose`.\n\n'
        )
    lines.append(
        '<a id="core-stale"></a>\n## Stale core registration (`PlaceOSCoreRegistrationStale`)\n\n'
        "Era C: `{service_core}_lookup` still lists a core whose `{service_core}.<ULID>` key expired. Registered "
        "cores prune such entries; with the only core dead nobody does, and the API keeps routing executes to "
        "it. See [Core](#core).\n\n"
        '<a id="search-lag"></a>\n## Search index lag (`PlaceOSSearchIndexLagging`)\n\n'
        "Database rows minus documents in the index of the same name. search-ingest has stalled: check "
        "`GET /api/search-ingest/v1/` and its logs; `POST /api/search-ingest/v1/reindex` then `/backfill`.\n\n"
        '<a id="modules"></a>\n## Disconnected modules (`PlaceOSModulesDisconnected`)\n\n'
        "Modules whose Redis `status/<id>` says `connected: false`: the device behind the driver is unreachable. "
        'Check the device and Backoffice > Modules (modules marked "Ignore connected" are still counted).\n\n'
        '<a id="exporter"></a>\n## The exporter itself\n\n'
        "`PlaceOSExporterDown`: Prometheus cannot scrape it (check the pod, `/-/healthy`). `PlaceOSProbesStale`: "
        "probes stopped completing (check the exporter's logs). `PlaceOSExporterConfigReloadFailed`: run "
        "`placeos-exporter check-config` on the new file; the old configuration keeps running.\n"
    )
    return "".join(lines)
