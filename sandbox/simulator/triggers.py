"""The sandbox's PlaceOS triggers service: its health and version routes, on real backends.

``python -m sandbox.simulator.triggers --port P --era A|B|C|D --redis URL --db URL [--etcd URL]
[--platform-version V] [--health checks|always-ok] [--backend-timeout S]``; the URLs may come from
``$SANDBOX_REDIS_URL``, ``$SANDBOX_DB_URL``, ``$SANDBOX_ETCD_URL`` instead (credentials out of ``ps``).

What it reproduces (internals §6):

* ``GET /api/triggers/v2/`` health. By default (``--health checks``) it checks what triggers depends on:
  Redis ``PING`` and the config database (RethinkDB ``server_status`` in era A, the PostgreSQL
  ``pg_stat_activity`` query in B/C), and in eras A/B also etcd ``POST /v3/maintenance/status``,
  because triggers finds core through hound-dog in etcd there (internals §6 "Eras A/B"; §1.1) and
  the troubleshooting page says "Triggers will fail" when etcd fails (§9). A failure is triggers'
  ``raise "not healthy"`` through the production error handler: 500 with ``{}`` for JSON clients,
  an empty body otherwise (§5.1).

  Modelled vs real: the Redis + PostgreSQL check exists in triggers only since ``d8479d3``
  (2025-10-23); before that, i.e. in every release of eras A-C, the route **always returned 200**.
  The etcd check is a sandbox extension so the documented etcd impact on triggers is observable.
  ``--health always-ok`` gives the historical behaviour.
* ``GET /api/triggers/v2/version``: ``{service, commit, version, build_time, platform_version}``.
* ``GET /_sandbox/ready`` (README contract point 6).

Left out: trigger evaluation, webhooks, actions and the ``status/<trigger instance>`` state hash.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from sandbox.simulator.db import ConfigDB, mask_url, open_db
from sandbox.simulator.discovery import EtcdDiscovery
from sandbox.simulator.rest_api import (
    DEFAULT_PLATFORM_VERSION,
    ERAS,
    json_response,
    production_error,
    redis_client,
)
from sandbox.simulator.service import add_store_urls, require_urls, serve_main, service_parser

log = logging.getLogger("sandbox.triggers")

BASE = "/api/triggers/v2"
TRIGGERS_COMMIT = {"A": "66c3b65", "B": "66c3b65", "C": "bffac69", "D": "076c954"}  # internals §0, §6, "Latest"


@dataclass
class TriggersConfig:
    port: int
    era: str
    redis_url: str = field(repr=False)
    db_url: str = field(repr=False)
    etcd_url: str | None = field(default=None, repr=False)
    platform_version: str | None = None
    health: str = "checks"  # or "always-ok": triggers before d8479d3
    backend_timeout: float = 2.0
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        self.era = self.era.upper()
        if self.era not in ERAS:
            raise ValueError(f"era must be one of {ERAS}, not {self.era!r}")
        if self.era in ("A", "B") and not self.etcd_url:
            raise ValueError(f"era {self.era} needs --etcd (triggers discovers cores in etcd)")
        if self.health not in ("checks", "always-ok"):
            raise ValueError("health must be 'checks' or 'always-ok'")
        if self.platform_version is None:
            self.platform_version = DEFAULT_PLATFORM_VERSION[self.era]


class Triggers:
    """Backend clients and the checks of the health route."""

    def __init__(self, config: TriggersConfig, db: ConfigDB | None = None) -> None:
        self.config = config
        self._db = db
        self.redis = redis_client(config.redis_url, config.backend_timeout)
        self.etcd = (
            EtcdDiscovery(config.etcd_url, timeout=config.backend_timeout)
            if config.era in ("A", "B") and config.etcd_url
            else None
        )

    async def start(self) -> None:
        if self._db is None:
            self._db = await open_db(self.config.db_url, self.config.backend_timeout)

    async def stop(self) -> None:
        await self.redis.aclose()
        if self.etcd is not None:
            await self.etcd.close()
        if self._db is not None:
            await self._db.close()

    async def check_redis(self) -> None:
        await self.redis.ping()

    async def check_db(self) -> None:
        assert self._db is not None
        await self._db.health()

    async def check_etcd(self) -> None:
        assert self.etcd is not None
        await self.etcd.health()

    def checks(self) -> dict[str, Callable[[], Awaitable[None]]]:
        checks: dict[str, Callable[[], Awaitable[None]]] = {"redis": self.check_redis}
        checks["rethinkdb" if self.config.era == "A" else "postgres"] = self.check_db
        if self.etcd is not None:
            checks["etcd"] = self.check_etcd
        return checks


TRIGGERS_KEY = web.AppKey("triggers", Triggers)


def make_app(config: TriggersConfig, db: ConfigDB | None = None) -> web.Application:
    """The triggers app; ``db`` may be given (tests), otherwise it is opened from ``config.db_url``."""
    triggers = Triggers(config, db)
    app = web.Application()
    app[TRIGGERS_KEY] = triggers

    async def health(request: web.Request) -> web.StreamResponse:
        if config.health == "always-ok":
            return web.Response(status=200, text="", content_type="text/plain")
        checks = triggers.checks()
        results = await asyncio.gather(*(c() for c in checks.values()), return_exceptions=True)
        failed = [name for name, res in zip(checks, results, strict=True) if isinstance(res, BaseException)]
        if failed:
            log.warning("not healthy: %s", ", ".join(failed))
            return production_error(request)
        return web.Response(status=200, text="", content_type="text/plain")

    async def version(request: web.Request) -> web.StreamResponse:
        return json_response(
            {
                "service": "triggers",
                "commit": TRIGGERS_COMMIT[config.era],
                "version": f"sandbox-{config.era.lower()}",
                "build_time": "2024-01-01T00:00:00Z",
                "platform_version": config.platform_version,
            }
        )

    async def ready(request: web.Request) -> web.StreamResponse:
        return json_response({"ready": True, "era": config.era})

    async def on_startup(app: web.Application) -> None:
        await triggers.start()
        log.info(
            "triggers era %s on %s:%d (redis %s, db %s, etcd %s, health %s)",
            config.era,
            config.host,
            config.port,
            mask_url(config.redis_url),
            mask_url(config.db_url),
            mask_url(config.etcd_url) if config.etcd_url else "-",
            config.health,
        )

    async def on_cleanup(app: web.Application) -> None:
        await triggers.stop()

    app.router.add_get(f"{BASE}/", health)
    app.router.add_get(f"{BASE}/version", version)
    app.router.add_get("/_sandbox/ready", ready)
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


def parse_args(argv: list[str] | None = None) -> TriggersConfig:
    p = service_parser("python -m sandbox.simulator.triggers", __doc__.split("\n")[0], ERAS)
    add_store_urls(p)
    p.add_argument(
        "--etcd", default=os.environ.get("SANDBOX_ETCD_URL"), help="etcd URL (eras A/B) (or $SANDBOX_ETCD_URL)"
    )
    p.add_argument("--platform-version", help="reported by /version (default per era)")
    p.add_argument(
        "--health",
        choices=["checks", "always-ok"],
        default="checks",
        help="checks: Redis + DB (+ etcd in A/B); always-ok: triggers before d8479d3",
    )
    p.add_argument("--backend-timeout", type=float, default=2.0, help="per-call timeout to Redis/DB/etcd")
    a = p.parse_args(argv)
    require_urls(p, a, "redis", "db")
    return TriggersConfig(
        port=a.port,
        host=a.host,
        era=a.era,
        redis_url=a.redis,
        db_url=a.db,
        etcd_url=a.etcd,
        platform_version=a.platform_version,
        health=a.health,
        backend_timeout=a.backend_timeout,
    )


def main(argv: list[str] | None = None) -> None:
    serve_main(argv, parse_args, make_app, "sandbox.triggers.access")


if __name__ == "__main__":
    main()
