"""Handlers of the terms that touch no table: data, variables and functions, control flow, comparison,
arithmetic and time.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections.abc import Callable
from typing import Any

from sandbox.standins.rethinkdb.datum import (
    as_int,
    as_str,
    check_type,
    compare,
    is_num,
    make_time,
    norm_num,
    pprint,
    truthy,
    type_name,
)
from sandbox.standins.rethinkdb.evaluator import _NOTHING, Call, Evaluator, Func, Seq, term
from sandbox.standins.rethinkdb.protocol import ErrorType, Frame, ReqlFailure, T, fail
from sandbox.standins.rethinkdb.storage import Table

# ---- data terms ----


@term(T.DATUM)
def _datum(e: Evaluator, c: Call) -> Any:
    return c.args[0] if c.args else None


@term(T.MAKE_ARRAY)
def _make_array(e: Evaluator, c: Call) -> Any:
    return [e.datum_arg(c, i) for i in range(len(c.args))]


@term(T.MAKE_OBJ)
def _make_obj(e: Evaluator, c: Call) -> Any:
    return {k: e.to_datum(e.ev(v, c.scope, (*c.bt, k))) for k, v in c.optargs.items()}


@term(T.VAR)
def _var(e: Evaluator, c: Call) -> Any:
    var_id = c.args[0]
    if not is_num(var_id) or int(var_id) not in c.scope.vars:
        fail(f"Variable name not found: {pprint(var_id)}.")
    return c.scope.vars[int(var_id)]


@term(T.IMPLICIT_VAR)
def _implicit_var(e: Evaluator, c: Call) -> Any:
    if c.scope.implicit is _NOTHING:
        fail("r.row is not defined in this context.")
    return c.scope.implicit


@term(T.FUNC)
def _func(e: Evaluator, c: Call) -> Any:
    params = e.to_datum(e.ev(c.args[0], c.scope, (*c.bt, 0)))
    if not isinstance(params, list) or not all(is_num(p) for p in params):
        fail("Expected type ARRAY of NUMBER as function parameters.")
    return Func([int(p) for p in params], c.args[1], c.scope)


@term(T.FUNCALL)
def _funcall(e: Evaluator, c: Call) -> Any:
    fn = e.arg(c, 0)
    args = [e.datum_arg(c, i) for i in range(1, len(c.args))]
    return e.call(fn, args, (*c.bt, 0))


class EmptyUserError(ReqlFailure):
    """`r.error()` without a message: inside a default it re-raises the original error."""


@term(T.ERROR)
def _error(e: Evaluator, c: Call) -> Any:
    if not c.args:
        raise EmptyUserError("Empty ERROR term outside a default block.", ErrorType.USER)
    raise ReqlFailure(as_str(e.datum_arg(c, 0)), ErrorType.USER)


def _fallback(e: Evaluator, c: Call, raw: Any, frame: Frame, original: ReqlFailure | None) -> Any:
    """Evaluate a default value (a function gets the error message, or null for a null value)."""
    try:
        if isinstance(raw, list) and raw and raw[0] == T.FUNC:
            fn = e.ev(raw, c.scope, (*c.bt, frame))
            return e.call(fn, [original.message if original else None], (*c.bt, frame))
        return e.ev(raw, c.scope, (*c.bt, frame))
    except EmptyUserError:
        if original is None:
            raise
        raise original from None


@term(T.DEFAULT)
def _default(e: Evaluator, c: Call) -> Any:
    original: ReqlFailure | None = None
    try:
        v = e.arg(c, 0)
        value = e.to_datum(v) if not isinstance(v, Seq | Table) else v
        if value is not None:
            return value
    except ReqlFailure as ex:
        if ex.error_type != ErrorType.NON_EXISTENCE:
            raise
        original = ex
    return _fallback(e, c, c.args[1], 1, original)


@term(T.BRANCH)
def _branch(e: Evaluator, c: Call) -> Any:
    n = len(c.args)
    if n % 2 == 0:
        fail("Cannot call `branch` term with an even number of arguments.")
    for i in range(0, n - 1, 2):
        if truthy(e.datum_arg(c, i)):
            return e.arg(c, i + 1)
    return e.arg(c, n - 1)


@term(T.AND)
def _and(e: Evaluator, c: Call) -> Any:
    v: Any = True
    for i in range(len(c.args)):
        v = e.datum_arg(c, i)
        if not truthy(v):
            return v
    return v


@term(T.OR)
def _or(e: Evaluator, c: Call) -> Any:
    v: Any = False
    for i in range(len(c.args)):
        v = e.datum_arg(c, i)
        if truthy(v):
            return v
    return v


@term(T.NOT)
def _not(e: Evaluator, c: Call) -> Any:
    return not truthy(e.datum_arg(c, 0))


_COMPARATORS: dict[int, Callable[[int], bool]] = {
    T.EQ: lambda x: x == 0,
    T.NE: lambda x: x != 0,
    T.LT: lambda x: x < 0,
    T.LE: lambda x: x <= 0,
    T.GT: lambda x: x > 0,
    T.GE: lambda x: x >= 0,
}


@term(T.EQ, T.NE, T.LT, T.LE, T.GT, T.GE)
def _compare(e: Evaluator, c: Call) -> Any:
    values = [e.datum_arg(c, i) for i in range(len(c.args))]
    ok = _COMPARATORS[c.type]
    if c.type == T.NE:  # ne(a, b, c) is not(eq(a, b, c))
        return not all(compare(a, b) == 0 for a, b in itertools.pairwise(values))
    return all(ok(compare(a, b)) for a, b in itertools.pairwise(values))


def _num(v: Any) -> int | float:
    check_type(v, "NUMBER")
    return v  # type: ignore[no-any-return]


@term(T.ADD)
def _add(e: Evaluator, c: Call) -> Any:
    values = [e.datum_arg(c, i) for i in range(len(c.args))]
    acc = values[0]
    for v in values[1:]:
        if isinstance(acc, str):
            acc = acc + as_str(v)
        elif isinstance(acc, list):
            check_type(v, "ARRAY")
            acc = acc + v
        elif type_name(acc) == "PTYPE<TIME>":
            acc = make_time(float(acc["epoch_time"]) + _num(v), acc.get("timezone", "+00:00"))
        else:
            acc = norm_num(_num(acc) + _num(v))
    if len(values) == 1 and not isinstance(acc, str | list | dict):
        _num(acc)
    return acc


@term(T.SUB, T.MUL, T.DIV, T.MOD)
def _arith(e: Evaluator, c: Call) -> Any:
    values = [e.datum_arg(c, i) for i in range(len(c.args))]
    if c.type == T.SUB and type_name(values[0]) == "PTYPE<TIME>":
        t0 = float(values[0]["epoch_time"])
        if len(values) == 2 and type_name(values[1]) == "PTYPE<TIME>":
            return norm_num(t0 - float(values[1]["epoch_time"]))
        return make_time(t0 - sum(_num(v) for v in values[1:]), values[0].get("timezone", "+00:00"))
    acc: int | float = _num(values[0])
    for v in values[1:]:
        n = _num(v)
        if c.type == T.SUB:
            acc = acc - n
        elif c.type == T.MUL:
            acc = acc * n
        elif c.type == T.DIV:
            if n == 0:
                fail("Cannot divide by zero.")
            acc = acc / n
        else:
            a, b = as_int(acc), as_int(n)
            if b == 0:
                fail("Cannot take a number modulo 0.")
            acc = math.fmod(a, b)
        acc = norm_num(acc)
    return acc


# ---- time ----


@term(T.NOW)
def _now(e: Evaluator, c: Call) -> Any:
    return e.now()


@term(T.EPOCH_TIME)
def _epoch_time(e: Evaluator, c: Call) -> Any:
    return make_time(float(_num(e.datum_arg(c, 0))))


def _as_time(v: Any) -> dict[str, Any]:
    check_type(v, "PTYPE<TIME>")
    return dict(v)


@term(T.TO_EPOCH_TIME)
def _to_epoch_time(e: Evaluator, c: Call) -> Any:
    return _as_time(e.datum_arg(c, 0))["epoch_time"]


@term(T.ISO8601)
def _iso8601(e: Evaluator, c: Call) -> Any:
    text = as_str(e.datum_arg(c, 0))
    default_tz = e.opt(c, "default_timezone")
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        fail(f"Invalid date string `{text}`.")
    if parsed.tzinfo is None:
        if default_tz is None:
            fail("ISO 8601 string has no time zone, and no default time zone was provided.")
        sign = -1 if as_str(default_tz).startswith("-") else 1
        hh, _, mm = as_str(default_tz).lstrip("+-").partition(":")
        offset = dt.timedelta(hours=int(hh or 0), minutes=int(mm or 0)) * sign
        parsed = parsed.replace(tzinfo=dt.timezone(offset))
    off = parsed.utcoffset() or dt.timedelta(0)
    minutes = int(off.total_seconds() // 60)
    tz = f"{'-' if minutes < 0 else '+'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    return make_time(parsed.timestamp(), tz)


@term(T.TO_ISO8601)
def _to_iso8601(e: Evaluator, c: Call) -> Any:
    t = _as_time(e.datum_arg(c, 0))
    tz = str(t.get("timezone", "+00:00"))
    sign = -1 if tz.startswith("-") else 1
    hh, _, mm = tz.lstrip("+-").partition(":")
    zone = dt.timezone(dt.timedelta(hours=int(hh or 0), minutes=int(mm or 0)) * sign)
    stamp = dt.datetime.fromtimestamp(float(t["epoch_time"]), zone)
    return stamp.isoformat(timespec="milliseconds")
