"""A listener that speaks no protocol: the sandbox's `garbage` fault (README contract 3).

`python -m sandbox.garbage --port P [--mode nonsense|close|hang]` listens on 127.0.0.1:P in place of
a backend, so clients find the port open but get no valid answer, as when a port is taken over by
the wrong service or a proxy in front of a dead backend misbehaves. Per connection:

* `nonsense` (default): writes bytes that are no valid HTTP, RESP, PostgreSQL or RethinkDB reply
  (an HTTP-looking status line with an impossible version, then binary), and answers every
  chunk the client sends with more of the same, until the client hangs up.
* `close`: closes the connection at once.
* `hang`: accepts and reads, never answers (the client's own timeout must fire).

Logs to stderr; exits 0 on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from sandbox.procs import Proc

MODES = ("nonsense", "close", "hang")
NONSENSE = (
    b"HTTP/9.9 nonsense\r\n\x00\xff\xfe\xfd garbage \x1b[31m\x00\x01\x02\x03\r\n"
    b"-ERR?\x00+\xff$-7\r\n\x80\x81\x82\x83\x84\x85\x86\x87\r\n\r\n"
)
log = logging.getLogger("sandbox.garbage")


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, mode: str) -> None:
    peer = writer.get_extra_info("peername")
    log.info("connection from %s (%s)", peer, mode)
    try:
        if mode == "nonsense":
            writer.write(NONSENSE)
            await writer.drain()
        while mode != "close" and await reader.read(65536):
            if mode == "nonsense":
                writer.write(NONSENSE)
                await writer.drain()
    except (ConnectionError, OSError):
        pass  # the client gave up on us: expected
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


async def serve(port: int, mode: str = "nonsense", host: str = "127.0.0.1") -> None:
    """Listen until SIGTERM/SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await asyncio.start_server(lambda r, w: _serve(r, w, mode), host, port, reuse_address=True)
    log.info("garbage listener on %s:%d, mode %s", host, port, mode)
    async with server:
        await stop.wait()
    log.info("stopped")


def start(port: int, *, log_path: Path, mode: str = "nonsense", deadline: float = 10.0) -> Proc:
    """Run the listener as a child process (the orchestrator's `break PART garbage`), ready to accept."""
    argv = [sys.executable, "-m", "sandbox.garbage", "--port", str(port), "--mode", mode]
    proc = Proc.start(argv, log_path=log_path, name="garbage", cwd=Path(__file__).resolve().parent.parent)
    try:
        proc.wait_ready(port, deadline)
    except BaseException:
        proc.kill()
        raise
    return proc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.garbage", description="A listener that speaks no protocol."
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--mode", choices=MODES, default="nonsense")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s garbage %(message)s")
    asyncio.run(serve(args.port, args.mode, args.host))
    return 0


if __name__ == "__main__":
    sys.exit(main())
