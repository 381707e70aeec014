"""The RethinkDB stand-in, driven by the official `rethinkdb` driver (sync and asyncio) as PlaceOS would.

Each server is a real `python -m sandbox.standins.rethinkdb` process on a free port with a temp data
dir, readied by polling its port with a deadline and stopped by PID (sandbox README contract).
"""

from __future__ import annotations

import socket
import struct
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rethinkdb import RethinkDB
from rethinkdb.errors import (
    ReqlAuthError,
    ReqlNonExistenceError,
    ReqlOpFailedError,
    ReqlServerCompileError,
)

from sandbox.ports import free_port
from sandbox.procs import Proc
from sandbox.standins.rethinkdb import SERVER_VERSION, RethinkDBStandIn

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "sandbox-secret"

r = RethinkDB()  # default (sync) loop type
ra = RethinkDB()
ra.set_loop_type("asyncio")


class StandIn:
    """A stand-in process plus what a test needs to (re)start it on the same port and data dir."""

    def __init__(self, data_dir: Path, port: int, password: str = PASSWORD) -> None:
        self.data_dir = data_dir
        self.port = port
        self.password = password
        self.proc: Proc | None = None

    def start(self) -> StandIn:
        argv = [sys.executable, "-m", "sandbox.standins.rethinkdb", "--port", str(self.port)]
        argv += ["--data-dir", str(self.data_dir), "--admin-password", self.password]
        self.proc = Proc.start(
            argv, log_path=self.data_dir.parent / "rethinkdb.log", name="rethinkdb-standin", cwd=REPO
        )
        self.proc.wait_ready(self.port, deadline=15.0)
        return self

    def log(self) -> str:
        return (self.data_dir.parent / "rethinkdb.log").read_text()

    def connect(self, **kw: Any) -> Any:
        kw.setdefault("password", self.password)
        return r.connect("127.0.0.1", self.port, user=kw.pop("user", "admin"), **kw)

    async def aconnect(self, **kw: Any) -> Any:
        kw.setdefault("password", self.password)
        return await ra.connect("127.0.0.1", self.port, user=kw.pop("user", "admin"), **kw)


def _stop(s: StandIn) -> None:
    if s.proc is not None:
        s.proc.terminate()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIn]:
    """One server for the read-mostly tests (its admin password never changes)."""
    s = StandIn(tmp_path_factory.mktemp("rethinkdb") / "data", free_port()).start()
    try:
        yield s
    finally:
        _stop(s)


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[StandIn]:
    """A server of its own, for tests that change the password or kill the process."""
    s = StandIn(tmp_path / "data", free_port()).start()
    try:
        yield s
    finally:
        _stop(s)


# ---- handshake ----


def test_sync_handshake_and_server_info(shared: StandIn) -> None:
    with shared.connect() as conn:
        info = conn.server()
    assert set(info) == {"id", "name", "proxy"}
    assert info["proxy"] is False
    uuid.UUID(info["id"])


async def test_asyncio_handshake_and_server_info(shared: StandIn) -> None:
    conn = await shared.aconnect()
    try:
        info = await conn.server()
        assert info["proxy"] is False
        assert await ra.expr(1).add(2).run(conn) == 3
    finally:
        await conn.close()


def test_wrong_password_is_reql_auth_error(shared: StandIn) -> None:
    with pytest.raises(ReqlAuthError) as err:
        shared.connect(password="not-the-password")
    assert str(err.value) == f"Could not connect to 127.0.0.1:{shared.port}, Wrong password"


def test_unknown_user_is_reql_auth_error(shared: StandIn) -> None:
    with pytest.raises(ReqlAuthError) as err:
        shared.connect(user="mallory", password="x")
    assert str(err.value) == f"Could not connect to 127.0.0.1:{shared.port}, Unknown user"


async def test_asyncio_wrong_password(shared: StandIn) -> None:
    with pytest.raises(ReqlAuthError, match=r"Wrong password$"):
        await shared.aconnect(password="nope")


def test_handshake_bytes_match_the_real_server(shared: StandIn) -> None:
    """Raw wire: key-sorted version reply, then the SCRAM error JSON and a closed connection."""
    with socket.create_connection(("127.0.0.1", shared.port), timeout=5) as s:
        hello = b'{"protocol_version":0,"authentication_method":"SCRAM-SHA-256","authentication":"n,,n=admin"}'
        s.sendall(struct.pack("<I", 0x34C2BDC3) + hello + b"\0")
        data = _read_until_closed(s)
    first, second, rest = data.split(b"\0", 2)
    version = SERVER_VERSION.encode()
    assert (
        first == b'{"max_protocol_version":0,"min_protocol_version":0,"server_version":"%s","success":true}' % version
    )
    assert second == b'{"error":"Invalid encoding","error_code":10,"success":false}'
    assert rest == b""


# ---- PlaceOS's health probe and the system tables ----


def test_server_status_probe_as_placeos_runs_it(shared: StandIn) -> None:
    with shared.connect(db="rethinkdb") as conn:
        first = next(iter(r.table("server_status").pluck("id", "name").run(conn)))
        full = list(r.db("rethinkdb").table("server_status").run(conn))
    assert set(first) == {"id", "name"}
    assert len(full) == 1
    row = full[0]
    assert row["id"] == first["id"] and row["name"] == first["name"]
    assert row["network"]["reql_port"] == shared.port
    assert {"hostname", "canonical_addresses", "time_connected"} <= set(row["network"])
    assert {"pid", "version", "time_started", "argv"} <= set(row["process"])
    assert shared.proc is not None and row["process"]["pid"] == shared.proc.pid


async def test_server_status_probe_asyncio(shared: StandIn) -> None:
    conn = await shared.aconnect(db="rethinkdb")
    try:
        cursor = await ra.table("server_status").pluck("id", "name").run(conn)
        rows = [row async for row in cursor]
        assert len(rows) == 1 and set(rows[0]) == {"id", "name"}
    finally:
        await conn.close(noreply_wait=False)


def test_users_table_lists_admin(shared: StandIn) -> None:
    with shared.connect() as conn:
        users = list(r.db("rethinkdb").table("users").run(conn))
        assert {"id": "admin", "password": True} in users
        assert "server_status" in r.db("rethinkdb").table_list().run(conn)
        assert "rethinkdb" in r.db_list().run(conn)


# ---- the data PlaceOS keeps in place_development ----


def _ensure_place_development(conn: Any) -> None:
    if "place_development" not in r.db_list().run(conn):
        created = r.db_create("place_development").run(conn)
        assert created["dbs_created"] == 1


def test_place_development_crud_sync(shared: StandIn) -> None:
    with shared.connect() as conn:
        _ensure_place_development(conn)
        conn.use("place_development")
        assert r.table_create("authority").run(conn)["tables_created"] == 1
        assert r.table_create("api_key").run(conn)["tables_created"] == 1
        assert r.table("authority").index_create("domain").run(conn) == {"created": 1}
        assert r.table("authority").index_list().run(conn) == ["domain"]

        res = (
            r.table("authority")
            .insert(
                [
                    {"id": "authority-sandbox", "domain": "localhost", "name": "Sandbox"},
                    {"domain": "other.example", "name": "Other", "rank": 2},
                ]
            )
            .run(conn)
        )
        assert (res["inserted"], res["errors"]) == (2, 0)
        (generated,) = res["generated_keys"]
        uuid.UUID(generated)

        assert r.table("authority").get("authority-sandbox").run(conn)["domain"] == "localhost"
        assert r.table("authority").get("missing").run(conn) is None
        found = list(r.table("authority").get_all("localhost", index="domain").run(conn))
        assert [d["id"] for d in found] == ["authority-sandbox"]
        assert list(r.table("authority").filter({"name": "Other"}).pluck("id").run(conn)) == [{"id": generated}]
        by_func = r.table("authority").filter(lambda d: (d["name"] == "Other") | (d["domain"] == "localhost"))
        assert sorted(d["name"] for d in by_func.run(conn)) == ["Other", "Sandbox"]
        # A missing field is a NON_EXISTENCE error, which `filter` treats as false (its default).
        missing = r.table("authority").filter(lambda d: (d["rank"] > 1) | (d["domain"] == "localhost"))
        assert [d["name"] for d in missing.run(conn)] == ["Other"]
        assert next(iter(r.table("authority").filter(r.row["rank"].eq(2)).run(conn)))["id"] == generated
        assert r.table("authority").count().run(conn) == 2
        assert len(list(r.table("authority").limit(1).run(conn))) == 1
        ordered = r.table("authority").order_by("name").pluck("name").run(conn)
        assert ordered == [{"name": "Other"}, {"name": "Sandbox"}]  # order_by without index: an array

        dup = r.table("authority").insert({"id": "authority-sandbox", "x": 1}).run(conn)
        assert dup["errors"] == 1 and dup["inserted"] == 0
        assert dup["first_error"] == (
            "Duplicate primary key `id`:\n"
            '{\n\t"domain":\t"localhost",\n\t"id":\t"authority-sandbox",\n\t"name":\t"Sandbox"\n}\n'
            '{\n\t"id":\t"authority-sandbox",\n\t"x":\t1\n}'
        )
        upd = r.table("authority").insert({"id": "authority-sandbox", "x": 1}, conflict="update").run(conn)
        assert upd["replaced"] == 1
        assert r.table("authority").get("authority-sandbox")["x"].run(conn) == 1
        rep = r.table("authority").insert({"id": "authority-sandbox", "domain": "localhost"}, conflict="replace")
        assert rep.run(conn)["replaced"] == 1
        assert "x" not in r.table("authority").get("authority-sandbox").run(conn)
        assert r.table("authority").get("authority-sandbox").update({"name": "S"}).run(conn)["replaced"] == 1
        assert r.table("authority").get("nope").update({"name": "S"}).run(conn)["skipped"] == 1
        assert r.table("authority").get(generated).delete().run(conn)["deleted"] == 1
        assert r.table("authority").count().run(conn) == 1


async def test_place_development_asyncio_like_the_simulator(shared: StandIn) -> None:
    conn = await shared.aconnect(db="place_development")
    try:
        if "place_development" not in await ra.db_list().run(conn):
            await ra.db_create("place_development").run(conn)
        if "api_key_async" not in await ra.db("place_development").table_list().run(conn):
            await ra.db("place_development").table_create("api_key_async").run(conn)
        tbl = ra.db("place_development").table("api_key_async")
        docs = [{"id": f"key-{i}", "user_id": "user-support", "n": i} for i in range(5)]
        res = await tbl.insert(docs, conflict="replace").run(conn)
        assert res["errors"] == 0 and res["inserted"] + res["replaced"] + res["unchanged"] == 5
        rows = [row async for row in await tbl.filter({"user_id": "user-support"}).run(conn)]
        assert sorted(d["n"] for d in rows) == [0, 1, 2, 3, 4]
        assert await tbl.count().run(conn) == 5
        assert (await tbl.get("key-3").run(conn))["n"] == 3
    finally:
        await conn.close(noreply_wait=False)


def test_error_texts_and_types(shared: StandIn) -> None:
    with shared.connect(db="place_development") as conn:
        _ensure_place_development(conn)
        with pytest.raises(ReqlOpFailedError) as err:
            r.table("no_such_table").run(conn)
        assert err.value.message == "Table `place_development.no_such_table` does not exist."
        with pytest.raises(ReqlOpFailedError) as err:
            r.db("no_such_db").table("sys").run(conn)
        assert err.value.message == "Database `no_such_db` does not exist."
        with pytest.raises(ReqlNonExistenceError) as err:
            r.db("rethinkdb").table("users").get("nobody")["password"].run(conn)
        assert err.value.message == "Cannot perform get_field on a non-object non-sequence `null`."
        with pytest.raises(ReqlNonExistenceError) as err:
            r.expr({"a": 1})["b"].run(conn)
        assert err.value.message == 'No attribute `b` in object:\n{\n\t"a":\t1\n}'
        with pytest.raises(ReqlServerCompileError, match="not supported"):
            r.expr([1, 2]).sample(1).run(conn)


# ---- password change, persistence, process behaviour ----


async def test_password_change_through_users_table(fresh: StandIn) -> None:
    conn = fresh.connect()
    res = r.db("rethinkdb").table("users").get("admin").update({"password": "rotated"}).run(conn)
    assert res["replaced"] == 1
    # The connection that changed it stays authenticated, like on a real server.
    assert r.expr("still here").run(conn) == "still here"
    with pytest.raises(ReqlAuthError, match=r"Wrong password$"):
        fresh.connect()
    with pytest.raises(ReqlAuthError, match=r"Wrong password$"):
        await fresh.aconnect()
    with fresh.connect(password="rotated") as conn2:
        assert r.db("rethinkdb").table("users").get("admin").run(conn2) == {"id": "admin", "password": True}
    conn.close()


def test_data_and_password_survive_sigkill(fresh: StandIn) -> None:
    with fresh.connect() as conn:
        r.db_create("place_development").run(conn)
        r.db("place_development").table_create("sys", primary_key="id").run(conn)
        r.db("place_development").table("sys").index_create("zones", multi=True).run(conn)
        r.db("place_development").table("sys").insert({"id": "sys-1", "zones": ["z1", "z2"]}).run(conn)
        r.db("rethinkdb").table("users").get("admin").update({"password": "after-kill"}).run(conn)
    assert fresh.proc is not None
    fresh.proc.kill()  # SIGKILL: no chance to flush anything
    fresh.start()
    with pytest.raises(ReqlAuthError):
        fresh.connect()
    with fresh.connect(password="after-kill", db="place_development") as conn:
        assert r.table("sys").get("sys-1").run(conn) == {"id": "sys-1", "zones": ["z1", "z2"]}
        assert [d["id"] for d in r.table("sys").get_all("z2", index="zones").run(conn)] == ["sys-1"]


def test_sigterm_exits_cleanly(fresh: StandIn) -> None:
    assert fresh.proc is not None
    assert fresh.proc.terminate() == 0
    assert "Traceback" not in fresh.log()


def test_garbage_from_clients_is_answered_and_survived(fresh: StandIn) -> None:
    with socket.create_connection(("127.0.0.1", fresh.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_until_closed(s) == (
            b"ERROR: Received an unsupported protocol version. This port is for RethinkDB queries. "
            b"Does your client driver version not match the server?\n\0"
        )
    with socket.create_connection(("127.0.0.1", fresh.port), timeout=5) as s:
        s.sendall(struct.pack("<I", 0x34C2BDC3) + bytes(range(1, 256)) * 20)  # no NUL in 2048 bytes
        assert _read_until_closed(s).endswith(b'{"error":"Limited read buffer size.","error_code":7,"success":false}\0')
    # An authenticated connection sending nonsense queries gets CLIENT_ERRORs and stays usable.
    with fresh.connect() as conn:
        sock = conn._instance._socket._socket
        assert (
            _raw_query(sock, 900, b"{{{") == b'{"t":16,"r":["Client is buggy (failed to deserialize query)."],"b":[]}'
        )
        assert _raw_query(sock, 901, b"[2]") == b'{"t":16,"r":["Token 901 not in stream cache."],"b":[]}'
        assert _raw_query(sock, 902, b"[1,[999,[]]]") == b'{"t":17,"r":["Unrecognized TermType: 999."],"b":[]}'
        assert r.expr([1, 2]).count().run(conn) == 2
    assert fresh.proc is not None and fresh.proc.alive
    assert "Traceback" not in fresh.log()


# ---- helpers ----


def _read_until_closed(s: socket.socket) -> bytes:
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


def _raw_query(s: socket.socket, token: int, payload: bytes) -> bytes:
    s.sendall(struct.pack("<qI", token, len(payload)) + payload)
    header = _recv_exactly(s, 12)
    got_token, size = struct.unpack("<qI", header)
    assert got_token == token
    return _recv_exactly(s, size)


def _recv_exactly(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        assert chunk, "connection closed"
        buf += chunk
    return buf


async def test_in_process_api(tmp_path: Path) -> None:
    """The Python API runs the same server inside the caller's event loop."""
    async with RethinkDBStandIn(tmp_path / "inproc", port=0, admin_password="pw") as server:
        conn = await ra.connect("127.0.0.1", server.port, user="admin", password="pw")
        try:
            assert await ra.db_list().run(conn) == ["rethinkdb", "test"]
        finally:
            await conn.close()
        with pytest.raises(RuntimeError, match="in use"):
            await RethinkDBStandIn(tmp_path / "inproc", port=0).start()  # the data dir is locked
