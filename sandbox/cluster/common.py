"""What the orchestrator's modules share: the eras, parts and fault modes, the errors, how a child is
launched and with what environment, and the HTTP and polling helpers.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[2]  # the checkout: sandbox/cluster/common.py -> .
ERAS = ("A", "B", "C", "D")
API = "/api/engine/v2"
RETHINKDB_DB = "place_development"  # the partner environment's database (internals §8)
ES_VERSION = {"A": "7.17.6", "B": "7.17.6", "C": "8.14.3"}  # partner environment images (internals §8); none in D
ES_USER = "elastic"
MARKER = ".placeos-sandbox"  # marks a root dir whose data/ and logs/ the sandbox may wipe

PARTS = (
    "etcd",
    "rethinkdb",
    "postgres",
    "redis",
    "elasticsearch",
    "search-ingest",
    "build-service",
    "core",
    "driver",
    "module",
    "rest-api",
    "triggers",
)
BACKENDS_BY_ERA: dict[str, tuple[str, ...]] = {
    "A": ("etcd", "rethinkdb", "redis", "elasticsearch"),
    "B": ("etcd", "postgres", "redis", "elasticsearch"),
    "C": ("postgres", "redis", "elasticsearch"),
    # Era D (placeos-2026.md §1; rest-api 51faa1a #445): search is PostgreSQL full-text search, so
    # neither Elasticsearch nor search-ingest runs.
    "D": ("postgres", "redis"),
}
# The simulated services besides the cores, per era. Core compiles drivers through a build service since
# 2.2404.1 (core 1911787 #266, internals §11.3), but only era D's core and rest-api expose it (build
# monitor: rest-api #413, core #282, 2025-09; recompile through core: rest-api ef4f02f), so only era D
# runs one; era C's core keeps the sandbox's in-process compile like A/B.
SERVICES_BY_ERA: dict[str, tuple[str, ...]] = {
    "A": ("search-ingest", "rest-api", "triggers"),
    "B": ("search-ingest", "rest-api", "triggers"),
    "C": ("search-ingest", "rest-api", "triggers"),
    "D": ("build-service", "rest-api", "triggers"),
}
GENERIC_MODES = ("kill", "stop", "garbage")
MODES: dict[str, tuple[str, ...]] = {
    "etcd": (*GENERIC_MODES, "wrong-credentials"),
    "rethinkdb": (*GENERIC_MODES, "wrong-credentials"),
    "postgres": (*GENERIC_MODES, "wrong-credentials"),
    "redis": (*GENERIC_MODES, "wrong-credentials", "pubsub-drop"),
    "elasticsearch": (*GENERIC_MODES, "wrong-credentials", "red"),
    "search-ingest": (*GENERIC_MODES, "pause"),
    "build-service": GENERIC_MODES,
    "core": (*GENERIC_MODES, "modules-not-loaded"),
    "driver": ("crash", "crash-loop", "compile-fail"),
    "module": ("disconnect",),
    "rest-api": (*GENERIC_MODES, "unreachable", "bad-gateway", "etcd-unreachable"),
    "triggers": GENERIC_MODES,
}

# `python -c _LAUNCHER <module> <args>`: runs the module as `python -m` would, replacing an
# `@env:NAME` at the end of an argument (`--db=@env:SANDBOX_DB_URL`) by that environment variable, so
# secrets stay out of /proc/<pid>/cmdline. Always `--flag=value`: a secret may start with "-".
_LAUNCHER = (
    "import os,re,runpy,sys;"
    "sys.argv=[sys.argv[1]]+[re.sub(r'@env:(\\w+)$',lambda m:os.environ[m[1]],a) for a in sys.argv[2:]];"
    "runpy.run_module(sys.argv[0],run_name='__main__',alter_sys=True)"
)
# Environment variables a child could read as its own configuration: never inherited from ours.
_CONFIG_ENV_PREFIXES = ("SANDBOX_", "PLACEOS_EXPORTER_", "ETCD", "REDIS_", "RETHINKDB_", "PG_", "ELASTIC_", "ES_")
_CONFIG_ENV_PREFIXES_EXPORTER = (*_CONFIG_ENV_PREFIXES, "PLACE_", "HD_SERVICE_NAMESPACE")


class SandboxError(RuntimeError):
    """Something in the sandbox failed (a part did not start, a fault could not be applied)."""


class SandboxInputError(SandboxError, ValueError):
    """The request itself is wrong: unknown part or mode, part not in this era, already broken."""


def _python_argv(module: str, args: Iterable[str], *, launcher: bool = False) -> list[str]:
    if launcher:
        return [sys.executable, "-c", _LAUNCHER, module, *args]
    return [sys.executable, "-m", module, *args]


def _child_env(extra: Mapping[str, str], prefixes: tuple[str, ...] = _CONFIG_ENV_PREFIXES) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(extra)
    return env


def http_json(
    method: str,
    url: str,
    body: Any = None,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 5.0,
) -> tuple[int, Any]:
    """One HTTP request with a JSON body; (status, parsed JSON or text). Raises OSError if unreachable."""
    data = json.dumps(body).encode() if body is not None else None
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http URL: {url}")
    req = urllib.request.Request(url, data=data, method=method)  # noqa: S310 (checked above)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    for key, value in (headers or {}).items():
        req.add_header(key, value)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    text = raw.decode("utf-8", "replace")
    try:
        return status, json.loads(text) if text else None
    except ValueError:
        return status, text


def _http_ready(url: str) -> Callable[[], bool]:
    def check() -> bool:
        status, _ = http_json("GET", url, timeout=1.0)
        return status == 200

    return check


def _core_loaded(url: str) -> Callable[[], bool]:
    """A core has registered and loaded its modules (its `/_sandbox/ready` says `loaded`)."""

    def check() -> bool:
        status, body = http_json("GET", f"{url}/_sandbox/ready", timeout=2.0)
        return status == 200 and isinstance(body, dict) and bool(body.get("loaded"))

    return check


def _poll(check: Callable[[], object], deadline: float, what: str, interval: float = 0.1) -> None:
    """Poll until `check` is truthy (exceptions count as not yet); SandboxError at the deadline."""
    end = time.monotonic() + deadline
    last = "no check ran"
    while True:
        try:
            result = check()
            if result:
                return
            last = f"got {result!r}"
        except Exception as e:
            last = f"{type(e).__name__}: {e}"
        if time.monotonic() >= end:
            raise SandboxError(f"{what}: not true after {deadline:g}s ({last[:300]})")
        time.sleep(interval)
