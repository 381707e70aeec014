"""The metric contract (design §4) as data, and the collector that renders it from the snapshot.

Like redis_exporter's metric maps (style.md), names, types, help and label sets are declared once
in ``CONTRACT``; docs/metrics.md is generated from it. The collector reads only the snapshot: no I/O
at scrape time. Every series is present from the first scrape (success 0, reason ``pending``), label
values come from closed sets, and rendered bytes are cached per snapshot version.
"""

from __future__ import annotations

import functools
import platform
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

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
from exporter.diagnosis import Diagnosis
from exporter.exposition import Encoder, faster
from exporter.failure_model import CAUSES, COMPONENTS, IMPACTS, PAIRS
from exporter.placeos import SEARCH_INDICES
from exporter.reasons import FAILURE_REASONS, Reason
from exporter.settings import Era, ProbeName
from exporter.snapshot import LATENCY_BUCKETS, ClusterSnapshot, ProbeState

ES_COLORS = ("green", "yellow", "red")
CORE_STATES = ("live", "stale")
MODULE_STATES = ("connected", "disconnected", "unknown")
DRIVER_STATES = ("running", "down", "failed_compile")
DRIVER_LABEL_CAP = 100  # per-driver series at most; the rest fold into driver="other"
DRIVER_OVERFLOW = "other"


@dataclass(frozen=True)
class MetricSpec:
    """One metric family of the contract."""

    name: str
    type: str  # gauge | counter | histogram
    help: str
    labels: tuple[str, ...] = ()
    values: dict[str, tuple[str, ...]] = field(default_factory=dict)  # closed label value sets
    scope: str = "cluster"  # cluster: on /metrics and /probe; exporter: on /metrics only


PROBE_NAMES = tuple(p.value for p in ProbeName)
REASONS = tuple(r.value for r in Reason)

CONTRACT: tuple[MetricSpec, ...] = (
    MetricSpec("placeos_exporter_build_info", "gauge", "Exporter version; always 1.",
               ("version", "python_version"), scope="exporter"),
    MetricSpec("placeos_exporter_config_last_reload_successful", "gauge",
               "1 if the last configuration (re)load succeeded; a bad new config keeps the old one running.",
               scope="exporter"),
    MetricSpec("placeos_exporter_config_last_reload_success_timestamp_seconds", "gauge",
               "Unix time of the last successful configuration load.", scope="exporter"),
    MetricSpec("placeos_probe_enabled", "gauge",
               "1 if the probe runs for this cluster (era, configuration), 0 if not.",
               ("probe",), {"probe": PROBE_NAMES}),
    MetricSpec("placeos_probe_success", "gauge", "1 if the probe's last run succeeded.",
               ("probe",), {"probe": PROBE_NAMES}),
    MetricSpec("placeos_probe_duration_seconds", "gauge", "Duration of the probe's last run.",
               ("probe",), {"probe": PROBE_NAMES}),
    MetricSpec("placeos_probe_failure_reason", "gauge",
               "State set: exactly one reason is 1 per probe (ok on success, pending before the first run).",
               ("probe", "reason"), {"probe": PROBE_NAMES, "reason": REASONS}),
    MetricSpec("placeos_probe_last_run_timestamp_seconds", "gauge",
               "Unix time the probe's last run ended (staleness).", ("probe",), {"probe": PROBE_NAMES}),
    MetricSpec("placeos_probes_total", "counter", "Probe runs.", ("probe",), {"probe": PROBE_NAMES}),
    MetricSpec("placeos_probe_failures_total", "counter", "Failed probe runs by reason.",
               ("probe", "reason"), {"probe": PROBE_NAMES, "reason": tuple(r.value for r in FAILURE_REASONS)}),
    MetricSpec("placeos_probe_latency_seconds", "histogram", "Probe run durations.",
               ("probe",), {"probe": PROBE_NAMES}),
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
    MetricSpec("placeos_platform_info", "gauge", "PlaceOS release era and platform version; always 1.",
               ("era", "platform_version", "source")),
    MetricSpec("placeos_core_instances", "gauge",
               "Core registrations: live, or stale (era C lookup entries whose live key expired).",
               ("state",), {"state": CORE_STATES}),
    MetricSpec("placeos_etcd_has_leader", "gauge", "1 if etcd reports a leader (eras A/B)."),
    MetricSpec("placeos_modules", "gauge",
               "Modules by the connected field of their Redis status hash (capped scan).",
               ("state",), {"state": MODULE_STATES}),
    MetricSpec("placeos_modules_scan_truncated", "gauge",
               "1 if the module scan stopped at redis.module_scan_cap."),
    MetricSpec("placeos_elasticsearch_cluster_status", "gauge",
               "State set of Elasticsearch cluster health colours.", ("color",), {"color": ES_COLORS}),
    MetricSpec("placeos_search_index_lag_documents", "gauge",
               "Database rows minus search documents per PlaceOS index (search-ingest lag).",
               ("index",), {"index": SEARCH_INDICES}),
    MetricSpec("placeos_drivers", "gauge", "Drivers by state, from the cluster routes.",
               ("state",), {"state": DRIVER_STATES}),
    MetricSpec("placeos_driver_up", "gauge",
               f"1 if the driver runs with its modules; capped at {DRIVER_LABEL_CAP} drivers, rest in 'other'.",
               ("driver",)),
    MetricSpec("placeos_driver_launches_total", "counter",
               "Driver process launches reported by core (launch_count); a rising rate is a crash loop.",
               ("driver",)),
)  # fmt: skip
SPECS = {spec.name: spec for spec in CONTRACT}


def family(name: str, labels: Iterable[str] | None = None) -> Any:
    """An empty metric family for a contract entry (help and labels from the contract)."""
    spec = SPECS[name]
    label_names = list(labels if labels is not None else spec.labels)
    if spec.type == "counter":
        return CounterMetricFamily(name.removesuffix("_total"), spec.help, labels=label_names)
    if spec.type == "histogram":
        return HistogramMetricFamily(name, spec.help, labels=label_names)
    return GaugeMetricFamily(name, spec.help, labels=label_names)


# Gauges read from probe facts (probe, fact key, label value or None) — the redis_exporter map style.
FACT_GAUGES: dict[str, tuple[tuple[ProbeName, str, str | None], ...]] = {
    "placeos_etcd_has_leader": ((ProbeName.ETCD, "has_leader", None),),
    "placeos_core_instances": (
        (ProbeName.CORE_DISCOVERY, "cores_live", "live"),
        (ProbeName.CORE_DISCOVERY, "cores_stale", "stale"),
    ),
    "placeos_modules": tuple((ProbeName.REDIS, f"modules_{s}", s) for s in MODULE_STATES),
    "placeos_modules_scan_truncated": ((ProbeName.REDIS, "modules_truncated", None),),
    "placeos_drivers": tuple((ProbeName.DRIVERS, f"drivers_{s}", s) for s in DRIVER_STATES),
}


_REASONS = tuple(r.value for r in Reason)
_FAILURE_REASONS = tuple((r, r.value) for r in FAILURE_REASONS)


class ClusterCollector(Collector):
    """Series of one cluster, built from its snapshot and diagnosis on each collect()."""

    def __init__(self, cluster: ClusterSnapshot, diagnosis: Diagnosis | None) -> None:
        self.cluster = cluster
        self.diagnosis = diagnosis

    def describe(self) -> list[Metric]:
        return []  # no collect() at registration time

    def collect(self) -> Iterator[Metric]:
        states = self.cluster.enabled()
        yield from self._probe_series(states)
        if self.diagnosis is not None:
            yield from self._diagnosis_series(self.diagnosis)
        info = family("placeos_platform_info")
        era = self.cluster.era.value if isinstance(self.cluster.era, Era) else "unknown"
        info.add_metric([era, self.cluster.platform_version or "unknown", self.cluster.era_source], 1)
        yield info
        yield from self._fact_series()

    def _probe_series(self, states: list[ProbeState]) -> Iterator[Metric]:
        enabled_names = {s.probe for s in states}
        enabled = family("placeos_probe_enabled")
        for name in ProbeName:
            enabled.add_metric([name.value], 1 if name in enabled_names else 0)
        yield enabled
        success = family("placeos_probe_success")
        duration = family("placeos_probe_duration_seconds")
        reason = family("placeos_probe_failure_reason")
        last_run = family("placeos_probe_last_run_timestamp_seconds")
        runs = family("placeos_probes_total")
        failures = family("placeos_probe_failures_total")
        latency = family("placeos_probe_latency_seconds")
        failures_sample = failures.name + "_total"
        for s in states:
            p = s.probe.value
            success.add_metric([p], 1 if s.success else 0)
            duration.add_metric([p], s.last.duration if s.last else 0.0)
            # The two per-reason families are most of a render's samples: built directly (what
            # add_metric does, without its per-sample zip), from precomputed label values.
            current = s.reason.value
            reason.samples.extend(
                [Sample(reason.name, {"probe": p, "reason": r}, 1.0 if r == current else 0.0) for r in _REASONS]
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
        up = family("placeos_component_up")
        for component in COMPONENTS:
            up.add_metric([component], 0 if component in d.failed_components else 1)
        mode = family("placeos_failure_mode")
        for component, impact in PAIRS:
            mode.add_metric([component, impact], 1 if component in d.failed_components else 0)
        active = family("placeos_impact_active")
        for impact in IMPACTS:
            active.add_metric([impact], 1 if impact in d.impacts else 0)
        causes = family("placeos_root_cause")
        for cause in CAUSES:
            causes.add_metric([cause], 1 if cause in d.causes else 0)
        yield from (up, mode, active, causes)

    def _fact_series(self) -> Iterator[Metric]:
        probes = {s.probe: s for s in self.cluster.enabled()}
        for name, sources in FACT_GAUGES.items():
            present = [(probes[p], key, label) for p, key, label in sources if p in probes]
            if not present:
                continue  # the probe behind it does not apply to this cluster's era
            gauge = family(name)
            for state, key, label in present:
                gauge.add_metric([label] if label else [], _number(state.fact(key)))
            yield gauge
        es = probes.get(ProbeName.ELASTICSEARCH)
        if es is not None:
            colors = family("placeos_elasticsearch_cluster_status")
            current = es.fact("status")
            for color in ES_COLORS:
                colors.add_metric([color], float("nan") if current is None else (1 if current == color else 0))
            yield colors
        lag_probe = probes.get(ProbeName.SEARCH_INDEX_LAG)
        if lag_probe is not None:
            # Indices seen once stay present; while counting fails their lag is unknown (NaN).
            lag = lag_probe.fact("index_lag") or {}
            known = lag_probe.last_ok.facts.get("index_lag", {}) if lag_probe.last_ok else {}
            lag_family = family("placeos_search_index_lag_documents")
            for index in SEARCH_INDICES:
                if index in lag or index in known:
                    lag_family.add_metric([index], _number(lag.get(index)))
            yield lag_family
        drivers = probes.get(ProbeName.DRIVERS)
        if drivers is not None:
            yield from _driver_series(drivers)


def _driver_series(state: ProbeState) -> Iterator[Metric]:
    """Per-driver series, capped: the first DRIVER_LABEL_CAP names in sorted order, the rest folded."""
    up_facts: dict[str, int] = state.fact("driver_up") or {}
    launch_facts: dict[str, int] = state.fact("driver_launches") or {}
    names = sorted(set(up_facts) | set(launch_facts))
    kept = set(names[:DRIVER_LABEL_CAP])
    up = family("placeos_driver_up")
    launches = family("placeos_driver_launches_total")
    overflow_up, overflow_launches, overflow = 1, 0, False
    for name in names:
        if name in kept:
            if name in up_facts:
                up.add_metric([name], up_facts[name])
            launches.add_metric([name], launch_facts.get(name, 0))
        else:
            overflow = True
            overflow_up = min(overflow_up, up_facts.get(name, 1))
            overflow_launches += launch_facts.get(name, 0)
    if overflow:
        up.add_metric([DRIVER_OVERFLOW], overflow_up)
        launches.add_metric([DRIVER_OVERFLOW], overflow_launches)
    yield up
    yield launches


def _number(value: Any) -> float:
    """A fact as a sample value; unknown (probe failed before learning it) is NaN, not a fake 0."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    return float("nan")


class ExporterCollector(Collector):
    """The exporter's own series (on /metrics only, as blackbox does)."""

    def __init__(self, extra: Callable[[], Iterable[Metric]] | None = None) -> None:
        self.extra = extra

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        info = family("placeos_exporter_build_info")
        info.add_metric([__version__, platform.python_version()], 1)
        yield info
        if self.extra is not None:
            yield from self.extra()


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
