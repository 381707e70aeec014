"""Index and document routes: indices (create, exists, get, delete, refresh), single-document writes and
reads, and `_bulk`, with red-cluster write failures.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web

from sandbox.standins.elasticsearch.base import ServerBase
from sandbox.standins.elasticsearch.context import BULK_META_KEYS, BulkOp, Ctx, validate_doc_id, validate_index_name
from sandbox.standins.elasticsearch.protocol import (
    EsError,
    _token_name,
    bad_request,
    index_not_found,
    parse_json,
    parse_time,
    unsupported,
    validation_failed,
)
from sandbox.standins.elasticsearch.queries import JsonObj, _deep_merge, parse_source_filter
from sandbox.standins.elasticsearch.storage import Doc, Index, _auto_id, _es_uuid, _now_ms

log = logging.getLogger("sandbox.standins.elasticsearch")


class DocumentRoutes(ServerBase):
    """Indices, documents and `_bulk`."""

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
