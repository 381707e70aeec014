"""The metric contract (design §4) as data, and the collector that renders it from the snapshot.

Like redis_exporter's metric maps (style.md), names, types, help and label sets are declared once:
the core families here, each probe's own rows in its spec (``probes/<name>.py``); ``contract()``
gathers them and docs/metrics.md is generated from it. The collector reads only the snapshot: no I/O
at scrape time. Every series is present from the first scrape (success 0, reason ``pending``), label
values come from closed sets, and rendered bytes are cached per snapshot version.
"""

from __future__ import annotations

import functools
import platform
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.samples import Sample

from exporter import __version__
from exporter.expose.exposition import Encoder, faster
from exporter.model.failure_model import CAUSES, COMPONENTS, IMPACTS, PAIRS
from exporter.model.metric import MetricSpec
from exporter.model.triage import Diagnosis
from exporter.model.vocabulary import FAILURE_REASONS, Era, Reason
from exporter.probes import REGISTRY
from exporter.probes.base import ProbeSpec
from exporter.runtime.snapshot import LATENCY_BUCKETS, ClusterSnapshot, ProbeState

REASONS = tuple(r.value for r in Reason)


def core_contract(probe_names: tuple[str, ...]) -> tuple[MetricSpec, ...]:
    """The families every cluster has: the exporter's own, per probe, and the diagnosis'."""
    probe = {"probe": probe_names}
    return (
        MetricSpec("placeos_exporter_build_info", "gauge", "Exporter version and source revision; always 1.",
                   ("version", "revision", "python_version"), scope="exporter"),
        MetricSpec("placeos_exporter_config_last_reload_successful", "gauge",
                   "1 if the last configuration (re)load succeeded; a bad new config keeps the old one running.",
                   scope="exporter"),
        MetricSpec("placeos_exporter_config_last_reload_success_timestamp_seconds", "gauge",
                   "Unix time of the last successful configuration load.", scope="exporter"),
        MetricSpec("placeos_probe_enabled", "gauge",
                   "1 if the probe runs for this cluster (era, configuration), 0 if not.", ("probe",), probe),
        MetricSpec("placeos_probe_success", "gauge", "1 if the probe's last run succeeded.", ("probe",), probe),
        MetricSpec("placeos_probe_duration_seconds", "gauge", "Duration of the probe's last run.", ("probe",), probe),
        MetricSpec("placeos_probe_failure_reason", "gauge",
                   "State set: exactly one reason is 1 per probe (ok on success, pending before the first run).",
                   ("probe", "reason"), {**probe, "reason": REASONS}),
        MetricSpec("placeos_probe_last_run_timestamp_seconds", "gauge",
                   "Unix time the probe's last run ended (staleness).", ("probe",), probe),
        MetricSpec("placeos_probes_total", "counter", "Probe runs.", ("probe",), probe),
        MetricSpec("placeos_probe_failures_total", "counter", "Failed probe runs by reason.",
                   ("probe", "reason"), {**probe, "reason": tuple(r.value for r in FAILURE_REASONS)}),
        MetricSpec("placeos_probe_latency_seconds", "histogram", "Probe run durations.", ("probe",), probe),
        MetricSpec("placeos_component_up", "gauge", "Diagnosis verdict per component: 1 up, 0 failed.",
                   ("component",), {"component": tuple(COMPONENTS)}),
        MetricSpec("placeos_failure_mode", "gauge",
                   "Every documented (component, impact) pair; 1 while that component is failed.",
                   ("component", "impact"), {"component": tuple(COMPONENTS), "impact": tuple(IMPACTS)}),
        MetricSpec("placeos_impact_active", "gauge", "1 if any failed component implies this user impact.",
                   ("impact",), {"impact": tuple(IMPACTS)}),
        MetricSpec("placeos_root_cause", "gauge",
                   "Multi-hot root causes found by the diagnosis; cause=none is 1 when healthy.",
                   ("cause",), {"cause": tuple(CAUSES)}),
        MetricSpec("placeos_diagnosis_settling", "gauge",
                   "1 while probes re-check after a change: the root causes shown are the last settled ones.",
                   scope="cluster"),
        MetricSpec("placeos_capability_available", "gauge",
                   "1 if the cluster serves an optional route (build monitor, edges); absent is never a failure.",
                   ("capability",)),
        MetricSpec("placeos_platform_info", "gauge", "PlaceOS release era and platform version; always 1.",
                   ("era", "platform_version", "source")),
    )  # fmt: skip


def contract(registry: Sequence[ProbeSpec] = REGISTRY) -> tuple[MetricSpec, ...]:
    """The whole metric contract (design §4): the core families, then each probe's own rows."""
    return core_contract(tuple(s.name for s in registry)) + tuple(row.spec for s in registry for row in s.metrics)


CONTRACT = contract()
SPECS = {spec.name: spec for spec in CONTRACT}


def family(spec: MetricSpec, labels: Iterable[str] | None = None) -> Any:
    """An empty metric family for a contract entry (help and labels from the contract)."""
    label_names = list(labels if labels is not None else spec.labels)
    if spec.type == "counter":
        return CounterMetricFamily(spec.name.removesuffix("_total"), spec.help, labels=label_names)
    if spec.type == "histogram":
        return HistogramMetricFamily(spec.name, spec.help, labels=label_names)
    return GaugeMetricFamily(spec.name, spec.help, labels=label_names)


def new(name: str) -> Any:
    return family(SPECS[name])


_FAILURE_REASONS = tuple((r, r.value) for r in FAILURE_REASONS)


class ClusterCollector(Collector):
    """Series of one cluster, built from its snapshot (and the diagnosis it holds) on each collect()."""

    def __init__(self, cluster: ClusterSnapshot, registry: Sequence[ProbeSpec] = REGISTRY) -> None:
        self.cluster = cluster
        self.registry = registry

    def describe(self) -> list[Metric]:
        return []  # no collect() at registration time

    def collect(self) -> Iterator[Metric]:
        states = self.cluster.enabled()
        yield from self._probe_series(states)
        yield from self._diagnosis_series(self.cluster.diagnosis)
        info = new("placeos_platform_info")
        era = self.cluster.era.value if isinstance(self.cluster.era, Era) else "unknown"
        info.add_metric([era, self.cluster.platform_version or "unknown", self.cluster.era_source], 1)
        yield info
        yield from self._probe_rows()
        yield from self._capabilities()

    def _capabilities(self) -> Iterator[Metric]:
        available = new("placeos_capability_available")
        for spec in self.registry:
            state = self.cluster.probes.get(spec.name)
            if spec.capability and state is not None and state.enabled:
                facts = state.last.facts if state.last else None
                known = getattr(facts, "available", None)
                available.add_metric([spec.capability], float("nan") if known is None else float(known))
        yield available

    def _probe_series(self, states: list[ProbeState]) -> Iterator[Metric]:
        enabled_names = {s.probe for s in states}
        enabled = new("placeos_probe_enabled")
        for spec in self.registry:
            enabled.add_metric([spec.name], 1 if spec.name in enabled_names else 0)
        yield enabled
        success = new("placeos_probe_success")
        duration = new("placeos_probe_duration_seconds")
        reason = new("placeos_probe_failure_reason")
        last_run = new("placeos_probe_last_run_timestamp_seconds")
        runs = new("placeos_probes_total")
        failures = new("placeos_probe_failures_total")
        latency = new("placeos_probe_latency_seconds")
        failures_sample = failures.name + "_total"
        for s in states:
            p = str(s.probe)
            success.add_metric([p], 1 if s.success else 0)
            duration.add_metric([p], s.last.duration if s.last else 0.0)
            # The two per-reason families are most of a render's samples: built directly (what
            # add_metric does, without its per-sample zip), from precomputed label values.
            current = s.reason.value
            reason.samples.extend(
                [Sample(reason.name, {"probe": p, "reason": r}, 1.0 if r == current else 0.0) for r in REASONS]
            )
            last_run.add_metric([p], s.last.finished if s.last else 0.0)
            runs.add_metric([p], s.runs)
            counts = s.failures
            failures.samples.extend(
                [
                    Sample(failures_sample, {"probe": p, "reason": value}, float(counts.get(r, 0)))
                    for r, value in _FAILURE_REASONS
                ]
            )
            cumulative, buckets = 0, []
            for bound, count in zip((*LATENCY_BUCKETS, float("inf")), s.bucket_counts, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            latency.add_metric([p], buckets, s.duration_sum)
        yield from (success, duration, reason, last_run, runs, failures, latency)

    def _diagnosis_series(self, d: Diagnosis) -> Iterator[Metric]:
        failed = d.failed_components
        era = self.cluster.era
        # A part the cluster's era does not have (etcd in era C) is neither up nor down: no series.
        present = {c.id for c in COMPONENTS.values() if era is None or era in c.eras}
        up = new("placeos_component_up")
        for component in COMPONENTS:
            if component in present:
                up.add_metric([component], 0 if component in failed else 1)
        mode = new("placeos_failure_mode")
        for component, impact in PAIRS:
            if component in present:
                mode.add_metric([component, impact], 1 if component in failed else 0)
        impacts = d.impacts
        active = new("placeos_impact_active")
        for impact in IMPACTS:
            active.add_metric([impact], 1 if impact in impacts else 0)
        causes = new("placeos_root_cause")
        for cause in CAUSES:
            causes.add_metric([cause], 1 if cause in d.causes else 0)
        settling = new("placeos_diagnosis_settling")
        settling.add_metric([], 1 if d.settling else 0)
        yield from (up, mode, active, causes, settling)

    def _probe_rows(self) -> Iterator[Metric]:
        """Each enabled probe's own rows, from its facts; a probe the era does not run has none."""
        for spec in self.registry:
            state = self.cluster.probes.get(spec.name)
            if state is None or not state.enabled:
                continue
            facts = state.last.facts if state.last else None
            last_ok = state.last_ok.facts if state.last_ok else None
            for row in spec.metrics:
                metric = family(row.spec)
                for labels, value in row.samples(facts, last_ok):
                    metric.add_metric(list(labels), value)
                yield metric


class ExporterCollector(Collector):
    """The exporter's own series (on /metrics only, as blackbox does)."""

    def __init__(self, extra: Callable[[], Iterable[Metric]] | None = None, revision: str = "unknown") -> None:
        self.extra = extra
        self.revision = revision

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        info = new("placeos_exporter_build_info")
        info.add_metric([__version__, self.revision, platform.python_version()], 1)
        yield info
        # The process's own series (process_*, python_info), as every Prometheus exporter has them.
        yield from PROCESS.collect()
        yield from PLATFORM.collect()
        if self.extra is not None:
            yield from self.extra()


PROCESS = ProcessCollector(registry=None)
PLATFORM = PlatformCollector(registry=None)


@functools.lru_cache(maxsize=64)
def encoder_for(accept: str) -> tuple[Encoder, str]:
    """The exposition format an Accept header asks for (text 0.0.4 or OpenMetrics) and its Content-Type,
    which names the format exactly (version, escaping): the render cache's key."""
    encoder, content_type = choose_encoder(accept)
    return faster(encoder), content_type


def render(collectors: Iterable[Collector], accept: str | None) -> tuple[bytes, str]:
    """Encode collectors in the format the Accept header asks for; the bytes and their Content-Type."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    encoder, content_type = encoder_for(accept or "")
    return encoder(registry), content_type
