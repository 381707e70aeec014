"""The `_search` and `_count` routes, with red-cluster shard failures."""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from sandbox.standins.elasticsearch.base import ServerBase
from sandbox.standins.elasticsearch.context import Ctx
from sandbox.standins.elasticsearch.protocol import (
    DEFAULT_TRACK_TOTAL_HITS,
    MAX_RESULT_WINDOW,
    EsError,
    _bool_param,
    _int_param,
    _token_name,
    bad_request,
    parsing_error,
    unsupported,
)
from sandbox.standins.elasticsearch.queries import (
    JsonObj,
    Matcher,
    _operator,
    _sort_docs,
    compile_query,
    compile_query_string,
    parse_sort,
    parse_sort_param,
    parse_source_filter,
)


class SearchRoutes(ServerBase):
    """`_search` and `_count`."""

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
