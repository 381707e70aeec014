"""Handlers of the terms that write rows (INSERT, UPDATE, REPLACE, DELETE), plus ASC/DESC."""

from __future__ import annotations

import uuid
from typing import Any

from sandbox.standins.rethinkdb.datum import as_str, check_pkey, merge_objects, pprint, type_name
from sandbox.standins.rethinkdb.evaluator import Call, Evaluator, term
from sandbox.standins.rethinkdb.protocol import ErrorType, ReqlFailure, ResponseType, T, fail

# ---- writes ----


@term(T.INSERT)
def _insert(e: Evaluator, c: Call) -> Any:
    t = e.to_table(e.arg(c, 0))
    payload = e.arg(c, 1)
    docs = e.to_seq(payload).rows if e.is_seq(payload) else [e.to_datum(payload)]
    conflict = e.opt(c, "conflict", "error")
    if conflict not in ("error", "replace", "update"):
        fail(f'Conflict option `{as_str(conflict)}` unrecognized (options are "error", "replace" and "update").')
    e.check_durability(c)
    changes, always = e.return_changes(c)
    result = e.write_result()
    generated: list[str] = []
    pk = t.primary_key
    for doc in docs:
        if type_name(doc) != "OBJECT":
            result["errors"] += 1
            result.setdefault("first_error", f"Expected type OBJECT but found {type_name(doc)}.")
            continue
        new = dict(doc)
        if pk not in new:
            new[pk] = str(uuid.uuid4())
            generated.append(new[pk])
        try:
            check_pkey(new[pk])
        except ReqlFailure as ex:
            result["errors"] += 1
            result.setdefault("first_error", ex.message)
            if changes is not None and always:
                changes.append({"error": ex.message, "new_val": None, "old_val": None})
            continue
        old = t.get(new[pk])
        if old is not None:
            if conflict == "error":
                msg = f"Duplicate primary key `{pk}`:\n{pprint(old)}\n{pprint(new)}"
                result["errors"] += 1
                result.setdefault("first_error", msg)
                if changes is not None and always:
                    changes.append({"error": msg, "new_val": old, "old_val": old})
                continue
            if conflict == "update":
                new = merge_objects(old, new)
        e.apply_write(t, new[pk], old, new, result, changes, always)
    if generated:
        result["generated_keys"] = generated
    if changes is not None:
        result["changes"] = changes
    return result


def _modify(e: Evaluator, c: Call, replace: bool) -> Any:
    target = e.arg(c, 0)
    table, pairs = e.selection_rows(target)
    e.opt(c, "non_atomic")
    e.check_durability(c)
    changes, always = e.return_changes(c)
    fn = e.make_func(c, 1)
    result = e.write_result()
    for key, old in pairs:
        if old is None and not replace:
            result["skipped"] += 1
            continue
        try:
            value = e.to_datum(fn([old]))
            if replace:
                new = value
            else:
                if value is None:
                    new = old
                else:
                    if type_name(value) != "OBJECT":
                        fail(f"Inserted value must be an OBJECT (got {type_name(value)}):\n{pprint(value)}")
                    new = merge_objects(old, value)
        except ReqlFailure as ex:
            if ex.response_type != ResponseType.RUNTIME_ERROR or ex.error_type == ErrorType.USER:
                raise
            result["errors"] += 1
            result.setdefault("first_error", ex.message)
            continue
        e.apply_write(table, key, old, new, result, changes, always)
    if changes is not None:
        result["changes"] = changes
    return result


@term(T.UPDATE)
def _update(e: Evaluator, c: Call) -> Any:
    return _modify(e, c, replace=False)


@term(T.REPLACE)
def _replace(e: Evaluator, c: Call) -> Any:
    return _modify(e, c, replace=True)


@term(T.DELETE)
def _delete(e: Evaluator, c: Call) -> Any:
    table, pairs = e.selection_rows(e.arg(c, 0))
    e.check_durability(c)
    changes, always = e.return_changes(c)
    result = e.write_result()
    for key, old in pairs:
        e.apply_write(table, key, old, None, result, changes, always)
    if changes is not None:
        result["changes"] = changes
    return result


# ASC/DESC are read by ORDER_BY; on their own they evaluate to their argument (sort.cc).
@term(T.ASC, T.DESC)
def _asc_desc(e: Evaluator, c: Call) -> Any:
    return e.arg(c, 0)
