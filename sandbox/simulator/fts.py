"""PostgreSQL full-text search, as era D's rest-api serves its list routes (placeos-2026.md §1).

What it reproduces, from the PlaceOS source (read, not copied):

* The schema, models ``6d3a9ad`` (#324; migration ``20260810100500000_add_search_vector_columns.sql``):
  each searchable table has ``search_vector tsvector GENERATED ALWAYS AS (to_tsvector('simple', ...))
  STORED`` with a GIN index, PostgreSQL keeping it current, so there is no index lag. Emails are
  indexed whole and split on ``[@._]`` (``placeos_fts_email``), URIs and file paths split on punctuation
  (``placeos_fts_uri``). The sandbox stores rows as ``(id, doc jsonb)`` (sandbox.simulator.db), so the
  same expressions read ``doc->>'field'`` and the ``text[]`` columns (``features``, ``tags``) are jsonb
  arrays joined by an immutable helper in place of models' ``placeos_fts_join(text[])``.
* ``q`` to tsquery, rest-api ``src/placeos-rest-api/utilities/text-search.cr`` at ``ee8db8e`` (added by
  #445 ``51faa1a``, token semantics of #446 ``400c1a5``): input cut to 512 characters, one ordered scan
  that keeps email addresses whole (quoted), drops ``field:`` prefixes and collects words of letters and
  digits, drops the operator words and/or/not, keeps at most 16 tokens, ORs them and makes the last
  one a prefix (``:*``). Nothing searchable (blank, ``*``) means no text filter. It never raises.
* The query, rest-api ``controllers/application.cr`` ``paginate_search``/``paginate_sql`` (51faa1a):
  ``search_vector @@ to_tsquery('simple', ?)``, ``ORDER BY name, id``, the total counted without the
  order, ``limit`` clamped to 0..10000 and ``offset`` to 0..1000000. ``controllers/modules.cr``: modules
  also match on their driver's vector (``EXISTS``) and are ordered ``custom_name, name, id``.
"""

from __future__ import annotations

import re
from typing import Any

from sandbox.simulator.db import ConfigDB, DBError, PostgresConfigDB, _load

MAX_QUERY_CHARS = 512
MAX_TOKENS = 16
OPERATOR_WORDS = frozenset({"and", "or", "not"})
MAX_LIMIT = 10_000
MAX_OFFSET = 1_000_000

# text-search.cr's EMAIL and TOKENIZER with Python classes: [^\W_] is \p{L}\p{N}, [^\W\d_] is \p{L}.
_EMAIL = r"(?:[^\W_]|[._%+-])+@(?:[^\W_]|[.-])+\.[^\W\d_]{2,}"
_TOKENIZER = re.compile(rf"({_EMAIL})|[\w.]+\s*:|([^\W_]+)")


def tsquery(q: str | None) -> str | None:
    """``Utils::TextSearch.tsquery``: the argument for ``to_tsquery('simple', ...)``, or None."""
    if q is None:
        return None
    q = q[:MAX_QUERY_CHARS]
    tokens: list[str] = []
    for match in _TOKENIZER.finditer(q):
        if len(tokens) >= MAX_TOKENS:
            break
        address, word = match.group(1), match.group(2)
        if address:
            tokens.append(f"'{address}'")
        elif word and word.lower() not in OPERATOR_WORDS:
            tokens.append(word)
    if not tokens:
        return None
    tokens[-1] += ":*"
    return " | ".join(tokens)


# --------------------------------------------------------------------------------------- the schema


def _text(field: str) -> str:
    return f"COALESCE(doc->>'{field}', '')"


def _email(field: str) -> str:
    return f"placeos_fts_email(doc->>'{field}')"


def _uri(field: str) -> str:
    return f"placeos_fts_uri(doc->>'{field}')"


def _array(field: str) -> str:
    return f"placeos_fts_jsonb_join(doc->'{field}')"


_ID = "COALESCE(id, '')"

# Table -> the parts of its vector, in the migration's order (models 6d3a9ad). `doorkeeper_app` is the
# seed's name for the OAuth application table (`oauth_applications` in models since era B).
VECTORS: dict[str, tuple[str, ...]] = {
    "sys": (
        *map(_text, ("name", "display_name", "code", "type", "description")),
        _array("features"),
        _email("email"),
        _ID,
    ),
    "mod": (*map(_text, ("custom_name", "name", "ip")), _uri("uri"), _text("notes"), _ID),
    "driver": (
        _text("name"),
        _text("module_name"),
        _uri("file_name"),
        _text("description"),
        _uri("default_uri"),
        _ID,
    ),
    "zone": (
        *map(_text, ("name", "display_name", "code", "type", "description", "location")),
        _array("tags"),
        _ID,
    ),
    "user": (
        _text("name"),
        _text("nickname"),
        _email("email"),
        *map(_text, ("login_name", "staff_id", "first_name", "last_name", "department", "building", "phone")),
        _ID,
    ),
    "repo": (_text("name"), _text("folder_name"), _uri("uri"), _text("description"), _text("branch"), _ID),
    "trigger": (_text("name"), _text("description"), _ID),
    "authority": (_text("name"), _text("domain"), _text("description"), _ID),
    "api_key": (_text("name"), _text("description"), _ID),
    "doorkeeper_app": (_text("name"), _text("uid"), _text("redirect_uri"), _ID),
}

# array_to_string is only STABLE, so models wraps it in an IMMUTABLE function; same here for jsonb.
_FUNCTIONS = (
    """CREATE OR REPLACE FUNCTION placeos_fts_jsonb_join(arr jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT COALESCE((SELECT string_agg(e, ' ') FROM jsonb_array_elements_text(
    CASE WHEN jsonb_typeof(arr) = 'array' THEN arr ELSE '[]'::jsonb END) AS e), '')
$$""",
    """CREATE OR REPLACE FUNCTION placeos_fts_email(addr text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT regexp_replace(COALESCE(addr, ''), '[@._]', ' ', 'g') || ' ' || COALESCE(addr, '')
$$""",
    """CREATE OR REPLACE FUNCTION placeos_fts_uri(addr text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT regexp_replace(COALESCE(addr, ''), '[^[:alnum:]]+', ' ', 'g') || ' ' || COALESCE(addr, '')
$$""",
)


def migration_sql(tables: tuple[str, ...] | None = None) -> list[str]:
    """The statements adding the generated vectors and their GIN indexes (idempotent, as models')."""
    statements = list(_FUNCTIONS)
    for table, parts in VECTORS.items():
        if tables is not None and table not in tables:
            continue
        expression = " || ' ' || ".join(parts)
        statements.append(
            f'ALTER TABLE "{table}" ADD COLUMN IF NOT EXISTS search_vector tsvector '
            f"GENERATED ALWAYS AS (to_tsvector('simple', {expression})) STORED"
        )
        statements.append(
            f'CREATE INDEX IF NOT EXISTS idx_{table}_search_vector ON "{table}" USING GIN (search_vector)'
        )
    return statements


async def migrate(db: ConfigDB, tables: tuple[str, ...]) -> None:
    """Add the era-D search columns to the seeded tables (PostgreSQL only)."""
    if not isinstance(db, PostgresConfigDB):
        raise DBError("full-text search columns need PostgreSQL")

    async def go(conn: Any) -> None:
        async with conn.transaction():
            for statement in migration_sql(tables):
                await conn.execute(statement)

    await db.run("migrate (search_vector)", go)


# --------------------------------------------------------------------------------------- the query

ORDER = {"mod": "t.doc->>'custom_name', t.doc->>'name', t.id"}
_DEFAULT_ORDER = "t.doc->>'name', t.id"


def clamp(value: str | None, default: int, high: int) -> int:
    """``(params["x"]?.try(&.to_i?) || default).clamp(0, high)`` (application.cr search_limit/offset)."""
    try:
        number = int(value) if value is not None else default
    except ValueError:
        number = default
    return max(0, min(number, high))


async def search(db: ConfigDB, table: str, q: str | None, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
    """One page of ``table`` matching ``q`` and the total: what ``paginate_search`` runs."""
    if not isinstance(db, PostgresConfigDB):
        raise DBError("full-text search needs PostgreSQL")
    if table not in VECTORS:
        raise DBError(f"{table} has no search_vector")
    tsq = tsquery(q)
    where, args = "true", []
    if tsq is not None:
        match = "t.search_vector @@ to_tsquery('simple', $1)"
        if table == "mod":  # has_parent(Driver) parity: a module matches on its driver's text too
            match = (
                f"({match} OR EXISTS (SELECT 1 FROM driver d WHERE d.id = t.doc->>'driver_id' "  # noqa: S608
                "AND d.search_vector @@ to_tsquery('simple', $1)))"
            )
        where, args = match, [tsq]
    # Only the table (a VECTORS key), constant clauses and placeholders are spliced; values are bound.
    n, order = len(args), ORDER.get(table, _DEFAULT_ORDER)
    count_sql = f'SELECT count(*) FROM "{table}" t WHERE {where}'  # noqa: S608
    page_sql = f'SELECT t.doc::text FROM "{table}" t WHERE {where} ORDER BY {order} OFFSET ${n + 1} LIMIT ${n + 2}'  # noqa: S608

    async def go(conn: Any) -> tuple[list[dict[str, Any]], int]:
        total = int(await conn.fetchval(count_sql, *args))
        rows = await conn.fetch(page_sql, *args, offset, limit)
        return [_load(r[0]) for r in rows], total

    result: tuple[list[dict[str, Any]], int] = await db.run(f"search {table}", go)
    return result
