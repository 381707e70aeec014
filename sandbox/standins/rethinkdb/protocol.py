"""Wire vocabulary of ql2.proto (magic numbers, query, response, error and term types, argument specs)
and the errors a query or a handshake fails with: what every other module of the stand-in speaks.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from enum import IntEnum
from typing import NoReturn

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
