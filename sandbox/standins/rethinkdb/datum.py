"""Datums: JSON values with ReQL's typing, ordering and printing (datum.cc), shared by the storage,
the evaluator and the wire encoding.
"""

from __future__ import annotations

import json
import math
from typing import Any, NoReturn

from sandbox.standins.rethinkdb.protocol import MAX_PRIMARY_KEY_CHARS, ErrorType, fail

# --------------------------------------------------------------------------------------------------
# Datums: JSON values with ReQL's typing, ordering and printing
# --------------------------------------------------------------------------------------------------

MAX_DBL_INT = 2**53


def is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def norm_num(v: float) -> int | float:
    """ReQL numbers are doubles printed without a fraction when integral, like rapidjson does."""
    if isinstance(v, float):
        if not math.isfinite(v):
            fail(f"Non-finite number: {v}")
        if v.is_integer() and abs(v) <= MAX_DBL_INT:
            return int(v)
    return v


def _parse_float(s: str) -> int | float:
    f = float(s)
    if not math.isfinite(f):  # rapidjson: kParseErrorNumberTooBig
        raise ValueError(f"number too big: {s}")
    return norm_num(f)


def _parse_int(s: str) -> int | float:
    n = int(s)
    return float(n) if abs(n) > MAX_DBL_INT else n


def _reject_constant(s: str) -> NoReturn:
    raise ValueError(f"non-finite number {s}")


def load_json(text: str | bytes) -> Any:
    """Parse client JSON the way the server's rapidjson does: no NaN/Infinity."""
    return json.loads(text, parse_float=_parse_float, parse_int=_parse_int, parse_constant=_reject_constant)


def dump_json(v: Any) -> str:
    """Compact, key-sorted JSON: a datum as the server's rapidjson Writer emits it."""
    return json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def pprint(v: Any) -> str:
    """datum_t::print(): rapidjson PrettyWriter, tab indent, and (RethinkDB patch) `:\\t`."""
    return json.dumps(v, sort_keys=True, indent="\t", separators=(",", ":\t"), ensure_ascii=False)


def trunc_print(v: Any) -> str:
    s = pprint(v)
    return s if len(s) <= 300 else s[:297] + "..."


def type_name(v: Any) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "BOOL"
    if is_num(v):
        return "NUMBER"
    if isinstance(v, str):
        return "STRING"
    if isinstance(v, list):
        return "ARRAY"
    if isinstance(v, dict):
        rt = v.get("$reql_type$")
        return f"PTYPE<{rt}>" if isinstance(rt, str) else "OBJECT"
    return "OBJECT"


def truthy(v: Any) -> bool:
    """datum_t::as_bool(): everything but `false` and `null` is true."""
    return not (v is None or v is False)


def compare(a: Any, b: Any) -> int:
    """ReQL ordering (datum_t::cmp): by type name first, then by value."""
    ta, tb = type_name(a), type_name(b)
    if ta != tb:
        return -1 if ta < tb else 1
    if ta == "NUMBER" or ta == "STRING":
        return int(a > b) - int(a < b)
    if ta == "BOOL":
        return int(a) - int(b)
    if ta == "NULL":
        return 0
    if ta == "ARRAY":
        for x, y in zip(a, b, strict=False):
            c = compare(x, y)
            if c:
                return c
        return (len(a) > len(b)) - (len(a) < len(b))
    if ta == "PTYPE<TIME>":
        return compare(a.get("epoch_time"), b.get("epoch_time"))
    ia, ib = sorted(a.items()), sorted(b.items())
    for (ka, va), (kb, vb) in zip(ia, ib, strict=False):
        if ka != kb:
            return -1 if ka < kb else 1
        c = compare(va, vb)
        if c:
            return c
    return (len(ia) > len(ib)) - (len(ia) < len(ib))


def equal(a: Any, b: Any) -> bool:
    return compare(a, b) == 0


class _Key:
    """Sort key wrapper so `sorted` uses ReQL ordering."""

    __slots__ = ("v",)

    def __init__(self, v: Any) -> None:
        self.v = v

    def __lt__(self, other: _Key) -> bool:
        return compare(self.v, other.v) < 0

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Key) and compare(self.v, other.v) == 0

    __hash__ = None  # type: ignore[assignment]


def check_type(v: Any, wanted: str) -> None:
    """datum_t::check_type(): a NULL where something else was wanted is a NON_EXISTENCE error."""
    got = type_name(v)
    if got != wanted:
        fail(
            f"Expected type {wanted} but found {got}.",
            ErrorType.NON_EXISTENCE if v is None else ErrorType.QUERY_LOGIC,
        )


def as_str(v: Any) -> str:
    check_type(v, "STRING")
    return str(v)


def as_int(v: Any) -> int:
    check_type(v, "NUMBER")
    if isinstance(v, float):
        if not v.is_integer():
            fail(f"Number not an integer: {v!r}")
        return int(v)
    return int(v)


def as_obj(v: Any) -> dict[str, Any]:
    check_type(v, "OBJECT")
    return dict(v)


def key_str(pk: Any) -> str:
    """The identity of a primary key value (1 and 1.0 are the same key; true and 1 are not)."""
    return dump_json(pk)


def check_pkey(pk: Any) -> None:
    """datum_t::print_primary(): key types and the 127-character limit."""
    t = type_name(pk)
    if t in ("NULL", "OBJECT"):
        fail(
            "Primary keys must be either a number, string, bool, pseudotype or array "
            f"(got type {t}):\n{trunc_print(pk)}",
            ErrorType.NON_EXISTENCE if pk is None else ErrorType.QUERY_LOGIC,
        )
    if isinstance(pk, str) and len(pk.encode()) > MAX_PRIMARY_KEY_CHARS:
        fail(f"Primary key too long (max {MAX_PRIMARY_KEY_CHARS} characters): {pprint(pk)}")


def make_time(epoch: float, tz: str = "+00:00") -> dict[str, Any]:
    """The TIME pseudo-type; epoch times carry millisecond precision like pseudo_time.cc."""
    return {"$reql_type$": "TIME", "epoch_time": norm_num(round(epoch, 3)), "timezone": tz}


def merge_objects(base: Any, patch: Any) -> Any:
    """MERGE/UPDATE semantics: objects merge recursively, anything else replaces."""
    if isinstance(base, dict) and isinstance(patch, dict) and "$reql_type$" not in patch:
        out = dict(base)
        for k, v in patch.items():
            out[k] = merge_objects(out[k], v) if k in out else v
        return out
    return patch
