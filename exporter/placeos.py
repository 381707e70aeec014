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

# PlaceOS's own database health checks (internals §2.1, §2.2).
POSTGRES_HEALTH_QUERY = "select datname from pg_stat_activity where datname is not null"
RETHINKDB_HEALTH_DB = "rethinkdb"
RETHINKDB_HEALTH_TABLE = "server_status"
