"""The TCP server (connections, the V1_0 and legacy handshakes, the query loop) and the `python -m` CLI."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import struct
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sandbox.standins.rethinkdb.auth import ScramAuthenticator
from sandbox.standins.rethinkdb.datum import dump_json, is_num, load_json
from sandbox.standins.rethinkdb.protocol import (
    HANDSHAKE_BUFFER,
    LOCK_FILE,
    MAGIC_V0_1,
    MAGIC_V0_2,
    MAGIC_V0_3,
    MAGIC_V0_4,
    MAGIC_V1_0,
    PROTOCOL_JSON,
    PROTOCOL_PROTOBUF,
    SERVER_VERSION,
    TOO_LARGE_QUERY_SIZE,
    AuthError,
    ErrorType,
    LegacyHandshakeError,
    QueryType,
    ResponseType,
    T,
)
from sandbox.standins.rethinkdb.query import QueryError, encode_response, parse_query, run_start, static_bool
from sandbox.standins.rethinkdb.storage import ServerState, Store

log = logging.getLogger("sandbox.standins.rethinkdb")


# --------------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------------


class _Closed(Exception):
    """The client went away or must be disconnected."""


async def _read_exactly(reader: asyncio.StreamReader, n: int) -> bytes:
    try:
        return await reader.readexactly(n)
    except (asyncio.IncompleteReadError, ConnectionError) as e:
        raise _Closed from e


async def _read_nul_terminated(reader: asyncio.StreamReader) -> bytes:
    """read_datum(): up to 2047 bytes before the NUL, else error 7."""
    buf = bytearray()
    while True:
        ch = await _read_exactly(reader, 1)
        if ch == b"\0":
            return bytes(buf)
        buf += ch
        if len(buf) >= HANDSHAKE_BUFFER - 1:
            raise AuthError(7, "Limited read buffer size.")


def _handshake_datum(raw: bytes) -> dict[str, Any]:
    try:
        doc = load_json(raw.decode())
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise AuthError(8, "Invalid JSON object.") from None
    if not isinstance(doc, dict):
        raise _Closed  # get_field() on a non-object throws; the server logs and hangs up
    return doc


class RethinkDBStandIn:
    """The stand-in server; `await start()` binds, `await stop()` closes, `port` is the bound port."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int = 28015,
        admin_password: str | None = None,
        server_name: str | None = None,
        argv: Sequence[str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self._requested_port = port
        self._admin_password = admin_password
        self._server_name = server_name
        self._argv = list(argv) if argv is not None else [sys.executable, *sys.argv]
        self._server: asyncio.Server | None = None
        self._lock_fd: int | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.state: ServerState | None = None

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return self._requested_port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Load (or create) the data dir, lock it, and listen; raises if either is impossible."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_data_dir()
        try:
            store = Store(self.data_dir, self._admin_password, self._server_name)
            self.state = ServerState(store, self.host, self._requested_port, self._argv)
            self._server = await asyncio.start_server(self._on_connect, self.host, self._requested_port)
        except BaseException:
            self._unlock_data_dir()
            raise
        self.state.port = self.port
        log.info(
            "RethinkDB stand-in (%s) listening on %s:%d, data dir %s, server %s",
            SERVER_VERSION,
            self.host,
            self.port,
            self.data_dir,
            store.server_name,
        )

    def _lock_data_dir(self) -> None:
        """The real server refuses a data directory another process holds; so do we."""
        fd = os.open(self.data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise RuntimeError(f"data directory {self.data_dir} is in use by another process") from None
        self._lock_fd = fd

    async def stop(self) -> None:
        """Close the listener and every client connection (the data is already on disk)."""
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None
        self._unlock_data_dir()
        log.info("RethinkDB stand-in stopped")

    def _unlock_data_dir(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def __aenter__(self) -> RethinkDBStandIn:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        peer = writer.get_extra_info("peername")
        assert self.state is not None
        self.state.connections += 1
        try:
            user = await self._handshake(reader, writer)
            if user is not None:
                log.debug("client %s authenticated as %s", peer, user)
                await self._serve_queries(reader, writer)
        except _Closed:
            pass
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("unexpected error on connection from %s", peer)
        finally:
            self.state.connections -= 1
            if task is not None:
                self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    # ---- handshake (server.cc handle_conn) ----

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str | None:
        magic = struct.unpack("<I", await _read_exactly(reader, 4))[0]
        if magic == MAGIC_V1_0:
            return await self._handshake_v1(reader, writer)
        try:
            if magic in (MAGIC_V0_1, MAGIC_V0_2):
                raise LegacyHandshakeError("The PROTOBUF client protocol is no longer supported")
            if magic not in (MAGIC_V0_3, MAGIC_V0_4):
                raise LegacyHandshakeError(
                    "Received an unsupported protocol version. This port is for RethinkDB queries. "
                    "Does your client driver version not match the server?"
                )
            size = struct.unpack("<I", await _read_exactly(reader, 4))[0]
            if size > 2048:
                raise LegacyHandshakeError("Client provided an authorization key that is too long.")
            key = (await _read_exactly(reader, size)).decode(errors="replace")
            assert self.state is not None
            admin = self.state.store.users.get("admin")
            if admin is None or not admin.matches(key):
                raise LegacyHandshakeError("Incorrect authorization key.")
            protocol = struct.unpack("<i", await _read_exactly(reader, 4))[0]
            if protocol == PROTOCOL_PROTOBUF:
                raise LegacyHandshakeError("The PROTOBUF client protocol is no longer supported")
            if protocol != PROTOCOL_JSON:
                raise LegacyHandshakeError(f"Unrecognized protocol specified: '{protocol}'")
            writer.write(b"SUCCESS\0")
            return "admin"
        except LegacyHandshakeError as e:
            log.info("rejected legacy handshake: %s", e)
            writer.write(f"ERROR: {e}\n".encode() + b"\0")
            await self._shutdown_write(writer)
            return None

    async def _handshake_v1(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str | None:
        assert self.state is not None
        state = self.state
        writer.write(
            dump_json(
                {
                    "max_protocol_version": 0,
                    "min_protocol_version": 0,
                    "server_version": SERVER_VERSION,
                    "success": True,
                }
            ).encode()
            + b"\0"
        )
        auth = ScramAuthenticator(lambda name: state.store.users.get(name) if name in state.store.users else None)
        try:
            first = _handshake_datum(await _read_nul_terminated(reader))
            pv = first.get("protocol_version")
            if not is_num(pv):
                raise AuthError(1, "Expected a number for `protocol_version`.")
            if pv != 0:
                raise AuthError(2, "Unsupported `protocol_version`.")
            method = first.get("authentication_method")
            if not isinstance(method, str):
                raise AuthError(3, "Expected a string for `authentication_method`.")
            if method != "SCRAM-SHA-256":
                raise AuthError(4, "Unsupported `authentication_method`.")
            authentication = first.get("authentication")
            if not isinstance(authentication, str):
                raise AuthError(5, "Expected a string for `authentication`.")
            reply = auth.next_message(authentication)
            writer.write(dump_json({"authentication": reply, "success": True}).encode() + b"\0")
            final = _handshake_datum(await _read_nul_terminated(reader))
            authentication = final.get("authentication")
            if not isinstance(authentication, str):
                raise AuthError(5, "Expected a string for `authentication`.")
            reply = auth.next_message(authentication)
            writer.write(dump_json({"authentication": reply, "success": True}).encode() + b"\0")
            await writer.drain()
            return auth.username
        except AuthError as e:
            log.info("handshake failed for user %r: %s (%d)", auth.username, e.message, e.code)
            writer.write(dump_json({"error": e.message, "error_code": e.code, "success": False}).encode() + b"\0")
            await self._shutdown_write(writer)
            return None

    @staticmethod
    async def _shutdown_write(writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()

    # ---- queries (json.cc parse_query / send_response) ----

    async def _serve_queries(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self.state is not None
        while True:
            header = await _read_exactly(reader, 12)
            token, size = struct.unpack("<qI", header)
            if size >= TOO_LARGE_QUERY_SIZE:
                body = encode_response(
                    ResponseType.CLIENT_ERROR,
                    [f"Query size ({size}) greater than maximum ({TOO_LARGE_QUERY_SIZE - 1})."],
                    backtrace=[],
                )
                self._send(writer, token, body)
                await self._shutdown_write(writer)
                raise _Closed
            payload = await _read_exactly(reader, size)
            response = self._answer(token, payload)
            if response is not None:
                self._send(writer, token, response)
                try:
                    await writer.drain()
                except ConnectionError as e:
                    raise _Closed from e

    @staticmethod
    def _send(writer: asyncio.StreamWriter, token: int, body: bytes) -> None:
        writer.write(struct.pack("<qI", token, len(body)) + body)

    def _answer(self, token: int, payload: bytes) -> bytes | None:
        """One query's response, or None for `noreply`."""
        assert self.state is not None
        try:
            query = load_json(payload.decode())
        except Exception:  # anything unparseable, like rapidjson's HasParseError()
            return encode_response(
                ResponseType.CLIENT_ERROR, ["Client is buggy (failed to deserialize query)."], backtrace=[]
            )
        try:
            qtype, term_json, optargs = parse_query(query)
        except QueryError as e:
            return encode_response(ResponseType.CLIENT_ERROR, [f"Server could not parse query: {e}"], backtrace=[])
        if qtype == QueryType.START:
            self.state.queries_total += 1
            try:
                response = run_start(self.state, term_json, optargs)
            except Exception:
                log.exception("internal error evaluating query %s", payload[:200])
                response = encode_response(
                    ResponseType.RUNTIME_ERROR,
                    ["Internal error in the sandbox RethinkDB stand-in (see its log)."],
                    error_type=ErrorType.INTERNAL,
                    backtrace=[],
                )
            return None if static_bool(optargs, "noreply") else response
        if qtype in (QueryType.CONTINUE, QueryType.STOP):
            # Every sequence was sent whole, so no token is ever still in the stream cache.
            return encode_response(ResponseType.CLIENT_ERROR, [f"Token {token} not in stream cache."], backtrace=[])
        if qtype == QueryType.NOREPLY_WAIT:
            return encode_response(ResponseType.WAIT_COMPLETE, [])
        store = self.state.store
        return encode_response(
            ResponseType.SERVER_INFO, [{"id": store.server_id, "name": store.server_name, "proxy": False}]
        )


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m sandbox.standins.rethinkdb",
        description="Wire-faithful RethinkDB 2.4 stand-in for the PlaceOS sandbox.",
    )
    p.add_argument("--port", type=int, required=True, help="driver port to listen on")
    p.add_argument("--data-dir", required=True, help="directory holding the persisted state")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument(
        "--admin-password",
        default=None,
        help="initial password of user `admin` (only used when the data dir is new)",
    )
    p.add_argument("--server-name", default=None, help="server name shown in server_status")
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return p.parse_args(argv)


async def _serve(args: argparse.Namespace, argv: Sequence[str]) -> None:
    server = RethinkDBStandIn(
        args.data_dir,
        host=args.host,
        port=args.port,
        admin_password=args.admin_password,
        server_name=args.server_name,
        argv=argv,
    )
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("signal received, shutting down")
    await server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry: serve until SIGTERM/SIGINT, exit 0; exit 1 if the server cannot start."""
    args = _parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s rethinkdb-standin[%(process)d] %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    full_argv = [sys.executable, "-m", "sandbox.standins.rethinkdb", *(sys.argv[1:] if argv is None else argv)]
    try:
        asyncio.run(_serve(args, full_argv))
    except (OSError, RuntimeError, ValueError, KeyError) as e:
        log.error("cannot run: %s", e)
        return 1
    return 0


def supported_terms() -> list[str]:
    """The names of the terms this stand-in evaluates (for docs and tests)."""
    return [t.name for t in T]
