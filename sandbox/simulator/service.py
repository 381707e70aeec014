"""What the HTTP simulator processes (rest-api, triggers) share as `python -m` parts: their common command
line options, the access log that never shows a query string, and serving until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger


class AccessLogger(AbstractAccessLogger):
    """Method, path (never the query string: it may hold ``api-key`` or ``bearer_token``), status."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info("%s %s %s %.1fms", request.method, request.path, response.status, time * 1000)


class Listening(Protocol):
    """A service configuration: where it listens."""

    host: str
    port: int


ConfigT = TypeVar("ConfigT", bound=Listening)


def service_parser(prog: str, description: str, eras: Sequence[str]) -> argparse.ArgumentParser:
    """A parser with the options every simulator service takes first: ``--port``, ``--host``, ``--era``."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--era", choices=[*eras, *(e.lower() for e in eras)], default="A")
    return p


def add_store_urls(p: argparse.ArgumentParser) -> None:
    """``--redis`` and ``--db``, each defaulting to its ``$SANDBOX_*_URL`` (credentials stay out of ``ps``)."""
    p.add_argument(
        "--redis", default=os.environ.get("SANDBOX_REDIS_URL"), help="redis://127.0.0.1:6379 (or $SANDBOX_REDIS_URL)"
    )
    p.add_argument(
        "--db",
        default=os.environ.get("SANDBOX_DB_URL"),
        help="rethinkdb://... (era A) or postgresql://... (B/C) (or $SANDBOX_DB_URL)",
    )


def require_urls(p: argparse.ArgumentParser, args: argparse.Namespace, *names: str) -> None:
    """Exit with a usage error for the first URL option (``--redis``, ...) that has no value."""
    for name in names:
        if not getattr(args, name):
            p.error(f"--{name} (or $SANDBOX_{name.upper()}_URL) is required")


def serve_main(
    argv: list[str] | None,
    parse_args: Callable[[list[str] | None], ConfigT],
    make_app: Callable[[ConfigT], web.Application],
    access_log: str,
) -> None:
    """A service's ``main``: log to stderr, parse the command line, serve until SIGTERM/SIGINT."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = parse_args(argv)
    # run_app handles SIGTERM/SIGINT: graceful shutdown, then exit 0 (README contract point 1).
    web.run_app(
        make_app(config),
        host=config.host,
        port=config.port,
        print=None,
        access_log_class=AccessLogger,
        access_log=logging.getLogger(access_log),
        shutdown_timeout=5.0,
    )
