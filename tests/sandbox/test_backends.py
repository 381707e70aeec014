"""The sandbox's real backends, process handles and garbage listener, against their real clients.

Each server is started once per module and every test leaves it running and healed, so the file stays
well under a minute. Faults are the real ones (SIGKILL, SIGSTOP, password changes over each protocol).
"""

from __future__ import annotations

import asyncio
import base64
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aredis
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, InvalidResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from sandbox import garbage
from sandbox.backends import (
    SANDBOX_USER,
    Backend,
    EtcdServer,
    PostgresServer,
    RedisServer,
    start_etcd,
    start_postgres,
    start_redis,
)
from sandbox.ports import free_port
from sandbox.procs import Proc, ProcError, pid_alive

# -- helpers


def poll(condition: Callable[[], bool], deadline: float = 5.0) -> bool:
    """Poll `condition` until true or `deadline` seconds pass; return its last value."""
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() >= end:
            return False
        time.sleep(0.01)
    return True


def state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


def closed_and_gone(server: Backend) -> None:
    """Close a server and check that none of its processes is left."""
    pids = server.proc.tree()
    assert pids
    server.close()
    assert not [p for p in pids if pid_alive(p)]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def etcd_call(
    server: EtcdServer, path: str, body: dict[str, Any], token: str | None = None, timeout: float = 5.0
) -> tuple[int, dict[str, Any]]:
    """POST to etcd's JSON gateway with aiohttp, as PlaceOS does (internals §1.1)."""
    headers = {"Authorization": token} if token else {}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
        session.post(f"{server.url}/v3/{path}", json=body, headers=headers, ssl=server.ssl_context() or True) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


async def etcd_token(server: EtcdServer, password: str | None = None) -> tuple[int, dict[str, Any]]:
    return await etcd_call(server, "auth/authenticate", {"name": server.user, "password": password or server.password})


def redis_client(url: str, timeout: float = 2.0) -> aredis.Redis:
    # No retries: a fault must show as one error, not as a retry loop.
    return aredis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0)
    )


async def redis_ping(url: str, timeout: float = 2.0) -> bool:
    client = redis_client(url, timeout)
    try:
        return bool(await client.ping())
    finally:
        await client.aclose()


# -- fixtures: one server of each kind per module, closed with a check that nothing is left


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    server = start_etcd(tmp_path_factory.mktemp("etcd"), auth=True)
    yield server
    closed_and_gone(server)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"), auth=True)
    yield server
    closed_and_gone(server)


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    server = start_postgres(tmp_path_factory.mktemp("postgres"))
    yield server
    closed_and_gone(server)


# -- Proc


def test_wait_ready_on_a_port_and_terminate_leaves_nothing(tmp_path: Path) -> None:
    port = free_port()
    proc = garbage.start(port, log_path=tmp_path / "garbage.log")
    assert proc.alive and pid_alive(proc.pid)
    assert proc.terminate() == 0  # the listener exits cleanly on SIGTERM (README contract 1)
    assert not proc.alive and not pid_alive(proc.pid)


def test_a_child_that_dies_raises_with_its_log_tail(tmp_path: Path) -> None:
    proc = Proc.start(["sh", "-c", "echo boom-7f3e >&2; exit 3"], log_path=tmp_path / "x.log", name="x")
    with pytest.raises(ProcError, match="exited with code 3") as info:
        proc.wait_ready(free_port(), deadline=5.0)
    assert "boom-7f3e" in str(info.value) and "boom-7f3e" in info.value.log_tail


def test_a_child_not_ready_by_the_deadline_raises(tmp_path: Path) -> None:
    with Proc.start(["sleep", "30"], log_path=tmp_path / "s.log") as proc:
        started = time.monotonic()
        with pytest.raises(ProcError, match=r"not ready after 0\.3s \(last check: check returned false\)"):
            proc.wait_ready(lambda: False, deadline=0.3)
        assert time.monotonic() - started < 2.0
    assert not pid_alive(proc.pid)


def test_kill_stop_and_cont_act_on_the_whole_tree(tmp_path: Path) -> None:
    proc = Proc.start(["sh", "-c", "sleep 60 & sleep 60 & wait"], log_path=tmp_path / "t.log")
    assert poll(lambda: len(proc.tree()) == 3)
    pids = proc.tree()
    proc.stop()
    assert poll(lambda: all(state(p) == "T" for p in pids))
    proc.cont()
    assert poll(lambda: not any(state(p) == "T" for p in pids))
    proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not [p for p in pids if pid_alive(p)]


def test_terminate_kills_a_stopped_child_that_ignores_sigterm(tmp_path: Path) -> None:
    proc = Proc.start(["sh", "-c", "trap '' TERM; sleep 60 & wait"], log_path=tmp_path / "t.log")
    assert poll(lambda: len(proc.tree()) == 2)
    pids = proc.tree()
    proc.stop()
    assert proc.terminate(timeout=0.3) == -signal.SIGKILL
    assert not [p for p in pids if pid_alive(p)]


def test_children_die_with_their_parent(tmp_path: Path) -> None:
    """An interrupted run (its parent killed outright) leaves no server behind: PR_SET_PDEATHSIG."""
    script = (
        "import signal, sys; from pathlib import Path; from sandbox.procs import Proc\n"
        f"p = Proc.start(['sleep', '60'], log_path=Path({str(tmp_path / 'c.log')!r}))\n"
        f"Path({str(tmp_path / 'pid')!r}).write_text(str(p.pid))\n"
        "signal.pause()\n"
    )
    with Proc.start([sys.executable, "-c", script], log_path=tmp_path / "parent.log") as parent:
        assert poll(lambda: (tmp_path / "pid").exists() and (tmp_path / "pid").read_text() != "")
        child = int((tmp_path / "pid").read_text())
        assert pid_alive(child)
        os.kill(parent.pid, signal.SIGKILL)
        assert parent.wait(5) == -signal.SIGKILL
        assert poll(lambda: not pid_alive(child))


def test_a_child_started_from_a_worker_thread_outlives_the_thread(tmp_path: Path) -> None:
    """`asyncio.to_thread` workers end with their loop; the death signal must not fire with them."""

    async def start() -> Proc:
        return await asyncio.to_thread(Proc.start, ["sleep", "60"], log_path=tmp_path / "w.log")

    proc = asyncio.run(start())  # the loop and its worker threads are gone after this
    with proc, pytest.raises(subprocess.TimeoutExpired):
        proc.wait(0.5)


# -- etcd


async def test_etcd_serves_its_json_gateway_with_auth(etcd: EtcdServer) -> None:
    status, body = await etcd_call(etcd, "maintenance/status", {})
    assert status == 200 and body["version"].startswith("3.")
    status, body = await etcd_call(etcd, "kv/range", {"key": b64("k")})
    assert status != 200 and "user name is empty" in body["message"]
    status, body = await etcd_token(etcd)
    assert status == 200
    token = body["token"]
    assert (await etcd_call(etcd, "kv/put", {"key": b64("k"), "value": b64("v")}, token))[0] == 200
    status, body = await etcd_call(etcd, "kv/range", {"key": b64("k")}, token)
    assert status == 200 and body["kvs"][0]["value"] == b64("v")


async def test_etcd_wrong_credentials_then_heal(etcd: EtcdServer) -> None:
    status, body = await etcd_token(etcd)
    assert status == 200
    token = body["token"]
    etcd.break_credentials()
    try:
        status, body = await etcd_token(etcd)
        assert status != 200 and "authentication failed" in body["message"]
        status, body = await etcd_call(etcd, "kv/range", {"key": b64("k")}, token)
        assert status != 200 and "invalid auth token" in body["message"]
    finally:
        etcd.heal_credentials()
    assert (await etcd_token(etcd))[0] == 200


async def test_etcd_kill_and_restart_keeps_data(etcd: EtcdServer) -> None:
    token = (await etcd_token(etcd))[1]["token"]
    assert (await etcd_call(etcd, "kv/put", {"key": b64("durable"), "value": b64("yes")}, token))[0] == 200
    port = etcd.port
    etcd.proc.kill()
    with pytest.raises(aiohttp.ClientConnectionError):
        await etcd_call(etcd, "maintenance/status", {}, timeout=1.0)
    etcd.restart()
    assert etcd.port == port
    token = (await etcd_token(etcd))[1]["token"]  # simple tokens live in memory: log in again
    status, body = await etcd_call(etcd, "kv/range", {"key": b64("durable")}, token)
    assert status == 200 and body["kvs"][0]["value"] == b64("yes")


async def test_etcd_stop_times_out_and_cont_recovers(etcd: EtcdServer) -> None:
    etcd.proc.stop()
    try:
        with pytest.raises(asyncio.TimeoutError):
            await etcd_call(etcd, "maintenance/status", {}, timeout=0.5)
    finally:
        etcd.proc.cont()
    assert (await etcd_call(etcd, "maintenance/status", {}))[0] == 200


async def test_etcd_over_tls_without_auth_and_its_credentials_fault(tmp_path: Path) -> None:
    """PlaceOS runs etcd without auth (internals §1.1): the fault then switches auth on."""
    server = start_etcd(tmp_path / "etcd", tls=True)
    try:
        assert server.url.startswith("https://") and server.ca_path is not None
        assert (await etcd_call(server, "kv/put", {"key": b64("a"), "value": b64("1")}))[0] == 200
        server.break_credentials()
        status, body = await etcd_call(server, "kv/range", {"key": b64("a")})
        assert status != 200 and "user name is empty" in body["message"]
        server.heal_credentials()
        status, body = await etcd_call(server, "kv/range", {"key": b64("a")})
        assert status == 200 and body["kvs"][0]["value"] == b64("1")
        with pytest.raises(aiohttp.ClientConnectionError):  # not trusted without the sandbox CA
            async with aiohttp.ClientSession() as session:
                await session.post(f"{server.url}/v3/maintenance/status", json={})
    finally:
        closed_and_gone(server)


# -- Redis


async def test_redis_answers_ping_with_its_password_only(redis_server: RedisServer) -> None:
    assert redis_server.password is not None
    assert await redis_ping(redis_server.url)
    with pytest.raises(AuthenticationError):
        await redis_ping(f"redis://{redis_server.host}:{redis_server.port}/0")


async def test_redis_wrong_credentials_survive_a_restart_until_healed(redis_server: RedisServer) -> None:
    redis_server.break_credentials()
    try:
        with pytest.raises(AuthenticationError):
            await redis_ping(redis_server.url)
        redis_server.restart()  # the change was rewritten to the config file, like a real operator's
        with pytest.raises(AuthenticationError):
            await redis_ping(redis_server.url)
    finally:
        redis_server.heal_credentials()
    assert await redis_ping(redis_server.url)


async def test_redis_kill_and_restart_on_the_same_port(redis_server: RedisServer) -> None:
    port = redis_server.port
    redis_server.proc.kill()
    with pytest.raises(RedisConnectionError):
        await redis_ping(redis_server.url, timeout=1.0)
    redis_server.restart()
    assert redis_server.port == port and await redis_ping(redis_server.url)


async def test_redis_stop_times_out_and_cont_recovers(redis_server: RedisServer) -> None:
    redis_server.proc.stop()
    try:
        with pytest.raises(RedisTimeoutError):
            await redis_ping(redis_server.url, timeout=0.5)
    finally:
        redis_server.proc.cont()
    assert await redis_ping(redis_server.url)


async def test_redis_without_auth_and_its_credentials_fault(tmp_path: Path) -> None:
    """PlaceOS runs Redis without auth (internals §8): the fault then sets a password clients lack."""
    server = start_redis(tmp_path / "redis")
    try:
        assert server.password is None and await redis_ping(server.url)
        server.break_credentials()
        with pytest.raises(AuthenticationError):
            await redis_ping(server.url)
        server.heal_credentials()
        assert await redis_ping(server.url)
    finally:
        closed_and_gone(server)


async def test_redis_acl_user_and_its_credentials_fault(tmp_path: Path) -> None:
    server = start_redis(tmp_path / "redis", acl_user="placeos")
    try:
        assert server.url.startswith("redis://placeos:")
        assert await redis_ping(server.url)
        with pytest.raises(AuthenticationError):  # the default user is not open to clients
            await redis_ping(f"redis://{server.host}:{server.port}/0")
        server.break_credentials()
        with pytest.raises(AuthenticationError):
            await redis_ping(server.url)
        server.heal_credentials()
        assert await redis_ping(server.url)
    finally:
        closed_and_gone(server)


# -- PostgreSQL

PLACEOS_HEALTH_QUERY = "select datname from pg_stat_activity where datname is not null"  # internals §2.2


async def test_postgres_answers_placeos_health_query(postgres: PostgresServer) -> None:
    conn = await asyncpg.connect(postgres.dsn, timeout=5)
    try:
        assert await conn.fetchval(PLACEOS_HEALTH_QUERY) == "placeos"
    finally:
        await conn.close()
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(postgres.dsn.replace(postgres.password, "not-it"), timeout=5)
    if os.geteuid() == 0:  # PostgreSQL refuses root, so it runs as the sandbox account
        uid = pwd.getpwnam(SANDBOX_USER).pw_uid
        assert all(os.stat(f"/proc/{p}").st_uid == uid for p in postgres.proc.tree())


async def test_postgres_wrong_credentials_then_heal(postgres: PostgresServer) -> None:
    existing = await asyncpg.connect(postgres.dsn, timeout=5)
    try:
        postgres.break_credentials()
        try:
            with pytest.raises(asyncpg.InvalidPasswordError):
                await asyncpg.connect(postgres.dsn, timeout=5)
            assert await existing.fetchval("select 1") == 1  # open sessions keep working
        finally:
            postgres.heal_credentials()
    finally:
        await existing.close()
    conn = await asyncpg.connect(postgres.dsn, timeout=5)
    await conn.close()


async def test_postgres_kill_and_restart_keeps_data(postgres: PostgresServer) -> None:
    conn = await asyncpg.connect(postgres.dsn, timeout=5)
    try:
        await conn.execute("create table if not exists durable (v text); insert into durable values ('yes')")
    finally:
        await conn.close()
    pids = postgres.proc.tree()
    assert len(pids) > 1  # the postmaster and its workers, each in its own session
    port = postgres.port
    postgres.proc.kill()
    assert not [p for p in pids if pid_alive(p)]
    with pytest.raises(OSError):
        await asyncpg.connect(postgres.dsn, timeout=1)
    postgres.restart()
    assert postgres.port == port
    conn = await asyncpg.connect(postgres.dsn, timeout=5)
    try:
        assert await conn.fetchval("select v from durable") == "yes"
    finally:
        await conn.close()


async def test_postgres_stop_times_out_and_cont_recovers(postgres: PostgresServer) -> None:
    postgres.proc.stop()
    try:
        with pytest.raises(asyncio.TimeoutError):
            await asyncpg.connect(postgres.dsn, timeout=0.5)
    finally:
        postgres.proc.cont()
    conn = await asyncpg.connect(postgres.dsn, timeout=5)
    await conn.close()


# -- secrets


def test_secrets_stay_out_of_reprs_argv_and_logs(
    etcd: EtcdServer, redis_server: RedisServer, postgres: PostgresServer
) -> None:
    for server in (etcd, redis_server, postgres):
        server.break_credentials()  # a password change must not leave the plaintext in a log either
        server.heal_credentials()
        password = server.password
        assert password
        assert password not in repr(server)
        cmdline = Path(f"/proc/{server.proc.pid}/cmdline").read_bytes()
        assert password.encode() not in cmdline
        for log in server.data_dir.glob("*.log"):
            assert password not in log.read_text(errors="replace"), log
    assert "postgresql://placeos:***@" in repr(postgres) and "redis://:***@" in repr(redis_server)
    assert (redis_server.data_dir / "redis.conf").stat().st_mode & 0o077 == 0  # it holds the password


# -- garbage listener


def test_garbage_modes(tmp_path: Path) -> None:
    for mode in garbage.MODES:
        port = free_port()
        with (
            garbage.start(port, log_path=tmp_path / f"{mode}.log", mode=mode) as proc,
            socket.create_connection(("127.0.0.1", port), timeout=0.5) as s,
        ):
            if mode == "nonsense":
                assert s.recv(4096).startswith(b"HTTP/9.9 nonsense\r\n")
                s.sendall(b"PING\r\n")
                assert s.recv(4096)  # every request gets more nonsense
            elif mode == "close":
                assert s.recv(4096) == b""
            else:
                s.sendall(b"PING\r\n")
                with pytest.raises(TimeoutError):
                    s.recv(4096)
        assert proc.returncode == 0


async def test_garbage_takes_a_backend_port_and_heal_restores(redis_server: RedisServer, tmp_path: Path) -> None:
    """The orchestrator's `break redis garbage` and `heal` (README contract 3), with a real client."""
    redis_server.proc.terminate()
    with garbage.start(redis_server.port, log_path=tmp_path / "garbage.log"), pytest.raises(InvalidResponse):
        await redis_ping(redis_server.url)
    redis_server.restart()
    assert await redis_ping(redis_server.url)
