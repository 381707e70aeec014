"""What every route answers with: the imitated releases, Elasticsearch's error bodies, strict JSON and
parameter parsing, and media-type negotiation (RestCompatibleVersionHelper).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

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
