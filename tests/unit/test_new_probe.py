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
class BuildFacts:
    queued: int


async def run(ctx: ProbeContext) -> Outcome:
    return Outcome(Reason.OK, "3 builds queued", BuildFacts(3))


def queued(facts: BuildFacts | None, _: object) -> Samples:
    yield (), float("nan") if facts is None else float(facts.queued)


BUILD_SERVICE = ProbeSpec(
    name="build_service",
    run=run,
    checks="the build service answers",
    eras=frozenset({Era.C}),
    facts=BuildFacts,
    metrics=(MetricRow(MetricSpec("placeos_builds_queued", "gauge", "Builds waiting."), queued),),
)
SYMPTOM = Symptom(
    "build_service",
    CORES,
    (Rule(None, (ExplainedBy("core"), Blame("unknown"))),),
    SymptomAlert("PlaceOSBuildServiceFailing", "The build service fails"),
)
REGISTRY_PLUS = (*REGISTRY, BUILD_SERVICE)
SYMPTOMS_PLUS = (*SYMPTOMS, SYMPTOM)


def test_metric_contract_and_enabled_probes() -> None:
    names = {spec.name for spec in contract(REGISTRY_PLUS)}
    assert "placeos_builds_queued" in names
    probe_values = next(s for s in contract(REGISTRY_PLUS) if s.name == "placeos_probe_success").values["probe"]
    assert "build_service" in probe_values
    settings = settings_for({"era": "C"})
    assert "build_service" in enabled_probes(settings.clusters[0], Era.C, REGISTRY_PLUS)
    assert "build_service" not in enabled_probes(settings.clusters[0], Era.A, REGISTRY_PLUS)


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
    state = cluster.probes["build_service"]
    assert state.success and state.last is not None and state.last.facts == BuildFacts(3)
    body, _ = render([ClusterCollector(cluster, REGISTRY_PLUS)], None)
    assert b'placeos_probe_success{probe="build_service"} 1.0' in body
    assert b"placeos_builds_queued 3.0" in body


def test_triage_and_check_steps() -> None:
    cluster = ClusterSnapshot("default", 5, symptoms=SYMPTOMS_PLUS)
    cluster.set_enabled(["redis", "build_service"])
    now = time.time()
    cluster.record(ProbeResult("redis", Reason.OK, "", 0.01, now))
    cluster.record(ProbeResult("build_service", Reason.HTTP_5XX, "HTTP 503", 0.01, now))
    assert set(cluster.diagnosis.causes) == {"unknown"}
    report = cluster_report(cluster)
    step = next(s for s in report.steps if s.question == CORES)
    assert [p.probe for p in step.probes] == ["build_service"] and not step.passed and not report.ok


def test_generated_alerts_and_runbook() -> None:
    rules = {a.name: a for a in alerts.alerts(symptoms=SYMPTOMS_PLUS)}
    assert rules["PlaceOSBuildServiceFailing"].expr == 'placeos_probe_success{probe="build_service"} == 0'
    inhibit = alerts.inhibit_rules(symptoms=SYMPTOMS_PLUS)
    core = next(r for r in inhibit if r["source_matchers"] == ['alertname="PlaceOSCoreDown"'])
    assert "PlaceOSBuildServiceFailing" in core["target_matchers"][0]
    text = runbook.runbook_md(symptoms=SYMPTOMS_PLUS)
    assert '<a id="symptom-build_service"></a>' in text and "[PlaceOSCoreDown](#core)" in text
