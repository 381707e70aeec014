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
    build_service,
    core_discovery,
    drivers,
    edges,
    elasticsearch,
    etcd,
    execute,
    login,
    module_functions,
    postgres,
    redis,
    rethinkdb,
    search_index_lag,
    status_delivery,
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
    build_service.SPEC,
    edges.SPEC,
    status_delivery.SPEC,
)


def spec_of(name: str, registry: Sequence[ProbeSpec] = REGISTRY) -> ProbeSpec:
    return next(s for s in registry if s.name == name)


def probe_plan(cluster: ClusterConfig, era: Era, registry: Sequence[ProbeSpec] = REGISTRY) -> dict[str, str]:
    """Every probe of the registry -> "" if it runs for this cluster in this era, else why not (one line).

    A per-probe ``enabled`` wins; then a backend section's ``enabled``; otherwise a probe runs in its eras
    where what it probes is configured (a backend section set explicitly, or what ``enabled_by`` needs),
    so nothing is ever probed at a default address. A probe whose prerequisite probes are off is off.
    """
    plan: dict[str, str] = {}
    explicit: set[str] = set()
    for spec in registry:
        tuning = cluster.probes.get(spec.name)  # type: ignore[call-overload]
        section = getattr(cluster, spec.section) if spec.section else None
        switch = getattr(section, "enabled", None)
        if tuning is not None and tuning.enabled is not None:
            plan[spec.name] = "" if tuning.enabled else f"switched off (probes.{spec.name}.enabled)"
            explicit.add(spec.name)
        elif switch is False:
            plan[spec.name] = f"switched off ({spec.section}.enabled)"
        elif era not in spec.eras and switch is not True:
            plan[spec.name] = f"not part of era {era}"
        elif (section is not None and not section.probed) or not spec.enabled_by(cluster, era):
            plan[spec.name] = f"not configured: needs {spec.needs}"
        else:
            plan[spec.name] = ""
    for spec in registry:
        missing = [dep for dep in spec.needs_probes if plan.get(dep, "x")]
        if not plan[spec.name] and spec.name not in explicit and missing:
            plan[spec.name] = f"needs the {', '.join(missing)} probe"
    return plan


def enabled_probes(cluster: ClusterConfig, era: Era, registry: Sequence[ProbeSpec] = REGISTRY) -> list[str]:
    """The probes to run for a cluster in an era, in the registry's order."""
    return [name for name, why_not in probe_plan(cluster, era, registry).items() if not why_not]
