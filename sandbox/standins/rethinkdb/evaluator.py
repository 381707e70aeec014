"""Evaluation core: the values terms produce, the compile pass (term_walker.cc), the handler registry and
the Evaluator. The handlers themselves live in the terms* modules.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sandbox.standins.rethinkdb.datum import (
    as_str,
    check_pkey,
    equal,
    is_num,
    make_time,
    pprint,
    trunc_print,
    truthy,
    type_name,
)
from sandbox.standins.rethinkdb.protocol import (
    ARGSPEC,
    TERM_NAMES,
    ErrorType,
    Frame,
    ReqlFailure,
    ResponseType,
    T,
    compile_error,
    fail,
    op_failed,
)
from sandbox.standins.rethinkdb.storage import ServerState, Table

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
