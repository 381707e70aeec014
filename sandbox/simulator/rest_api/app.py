"""The aiohttp application: authentication and production-error middleware, lifecycle hooks, routes."""

from __future__ import annotations

import logging
import uuid

from aiohttp import web

from sandbox.simulator.db import ConfigDB, mask_url
from sandbox.simulator.rest_api.api import RestApi, RestApiConfig
from sandbox.simulator.rest_api.common import API, NGINX_502, USER_KEY, Unauthorized, json_response, production_error
from sandbox.simulator.rest_api.routes import RouteHandler, routes

log = logging.getLogger("sandbox.rest_api")


# ---------------------------------------------------------------------------------------------------
# App factory


def _needs_auth(request: web.Request) -> bool:
    path = request.path
    return path.startswith(f"{API}/") and path != f"{API}/"


API_KEY = web.AppKey("api", RestApi)


def make_app(config: RestApiConfig, db: ConfigDB | None = None) -> web.Application:
    """The rest-api app. ``db`` may be given (tests); otherwise it is opened from ``config.db_url``."""
    api = RestApi(config, db)

    @web.middleware
    async def middleware(request: web.Request, handler: RouteHandler) -> web.StreamResponse:
        if api.unreachable and not request.path.startswith("/_sandbox/"):
            return web.Response(text=NGINX_502, status=502, content_type="text/html")
        exception = request.match_info.http_exception
        if isinstance(exception, web.HTTPNotFound):
            # No route: action-controller's router falls through to HTTP::Server's 404 before any
            # controller (so before authentication): "404 Not Found" as text (crystal HTTP::Handler).
            return web.Response(text="404 Not Found\n", status=404, content_type="text/plain")
        try:
            if _needs_auth(request):
                try:
                    request[USER_KEY] = await api.authenticate(request)
                except Unauthorized as e:
                    return json_response(e.body, 401)
            response = await handler(request)
        except web.HTTPException:
            raise
        except Exception as e:
            # The production error handler (§5.1): the reason goes to the log, never to the client.
            log.warning("%s %s failed: %s: %s", request.method, request.path, type(e).__name__, e)
            response = production_error(request)
        if not response.prepared:
            response.headers.setdefault("X-Request-ID", request.headers.get("X-Request-ID", str(uuid.uuid4())))
        return response

    app = web.Application(middlewares=[middleware])
    app[API_KEY] = api

    async def on_startup(app: web.Application) -> None:
        await api.start()
        log.info(
            "rest-api era %s on %s:%d (redis %s, db %s, es %s, etcd %s)",
            config.era,
            config.host,
            config.port,
            mask_url(config.redis_url),
            mask_url(config.db_url),
            mask_url(config.es_url) if config.es_url else "-",
            mask_url(config.etcd_url) if config.etcd_url else "-",
        )

    async def on_shutdown(app: web.Application) -> None:
        api.stopping.set()
        for session in list(api.sessions):
            await session.close()

    async def on_cleanup(app: web.Application) -> None:
        await api.stop()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    app.router.add_routes(routes(api))
    return app
