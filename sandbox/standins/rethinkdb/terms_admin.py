"""Handlers of the administrative terms: databases, tables and indexes (create, drop, list, config,
status, wait, sync).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from sandbox.standins.rethinkdb.datum import as_str, truthy
from sandbox.standins.rethinkdb.evaluator import Call, DbRef, Evaluator, SingleSel, _ne_if_null, term, value_type_name
from sandbox.standins.rethinkdb.protocol import NAME_CHARS, NAME_RE, SYSTEM_DB, T, fail, op_failed
from sandbox.standins.rethinkdb.storage import SYSTEM_TABLES, DataTable, DbInfo, IndexInfo, SystemTable, TableInfo

# ---- databases and tables ----


@term(T.DB)
def _db(e: Evaluator, c: Call) -> Any:
    name = as_str(e.datum_arg(c, 0))
    if not NAME_RE.match(name):
        fail(f"Database name `{name}` invalid ({NAME_CHARS}).")
    return DbRef(name)


def _db_of(e: Evaluator, c: Call, n_args_with_db: int) -> tuple[str, int]:
    """Terms like TABLE take an optional leading DB argument; else the `db` global optarg."""
    if len(c.args) >= n_args_with_db:
        v = e.arg(c, 0)
        if not isinstance(v, DbRef):
            fail(f"Expected type DATABASE but found {value_type_name(v)}:\n{e.print_val(v)}", _ne_if_null(v))
        return v.name, 1
    return e.default_db(), 0


@term(T.TABLE)
def _table(e: Evaluator, c: Call) -> Any:
    db, first = _db_of(e, c, 2)
    name = as_str(e.datum_arg(c, first))
    if not NAME_RE.match(name):
        fail(f"Table name `{name}` invalid ({NAME_CHARS}).")
    e.opt(c, "read_mode")
    return e.server.table(db, name)


@term(T.DB_LIST)
def _db_list(e: Evaluator, c: Call) -> Any:
    return e.server.db_names()


@term(T.DB_CREATE)
def _db_create(e: Evaluator, c: Call) -> Any:
    name = as_str(e.datum_arg(c, 0))
    if not NAME_RE.match(name):
        fail(f"Database name `{name}` invalid ({NAME_CHARS}).")
    store = e.server.store
    if name == SYSTEM_DB or name in store.dbs:
        op_failed(f"Database `{name}` already exists.")
    info = DbInfo(id=str(uuid.uuid4()))
    store.dbs[name] = info
    e.server.dirty = True
    return {"config_changes": [{"new_val": {"id": info.id, "name": name}, "old_val": None}], "dbs_created": 1}


@term(T.DB_DROP)
def _db_drop(e: Evaluator, c: Call) -> Any:
    name = as_str(e.datum_arg(c, 0))
    store = e.server.store
    if name == SYSTEM_DB:
        op_failed(f"Database `{name}` is special; you can't delete it.")
    info = store.dbs.get(name)
    if info is None:
        op_failed(f"Database `{name}` does not exist.")
    del store.dbs[name]
    e.server.dirty = True
    return {
        "config_changes": [{"new_val": None, "old_val": {"id": info.id, "name": name}}],
        "dbs_dropped": 1,
        "tables_dropped": len(info.tables),
    }


@term(T.TABLE_LIST)
def _table_list(e: Evaluator, c: Call) -> Any:
    db, _ = _db_of(e, c, 1)
    if db == SYSTEM_DB:
        return list(SYSTEM_TABLES)
    d = e.server.store.dbs.get(db)
    if d is None:
        op_failed(f"Database `{db}` does not exist.")
    return sorted(d.tables)


@term(T.TABLE_CREATE)
def _table_create(e: Evaluator, c: Call) -> Any:
    db, first = _db_of(e, c, 2)
    name = as_str(e.datum_arg(c, first))
    if not NAME_RE.match(name):
        fail(f"Table name `{name}` invalid ({NAME_CHARS}).")
    pk = as_str(e.opt(c, "primary_key", "id"))
    durability = e.opt(c, "durability", "hard")
    if durability not in ("hard", "soft"):
        fail(f'Durability option `{as_str(durability)}` unrecognized (options are "hard" and "soft").')
    for opt in ("shards", "replicas", "primary_replica_tag", "nonvoting_replica_tags"):
        e.opt(c, opt)
    if db == SYSTEM_DB:
        op_failed(f"Database `{db}` is special; you can't create new tables in it.")
    d = e.server.store.dbs.get(db)
    if d is None:
        op_failed(f"Database `{db}` does not exist.")
    if name in d.tables:
        op_failed(f"Table `{db}.{name}` already exists.")
    info = TableInfo(id=str(uuid.uuid4()), primary_key=pk, durability=str(durability))
    d.tables[name] = info
    e.server.dirty = True
    config = e.server.table_config(db, name, info)
    return {"config_changes": [{"new_val": config, "old_val": None}], "tables_created": 1}


@term(T.TABLE_DROP)
def _table_drop(e: Evaluator, c: Call) -> Any:
    db, first = _db_of(e, c, 2)
    name = as_str(e.datum_arg(c, first))
    if db == SYSTEM_DB:
        op_failed(f"Database `{db}` is special; you can't drop tables in it.")
    d = e.server.store.dbs.get(db)
    if d is None:
        op_failed(f"Database `{db}` does not exist.")
    info = d.tables.get(name)
    if info is None:
        op_failed(f"Table `{db}.{name}` does not exist.")
    config = e.server.table_config(db, name, info)
    del d.tables[name]
    e.server.dirty = True
    return {"config_changes": [{"new_val": None, "old_val": config}], "tables_dropped": 1}


@term(T.CONFIG)
def _config(e: Evaluator, c: Call) -> Any:
    v = e.arg(c, 0)
    if isinstance(v, DbRef):
        d = e.server.store.dbs.get(v.name)
        if d is None:
            op_failed(f"Database `{v.name}` does not exist.")
        return SingleSel(SystemTable(e.server, "db_config"), d.id, {"id": d.id, "name": v.name})
    t = e.to_table(v)
    if not isinstance(t, DataTable):
        fail(f"Database `{SYSTEM_DB}` is special; the system tables in it don't have meaningful config.")
    row = e.server.table_config(t.db, t.name, t.info)
    return SingleSel(SystemTable(e.server, "table_config"), t.info.id, row)


@term(T.STATUS)
def _status(e: Evaluator, c: Call) -> Any:
    t = e.to_table(e.arg(c, 0))
    if not isinstance(t, DataTable):
        fail(f"Database `{SYSTEM_DB}` is special; the system tables in it don't have meaningful status.")
    row = e.server.table_status(t.db, t.name, t.info)
    return SingleSel(SystemTable(e.server, "table_status"), t.info.id, row)


@term(T.WAIT)
def _wait(e: Evaluator, c: Call) -> Any:
    e.opt(c, "wait_for")
    e.opt(c, "timeout")
    if not c.args:
        fail("`wait` can only be called on a table or database.")
    v = e.arg(c, 0)
    if isinstance(v, DbRef):
        d = e.server.store.dbs.get(v.name)
        if d is None:
            op_failed(f"Database `{v.name}` does not exist.")
        return {"ready": len(d.tables)}
    e.to_table(v)
    return {"ready": 1}


@term(T.SYNC)
def _sync(e: Evaluator, c: Call) -> Any:
    e.to_table(e.arg(c, 0))
    return {"synced": 1}


# ---- indexes ----


@term(T.INDEX_CREATE)
def _index_create(e: Evaluator, c: Call) -> Any:
    t = e.to_table(e.arg(c, 0))
    name = as_str(e.datum_arg(c, 1))
    multi = truthy(e.opt(c, "multi", False))
    geo = truthy(e.opt(c, "geo", False))
    if not isinstance(t, DataTable):
        op_failed(f"Database `{SYSTEM_DB}` is special; you can't create secondary indexes on the tables in it.")
    if name == t.primary_key:
        fail(f"Index name conflict: `{name}` is the name of the primary key.")
    if name in t.info.indexes:
        op_failed(f"Index `{name}` already exists on table `{t.display}`.")
    function = c.args[2] if len(c.args) > 2 else None
    t.info.indexes[name] = IndexInfo(function, multi, geo)
    e.server.dirty = True
    return {"created": 1}


@term(T.INDEX_DROP)
def _index_drop(e: Evaluator, c: Call) -> Any:
    t = e.to_table(e.arg(c, 0))
    name = as_str(e.datum_arg(c, 1))
    if not isinstance(t, DataTable) or name not in t.info.indexes:
        op_failed(f"Index `{name}` does not exist on table `{t.display}`.")
    del t.info.indexes[name]
    e.server.dirty = True
    return {"dropped": 1}


@term(T.INDEX_LIST)
def _index_list(e: Evaluator, c: Call) -> Any:
    return sorted(e.to_table(e.arg(c, 0)).indexes())


@term(T.INDEX_STATUS, T.INDEX_WAIT)
def _index_status(e: Evaluator, c: Call) -> Any:
    t = e.to_table(e.arg(c, 0))
    wanted = [as_str(e.datum_arg(c, i)) for i in range(1, len(c.args))]
    indexes = t.indexes()
    for name in wanted:
        if name not in indexes:
            op_failed(f"Index `{name}` was not found on table `{t.display}`.")
    return [
        {
            "function": {"$reql_type$": "BINARY", "data": ""},
            "geo": indexes[n].geo,
            "index": n,
            "multi": indexes[n].multi,
            "outdated": False,
            "query": f"indexCreate({json.dumps(n)}, ...)",
            "ready": True,
        }
        for n in (wanted or sorted(indexes))
    ]
