"""The Server that puts the route groups together (routing, negotiation, every failure as an error body),
the sandbox and info routes, and the process entry point.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote

from aiohttp import web

from sandbox.standins.elasticsearch.context import Ctx, Route
from sandbox.standins.elasticsearch.documents import DocumentRoutes
from sandbox.standins.elasticsearch.health import HealthRoutes
from sandbox.standins.elasticsearch.protocol import (
    CLUSTER_NAME,
    COLOURS,
    JSON_BODY_TYPES,
    NODE_NAME,
    VERSIONS,
    EsError,
    FlatError,
    MediaType,
    ServerVersion,
    _media_error,
    negotiate_version,
    parse_media_type,
)
from sandbox.standins.elasticsearch.search import SearchRoutes
from sandbox.standins.elasticsearch.security import SecurityRoutes
from sandbox.standins.elasticsearch.storage import StateError, Store

log = logging.getLogger("sandbox.standins.elasticsearch")


# -- the server --------------------------------------------------------------------------------------


class Server(SecurityRoutes, HealthRoutes, DocumentRoutes, SearchRoutes):
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
