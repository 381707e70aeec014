"""The probe registry: one map from probe name to probe function (like blackbox's ``Probers``).

Adding a probe is adding a module and an entry here. ``ERAS`` says in which release eras a probe
applies (design §2); ``enabled_probes`` applies that, the backend's ``enabled`` switch and whether
what the probe needs is configured.
"""

from __future__ import annotations

from collections.abc import Callable

from exporter.probes import (
    api,
    cores,
    drivers,
    elasticsearch,
    etcd,
    execute,
    postgres,
    redis,
    rethinkdb,
    search_lag,
    websocket,
)
from exporter.probes.base import Probe
from exporter.settings import ClusterConfig, Era, ProbeName

PROBES: dict[ProbeName, Probe] = {
    ProbeName.ETCD: etcd.probe,
    ProbeName.RETHINKDB: rethinkdb.probe,
    ProbeName.POSTGRES: postgres.probe,
    ProbeName.REDIS: redis.probe,
    ProbeName.ELASTICSEARCH: elasticsearch.probe,
    ProbeName.API_HEALTH: api.api_health,
    ProbeName.LOGIN: api.login,
    ProbeName.SYSTEMS_LIST: api.systems_list,
    ProbeName.MODULE_FUNCTIONS: api.module_functions,
    ProbeName.EXECUTE: execute.probe,
    ProbeName.WEBSOCKET: websocket.probe,
    ProbeName.CORE_DISCOVERY: cores.probe,
    ProbeName.DRIVERS: drivers.probe,
    ProbeName.TRIGGERS_HEALTH: api.triggers_health,
    ProbeName.SEARCH_INDEX_LAG: search_lag.probe,
}


def _api(c: ClusterConfig) -> bool:
    return bool(c.api.url)


def _login(c: ClusterConfig) -> bool:
    return _api(c) and api.has_credentials(c.api)


def _module(c: ClusterConfig) -> bool:
    return _login(c) and bool(c.api.system_id and c.api.module)


# What a probe needs configured; without it the probe is off (placeos_probe_enabled 0), so an
# unconfigured probe never reads as an outage.
REQUIRES: dict[ProbeName, Callable[[ClusterConfig], bool]] = {
    ProbeName.API_HEALTH: _api,
    ProbeName.LOGIN: _login,
    ProbeName.SYSTEMS_LIST: _login,
    ProbeName.MODULE_FUNCTIONS: _module,
    ProbeName.EXECUTE: lambda c: _module(c) and bool(c.api.function),
    ProbeName.WEBSOCKET: _module,
    ProbeName.DRIVERS: _login,
    ProbeName.TRIGGERS_HEALTH: lambda c: bool(c.api.url or c.api.triggers_url),
}

ALL_ERAS = frozenset(Era)
ERAS: dict[ProbeName, frozenset[Era]] = {
    ProbeName.ETCD: frozenset({Era.A, Era.B}),
    ProbeName.RETHINKDB: frozenset({Era.A}),
    ProbeName.POSTGRES: frozenset({Era.B, Era.C}),
}

# Probes that need more than one backend: on only when all of them are.
NEEDS: dict[ProbeName, tuple[ProbeName, ...]] = {
    ProbeName.SEARCH_INDEX_LAG: (ProbeName.ELASTICSEARCH,),
}

# Backend probes switched by their section's ``enabled`` (None = by era).
BACKEND_SECTION: dict[ProbeName, str] = {
    ProbeName.ETCD: "etcd",
    ProbeName.REDIS: "redis",
    ProbeName.RETHINKDB: "rethinkdb",
    ProbeName.POSTGRES: "postgres",
    ProbeName.ELASTICSEARCH: "elasticsearch",
}


def enabled_probes(cluster: ClusterConfig, era: Era) -> list[ProbeName]:
    """The probes to run for a cluster in an era, in the registry's order."""
    out: list[ProbeName] = []
    for name in PROBES:
        tuning = cluster.probes.get(name)
        if tuning is not None and tuning.enabled is not None:
            if tuning.enabled:
                out.append(name)
            continue
        section = BACKEND_SECTION.get(name)
        switch = getattr(cluster, section).enabled if section else None
        if switch is not None:
            if switch:
                out.append(name)
            continue
        if era in ERAS.get(name, ALL_ERAS) and _requirement_met(name, cluster):
            out.append(name)
    # A probe whose prerequisites are off is off (unless switched on explicitly above).
    return [
        n
        for n in out
        if all(dep in out for dep in NEEDS.get(n, ())) or (cluster.probes.get(n) and cluster.probes[n].enabled)
    ]


def _requirement_met(name: ProbeName, cluster: ClusterConfig) -> bool:
    check = REQUIRES.get(name)
    return check is None or check(cluster)
