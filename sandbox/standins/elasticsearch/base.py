"""The part of the server every group of routes builds on: answers rendered the way the real server
renders them, and index expressions resolved to index names.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Sequence
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from sandbox.standins.elasticsearch.context import Ctx
from sandbox.standins.elasticsearch.protocol import MediaType, ServerVersion, _bool_param, bad_request, index_not_found
from sandbox.standins.elasticsearch.queries import DocView
from sandbox.standins.elasticsearch.storage import Store


class ServerBase:
    """Rendering and index resolution; the route groups (security, health, documents, search) extend it."""

    store: Store
    version: ServerVersion
    security: bool

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
