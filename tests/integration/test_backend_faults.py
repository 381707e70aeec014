"""etcd, Redis and PostgreSQL probes against the real servers: every fault of issue 3 gives the right reason.

Each test runs the real exporter (scheduler + HTTP server) in-process and reads /metrics over HTTP,
as Prometheus would; faults are done to the real server process (SIGKILL, SIGSTOP, a garbage
listener on its port, its password changed under us).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from standins import ElasticsearchStandIn, RethinkDBStandIn
from support import RunningExporter, settings_for

from sandbox import garbage
from sandbox.backends import Backend, EtcdServer, PostgresServer, RedisServer


def etcd_cluster(server: EtcdServer) -> dict[str, Any]:
    settings: dict[str, Any] = {"host": server.host, "port": server.port}
    if server.auth:
        settings |= {"username": server.user, "password": server.password}
    return {"era": "A", "etcd": settings, "redis": {"enabled": False}}


def redis_cluster(server: RedisServer) -> dict[str, Any]:
    return {"era": "C", "redis": {"url": server.url}}


def postgres_cluster(server: PostgresServer) -> dict[str, Any]:
    return {"era": "C", "postgres": {"url": server.dsn}, "redis": {"enabled": False},
            "elasticsearch": {"enabled": False}}  # fmt: skip


def rethinkdb_cluster(server: RethinkDBStandIn) -> dict[str, Any]:
    return {"era": "A", "rethinkdb": {"host": server.host, "port": server.port, "db": server.db,
            "password": server.password}, "etcd": {"enabled": False}, "redis": {"enabled": False},
            "elasticsearch": {"enabled": False}}  # fmt: skip


def elasticsearch_cluster(server: ElasticsearchStandIn) -> dict[str, Any]:
    return {"era": "C", "elasticsearch": {"host": server.host, "port": server.port, "username": "elastic",
            "password": server.password}, "postgres": {"enabled": False}, "redis": {"enabled": False}}  # fmt: skip


CLUSTERS = {"etcd": etcd_cluster, "redis": redis_cluster, "postgres": postgres_cluster,
            "rethinkdb": rethinkdb_cluster, "elasticsearch": elasticsearch_cluster}  # fmt: skip
FIXTURES = {"etcd": "etcd", "redis": "redis_server", "postgres": "postgres", "rethinkdb": "rethinkdb_standin",
            "elasticsearch": "elasticsearch_standin"}  # fmt: skip
AUTH_FIXTURES = FIXTURES | {"etcd": "etcd_auth", "redis": "redis_auth"}


@pytest.fixture(params=list(CLUSTERS))
def backend(request: pytest.FixtureRequest) -> tuple[str, Backend]:
    name = request.param
    return name, request.getfixturevalue(FIXTURES[name])


async def test_healthy_then_killed_then_recovers(backend: tuple[str, Backend]) -> None:
    name, server = backend
    async with RunningExporter(settings_for(CLUSTERS[name](server))) as exp:  # type: ignore[operator]
        await exp.wait_reason(name, "ok")
        assert await exp.value("placeos_probe_success", probe=name) == 1
        server.proc.kill()
        await exp.wait_reason(name, "connection_refused")
        assert await exp.value("placeos_probe_success", probe=name) == 0
        server.restart()
        await exp.wait_reason(name, "ok")
        failures = await exp.value("placeos_probe_failures_total", probe=name, reason="connection_refused")
        assert failures is not None and failures >= 1


async def test_sigstop_is_timeout_and_scrapes_never_wait(backend: tuple[str, Backend]) -> None:
    name, server = backend
    # A probe run hangs for 3 s of every 4 s while the server is stopped.
    settings = settings_for(CLUSTERS[name](server), interval=4.0, timeout=3.0)  # type: ignore[operator]
    async with RunningExporter(settings) as exp:
        await exp.wait_reason(name, "ok")
        server.proc.stop()
        try:
            # Scrape through a whole interval: scrapes overlapping the hung run must still answer at
            # once (they only render the snapshot); 0.5 s is a sixth of the probe's timeout.
            for _ in range(20):
                status, body, _ = await asyncio.wait_for(exp.get("/metrics"), timeout=0.5)
                assert status == 200 and "placeos_probe_success" in body
                await asyncio.sleep(0.2)  # pacing between scrapes, not a wait for a condition
            await exp.wait_reason(name, "timeout", timeout=10.0)
        finally:
            server.proc.cont()
        await exp.wait_reason(name, "ok", timeout=10.0)


async def test_garbage_on_the_port_is_protocol_error(backend: tuple[str, Backend], tmp_path: Path) -> None:
    name, server = backend
    async with RunningExporter(settings_for(CLUSTERS[name](server))) as exp:  # type: ignore[operator]
        await exp.wait_reason(name, "ok")
        server.proc.kill()
        listener = garbage.start(server.port, log_path=tmp_path / "garbage.log")
        try:
            await exp.wait_reason(name, "protocol_error")
        finally:
            listener.terminate()
        server.restart()
        await exp.wait_reason(name, "ok")


@pytest.mark.parametrize("name", list(CLUSTERS))
async def test_wrong_password_is_auth_failed(name: str, request: pytest.FixtureRequest) -> None:
    server: Backend = request.getfixturevalue(AUTH_FIXTURES[name])
    cluster = CLUSTERS[name](server)  # type: ignore[operator]
    async with RunningExporter(settings_for(cluster)) as exp:
        await exp.wait_reason(name, "ok")
        server.break_credentials()
        await exp.wait_reason(name, "auth_failed")
        server.heal_credentials()
        await exp.wait_reason(name, "ok")


async def test_postgres_without_placeos_tables_is_not_found(postgres: PostgresServer) -> None:
    postgres.sql('\\connect placeos\ndrop table "api_key";\n', timeout=10)
    async with RunningExporter(settings_for(postgres_cluster(postgres))) as exp:
        await exp.wait_reason("postgres", "not_found")
