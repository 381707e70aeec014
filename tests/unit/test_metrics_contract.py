"""The metric contract on the very first scrape: every series present, nothing vanishes, no secrets."""

from __future__ import annotations

import math

from support import parse

from exporter.expose.metrics import CONTRACT, ClusterCollector, ExporterCollector, render
from exporter.log import Redactor
from exporter.model.failure_model import PAIRS
from exporter.model.vocabulary import Era, ProbeName, Reason
from exporter.runtime.snapshot import ClusterSnapshot, ProbeResult

PROBES = [ProbeName.ETCD, ProbeName.REDIS, ProbeName.CORE_DISCOVERY]


def first_scrape() -> dict:
    cs = ClusterSnapshot("default", 10)
    cs.set_era(Era.A, "configured")
    cs.set_enabled(PROBES)
    body, _ = render([ExporterCollector(), ClusterCollector(cs)], None)
    return parse(body.decode())


def test_every_series_exists_before_any_probe_ran() -> None:
    samples = first_scrape()
    names = {name for name, _ in samples}
    for probe in PROBES:
        labels = frozenset({("probe", probe.value)})
        assert samples[("placeos_probe_success", labels)] == 0
        assert samples[("placeos_probe_failure_reason", labels | {("reason", "pending")})] == 1
        assert sum(v for (n, ls), v in samples.items()
                   if n == "placeos_probe_failure_reason" and ("probe", probe.value) in ls) == 1  # fmt: skip
        for reason in Reason:
            if reason not in (Reason.OK, Reason.PENDING):
                assert samples[("placeos_probe_failures_total", labels | {("reason", reason.value)})] == 0
    for component, impact in PAIRS:
        assert samples[("placeos_failure_mode", frozenset({("component", component), ("impact", impact)}))] == 0
    assert samples[("placeos_root_cause", frozenset({("cause", "none")}))] == 0  # not checked yet is not healthy
    # Facts not known yet are NaN, not a fake 0 that would read as "no leader".
    assert math.isnan(samples[("placeos_etcd_has_leader", frozenset())])
    for spec in CONTRACT:
        if spec.name.startswith(
            (
                "placeos_elasticsearch",
                "placeos_search",
                "placeos_driver",
                "placeos_exporter_config",
                "placeos_capability",
                "placeos_edge",
            )
        ):
            continue  # probes not enabled here; reload series come from the serving process
        family = spec.name.removesuffix("_total") if spec.type == "counter" else spec.name
        assert any(n.startswith(family) for n in names), spec.name


def test_probe_detail_never_becomes_a_label() -> None:
    cs = ClusterSnapshot("default", 10)
    cs.set_enabled([ProbeName.REDIS])
    cs.record(ProbeResult(ProbeName.REDIS, Reason.AUTH_FAILED, "WRONGPASS secret-value-123", 0.01, 1.0))
    body, _ = render([ClusterCollector(cs)], None)
    assert b"secret-value-123" not in body and b"WRONGPASS" not in body


def test_redactor_hides_values_and_url_credentials() -> None:
    redact = Redactor(["hunter2-long"])
    text = "failed hunter2-long at redis://user:pw-in-url@h:6379 and /control?api-key=abc.def&x=1"
    out = redact(text)
    assert "hunter2-long" not in out and "pw-in-url" not in out and "abc.def" not in out
    assert "x=1" in out


def test_the_exporters_own_process_series_and_build_info() -> None:
    """Every Prometheus exporter serves process_* and python_info, and its build with its revision."""
    body, _ = render([ExporterCollector(revision="0a8d918")], None)
    samples = parse(body.decode())
    names = {name for name, _ in samples}
    assert {"process_resident_memory_bytes", "process_cpu_seconds_total", "python_info"} <= names
    (labels,) = [dict(ls) for n, ls in samples if n == "placeos_exporter_build_info"]
    assert labels["revision"] == "0a8d918" and labels["version"] and labels["python_version"]
