"""Facts about PlaceOS the probes rely on, each with the section of placeos-internals.md it comes from."""

from __future__ import annotations

# Tables PlaceOS cannot serve a login or a system without (internals §2.1 table list; §2.2 same names
# in PostgreSQL). Both database probes check they exist.
KEY_TABLES: tuple[str, ...] = ("authority", "user", "api_key", "sys", "mod")

# Indices search-ingest keeps, one per mirrored table, named after the table (internals §4).
# The search-index lag label never leaves this set.
SEARCH_INDICES: tuple[str, ...] = (
    "sys", "mod", "driver", "repo", "zone", "authority", "user", "api_key", "sets", "trigger", "trig", "edge",
    "broker", "json_schema", "ldap_strat", "oauth_strat", "adfs_strat", "doorkeeper_app", "oauth_applications",
)  # fmt: skip

# Ports PlaceOS's backends listen on by default (internals §8 compose files): an address in an API error
# that matches none of the configured backends is told apart by its port.
BACKEND_PORTS: dict[int, str] = {
    2379: "etcd_unreachable",
    6379: "redis_unreachable",
    5432: "database_unreachable",
    28015: "database_unreachable",
}

# PlaceOS's own database health checks (internals §2.1, §2.2).
POSTGRES_HEALTH_QUERY = "select datname from pg_stat_activity where datname is not null"
RETHINKDB_HEALTH_DB = "rethinkdb"
RETHINKDB_HEALTH_TABLE = "server_status"

# Execute errors, matched in order against the lower-cased ``error`` + ``message`` of the rest-api's
# error body (internals §1.4, §5.3) and the WebSocket ``msg`` (§5.4). The docs' wordings are matched too
# (§9): "no core instances", "unable to connect to etcd".
EXECUTE_ERRORS: tuple[tuple[str, str], ...] = (
    ("no registered core instances", "no_core_instances"),  # RemoteDriver, §1.4
    ("no core instances registered", "no_core_instances"),  # rest-api locate_module, §1.4
    ("no core instances", "no_core_instances"),  # the troubleshooting page
    ("unable to connect to etcd", "etcd_unreachable"),  # the troubleshooting page
    ("could not connect to etcd", "etcd_unreachable"),  # crystal-etcd Etcd::ConnectionError, §1.4
    ("request to ", "driver_error"),  # core answered non-2xx: module not loaded / process down, §5.3
    ("module raised", "driver_error"),  # core 203 -> request failed, §5.3
    ("request failed", "driver_error"),
    # An IO error names what could not be reached (Crystal's "Error connecting to 'host:port'", §5.3):
    # rest_api.unreachable() tells a backend's address from a core's before these apply.
    ("etcd", "etcd_unreachable"),
    ("redis", "redis_unreachable"),
    ("postgres", "database_unreachable"),
    ("rethinkdb", "database_unreachable"),
    ("error connecting to", "core_unreachable"),  # IO error to a registered core, §5.3
    ("connection refused", "core_unreachable"),
    ("timed out", "core_unreachable"),
    ("socket", "core_unreachable"),
    ("module not found", "not_found"),
    ("system not found", "not_found"),
    ("could not find", "not_found"),
    ("access denied", "access_denied"),
    ("unknown x-api-key", "auth_failed"),
)
