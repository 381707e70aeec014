"""The words every layer shares: probe names, release eras, failure reasons and what each reason means.

One module owns them so that settings, probes, metrics, the diagnosis, alerts and docs all agree, and
so an error string can never leak into a label (anchors §8.3 item 8). Closed sets: a new value is
added here, once.
"""

from __future__ import annotations

from enum import StrEnum


class ProbeName(StrEnum):
    """Every probe the exporter ships (design §4); each has one file in ``exporter/probes/``."""

    ETCD = "etcd"
    RETHINKDB = "rethinkdb"
    POSTGRES = "postgres"
    REDIS = "redis"
    ELASTICSEARCH = "elasticsearch"
    API_HEALTH = "api_health"
    LOGIN = "login"
    SYSTEMS_LIST = "systems_list"
    MODULE_FUNCTIONS = "module_functions"
    EXECUTE = "execute"
    WEBSOCKET = "websocket"
    CORE_DISCOVERY = "core_discovery"
    DRIVERS = "drivers"
    TRIGGERS_HEALTH = "triggers_health"
    SEARCH_INDEX_LAG = "search_index_lag"  # beyond design §4's list: search-ingest stalls (design §3)
    BUILD_SERVICE = "build_service"  # placeos-2026 §2: drivers cannot compile
    EDGES = "edges"  # placeos-2026 §2: remote cores, an optional capability
    STATUS_DELIVERY = "status_delivery"  # placeos-2026 §2: Redis up, pub/sub deliveries lost


class Era(StrEnum):
    """PlaceOS release eras (design §2, internals §0)."""

    A = "A"  # <= 1.2303.x: etcd + RethinkDB + Redis + ES
    B = "B"  # 2.2304.0 - 2.2403.x: etcd + PostgreSQL + Redis + ES
    C = "C"  # >= 2.2404.1: PostgreSQL + Redis (discovery too) + ES
    D = "D"  # rest-api after #445 (2026-08): PostgreSQL full-text search, no ES, no search-ingest


ALL_ERAS: frozenset[Era] = frozenset(Era)


class Reason(StrEnum):
    """Why a probe's last run ended the way it did: the only values the ``reason`` label takes."""

    OK = "ok"
    PENDING = "pending"
    TIMEOUT = "timeout"
    CONNECTION_REFUSED = "connection_refused"
    DNS = "dns"
    TLS = "tls"
    AUTH_FAILED = "auth_failed"
    UNHEALTHY = "unhealthy"
    PROTOCOL_ERROR = "protocol_error"
    HTTP_4XX = "http_4xx"
    HTTP_5XX = "http_5xx"
    NOT_FOUND = "not_found"
    NO_CORE_INSTANCES = "no_core_instances"
    CORE_UNREACHABLE = "core_unreachable"
    ETCD_UNREACHABLE = "etcd_unreachable"
    REDIS_UNREACHABLE = "redis_unreachable"
    DATABASE_UNREACHABLE = "database_unreachable"
    DRIVER_ERROR = "driver_error"
    NOT_LOADED = "not_loaded"
    ACCESS_DENIED = "access_denied"


REASON_MEANING: dict[Reason, str] = {
    Reason.OK: "the last run succeeded",
    Reason.PENDING: "enabled, not run yet",
    Reason.TIMEOUT: "no answer before the probe's deadline (hung or slow backend)",
    Reason.CONNECTION_REFUSED: "nothing listens, or the connection was refused or reset",
    Reason.DNS: "the host name does not resolve",
    Reason.TLS: "TLS handshake or certificate verification failed",
    Reason.AUTH_FAILED: "credentials rejected (for login: may also be the database down, internals §5.2)",
    Reason.UNHEALTHY: "the backend answered and reports itself unhealthy (no leader, alarms, red)",
    Reason.PROTOCOL_ERROR: "the answer is not the expected protocol (garbage, oversized or malformed)",
    Reason.HTTP_4XX: "an unexpected 4xx status",
    Reason.HTTP_5XX: "a 5xx status",
    Reason.NOT_FOUND: "the configured system, module, function or route does not exist",
    Reason.NO_CORE_INSTANCES: "'No registered core instances' / 'no core instances registered!'",
    Reason.CORE_UNREACHABLE: "a registered core does not answer (stale registration, IO error)",
    Reason.ETCD_UNREACHABLE: "the API cannot reach etcd ('unable to connect to etcd', an error naming the etcd host)",
    Reason.REDIS_UNREACHABLE: "the API cannot reach Redis (its error names the Redis host)",
    Reason.DATABASE_UNREACHABLE: "the API cannot reach its database (its error names the PostgreSQL/RethinkDB host)",
    Reason.DRIVER_ERROR: "the execute reached core and failed in the driver or module",
    Reason.NOT_LOADED: "modules a system expects are loaded on no core (core restarted, missing, or no binary)",
    Reason.ACCESS_DENIED: "authenticated, but not allowed (scopes, permissions)",
}

FAILURE_REASONS: tuple[Reason, ...] = tuple(r for r in Reason if r not in (Reason.OK, Reason.PENDING))
CREDENTIAL_REASONS: frozenset[Reason] = frozenset({Reason.AUTH_FAILED, Reason.ACCESS_DENIED})
