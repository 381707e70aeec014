"""One START query from parsed JSON to the response bytes in json.cc's format. Importing it registers
every term handler.
"""

from __future__ import annotations

import time
from typing import Any

# Importing the terms* modules registers their handlers (evaluator.term) for run_start.
from sandbox.standins.rethinkdb import terms, terms_admin, terms_reads, terms_writes  # noqa: F401
from sandbox.standins.rethinkdb.datum import dump_json, is_num
from sandbox.standins.rethinkdb.evaluator import DbRef, Evaluator, Func, Scope, Seq, validate
from sandbox.standins.rethinkdb.protocol import ErrorType, Frame, QueryType, ReqlFailure, ResponseType, T
from sandbox.standins.rethinkdb.storage import ServerState, Table

# --------------------------------------------------------------------------------------------------
# Queries: responses in json.cc's format
# --------------------------------------------------------------------------------------------------


def encode_response(
    rtype: ResponseType,
    data: list[Any],
    *,
    error_type: ErrorType | None = None,
    backtrace: list[Frame] | None = None,
    profile: Any = None,
    notes: bool = False,
) -> bytes:
    """write_response_internal(): fields t, e, r, b, p, n in this order; datums key-sorted."""
    parts = [f'{{"t":{int(rtype)}']
    if rtype == ResponseType.RUNTIME_ERROR and error_type is not None:
        parts.append(f'"e":{int(error_type)}')
    parts.append('"r":' + dump_json(data))
    if backtrace is not None:
        parts.append('"b":' + dump_json(backtrace))
    if profile is not None:
        parts.append('"p":' + dump_json(profile))
    if notes:
        parts.append('"n":[]')
    return (",".join(parts) + "}").encode()


def error_response(e: ReqlFailure) -> bytes:
    return encode_response(
        e.response_type,
        [e.message],
        error_type=e.error_type,
        backtrace=e.backtrace if e.backtrace is not None else [],
    )


def static_bool(optargs: dict[str, Any], key: str) -> bool:
    """json_term_storage_t::static_optarg_as_bool(): a bool or a `[1, bool]` DATUM term."""
    v = optargs.get(key)
    if isinstance(v, bool):
        return v
    if isinstance(v, list) and len(v) == 2 and v[0] == T.DATUM and isinstance(v[1], bool):
        return v[1]
    return False


def rapidjson_typestr(v: Any) -> str:
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
    return "OBJECT"


class QueryError(Exception):
    """A query the server answers with a CLIENT_ERROR before evaluating it."""


def parse_query(query: Any) -> tuple[int, Any, dict[str, Any]]:
    """json_term_storage_t's checks on the top-level `[type, term, optargs]`."""
    if not isinstance(query, list):
        raise QueryError(f"Expected a query to be an array, but found {rapidjson_typestr(query)}.")
    if not 1 <= len(query) <= 3:
        raise QueryError(f"Expected 1 to 3 elements in the top-level query, but found {len(query)}.")
    if not is_num(query[0]):
        raise QueryError(f"Expected a query type as a number, but found {rapidjson_typestr(query[0])}.")
    qtype = int(query[0])
    if qtype not in QueryType._value2member_map_:
        raise QueryError(f"Unrecognized QueryType: {qtype}.")
    optargs: dict[str, Any] = {}
    if len(query) >= 3:
        if not isinstance(query[2], dict):
            raise QueryError(f"Expected global optargs as an object, but found {rapidjson_typestr(query[2])}.")
        optargs = query[2]
    return qtype, query[1] if len(query) >= 2 else None, optargs


def run_start(server: ServerState, term_json: Any, optargs: dict[str, Any]) -> bytes:
    """Evaluate a START query and build the response (atom, whole sequence, or error)."""
    started = time.perf_counter()
    profile = static_bool(optargs, "profile")
    try:
        if term_json is None:
            raise ReqlFailure("Expected a term in a START query.", ErrorType.QUERY_LOGIC, ResponseType.CLIENT_ERROR, [])
        validate(term_json, ())
        for name, raw in optargs.items():
            validate(raw, (name,))
        evaluator = Evaluator(server, optargs)
        value = evaluator.ev(term_json, Scope(), ())
        prof = None
        if profile:
            ms = (time.perf_counter() - started) * 1000
            prof = [{"description": "Evaluating query.", "duration(ms)": ms, "sub_tasks": []}]
        if isinstance(value, Seq | Table):
            seq = evaluator.to_seq(value)
            if seq.is_array:
                return encode_response(ResponseType.SUCCESS_ATOM, [list(seq.rows)], profile=prof)
            return encode_response(ResponseType.SUCCESS_SEQUENCE, list(seq.rows), profile=prof, notes=True)
        if isinstance(value, DbRef | Func):
            raise ReqlFailure(
                "Query result must be of type DATUM, GROUPED_DATA, or STREAM "
                f"(got {'DATABASE' if isinstance(value, DbRef) else 'FUNCTION'}).",
                backtrace=[],
            )
        return encode_response(ResponseType.SUCCESS_ATOM, [evaluator.to_datum(value)], profile=prof)
    except ReqlFailure as e:
        return error_response(e)
    finally:
        if server.dirty:
            server.dirty = False
            server.store.save()
