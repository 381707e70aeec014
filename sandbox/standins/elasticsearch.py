"""A wire-faithful Elasticsearch stand-in (one node, 8.14.3 or 7.17.6) for the sandbox.

Elasticsearch cannot be installed here, so this aiohttp server answers the part of the REST API that
PlaceOS and the exporter use, with the real status codes, headers and error bodies, so that the
official `elasticsearch` Python client (8.x, sync and async) accepts it unchanged.

Built from internals §4 (Elasticsearch in PlaceOS): one index per mirrored table named after the table
(`sys`, `mod`, `driver`, `zone`, `authority`, `user`, `api_key`, ...); search-ingest mirrors rows with
`/_bulk` and checks `GET /_cluster/health` (green/yellow healthy, red or non-2xx unhealthy); rest-api
lists with `/<index>/_search` and `/<index>/_count` and turns `hits.total` into `X-Total-Count`. The
partner-environment compose runs `elasticsearch:8.14.3` (Era C) or `7.17.6` (Era A), single node,
health-checked with `GET /_cat/health` (internals §8).

Run: `python -m sandbox.standins.elasticsearch --port P --data-dir DIR [--version 8.14.3|7.17.6]
[--password PW]`. Listens on 127.0.0.1:P, logs to stderr, exits 0 on SIGTERM/SIGINT.

What it reproduces
------------------
* `X-Elastic-Product: Elasticsearch` on every response (7.14+), which is the 8.x client's product check.
* Media types as the server's RestCompatibleVersionHelper checks them: `application/json` and
  `application/x-ndjson` always work; `application/vnd.elasticsearch+json; compatible-with=N` works for
  N = major and major-1 (8.x: 8 and 7; 7.17: 7 and 6). Anything else is HTTP 400
  `media_type_header_exception` "Invalid media-type value on headers [Accept, Content-Type]" caused by a
  `status_exception` "Accept version must be either version 8 or 7, but found 9. Accept=..." (wording
  confirmed from real 8.x reports, e.g. elastic/elasticsearch-py#2923, and the 8.x source). An Accept
  header listing several types (a comma) is a media range and is ignored, as the real parser does.
  8.x answers in the vnd type it was asked for (`application/vnd.elasticsearch+json;compatible-with=8`),
  else `application/json`; 7.x always answers `application/json; charset=UTF-8` (elastic/apm-server#6426).
  With `compatible-with=7` (or on 7.17) document and hit bodies carry `"_type": "_doc"`.
  A body with a Content-Type that is not JSON/NDJSON is 406 `Content-Type header [...] is not supported`.
* The 8.x Python client against a 7.17 server: the client rewrites every `application/json` it sends
  (Accept and Content-Type, including headers you pass with `headers=` or `.options(headers=...)`) to
  `application/vnd.elasticsearch+json; compatible-with=8` (elasticsearch/_sync/client/_base.py
  `mimetype_header_to_compat`, applied after merging user headers), so overriding headers does NOT
  help, and 7.17 rejects every call with a body or a plain Accept (`info()`, `search()`, `ping()` is
  False). What works: a node class that puts plain `application/json` / `application/x-ndjson` back on
  the wire just before sending, e.g.
  `class PlainJsonNode(Urllib3HttpNode)` (or `AiohttpHttpNode` for `AsyncElasticsearch`) whose
  `perform_request` replaces `application/vnd.elasticsearch+X; compatible-with=N` by `application/X`
  in the Accept and Content-Type headers, passed as `Elasticsearch(url, node_class=PlainJsonNode)`.
  Raw `perform_request` calls with explicit `compatible-with=7` headers also work (the client's rewrite
  does not touch vnd types). Quirk kept from the real parser: `cat.*` calls still work unmodified,
  because their Accept `text/plain,application/...` is a media range.
  ASSUMED (no 7.17 source or capture found): the 7.17 rejection has the same shape as 8.x with
  "Accept version must be either version 7 or 6, but found 8".
* `GET|HEAD /` info; `GET /_cluster/health[/<index>]` with `wait_for_status`, `timeout` and `level`
  (a red cluster answers 200 with `"status": "red"`; a wait that runs out answers 408 with
  `"timed_out": true`, as RestClusterHealthAction does; a missing named index waits, then 408 red);
  `GET /_cat/health`, `GET /_cat/indices[/<pattern>]` (text with `v`/`h`/`s`, or `format=json`).
* Indices: `PUT`, `HEAD`, `GET`, `DELETE /<index>` (real name validation, `resource_already_exists_exception`,
  404 `index_not_found_exception` body; 8.x refuses wildcard deletes, action.destructive_requires_name),
  `/_refresh`, `/<index>/_refresh`. Index names are PlaceOS table names (internals §4).
* Documents: `PUT|POST /<index>/_doc/<id>` (`op_type=create`), `POST /<index>/_doc`,
  `PUT|POST /<index>/_create/<id>`, `POST /<index>/_update/<id>` (`doc`, `upsert`, `doc_as_upsert`, noop),
  `GET|HEAD|DELETE /<index>/_doc/<id>`, `POST|PUT /_bulk` and `/<index>/_bulk` (index/create/update/delete,
  per-item `status`/`error`, top-level `errors`; malformed NDJSON is a 400 for the whole request).
  Writes auto-create the index. Versions, `_seq_no`, `_primary_term` behave like one shard.
* `GET|POST /[<index>/]_search` and `_count`: `from`/`size` (10 000 result window), `track_total_hits`
  (default 10 000 then `"relation": "gte"`, `false`, a number), `rest_total_hits_as_int`, `q=` with
  `df`/`default_operator`, `sort` (body or `field:desc` param), `_source` filtering, `post_filter`, and
  the queries `match_all`, `match_none`, `term`, `terms`, `ids`, `exists`, `prefix`, `wildcard`, `range`,
  `match`, `match_phrase`, `multi_match`, `query_string`, `simple_query_string`, `bool`
  (must/filter/should/must_not/minimum_should_match) and `constant_score`. Unknown index: 404
  `index_not_found_exception`; unknown query: 400 `parsing_exception` "unknown query [x]".
* Security (only with `--password`): HTTP basic for user `elastic`; a missing or wrong credential is 401
  `security_exception` ("missing authentication credentials for REST request [...]" / "unable to
  authenticate user [elastic] for REST request [...]") with the `WWW-Authenticate` challenges in the
  headers and in the body. `POST|PUT /_security/user/[<name>/]_password {"password": ...}` changes the
  password (the sandbox's `wrong-credentials` break). `POST|PUT /_security/api_key` creates a key
  (`id`, `api_key`, `encoded`) for `Authorization: ApiKey base64(id:api_key)`; `DELETE
  /_security/api_key {"ids": [...]}` invalidates; `GET /_security/_authenticate`. Without `--password`
  security is off, and `/_security/*` is the real 500 "Security must be explicitly enabled ...".
  `--password` seeds the password on first start only (like ELASTIC_PASSWORD); after a change the stored
  one wins, also across restarts.
* Red cluster (sandbox-controlled, see below): searches and counts on red indices are 503
  `search_phase_execution_exception` "all shards failed" with empty `root_cause`/`failed_shards` (the
  body operators post from red clusters; no_shard_available_action_exception per shard); if only some
  searched indices are red the answer is 200 with `_shards.failed` and `failures`. A GET of a document is
  503 `no_shard_available_action_exception`. Writes wait up to `timeout` (default 1m, as real) for the
  primary, then fail per item with 503 `unavailable_shards_exception`. Red/yellow is shown by
  `_cluster/health`, `_cat/health` and the `health` column of `_cat/indices`.
* Garbage (bad JSON, duplicate keys, bad NDJSON, wrong types) is a 400 with an Elasticsearch error body;
  a route that does not exist is 400 `{"error": "no handler found for uri [...] and method [...]"}`, a
  wrong method 405 "Incorrect HTTP method ...". An unexpected bug is a 500 `exception` body, never a
  traceback on the wire.

Data (indices, documents, API keys, the password hash, the health colour) lives in
`<data-dir>/state.json`, rewritten atomically (temp file, fsync, rename) after every change, so a restart
after SIGKILL finds it.

Sandbox-only control routes (no real API exists for these; no auth, JSON bodies, 200 on success)
-----------------------------------------------------------------------------------------------
* `POST /_sandbox/health {"status": "green"|"yellow"|"red", "indices": [..]?}`: set the cluster colour;
  with `indices` only those indices are red (default: all). Persisted.
* `GET /_sandbox/ready`: 200 `{"ready": true}` once serving.

Sources: confirmed vs assumed
-----------------------------
Confirmed from source or public reports: the client side (read in the installed elasticsearch 8.19 /
elastic-transport 8.19), the 8.x media-type checks and wording (RestCompatibleVersionHelper, RestRequest
MediaTypeHeaderException, reports of "found 9"), 7.x answering `application/json; charset=UTF-8`.
From memory of the server source, not re-checked here: 408 for a timed-out health wait, the flat 406 /
405 / "no handler found" bodies, the security_exception wording, the red-cluster search body (empty
`root_cause`), `unavailable_shards_exception` for writes. Assumed: the 7.17 rejection wording (above).

What it does not do
-------------------
Text analysis is approximated (lowercase word tokens, no stemming); `term` on an unmapped string also
accepts the whole value (real dynamic mapping would only match a token, mapped `keyword` fields are
exact); `query_string` is a case-insensitive substring match per term (`field:term`, `+`/`-`, `AND`/
`OR`/`NOT`, `*` wildcards), not the Lucene grammar; scores are a constant 1.0. Documents are searchable at
once (as if every write had `refresh=true`). No aggregations, scroll/PIT/search_after, join
(`has_child`), nested, scripts, aliases, templates, mappings beyond remembering them, other media types
(YAML/CBOR/Smile), unknown-URL-parameter validation, `filter_path`, or multi-node behaviour; these answer
400 or are ignored, as listed in the code. Build hashes and dates in `GET /` are illustrative; number,
flavor, Lucene and wire-compatibility versions are the real ones for each release.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import fnmatch
import functools
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote

from aiohttp import web
from multidict import CIMultiDict

log = logging.getLogger("sandbox.standins.elasticsearch")

CLUSTER_NAME: Final = "docker-cluster"  # the official image's default (compose sets no cluster.name)
NODE_NAME: Final = "es-sandbox"
STATE_FILE: Final = "state.json"
STATE_FORMAT: Final = 1
MAX_RESULT_WINDOW: Final = 10_000
DEFAULT_TRACK_TOTAL_HITS: Final = 10_000
COLOURS: Final = ("green", "yellow", "red")


@dataclass(frozen=True)
class ServerVersion:
    """What `GET /` reports for one release (number, Lucene and wire versions are the real ones)."""

    number: str
    lucene: str
    build_hash: str
    build_date: str
    min_wire: str
    min_index: str

    @property
    def major(self) -> int:
        return int(self.number.split(".", 1)[0])


VERSIONS: Final[dict[str, ServerVersion]] = {
    "8.14.3": ServerVersion(
        "8.14.3",
        "9.10.0",
        "d55f984299e0e88dee72ebd8255f7ff130859ad0",
        "2024-07-07T22:04:49.882652950Z",
        "7.17.0",
        "7.0.0",
    ),
    "7.17.6": ServerVersion(
        "7.17.6",
        "8.11.1",
        "f65e9d338dc1d07b642e14a27f338990148ee5b6",
        "2022-08-23T11:08:48.893373482Z",
        "6.8.0",
        "6.0.0-beta1",
    ),
}


# -- errors ------------------------------------------------------------------------------------------


class EsError(Exception):
    """A failure answered with the real structured body `{"error": {root_cause, type, reason, ...}, "status"}`."""

    def __init__(
        self,
        status: int,
        etype: str,
        reason: str | None,
        *,
        fields: Mapping[str, Any] | None = None,
        caused_by: Mapping[str, Any] | None = None,
        root_cause: list[dict[str, Any]] | None = None,
        extra: Mapping[str, Any] | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.etype = etype
        self.reason = reason
        self.fields = dict(fields or {})
        self.caused_by = dict(caused_by) if caused_by else None
        self.root_cause = root_cause
        self.extra = dict(extra or {})
        self.headers = list(headers)

    def cause(self) -> dict[str, Any]:
        """The error object alone, as used in bulk items and `_shards.failures`."""
        out: dict[str, Any] = {"type": self.etype, "reason": self.reason, **self.fields}
        if self.caused_by:
            out["caused_by"] = self.caused_by
        return out

    def body(self) -> dict[str, Any]:
        root = self.root_cause
        if root is None:
            root = [{"type": self.etype, "reason": self.reason, **self.fields}]
        err: dict[str, Any] = {"root_cause": root, "type": self.etype, "reason": self.reason}
        err.update(self.fields)
        err.update(self.extra)
        if self.caused_by:
            err["caused_by"] = self.caused_by
        return {"error": err, "status": self.status}


class FlatError(Exception):
    """ES's older flat error form `{"error": "text"[, "status": N]}` (406, 405, no handler found)."""

    def __init__(
        self, status: int, message: str, *, with_status: bool = True, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.with_status = with_status
        self.headers = list(headers)

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.message}
        if self.with_status:
            out["status"] = self.status
        return out


def bad_request(reason: str, etype: str = "illegal_argument_exception") -> EsError:
    return EsError(400, etype, reason)


def parsing_error(reason: str) -> EsError:
    return EsError(400, "parsing_exception", reason)


def unsupported(what: str) -> EsError:
    """A real feature this stand-in does not implement: say so plainly instead of answering wrongly."""
    return bad_request(f"{what} is not supported by the sandbox Elasticsearch stand-in")


def index_not_found(name: str) -> EsError:
    return EsError(
        404,
        "index_not_found_exception",
        f"no such index [{name}]",
        fields={"resource.type": "index_or_alias", "resource.id": name, "index_uuid": "_na_", "index": name},
    )


def validation_failed(messages: Sequence[str], etype: str = "action_request_validation_exception") -> EsError:
    text = "".join(f"{i}: {m};" for i, m in enumerate(messages, start=1))
    return EsError(400, etype, f"Validation Failed: {text}")


def _token_name(value: Any) -> str:
    """The Jackson token a JSON value starts with, for parser-style error messages."""
    if isinstance(value, dict):
        return "START_OBJECT"
    if isinstance(value, list):
        return "START_ARRAY"
    if isinstance(value, str):
        return "VALUE_STRING"
    if isinstance(value, bool):
        return "VALUE_BOOLEAN"
    if isinstance(value, (int, float)):
        return "VALUE_NUMBER"
    return "VALUE_NULL"


# -- JSON in -----------------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"Non-standard token '{name}'")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"Duplicate field '{key}'")
        out[key] = value
    return out


def parse_json(data: bytes | str, *, line: int = 1) -> Any:
    """Strict JSON like Elasticsearch's Jackson parser (no NaN, no duplicate keys), errors as 400s."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as exc:
        raise EsError(400, "x_content_parse_exception", f"[{line}:1] Invalid UTF-8: {exc.reason}") from None
    try:
        return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        raise EsError(400, "x_content_parse_exception", f"[{line + exc.lineno - 1}:{exc.colno}] {exc.msg}") from None
    except ValueError as exc:
        raise EsError(400, "x_content_parse_exception", f"[{line}:1] {exc}") from None
    except RecursionError:
        raise EsError(400, "x_content_parse_exception", f"[{line}:1] document nested too deeply") from None


def parse_time(value: str, name: str) -> float:
    """An Elasticsearch time value ("30s", "1m", "500ms", "0", "-1") in seconds; -1 means no limit."""
    text = value.strip()
    if text in ("0", "-1"):
        return float(text) if text == "0" else float("inf")
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(nanos|micros|ms|s|m|h|d)", text)
    if m is None:
        raise EsError(
            400,
            "parse_exception",
            f"failed to parse setting [{name}] with value [{value}] as a time value: unit is missing or unrecognized",
        )
    unit = {"nanos": 1e-9, "micros": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    return float(m.group(1)) * unit[m.group(2)]


def _int_param(params: Mapping[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise bad_request(f"Failed to parse int parameter [{name}] with value [{raw}]") from None


def _bool_param(params: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = params.get(name)
    if raw is None:
        return default
    if raw in ("", "true"):
        return True
    if raw == "false":
        return False
    raise bad_request(f"Failed to parse value [{raw}] as only [true] or [false] are allowed.")


# -- media types -------------------------------------------------------------------------------------

_TOKEN_RE: Final = re.compile(r"[!#$%&'*+.^_`|~0-9a-zA-Z-]+")
JSON_BODY_TYPES: Final = frozenset(
    {
        "application/json",
        "application/x-ndjson",
        "application/vnd.elasticsearch+json",
        "application/vnd.elasticsearch+x-ndjson",
    }
)


@dataclass(frozen=True)
class MediaType:
    """A parsed Accept or Content-Type value (ParsedMediaType in the server)."""

    type: str
    subtype: str
    params: dict[str, str]
    raw: str

    @property
    def base(self) -> str:
        return f"{self.type}/{self.subtype}"


def parse_media_type(raw: str) -> MediaType | None:
    """Parse like ParsedMediaType.parseMediaType: media ranges are ignored, bad syntax raises ValueError."""
    if "," in raw or raw.strip() == "*/*":
        return None
    elements = raw.lower().split(";")
    while len(elements) > 1 and elements[-1] == "":
        elements.pop()  # Java's split drops trailing empty strings
    type_subtype = elements[0].split("/")
    if len(type_subtype) != 2 or not all(_TOKEN_RE.fullmatch(p.strip()) for p in type_subtype):
        raise ValueError(f"invalid media-type [{raw}]")
    params: dict[str, str] = {}
    for element in elements[1:]:
        kv = element.strip().split("=")
        if len(kv) != 2 or kv[0] != kv[0].rstrip() or kv[1] != kv[1].lstrip() or not kv[0]:
            raise ValueError(f"invalid parameters for header [{raw}]")
        params[kv[0]] = kv[1]
    return MediaType(type_subtype[0].strip(), type_subtype[1].strip(), params, raw)


def _media_error(headers: str, cause_type: str, cause_reason: str) -> EsError:
    reason = f"Invalid media-type value on headers [{headers}]"
    return EsError(400, "media_type_header_exception", reason, caused_by={"type": cause_type, "reason": cause_reason})


def negotiate_version(major: int, accept: MediaType | None, ctype: MediaType | None, has_content: bool) -> int:
    """The REST API version asked for, checked like RestCompatibleVersionHelper.getCompatibleVersion."""

    def version_of(mt: MediaType | None) -> int | None:
        if mt is None or "compatible-with" not in mt.params:
            return None
        raw = mt.params["compatible-with"]
        try:
            value = int(raw)
        except ValueError:
            raise _media_error(
                "Accept, Content-Type", "number_format_exception", f'For input string: "{raw}"'
            ) from None
        return value

    def status(reason: str) -> EsError:
        return _media_error("Accept, Content-Type", "status_exception", reason)

    a_raw = accept.raw if accept else "null"
    c_raw = ctype.raw if ctype else "null"
    a_version, c_version = version_of(accept), version_of(ctype)
    accept_version = major if a_version is None else a_version
    content_version = major if c_version is None else c_version
    minimum = major - 1
    if accept_version > major or accept_version < minimum:
        raise status(
            f"Accept version must be either version {major} or {minimum}, but found {accept_version}. Accept={a_raw}"
        )
    if has_content:
        if content_version > major or content_version < minimum:
            raise status(
                f"Content-Type version must be either version {major} or {minimum}, "
                f"but found {content_version}. Content-Type={c_raw}"
            )
        if content_version != accept_version:
            raise status(
                "A compatible version is required on both Content-Type and Accept headers if either one "
                "has requested a compatible version and the compatible versions must match. "
                f"Accept={a_raw}, Content-Type={c_raw}"
            )
        if (a_version is None) != (c_version is None):
            raise status(
                "A compatible version is required on both Content-Type and Accept headers if either one "
                f"has requested a compatible version. Accept={a_raw}, Content-Type={c_raw}"
            )
        if content_version < major:
            return minimum
    return minimum if accept_version < major else major


# -- persistent state --------------------------------------------------------------------------------


def _es_uuid() -> str:
    """A 22-character URL-safe id like the server's cluster and index UUIDs."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


def _auto_id() -> str:
    """A 20-character auto-generated document id like the server's time-based ids."""
    return base64.urlsafe_b64encode(secrets.token_bytes(15)).decode()


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Doc:
    """One stored document; version and seq_no count like a single primary shard."""

    source: dict[str, Any]
    version: int
    seq_no: int


@dataclass
class Index:
    """One index (a PlaceOS table, internals §4): documents in write order plus what `GET /<index>` shows."""

    name: str
    uuid: str
    created_ms: int
    shards: int = 1
    replicas: int = 1
    mappings: dict[str, Any] = field(default_factory=dict)
    docs: dict[str, Doc] = field(default_factory=dict)
    next_seq_no: int = 0
    deleted: int = 0

    def take_seq_no(self) -> int:
        seq = self.next_seq_no
        self.next_seq_no += 1
        return seq

    def keyword_fields(self) -> frozenset[str]:
        """Fields mapped to exact-value types (so `term`/`match` compare whole values)."""
        out: set[str] = set()

        def walk(props: Any, prefix: str) -> None:
            if not isinstance(props, dict):
                return
            for name, spec in props.items():
                if not isinstance(spec, dict):
                    continue
                path = f"{prefix}{name}"
                if spec.get("type") in ("keyword", "constant_keyword", "wildcard"):
                    out.add(path)
                walk(spec.get("properties"), f"{path}.")
                for sub, sub_spec in (spec.get("fields") or {}).items():
                    if isinstance(sub_spec, dict) and sub_spec.get("type") == "keyword":
                        out.add(f"{path}.{sub}")

        walk(self.mappings.get("properties"), "")
        return frozenset(out)

    def to_json(self) -> dict[str, Any]:
        return {
            "uuid": self.uuid,
            "created_ms": self.created_ms,
            "shards": self.shards,
            "replicas": self.replicas,
            "mappings": self.mappings,
            "next_seq_no": self.next_seq_no,
            "deleted": self.deleted,
            "docs": {
                doc_id: {"_source": d.source, "_version": d.version, "_seq_no": d.seq_no}
                for doc_id, d in self.docs.items()
            },
        }

    @classmethod
    def from_json(cls, name: str, data: dict[str, Any]) -> Index:
        docs = {
            str(doc_id): Doc(dict(d["_source"]), int(d["_version"]), int(d["_seq_no"]))
            for doc_id, d in data["docs"].items()
        }
        return cls(
            name=name,
            uuid=str(data["uuid"]),
            created_ms=int(data["created_ms"]),
            shards=int(data["shards"]),
            replicas=int(data["replicas"]),
            mappings=dict(data["mappings"]),
            docs=docs,
            next_seq_no=int(data["next_seq_no"]),
            deleted=int(data["deleted"]),
        )


@dataclass
class ApiKey:
    """An API key; only a hash of the secret is kept, as the real .security index does."""

    id: str
    name: str
    key_sha256: str
    created_ms: int
    expiration_ms: int | None = None
    invalidated: bool = False


class StateError(RuntimeError):
    """The data dir holds a state file this stand-in cannot read."""


def _sha256(salt: str, secret: str) -> str:
    return hashlib.sha256(f"{salt}:{secret}".encode()).hexdigest()


class Store:
    """Everything a restart must find again, kept in one JSON file rewritten atomically."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / STATE_FILE
        self.cluster_uuid = _es_uuid()
        self.password_salt: str | None = None
        self.password_sha256: str | None = None
        self.health = "green"
        self.red_indices: list[str] | None = None
        self.indices: dict[str, Index] = {}
        self.api_keys: dict[str, ApiKey] = {}

    @classmethod
    def open(cls, data_dir: Path, bootstrap_password: str | None) -> Store:
        """Load the data dir (or start one); the flag's password counts only if none is stored yet."""
        data_dir.mkdir(parents=True, exist_ok=True)
        store = cls(data_dir)
        if store.path.exists():
            store._load()
        if bootstrap_password is not None and store.password_sha256 is None:
            store.set_password(bootstrap_password)
        store.save()
        return store

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("format") != STATE_FORMAT:
                raise StateError(f"{self.path}: unknown state format {data.get('format')!r}")
            self.cluster_uuid = str(data["cluster_uuid"])
            password = data["password"]
            if password is not None:
                self.password_salt = str(password["salt"])
                self.password_sha256 = str(password["sha256"])
            self.health = str(data["health"])
            red = data["red_indices"]
            self.red_indices = None if red is None else [str(n) for n in red]
            self.indices = {name: Index.from_json(name, d) for name, d in data["indices"].items()}
            self.api_keys = {k["id"]: ApiKey(**k) for k in data["api_keys"]}
        except StateError:
            raise
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StateError(f"{self.path}: cannot read state: {exc!r}") from exc
        if self.health not in COLOURS:
            raise StateError(f"{self.path}: bad health colour {self.health!r}")

    def save(self) -> None:
        """Write the whole state to a temp file, fsync it, rename it over the old one, fsync the dir."""
        data = {
            "format": STATE_FORMAT,
            "cluster_uuid": self.cluster_uuid,
            "password": (
                None if self.password_sha256 is None else {"salt": self.password_salt, "sha256": self.password_sha256}
            ),
            "health": self.health,
            "red_indices": self.red_indices,
            "indices": {name: idx.to_json() for name, idx in self.indices.items()},
            "api_keys": [vars(k) for k in self.api_keys.values()],
        }
        directory = self.path.parent
        fd, tmp = tempfile.mkstemp(prefix=".state-", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, separators=(",", ":"))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def set_password(self, password: str) -> None:
        self.password_salt = secrets.token_hex(16)
        self.password_sha256 = _sha256(self.password_salt, password)

    def check_password(self, password: str) -> bool:
        if self.password_salt is None or self.password_sha256 is None:
            return False
        return hmac.compare_digest(_sha256(self.password_salt, password), self.password_sha256)

    def colour_of(self, index: str) -> str:
        if self.health == "red":
            return "red" if self.red_indices is None or index in self.red_indices else "green"
        return self.health


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


# -- the server --------------------------------------------------------------------------------------


class Server:
    """Routes requests to handlers and renders answers the way the real server does."""

    def __init__(self, store: Store, version: ServerVersion, *, security: bool) -> None:
        self.store = store
        self.version = version
        self.security = security
        self.routes = self._routes()

    # routing

    def _routes(self) -> list[Route]:
        r = Route
        return [
            r((), {"GET": self.h_info, "HEAD": self.h_info}),
            r(("_sandbox", "health"), {"POST": self.h_sandbox_health}),
            r(("_sandbox", "ready"), {"GET": self.h_sandbox_ready}),
            r(("_cluster", "health"), {"GET": self.h_health}),
            r(("_cluster", "health", "{index}"), {"GET": self.h_health}),
            r(("_cat", "health"), {"GET": self.h_cat_health}),
            r(("_cat", "indices"), {"GET": self.h_cat_indices}),
            r(("_cat", "indices", "{index}"), {"GET": self.h_cat_indices}),
            r(("_refresh",), {"GET": self.h_refresh, "POST": self.h_refresh}),
            r(("_bulk",), {"POST": self.h_bulk, "PUT": self.h_bulk}),
            r(("_search",), {"GET": self.h_search, "POST": self.h_search}),
            r(("_count",), {"GET": self.h_count, "POST": self.h_count}),
            r(("_security", "_authenticate"), {"GET": self.h_authenticate}),
            r(("_security", "user", "_password"), {"POST": self.h_password, "PUT": self.h_password}),
            r(("_security", "user", "{user}", "_password"), {"POST": self.h_password, "PUT": self.h_password}),
            r(
                ("_security", "api_key"),
                {"POST": self.h_api_key_create, "PUT": self.h_api_key_create, "DELETE": self.h_api_key_delete},
            ),
            r(
                ("{index}",),
                {
                    "PUT": self.h_index_create,
                    "HEAD": self.h_index_exists,
                    "GET": self.h_index_get,
                    "DELETE": self.h_index_delete,
                },
            ),
            r(("{index}", "_refresh"), {"GET": self.h_refresh, "POST": self.h_refresh}),
            r(("{index}", "_bulk"), {"POST": self.h_bulk, "PUT": self.h_bulk}),
            r(("{index}", "_search"), {"GET": self.h_search, "POST": self.h_search}),
            r(("{index}", "_count"), {"GET": self.h_count, "POST": self.h_count}),
            r(("{index}", "_doc"), {"POST": self.h_doc_index}),
            r(
                ("{index}", "_doc", "{id}"),
                {
                    "GET": self.h_doc_get,
                    "HEAD": self.h_doc_get,
                    "PUT": self.h_doc_index,
                    "POST": self.h_doc_index,
                    "DELETE": self.h_doc_delete,
                },
            ),
            r(("{index}", "_create", "{id}"), {"PUT": self.h_doc_create, "POST": self.h_doc_create}),
            r(("{index}", "_update", "{id}"), {"POST": self.h_doc_update}),
        ]

    def _match(self, parts: list[str]) -> tuple[Route, dict[str, str]] | None:
        for route in self.routes:
            if len(route.pattern) != len(parts):
                continue
            params: dict[str, str] = {}
            for pat, seg in zip(route.pattern, parts, strict=True):
                if pat.startswith("{"):
                    if pat == "{index}" and seg.startswith("_") and seg != "_all":
                        break
                    params[pat[1:-1]] = seg
                elif pat != seg:
                    break
            else:
                return route, params
        return None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The single entry point: negotiate, authenticate, route, and turn every failure into a body."""
        started = time.monotonic()
        accept: MediaType | None = None
        ctype: MediaType | None = None
        try:
            parts = [unquote(seg) for seg in request.rel_url.raw_path.split("/") if seg]
            matched = self._match(parts)
            uri = request.raw_path
            if matched is None:
                raise FlatError(
                    400, f"no handler found for uri [{uri}] and method [{request.method}]", with_status=False
                )
            route, path_params = matched
            handler = route.methods.get(request.method)
            if handler is None:
                allowed = ", ".join(sorted(route.methods))
                raise FlatError(
                    405,
                    f"Incorrect HTTP method for uri [{uri}] and method [{request.method}], allowed: [{allowed}]",
                    headers=[("Allow", ",".join(sorted(route.methods)))],
                )
            body = await request.read()
            sandbox = parts[:1] == ["_sandbox"]
            compat = self.version.major
            if not sandbox:
                accept = self._header_media_type(request, "Accept")
                ctype = self._header_media_type(request, "Content-Type")
                compat = negotiate_version(self.version.major, accept, ctype, bool(body))
                if body and (ctype is None or ctype.base not in JSON_BODY_TYPES):
                    values = request.headers.getall("Content-Type", [])
                    raise FlatError(
                        406,
                        f"Content-Type header [{', '.join(values)}] is not supported"
                        if values
                        else "Content-Type header is missing",
                    )
            ctx = Ctx(request, request.method, parts, body, accept, ctype, compat, started)
            if not sandbox:
                self._authenticate(ctx)
            return await handler(ctx, path_params)
        except EsError as exc:
            return self._json(request, exc.status, exc.body(), accept, ctype, exc.headers)
        except FlatError as exc:
            return self._json(request, exc.status, exc.body(), accept, ctype, exc.headers)
        except web.HTTPException as exc:  # from aiohttp itself, e.g. 413 past http.max_content_length
            return self._raw(exc.status, b"", self._content_type(None, None))
        except RecursionError:
            err = EsError(400, "x_content_parse_exception", "[1:1] request nested too deeply")
            return self._json(request, 400, err.body(), accept, ctype)
        except Exception as exc:
            log.exception("unexpected failure answering %s %s", request.method, request.raw_path)
            err = EsError(500, "exception", f"{type(exc).__name__}: {exc}")
            return self._json(request, 500, err.body(), accept, ctype)

    @staticmethod
    def _header_media_type(request: web.Request, name: str) -> MediaType | None:
        values = request.headers.getall(name, [])
        if not values:
            return None
        if len(values) > 1:
            raise _media_error(
                name, "illegal_argument_exception", f"Incorrect header [{name}]. Only one value should be provided"
            )
        try:
            return parse_media_type(values[0])
        except ValueError as exc:
            raise _media_error(name, "illegal_argument_exception", str(exc)) from None

    # rendering

    def _content_type(self, accept: MediaType | None, ctype: MediaType | None) -> str:
        if self.version.major < 8:
            return "application/json; charset=UTF-8"
        chosen = accept or ctype
        if chosen is not None and chosen.subtype.startswith("vnd.elasticsearch+"):
            base = f"{chosen.type}/{chosen.subtype}".replace("x-ndjson", "json")
            version = chosen.params.get("compatible-with")
            return f"{base};compatible-with={version}" if version else base
        return "application/json"

    def _json(
        self,
        request: web.Request,
        status: int,
        payload: Any,
        accept: MediaType | None,
        ctype: MediaType | None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> web.Response:
        if request.query.get("pretty") in ("", "true"):
            text = json.dumps(payload, indent=2, separators=(",", " : "), ensure_ascii=False) + "\n"
        else:
            text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        return self._raw(status, text.encode("utf-8"), self._content_type(accept, ctype), headers)

    @staticmethod
    def _raw(status: int, body: bytes, content_type: str, headers: Sequence[tuple[str, str]] = ()) -> web.Response:
        out: CIMultiDict[str] = CIMultiDict()
        out["Content-Type"] = content_type
        out["X-Elastic-Product"] = "Elasticsearch"
        for key, value in headers:
            out.add(key, value)
        return web.Response(status=status, body=body, headers=out)

    def ok(self, ctx: Ctx, payload: Any, status: int = 200) -> web.Response:
        return self._json(ctx.request, status, payload, ctx.accept, ctx.content_type)

    def empty(self, status: int) -> web.Response:
        """A bodiless answer (HEAD exists checks)."""
        return self._raw(
            status, b"", "application/json" if self.version.major >= 8 else "application/json; charset=UTF-8"
        )

    def include_type(self, ctx: Ctx) -> bool:
        """7.x bodies, and 8.x bodies in compatible-with=7 mode, carry `"_type": "_doc"`."""
        return self.version.major == 7 or ctx.compat == 7

    # security

    def _challenges(self) -> list[str]:
        basic = 'Basic realm="security" charset="UTF-8"'
        if self.version.major >= 8:
            return [basic, 'Bearer realm="security"', "ApiKey"]
        return [basic, "ApiKey"]

    def _auth_error(self, reason: str, **fields: Any) -> EsError:
        challenges = self._challenges()
        return EsError(
            401,
            "security_exception",
            reason,
            fields={**fields, "header": {"WWW-Authenticate": challenges}},
            headers=[("WWW-Authenticate", c) for c in challenges],
        )

    def _authenticate(self, ctx: Ctx) -> None:
        if not self.security:
            return
        uri = ctx.request.raw_path
        header = ctx.request.headers.get("Authorization", "")
        scheme, _, credentials = header.strip().partition(" ")
        if not header:
            raise self._auth_error(f"missing authentication credentials for REST request [{uri}]")
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            decoded = None
        if scheme.lower() == "basic":
            if decoded is None or ":" not in decoded:
                raise self._auth_error(f"missing authentication credentials for REST request [{uri}]")
            user, _, password = decoded.partition(":")
            if user == "elastic" and self.store.check_password(password):
                ctx.user = user
                return
            raise self._auth_error(f"unable to authenticate user [{user}] for REST request [{uri}]")
        if scheme.lower() == "apikey":
            key_id, _, secret = (decoded or "").partition(":")
            key = self.store.api_keys.get(key_id)
            problem = None
            if key is None:
                problem = f"unable to find apikey with id {key_id}"
            elif key.invalidated:
                problem = f"api key [{key_id}] has been invalidated"
            elif key.expiration_ms is not None and key.expiration_ms < _now_ms():
                problem = "api key is expired"
            elif not hmac.compare_digest(_sha256(key.id, secret), key.key_sha256):
                problem = f"invalid credentials for API key [{key_id}]"
            if problem is None and key is not None:
                ctx.user, ctx.api_key = "elastic", key
                return
            raise self._auth_error(
                "unable to authenticate with provided credentials and anonymous access is not allowed for this request",
                additional_unsuccessful_credentials=f"API key: {problem}",
            )
        raise self._auth_error(
            "unable to authenticate with provided credentials and anonymous access is not allowed for this request"
        )

    def _require_security(self) -> None:
        if not self.security:
            raise EsError(
                500,
                "exception",
                "Security must be explicitly enabled when using a [basic] license. Enable security by setting "
                "[xpack.security.enabled] to [true] in the elasticsearch.yml file and restart the node.",
            )

    # index resolution

    def resolve(self, expr: str | None, ctx: Ctx, *, allow_wildcards: bool = True) -> list[str]:
        """Concrete index names for `a,b,c*,-x`, `_all` or `*`, with the real missing-index errors."""
        ignore_unavailable = _bool_param(ctx.params, "ignore_unavailable")
        allow_no_indices = _bool_param(ctx.params, "allow_no_indices", True)
        names = list(self.store.indices)
        if expr in (None, "", "_all", "*"):
            if not names and not allow_no_indices:
                raise index_not_found(expr or "_all")
            return names
        out: list[str] = []
        assert expr is not None
        for part in expr.split(","):
            if not part:
                continue
            if part.startswith("-") and out and any(c in part for c in "*?"):
                out = [n for n in out if not fnmatch.fnmatchcase(n, part[1:])]
                continue
            if any(c in part for c in "*?"):
                if not allow_wildcards:
                    raise bad_request("Wildcard expressions or all indices are not allowed")
                found = [n for n in names if fnmatch.fnmatchcase(n, part) and not n.startswith(".")]
                if not found and not allow_no_indices:
                    raise index_not_found(part)
                out.extend(n for n in found if n not in out)
            elif part in self.store.indices:
                if part not in out:
                    out.append(part)
            elif not ignore_unavailable:
                raise index_not_found(part)
        return out

    def _views(self, names: Iterable[str]) -> list[DocView]:
        views: list[DocView] = []
        ordinal = 0
        for name in names:
            idx = self.store.indices[name]
            kw = idx.keyword_fields()
            for doc_id, doc in sorted(idx.docs.items(), key=lambda item: item[1].seq_no):
                views.append(DocView(name, doc_id, doc.source, kw, ordinal))
                ordinal += 1
        return views

    # health

    def _shard_counts(self, names: Sequence[str]) -> dict[str, int]:
        c = {"active_primary_shards": 0, "active_shards": 0, "unassigned_shards": 0}
        for name in names:
            idx = self.store.indices[name]
            colour = self.store.colour_of(name)
            if colour == "red":
                c["unassigned_shards"] += idx.shards * (1 + idx.replicas)
            else:
                c["active_primary_shards"] += idx.shards
                c["active_shards"] += idx.shards
                if colour == "yellow":
                    c["unassigned_shards"] += idx.shards * max(idx.replicas, 1)
        return c

    def _health_status(self, names: Sequence[str], missing: bool, whole_cluster: bool) -> str:
        if whole_cluster:
            return self.store.health
        colours = [self.store.colour_of(n) for n in names] + (["red"] if missing else [])
        return max(colours, key=COLOURS.index, default="green")

    def _health_body(self, names: Sequence[str], status: str, timed_out: bool, level: str) -> JsonObj:
        counts = self._shard_counts(names)
        total = counts["active_shards"] + counts["unassigned_shards"]
        percent = 100.0 * counts["active_shards"] / total if total else (0.0 if status == "red" else 100.0)
        body: JsonObj = {
            "cluster_name": CLUSTER_NAME,
            "status": status,
            "timed_out": timed_out,
            "number_of_nodes": 1,
            "number_of_data_nodes": 1,
            "active_primary_shards": counts["active_primary_shards"],
            "active_shards": counts["active_shards"],
            "relocating_shards": 0,
            "initializing_shards": 0,
            "unassigned_shards": counts["unassigned_shards"],
            "delayed_unassigned_shards": 0,
            "number_of_pending_tasks": 0,
            "number_of_in_flight_fetch": 0,
            "task_max_waiting_in_queue_millis": 0,
            "active_shards_percent_as_number": percent,
        }
        if level in ("indices", "shards"):
            indices: JsonObj = {}
            for name in names:
                idx = self.store.indices[name]
                c = self._shard_counts([name])
                indices[name] = {
                    "status": self.store.colour_of(name),
                    "number_of_shards": idx.shards,
                    "number_of_replicas": idx.replicas,
                    "active_primary_shards": c["active_primary_shards"],
                    "active_shards": c["active_shards"],
                    "relocating_shards": 0,
                    "initializing_shards": 0,
                    "unassigned_shards": c["unassigned_shards"],
                }
            body["indices"] = indices
        return body

    async def h_health(self, ctx: Ctx, p: dict[str, str]) -> web.StreamResponse:
        wait_for = ctx.params.get("wait_for_status")
        if wait_for is not None and wait_for not in COLOURS:
            raise bad_request(f"unknown cluster health status [{wait_for}]")
        level = ctx.params.get("level", "cluster")
        if level not in ("cluster", "indices", "shards"):
            raise bad_request(f"No enum constant org.elasticsearch.cluster.health.ClusterHealthRequest.Level.{level}")
        timeout = parse_time(ctx.params.get("timeout", "30s"), "timeout")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(timeout, 3600.0)
        expr = p.get("index")
        whole = expr in (None, "_all", "*")
        while True:
            names, missing = self._health_targets(expr)
            status = self._health_status(names, missing, whole)
            done = not missing and (wait_for is None or COLOURS.index(status) <= COLOURS.index(wait_for))
            remaining = deadline - loop.time()
            if done or remaining <= 0:
                break
            await asyncio.sleep(min(0.05, remaining))
        body = self._health_body(names, status, not done, level)
        return self.ok(ctx, body, 200 if done else 408)

    def _health_targets(self, expr: str | None) -> tuple[list[str], bool]:
        if expr in (None, "_all", "*"):
            return list(self.store.indices), False
        assert expr is not None
        names: list[str] = []
        missing = False
        for part in filter(None, expr.split(",")):
            if any(c in part for c in "*?"):
                names.extend(n for n in self.store.indices if fnmatch.fnmatchcase(n, part) and n not in names)
            elif part in self.store.indices:
                if part not in names:
                    names.append(part)
            else:
                missing = True
        return names, missing

    # _cat

    def _cat(self, ctx: Ctx, columns: list[str], rows: list[dict[str, str]]) -> web.Response:
        wanted = ctx.params.get("h")
        if wanted:
            columns = [c for c in (h.strip() for h in wanted.split(",")) if c in columns]
        sort = ctx.params.get("s")
        if sort:
            for key in reversed([s.strip() for s in sort.split(",") if s.strip()]):
                name, _, order = key.partition(":")
                if name in (rows[0] if rows else {}):
                    rows = sorted(rows, key=_row_key(name), reverse=order == "desc")
        fmt = ctx.params.get("format")
        if fmt is None and ctx.accept is not None and ctx.accept.subtype.endswith("json"):
            fmt = "json"
        if fmt == "json":
            return self.ok(ctx, [{c: r[c] for c in columns} for r in rows])
        if fmt not in (None, "txt", "text"):
            raise bad_request(f"Unsupported format [{fmt}]")
        verbose = _bool_param(ctx.params, "v")
        widths = [max([len(c) if verbose else 0, *(len(r[c]) for r in rows)]) for c in columns]
        lines = []
        if verbose:
            lines.append(" ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
        for r in rows:
            cells = []
            for c, w in zip(columns, widths, strict=True):
                value = r[c]
                numeric = re.fullmatch(r"-?\d+(\.\d+)?%?|\d+(\.\d+)?[kmgt]?b", value) is not None
                cells.append(value.rjust(w) if numeric else value.ljust(w))
            lines.append(" ".join(cells))
        text = "".join(line + " \n" for line in lines)
        return self._raw(200, text.encode("utf-8"), "text/plain; charset=UTF-8")

    async def h_cat_health(self, ctx: Ctx, p: dict[str, str]) -> web.StreamResponse:
        names = list(self.store.indices)
        body = self._health_body(names, self.store.health, False, "cluster")
        now = time.time()
        row = {
            "epoch": str(int(now)),
            "timestamp": time.strftime("%H:%M:%S", time.gmtime(now)),
            "cluster": CLUSTER_NAME,
            "status": body["status"],
            "node.total": "1",
            "node.data": "1",
            "shards": str(body["active_shards"]),
            "pri": str(body["active_primary_shards"]),
            "relo": "0",
            "init": "0",
            "unassign": str(body["unassigned_shards"]),
            "pending_tasks": "0",
            "max_task_wait_time": "-",
            "active_shards_percent": f"{body['active_shards_percent_as_number']:.1f}%",
        }
        columns = list(row)
        if not _bool_param(ctx.params, "ts", True):
            columns = columns[2:]
        return self._cat(ctx, columns, [row])

    async def h_cat_indices(self, ctx: Ctx, p: dict[str, str]) -> web.StreamResponse:
        names = self.resolve(p.get("index"), ctx)
        in_bytes = ctx.params.get("bytes") == "b"
        rows = []
        for name in names:
            idx = self.store.indices[name]
            size = len(json.dumps(idx.to_json()["docs"]).encode()) + 225
            size_text = str(size) if in_bytes else _human_bytes(size)
            row = {
                "health": self.store.colour_of(name),
                "status": "open",
                "index": name,
                "uuid": idx.uuid,
                "pri": str(idx.shards),
                "rep": str(idx.replicas),
                "docs.count": str(len(idx.docs)),
                "docs.deleted": str(idx.deleted),
                "store.size": size_text,
                "pri.store.size": size_text,
            }
            if self.version.major >= 8:
                row["dataset.size"] = size_text
            rows.append(row)
        columns = list(rows[0]) if rows else ["health", "status", "index", "uuid", "pri", "rep", "docs.count"]
        return self._cat(ctx, columns, rows)

    # indices

    async def h_index_create(self, ctx: Ctx, p: dict[str, str]) -> web.StreamResponse:
        name = p["index"]
        validate_index_name(name)
        body = ctx.json_object()
        for key in body:
            if key not in ("settings", "mappings", "aliases"):
                raise EsError(400, "parse_exception", f"unknown key [{key}] for create index")
        if name in self.store.indices:
            existing = self.store.indices[name]
            raise EsError(
                400,
                "resource_already_exists_exception",
                f"index [{name}/{existing.uuid}] already exists",
                fields={"index_uuid": existing.uuid, "index": name},
            )
        settings = body.get("settings") or {}
        mappings = body.get("mappings") or {}
        if not isinstance(settings, dict) or not isinstance(mappings, dict):
            raise EsError(400, "x_content_parse_exception", "[1:1] [settings] and [mappings] must be objects")
        flat = settings.get("index", settings) if isinstance(settings.get("index"), dict) else settings
        try:
            shards = int(flat.get("number_of_shards", 1))
            replicas = int(flat.get("number_of_replicas", 1))
        except (TypeError, ValueError):
            raise bad_request("Failed to parse value for setting [index.number_of_shards/replicas]") from None
        if shards < 1 or replicas < 0:
            raise bad_request("Failed to parse value for setting [index.number_of_shards/replicas]")
        self._create_index(name, shards=shards, replicas=replicas, mappings=mappings)
        self.store.save()
        return self.ok(ctx, {"acknowledged": True, "shards_acknowledged": True, "index": name})

    def _create_index(self, name: str, *, shards: int = 1, replicas: int = 1, mappings: JsonObj | None = None) -> Index:
        idx = Index(name, _es_uuid(), _now_ms(), shards, replicas, dict(mappings or {}))
        self.store.indices[name] = idx
        log.info("created index [%s]", name)
        return idx

    async def h_index_exists(self, ctx: Ctx, p: dict[str, str]) -> web.StreamResponse:
        try:
            found = self.resolve(p["index"], ctx)
        except EsError:
            found = []
        return self.empty(200 if found else 404)

    async def h_index_get(self, ctx: Ctx, p: dict[str, str]) -> web.StreamResponse:
        out: JsonObj = {}
        for name in self.resolve(p["index"], ctx):
            idx = self.store.indices[name]
            out[name] = {
                "aliases": {},
                "mappings": idx.mappings,
                "settings": {
                    "index": {
                        "creation_date": str(idx.created_ms),
                        "number_of_shards": str(idx.shards),
                        "number_of_replicas": str(idx.replicas),
                        "uuid": idx.uuid,
                        "provided_name": name,
                    }
                },
            }
        return self.ok(ctx, out)

    async def h_index_delete(self, ctx: Ctx, p: dict[str, str]) -> web.StreamResponse:
        expr = p["index"]
        if self.version.major >= 8 and (expr == "_all" or any(c in expr for c in "*?")):
            raise bad_request("Wildcard expressions or all indices are not allowed")
        for name in self.resolve(expr, ctx):
            del self.store.indices[name]
            if self.store.red_indices and name in self.store.red_indices:
                self.store.red_indices.remove(name)
            log.info("deleted index [%s]", name)
        self.store.save()
        return self.ok(ctx, {"acknowledged": True})

    async def h_refresh(self, ctx: Ctx, p: dict[str, str]) -> web.StreamResponse:
        names = self.resolve(p.get("index"), ctx)
        total = sum(self.store.indices[n].shards * (1 + self.store.indices[n].replicas) for n in names)
        ok = sum(self.store.indices[n].shards for n in names if self.store.colour_of(n) != "red")
        return self.ok(ctx, {"_shards": {"total": total, "successful": ok, "failed": 0}})

    # writes

    def _shards_info(self, idx: Index) -> JsonObj:
        return {"total": 1 + idx.replicas, "successful": 1, "failed": 0}

    def _write_result(self, ctx: Ctx, idx: Index, doc_id: str, version: int, seq_no: int, result: str) -> JsonObj:
        out: JsonObj = {"_index": idx.name}
        if self.include_type(ctx):
            out["_type"] = "_doc"
        out.update(
            {
                "_id": doc_id,
                "_version": version,
                "result": result,
                "_shards": self._shards_info(idx) if result != "noop" else {"total": 0, "successful": 0, "failed": 0},
                "_seq_no": seq_no,
                "_primary_term": 1,
            }
        )
        return out

    def _target_index(self, name: str | None, *, create: bool) -> Index:
        if name is None:
            raise validation_failed(["index is missing"])
        validate_index_name(name)
        idx = self.store.indices.get(name)
        if idx is None:
            if not create:
                raise index_not_found(name)
            idx = self._create_index(name)
        return idx

    @staticmethod
    def _doc_source(source: Any) -> JsonObj:
        if not isinstance(source, dict):
            raise EsError(
                400,
                "mapper_parsing_exception",
                "failed to parse",
                caused_by={"type": "not_x_content_exception", "reason": "document is not a JSON object"},
            )
        return source

    def _conflict(self, idx: Index, doc_id: str, version: int) -> EsError:
        return EsError(
            409,
            "version_conflict_engine_exception",
            f"[{doc_id}]: version conflict, document already exists (current version [{version}])",
            fields={"index_uuid": idx.uuid, "shard": "0", "index": idx.name},
        )

    def _op_index(
        self, ctx: Ctx, index: str | None, doc_id: str | None, source: Any, *, create: bool
    ) -> tuple[int, JsonObj]:
        idx = self._target_index(index, create=True)
        if doc_id is None:
            doc_id = _auto_id()
        validate_doc_id(doc_id)
        src = self._doc_source(source)
        existing = idx.docs.get(doc_id)
        if existing is not None and create:
            raise self._conflict(idx, doc_id, existing.version)
        version = existing.version + 1 if existing else 1
        seq = idx.take_seq_no()
        idx.docs[doc_id] = Doc(src, version, seq)
        if existing:
            return 200, self._write_result(ctx, idx, doc_id, version, seq, "updated")
        return 201, self._write_result(ctx, idx, doc_id, version, seq, "created")

    def _op_update(self, ctx: Ctx, index: str | None, doc_id: str | None, body: Any) -> tuple[int, JsonObj]:
        if doc_id is None:
            raise validation_failed(["id is missing"])
        if not isinstance(body, dict):
            raise EsError(400, "x_content_parse_exception", "[1:1] update request must be a JSON object")
        for key in body:
            if key == "script":
                raise unsupported("[script] in update requests")
            if key not in ("doc", "upsert", "doc_as_upsert", "detect_noop", "_source", "scripted_upsert"):
                raise EsError(400, "x_content_parse_exception", f"[1:2] [UpdateRequest] unknown field [{key}]")
        doc = body.get("doc")
        if doc is None and "upsert" not in body:
            raise validation_failed(["script or doc is missing"])
        idx = self._target_index(index, create=True)
        validate_doc_id(doc_id)
        existing = idx.docs.get(doc_id)
        if existing is None:
            if body.get("doc_as_upsert") and doc is not None:
                src = self._doc_source(doc)
            elif "upsert" in body:
                src = self._doc_source(body["upsert"])
            else:
                raise EsError(
                    404,
                    "document_missing_exception",
                    f"[{doc_id}]: document missing",
                    fields={"index_uuid": idx.uuid, "shard": "0", "index": idx.name},
                )
            seq = idx.take_seq_no()
            idx.docs[doc_id] = Doc(src, 1, seq)
            return 201, self._write_result(ctx, idx, doc_id, 1, seq, "created")
        merged = _deep_merge(existing.source, self._doc_source(doc if doc is not None else {}))
        if merged == existing.source and body.get("detect_noop", True):
            return 200, self._write_result(ctx, idx, doc_id, existing.version, existing.seq_no, "noop")
        seq = idx.take_seq_no()
        idx.docs[doc_id] = Doc(merged, existing.version + 1, seq)
        return 200, self._write_result(ctx, idx, doc_id, existing.version + 1, seq, "updated")

    def _op_delete(self, ctx: Ctx, index: str | None, doc_id: str | None) -> tuple[int, JsonObj]:
        if doc_id is None:
            raise validation_failed(["id is missing"])
        idx = self._target_index(index, create=False)
        existing = idx.docs.pop(doc_id, None)
        seq = idx.take_seq_no()
        if existing is None:
            return 404, self._write_result(ctx, idx, doc_id, 1, seq, "not_found")
        idx.deleted += 1
        return 200, self._write_result(ctx, idx, doc_id, existing.version + 1, seq, "deleted")

    async def _await_primaries(self, ctx: Ctx, names: Iterable[str]) -> set[str]:
        """Wait (up to the request's `timeout`, default 1m) for red indices; return those still red."""
        wanted = {n for n in names if n is not None}
        raw_timeout = ctx.params.get("timeout", "1m")
        timeout = parse_time(raw_timeout, "timeout")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(timeout, 3600.0)
        while True:
            red = {n for n in wanted if self.store.colour_of(n) == "red"}
            remaining = deadline - loop.time()
            if not red or remaining <= 0:
                return red
            await asyncio.sleep(min(0.05, remaining))

    def _unavailable(self, ctx: Ctx, index: str, count: int) -> EsError:
        timeout = ctx.params.get("timeout", "1m")
        idx = self.store.indices.get(index)
        return EsError(
            503,
            "unavailable_shards_exception",
            f"[{index}][0] primary shard is not active Timeout: [{timeout}], request: "
            f"[BulkShardRequest [[{index}][0]] containing [{count}] requests]",
            fields={"index_uuid": idx.uuid if idx else "_na_", "shard": "0", "index": index},
        )

    async def _single_write(self, ctx: Ctx, index: str, op: Callable[[], tuple[int, JsonObj]]) -> web.Response:
        red = await self._await_primaries(ctx, [index])
        if red:
            raise self._unavailable(ctx, index, 1)
        status, result = op()
        self.store.save()
        return self.ok(ctx, result, status)

    async def h_doc_index(self, ctx: Ctx, p: dict[str, str]) -> web.StreamResponse:
        op_type = ctx.params.get("op_type", "index")
        if op_type not in ("index", "create"):
            raise bad_request(f"opType must be 'create' or 'index', found: [{op_type}]")
        source = ctx.json_body()
        create = op_type == "create"
        return await self._single_write(
            ctx, p["index"], lambda: self._op_index(ctx, p["index"], p.get("id"), source, create=create)
        )

    async def h_doc_create(self, ctx: Ctx, p: dict[str, str]) -> web.StreamResponse:
        source = ctx.json_body()
        return await self._single_write(
            ctx, p["index"], lambda: self._op_index(ctx, p["index"], p["id"], source, create=True)
        )

    async def h_doc_update(self, ctx: Ctx, p: dict[str, str]) -> web.StreamResponse:
        body = ctx.json_object(required=True)
        return await self._single_write(ctx, p["index"], lambda: self._op_update(ctx, p["index"], p["id"], body))

    async def h_doc_delete(self, ctx: Ctx, p: dict[str, str]) -> web.StreamResponse:
        if p["index"] not in self.store.indices:
            raise index_not_found(p["index"])
        return await self._single_write(ctx, p["index"], lambda: self._op_delete(ctx, p["index"], p["id"]))

    async def h_doc_get(self, ctx: Ctx, p: dict[str, str]) -> web.StreamResponse:
        name, doc_id = p["index"], p["id"]
        idx = self.store.indices.get(name)
        head = ctx.method == "HEAD"
        if idx is None:
            if head:
                return self.empty(404)
            raise index_not_found(name)
        if self.store.colour_of(name) == "red":
            if head:
                return self.empty(503)
            raise EsError(
                503,
                "no_shard_available_action_exception",
                f"No shard available for [get [{name}][{doc_id}]: routing [null]]",
            )
        doc = idx.docs.get(doc_id)
        out: JsonObj = {"_index": name}
        if self.include_type(ctx):
            out["_type"] = "_doc"
        out["_id"] = doc_id
        if doc is None:
            if head:
                return self.empty(404)
            out["found"] = False
            return self.ok(ctx, out, 404)
        if head:
            return self.empty(200)
        out.update({"_version": doc.version, "_seq_no": doc.seq_no, "_primary_term": 1, "found": True})
        source = parse_source_filter(None, ctx.params).apply(doc.source)
        if source is not None:
            out["_source"] = source
        return self.ok(ctx, out)

    def _parse_bulk(self, body: bytes, default_index: str | None) -> list[BulkOp]:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EsError(400, "x_content_parse_exception", f"[1:1] Invalid UTF-8: {exc.reason}") from None
        if not text.strip():
            raise validation_failed(["request body is required"])
        if not text.endswith("\n"):
            raise bad_request("The bulk request must be terminated by a newline [\\n]")
        lines = text.split("\n")[:-1]
        ops: list[BulkOp] = []
        problems: list[str] = []
        i = 0
        while i < len(lines):
            line_no = i + 1
            line = lines[i]
            i += 1
            if not line.strip():
                continue
            action = parse_json(line, line=line_no)
            if not isinstance(action, dict):
                raise bad_request(
                    f"Malformed action/metadata line [{line_no}], expected START_OBJECT or END_OBJECT but found "
                    f"[{_token_name(action)}]"
                )
            if len(action) != 1:
                raise bad_request(
                    f"Malformed action/metadata line [{line_no}], expected END_OBJECT but found [FIELD_NAME]"
                    if action
                    else f"Malformed action/metadata line [{line_no}], expected FIELD_NAME but found [END_OBJECT]"
                )
            name, meta = next(iter(action.items()))
            if name not in ("index", "create", "update", "delete"):
                raise bad_request(
                    f"Malformed action/metadata line [{line_no}], expected field [create], [delete], [index] or "
                    f"[update] but found [{name}]"
                )
            if not isinstance(meta, dict):
                raise bad_request(
                    f"Malformed action/metadata line [{line_no}], expected START_OBJECT but found [{_token_name(meta)}]"
                )
            for key, value in meta.items():
                if key not in BULK_META_KEYS:
                    raise bad_request(f"Action/metadata line [{line_no}] contains an unknown parameter [{key}]")
                if key in ("_index", "_id") and (isinstance(value, bool) or not isinstance(value, (str, int))):
                    raise bad_request(
                        f"Malformed action/metadata line [{line_no}], expected a simple value for field "
                        f"[{key}] but found [{_token_name(value)}]"
                    )
            index = meta.get("_index", default_index)
            doc_id = meta.get("_id")
            op = BulkOp(
                name,
                None if index is None else str(index),
                None if doc_id is None else str(doc_id),
                None,
                line_no,
                op_type_create=meta.get("op_type") == "create",
            )
            if op.index is None:
                problems.append("index is missing")
            if name in ("update", "delete") and op.doc_id is None:
                problems.append("id is missing")
            if name != "delete":
                if i >= len(lines):
                    problems.append("source is missing")
                else:
                    op.source_text = lines[i]
                    i += 1
            ops.append(op)
        if not ops:
            problems.append("no requests added")
        if problems:
            raise validation_failed(problems)
        return ops

    async def h_bulk(self, ctx: Ctx, p: dict[str, str]) -> web.StreamResponse:
        ops = self._parse_bulk(ctx.body, p.get("index"))
        targets = [op.index for op in ops if op.index is not None]
        red = await self._await_primaries(ctx, targets)
        per_index = {n: sum(1 for op in ops if op.index == n) for n in red}
        items: list[JsonObj] = []
        errors = False
        changed = False
        for op in ops:
            try:
                if op.index in red:
                    assert op.index is not None
                    raise self._unavailable(ctx, op.index, per_index[op.index])
                source: Any = None
                if op.source_text is not None:
                    try:
                        source = parse_json(op.source_text, line=op.line + 1)
                    except EsError as exc:
                        raise EsError(
                            400, "mapper_parsing_exception", "failed to parse", caused_by=exc.cause()
                        ) from None
                if op.action == "index":
                    status, result = self._op_index(ctx, op.index, op.doc_id, source, create=op.op_type_create)
                elif op.action == "create":
                    status, result = self._op_index(ctx, op.index, op.doc_id, source, create=True)
                elif op.action == "update":
                    status, result = self._op_update(ctx, op.index, op.doc_id, source)
                else:
                    status, result = self._op_delete(ctx, op.index, op.doc_id)
                changed = True
                items.append({op.action: {**result, "status": status}})
            except EsError as exc:
                errors = True
                item: JsonObj = {"_index": op.index}
                if self.include_type(ctx):
                    item["_type"] = "_doc"
                item.update({"_id": op.doc_id, "status": exc.status, "error": exc.cause()})
                items.append({op.action: item})
        if changed:
            self.store.save()
        if self.version.major >= 8:
            return self.ok(ctx, {"errors": errors, "took": ctx.took(), "items": items})
        return self.ok(ctx, {"took": ctx.took(), "errors": errors, "items": items})

    # search

    # Search body keys: answered, ignored (no effect on which documents come back), or refused.
    _SEARCH_KEYS: Final = frozenset(["query", "from", "size", "track_total_hits", "sort", "_source", "post_filter"])
    _IGNORED_SEARCH_KEYS: Final = frozenset(
        [
            "highlight",
            "timeout",
            "version",
            "seq_no_primary_term",
            "explain",
            "stored_fields",
            "docvalue_fields",
            "fields",
            "profile",
            "track_scores",
            "stats",
            "min_score",
        ]
    )
    _UNSUPPORTED_SEARCH_KEYS: Final = frozenset(
        [
            "aggs",
            "aggregations",
            "search_after",
            "collapse",
            "pit",
            "suggest",
            "rescore",
            "knn",
            "script_fields",
            "runtime_mappings",
            "indices_boost",
            "terminate_after",
            "slice",
        ]
    )

    def _search_body(self, ctx: Ctx, allowed: frozenset[str], ignored: frozenset[str], *, count: bool) -> JsonObj:
        body = ctx.json_object()
        for key, value in body.items():
            if key in allowed or key in ignored:
                continue
            if count:
                raise parsing_error(f"request does not support [{key}]")
            if key in self._UNSUPPORTED_SEARCH_KEYS:
                raise unsupported(f"[{key}] in search requests")
            raise parsing_error(f"Unknown key for a {_token_name(value)} in [{key}].")
        return body

    def _query_matcher(self, ctx: Ctx, body: JsonObj) -> Matcher:
        q = ctx.params.get("q")
        if q is not None:
            df = ctx.params.get("df", "*")
            op = _operator(ctx.params.get("default_operator"))
            return compile_query_string(q, ["*" if df in ("_all", "*") else df], op)
        if "query" in body:
            return compile_query(body["query"])
        return lambda doc: True

    def _red_split(self, names: list[str]) -> tuple[list[str], list[str]]:
        red = [n for n in names if self.store.colour_of(n) == "red"]
        if names and len(red) == len(names):
            raise EsError(
                503,
                "search_phase_execution_exception",
                "all shards failed",
                root_cause=[],
                extra={"phase": "query", "grouped": True, "failed_shards": []},
            )
        return [n for n in names if n not in red], red

    def _shards_section(self, names: list[str], red: list[str]) -> JsonObj:
        total = sum(self.store.indices[n].shards for n in names)
        failed = sum(self.store.indices[n].shards for n in red)
        out: JsonObj = {"total": total, "successful": total - failed, "skipped": 0, "failed": failed}
        if red:
            out["failures"] = [
                {
                    "shard": 0,
                    "index": n,
                    "node": None,
                    "reason": {
                        "type": "no_shard_available_action_exception",
                        "reason": None,
                        "index_uuid": self.store.indices[n].uuid,
                        "shard": "0",
                        "index": n,
                    },
                }
                for n in red
            ]
        return out

    async def h_search(self, ctx: Ctx, p: dict[str, str]) -> web.StreamResponse:
        names = self.resolve(p.get("index"), ctx)
        body = self._search_body(ctx, self._SEARCH_KEYS, self._IGNORED_SEARCH_KEYS, count=False)
        if "scroll" in ctx.params:
            raise unsupported("[scroll]")
        matcher = self._query_matcher(ctx, body)
        post_filter = compile_query(body["post_filter"]) if "post_filter" in body else None

        def int_setting(name: str, default: int) -> int:
            from_param = _int_param(ctx.params, name)
            if from_param is not None:
                return from_param
            value = body.get(name, default)
            if isinstance(value, bool) or not isinstance(value, int):
                raise EsError(
                    400, "x_content_parse_exception", f"[1:1] [{name}] failed to parse field, expected a number"
                )
            return value

        from_, size = int_setting("from", 0), int_setting("size", 10)
        if from_ < 0:
            raise bad_request("[from] parameter cannot be negative")
        if size < 0:
            raise bad_request(f"[size] parameter cannot be negative, found [{size}]")
        if from_ + size > MAX_RESULT_WINDOW:
            raise bad_request(
                f"Result window is too large, from + size must be less than or equal to: [{MAX_RESULT_WINDOW}] but "
                f"was [{from_ + size}]. See the scroll api for a more efficient way to request large data sets. "
                "This limit can be set by changing the [index.max_result_window] index level setting."
            )
        track: bool | int = DEFAULT_TRACK_TOTAL_HITS
        raw_track: Any = ctx.params.get("track_total_hits", body.get("track_total_hits"))
        if raw_track is not None:
            if isinstance(raw_track, bool):
                track = raw_track
            elif raw_track in ("true", "false"):
                track = raw_track == "true"
            else:
                try:
                    track = int(raw_track)
                except (TypeError, ValueError):
                    raise bad_request(f"Failed to parse value [{raw_track}] for [track_total_hits]") from None
        as_int = _bool_param(ctx.params, "rest_total_hits_as_int")
        if as_int and track is not True and track is not False:
            track = True
        sort_specs = (
            parse_sort_param(ctx.params["sort"])
            if "sort" in ctx.params
            else parse_sort(body["sort"])
            if "sort" in body
            else []
        )
        source_filter = parse_source_filter(body.get("_source"), ctx.params)

        live, red = self._red_split(names)
        matched = [d for d in self._views(live) if matcher(d)]
        total = len(matched)
        if post_filter is not None:
            matched = [d for d in matched if post_filter(d)]
        scored = not sort_specs or any(s.field == "_score" for s in sort_specs)
        ordered = _sort_docs(matched, sort_specs) if sort_specs else [(d, []) for d in matched]
        page = ordered[from_ : from_ + size]
        hits: list[JsonObj] = []
        for doc, sort_values in page:
            hit: JsonObj = {"_index": doc.index}
            if self.include_type(ctx):
                hit["_type"] = "_doc"
            hit.update({"_id": doc.doc_id, "_score": 1.0 if scored else None})
            source = source_filter.apply(doc.source)
            if source is not None:
                hit["_source"] = source
            if sort_specs:
                hit["sort"] = sort_values
            hits.append(hit)
        hits_section: JsonObj = {}
        if track is not False:
            if as_int:
                hits_section["total"] = total
            elif track is True or total <= track:
                hits_section["total"] = {"value": total, "relation": "eq"}
            else:
                hits_section["total"] = {"value": int(track), "relation": "gte"}
        hits_section["max_score"] = 1.0 if scored and matched else None
        hits_section["hits"] = hits
        return self.ok(
            ctx,
            {"took": ctx.took(), "timed_out": False, "_shards": self._shards_section(names, red), "hits": hits_section},
        )

    async def h_count(self, ctx: Ctx, p: dict[str, str]) -> web.StreamResponse:
        names = self.resolve(p.get("index"), ctx)
        body = self._search_body(ctx, frozenset({"query"}), frozenset(), count=True)
        matcher = self._query_matcher(ctx, body)
        live, red = self._red_split(names)
        count = sum(1 for d in self._views(live) if matcher(d))
        shards = self._shards_section(names, red)
        shards.pop("failures", None)
        return self.ok(ctx, {"count": count, "_shards": shards})

    # security

    async def h_authenticate(self, ctx: Ctx, p: dict[str, str]) -> web.StreamResponse:
        self._require_security()
        body: JsonObj = {
            "username": ctx.user,
            "roles": ["superuser"],
            "full_name": None,
            "email": None,
            "metadata": {"_reserved": True},
            "enabled": True,
        }
        if ctx.api_key is not None:
            body["authentication_realm"] = {"name": "_es_api_key", "type": "_es_api_key"}
            body["lookup_realm"] = {"name": "_es_api_key", "type": "_es_api_key"}
            body["authentication_type"] = "api_key"
            body["api_key"] = {"id": ctx.api_key.id, "name": ctx.api_key.name}
        else:
            body["authentication_realm"] = {"name": "reserved", "type": "reserved"}
            body["lookup_realm"] = {"name": "reserved", "type": "reserved"}
            body["authentication_type"] = "realm"
        return self.ok(ctx, body)

    async def h_password(self, ctx: Ctx, p: dict[str, str]) -> web.StreamResponse:
        self._require_security()
        user = p.get("user", ctx.user)
        body = ctx.json_object(required=True)
        password = body.get("password")
        problems = []
        if user != "elastic":
            problems.append("user must exist in order to change password")
        if "password_hash" in body:
            raise unsupported("[password_hash]")
        if not isinstance(password, str):
            problems.append("password must be specified")
        elif len(password) < 6:
            problems.append("passwords must be at least [6] characters long")
        if problems:
            raise validation_failed(problems)
        assert isinstance(password, str)
        self.store.set_password(password)
        self.store.save()
        log.info("password of user [%s] changed", user)
        return self.ok(ctx, {})

    async def h_api_key_create(self, ctx: Ctx, p: dict[str, str]) -> web.StreamResponse:
        self._require_security()
        body = ctx.json_object(required=True)
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise validation_failed(["api key name is required"])
        expiration_ms = None
        if body.get("expiration") is not None:
            seconds = parse_time(str(body["expiration"]), "expiration")
            expiration_ms = _now_ms() + int(seconds * 1000)
        key_id = _auto_id()
        secret = base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode()
        self.store.api_keys[key_id] = ApiKey(key_id, name, _sha256(key_id, secret), _now_ms(), expiration_ms)
        self.store.save()
        log.info("created API key [%s] (%s)", key_id, name)
        out: JsonObj = {"id": key_id, "name": name}
        if expiration_ms is not None:
            out["expiration"] = expiration_ms
        out["api_key"] = secret
        out["encoded"] = base64.b64encode(f"{key_id}:{secret}".encode()).decode()
        return self.ok(ctx, out)

    async def h_api_key_delete(self, ctx: Ctx, p: dict[str, str]) -> web.StreamResponse:
        self._require_security()
        body = ctx.json_object(required=True)
        ids = body.get("ids", [body["id"]] if "id" in body else [])
        name = body.get("name")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise parsing_error("[ids] must be an array of strings")
        targets = [k for k in self.store.api_keys.values() if k.id in ids or (name is not None and k.name == name)]
        if not targets and not ids and name is None:
            raise validation_failed(["One of [api key id, api key name, username, realm name] must be specified"])
        done: list[str] = []
        before: list[str] = []
        for key in targets:
            (before if key.invalidated else done).append(key.id)
            key.invalidated = True
        self.store.save()
        return self.ok(ctx, {"invalidated_api_keys": done, "previously_invalidated_api_keys": before, "error_count": 0})

    # sandbox

    async def h_sandbox_ready(self, ctx: Ctx, p: dict[str, str]) -> web.StreamResponse:
        return self.ok(ctx, {"ready": True})

    async def h_sandbox_health(self, ctx: Ctx, p: dict[str, str]) -> web.StreamResponse:
        try:
            body = ctx.json_object(required=True)
        except EsError as exc:
            raise FlatError(400, f"body must be a JSON object: {exc.reason}") from None
        status = body.get("status")
        if status not in COLOURS:
            raise FlatError(400, 'body must be {"status": "green"|"yellow"|"red", "indices": [..]?}')
        indices = body.get("indices")
        if indices is not None and (not isinstance(indices, list) or not all(isinstance(i, str) for i in indices)):
            raise FlatError(400, '"indices" must be a list of index names')
        assert isinstance(status, str)
        self.store.health = status
        self.store.red_indices = list(indices) if status == "red" and indices is not None else None
        self.store.save()
        log.info("sandbox: cluster health set to %s%s", status, f" for {indices}" if indices else "")
        return self.ok(ctx, {"acknowledged": True, "status": status, "indices": self.store.red_indices})

    # info

    async def h_info(self, ctx: Ctx, p: dict[str, str]) -> web.StreamResponse:
        v = self.version
        return self.ok(
            ctx,
            {
                "name": NODE_NAME,
                "cluster_name": CLUSTER_NAME,
                "cluster_uuid": self.store.cluster_uuid,
                "version": {
                    "number": v.number,
                    "build_flavor": "default",
                    "build_type": "docker",
                    "build_hash": v.build_hash,
                    "build_date": v.build_date,
                    "build_snapshot": False,
                    "lucene_version": v.lucene,
                    "minimum_wire_compatibility_version": v.min_wire,
                    "minimum_index_compatibility_version": v.min_index,
                },
                "tagline": "You Know, for Search",
            },
        )


# -- process -----------------------------------------------------------------------------------------


def make_app(store: Store, version: ServerVersion, *, security: bool) -> web.Application:
    """The aiohttp application: one catch-all route, Elasticsearch's own routing inside."""
    server = Server(store, version, security=security)
    app = web.Application(client_max_size=100 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", server.handle)
    return app


async def serve(app: web.Application, host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT, then close listeners and in-flight requests promptly."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        log.info("listening on http://%s:%d", host, port)
        await stop.wait()
        log.info("stopping")
    finally:
        await runner.cleanup()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.standins.elasticsearch",
        description="Wire-faithful single-node Elasticsearch stand-in for the PlaceOS sandbox.",
    )
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    parser.add_argument("--data-dir", type=Path, required=True, help="where state.json lives")
    parser.add_argument("--version", choices=sorted(VERSIONS), default="8.14.3", help="release to imitate")
    parser.add_argument("--password", default=None, help="enable security; first-start password of 'elastic'")
    parser.add_argument("--host", default="127.0.0.1", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s elasticsearch: %(message)s"
    )
    try:
        store = Store.open(args.data_dir, args.password)
    except (StateError, OSError) as exc:
        log.error("cannot open data dir: %s", exc)
        return 1
    version = VERSIONS[args.version]
    log.info(
        "Elasticsearch %s stand-in, data %s, security %s, health %s, %d indices",
        version.number,
        args.data_dir,
        "on" if args.password is not None else "off",
        store.health,
        len(store.indices),
    )
    app = make_app(store, version, security=args.password is not None)
    try:
        asyncio.run(serve(app, args.host, args.port))
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", args.host, args.port, exc)
        return 1
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
