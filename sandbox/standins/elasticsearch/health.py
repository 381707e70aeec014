"""Cluster health: `/_cluster/health` (with its waits) and the `_cat` routes."""

from __future__ import annotations

import asyncio
import fnmatch
import json
import re
import time
from collections.abc import Sequence

from aiohttp import web

from sandbox.standins.elasticsearch.base import ServerBase
from sandbox.standins.elasticsearch.context import Ctx, _human_bytes, _row_key
from sandbox.standins.elasticsearch.protocol import CLUSTER_NAME, COLOURS, _bool_param, bad_request, parse_time
from sandbox.standins.elasticsearch.queries import JsonObj


class HealthRoutes(ServerBase):
    """`/_cluster/health` and `/_cat/*`."""

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
