"""The probe registry: the tuple of every probe's spec row, in the order the docs list them.

Adding a probe is adding its file (named after it, ending with its ``SPEC``) and one entry here;
everything else (enabled probes, schedules, the metric contract, the docs) is derived from the rows.
Its symptom row in ``model/failure_model.py`` says what its failure means (a test checks both exist).
"""

from __future__ import annotations

from collections.abc import Sequence

from exporter.model.vocabulary import Era
from exporter.probes import (
    api_health,
    core_discovery,
    drivers,
    elasticsearch,
    etcd,
    execute,
    login,
    module_functions,
    postgres,
    redis,
    rethinkdb,
    search_index_lag,
    systems_list,
    triggers_health,
    websocket,
)
from exporter.probes.base import ProbeSpec
from exporter.settings import ClusterConfig

REGISTRY: tuple[ProbeSpec, ...] = (
    etcd.SPEC,
    rethinkdb.SPEC,
    postgres.SPEC,
    redis.SPEC,
    elasticsearch.SPEC,
    api_health.SPEC,
    login.SPEC,
    systems_list.SPEC,
    module_functions.SPEC,
    execute.SPEC,
    websocket.SPEC,
    core_discovery.SPEC,
    drivers.SPEC,
    triggers_health.SPEC,
    search_index_lag.SPEC,
)


def spec_of(name: str, registry: Sequence[ProbeSpec] = REGISTRY) -> ProbeSpec:
    return next(s for s in registry if s.name == name)


def enabled_probes(cluster: ClusterConfig, era: Era, registry: Sequence[ProbeSpec] = REGISTRY) -> list[str]:
    """The probes to run for a cluster in an era, in the registry's order.

    A per-probe ``enabled`` wins; then the backend section's ``enabled`` switch; then the era and what
    the probe needs configured. A probe whose prerequisite probes are off is off, unless switched on.
    """
    chosen: dict[str, bool] = {}  # name -> switched on explicitly
    for spec in registry:
        tuning = cluster.probes.get(spec.name)  # type: ignore[call-overload]
        switch = getattr(cluster, spec.section).enabled if spec.section else None
        if tuning is not None and tuning.enabled is not None:
            if tuning.enabled:
                chosen[spec.name] = True
        elif switch is not None:
            if switch:
                chosen[spec.name] = False
        elif era in spec.eras and spec.enabled_by(cluster):
            chosen[spec.name] = False
    return [
        name
        for name, explicit in chosen.items()
        if explicit or all(dep in chosen for dep in spec_of(name, registry).needs_probes)
    ]
