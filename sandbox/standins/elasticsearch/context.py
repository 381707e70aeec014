"""A request after negotiation (Ctx), the route table's types, parsed bulk actions, and the index-name
and id checks the routes share.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from sandbox.standins.elasticsearch.protocol import EsError, MediaType, _token_name, parse_json, validation_failed
from sandbox.standins.elasticsearch.queries import JsonObj, _cmp_key
from sandbox.standins.elasticsearch.storage import ApiKey

# -- request context ---------------------------------------------------------------------------------


@dataclass
class Ctx:
    """One request, after media-type negotiation."""

    request: web.Request
    method: str
    parts: list[str]
    body: bytes
    accept: MediaType | None
    content_type: MediaType | None
    compat: int
    started: float
    user: str = "elastic"
    api_key: ApiKey | None = None

    @property
    def params(self) -> Mapping[str, str]:
        return self.request.query

    def took(self) -> int:
        return int((time.monotonic() - self.started) * 1000)

    def json_body(self) -> Any:
        """The JSON request body, or None if there is none."""
        if not self.body.strip():
            return None
        return parse_json(self.body)

    def json_object(self, *, required: bool = False) -> JsonObj:
        value = self.json_body()
        if value is None:
            if required:
                raise EsError(400, "parse_exception", "request body is required")
            return {}
        if not isinstance(value, dict):
            raise EsError(
                400,
                "x_content_parse_exception",
                f"[1:1] Expected [START_OBJECT] but found [{_token_name(value)}]",
            )
        return value


Handler = Callable[[Ctx, dict[str, str]], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    """A path pattern (`{index}`, `{id}`, `{user}` are parameters) and the handler per HTTP method."""

    pattern: tuple[str, ...]
    methods: dict[str, Handler]


@dataclass
class BulkOp:
    """One parsed bulk action; its source line is parsed later so a bad document fails only its item."""

    action: str
    index: str | None
    doc_id: str | None
    source_text: str | None
    line: int
    op_type_create: bool = False


BULK_META_KEYS: Final = frozenset(
    [
        "_index",
        "_id",
        "routing",
        "version",
        "version_type",
        "if_seq_no",
        "if_primary_term",
        "pipeline",
        "retry_on_conflict",
        "require_alias",
        "require_data_stream",
        "dynamic_templates",
        "_source",
        "op_type",
        "list_executed_pipelines",
    ]
)
_INVALID_INDEX_CHARS: Final = ("\\", "/", "*", "?", '"', "<", ">", "|", " ", ",")


def validate_index_name(name: str) -> None:
    """The checks of MetadataCreateIndexService.validateIndexOrAliasName / validateIndexName."""

    def invalid(why: str) -> EsError:
        return EsError(
            400,
            "invalid_index_name_exception",
            f"Invalid index name [{name}], {why}",
            fields={"index_uuid": "_na_", "index": name},
        )

    if any(c in name for c in _INVALID_INDEX_CHARS):
        raise invalid('must not contain the following characters [ , ", *, \\, <, |, ,, >, /, ?]')
    if "#" in name:
        raise invalid("must not contain '#'")
    if ":" in name:
        raise invalid("must not contain ':'")
    if name[:1] in ("_", "-", "+"):
        raise invalid("must not start with '_', '-', or '+'")
    if name.lower() != name:
        raise invalid("must be lowercase")
    if name in (".", ".."):
        raise invalid("must not be '.' or '..'")
    if not name:
        raise invalid("must not be empty")
    size = len(name.encode("utf-8"))
    if size > 255:
        raise invalid(f"index name is too long, ({size} > 255)")


def validate_doc_id(doc_id: str) -> None:
    if doc_id == "":
        raise validation_failed(["if _id is specified it must not be empty"])
    size = len(doc_id.encode("utf-8"))
    if size > 512:
        raise validation_failed([f"id [{doc_id}] is too long, must be no longer than 512 bytes but was: {size}"])


def _row_key(column: str) -> Callable[[dict[str, str]], tuple[int, Any]]:
    return lambda row: _cmp_key(row[column])


def _human_bytes(n: int) -> str:
    if n < 1024:
        return f"{n}b"
    for unit in ("kb", "mb", "gb"):
        n_f = n / 1024
        if n_f < 1024 or unit == "gb":
            text = f"{n_f:.1f}".rstrip("0").rstrip(".")
            return f"{text}{unit}"
        n = int(n_f)
    return f"{n}b"
