"""The persisted state: indices, documents, API keys, the password hash and the health colour in
`<data-dir>/state.json`, rewritten atomically.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.standins.elasticsearch.protocol import COLOURS, STATE_FILE, STATE_FORMAT

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
