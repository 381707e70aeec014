"""The search-ingest simulator: mirrors the config database's tables into Elasticsearch indices.

``python -m sandbox.simulator.search_ingest --port P --db URL --es URL [--interval S]``

What it reproduces of PlaceOS search-ingest (internals §4, §7):

* One index per mirrored table, named after the table (``sys``, ``mod``, ``driver``, ...;
  ``sandbox.simulator.seed.TABLES``), created on start and backfilled, each document's ``_source``
  being the row and ``_id`` its id.
* Health ``GET /api/search-ingest/v1/``: Elasticsearch ``GET /_cluster/health`` (green or yellow is
  healthy, red or non-2xx is not) and the config database's own check (RethinkDB ``server_status`` in
  era A, PostgreSQL ``pg_stat_activity`` in B/C); 500 on failure. As the real one, it answers 200
  without checking until the tables have been loaded once. ``/ready`` (503 until loaded), ``/version``,
  ``POST /reindex`` and ``POST /backfill`` (both: mirror everything again now).

Deviation: the real service follows RethinkDB changefeeds (era A) or pg-orm change notifications
(B/C). This one polls every ``--interval`` seconds and bulk-indexes rows that changed, deletes rows
that disappeared, and backfills an index whose document count no longer matches the table (e.g. an
Elasticsearch restarted empty). Elasticsearch is spoken to with plain HTTP (aiohttp), so any 7.x/8.x
or the stand-in works; credentials in the ES URL are sent as basic auth and never logged.

Sandbox-only control routes (README contract point 5): ``POST /_sandbox/pause`` (stop mirroring, so
the indices lag behind the database as rows change), ``POST /_sandbox/resume``, ``GET /_sandbox/ready``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import signal
import sys
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from aiohttp import web

from sandbox.simulator.db import ConfigDB, DBError, mask_url, open_db
from sandbox.simulator.seed import TABLES

log = logging.getLogger("sandbox.search_ingest")

VERSION = "2.9.1"
STARTED = time.time()


class ESError(Exception):
    """Elasticsearch could not be reached or refused a request."""


class Elastic:
    """The few Elasticsearch calls search-ingest needs, over plain HTTP."""

    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        self.auth = aiohttp.BasicAuth(parts.username, parts.password or "") if parts.username else None
        netloc = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
        self.base = urlunsplit((parts.scheme or "http", netloc, parts.path.rstrip("/"), "", ""))
        self.url = mask_url(url)
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(auth=self.auth, timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def call(
        self, method: str, path: str, body: Any = None, *, ndjson: str | None = None, ok: tuple[int, ...] = ()
    ) -> tuple[int, Any]:
        """One request; raises ESError on a connection failure or an unexpected non-2xx status."""
        headers = {"Content-Type": "application/x-ndjson" if ndjson is not None else "application/json"}
        data = ndjson if ndjson is not None else (json.dumps(body) if body is not None else None)
        try:
            async with self._http().request(method, f"{self.base}{path}", data=data, headers=headers) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise ESError(f"{method} {path}: {type(e).__name__}: {e or 'failed'} ({self.url})") from e
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = text
        if not (200 <= status < 300 or status in ok):
            raise ESError(f"{method} {path}: HTTP {status}: {str(text)[:200]}")
        return status, parsed

    async def health(self) -> str:
        """``GET /_cluster/health``: the colour; raises unless green or yellow (search-ingest ``healthy?``)."""
        _, body = await self.call("GET", "/_cluster/health")
        colour = str(body.get("status")) if isinstance(body, dict) else "unknown"
        if colour not in ("green", "yellow"):
            raise ESError(f"cluster status {colour}")
        return colour

    async def ensure_index(self, index: str) -> None:
        status, _ = await self.call("HEAD", f"/{index}", ok=(404,))
        if status == 404:
            await self.call("PUT", f"/{index}", {}, ok=(400,))  # 400: created meanwhile

    async def count(self, index: str) -> int:
        _, body = await self.call("GET", f"/{index}/_count")
        return int(body["count"]) if isinstance(body, dict) else -1

    async def bulk(self, actions: list[str]) -> None:
        if not actions:
            return
        _, body = await self.call("POST", "/_bulk?refresh=true", ndjson="".join(actions))
        if isinstance(body, dict) and body.get("errors"):
            failed = [item for item in body.get("items", []) for op in item.values() if op.get("status", 200) >= 300]
            raise ESError(f"bulk: {len(failed)} action(s) failed, first: {failed[:1]}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _digest(doc: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(doc, sort_keys=True).encode()).hexdigest()


class Ingest:
    """The table manager: mirror every table, keep health and control state."""

    def __init__(self, db: ConfigDB, es: Elastic, interval: float, tables: tuple[str, ...] = TABLES) -> None:
        self.db = db
        self.es = es
        self.interval = interval
        self.tables = tables
        self.paused = False
        self.loaded = False
        self.mirrored: dict[str, dict[str, str]] = {t: {} for t in tables}  # table -> id -> digest
        self.last_sync: float | None = None
        self.last_error: str | None = None
        self._force = asyncio.Event()

    async def sync_table(self, table: str, force: bool) -> int:
        """Mirror one table; returns how many bulk actions were sent."""
        rows = await self.db.all(table)
        await self.es.ensure_index(table)
        current = {str(d["id"]): d for d in rows}
        known = self.mirrored[table]
        if not force and await self.es.count(table) != len(known):
            log.warning("index %s does not hold what was mirrored: backfilling it", table)
            force = True
        if force:
            known = {}
        actions: list[str] = []
        digests: dict[str, str] = {}
        for doc_id, doc in current.items():
            digests[doc_id] = _digest(doc)
            if known.get(doc_id) != digests[doc_id]:
                actions.append(json.dumps({"index": {"_index": table, "_id": doc_id}}) + "\n")
                actions.append(json.dumps(doc) + "\n")
        for doc_id in set(known) - set(current):
            actions.append(json.dumps({"delete": {"_index": table, "_id": doc_id}}) + "\n")
        await self.es.bulk(actions)
        self.mirrored[table] = digests
        return len(actions)

    async def sync_all(self, force: bool = False) -> None:
        sent = 0
        for table in self.tables:
            sent += await self.sync_table(table, force)
        if sent:
            log.info("mirrored %d change(s) to Elasticsearch", sent)
        if not self.loaded:
            log.info("tables loaded: %s", ", ".join(self.tables))
        self.loaded = True
        self.last_sync = time.time()

    async def loop(self) -> None:
        failing: str | None = None
        while True:
            force = self._force.is_set()
            self._force.clear()
            if not self.paused or force:
                try:
                    await self.sync_all(force=force or not self.loaded)
                    if failing:
                        log.info("mirroring works again")
                    failing = self.last_error = None
                except (DBError, ESError) as e:
                    self.last_error = str(e)
                    if failing != self.last_error:
                        log.warning("cannot mirror: %s", e)
                    failing = self.last_error
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._force.wait(), self.interval)

    def force(self) -> None:
        self._force.set()


def make_app(ingest: Ingest) -> web.Application:
    """search-ingest's routes (internals §7) and the sandbox control routes."""

    async def health(request: web.Request) -> web.Response:
        if not ingest.loaded:
            return web.Response(status=200)  # the real one does not check before the tables load
        results = await asyncio.gather(ingest.es.health(), ingest.db.health(), return_exceptions=True)
        failed = {
            name: f"{type(r).__name__}: {r}"[:300]
            for name, r in zip(("elasticsearch", "database"), results, strict=True)
            if isinstance(r, BaseException)
        }
        if failed:
            return web.json_response({"error": "not healthy", "failed": failed}, status=500)
        return web.Response(status=200)

    async def ready(request: web.Request) -> web.Response:
        return web.Response(status=200) if ingest.loaded else web.json_response({"error": "not ready"}, status=503)

    async def version(request: web.Request) -> web.Response:
        # Model::Version (placeos-models version.cr): rest-api's /cluster/versions parses this.
        built = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(STARTED))
        return web.json_response(
            {"service": "search-ingest", "commit": "sandbox", "version": VERSION, "build_time": built}
        )

    async def reindex(request: web.Request) -> web.Response:
        ingest.force()
        return web.Response(status=202)

    async def sandbox_ready(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "ready": True,
                "loaded": ingest.loaded,
                "paused": ingest.paused,
                "last_sync": ingest.last_sync,
                "last_error": ingest.last_error,
            }
        )

    async def pause(request: web.Request) -> web.Response:
        ingest.paused = True
        log.warning("sandbox fault: mirroring paused")
        return web.json_response({"ok": True, "paused": True})

    async def resume(request: web.Request) -> web.Response:
        ingest.paused = False
        ingest.force()
        log.info("sandbox heal: mirroring resumed")
        return web.json_response({"ok": True, "paused": False})

    app = web.Application()
    for path in ("/api/search-ingest/v1/", "/api/search-ingest/v1"):
        app.router.add_get(path, health)
    app.router.add_get("/api/search-ingest/v1/ready", ready)
    app.router.add_get("/api/search-ingest/v1/version", version)
    app.router.add_post("/api/search-ingest/v1/reindex", reindex)
    app.router.add_post("/api/search-ingest/v1/backfill", reindex)
    app.router.add_get("/_sandbox/ready", sandbox_ready)
    app.router.add_post("/_sandbox/pause", pause)
    app.router.add_post("/_sandbox/resume", resume)
    return app


async def run(args: argparse.Namespace) -> None:
    db = await open_db(args.db, timeout=args.timeout)
    es = Elastic(args.es, timeout=args.timeout)
    ingest = Ingest(db, es, args.interval)
    runner = web.AppRunner(make_app(ingest), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.port).start()
    log.info("search-ingest on 127.0.0.1:%d: %s -> %s every %gs", args.port, db.url, es.url, args.interval)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(ingest.loop())
    await stop.wait()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await es.close()
    await db.close()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox.simulator.search_ingest", description="search-ingest")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", required=True, help="rethinkdb://... (era A) or postgresql://... (B/C)")
    parser.add_argument("--es", required=True, help="Elasticsearch URL, e.g. http://127.0.0.1:9200")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between mirroring passes")
    parser.add_argument("--timeout", type=float, default=5.0, help="bound on each DB and ES call, s")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
