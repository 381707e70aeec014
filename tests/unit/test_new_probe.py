"""Adding a probe is one spec row and one symptom row: defined here, inside the test, and seen without
touching any other table in the metric contract, the enabled probes, the scheduler, the triage, the
``check`` steps, the generated alerts and the runbook."""

from __future__ import annotations

import time
from dataclasses import dataclass

from support import settings_for

from exporter.expose.metrics import ClusterCollector, contract, render
from exporter.expose.report import cluster_report
from exporter.generate import alerts, runbook
from exporter.model.failure_model import CORES, SYMPTOMS, Blame, ExplainedBy, Rule, Symptom, SymptomAlert
from exporter.model.metric import MetricSpec
from exporter.model.vocabulary import Era, Reason
from exporter.probes import REGISTRY, enabled_probes
from exporter.probes.base import MetricRow, Outcome, ProbeContext, ProbeSpec, Samples
from exporter.runtime.scheduler import Scheduler
from exporter.runtime.snapshot import ClusterSnapshot, ProbeResult, Snapshot


@dataclass(frozen=True)
class LicenseFacts:
    queued: int


async def run(ctx: ProbeContext) -> Outcome:
    return Outcome(Reason.OK, "3 seats free", LicenseFacts(3))


def queued(facts: LicenseFacts | None, _: object) -> Samples:
    yield (), float("nan") if facts is None else float(facts.queued)


LICENSE_CHECK = ProbeSpec(
    name="license_check",
    run=run,
    checks="the license server answers",
    eras=frozenset({Era.C}),
    facts=LicenseFacts,
    metrics=(MetricRow(MetricSpec("placeos_license_seats_free", "gauge", "Free seats."), queued),),
)
SYMPTOM = Symptom(
    "license_check",
    CORES,
    (Rule(None, (ExplainedBy("core"), Blame("unknown"))),),
    SymptomAlert("PlaceOSLicenseCheckFailing", "The license check fails"),
)
REGISTRY_PLUS = (*REGISTRY, LICENSE_CHECK)
SYMPTOMS_PLUS = (*SYMPTOMS, SYMPTOM)


def test_metric_contract_and_enabled_probes() -> None:
    names = {spec.name for spec in contract(REGISTRY_PLUS)}
    assert "placeos_license_seats_free" in names
    probe_values = next(s for s in contract(REGISTRY_PLUS) if s.name == "placeos_probe_success").values["probe"]
    assert "license_check" in probe_values
    settings = settings_for({"era": "C"})
    assert "license_check" in enabled_probes(settings.clusters[0], Era.C, REGISTRY_PLUS)
    assert "license_check" not in enabled_probes(settings.clusters[0], Era.A, REGISTRY_PLUS)


async def test_scheduler_runs_it_and_metrics_carry_its_rows() -> None:
    off = {"enabled": False}
    settings = settings_for(
        {"era": "C", "postgres": off, "redis": off, "elasticsearch": off, "probes": {"core_discovery": off}}
    )
    snapshot = Snapshot()
    scheduler = Scheduler(settings, snapshot, registry=REGISTRY_PLUS)
    cluster = snapshot.clusters["default"]
    cluster.symptoms = SYMPTOMS_PLUS
    await scheduler.run_once()
    state = cluster.probes["license_check"]
    assert state.success and state.last is not None and state.last.facts == LicenseFacts(3)
    body, _ = render([ClusterCollector(cluster, REGISTRY_PLUS)], None)
    assert b'placeos_probe_success{probe="license_check"} 1.0' in body
    assert b"placeos_license_seats_free 3.0" in body


def test_triage_and_check_steps() -> None:
    cluster = ClusterSnapshot("default", 5, symptoms=SYMPTOMS_PLUS)
    cluster.set_enabled(["redis", "license_check"])
    now = time.time()
    cluster.record(ProbeResult("redis", Reason.OK, "", 0.01, now))
    cluster.record(ProbeResult("license_check", Reason.HTTP_5XX, "HTTP 503", 0.01, now))
    assert set(cluster.diagnosis.causes) == {"unknown"}
    report = cluster_report(cluster)
    step = next(s for s in report.steps if s.question == CORES)
    assert [p.probe for p in step.probes] == ["license_check"] and not step.passed and not report.ok


def test_generated_alerts_and_runbook() -> None:
    rules = {a.name: a for a in alerts.alerts(symptoms=SYMPTOMS_PLUS)}
    assert rules["PlaceOSLicenseCheckFailing"].expr == 'placeos_probe_success{probe="license_check"} == 0'
    inhibit = alerts.inhibit_rules(symptoms=SYMPTOMS_PLUS)
    core = next(r for r in inhibit if r["source_matchers"] == ['alertname="PlaceOSCoreDown"'])
    assert "PlaceOSLicenseCheckFailing" in core["target_matchers"][0]
    text = runbook.runbook_md(symptoms=SYMPTOMS_PLUS)
    assert '<a id="symptom-license_check"></a>' in text and "[PlaceOSCoreDown](#core)" in text
