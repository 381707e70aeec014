"""The probe registry: one map from probe name to probe function (like blackbox's ``Probers``).

Adding a probe is adding a module and an entry here. ``ERAS`` says in which release eras a probe
applies (design §2); ``enabled_probes`` applies that, the backend's ``enabled`` switch and whether
what the probe needs is configured.
"""

from __future__ import annotations

from exporter.probes import cores, elasticsearch, etcd, postgres, redis, rethinkdb, search_lag
from exporter.probes.base import Probe
from exporter.settings import ClusterConfig, Era, ProbeName

PROBES: dict[ProbeName, Probe] = {
    ProbeName.ETCD: etcd.probe,
    ProbeName.RETHINKDB: rethinkdb.probe,
    ProbeName.POSTGRES: postgres.probe,
    ProbeName.REDIS: redis.probe,
    ProbeName.ELASTICSEARCH: elasticsearch.probe,
    ProbeName.CORE_DISCOVERY: cores.probe,
    ProbeName.SEARCH_INDEX_LAG: search_lag.probe,
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
        if era in ERAS.get(name, ALL_ERAS):
            out.append(name)
    # A probe whose prerequisites are off is off (unless switched on explicitly above).
    return [
        n
        for n in out
        if all(dep in out for dep in NEEDS.get(n, ())) or (cluster.probes.get(n) and cluster.probes[n].enabled)
    ]
