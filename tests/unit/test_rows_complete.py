"""Completeness of the rows: what the exporter knows about a probe or a cause is typed once, and nothing
a probe can report is left without a meaning, a symptom, an alert or a runbook section.

The property at the end is the one users feel: an enabled probe that fails can never read as healthy,
whatever the probe and whatever its failing reason.
"""

from __future__ import annotations

import re
import time

import pytest

from exporter.expose.report import cluster_report
from exporter.generate import alerts, runbook
from exporter.model.failure_model import (
    CAUSES,
    QUESTIONS,
    SYMPTOMS,
    AfterProbe,
    Blame,
    ExplainedBy,
    Failing,
    Passing,
)
from exporter.model.vocabulary import FAILURE_REASONS, REASON_MEANING, Era, ProbeName, Reason
from exporter.probes import REGISTRY, enabled_probes, probe_plan
from exporter.runtime.snapshot import ClusterSnapshot, ProbeResult
from exporter.settings import ClusterConfig, load_settings

PROBES = [spec.name for spec in REGISTRY]


def test_the_registry_is_the_vocabulary() -> None:
    assert [p.value for p in ProbeName] == PROBES
    for spec in REGISTRY:
        module = spec.run.__module__
        assert module == f"exporter.probes.{spec.name}", f"{spec.name} lives in {module}, not a file of its name"


def test_every_probe_has_exactly_one_symptom_row() -> None:
    assert sorted(s.probe for s in SYMPTOMS) == sorted(PROBES)


def test_rules_name_only_known_causes_probes_and_questions() -> None:
    for symptom in SYMPTOMS:
        assert symptom.question in QUESTIONS
        for rule in symptom.rules:
            for verdict in rule.then:
                if isinstance(verdict, Blame | ExplainedBy):
                    assert verdict.cause in CAUSES, (symptom.probe, verdict)
                if isinstance(verdict, AfterProbe):
                    assert verdict.probe in PROBES
                if isinstance(verdict, Blame) and isinstance(verdict.when, Failing | Passing):
                    assert set(verdict.when.probes) <= set(PROBES)
    assert {s.question for s in SYMPTOMS} == set(QUESTIONS)


def test_every_cause_has_an_alert_and_a_runbook_section() -> None:
    text = runbook.runbook_md()
    anchors = set(re.findall(r'<a id="([^"]+)"></a>', text))
    names = [a.name for a in alerts.alerts()]
    assert len(names) == len(set(names))
    for cause in CAUSES.values():
        if cause.id == "none":
            continue
        assert cause.alert is not None and cause.alert.severity in ("critical", "warning"), cause.id
        assert cause.runbook is not None and cause.runbook.confirm and cause.runbook.recover, cause.id
        assert cause.id in anchors and cause.alert.name in names


def test_every_reason_has_a_meaning() -> None:
    assert set(REASON_MEANING) == set(Reason)
    assert all(REASON_MEANING[r].strip() for r in Reason)


def every_probe_enabled() -> ClusterSnapshot:
    cluster = ClusterSnapshot("default", 5)
    cluster.set_era(Era.B, "configured")
    cluster.set_enabled(PROBES)
    return cluster


@pytest.mark.parametrize("probe", PROBES)
def test_a_failing_probe_never_reads_healthy(probe: str) -> None:
    """Every probe, every failing reason, all else passing: a cause is named, the verdict is not
    "Healthy", ``placeos_root_cause{cause="none"}`` is 0 and ``check`` fails (its exit code is ``ok``)."""
    for reason in FAILURE_REASONS:
        cluster = every_probe_enabled()
        now = time.time()
        for name in PROBES:
            cluster.record(ProbeResult(name, reason if name == probe else Reason.OK, "detail", 0.01, now))
        d = cluster.diagnosis
        assert d.causes and "none" not in d.causes, (probe, reason)
        assert not d.healthy and not d.verdict().startswith("Healthy"), (probe, reason)
        accounted = {e.probe for ev in (*d.causes.values(), *d.explained.values()) for e in ev}
        assert accounted == {probe}, (probe, reason)
        assert not cluster_report(cluster).ok, (probe, reason)


def test_every_enabled_probe_is_a_step_of_check() -> None:
    cluster = every_probe_enabled()
    report = cluster_report(cluster)
    assert sorted(p.probe for p in report.probes) == sorted(PROBES)
    assert [s.question for s in report.steps] == list(QUESTIONS)


def test_search_index_lag_failing_is_not_healthy() -> None:
    """Seen by a user: a failing search_index_lag gave "Healthy: every probe passes" and cause none."""
    cluster = ClusterSnapshot("default", 5)
    cluster.set_enabled([ProbeName.ELASTICSEARCH, ProbeName.SEARCH_INDEX_LAG])
    cluster.record(ProbeResult(ProbeName.ELASTICSEARCH, Reason.OK, "", 0.01, time.time()))
    cluster.record(ProbeResult(ProbeName.SEARCH_INDEX_LAG, Reason.TIMEOUT, "no answer", 0.01, time.time()))
    assert set(cluster.diagnosis.causes) == {"unknown"}
    assert not cluster_report(cluster).ok


EVERY_BACKEND = {
    "etcd": {"host": "etcd"},
    "rethinkdb": {"host": "rethinkdb"},
    "postgres": {"host": "pg"},
    "redis": {"url": "redis://redis:6379"},
    "elasticsearch": {"host": "es"},
}


def test_enabled_probes_follow_the_rows() -> None:
    every = ClusterConfig.model_validate(EVERY_BACKEND)
    era_a = enabled_probes(every, Era.A)
    assert ProbeName.RETHINKDB in era_a and ProbeName.POSTGRES not in era_a and ProbeName.ETCD in era_a
    era_c = enabled_probes(every, Era.C)
    assert ProbeName.POSTGRES in era_c and ProbeName.ETCD not in era_c
    # No api.url: no user-path probe; the lag needs the Elasticsearch probe.
    assert ProbeName.LOGIN not in era_c and ProbeName.SEARCH_INDEX_LAG in era_c
    off = ClusterConfig.model_validate({**EVERY_BACKEND, "elasticsearch": {"enabled": False}})
    assert ProbeName.SEARCH_INDEX_LAG not in enabled_probes(off, Era.C)


def test_only_configured_backends_are_probed() -> None:
    """Seen by a user: with only REDIS_URL set, etcd, RethinkDB and Elasticsearch were probed at localhost."""
    redis_only = load_settings(environ={"REDIS_URL": "redis://redis:6379"}).clusters[0]
    assert enabled_probes(redis_only, Era.A) == [ProbeName.REDIS]
    assert enabled_probes(redis_only, Era.C) == [ProbeName.REDIS, ProbeName.CORE_DISCOVERY]
    # etcd switched off: discovery in eras A/B has nowhere to look.
    etcd_off = ClusterConfig.model_validate({"etcd": {"host": "etcd", "enabled": False}})
    assert ProbeName.CORE_DISCOVERY not in enabled_probes(etcd_off, Era.B)
    # The exporter-wide switch is honoured, and a cluster's own setting wins over it.
    settings = load_settings(
        environ={"REDIS_URL": "redis://r:6379"}, overrides={"probes": {"redis": {"enabled": False}}}
    )
    assert ProbeName.REDIS not in enabled_probes(settings.clusters[0], Era.C)
    nothing = plan_of(ClusterConfig(), Era.C)
    assert not [p for p, why in nothing.items() if not why]
    assert nothing[ProbeName.LOGIN].startswith("not configured: needs api.url")


def plan_of(cluster: ClusterConfig, era: Era) -> dict[str, str]:
    return probe_plan(cluster, era)


def test_a_cluster_with_nothing_configured_says_what_to_configure() -> None:
    cluster = ClusterSnapshot("default", 5)
    plan = probe_plan(ClusterConfig(), Era.C)
    cluster.set_enabled([], plan)
    d = cluster.diagnosis
    assert not d.configured and not d.causes and "none" not in d.causes
    assert d.verdict().startswith("Nothing to probe: configure the PlaceOS API (PLACE_URI")
    assert not cluster_report(cluster).ok
