"""The shape of one metric family of the contract (design §4), declared as data (redis_exporter style).

The exporter's own families, the probe and diagnosis families and each probe's own rows (declared in
the probe's file) are all ``MetricSpec``s; ``expose.metrics.contract()`` gathers them and
docs/metrics.md is generated from that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class MetricSpec:
    """One metric family: name, type, help, label names and the closed value set of each label."""

    name: str
    type: Literal["gauge", "counter", "histogram"]
    help: str
    labels: tuple[str, ...] = ()
    values: dict[str, tuple[str, ...]] = field(default_factory=dict, hash=False)
    scope: Literal["cluster", "exporter"] = "cluster"  # exporter: on /metrics only
