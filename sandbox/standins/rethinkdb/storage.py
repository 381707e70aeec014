"""What queries read and write: the data dir's one JSON file (rewritten atomically), the stored tables
and the `rethinkdb` system tables behind one interface, and the state shared by connections.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.standins.rethinkdb.auth import Password
from sandbox.standins.rethinkdb.datum import _Key, is_num, key_str, make_time, pprint
from sandbox.standins.rethinkdb.protocol import DATA_FILE, PROCESS_VERSION, SYSTEM_DB, ErrorType, fail, op_failed

# --------------------------------------------------------------------------------------------------
# Storage: one JSON file, rewritten atomically after each write
# --------------------------------------------------------------------------------------------------


@dataclass
class IndexInfo:
    """A secondary index: the raw ReQL function term (None: the field of the same name)."""

    function: Any
    multi: bool = False
    geo: bool = False


@dataclass
class TableInfo:
    id: str
    primary_key: str = "id"
    durability: str = "hard"
    indexes: dict[str, IndexInfo] = field(default_factory=dict)
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class DbInfo:
    id: str
    tables: dict[str, TableInfo] = field(default_factory=dict)


class Store:
    """All server state, persisted as `<data_dir>/rethinkdb-standin.json`."""

    def __init__(self, data_dir: Path, admin_password: str | None, server_name: str | None) -> None:
        self.path = data_dir / DATA_FILE
        self.dbs: dict[str, DbInfo] = {}
        self.users: dict[str, Password] = {}
        self.server_id = str(uuid.uuid4())
        self.server_name = server_name or _default_server_name()
        if self.path.exists():
            self._load(json.loads(self.path.read_text(encoding="utf-8")))
            if server_name:
                self.server_name = server_name
        else:
            # A fresh real server: database `test`, user `admin` with an empty password.
            self.dbs["test"] = DbInfo(id=str(uuid.uuid4()))
            self.users["admin"] = Password.make(admin_password or "")
            self.save()

    def _load(self, doc: dict[str, Any]) -> None:
        self.server_id = doc["server"]["id"]
        self.server_name = doc["server"]["name"]
        self.users = {name: Password.from_json(p) for name, p in doc["users"].items()}
        for db_name, db in doc["dbs"].items():
            info = DbInfo(id=db["id"])
            for t_name, t in db["tables"].items():
                table = TableInfo(id=t["id"], primary_key=t["primary_key"], durability=t["durability"])
                table.indexes = {
                    name: IndexInfo(i["function"], bool(i["multi"]), bool(i["geo"])) for name, i in t["indexes"].items()
                }
                table.rows = {key_str(r[table.primary_key]): r for r in t["rows"]}
                info.tables[t_name] = table
            self.dbs[db_name] = info

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "placeos-sandbox rethinkdb stand-in v1",
            "server": {"id": self.server_id, "name": self.server_name},
            "users": {name: p.to_json() for name, p in self.users.items()},
            "dbs": {
                db_name: {
                    "id": db.id,
                    "tables": {
                        t_name: {
                            "id": t.id,
                            "primary_key": t.primary_key,
                            "durability": t.durability,
                            "indexes": {
                                n: {"function": i.function, "multi": i.multi, "geo": i.geo}
                                for n, i in t.indexes.items()
                            },
                            "rows": list(t.rows.values()),
                        }
                        for t_name, t in db.tables.items()
                    },
                }
                for db_name, db in self.dbs.items()
            },
        }

    def save(self) -> None:
        """Write-temp, fsync, rename, fsync-dir: a SIGKILL leaves the old or the new file."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        data = json.dumps(self.to_json(), ensure_ascii=False).encode()
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _default_server_name() -> str:
    """Like the server's default: the host name with disallowed characters replaced by `_`."""
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname()) or "rethinkdb_standin"


# --------------------------------------------------------------------------------------------------
# Tables: stored tables and the `rethinkdb` system tables behind one interface
# --------------------------------------------------------------------------------------------------


class Table:
    """What a TABLE term evaluates to."""

    db: str
    name: str
    primary_key: str = "id"

    def rows(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def get(self, key: Any) -> dict[str, Any] | None:
        k = key_str(key)
        for row in self.rows():
            if key_str(row.get(self.primary_key)) == k:
                return row
        return None

    def write(self, key: Any, new: dict[str, Any] | None) -> None:
        """Store `new` under `key` (None deletes); raises ReqlFailure for a rejected row."""
        fail(f"It's illegal to write to the `{self.db}.{self.name}` table.", ErrorType.OP_FAILED)

    def indexes(self) -> dict[str, IndexInfo]:
        return {}

    @property
    def display(self) -> str:
        return f"{self.db}.{self.name}"


class DataTable(Table):
    def __init__(self, server: ServerState, db: str, name: str, info: TableInfo) -> None:
        self.server = server
        self.db = db
        self.name = name
        self.info = info
        self.primary_key = info.primary_key

    def rows(self) -> list[dict[str, Any]]:
        return sorted(self.info.rows.values(), key=lambda r: _Key(r.get(self.primary_key)))

    def get(self, key: Any) -> dict[str, Any] | None:
        return self.info.rows.get(key_str(key))

    def write(self, key: Any, new: dict[str, Any] | None) -> None:
        k = key_str(key)
        if new is None:
            self.info.rows.pop(k, None)
        else:
            self.info.rows[k] = new
        self.server.dirty = True

    def indexes(self) -> dict[str, IndexInfo]:
        return self.info.indexes


class SystemTable(Table):
    """An artificial table of the `rethinkdb` database, computed from server state."""

    def __init__(self, server: ServerState, name: str) -> None:
        self.server = server
        self.db = SYSTEM_DB
        self.name = name

    def rows(self) -> list[dict[str, Any]]:
        return self.server.system_rows(self.name)

    def write(self, key: Any, new: dict[str, Any] | None) -> None:
        if self.name != "users":
            super().write(key, new)
        self.server.write_user(key, new)


SYSTEM_TABLES = (
    "cluster_config",
    "current_issues",
    "db_config",
    "jobs",
    "logs",
    "permissions",
    "server_config",
    "server_status",
    "stats",
    "table_config",
    "table_status",
    "users",
)


class ServerState:
    """The store plus process facts (start time, port, live connections) shared by connections."""

    def __init__(self, store: Store, host: str, port: int, argv: Sequence[str]) -> None:
        self.store = store
        self.host = host
        self.port = port
        self.argv = list(argv)
        self.started = time.time()
        self.connections = 0
        self.queries_total = 0
        self.dirty = False

    # ---- users (users_artificial_table_backend.cc, user.cc, password.cc) ----

    def write_user(self, key: Any, new: dict[str, Any] | None) -> None:
        if not isinstance(key, str):
            fail(f"Expected a username as the primary key, got {pprint(key)}", ErrorType.OP_FAILED)
        users = self.store.users
        if new is None:
            if key == "admin":
                fail("The user `admin` can't be deleted", ErrorType.OP_FAILED)
            if key not in users:
                fail(f"User `{key}` not found", ErrorType.OP_FAILED)
            del users[key]
            self.dirty = True
            return
        if "id" not in new:
            fail("Expected a field named `id`.", ErrorType.OP_FAILED)
        if "password" not in new:
            fail("Expected a field named `password`.", ErrorType.OP_FAILED)
        extra = sorted(set(new) - {"id", "password"})
        if extra:
            fail("Unexpected key(s) `" + "`, `".join(extra) + "`.", ErrorType.OP_FAILED)
        current = users.get(key)
        pw = new["password"]
        if isinstance(pw, dict):
            users[key] = self._password_from_object(pw)
        elif isinstance(pw, str):
            users[key] = Password.make(pw)
        elif isinstance(pw, bool):
            if pw:
                if current is None or current.empty:
                    fail(
                        "Expected an object or string to set the password, or `false` to keep it "
                        f"unset, got {pprint(pw)}.",
                        ErrorType.OP_FAILED,
                    )
            else:
                users[key] = Password.make("")
        else:
            fail(
                f"Expected an object, string or boolean for `password`, got {pprint(pw)}.",
                ErrorType.OP_FAILED,
            )
        self.dirty = True

    @staticmethod
    def _password_from_object(d: dict[str, Any]) -> Password:
        if "iterations" not in d:
            fail("Expected a field named `iterations`.", ErrorType.OP_FAILED)
        it = d["iterations"]
        if not is_num(it) or it < 1:
            fail(
                f"Expected iterations to be a number greater than zero, got {pprint(it)}.",
                ErrorType.OP_FAILED,
            )
        if "password" not in d:
            fail("Expected a field named `password`.", ErrorType.OP_FAILED)
        if not isinstance(d["password"], str):
            fail(f"Expected `password` to be a string, got {pprint(d['password'])}.", ErrorType.OP_FAILED)
        extra = sorted(set(d) - {"iterations", "password"})
        if extra:
            fail("Unexpected key(s) `" + "`, `".join(extra) + "`.", ErrorType.OP_FAILED)
        return Password.make(d["password"], int(it))

    # ---- system tables ----

    def table_config(self, db: str, name: str, info: TableInfo) -> dict[str, Any]:
        return {
            "db": db,
            "durability": info.durability,
            "id": info.id,
            "indexes": sorted(info.indexes),
            "name": name,
            "primary_key": info.primary_key,
            "shards": [
                {
                    "nonvoting_replicas": [],
                    "primary_replica": self.store.server_name,
                    "replicas": [self.store.server_name],
                }
            ],
            "write_acks": "majority",
            "write_hook": None,
        }

    def table_status(self, db: str, name: str, info: TableInfo) -> dict[str, Any]:
        server = self.store.server_name
        return {
            "db": db,
            "id": info.id,
            "name": name,
            "raft_leader": server,
            "shards": [{"primary_replicas": [server], "replicas": [{"server": server, "state": "ready"}]}],
            "status": {
                "all_replicas_ready": True,
                "ready_for_outdated_reads": True,
                "ready_for_reads": True,
                "ready_for_writes": True,
            },
        }

    def system_rows(self, name: str) -> list[dict[str, Any]]:
        store = self.store
        started = make_time(self.started)
        tables = [(db, t, info) for db, d in store.dbs.items() for t, info in d.tables.items()]
        if name == "server_status":
            return [
                {
                    "id": store.server_id,
                    "name": store.server_name,
                    "network": {
                        "canonical_addresses": [{"host": self.host, "port": 0}],
                        "cluster_port": 0,
                        "connected_to": {},
                        "hostname": socket.gethostname(),
                        "http_admin_port": "<no http admin>",
                        "reql_port": self.port,
                        "time_connected": started,
                    },
                    "process": {
                        "argv": self.argv,
                        "cache_size_mb": 100,
                        "pid": os.getpid(),
                        "time_started": started,
                        "version": PROCESS_VERSION,
                    },
                }
            ]
        if name == "server_config":
            return [{"cache_size_mb": "auto", "id": store.server_id, "name": store.server_name, "tags": ["default"]}]
        if name == "users":
            return [{"id": u, "password": not p.empty} for u, p in sorted(store.users.items())]
        if name == "permissions":
            return [
                {
                    "database": None,
                    "id": ["admin"],
                    "permissions": {"config": True, "connect": True, "read": True, "write": True},
                    "table": None,
                    "user": "admin",
                }
            ]
        if name == "db_config":
            return [{"id": d.id, "name": n} for n, d in sorted(store.dbs.items())]
        if name == "table_config":
            return [self.table_config(db, t, info) for db, t, info in tables]
        if name == "table_status":
            return [self.table_status(db, t, info) for db, t, info in tables]
        if name == "cluster_config":
            return [{"heartbeat_timeout_secs": 10, "id": "heartbeat"}]
        if name == "stats":
            engine = {
                "client_connections": self.connections,
                "clients_active": self.connections,
                "queries_per_sec": 0,
                "read_docs_per_sec": 0,
                "written_docs_per_sec": 0,
            }
            return [
                {"id": ["cluster"], "query_engine": engine},
                {
                    "id": ["server", store.server_id],
                    "query_engine": {**engine, "queries_total": self.queries_total},
                    "server": store.server_name,
                },
            ]
        return []  # current_issues, jobs, logs: a healthy single server has none worth showing

    def table(self, db: str, name: str) -> Table:
        """Resolve `r.db(db).table(name)` with the server's error texts."""
        if db == SYSTEM_DB:
            if name in SYSTEM_TABLES:
                return SystemTable(self, name)
            op_failed(f"Table `{db}.{name}` does not exist.")
        d = self.store.dbs.get(db)
        if d is None:
            op_failed(f"Database `{db}` does not exist.")
        info = d.tables.get(name)
        if info is None:
            op_failed(f"Table `{db}.{name}` does not exist.")
        return DataTable(self, db, name, info)

    def db_names(self) -> list[str]:
        return sorted([*self.store.dbs, SYSTEM_DB])
