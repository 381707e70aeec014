"""The query DSL over stored documents (compiled to matchers), sorting and `_source` filtering, as
`_search` and `_count` use them.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sandbox.standins.elasticsearch.protocol import EsError, _token_name, bad_request, parsing_error, unsupported

# -- documents and queries ---------------------------------------------------------------------------

JsonObj = dict[str, Any]


@dataclass(frozen=True)
class DocView:
    """One stored document as the query matchers see it."""

    index: str
    doc_id: str
    source: JsonObj
    keyword_fields: frozenset[str]
    ordinal: int


Matcher = Callable[[DocView], bool]


def _flatten(values: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if isinstance(v, list):
            out.extend(_flatten(v))
        elif v is not None:
            out.append(v)
    return out


def _values_at(obj: Any, parts: Sequence[str]) -> list[Any]:
    if not parts:
        return _flatten([obj])
    if isinstance(obj, list):
        return [v for item in obj for v in _values_at(item, parts)]
    if not isinstance(obj, dict):
        return []
    out: list[Any] = []
    # "a.b" may be one key with a dot in it or a path through objects; both are the same field in ES.
    for i in range(len(parts), 0, -1):
        key = ".".join(parts[:i])
        if key in obj:
            out.extend(_values_at(obj[key], parts[i:]))
    return out


def field_values(doc: DocView, path: str) -> tuple[list[Any], bool]:
    """The values of `path` in the document, and whether they compare as exact (keyword) values."""
    exact = path in doc.keyword_fields
    values = _values_at(doc.source, path.split("."))
    if not values and path.endswith(".keyword"):
        values = [v for v in _values_at(doc.source, path[: -len(".keyword")].split(".")) if isinstance(v, str)]
        exact = True
    return values, exact


def _leaves(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(obj, dict):
        return [leaf for k, v in obj.items() for leaf in _leaves(v, f"{prefix}{k}.")]
    if isinstance(obj, list):
        return [leaf for v in obj for leaf in _leaves(v, prefix)]
    return [] if obj is None else [(prefix[:-1], obj)]


def _fields_matching(doc: DocView, patterns: Sequence[str]) -> list[tuple[Any, bool]]:
    """(value, exact) pairs of every field selected by names or wildcard patterns ("*", "name*")."""
    out: list[tuple[Any, bool]] = []
    for pattern in patterns:
        if any(c in pattern for c in "*?"):
            for path, value in _leaves(doc.source):
                if fnmatch.fnmatchcase(path, pattern):
                    out.append((value, path in doc.keyword_fields))
        else:
            values, exact = field_values(doc, pattern)
            out.extend((v, exact) for v in values)
    return out


_WORD_RE: Final = re.compile(r"\w+")


def tokens(value: Any) -> list[str]:
    """The standard analyzer, roughly: lowercase word tokens."""
    return _WORD_RE.findall(_as_text(value).lower())


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return _as_text(a).lower() == _as_text(b).lower()
    if isinstance(a, (int, float)) or isinstance(b, (int, float)):
        try:
            return float(a) == float(b)
        except (TypeError, ValueError):
            return False
    return bool(a == b)


def _term_hit(stored: Any, exact: bool, wanted: Any, case_insensitive: bool = False) -> bool:
    if isinstance(stored, str) and isinstance(wanted, str):
        if case_insensitive:
            return stored.lower() == wanted.lower() or (not exact and wanted.lower() in tokens(stored))
        return stored == wanted or (not exact and wanted in tokens(stored))
    return _same(stored, wanted)


def _single_field(kind: str, spec: Any, value_keys: Sequence[str]) -> tuple[str, Any, JsonObj]:
    """Split `{field: value}` or `{field: {value_key: v, ...}}` (plus `boost`) as the real parsers do."""
    if not isinstance(spec, dict):
        raise parsing_error(f"[{kind}] query malformed, no start_object after query name")
    names = [k for k in spec if k not in ("boost", "_name")]
    if len(names) != 1:
        if not names:
            raise parsing_error(f"[{kind}] query doesn't support an empty field")
        raise parsing_error(f"[{kind}] query doesn't support multiple fields, found [{names[0]}] and [{names[1]}]")
    name = names[0]
    body = spec[name]
    if isinstance(body, dict):
        for key in value_keys:
            if key in body:
                return name, body[key], body
        raise parsing_error(f"[{kind}] query does not support [{next(iter(body), '')}]")
    if isinstance(body, list):
        raise parsing_error(f"[{kind}] query does not support array of values")
    return name, body, {}


def _clauses(spec: Any, kind: str) -> list[Matcher]:
    if isinstance(spec, dict):
        return [compile_query(spec)]
    if isinstance(spec, list):
        return [compile_query(item) for item in spec]
    raise parsing_error(f"[bool] query does not support [{kind}] of type {_token_name(spec)}")


def _min_should(spec: Any, n_should: int) -> int:
    if spec is None:
        return 0
    text = str(spec).strip()
    try:
        if text.endswith("%"):
            pct = int(text[:-1])
            count = n_should * abs(pct) // 100
            return count if pct >= 0 else n_should - count
        value = int(text)
    except ValueError:
        raise bad_request(f"Invalid minimum_should_match value [{spec}]") from None
    return value if value >= 0 else n_should + value


def _q_bool(spec: Any) -> Matcher:
    if not isinstance(spec, dict):
        raise parsing_error("[bool] query malformed, no start_object after query name")
    must: list[Matcher] = []
    must_not: list[Matcher] = []
    should: list[Matcher] = []
    msm_spec: Any = None
    for key, value in spec.items():
        if key in ("must", "filter"):
            must.extend(_clauses(value, key))
        elif key == "must_not":
            must_not.extend(_clauses(value, key))
        elif key == "should":
            should.extend(_clauses(value, key))
        elif key == "minimum_should_match":
            msm_spec = value
        elif key in ("boost", "_name", "adjust_pure_negative"):
            continue
        else:
            raise parsing_error(f"[bool] query does not support [{key}]")
    msm = _min_should(msm_spec, len(should)) if msm_spec is not None else (0 if must else 1)
    if not should:
        msm = 0

    def match(doc: DocView) -> bool:
        if not all(m(doc) for m in must) or any(m(doc) for m in must_not):
            return False
        return msm <= 0 or sum(1 for m in should if m(doc)) >= msm

    return match


def _q_term(spec: Any) -> Matcher:
    name, wanted, opts = _single_field("term", spec, ("value",))
    if isinstance(wanted, (dict, list)) or wanted is None:
        raise parsing_error(f"[term] query does not support a value of type {_token_name(wanted)}")
    ci = bool(opts.get("case_insensitive", False))

    def match(doc: DocView) -> bool:
        values, exact = field_values(doc, name)
        return any(_term_hit(v, exact, wanted, ci) for v in values)

    return match


def _q_terms(spec: Any) -> Matcher:
    if not isinstance(spec, dict):
        raise parsing_error("[terms] query malformed, no start_object after query name")
    names = [k for k in spec if k not in ("boost", "_name")]
    if len(names) != 1:
        raise parsing_error("[terms] query requires exactly one field")
    name = names[0]
    wanted = spec[name]
    if not isinstance(wanted, list):
        if isinstance(wanted, dict):
            raise unsupported("[terms] lookup")
        raise parsing_error(f"[terms] query does not support [{name}]")

    def match(doc: DocView) -> bool:
        values, exact = field_values(doc, name)
        return any(_term_hit(v, exact, w) for v in values for w in wanted)

    return match


def _q_ids(spec: Any) -> Matcher:
    if not isinstance(spec, dict) or not isinstance(spec.get("values", []), list):
        raise parsing_error("[ids] query malformed, [values] must be an array")
    wanted = {str(v) for v in spec.get("values", [])}
    return lambda doc: doc.doc_id in wanted


def _q_exists(spec: Any) -> Matcher:
    if not isinstance(spec, dict) or not isinstance(spec.get("field"), str):
        raise parsing_error("[exists] must be provided with a [field]")
    name = spec["field"]
    return lambda doc: bool(_fields_matching(doc, [name]))


def _q_prefix(spec: Any) -> Matcher:
    name, wanted, opts = _single_field("prefix", spec, ("value", "prefix"))
    prefix = _as_text(wanted)
    ci = bool(opts.get("case_insensitive", False))

    def match(doc: DocView) -> bool:
        values, exact = field_values(doc, name)
        for v in values:
            candidates = [_as_text(v)] if exact else [_as_text(v), *tokens(v)]
            for c in candidates:
                if (c.lower().startswith(prefix.lower())) if ci else c.startswith(prefix):
                    return True
        return False

    return match


def _q_wildcard(spec: Any) -> Matcher:
    name, wanted, opts = _single_field("wildcard", spec, ("value", "wildcard"))
    pattern = _as_text(wanted)
    ci = bool(opts.get("case_insensitive", False))

    def match(doc: DocView) -> bool:
        values, exact = field_values(doc, name)
        for v in values:
            for c in [_as_text(v)] if exact else [_as_text(v), *tokens(v)]:
                if fnmatch.fnmatchcase(c.lower() if ci else c, pattern.lower() if ci else pattern):
                    return True
        return False

    return match


def _cmp_key(value: Any) -> tuple[int, Any]:
    """Order numbers before strings before everything else, never comparing across types."""
    if isinstance(value, bool):
        return (0, float(value))
    if isinstance(value, (int, float)):
        return (0, float(value))
    if isinstance(value, str):
        try:
            return (0, float(value))
        except ValueError:
            return (1, value)
    return (2, _as_text(value))


def _q_range(spec: Any) -> Matcher:
    if not isinstance(spec, dict) or len([k for k in spec if k != "boost"]) != 1:
        raise parsing_error("[range] query requires exactly one field")
    name = next(k for k in spec if k != "boost")
    bounds = spec[name]
    if not isinstance(bounds, dict):
        raise parsing_error(f"[range] query malformed, no start_object after query name [{name}]")
    ops: list[tuple[str, Any]] = []
    for key, value in bounds.items():
        if key in ("gte", "gt", "lte", "lt", "from", "to"):
            if value is not None:
                ops.append(("gte" if key == "from" else "lte" if key == "to" else key, value))
        elif key not in ("format", "time_zone", "boost", "relation", "include_lower", "include_upper"):
            raise parsing_error(f"[range] query does not support [{key}]")

    def within(v: Any) -> bool:
        kv = _cmp_key(v)
        for op, bound in ops:
            kb = _cmp_key(bound)
            if kv[0] != kb[0]:
                return False
            if (
                (op == "gte" and not kv >= kb)
                or (op == "gt" and not kv > kb)
                or (op == "lte" and not kv <= kb)
                or (op == "lt" and not kv < kb)
            ):
                return False
        return True

    return lambda doc: any(within(v) for v in field_values(doc, name)[0])


def _text_match(values: Sequence[tuple[Any, bool]], query: Any, operator: str) -> bool:
    wanted = tokens(query)
    if not wanted:
        return False
    have: set[str] = set()
    for v, exact in values:
        if exact:
            if _same(v, query):
                return True
            continue
        have.update(tokens(v))
    hits = [w in have for w in wanted]
    return all(hits) if operator == "and" else any(hits)


def _operator(value: Any) -> str:
    op = str(value or "or").lower()
    if op not in ("or", "and"):
        raise bad_request(f"No enum constant org.elasticsearch.index.query.Operator.{str(value).upper()}")
    return op


def _q_match(spec: Any) -> Matcher:
    name, query, opts = _single_field("match", spec, ("query",))
    op = _operator(opts.get("operator"))
    return lambda doc: _text_match(_fields_matching(doc, [name]), query, op)


def _q_match_phrase(spec: Any) -> Matcher:
    name, query, _opts = _single_field("match_phrase", spec, ("query",))
    wanted = " ".join(tokens(query))

    def match(doc: DocView) -> bool:
        return any(
            f" {wanted} " in f" {' '.join(tokens(v))} " if not exact else _same(v, query)
            for v, exact in _fields_matching(doc, [name])
        )

    return match


def _field_list(spec: JsonObj, default: Sequence[str]) -> list[str]:
    fields = spec.get("fields")
    if fields is None:
        single = spec.get("default_field")
        fields = [single] if isinstance(single, str) else list(default)
    if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
        raise parsing_error("[fields] must be an array of strings")
    return ["*" if f in ("_all", "*.*") else f.split("^", 1)[0] for f in fields]


def _q_multi_match(spec: Any) -> Matcher:
    if not isinstance(spec, dict) or "query" not in spec:
        raise parsing_error("[multi_match] requires query value")
    fields = _field_list(spec, ["*"])
    op = _operator(spec.get("operator"))
    query = spec["query"]
    return lambda doc: _text_match(_fields_matching(doc, fields), query, op)


_QS_TERM_RE: Final = re.compile(r'([+-]?)(?:([\w.*@-]+):)?("(?:[^"\\]|\\.)*"|[^\s"]+)')


def compile_query_string(query: str, fields: Sequence[str], default_operator: str) -> Matcher:
    """A simplified query_string: each term is a case-insensitive substring match on the chosen fields.

    Supports `field:term`, quoted phrases, `+term` / `-term`, `AND` / `OR` / `NOT` / `&&` / `||` / `!`,
    and `*` / `?` wildcards. Parentheses are ignored (no grouping).
    """
    required: list[tuple[str | None, str]] = []
    excluded: list[tuple[str | None, str]] = []
    optional: list[tuple[str | None, str]] = []
    operator = default_operator
    negate_next = False
    for m in _QS_TERM_RE.finditer(query.replace("(", " ").replace(")", " ")):
        modifier, fieldname, term = m.group(1), m.group(2), m.group(3)
        if not fieldname and term in ("AND", "&&"):
            operator = "and"
            continue
        if not fieldname and term in ("OR", "||"):
            continue
        if not fieldname and term in ("NOT", "!"):
            negate_next = True
            continue
        if term.startswith("!"):
            term, negate_next = term[1:], True
        text = term[1:-1] if len(term) >= 2 and term.startswith('"') and term.endswith('"') else term
        entry = (fieldname, text.lower())
        if modifier == "-" or negate_next:
            excluded.append(entry)
        elif modifier == "+":
            required.append(entry)
        else:
            optional.append(entry)
        negate_next = False
    if operator == "and":
        required, optional = required + optional, []
    if not (required or optional or excluded):
        return lambda doc: False

    def term_hit(doc: DocView, entry: tuple[str | None, str]) -> bool:
        fieldname, text = entry
        values = _fields_matching(doc, [fieldname] if fieldname else fields)
        if text in ("*", ""):
            return bool(values)
        core = text.strip("*")
        if any(c in core for c in "*?"):
            pattern = f"*{core}*"
            return any(fnmatch.fnmatchcase(_as_text(v).lower(), pattern) for v, _ in values)
        return any(core in _as_text(v).lower() for v, _ in values)

    def match(doc: DocView) -> bool:
        if any(term_hit(doc, e) for e in excluded) or not all(term_hit(doc, e) for e in required):
            return False
        return not optional or any(term_hit(doc, e) for e in optional)

    return match


def _q_query_string(kind: str) -> Callable[[Any], Matcher]:
    def build(spec: Any) -> Matcher:
        if not isinstance(spec, dict) or not isinstance(spec.get("query"), str):
            raise parsing_error(f"[{kind}] must be provided with a [query]")
        op = _operator(spec.get("default_operator"))
        return compile_query_string(spec["query"], _field_list(spec, ["*"]), op)

    return build


def _q_constant_score(spec: Any) -> Matcher:
    if not isinstance(spec, dict) or "filter" not in spec:
        raise parsing_error("[constant_score] requires a 'filter' element")
    return compile_query(spec["filter"])


QUERY_BUILDERS: Final[dict[str, Callable[[Any], Matcher]]] = {
    "match_all": lambda spec: lambda doc: True,
    "match_none": lambda spec: lambda doc: False,
    "bool": _q_bool,
    "term": _q_term,
    "terms": _q_terms,
    "ids": _q_ids,
    "exists": _q_exists,
    "prefix": _q_prefix,
    "wildcard": _q_wildcard,
    "range": _q_range,
    "match": _q_match,
    "match_phrase": _q_match_phrase,
    "multi_match": _q_multi_match,
    "query_string": _q_query_string("query_string"),
    "simple_query_string": _q_query_string("simple_query_string"),
    "constant_score": _q_constant_score,
}
KNOWN_UNSUPPORTED_QUERIES: Final = frozenset(
    [
        "has_child",
        "has_parent",
        "parent_id",
        "nested",
        "script",
        "script_score",
        "function_score",
        "fuzzy",
        "regexp",
        "more_like_this",
        "geo_distance",
        "geo_bounding_box",
        "geo_shape",
        "dis_max",
        "boosting",
        "terms_set",
        "knn",
        "match_phrase_prefix",
        "match_bool_prefix",
        "combined_fields",
        "intervals",
        "span_term",
        "distance_feature",
        "rank_feature",
        "percolate",
        "pinned",
        "wrapper",
    ]
)


def compile_query(q: Any) -> Matcher:
    """Turn a query DSL object into a matcher, validating it like the server does before searching."""
    if not isinstance(q, dict):
        raise parsing_error("[_na] query malformed, must start with start_object")
    if not q:
        return lambda doc: True
    if len(q) != 1:
        first, second = list(q)[:2]
        raise parsing_error(f"[{first}] malformed query, expected [END_OBJECT] but found [FIELD_NAME] [{second}]")
    kind, spec = next(iter(q.items()))
    builder = QUERY_BUILDERS.get(kind)
    if builder is not None:
        return builder(spec)
    if kind in KNOWN_UNSUPPORTED_QUERIES:
        raise unsupported(f"the [{kind}] query")
    raise EsError(
        400,
        "parsing_exception",
        f"unknown query [{kind}]",
        caused_by={"type": "named_object_not_found_exception", "reason": f"[1:1] unknown field [{kind}]"},
    )


@dataclass(frozen=True)
class SortSpec:
    """One sort criterion; `_score` and `_doc` are the pseudo-fields Elasticsearch knows."""

    field: str
    desc: bool


def parse_sort(spec: Any) -> list[SortSpec]:
    """Body forms: "f", {"f": "desc"}, {"f": {"order": "desc"}}, or a list of those."""
    items = spec if isinstance(spec, list) else [spec]
    out: list[SortSpec] = []
    for item in items:
        if isinstance(item, str):
            out.append(SortSpec(item, item == "_score"))
            continue
        if not isinstance(item, dict) or len(item) != 1:
            raise parsing_error(f"[sort] malformed, unexpected token [{_token_name(item)}]")
        name, opts = next(iter(item.items()))
        order = opts.get("order", "desc" if name == "_score" else "asc") if isinstance(opts, dict) else opts
        if order not in ("asc", "desc"):
            raise bad_request(f"Unknown SortOrder [{order}]")
        out.append(SortSpec(name, order == "desc"))
    return out


def parse_sort_param(raw: str) -> list[SortSpec]:
    """URL form: `field`, `field:desc`, comma separated."""
    out: list[SortSpec] = []
    for part in filter(None, (p.strip() for p in raw.split(","))):
        name, _, order = part.partition(":")
        if order and order not in ("asc", "desc"):
            raise bad_request(f"Unknown SortOrder [{order}]")
        out.append(SortSpec(name, order == "desc" if order else name == "_score"))
    return out


def _sort_value(doc: DocView, spec: SortSpec) -> Any:
    if spec.field == "_doc":
        return doc.ordinal
    if spec.field == "_score":
        return 1.0
    values = [v for v in field_values(doc, spec.field)[0] if not isinstance(v, (dict, list))]
    if not values:
        return None
    keyed = sorted(values, key=_cmp_key)
    return keyed[-1] if spec.desc else keyed[0]


def _sort_docs(docs: list[DocView], specs: Sequence[SortSpec]) -> list[tuple[DocView, list[Any]]]:
    keyed = [(d, [_sort_value(d, s) for s in specs]) for d in docs]

    def compare(a: tuple[DocView, list[Any]], b: tuple[DocView, list[Any]]) -> int:
        for spec, va, vb in zip(specs, a[1], b[1], strict=True):
            if va is None or vb is None:
                if va is None and vb is None:
                    continue
                return 1 if va is None else -1  # missing values sort last in both directions
            ka, kb = _cmp_key(va), _cmp_key(vb)
            if ka != kb:
                result = -1 if ka < kb else 1
                return -result if spec.desc else result
        return a[0].ordinal - b[0].ordinal

    return sorted(keyed, key=functools.cmp_to_key(compare))


@dataclass(frozen=True)
class SourceFilter:
    """`_source` filtering (false, field patterns, includes/excludes), applied to hits and GETs."""

    enabled: bool = True
    includes: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()

    def apply(self, source: JsonObj) -> JsonObj | None:
        if not self.enabled:
            return None
        if not self.includes and not self.excludes:
            return source
        return self._filter(source, "")

    def _hit(self, patterns: Sequence[str], path: str) -> bool:
        parts = path.split(".")
        prefixes = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
        return any(fnmatch.fnmatchcase(p, pat) for pat in patterns for p in prefixes)

    def _filter(self, obj: JsonObj, prefix: str) -> JsonObj:
        out: JsonObj = {}
        for key, value in obj.items():
            path = f"{prefix}{key}"
            if self.excludes and self._hit(self.excludes, path):
                continue
            if isinstance(value, dict):
                sub = self._filter(value, f"{path}.")
                if sub or (not value and (not self.includes or self._hit(self.includes, path))):
                    out[key] = sub
            elif not self.includes or self._hit(self.includes, path):
                out[key] = value
        return out


def _patterns(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(p for p in value.split(",") if p)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise parsing_error(f"[{what}] must be a string or an array of strings")


def parse_source_filter(body_value: Any, params: Mapping[str, str]) -> SourceFilter:
    sf = SourceFilter()
    if body_value is not None:
        if isinstance(body_value, bool):
            sf = SourceFilter(enabled=body_value)
        elif isinstance(body_value, (str, list)):
            sf = SourceFilter(includes=_patterns(body_value, "_source"))
        elif isinstance(body_value, dict):
            inc = body_value.get("includes", body_value.get("include"))
            exc = body_value.get("excludes", body_value.get("exclude"))
            sf = SourceFilter(includes=_patterns(inc, "includes"), excludes=_patterns(exc, "excludes"))
        else:
            raise parsing_error(f"[_source] does not support a value of type {_token_name(body_value)}")
    raw = params.get("_source")
    if raw is not None:
        if raw in ("true", "false"):
            sf = SourceFilter(enabled=raw == "true")
        else:
            sf = SourceFilter(includes=_patterns(raw, "_source"))
    if "_source_includes" in params or "_source_excludes" in params:
        sf = SourceFilter(
            includes=_patterns(params.get("_source_includes"), "_source_includes") or sf.includes,
            excludes=_patterns(params.get("_source_excludes"), "_source_excludes") or sf.excludes,
        )
    return sf


def _deep_merge(base: JsonObj, patch: JsonObj) -> JsonObj:
    out = dict(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out
