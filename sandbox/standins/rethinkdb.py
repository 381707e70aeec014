"""A wire-faithful RethinkDB 2.4 stand-in that the official drivers talk to unchanged.

RethinkDB cannot be installed in the sandbox, yet PlaceOS era A keeps its whole configuration in it
(internals §2.1: `RETHINKDB_*` env, database `place_development`, the model tables, Authority looked
up by a secondary index on `domain`, API keys by id) and its health probe opens a connection to db
`rethinkdb` and runs `r.table("server_status").pluck("id","name")`, taking the first row. This
module is a small server that speaks the real protocol so that the PlaceOS simulator and the
exporter's probe use the official `rethinkdb` Python driver (sync and asyncio) exactly as against a
real server, and so that faults look the way they look in production.

What it reproduces (checked against rethinkdb/rethinkdb sources: src/client_protocol/server.cc,
json.cc, protocols.cc; src/clustering/administration/auth/scram_authenticator.cc, password.cc,
user.cc, users_artificial_table_backend.cc, authentication_error.hpp;
src/clustering/administration/servers/server_status.cc; src/rdb_protocol/term_walker.cc,
term_storage.cc, datum.cc, func.cc, order_util.cc, query_cache.cc; src/rapidjson/prettywriter.h;
test/rql_test/src/meta/table.yaml, mutation/insert.yaml):

* **Handshake V1_0**: 4-byte little-endian magic 0x34c2bdc3, then the server's NUL-terminated
  `{"max_protocol_version":0,"min_protocol_version":0,"server_version":...,"success":true}`
  (datum objects are key-sorted on the wire), then SCRAM-SHA-256 (RFC 5802/7677, no channel
  binding) with salted passwords stored as the server stores them (16-byte salt, 4096 PBKDF2
  iterations, only the salted hash kept). Failures are the server's
  `{"error":...,"error_code":N,"success":false}` followed by a closed connection: "Wrong password"
  (12), "Unknown user" (17, only after the client's proof, like the real server, which hands out a
  fake salt first), "Invalid encoding" (10), "Extensions not supported" (11), "Channel binding is
  not supported" (15), "Invalid username encoding" (18), "Other error" (20), codes 1-5 and 7-9 for
  malformed handshake JSON. The driver turns codes 10-20 into `ReqlAuthError`. Old magic numbers get
  the real plain-text `ERROR: ...` replies (V0_3/V0_4 auth-key handshakes are accepted).
* **Query protocol**: 8-byte token + 4-byte little-endian length + JSON `[type, term, optargs]`;
  replies `{"t":..,"e":..,"r":[..],"b":[..],"p":..,"n":[]}` with the same field order as
  json.cc. START, CONTINUE, STOP, NOREPLY_WAIT, SERVER_INFO, the `noreply`, `db` and `profile`
  global optargs. Every sequence comes back whole as SUCCESS_SEQUENCE; a later CONTINUE/STOP for
  that token gets the real CLIENT_ERROR "Token N not in stream cache." (the drivers send one
  CONTINUE after every SUCCESS_SEQUENCE, rethinkdb issue #5029, and ignore the reply).
  Unparseable JSON: "Client is buggy (failed to deserialize query)."; oversized queries: "Query
  size (N) greater than maximum (134217727)." then close.
* **Terms**: a compile pass like term_walker.cc ("Unrecognized TermType: N.", argument counts
  "Expected 2 arguments but found 1.", "Unrecognized optional argument `x`.") then evaluation of
  DATUM, MAKE_ARRAY, MAKE_OBJ, VAR, IMPLICIT_VAR, FUNC, FUNCALL, DB, TABLE, GET, GET_ALL (primary or
  secondary index, `multi`), FILTER (object predicates with filter_match semantics, functions,
  `default`), EQ, NE, LT, LE, GT, GE, NOT, AND, OR, BRANCH, DEFAULT, ADD, SUB, MUL, DIV, MOD,
  BRACKET, GET_FIELD, CONTAINS, HAS_FIELDS, KEYS, VALUES, PLUCK, WITHOUT, MERGE, MAP, ORDER_BY
  (fields, ASC/DESC, functions, `index`), DISTINCT, COUNT, IS_EMPTY, LIMIT, SKIP, SLICE, NTH, UNION,
  APPEND, PREPEND, TYPE_OF, COERCE_TO, UPCASE, DOWNCASE, UUID, ERROR, NOW, ISO8601, EPOCH_TIME,
  TO_EPOCH_TIME, TO_ISO8601, INSERT (`conflict` error/replace/update, generated UUID keys,
  `return_changes`), UPDATE, REPLACE, DELETE, DB_CREATE, DB_DROP, DB_LIST, TABLE_CREATE
  (`primary_key`), TABLE_DROP, TABLE_LIST, INDEX_CREATE, INDEX_DROP, INDEX_LIST, INDEX_STATUS,
  INDEX_WAIT, CONFIG, STATUS, WAIT, SYNC. Streams versus arrays follow the server (a table, a
  `get_all` or a `filter` over a table is a stream; `order_by` without an index is an array).
* **Error texts and types** as the server words them, e.g. "Database `x` does not exist." and
  "Table `db.t` does not exist." (OP_FAILED), "Table `db.t` already exists.", "Index `i` was not
  found on table `db.t`.", "No attribute `f` in object:\\n{...}" and "Cannot perform get_field on a
  non-object non-sequence `null`." (NON_EXISTENCE), "Expected type OBJECT but found NUMBER.",
  "Duplicate primary key `id`:\\n{old}\\n{new}" (with the server's tab-indented datum printing),
  "Index out of bounds: 3", with backtraces (`b`) pointing at the failing term.
* **The `rethinkdb` system database**: `server_status` (one row with `id`, `name`, `network`,
  `process` shaped as server_status.cc builds it), `users` (rows `{"id","password": bool}`; writing
  `password` changes it exactly as user.cc does: a string, `{"password","iterations"}` or `false`;
  existing connections keep working, new handshakes need the new password), plus `server_config`,
  `db_config`, `table_config`, `table_status`, `cluster_config`, `current_issues`, `jobs`, `logs`,
  `permissions`, `stats` in simplified form.
* **Persistence**: everything (databases, tables, indexes, documents, users with salted hashes,
  server id/name) lives in `<data-dir>/rethinkdb-standin.json`, rewritten atomically (temp file,
  fsync, rename) after every query that wrote, so a restart after SIGKILL finds its data. The data
  dir is locked (flock) so two processes cannot share it.

What it does NOT do: changefeeds, JavaScript, HTTP, geo, binary, GROUP/REDUCE/joins and the other
terms not listed (they fail at compile time with a COMPILE_ERROR naming the term, which a real
server would run), partial batches (SUCCESS_PARTIAL), permissions (every authenticated user may do
everything), clustering and sharding (there is no cluster port: `server_status` reports
`cluster_port` 0 and `http_admin_port` "<no http admin>"), the HTTP admin UI, SASLprep of user
names, TLS, the server's own log file. Indexes are evaluated by scanning; queries on one
connection are answered in order, one at a time. Error texts for the rarer paths (type coercion,
variables, `r.row` misuse) are close to, not copied from, the server's.

Run it as its own process (sandbox contract, sandbox/README.md)::

    python -m sandbox.standins.rethinkdb --port P --data-dir DIR [--admin-password PW]

or in-process with `RethinkDBStandIn(data_dir, port=..., admin_password=...)`: `await start()` /
`await stop()` or `async with`; `port` is the bound port (pass 0 for any free one).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import fcntl
import hashlib
import hmac
import itertools
import json
import logging
import math
import os
import re
import signal
import socket
import struct
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, NoReturn

log = logging.getLogger("sandbox.standins.rethinkdb")

# --------------------------------------------------------------------------------------------------
# Wire constants (rethinkdb ql2.proto)
# --------------------------------------------------------------------------------------------------

MAGIC_V0_1 = 0x3F61BA36
MAGIC_V0_2 = 0x723081E1
MAGIC_V0_3 = 0x5F75E83E
MAGIC_V0_4 = 0x400C2D20
MAGIC_V1_0 = 0x34C2BDC3
PROTOCOL_PROTOBUF = 0x271FFC41
PROTOCOL_JSON = 0x7E6970C7

SERVER_VERSION = "2.4.2~0bullseye"
"""RETHINKDB_VERSION of the `rethinkdb:2.4` image PlaceOS's era A compose ran in 2022 (internals §8)."""
PROCESS_VERSION = f"rethinkdb {SERVER_VERSION} (sandbox stand-in)"
DEFAULT_ITERATIONS = 4096  # password_t::default_iteration_count
SALT_LENGTH = 16  # password_t::salt_length
HANDSHAKE_BUFFER = 2048  # read_datum() in server.cc
TOO_LARGE_QUERY_SIZE = 128 * 1024 * 1024  # protocols.cc
MAX_PRIMARY_KEY_CHARS = 127
UUID_NAMESPACE = uuid.UUID("91461c99-f89d-49d2-af96-d8e2e14e9b58")  # r.uuid(str) namespace
DATA_FILE = "rethinkdb-standin.json"
LOCK_FILE = "rethinkdb-standin.lock"
SYSTEM_DB = "rethinkdb"
NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
NAME_CHARS = "Use A-Z, a-z, 0-9, _ and - only"


class QueryType(IntEnum):
    START = 1
    CONTINUE = 2
    STOP = 3
    NOREPLY_WAIT = 4
    SERVER_INFO = 5


class ResponseType(IntEnum):
    SUCCESS_ATOM = 1
    SUCCESS_SEQUENCE = 2
    SUCCESS_PARTIAL = 3
    WAIT_COMPLETE = 4
    SERVER_INFO = 5
    CLIENT_ERROR = 16
    COMPILE_ERROR = 17
    RUNTIME_ERROR = 18


class ErrorType(IntEnum):
    INTERNAL = 1000000
    RESOURCE_LIMIT = 2000000
    QUERY_LOGIC = 3000000
    NON_EXISTENCE = 3100000
    OP_FAILED = 4100000
    OP_INDETERMINATE = 4200000
    USER = 5000000
    PERMISSION_ERROR = 6000000


class T(IntEnum):
    """The term types this stand-in evaluates (numbers from ql2.proto)."""

    DATUM = 1
    MAKE_ARRAY = 2
    MAKE_OBJ = 3
    VAR = 10
    ERROR = 12
    IMPLICIT_VAR = 13
    DB = 14
    TABLE = 15
    GET = 16
    EQ = 17
    NE = 18
    LT = 19
    LE = 20
    GT = 21
    GE = 22
    NOT = 23
    ADD = 24
    SUB = 25
    MUL = 26
    DIV = 27
    MOD = 28
    APPEND = 29
    SLICE = 30
    GET_FIELD = 31
    HAS_FIELDS = 32
    PLUCK = 33
    WITHOUT = 34
    MERGE = 35
    MAP = 38
    FILTER = 39
    ORDER_BY = 41
    DISTINCT = 42
    COUNT = 43
    UNION = 44
    NTH = 45
    COERCE_TO = 51
    TYPE_OF = 52
    UPDATE = 53
    DELETE = 54
    REPLACE = 55
    INSERT = 56
    DB_CREATE = 57
    DB_DROP = 58
    DB_LIST = 59
    TABLE_CREATE = 60
    TABLE_DROP = 61
    TABLE_LIST = 62
    FUNCALL = 64
    BRANCH = 65
    OR = 66
    AND = 67
    FUNC = 69
    SKIP = 70
    LIMIT = 71
    ASC = 73
    DESC = 74
    INDEX_CREATE = 75
    INDEX_DROP = 76
    INDEX_LIST = 77
    GET_ALL = 78
    PREPEND = 80
    IS_EMPTY = 86
    DEFAULT = 92
    CONTAINS = 93
    KEYS = 94
    ISO8601 = 99
    TO_ISO8601 = 100
    EPOCH_TIME = 101
    TO_EPOCH_TIME = 102
    NOW = 103
    SYNC = 138
    INDEX_STATUS = 139
    INDEX_WAIT = 140
    UPCASE = 141
    DOWNCASE = 142
    UUID = 169
    BRACKET = 170
    CONFIG = 174
    STATUS = 175
    WAIT = 177
    VALUES = 186


def _all_term_names() -> dict[int, str]:
    """Every TermType the real server accepts, from the driver's copy of ql2.proto."""
    try:
        from rethinkdb import ql2_pb2

        names = vars(ql2_pb2.Term.TermType)
        return {int(v): k for k, v in names.items() if k.isupper() and isinstance(v, int)}
    except Exception:  # pragma: no cover - the driver is a project dependency
        return {int(t): t.name for t in T}


TERM_NAMES = _all_term_names()

# (min args, max args or -1) and accepted optargs, as the server's argspec_t/optargspec_t.
ARGSPEC: dict[T, tuple[int, int, frozenset[str]]] = {
    T.DATUM: (0, 0, frozenset()),
    T.MAKE_ARRAY: (0, -1, frozenset()),
    T.VAR: (1, 1, frozenset()),
    T.ERROR: (0, 1, frozenset()),
    T.IMPLICIT_VAR: (0, 0, frozenset()),
    T.DB: (1, 1, frozenset()),
    T.TABLE: (1, 2, frozenset({"read_mode", "use_outdated", "identifier_format"})),
    T.GET: (2, 2, frozenset()),
    T.GET_ALL: (1, -1, frozenset({"index"})),
    T.EQ: (1, -1, frozenset()),
    T.NE: (1, -1, frozenset()),
    T.LT: (1, -1, frozenset()),
    T.LE: (1, -1, frozenset()),
    T.GT: (1, -1, frozenset()),
    T.GE: (1, -1, frozenset()),
    T.NOT: (1, 1, frozenset()),
    T.ADD: (1, -1, frozenset()),
    T.SUB: (1, -1, frozenset()),
    T.MUL: (1, -1, frozenset()),
    T.DIV: (1, -1, frozenset()),
    T.MOD: (2, 2, frozenset()),
    T.APPEND: (2, 2, frozenset()),
    T.PREPEND: (2, 2, frozenset()),
    T.SLICE: (2, 3, frozenset({"left_bound", "right_bound"})),
    T.GET_FIELD: (2, 2, frozenset()),
    T.BRACKET: (2, 2, frozenset()),
    T.HAS_FIELDS: (1, -1, frozenset()),
    T.PLUCK: (1, -1, frozenset()),
    T.WITHOUT: (1, -1, frozenset()),
    T.MERGE: (1, -1, frozenset()),
    T.MAP: (2, 2, frozenset()),
    T.FILTER: (2, 2, frozenset({"default"})),
    T.ORDER_BY: (1, -1, frozenset({"index"})),
    T.DISTINCT: (1, 1, frozenset({"index"})),
    T.COUNT: (1, 2, frozenset()),
    T.UNION: (0, -1, frozenset({"interleave"})),
    T.NTH: (2, 2, frozenset()),
    T.COERCE_TO: (2, 2, frozenset()),
    T.TYPE_OF: (1, 1, frozenset()),
    T.UPDATE: (2, 2, frozenset({"non_atomic", "durability", "return_changes", "ignore_write_hook"})),
    T.DELETE: (1, 1, frozenset({"durability", "return_changes", "ignore_write_hook"})),
    T.REPLACE: (2, 2, frozenset({"non_atomic", "durability", "return_changes", "ignore_write_hook"})),
    T.INSERT: (2, 2, frozenset({"conflict", "durability", "return_changes", "ignore_write_hook"})),
    T.DB_CREATE: (1, 1, frozenset()),
    T.DB_DROP: (1, 1, frozenset()),
    T.DB_LIST: (0, 0, frozenset()),
    T.TABLE_CREATE: (
        1,
        2,
        frozenset(
            {"primary_key", "shards", "replicas", "nonvoting_replica_tags", "primary_replica_tag"} | {"durability"}
        ),
    ),
    T.TABLE_DROP: (1, 2, frozenset()),
    T.TABLE_LIST: (0, 1, frozenset()),
    T.FUNCALL: (1, -1, frozenset()),
    T.BRANCH: (3, -1, frozenset()),
    T.OR: (0, -1, frozenset()),
    T.AND: (0, -1, frozenset()),
    T.FUNC: (2, 2, frozenset()),
    T.SKIP: (2, 2, frozenset()),
    T.LIMIT: (2, 2, frozenset()),
    T.ASC: (1, 1, frozenset()),
    T.DESC: (1, 1, frozenset()),
    T.INDEX_CREATE: (2, 3, frozenset({"multi", "geo"})),
    T.INDEX_DROP: (2, 2, frozenset()),
    T.INDEX_LIST: (1, 1, frozenset()),
    T.INDEX_STATUS: (1, -1, frozenset()),
    T.INDEX_WAIT: (1, -1, frozenset()),
    T.IS_EMPTY: (1, 1, frozenset()),
    T.DEFAULT: (2, 2, frozenset()),
    T.CONTAINS: (1, -1, frozenset()),
    T.KEYS: (1, 1, frozenset()),
    T.VALUES: (1, 1, frozenset()),
    T.ISO8601: (1, 1, frozenset({"default_timezone"})),
    T.TO_ISO8601: (1, 1, frozenset()),
    T.EPOCH_TIME: (1, 1, frozenset()),
    T.TO_EPOCH_TIME: (1, 1, frozenset()),
    T.NOW: (0, 0, frozenset()),
    T.SYNC: (1, 1, frozenset()),
    T.UPCASE: (1, 1, frozenset()),
    T.DOWNCASE: (1, 1, frozenset()),
    T.UUID: (0, 1, frozenset()),
    T.CONFIG: (1, 1, frozenset()),
    T.STATUS: (1, 1, frozenset()),
    T.WAIT: (0, 1, frozenset({"wait_for", "timeout"})),
}

# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------

Frame = int | str


class ReqlFailure(Exception):
    """A query error the server reports to the client (response type, error type, text, backtrace)."""

    def __init__(
        self,
        message: str,
        error_type: ErrorType = ErrorType.QUERY_LOGIC,
        response_type: ResponseType = ResponseType.RUNTIME_ERROR,
        backtrace: list[Frame] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type
        self.response_type = response_type
        self.backtrace = backtrace


def fail(message: str, error_type: ErrorType = ErrorType.QUERY_LOGIC) -> NoReturn:
    raise ReqlFailure(message, error_type)


def op_failed(message: str) -> NoReturn:
    raise ReqlFailure(message, ErrorType.OP_FAILED)


def compile_error(message: str, bt: Sequence[Frame]) -> NoReturn:
    raise ReqlFailure(message, ErrorType.QUERY_LOGIC, ResponseType.COMPILE_ERROR, list(bt))


class AuthError(Exception):
    """A handshake failure, sent as `{"error", "error_code", "success": false}` (codes 1-22)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class LegacyHandshakeError(Exception):
    """A pre-V1_0 handshake failure, sent as the plain text `ERROR: <msg>\\n`."""


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


# --------------------------------------------------------------------------------------------------
# Users and SCRAM-SHA-256 (scram_authenticator.cc, password.cc)
# --------------------------------------------------------------------------------------------------


@dataclass
class Password:
    """password_t: only the salt, iteration count and PBKDF2 hash are kept, never the password."""

    iterations: int
    salt: bytes
    hash: bytes
    empty: bool

    @classmethod
    def make(cls, password: str, iterations: int = DEFAULT_ITERATIONS) -> Password:
        salt = os.urandom(SALT_LENGTH)
        digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
        return cls(iterations, salt, digest, password == "")

    @classmethod
    def for_unknown_user(cls) -> Password:
        """generate_password_for_unknown_user(): a random salt so unknown users look known."""
        return cls(DEFAULT_ITERATIONS, os.urandom(SALT_LENGTH), bytes(32), False)

    def matches(self, password: str) -> bool:
        candidate = hashlib.pbkdf2_hmac("sha256", password.encode(), self.salt, self.iterations)
        return hmac.compare_digest(candidate, self.hash)

    def to_json(self) -> dict[str, Any]:
        return {
            "iterations": self.iterations,
            "salt": base64.b64encode(self.salt).decode(),
            "hash": base64.b64encode(self.hash).decode(),
            "empty": self.empty,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Password:
        return cls(int(d["iterations"]), base64.b64decode(d["salt"]), base64.b64decode(d["hash"]), bool(d["empty"]))


def _split_attributes(message: str) -> dict[str, str]:
    """scram_authenticator_t::split_attributes()."""
    attributes: dict[str, str] = {}
    offset = 0
    while offset < len(message):
        eq = message.find("=", offset)
        if eq == -1 or eq - offset != 1:
            raise AuthError(10, "Invalid encoding")
        key = message[offset]
        if key in attributes:
            raise AuthError(10, "Invalid encoding")
        comma = message.find(",", eq + 1)
        if comma == -1:
            attributes[key] = message[eq + 1 :]
            offset = len(message)
        else:
            attributes[key] = message[eq + 1 : comma]
            offset = comma + 1
    return attributes


def _saslname_decode(saslname: str) -> str:
    """scram_authenticator_t::saslname_decode(), including its missing `break` after `=XX`.

    The real switch falls through to `push_back(saslname[offset])` after handling `=2C`/`=3D`, so
    a user name containing `,` or `=` decodes with the code's last letter appended. Reproduced.
    """
    out: list[str] = []
    offset = 0
    while offset < len(saslname):
        ch = saslname[offset]
        if ch == "=":
            if offset + 2 >= len(saslname):
                raise AuthError(18, "Invalid username encoding")
            code = saslname[offset + 1 : offset + 3]
            if code == "2C":
                out.append(",")
            elif code == "3D":
                out.append("=")
            else:
                raise AuthError(18, "Invalid username encoding")
            offset += 2
        out.append(saslname[offset])
        offset += 1
    return "".join(out)


class ScramAuthenticator:
    """The server side of SCRAM-SHA-256, message for message as scram_authenticator.cc."""

    def __init__(self, lookup: Callable[[str], Password | None]) -> None:
        self._lookup = lookup
        self._state = "first"
        self._password = Password.for_unknown_user()
        self._known = False
        self._nonce = ""
        self._client_first_bare = ""
        self._server_first = ""
        self.username = ""

    def next_message(self, message: str) -> str:
        try:
            if self._state == "first":
                return self._first(message)
            if self._state == "final":
                return self._final(message)
            if self._state == "error":
                raise AuthError(20, "A previous error occured, no more messages expected.")
            raise AuthError(20, "Already authenticated, no more messages expected.")
        except AuthError:
            self._state = "error"
            raise

    def _first(self, message: str) -> str:
        if not message.startswith("n,"):
            raise AuthError(15, "Channel binding is not supported")
        bare_offset = message.find(",", 2)
        if bare_offset == -1:
            raise AuthError(10, "Invalid encoding")
        self._client_first_bare = message[bare_offset + 1 :]
        client_nonce = ""
        attributes = _split_attributes(self._client_first_bare)
        for key in sorted(attributes):
            if key == "n":
                self.username = _saslname_decode(attributes[key])
            elif key == "r":
                client_nonce = attributes[key]
            elif key == "m":
                raise AuthError(11, "Extensions not supported")
            else:
                raise AuthError(10, "Invalid encoding")
        if "n" not in attributes or "r" not in attributes:
            raise AuthError(10, "Invalid encoding")
        password = self._lookup(self.username)
        self._known = password is not None
        self._password = password if password is not None else Password.for_unknown_user()
        self._nonce = client_nonce + base64.b64encode(os.urandom(18)).decode()
        self._server_first = (
            f"r={self._nonce},s={base64.b64encode(self._password.salt).decode()},i={self._password.iterations}"
        )
        self._state = "final"
        return self._server_first

    def _final(self, message: str) -> str:
        if not self._known:
            raise AuthError(17, "Unknown user")
        salted = self._password.hash
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored_key = hashlib.sha256(client_key).digest()
        proof_at = message.find(",p=")
        without_proof = message if proof_at == -1 else message[:proof_at]
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        client_signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
        client_proof = bytes(x ^ y for x, y in zip(client_key, client_signature, strict=True))
        attributes = _split_attributes(message)
        for key in sorted(attributes):  # std::map order: c, p, r
            value = attributes[key]
            if key == "c":
                if value != "biws":
                    raise AuthError(10, "Invalid encoding")
            elif key == "r":
                if value != self._nonce:
                    raise AuthError(20, "Other error")
            elif key == "p":
                if not hmac.compare_digest(value, base64.b64encode(client_proof).decode()):
                    raise AuthError(12, "Wrong password")
                self._state = "authenticated"
            elif key == "m":
                raise AuthError(11, "Extensions not supported")
            else:
                raise AuthError(10, "Invalid encoding")
        if not {"c", "r", "p"} <= attributes.keys():
            raise AuthError(10, "Invalid encoding")
        server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
        server_signature = hmac.new(server_key, auth_message, hashlib.sha256).digest()
        return "v=" + base64.b64encode(server_signature).decode()


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


# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DbRef:
    name: str


@dataclass
class Seq:
    """A sequence value: a stream, or (is_array) an array; a selection when it has a table."""

    rows: list[Any]
    table: Table | None = None
    is_array: bool = False

    def kind(self) -> str:
        base = "ARRAY" if self.is_array else "STREAM"
        return f"SELECTION<{base}>" if self.table is not None else base


@dataclass
class SingleSel:
    """`table.get(key)`: a row (or null) that can be written back."""

    table: Table
    key: Any
    row: dict[str, Any] | None


@dataclass
class Func:
    params: list[int]
    body: Any
    scope: Scope


_NOTHING = object()


@dataclass(frozen=True)
class Scope:
    vars: dict[int, Any] = field(default_factory=dict)
    implicit: Any = _NOTHING

    def bind(self, params: Sequence[int], values: Sequence[Any]) -> Scope:
        new = dict(self.vars)
        new.update(zip(params, values, strict=True))
        return Scope(new, self.implicit)

    def with_implicit(self, value: Any) -> Scope:
        return Scope(self.vars, value)


@dataclass
class Call:
    """One term being evaluated: its raw args/optargs, scope and backtrace."""

    type: int
    args: list[Any]
    optargs: dict[str, Any]
    scope: Scope
    bt: tuple[Frame, ...]


def split_term(term: Any) -> tuple[int, list[Any], dict[str, Any]]:
    """Raw JSON term -> (type, args, optargs), as term_walker.cc reads it (validated earlier)."""
    if isinstance(term, list):
        ttype = int(term[0])
        args: list[Any] = []
        optargs: dict[str, Any] = {}
        if len(term) >= 2:
            if ttype == T.DATUM:
                return ttype, [term[1]], {}
            if isinstance(term[1], list):
                args = term[1]
            elif isinstance(term[1], dict):
                optargs = term[1]
        if len(term) >= 3 and isinstance(term[2], dict):
            optargs = term[2]
        return ttype, args, optargs
    if isinstance(term, dict):
        return T.MAKE_OBJ, [], term
    return T.DATUM, [term], {}


def uses_implicit(term: Any) -> bool:
    """Does a non-function argument refer to `r.row` (IMPLICIT_VAR) outside nested functions?"""
    if isinstance(term, list) and term and isinstance(term[0], int):
        ttype, args, optargs = split_term(term)
        if ttype == T.IMPLICIT_VAR:
            return True
        if ttype in (T.DATUM, T.FUNC):
            return False
        return any(uses_implicit(a) for a in args) or any(uses_implicit(v) for v in optargs.values())
    if isinstance(term, dict):
        return any(uses_implicit(v) for v in term.values())
    return False


def rapidjson_type(v: Any) -> str:
    if isinstance(v, bool):
        return "BOOL"
    return type_name(v) if not isinstance(v, dict) else "OBJECT"


def validate(term: Any, bt: tuple[Frame, ...], depth: int = 0) -> None:
    """The compile pass: raw term shape (term_walker.cc), known/supported types, arity, optargs."""
    if depth > 512:
        compile_error("Query too deeply nested.", bt)
    if isinstance(term, dict):
        for k, v in term.items():
            validate(v, (*bt, k), depth + 1)
        return
    if not isinstance(term, list):
        return
    if not 1 <= len(term) <= 3:
        compile_error(f"Expected between 1 and 3 elements in a raw term, but found {len(term)}.", bt)
    if not is_num(term[0]):
        compile_error(f"Expected a TermType as a NUMBER but found {rapidjson_type(term[0])}.", bt)
    ttype = int(term[0])
    if ttype not in TERM_NAMES:
        compile_error(f"Unrecognized TermType: {ttype}.", bt)
    args: list[Any] = []
    optargs: dict[str, Any] = {}
    if len(term) >= 2:
        if isinstance(term[1], list):
            args = term[1]
        elif isinstance(term[1], dict) and ttype != T.DATUM:
            optargs = term[1]
        elif ttype != T.DATUM:
            compile_error("Second element in a non-DATUM Term is neither arguments nor optional arguments.", bt)
    if len(term) >= 3:
        if not isinstance(term[2], dict):
            compile_error("Third element in a non-DATUM Term is not optional arguments.", bt)
        optargs = term[2]
    if ttype == T.DATUM:
        return
    try:
        t = T(ttype)
    except ValueError:
        compile_error(f"Term `{TERM_NAMES[ttype]}` is not supported by the sandbox RethinkDB stand-in.", bt)
    lo, hi, allowed = ARGSPEC.get(t, (0, -1, frozenset()))
    if t != T.MAKE_OBJ and (len(args) < lo or (hi != -1 and len(args) > hi)):
        compile_error(f"Expected {_argspec_text(lo, hi)} but found {len(args)}.", bt)
    if t != T.MAKE_OBJ:
        for name in optargs:
            if name not in allowed:
                compile_error(f"Unrecognized optional argument `{name}`.", bt)
    for i, a in enumerate(args):
        validate(a, (*bt, i), depth + 1)
    for k, v in optargs.items():
        validate(v, (*bt, k), depth + 1)


def _argspec_text(lo: int, hi: int) -> str:
    """argspec_t::print()."""
    if lo == hi:
        return f"{lo} argument{'' if lo == 1 else 's'}"
    if hi == -1:
        return f"{lo} or more arguments"
    return f"between {lo} and {hi} arguments"


Handler = Callable[["Evaluator", Call], Any]
HANDLERS: dict[int, Handler] = {}


def term(*types: T) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        for t in types:
            HANDLERS[t] = fn
        return fn

    return register


def value_type_name(v: Any) -> str:
    """val_t type names as errors and TYPE_OF print them."""
    if isinstance(v, DbRef):
        return "DB"
    if isinstance(v, Table):
        return "TABLE"
    if isinstance(v, Seq):
        return v.kind()
    if isinstance(v, SingleSel):
        return "SELECTION<OBJECT>"
    if isinstance(v, Func):
        return "FUNCTION"
    return type_name(v)


class Evaluator:
    """Evaluates one query's term tree against the server state."""

    def __init__(self, server: ServerState, global_optargs: dict[str, Any]) -> None:
        self.server = server
        self.global_optargs = global_optargs
        self._default_db: str | None = None
        self._now: dict[str, Any] | None = None

    # ---- core ----

    def ev(self, raw: Any, scope: Scope, bt: tuple[Frame, ...]) -> Any:
        ttype, args, optargs = split_term(raw)
        handler = HANDLERS.get(ttype)
        if handler is None:  # validate() rejects these; keep a safe answer anyway
            raise ReqlFailure(
                f"Term `{TERM_NAMES.get(ttype, ttype)}` is not supported by the sandbox RethinkDB stand-in.",
                ErrorType.QUERY_LOGIC,
                ResponseType.COMPILE_ERROR,
                list(bt),
            )
        try:
            return handler(self, Call(ttype, args, optargs, scope, bt))
        except ReqlFailure as e:
            if e.backtrace is None:
                e.backtrace = list(bt)
            raise
        except RecursionError:
            raise ReqlFailure("Query too deeply nested.", ErrorType.RESOURCE_LIMIT, backtrace=list(bt)) from None

    def arg(self, c: Call, i: int) -> Any:
        return self.ev(c.args[i], c.scope, (*c.bt, i))

    def datum_arg(self, c: Call, i: int) -> Any:
        return self.to_datum(self.arg(c, i))

    def opt(self, c: Call, name: str, default: Any = None) -> Any:
        if name not in c.optargs:
            return default
        return self.to_datum(self.ev(c.optargs[name], c.scope, (*c.bt, name)))

    def default_db(self) -> str:
        if self._default_db is None:
            raw = self.global_optargs.get("db")
            if raw is None:
                self._default_db = "test"
            else:
                v = self.ev(raw, Scope(), ())
                self._default_db = v.name if isinstance(v, DbRef) else as_str(self.to_datum(v))
        return self._default_db

    def now(self) -> dict[str, Any]:
        """r.now() is one constant per query (term_walker.cc rewrites it to a datum)."""
        if self._now is None:
            self._now = make_time(time.time())
        return self._now

    # ---- conversions ----

    def to_datum(self, v: Any) -> Any:
        if isinstance(v, Seq):
            return list(v.rows)
        if isinstance(v, Table):
            return v.rows()
        if isinstance(v, SingleSel):
            return v.row
        if isinstance(v, DbRef | Func):
            fail(f"Expected type DATUM but found {value_type_name(v)}:\n{self.describe(v)}")
        return v

    @staticmethod
    def describe(v: Any) -> str:
        if isinstance(v, DbRef):
            return f'db("{v.name}")'
        if isinstance(v, Table):
            return f'table("{v.name}")'
        return "<function>"

    def to_seq(self, v: Any) -> Seq:
        if isinstance(v, Seq):
            return v
        if isinstance(v, Table):
            return Seq(v.rows(), v, False)
        if isinstance(v, list):
            return Seq(list(v), None, True)
        fail(f"Cannot convert {value_type_name(v)} to SEQUENCE", _ne_if_null(v))

    def is_seq(self, v: Any) -> bool:
        return isinstance(v, Seq | Table | list)

    def to_table(self, v: Any) -> Table:
        if isinstance(v, Table):
            return v
        fail(f"Expected type TABLE but found {value_type_name(v)}:\n{self.print_val(v)}", _ne_if_null(v))

    def print_val(self, v: Any) -> str:
        if isinstance(v, DbRef | Table | Func):
            return self.describe(v)
        return trunc_print(self.to_datum(v))

    @staticmethod
    def like(src: Seq, rows: list[Any], keep_table: bool = True) -> Seq:
        """A derived sequence of the same kind (stream/array, selection if rows are still rows)."""
        return Seq(rows, src.table if keep_table else None, src.is_array)

    # ---- functions ----

    def make_func(self, c: Call, i: int) -> Callable[[list[Any]], Any]:
        """An argument used as a function: a FUNC term, or any term with `r.row` bound per call."""
        raw = c.args[i]
        bt = (*c.bt, i)
        if isinstance(raw, list) and raw and raw[0] == T.FUNC:
            fn = self.ev(raw, c.scope, bt)
            return lambda args: self.call(fn, args, bt)
        if uses_implicit(raw):
            return lambda args: self.ev(raw, c.scope.with_implicit(args[0] if args else None), bt)
        value = self.ev(raw, c.scope, bt)
        if isinstance(value, Func):
            return lambda args: self.call(value, args, bt)
        return lambda args: value

    def call(self, fn: Any, args: list[Any], bt: tuple[Frame, ...]) -> Any:
        if not isinstance(fn, Func):
            fail(f"Expected type FUNCTION but found {value_type_name(fn)}.")
        if len(fn.params) != len(args):
            fail(
                f"Expected function with {len(args)} argument{'' if len(args) == 1 else 's'} "
                f"but found function with {len(fn.params)} argument{'' if len(fn.params) == 1 else 's'}."
            )
        scope = fn.scope.bind(fn.params, args)
        if len(args) == 1:  # a one-argument function binds `r.row` (the drivers' func_wrap relies on it)
            scope = scope.with_implicit(args[0])
        return self.ev(fn.body, scope, (*bt, 1))

    @staticmethod
    def is_literal_predicate(raw: Any) -> bool:
        """filter_helper(): object results are matched only when the body is MAKE_OBJ or DATUM."""
        if isinstance(raw, dict):
            return True
        if isinstance(raw, list) and raw:
            if raw[0] == T.DATUM:
                return True
            if raw[0] == T.FUNC and len(raw) >= 2 and isinstance(raw[1], list) and len(raw[1]) == 2:
                body = raw[1][1]
                return isinstance(body, dict) or (isinstance(body, list) and bool(body) and body[0] == T.DATUM)
        return False

    # ---- writes ----

    def write_result(self) -> dict[str, Any]:
        return {"deleted": 0, "errors": 0, "inserted": 0, "replaced": 0, "skipped": 0, "unchanged": 0}

    def apply_write(
        self,
        table: Table,
        key: Any,
        old: dict[str, Any] | None,
        new: Any,
        result: dict[str, Any],
        changes: list[dict[str, Any]] | None,
        always: bool,
    ) -> None:
        """Write one row and count it the way the server's write response does."""
        try:
            if new is not None:
                if not isinstance(new, dict) or type_name(new) != "OBJECT":
                    fail(f"Inserted value must be an OBJECT (got {type_name(new)}):\n{pprint(new)}")
                pk = table.primary_key
                if pk not in new:
                    fail(f"Inserted object must have primary key `{pk}`:\n{pprint(new)}")
                if old is not None and not equal(old.get(pk), new[pk]):
                    fail(f"Primary key `{pk}` cannot be changed (`{pprint(old)}` -> `{pprint(new)}`).")
                check_pkey(new[pk])
            if old is None and new is None:
                result["skipped"] += 1
                return
            if old is not None and new is not None and equal(old, new):
                result["unchanged"] += 1
                if changes is not None and always:
                    changes.append({"new_val": old, "old_val": old})
                return
            table.write(key, new)
        except ReqlFailure as e:
            result["errors"] += 1
            result.setdefault("first_error", e.message)
            if changes is not None and always:
                changes.append({"error": e.message, "new_val": old, "old_val": old})
            return
        if old is None:
            result["inserted"] += 1
        elif new is None:
            result["deleted"] += 1
        else:
            result["replaced"] += 1
        if changes is not None:
            changes.append({"new_val": new, "old_val": old})

    def selection_rows(self, v: Any) -> tuple[Table, list[tuple[Any, dict[str, Any] | None]]]:
        """The (key, row) pairs a write term applies to."""
        if isinstance(v, SingleSel):
            return v.table, [(v.key, v.row)]
        if isinstance(v, Table):
            return v, [(r.get(v.primary_key), r) for r in v.rows()]
        if isinstance(v, Seq) and v.table is not None:
            t = v.table
            return t, [(r.get(t.primary_key), r) for r in v.rows if isinstance(r, dict)]
        fail(f"Expected type SELECTION but found {value_type_name(v)}:\n{self.print_val(v)}", _ne_if_null(v))

    def return_changes(self, c: Call) -> tuple[list[dict[str, Any]] | None, bool]:
        rc = self.opt(c, "return_changes", False)
        if rc == "always":
            return [], True
        return ([] if truthy(rc) else None), False

    def check_durability(self, c: Call) -> None:
        d = self.opt(c, "durability")
        if d is not None and d not in ("hard", "soft"):
            fail(f'Durability option `{as_str(d)}` unrecognized (options are "hard" and "soft").')

    # ---- indexes ----

    def index_values(self, table: Table, index: str, row: dict[str, Any]) -> list[Any]:
        """The secondary-index keys a row is stored under (none when the function fails)."""
        if index == table.primary_key:
            return [row.get(index)]
        info = table.indexes().get(index)
        if info is None:
            op_failed(f"Index `{index}` was not found on table `{table.display}`.")
        try:
            if info.function is None:
                if index not in row:
                    return []
                value = row[index]
            else:
                value = self.call_index_function(info.function, row)
        except ReqlFailure:
            return []
        if info.multi and isinstance(value, list):
            return list(value)
        return [value]

    def call_index_function(self, raw: Any, row: dict[str, Any]) -> Any:
        if isinstance(raw, list) and raw and raw[0] == T.FUNC:
            fn = self.ev(raw, Scope(), ())
            return self.to_datum(self.call(fn, [row], ()))
        return self.to_datum(self.ev(raw, Scope().with_implicit(row), ()))


def _ne_if_null(v: Any) -> ErrorType:
    return ErrorType.NON_EXISTENCE if v is None else ErrorType.QUERY_LOGIC


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


# --------------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------------


class _Closed(Exception):
    """The client went away or must be disconnected."""


async def _read_exactly(reader: asyncio.StreamReader, n: int) -> bytes:
    try:
        return await reader.readexactly(n)
    except (asyncio.IncompleteReadError, ConnectionError) as e:
        raise _Closed from e


async def _read_nul_terminated(reader: asyncio.StreamReader) -> bytes:
    """read_datum(): up to 2047 bytes before the NUL, else error 7."""
    buf = bytearray()
    while True:
        ch = await _read_exactly(reader, 1)
        if ch == b"\0":
            return bytes(buf)
        buf += ch
        if len(buf) >= HANDSHAKE_BUFFER - 1:
            raise AuthError(7, "Limited read buffer size.")


def _handshake_datum(raw: bytes) -> dict[str, Any]:
    try:
        doc = load_json(raw.decode())
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise AuthError(8, "Invalid JSON object.") from None
    if not isinstance(doc, dict):
        raise _Closed  # get_field() on a non-object throws; the server logs and hangs up
    return doc


class RethinkDBStandIn:
    """The stand-in server; `await start()` binds, `await stop()` closes, `port` is the bound port."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int = 28015,
        admin_password: str | None = None,
        server_name: str | None = None,
        argv: Sequence[str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self._requested_port = port
        self._admin_password = admin_password
        self._server_name = server_name
        self._argv = list(argv) if argv is not None else [sys.executable, *sys.argv]
        self._server: asyncio.Server | None = None
        self._lock_fd: int | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.state: ServerState | None = None

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return self._requested_port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Load (or create) the data dir, lock it, and listen; raises if either is impossible."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_data_dir()
        try:
            store = Store(self.data_dir, self._admin_password, self._server_name)
            self.state = ServerState(store, self.host, self._requested_port, self._argv)
            self._server = await asyncio.start_server(self._on_connect, self.host, self._requested_port)
        except BaseException:
            self._unlock_data_dir()
            raise
        self.state.port = self.port
        log.info(
            "RethinkDB stand-in (%s) listening on %s:%d, data dir %s, server %s",
            SERVER_VERSION,
            self.host,
            self.port,
            self.data_dir,
            store.server_name,
        )

    def _lock_data_dir(self) -> None:
        """The real server refuses a data directory another process holds; so do we."""
        fd = os.open(self.data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise RuntimeError(f"data directory {self.data_dir} is in use by another process") from None
        self._lock_fd = fd

    async def stop(self) -> None:
        """Close the listener and every client connection (the data is already on disk)."""
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None
        self._unlock_data_dir()
        log.info("RethinkDB stand-in stopped")

    def _unlock_data_dir(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def __aenter__(self) -> RethinkDBStandIn:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        peer = writer.get_extra_info("peername")
        assert self.state is not None
        self.state.connections += 1
        try:
            user = await self._handshake(reader, writer)
            if user is not None:
                log.debug("client %s authenticated as %s", peer, user)
                await self._serve_queries(reader, writer)
        except _Closed:
            pass
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("unexpected error on connection from %s", peer)
        finally:
            self.state.connections -= 1
            if task is not None:
                self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    # ---- handshake (server.cc handle_conn) ----

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str | None:
        magic = struct.unpack("<I", await _read_exactly(reader, 4))[0]
        if magic == MAGIC_V1_0:
            return await self._handshake_v1(reader, writer)
        try:
            if magic in (MAGIC_V0_1, MAGIC_V0_2):
                raise LegacyHandshakeError("The PROTOBUF client protocol is no longer supported")
            if magic not in (MAGIC_V0_3, MAGIC_V0_4):
                raise LegacyHandshakeError(
                    "Received an unsupported protocol version. This port is for RethinkDB queries. "
                    "Does your client driver version not match the server?"
                )
            size = struct.unpack("<I", await _read_exactly(reader, 4))[0]
            if size > 2048:
                raise LegacyHandshakeError("Client provided an authorization key that is too long.")
            key = (await _read_exactly(reader, size)).decode(errors="replace")
            assert self.state is not None
            admin = self.state.store.users.get("admin")
            if admin is None or not admin.matches(key):
                raise LegacyHandshakeError("Incorrect authorization key.")
            protocol = struct.unpack("<i", await _read_exactly(reader, 4))[0]
            if protocol == PROTOCOL_PROTOBUF:
                raise LegacyHandshakeError("The PROTOBUF client protocol is no longer supported")
            if protocol != PROTOCOL_JSON:
                raise LegacyHandshakeError(f"Unrecognized protocol specified: '{protocol}'")
            writer.write(b"SUCCESS\0")
            return "admin"
        except LegacyHandshakeError as e:
            log.info("rejected legacy handshake: %s", e)
            writer.write(f"ERROR: {e}\n".encode() + b"\0")
            await self._shutdown_write(writer)
            return None

    async def _handshake_v1(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str | None:
        assert self.state is not None
        state = self.state
        writer.write(
            dump_json(
                {
                    "max_protocol_version": 0,
                    "min_protocol_version": 0,
                    "server_version": SERVER_VERSION,
                    "success": True,
                }
            ).encode()
            + b"\0"
        )
        auth = ScramAuthenticator(lambda name: state.store.users.get(name) if name in state.store.users else None)
        try:
            first = _handshake_datum(await _read_nul_terminated(reader))
            pv = first.get("protocol_version")
            if not is_num(pv):
                raise AuthError(1, "Expected a number for `protocol_version`.")
            if pv != 0:
                raise AuthError(2, "Unsupported `protocol_version`.")
            method = first.get("authentication_method")
            if not isinstance(method, str):
                raise AuthError(3, "Expected a string for `authentication_method`.")
            if method != "SCRAM-SHA-256":
                raise AuthError(4, "Unsupported `authentication_method`.")
            authentication = first.get("authentication")
            if not isinstance(authentication, str):
                raise AuthError(5, "Expected a string for `authentication`.")
            reply = auth.next_message(authentication)
            writer.write(dump_json({"authentication": reply, "success": True}).encode() + b"\0")
            final = _handshake_datum(await _read_nul_terminated(reader))
            authentication = final.get("authentication")
            if not isinstance(authentication, str):
                raise AuthError(5, "Expected a string for `authentication`.")
            reply = auth.next_message(authentication)
            writer.write(dump_json({"authentication": reply, "success": True}).encode() + b"\0")
            await writer.drain()
            return auth.username
        except AuthError as e:
            log.info("handshake failed for user %r: %s (%d)", auth.username, e.message, e.code)
            writer.write(dump_json({"error": e.message, "error_code": e.code, "success": False}).encode() + b"\0")
            await self._shutdown_write(writer)
            return None

    @staticmethod
    async def _shutdown_write(writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()

    # ---- queries (json.cc parse_query / send_response) ----

    async def _serve_queries(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self.state is not None
        while True:
            header = await _read_exactly(reader, 12)
            token, size = struct.unpack("<qI", header)
            if size >= TOO_LARGE_QUERY_SIZE:
                body = encode_response(
                    ResponseType.CLIENT_ERROR,
                    [f"Query size ({size}) greater than maximum ({TOO_LARGE_QUERY_SIZE - 1})."],
                    backtrace=[],
                )
                self._send(writer, token, body)
                await self._shutdown_write(writer)
                raise _Closed
            payload = await _read_exactly(reader, size)
            response = self._answer(token, payload)
            if response is not None:
                self._send(writer, token, response)
                try:
                    await writer.drain()
                except ConnectionError as e:
                    raise _Closed from e

    @staticmethod
    def _send(writer: asyncio.StreamWriter, token: int, body: bytes) -> None:
        writer.write(struct.pack("<qI", token, len(body)) + body)

    def _answer(self, token: int, payload: bytes) -> bytes | None:
        """One query's response, or None for `noreply`."""
        assert self.state is not None
        try:
            query = load_json(payload.decode())
        except Exception:  # anything unparseable, like rapidjson's HasParseError()
            return encode_response(
                ResponseType.CLIENT_ERROR, ["Client is buggy (failed to deserialize query)."], backtrace=[]
            )
        try:
            qtype, term_json, optargs = parse_query(query)
        except QueryError as e:
            return encode_response(ResponseType.CLIENT_ERROR, [f"Server could not parse query: {e}"], backtrace=[])
        if qtype == QueryType.START:
            self.state.queries_total += 1
            try:
                response = run_start(self.state, term_json, optargs)
            except Exception:
                log.exception("internal error evaluating query %s", payload[:200])
                response = encode_response(
                    ResponseType.RUNTIME_ERROR,
                    ["Internal error in the sandbox RethinkDB stand-in (see its log)."],
                    error_type=ErrorType.INTERNAL,
                    backtrace=[],
                )
            return None if static_bool(optargs, "noreply") else response
        if qtype in (QueryType.CONTINUE, QueryType.STOP):
            # Every sequence was sent whole, so no token is ever still in the stream cache.
            return encode_response(ResponseType.CLIENT_ERROR, [f"Token {token} not in stream cache."], backtrace=[])
        if qtype == QueryType.NOREPLY_WAIT:
            return encode_response(ResponseType.WAIT_COMPLETE, [])
        store = self.state.store
        return encode_response(
            ResponseType.SERVER_INFO, [{"id": store.server_id, "name": store.server_name, "proxy": False}]
        )


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m sandbox.standins.rethinkdb",
        description="Wire-faithful RethinkDB 2.4 stand-in for the PlaceOS sandbox.",
    )
    p.add_argument("--port", type=int, required=True, help="driver port to listen on")
    p.add_argument("--data-dir", required=True, help="directory holding the persisted state")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument(
        "--admin-password",
        default=None,
        help="initial password of user `admin` (only used when the data dir is new)",
    )
    p.add_argument("--server-name", default=None, help="server name shown in server_status")
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return p.parse_args(argv)


async def _serve(args: argparse.Namespace, argv: Sequence[str]) -> None:
    server = RethinkDBStandIn(
        args.data_dir,
        host=args.host,
        port=args.port,
        admin_password=args.admin_password,
        server_name=args.server_name,
        argv=argv,
    )
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("signal received, shutting down")
    await server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry: serve until SIGTERM/SIGINT, exit 0; exit 1 if the server cannot start."""
    args = _parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s rethinkdb-standin[%(process)d] %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    full_argv = [sys.executable, "-m", "sandbox.standins.rethinkdb", *(sys.argv[1:] if argv is None else argv)]
    try:
        asyncio.run(_serve(args, full_argv))
    except (OSError, RuntimeError, ValueError, KeyError) as e:
        log.error("cannot run: %s", e)
        return 1
    return 0


def supported_terms() -> list[str]:
    """The names of the terms this stand-in evaluates (for docs and tests)."""
    return [t.name for t in T]


if __name__ == "__main__":
    sys.exit(main())
