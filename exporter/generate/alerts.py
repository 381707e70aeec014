"""Alert rules and Alertmanager inhibit rules, generated from the failure model's rows (design §5).

- One root-cause alert per cause row that carries one (``placeos_root_cause{cause}``), whose
  description lists the documented impacts; one symptom alert per symptom row that carries one (the
  user paths); alerts for stale core registrations, search-index lag, Elasticsearch red, drivers, and
  the exporter itself.
- Inhibit rules: a root-cause alert silences the symptom alerts it explains. Which cause explains
  which symptom is read from the symptom rows' triage rules (what the diagnosis interprets).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from exporter.generate.config import DEFAULT, GeneratorConfig
from exporter.model.failure_model import (
    CAUSES,
    COMPONENTS,
    IMPACTS,
    QUESTIONS,
    SYMPTOMS,
    Cause,
    Symptom,
    impacts_of,
)
from exporter.model.triage import explaining_causes


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
    playbook: str = ""  # PlaceOS's ai-support-agent playbook id (annotation placeos_playbook)

    def annotations(self, config: GeneratorConfig) -> dict[str, str]:
        out = {"summary": self.summary, "description": self.description,
               "runbook_url": f"{config.runbook_url}#{self.anchor}"}  # fmt: skip
        if self.playbook:
            out["placeos_playbook"] = self.playbook
        return out


def cause_rows(causes: Sequence[Cause] = tuple(CAUSES.values())) -> list[Cause]:
    """The causes that page or ticket: those whose row carries an alert."""
    return [c for c in causes if c.alert is not None]


def symptom_rows(symptoms: Sequence[Symptom] = SYMPTOMS) -> list[Symptom]:
    """The user-path symptoms with an alert, in the page's order (the order of ``check``'s steps)."""
    return sorted((s for s in symptoms if s.alert), key=lambda s: QUESTIONS.index(s.question))


INSTANCE = "{{ $labels.instance }}"
DIAGNOSE = f"See /diagnose on {INSTANCE} for the evidence."


def cause_alert(cause: Cause) -> Alert:
    assert cause.alert is not None
    cause_id, name, severity = cause.id, cause.alert.name, cause.alert.severity
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
        playbook=cause.playbook,
    )


def symptom_alert(symptom: Symptom) -> Alert:
    assert symptom.alert is not None
    probe, name, summary = str(symptom.probe), symptom.alert.name, symptom.alert.summary
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
        extra_labels={"probe": probe},
        probe=probe,
    )


def other_alerts(config: GeneratorConfig = DEFAULT) -> tuple[Alert, ...]:
    """Alerts beside the causes and symptoms: registrations, lag, Elasticsearch, drivers, the exporter."""
    job = config.job
    return (
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
              'placeos_driver_up{driver="drivers_place_display"}', "0", "1",
              {"driver": "drivers_place_display"}),
        Alert("PlaceOSModulesDisconnected", 'placeos_modules{state="disconnected"} > 0', "10m", "info",
              "Modules report connected=false",
              f"{INSTANCE}: {{{{ $value }}}} modules report their device disconnected (Redis status).", "modules",
              'placeos_modules{state="disconnected"}', "3", "0", {"state": "disconnected"}),
        Alert("PlaceOSExporterDown", f'up{{job="{job}"}} == 0', "2m", "warning",
              "placeos-exporter is not being scraped",
              f"Prometheus cannot scrape {INSTANCE}: PlaceOS is unwatched.", "exporter",
              f'up{{job="{job}"}}', "0", "1"),
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


def alerts(config: GeneratorConfig = DEFAULT, symptoms: Sequence[Symptom] = SYMPTOMS) -> list[Alert]:
    causes = [cause_alert(c) for c in cause_rows()]
    return causes + [symptom_alert(s) for s in symptom_rows(symptoms)] + list(other_alerts(config))


def inhibit_rules(config: GeneratorConfig = DEFAULT, symptoms: Sequence[Symptom] = SYMPTOMS) -> list[dict[str, Any]]:
    """A root-cause alert silences the symptom alerts whose probe it explains, and the alerts it names."""
    rules = []
    for cause in cause_rows():
        assert cause.alert is not None
        targets = sorted(
            {
                s.alert.name
                for s in symptom_rows(symptoms)
                if s.alert and cause.id in explaining_causes(s.probe, symptoms)
            }
            | set(cause.silences)
        )
        if targets:
            rules.append(
                {
                    "source_matchers": [f'alertname="{cause.alert.name}"'],
                    "target_matchers": [f'alertname=~"{"|".join(targets)}"'],
                    "equal": list(config.group_labels),
                }
            )
    return rules


def rules_yaml(config: GeneratorConfig = DEFAULT) -> str:
    group = {
        "name": "placeos-exporter",
        "rules": [
            {
                "alert": a.name,
                "expr": a.expr,
                "for": a.for_,
                # A root cause clears a probe cycle before the symptoms it explains (their probes keep
                # their last failure until their next run): keep it firing so its inhibition outlasts them.
                **({"keep_firing_for": config.keep_firing_for} if a.cause else {}),
                "labels": {"severity": a.severity},
                "annotations": a.annotations(config),
            }
            for a in alerts(config)
        ],
    }
    return HEADER + yaml.safe_dump({"groups": [group]}, sort_keys=False, width=120, allow_unicode=True)


def inhibit_yaml(config: GeneratorConfig = DEFAULT) -> str:
    return (
        HEADER
        + "# Add to alertmanager.yml: a root-cause alert silences the symptoms it explains.\n"
        + yaml.safe_dump({"inhibit_rules": inhibit_rules(config)}, sort_keys=False, width=120)
    )


HEADER = "# generated by `python -m exporter.generate` from exporter/model/failure_model.py; do not edit by hand\n"
