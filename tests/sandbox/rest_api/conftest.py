"""Fixtures of the rest-api and triggers simulator tests (one stack per era and per test module)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from rest_api_stack import REPO, RethinkStandIn, Runner, Stack, seed_database, start_core

from sandbox import backends
from sandbox.ports import free_port
from sandbox.simulator import seed
from sandbox.simulator.rest_api import RestApiConfig, make_app

# ----------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tmp_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rest-api-sim")


@pytest.fixture(scope="module")
def postgres(tmp_module: Path) -> Iterator[backends.PostgresServer]:
    server = backends.start_postgres(tmp_module / "pg")
    yield server
    server.close()


@pytest.fixture(scope="module")
def secrets_pair() -> tuple[str, str]:
    return secrets.token_urlsafe(16), secrets.token_urlsafe(12)


@pytest.fixture(scope="module")
def stack_b(tmp_module: Path, postgres: backends.PostgresServer, secrets_pair: tuple[str, str]) -> Iterator[Stack]:
    """Era B: etcd discovery, PostgreSQL, Redis, one core with every seed module."""
    key_secret, password = secrets_pair
    redis = backends.start_redis(tmp_module / "redis-b")
    etcd = backends.start_etcd(tmp_module / "etcd-b")
    seed_database(postgres.dsn, key_secret, password)
    core, core_port = start_core(tmp_module, "B", redis.url, postgres.dsn, etcd.url)
    yield Stack("B", redis.url, postgres.dsn, etcd.url, f"{seed.API_KEY_ID}.{key_secret}", password, core_port)
    core.terminate()
    etcd.close()
    redis.close()


@pytest.fixture(scope="module")
def stack_c(tmp_module: Path, postgres: backends.PostgresServer, secrets_pair: tuple[str, str]) -> Iterator[Stack]:
    """Era C: Redis discovery, PostgreSQL (the same seeded database), its own Redis and core."""
    key_secret, password = secrets_pair
    redis = backends.start_redis(tmp_module / "redis-c")
    seed_database(postgres.dsn, key_secret, password)
    core, core_port = start_core(tmp_module, "C", redis.url, postgres.dsn, None)
    yield Stack("C", redis.url, postgres.dsn, None, f"{seed.API_KEY_ID}.{key_secret}", password, core_port)
    core.terminate()
    redis.close()


@pytest.fixture(scope="module")
def rethinkdb(tmp_module: Path) -> Iterator[RethinkStandIn]:
    if not (REPO / "sandbox" / "standins" / "rethinkdb" / "__init__.py").exists():
        pytest.skip("sandbox/standins/rethinkdb/ is not there yet (era A needs it)")
    server = RethinkStandIn(tmp_module / "rethinkdb" / "data", free_port())
    server.data_dir.mkdir(parents=True)
    server.start()
    yield server
    if server.proc is not None:
        server.proc.terminate()


@pytest.fixture(scope="module")
def stack_a(tmp_module: Path, rethinkdb: RethinkStandIn, secrets_pair: tuple[str, str]) -> Iterator[Stack]:
    """Era A: etcd discovery, the RethinkDB stand-in, Redis, one core."""
    key_secret, password = secrets_pair
    redis = backends.start_redis(tmp_module / "redis-a")
    etcd = backends.start_etcd(tmp_module / "etcd-a")
    seed_database(rethinkdb.url, key_secret, password)
    core, core_port = start_core(tmp_module, "A", redis.url, rethinkdb.url, etcd.url)
    yield Stack("A", redis.url, rethinkdb.url, etcd.url, f"{seed.API_KEY_ID}.{key_secret}", password, core_port)
    core.terminate()
    etcd.close()
    redis.close()


@pytest.fixture(scope="module")
def empty_etcd(tmp_module: Path) -> Iterator[backends.EtcdServer]:
    """An etcd where no core is registered."""
    etcd = backends.start_etcd(tmp_module / "etcd-empty")
    yield etcd
    etcd.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


@pytest.fixture
async def run_api() -> AsyncIterator[Runner]:
    """Start rest-api apps in-process (the factory), each on its own port; stopped after the test."""
    runners: list[web.AppRunner] = []

    async def start(config: RestApiConfig) -> str:
        runner = web.AppRunner(make_app(config))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", config.port).start()
        runners.append(runner)
        return f"http://127.0.0.1:{config.port}"

    yield start
    for runner in reversed(runners):
        await runner.cleanup()
