"""Helpers of the rest-api and triggers simulator tests: the backends-plus-core stack of an era, a core
process, the RethinkDB stand-in process, a cuttable TCP relay, and request helpers. Its fixtures are
in conftest.py next to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis as redis_sync

from sandbox.ports import free_port
from sandbox.procs import Proc
from sandbox.simulator import seed
from sandbox.simulator.db import open_db
from sandbox.simulator.db import seed as seed_db
from sandbox.simulator.rest_api import RestApiConfig

REPO = Path(__file__).resolve().parents[3]
HOST = "localhost"  # the seeded Authority's domain: rest-api finds the Authority by Host (§5.2)
API = "/api/engine/v2"
DEADLINE = 20.0


# ----------------------------------------------------------------------------------------- helpers


def poll(check: Callable[[], bool], deadline: float, what: str, interval: float = 0.1) -> None:
    """Poll ``check`` until true; fail after ``deadline`` seconds."""
    end = time.monotonic() + deadline
    last: Exception | None = None
    while time.monotonic() < end:
        try:
            if check():
                return
        except Exception as e:
            last = e
        time.sleep(interval)
    pytest.fail(f"{what}: not true after {deadline:g}s (last error: {last!r})")


async def apoll(check: Callable[[], Awaitable[bool]], deadline: float, what: str, interval: float = 0.1) -> None:
    end = time.monotonic() + deadline
    last: Exception | None = None
    while time.monotonic() < end:
        try:
            if await check():
                return
        except Exception as e:
            last = e
        await asyncio.sleep(interval)
    pytest.fail(f"{what}: not true after {deadline:g}s (last error: {last!r})")


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return bool(resp.status == 200)


@dataclass(frozen=True)
class Stack:
    """One era's backends plus a core simulator, and the seeded credentials."""

    era: str
    redis_url: str = field(repr=False)
    db_url: str = field(repr=False)  # holds the PostgreSQL password
    etcd_url: str | None = field(repr=False)
    api_key: str = field(repr=False)
    password: str = field(repr=False)
    core_port: int = 0

    def config(self, **overrides: Any) -> RestApiConfig:
        base = RestApiConfig(
            port=free_port(),
            era=self.era,
            redis_url=self.redis_url,
            db_url=self.db_url,
            es_url=f"http://127.0.0.1:{free_port()}",  # no Elasticsearch unless a test gives one
            etcd_url=self.etcd_url,
            retries=1,
            retry_interval=0.1,
            backend_timeout=2.0,
            core_timeout=5.0,
            etcd_ttl=1,
        )
        return replace(base, **overrides)


def start_core(tmp: Path, era: str, redis_url: str, db_url: str, etcd_url: str | None) -> tuple[Proc, int]:
    port = free_port()
    argv = [sys.executable, "-m", "sandbox.simulator.core", "--port", str(port), "--era", era]
    argv += ["--redis", redis_url, "--db", db_url, "--data-dir", str(tmp / f"core-{era}"), "--etcd-ttl", "5"]
    if etcd_url:
        argv += ["--etcd", etcd_url]
    proc = Proc.start(argv, log_path=tmp / f"core-{era}.log", name=f"core-{era}", cwd=REPO)
    proc.wait_ready(lambda: http_ok(f"http://127.0.0.1:{port}/api/core/v1/ready"), deadline=DEADLINE)
    proc.wait_ready(lambda: modules_published(redis_url), deadline=DEADLINE)
    return proc, port


def modules_published(redis_url: str) -> bool:
    """Every seed module mapped in ``system/<sys>`` and its driver's ``interface/<mod>`` written."""
    with redis_sync.Redis.from_url(redis_url, socket_timeout=2) as r:
        mapped = all(r.hlen(f"system/{sys_id}") == len(mods) for sys_id, _, mods in seed.SYSTEMS)
        return mapped and all(r.exists(f"interface/{mod_id}") for mod_id, _ in seed.MODULES)


def seed_database(db_url: str, api_key_secret: str, password: str) -> None:
    async def go() -> None:
        db = await open_db(db_url, 10.0)
        await seed_db(db, seed.seed_documents(api_key_secret, password))
        await db.close()

    asyncio.run(go())


class TcpRelay:
    """A loopback TCP relay to a backend; ``cut()`` closes it, so clients get connection refused."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(Exception):
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for w in self._writers:
            w.close()
        self._writers.clear()


@dataclass
class RethinkStandIn:
    """The RethinkDB stand-in as a process that a test can kill and start again on the same port."""

    data_dir: Path
    port: int
    proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"rethinkdb://admin:@127.0.0.1:{self.port}/place_development"

    def start(self) -> None:
        argv = [sys.executable, "-m", "sandbox.standins.rethinkdb", "--port", str(self.port)]
        argv += ["--data-dir", str(self.data_dir)]
        self.proc = Proc.start(argv, log_path=self.data_dir.parent / "rethinkdb.log", name="rethinkdb", cwd=REPO)
        self.proc.wait_ready(self.port, deadline=DEADLINE)


Runner = Callable[[RestApiConfig], Awaitable[str]]


def key_headers(stack: Stack, **extra: str) -> dict[str, str]:
    return {"Host": HOST, "X-API-Key": stack.api_key, **extra}


async def get_json(http: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, Any]:
    async with http.get(url, **kw) as resp:
        text = await resp.text()
        return resp.status, (json.loads(text) if text else text)


async def post_json(http: aiohttp.ClientSession, url: str, body: Any, **kw: Any) -> tuple[int, Any]:
    async with http.post(url, json=body, **kw) as resp:
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


EXEC_URL = f"{API}/systems/{seed.PROBE_SYSTEM}/{seed.PROBE_MODULE}/{seed.PROBE_FUNCTION}"
