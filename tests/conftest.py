"""Shared fixtures: real backend servers on free loopback ports with temp data dirs, stopped by PID."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from standins import ElasticsearchStandIn, RethinkDBStandIn

from exporter.model.placeos import KEY_TABLES
from sandbox.backends import EtcdServer, PostgresServer, RedisServer, start_etcd, start_postgres, start_redis


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    server = start_etcd(tmp_path / "etcd")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def etcd_auth(tmp_path: Path) -> Iterator[EtcdServer]:
    server = start_etcd(tmp_path / "etcd-auth", auth=True)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = start_redis(tmp_path / "redis")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_auth(tmp_path: Path) -> Iterator[RedisServer]:
    server = start_redis(tmp_path / "redis-auth", auth=True)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[PostgresServer]:
    """PostgreSQL with role/database placeos and PlaceOS's key tables (internals §2.2)."""
    server = start_postgres(tmp_path / "pg")
    try:
        create = "".join(f'create table "{t}" (id text primary key, doc jsonb);\n' for t in KEY_TABLES)
        server.sql(f"\\connect placeos\n{create}grant all on all tables in schema public to placeos;\n")
        yield server
    finally:
        server.close()


@pytest.fixture
def rethinkdb_standin(tmp_path: Path) -> Iterator[RethinkDBStandIn]:
    server = RethinkDBStandIn(tmp_path / "rethinkdb")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def elasticsearch_standin(tmp_path: Path) -> Iterator[ElasticsearchStandIn]:
    server = ElasticsearchStandIn(tmp_path / "es", version="8.14.3")
    try:
        yield server
    finally:
        server.close()
