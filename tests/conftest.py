"""Shared fixtures: real backend servers on free loopback ports with temp data dirs, stopped by PID."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.backends import EtcdServer, RedisServer, start_etcd, start_redis


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
