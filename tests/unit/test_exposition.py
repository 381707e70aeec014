"""Our exposition encoder answers byte for byte what prometheus-client's would, for every Accept header.

A scraper must not be able to tell the faster encoder (exporter/exposition.py) from prometheus-client's:
compared on full snapshots of every probe with failures, NaN facts, large timestamps, histogram buckets
and label values that need escaping (driver names and the platform version come from the cluster).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry

from exporter.expose.exposition import faster
from exporter.expose.metrics import ClusterCollector, ExporterCollector
from exporter.model.vocabulary import Era, ProbeName, Reason
from exporter.probes.core_discovery import CoreFacts
from exporter.probes.drivers import DriverFacts
from exporter.probes.elasticsearch import ElasticsearchFacts
from exporter.probes.etcd import EtcdFacts
from exporter.probes.redis import RedisFacts
from exporter.probes.search_index_lag import LagFacts
from exporter.runtime.snapshot import ClusterSnapshot, ProbeResult

ACCEPTS = [
    "",
    "*/*",
    "text/plain; version=0.0.4",
    "text/plain;version=1.0.0;escaping=allow-utf-8",
    "text/plain;version=1.0.0;escaping=values",
    "text/plain;version=1.0.0;escaping=dots",  # not ours: prometheus-client's encoder
    "application/openmetrics-text",
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,text/plain;version=0.0.4;q=0.3",
    "application/openmetrics-text;version=1.0.0;escaping=underscores",
    "application/openmetrics-text;version=2.0.0",  # not ours
]
ODD = 'a"quote\\back\nslash ünï'


def busy_cluster() -> ClusterSnapshot:
    cluster = ClusterSnapshot("default", 10)
    cluster.set_era(Era.A, "detected", platform_version=f"1.2303.{ODD}")
    probes: list[ProbeName] = [p for p in ProbeName if p is not ProbeName.POSTGRES]
    cluster.set_enabled(probes)
    now = time.time()
    facts: dict[ProbeName, Any] = {
        ProbeName.ETCD: EtcdFacts(True, "3.5", "v3"),
        ProbeName.REDIS: RedisFacts(12345678, 0, 3, False),
        ProbeName.CORE_DISCOVERY: CoreFacts(2, 0),
        ProbeName.ELASTICSEARCH: ElasticsearchFacts("yellow", 1),
        ProbeName.SEARCH_INDEX_LAG: LagFacts({"sys": -3, "mod": int(1e12)}),
        ProbeName.DRIVERS: DriverFacts(1, 1, 0, {ODD: 0, "ok_driver": 1}, {ODD: 7}),
    }
    reasons = [Reason.OK, Reason.TIMEOUT, Reason.AUTH_FAILED, Reason.OK, Reason.PROTOCOL_ERROR]
    for i, probe in enumerate(probes):
        for run in range(3):
            reason = reasons[(i + run) % len(reasons)]
            duration = [0.0004, 0.2, 7.5][run]
            cluster.record(ProbeResult(probe, reason, "detail", duration, now + run, facts.get(probe)))
    return cluster


class Frozen(Collector):
    """The exporter's own families as collected once: its process_* series move between two encodings."""

    def __init__(self) -> None:
        self.families = list(ExporterCollector(revision="abc123").collect())

    def collect(self) -> Any:
        return iter(self.families)


def registry_for(cluster: ClusterSnapshot) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Frozen())
    registry.register(ClusterCollector(cluster))
    return registry


@pytest.mark.parametrize("accept", ACCEPTS)
def test_same_bytes_as_prometheus_client(accept: str) -> None:
    registry = registry_for(busy_cluster())
    encoder, _ = choose_encoder(accept)
    expected = encoder(registry)
    assert faster(encoder)(registry) == expected
    assert faster(encoder)(registry) == expected  # again, from the label-set cache


def test_the_formats_prometheus_asks_for_use_our_encoder() -> None:
    for accept in ACCEPTS[:5] + ACCEPTS[6:9]:
        encoder, _ = choose_encoder(accept)
        assert faster(encoder) is not encoder, accept
    for accept in (ACCEPTS[5], ACCEPTS[9]):
        encoder, _ = choose_encoder(accept)
        assert faster(encoder) is encoder, accept


class OddNames(Collector):
    """Series whose label name is not a legacy name: our encoder hands over to prometheus-client's."""

    def collect(self) -> list[GaugeMetricFamily]:
        g = GaugeMetricFamily("odd_series", "help", labels=["ok", "not-legacy"])
        g.add_metric(["a", "b"], 1.5)
        return [g]


@pytest.mark.parametrize("accept", ["", "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8"])
def test_what_we_do_not_reproduce_falls_back(accept: str) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(OddNames())
    encoder, _ = choose_encoder(accept)
    assert faster(encoder)(registry) == encoder(registry)
