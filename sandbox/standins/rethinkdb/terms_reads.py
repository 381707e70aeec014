"""Handlers of the terms that read and reshape rows and values (GET, GET_ALL, FILTER, PLUCK, MERGE,
ORDER_BY, COUNT, SLICE, COERCE_TO, ...).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from sandbox.standins.rethinkdb.datum import (
    _Key,
    as_int,
    as_obj,
    as_str,
    check_pkey,
    check_type,
    compare,
    dump_json,
    equal,
    is_num,
    key_str,
    merge_objects,
    norm_num,
    pprint,
    trunc_print,
    truthy,
    type_name,
)
from sandbox.standins.rethinkdb.evaluator import (
    Call,
    Evaluator,
    Seq,
    SingleSel,
    _ne_if_null,
    split_term,
    term,
    uses_implicit,
    value_type_name,
)
from sandbox.standins.rethinkdb.protocol import UUID_NAMESPACE, ErrorType, ReqlFailure, T, fail, op_failed
from sandbox.standins.rethinkdb.storage import Table
from sandbox.standins.rethinkdb.terms import _fallback

# ---- reads ----


@term(T.GET)
def _get(e: Evaluator, c: Call) -> Any:
    t = e.to_table(e.arg(c, 0))
    key = e.datum_arg(c, 1)
    check_pkey(key)
    return SingleSel(t, key, t.get(key))


@term(T.GET_ALL)
def _get_all(e: Evaluator, c: Call) -> Any:
    t = e.to_table(e.arg(c, 0))
    keys = [e.datum_arg(c, i) for i in range(1, len(c.args))]
    index = as_str(e.opt(c, "index", t.primary_key))
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    if index == t.primary_key:
        for k in keys:
            check_pkey(k)
            row = t.get(k)
            if row is not None and key_str(k) not in seen:
                seen.add(key_str(k))
                rows.append(row)
        return Seq(rows, t, False)
    if index not in t.indexes():
        op_failed(f"Index `{index}` was not found on table `{t.display}`.")
    all_rows = t.rows()
    for k in keys:
        for row in all_rows:
            rk = key_str(row.get(t.primary_key))
            if rk in seen:
                continue
            if any(equal(v, k) for v in e.index_values(t, index, row)):
                seen.add(rk)
                rows.append(row)
    return Seq(rows, t, False)


def filter_match(predicate: dict[str, Any], value: Any) -> bool:
    """func.cc filter_match(): every predicate field must exist and match (objects recursively)."""
    if not isinstance(value, dict):
        fail(f"Cannot perform get_field on a non-object non-sequence `{trunc_print(value)}`.", _ne_if_null(value))
    for k, want in predicate.items():
        if k not in value:
            fail(f"No attribute `{k}` in object.", ErrorType.NON_EXISTENCE)
        have = value[k]
        if isinstance(want, dict) and isinstance(have, dict) and type_name(want) == "OBJECT":
            if not filter_match(want, have):
                return False
        elif not equal(have, want):
            return False
    return True


@term(T.FILTER)
def _filter(e: Evaluator, c: Call) -> Any:
    src = e.to_seq(e.arg(c, 0))
    fn = e.make_func(c, 1)
    literal = e.is_literal_predicate(c.args[1])
    has_default = "default" in c.optargs
    out = []
    for row in src.rows:
        try:
            result = e.to_datum(fn([row]))
            is_obj = literal and type_name(result) == "OBJECT"
            keep = filter_match(result, row) if is_obj else truthy(result)
        except ReqlFailure as ex:
            if ex.error_type != ErrorType.NON_EXISTENCE:
                raise
            if not has_default:
                continue
            keep = truthy(e.to_datum(_fallback(e, c, c.optargs["default"], "default", ex)))
        if keep:
            out.append(row)
    return e.like(src, out)


def _obj_or_seq(
    e: Evaluator, c: Call, name: str, on_obj: Callable[[dict[str, Any]], Any], keep_table: bool = False
) -> Any:
    """obj_or_seq_op_term_t: apply to an object, or map over a sequence."""
    v = e.arg(c, 0)
    if e.is_seq(v):
        src = e.to_seq(v)
        return e.like(src, [on_obj(as_obj(row)) for row in src.rows], keep_table)
    d = e.to_datum(v)
    if type_name(d) == "OBJECT" or (isinstance(d, dict) and name in ("merge", "pluck", "without")):
        return on_obj(d)
    fail(f"Cannot perform {name} on a non-object non-sequence `{trunc_print(d)}`.", _ne_if_null(d))


def _selector_paths(selectors: list[Any]) -> list[Any]:
    out: list[Any] = []
    for s in selectors:
        if isinstance(s, list):
            out.extend(_selector_paths(s))
        elif isinstance(s, str | dict):
            out.append(s)
        else:
            fail(f"Invalid path argument `{pprint(s)}`.")
    return out


def _pluck(obj: dict[str, Any], selectors: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for s in selectors:
        if isinstance(s, str):
            if s in obj:
                out[s] = obj[s]
        else:
            for k, sub in s.items():
                if k not in obj:
                    continue
                if sub is True:
                    out[k] = obj[k]
                elif isinstance(obj[k], dict):
                    nested = _pluck(obj[k], _selector_paths([sub]))
                    out[k] = merge_objects(out.get(k, {}), nested)
    return out


def _without(obj: dict[str, Any], selectors: list[Any]) -> dict[str, Any]:
    out = dict(obj)
    for s in selectors:
        if isinstance(s, str):
            out.pop(s, None)
        else:
            for k, sub in s.items():
                if k not in out:
                    continue
                if sub is True:
                    out.pop(k)
                elif isinstance(out[k], dict):
                    out[k] = _without(out[k], _selector_paths([sub]))
    return out


@term(T.PLUCK)
def _pluck_term(e: Evaluator, c: Call) -> Any:
    selectors = _selector_paths([e.datum_arg(c, i) for i in range(1, len(c.args))])
    return _obj_or_seq(e, c, "pluck", lambda o: _pluck(o, selectors))


@term(T.WITHOUT)
def _without_term(e: Evaluator, c: Call) -> Any:
    selectors = _selector_paths([e.datum_arg(c, i) for i in range(1, len(c.args))])
    return _obj_or_seq(e, c, "without", lambda o: _without(o, selectors))


@term(T.MERGE)
def _merge(e: Evaluator, c: Call) -> Any:
    fns = [e.make_func(c, i) for i in range(1, len(c.args))]

    def merged(obj: dict[str, Any]) -> Any:
        out: Any = obj
        for fn in fns:
            out = merge_objects(out, e.to_datum(fn([obj])))
        return out

    return _obj_or_seq(e, c, "merge", merged)


@term(T.HAS_FIELDS)
def _has_fields(e: Evaluator, c: Call) -> Any:
    fields = _selector_paths([e.datum_arg(c, i) for i in range(1, len(c.args))])

    def has(obj: Any) -> bool:
        if not isinstance(obj, dict):
            return False
        return all(
            (f in obj and obj[f] is not None)
            if isinstance(f, str)
            else all(k in obj and (sub is True or has_nested(obj[k], sub)) for k, sub in f.items())
            for f in fields
        )

    def has_nested(obj: Any, sub: Any) -> bool:
        return isinstance(obj, dict) and all(
            (s in obj) if isinstance(s, str) else has(obj) for s in _selector_paths([sub])
        )

    v = e.arg(c, 0)
    if e.is_seq(v):
        src = e.to_seq(v)
        return e.like(src, [r for r in src.rows if has(r)])
    d = e.to_datum(v)
    check_type(d, "OBJECT")
    return has(d)


def _get_field(e: Evaluator, v: Any, name: str) -> Any:
    if e.is_seq(v):
        src = e.to_seq(v)
        return e.like(src, [r[name] for r in src.rows if isinstance(r, dict) and name in r], False)
    d = e.to_datum(v)
    if type_name(d) != "OBJECT" and not (isinstance(d, dict)):
        fail(f"Cannot perform get_field on a non-object non-sequence `{trunc_print(d)}`.", _ne_if_null(d))
    if name not in d:
        fail(f"No attribute `{name}` in object:\n{pprint(d)}", ErrorType.NON_EXISTENCE)
    return d[name]


@term(T.GET_FIELD)
def _get_field_term(e: Evaluator, c: Call) -> Any:
    v = e.arg(c, 0)
    return _get_field(e, v, as_str(e.datum_arg(c, 1)))


def _nth(e: Evaluator, v: Any, n: int) -> Any:
    src = e.to_seq(v)
    rows = src.rows
    if n < -1 and not src.is_array:
        fail(f"Cannot use an index < -1 ({n}) on a stream.")
    if not -len(rows) <= n < len(rows):
        fail(f"Index out of bounds: {n}", ErrorType.NON_EXISTENCE)
    row = rows[n]
    if src.table is not None and isinstance(row, dict):
        return SingleSel(src.table, row.get(src.table.primary_key), row)
    return row


@term(T.NTH)
def _nth_term(e: Evaluator, c: Call) -> Any:
    return _nth(e, e.arg(c, 0), as_int(e.datum_arg(c, 1)))


@term(T.BRACKET)
def _bracket(e: Evaluator, c: Call) -> Any:
    v = e.arg(c, 0)
    key = e.datum_arg(c, 1)
    if isinstance(key, str):
        return _get_field(e, v, key)
    if is_num(key):
        return _nth(e, v, as_int(key))
    fail(f"Expected NUMBER or STRING as second argument to `bracket` but found {type_name(key)}.")


@term(T.CONTAINS)
def _contains(e: Evaluator, c: Call) -> Any:
    rows = e.to_seq(e.arg(c, 0)).rows
    for i in range(1, len(c.args)):
        raw = c.args[i]
        if isinstance(raw, list) and raw and raw[0] == T.FUNC:
            fn = e.make_func(c, i)
            if not any(truthy(e.to_datum(fn([r]))) for r in rows):
                return False
        else:
            want = e.datum_arg(c, i)
            if not any(equal(r, want) for r in rows):
                return False
    return True


@term(T.KEYS)
def _keys(e: Evaluator, c: Call) -> Any:
    return sorted(as_obj(e.datum_arg(c, 0)))


@term(T.VALUES)
def _values(e: Evaluator, c: Call) -> Any:
    obj = as_obj(e.datum_arg(c, 0))
    return [obj[k] for k in sorted(obj)]


@term(T.MAP)
def _map(e: Evaluator, c: Call) -> Any:
    src = e.to_seq(e.arg(c, 0))
    fn = e.make_func(c, 1)
    return e.like(src, [e.to_datum(fn([r])) for r in src.rows], False)


def _order_key(e: Evaluator, c: Call, i: int) -> tuple[bool, Callable[[Any], Any]]:
    """One ORDER_BY argument: (descending, key function); strings are field names."""
    raw = c.args[i]
    desc = False
    sub = Call(c.type, c.args, c.optargs, c.scope, c.bt)
    if isinstance(raw, list) and raw and raw[0] in (T.ASC, T.DESC):
        desc = raw[0] == T.DESC
        inner = split_term(raw)[1][0]
        sub = Call(c.type, [*c.args[:i], inner, *c.args[i + 1 :]], c.optargs, c.scope, c.bt)
    target = sub.args[i]
    if (isinstance(target, list) and target and target[0] == T.FUNC) or uses_implicit(target):
        fn = e.make_func(sub, i)
        return desc, lambda row: e.to_datum(fn([row]))
    name = as_str(e.to_datum(e.ev(target, c.scope, (*c.bt, i))))
    return desc, lambda row: _get_field(e, row, name)


def _sort(rows: list[Any], keys: list[tuple[bool, Callable[[Any], Any]]]) -> list[Any]:
    """order_util.cc lt_cmp_t: missing values (NON_EXISTENCE) sort first, then ReQL order."""

    def value(fn: Callable[[Any], Any], row: Any) -> tuple[bool, Any]:
        try:
            return True, fn(row)
        except ReqlFailure as ex:
            if ex.error_type != ErrorType.NON_EXISTENCE:
                raise
            return False, None

    decorated = [(row, [value(fn, row) for _, fn in keys]) for row in rows]

    class Cmp:
        __slots__ = ("vals",)

        def __init__(self, vals: list[tuple[bool, Any]]) -> None:
            self.vals = vals

        def __lt__(self, other: Cmp) -> bool:
            for (desc, _), (lh, lv), (rh, rv) in zip(keys, self.vals, other.vals, strict=True):
                if not lh and not rh:
                    continue
                if not lh:
                    return not desc
                if not rh:
                    return desc
                c = compare(lv, rv)
                if c:
                    return (c < 0) != desc
            return False

    decorated.sort(key=lambda p: Cmp(p[1]))
    return [row for row, _ in decorated]


@term(T.ORDER_BY)
def _order_by(e: Evaluator, c: Call) -> Any:
    v = e.arg(c, 0)
    keys = [_order_key(e, c, i) for i in range(1, len(c.args))]
    if "index" in c.optargs:
        if not isinstance(v, Table):
            fail(
                "Indexed order_by can only be performed on a TABLE or TABLE_SLICE. Make sure order_by "
                "comes before any transformations (such as map) or filters."
            )
        raw = c.optargs["index"]
        desc = isinstance(raw, list) and bool(raw) and raw[0] == T.DESC
        if isinstance(raw, list) and raw and raw[0] in (T.ASC, T.DESC):
            raw = split_term(raw)[1][0]
        index = as_str(e.to_datum(e.ev(raw, c.scope, (*c.bt, "index"))))
        pairs = [(vals[0], row) for row in v.rows() for vals in [e.index_values(v, index, row)] if vals]
        pairs.sort(key=lambda p: _Key(p[0]), reverse=desc)
        rows = [row for _, row in pairs]
        if keys:
            rows = _sort(rows, keys)
        return Seq(rows, v, False)
    if not keys:
        fail("Must specify something to order by.")
    src = e.to_seq(v)
    return Seq(_sort(src.rows, keys), src.table, True)


@term(T.DISTINCT)
def _distinct(e: Evaluator, c: Call) -> Any:
    src = e.to_seq(e.arg(c, 0))
    out: list[Any] = []
    for r in sorted(src.rows, key=_Key):
        if not out or not equal(out[-1], r):
            out.append(r)
    return out


@term(T.COUNT)
def _count(e: Evaluator, c: Call) -> Any:
    v = e.arg(c, 0)
    if not e.is_seq(v):
        d = e.to_datum(v)
        if isinstance(d, str):
            return len(d)
        if type_name(d) == "OBJECT":
            return len(d)
        fail(f"Cannot convert {type_name(d)} to SEQUENCE", _ne_if_null(d))
    rows = e.to_seq(v).rows
    if len(c.args) == 1:
        return len(rows)
    raw = c.args[1]
    if isinstance(raw, list) and raw and raw[0] == T.FUNC:
        fn = e.make_func(c, 1)
        return sum(1 for r in rows if truthy(e.to_datum(fn([r]))))
    want = e.datum_arg(c, 1)
    return sum(1 for r in rows if equal(r, want))


@term(T.IS_EMPTY)
def _is_empty(e: Evaluator, c: Call) -> Any:
    return not e.to_seq(e.arg(c, 0)).rows


@term(T.LIMIT)
def _limit(e: Evaluator, c: Call) -> Any:
    src = e.to_seq(e.arg(c, 0))
    n = as_int(e.datum_arg(c, 1))
    if n < 0:
        fail(f"LIMIT takes a non-negative argument (got {n})")
    return e.like(src, src.rows[:n])


@term(T.SKIP)
def _skip(e: Evaluator, c: Call) -> Any:
    src = e.to_seq(e.arg(c, 0))
    n = as_int(e.datum_arg(c, 1))
    if n < 0 and not src.is_array:
        fail("Cannot use a negative left index on a stream.")
    return e.like(src, src.rows[n:])


@term(T.SLICE)
def _slice(e: Evaluator, c: Call) -> Any:
    v = e.arg(c, 0)
    start = as_int(e.datum_arg(c, 1))
    end = as_int(e.datum_arg(c, 2)) if len(c.args) > 2 else None
    left = e.opt(c, "left_bound", "closed")
    right = e.opt(c, "right_bound", "open")
    for bound in (left, right):
        if bound not in ("open", "closed"):
            fail(f"Expected `open` or `closed` for bound but found `{pprint(bound)}`.")
    if left == "open":
        start += 1
    if end is not None and right == "closed":
        end = None if end == -1 else end + 1
    d = None if e.is_seq(v) else e.to_datum(v)
    if isinstance(d, str):
        return d[start:end]
    src = e.to_seq(v)
    return e.like(src, src.rows[start:end])


@term(T.UNION)
def _union(e: Evaluator, c: Call) -> Any:
    seqs = [e.to_seq(e.arg(c, i)) for i in range(len(c.args))]
    rows = [r for s in seqs for r in s.rows]
    return Seq(rows, None, all(s.is_array for s in seqs))


@term(T.APPEND, T.PREPEND)
def _append(e: Evaluator, c: Call) -> Any:
    arr = e.datum_arg(c, 0)
    check_type(arr, "ARRAY")
    item = e.datum_arg(c, 1)
    return [*arr, item] if c.type == T.APPEND else [item, *arr]


@term(T.TYPE_OF)
def _type_of(e: Evaluator, c: Call) -> Any:
    return value_type_name(e.arg(c, 0))


@term(T.COERCE_TO)
def _coerce_to(e: Evaluator, c: Call) -> Any:
    v = e.arg(c, 0)
    target = as_str(e.datum_arg(c, 1)).upper()
    if target == "ARRAY":
        if e.is_seq(v):
            return list(e.to_seq(v).rows)
        d = e.to_datum(v)
        if type_name(d) == "OBJECT":
            return [[k, d[k]] for k in sorted(d)]
    d = e.to_datum(v)
    src = type_name(d)
    if target == src:
        return d
    if target == "STRING":
        return d if isinstance(d, str) else pprint(d) if isinstance(d, dict | list) else dump_json(d)
    if target == "NUMBER" and isinstance(d, str):
        try:
            return norm_num(float(d))
        except ValueError:
            fail(f"Could not coerce `{d}` to NUMBER.")
    if target == "OBJECT" and isinstance(d, list):
        out = {}
        for pair in d:
            if not isinstance(pair, list) or len(pair) != 2 or not isinstance(pair[0], str):
                fail(f"Expected array of size 2, but got size {len(pair) if isinstance(pair, list) else 0}.")
            out[pair[0]] = pair[1]
        return out
    if target == "BOOL":
        return truthy(d)
    fail(f"Cannot coerce {src} to {target}.")


@term(T.UPCASE, T.DOWNCASE)
def _case(e: Evaluator, c: Call) -> Any:
    s = as_str(e.datum_arg(c, 0))
    return s.upper() if c.type == T.UPCASE else s.lower()


@term(T.UUID)
def _uuid(e: Evaluator, c: Call) -> Any:
    if c.args:
        return str(uuid.uuid5(UUID_NAMESPACE, as_str(e.datum_arg(c, 0))))
    return str(uuid.uuid4())
