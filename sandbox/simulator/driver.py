"""One driver process, as placeos-driver runs one process per driver binary under core.

Reproduces (internals §3.1, §3.2, §11.2):

* On each module instance's start the driver clears ``status/<mod>`` (the hash is cleared when the
  instance initialises), writes ``interface/<mod>`` (JSON metadata: ``interface``, ``functions``,
  ``implements``, ``requirements``, ``security``, ``settings``, ``versions``, ``notes``) and the
  initial status, every hash value a JSON-encoded string, ``connected`` included.
* Every status change is ``HSET status/<mod> <name> <json>`` and ``PUBLISH status/<mod>/<name> <json>``.
* Executes come from core over a pipe (JSON lines on stdin, replies on stdout, the sandbox's stand-in
  for the driver protocol) and run the seed driver's functions (``sandbox.simulator.seed.DRIVERS``):
  ``status`` returns the status, a setter sets the status named like the function or its argument.
  A wrong function or argument raises, which core answers with 203 (internals §5.3).
* Nothing is deleted on a crash: the relaunched instance clears and rewrites its hash.
* A driver with a ``ticker`` (``seed.DriverSpec``; the display driver's ``heartbeat``) sets that status
  to the current unix time in milliseconds every ``seed.TICK_INTERVAL`` seconds on each of its modules,
  as a driver polling its device does, so status changes flow all the time (HSET + PUBLISH).

Sandbox deviation, so a backend heal heals the sandbox: a write that failed (Redis down) is retried
every few seconds, and ``interface/<mod>`` missing (Redis restarted empty) is written again.

Run by core only: ``python -m sandbox.simulator.driver --driver-id ID [--exit-after S]`` with the
Redis URL in the environment variable ``SANDBOX_REDIS_URL`` (kept out of the process list). The
process exits when core closes its stdin, so a killed core leaves no orphan drivers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from sandbox.simulator.discovery import redis_client
from sandbox.simulator.seed import TICK_INTERVAL, DriverSpec, driver_by_id

log = logging.getLogger("sandbox.driver")

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "boolean": (bool,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "array": (list,),
    "object": (dict,),
}


class DriverRaised(Exception):
    """An exception raised inside driver code (reported back to core, which answers 203)."""


class Module:
    """One module instance: its status in memory and in Redis."""

    def __init__(self, driver: Driver, module_id: str, connected: bool) -> None:
        self.driver = driver
        self.id = module_id
        self.status: dict[str, Any] = dict(driver.spec.status)
        if driver.spec.ticker:
            self.status[driver.spec.ticker] = _now_ms()
        self.status["connected"] = connected
        self.dirty = True

    def metadata(self) -> dict[str, Any]:
        spec = self.driver.spec
        return {
            "interface": spec.interface,
            "functions": spec.interface,
            "implements": [],
            "requirements": {},
            "security": {},
            "settings": {},
            "versions": {},
            "notes": f"{spec.name} ({spec.file_name}), sandbox driver",
        }

    async def init_redis(self) -> None:
        """Instance init: clear the hash, write the metadata and the whole status."""
        r = self.driver.redis
        async with r.pipeline(transaction=False) as p:
            p.delete(f"status/{self.id}")
            p.set(f"interface/{self.id}", json.dumps(self.metadata()))
            p.hset(f"status/{self.id}", mapping={k: json.dumps(v) for k, v in self.status.items()})
            await p.execute()
        self.dirty = False

    async def resync(self) -> None:
        """Rewrite what Redis should hold (after a failed write or a Redis restarted empty)."""
        r = self.driver.redis
        if not self.dirty and await r.exists(f"interface/{self.id}"):
            return
        async with r.pipeline(transaction=False) as p:
            p.set(f"interface/{self.id}", json.dumps(self.metadata()))
            p.hset(f"status/{self.id}", mapping={k: json.dumps(v) for k, v in self.status.items()})
            await p.execute()
        if self.dirty:
            log.info("%s: status written again to Redis", self.id)
        self.dirty = False

    async def set_status(self, name: str, value: Any) -> None:
        """A status change: HSET the JSON value and publish it on ``status/<mod>/<name>`` (§3.2)."""
        changed = self.status.get(name) != value
        self.status[name] = value
        if not changed and not self.dirty:
            return
        encoded = json.dumps(value)
        try:
            await self.driver.redis.hset(f"status/{self.id}", name, encoded)
            await self.driver.redis.publish(f"status/{self.id}/{name}", encoded)
        except (aioredis.RedisError, OSError) as e:
            self.dirty = True
            log.warning("%s: cannot write status %s to Redis: %s", self.id, name, e)

    async def execute(self, fn: str, args: Any) -> Any:
        spec = self.driver.spec
        params = spec.interface.get(fn)
        if params is None:
            raise DriverRaised(f"undefined method '{fn}' for {spec.module_name}")
        names = list(params)
        if isinstance(args, dict):
            unknown = set(args) - set(names)
            if unknown:
                raise DriverRaised(f"{fn}: unknown argument(s) {sorted(unknown)}")
            values = [args[n] for n in names if n in args]
        elif isinstance(args, list):
            values = list(args)
        else:
            raise DriverRaised(f"{fn}: arguments must be an array or an object")
        if len(values) != len(names):
            raise DriverRaised(f"wrong number of arguments for '{fn}' (given {len(values)}, expected {len(names)})")
        for name, value in zip(names, values, strict=True):
            want = str(params[name].get("type", ""))
            types = _JSON_TYPES.get(want)
            if types and (not isinstance(value, types) or (want != "boolean" and isinstance(value, bool))):
                raise DriverRaised(f"{fn}: argument '{name}' expected {want}, got {json.dumps(value)}")
        if fn == "status":
            return dict(self.status)
        key = fn if fn in self.status else next((n for n in names if n in self.status), None)
        if key is None:
            return None
        value = values[names.index(key)] if key in names else (values[0] if values else None)
        await self.set_status(key, value)
        return value


class Driver:
    """The process: module instances of one driver, the pipe to core, the resync loop."""

    def __init__(self, spec: DriverSpec, redis: aioredis.Redis) -> None:
        self.spec = spec
        self.redis = redis
        self.modules: dict[str, Module] = {}
        self.exit_task: asyncio.Task[None] | None = None

    def reply(self, msg: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()

    async def start_module(self, module_id: str, connected: bool) -> None:
        mod = Module(self, module_id, connected)
        self.modules[module_id] = mod
        try:
            await mod.init_redis()
            log.info("%s started (%s)", module_id, self.spec.name)
        except (aioredis.RedisError, OSError) as e:
            log.warning("%s started, but Redis could not be written: %s", module_id, e)

    async def handle(self, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        seq = msg.get("seq")
        try:
            if op == "start":
                await self.start_module(str(msg["module"]), bool(msg.get("connected", True)))
                result: Any = True
            elif op == "stop":
                self.modules.pop(str(msg["module"]), None)
                result = True
            elif op == "connected":
                mod = self.modules.get(str(msg["module"]))
                if mod is None:
                    raise DriverRaised(f"module {msg['module']} not running on this host")
                await mod.set_status("connected", bool(msg["value"]))
                result = True
            elif op == "exec":
                mod = self.modules.get(str(msg["module"]))
                if mod is None:
                    raise DriverRaised(f"module {msg['module']} not running on this host")
                result = await mod.execute(str(msg["fn"]), msg.get("args", []))
            elif op == "info":
                result = {"modules": sorted(self.modules), "pid": os.getpid()}
            elif op == "heal":
                if self.exit_task is not None:
                    self.exit_task.cancel()
                    self.exit_task = None
                result = True
            else:
                raise DriverRaised(f"unknown request {op!r}")
            if seq is not None:
                self.reply({"seq": seq, "result": result, "code": 200})
        except DriverRaised as e:
            if seq is not None:
                self.reply({"seq": seq, "error": str(e), "backtrace": _backtrace(e), "code": 500})
        except Exception as e:
            log.exception("request %s failed", op)
            if seq is not None:
                self.reply({"seq": seq, "error": f"{type(e).__name__}: {e}", "backtrace": _backtrace(e), "code": 500})

    async def tick_loop(self) -> None:
        """The ``ticker`` status, set on every module each ``TICK_INTERVAL`` seconds."""
        ticker = self.spec.ticker
        if not ticker:
            return
        while True:
            await asyncio.sleep(TICK_INTERVAL)
            for mod in list(self.modules.values()):
                await mod.set_status(ticker, _now_ms())

    async def resync_loop(self) -> None:
        while True:
            await asyncio.sleep(3)
            for mod in list(self.modules.values()):
                try:
                    await mod.resync()
                except (aioredis.RedisError, OSError):
                    mod.dirty = True


def _now_ms() -> int:
    return int(time.time() * 1000)


def _backtrace(e: BaseException) -> list[str]:
    """Innermost frame first, one line each, the way a Crystal backtrace reads."""
    frames = traceback.extract_tb(e.__traceback__)
    return [f"{Path(f.filename).name}:{f.lineno} in '{f.name}'" for f in reversed(frames)] or [type(e).__name__]


async def _exit_after(seconds: float) -> None:
    await asyncio.sleep(seconds)
    log.error("driver process exiting (sandbox crash-loop fault)")
    os._exit(1)


async def run(driver_id: str, redis_url: str, exit_after: float | None) -> None:
    spec = driver_by_id(driver_id)
    redis = redis_client(redis_url, timeout=2.0)
    driver = Driver(spec, redis)
    if exit_after is not None:
        driver.exit_task = asyncio.create_task(_exit_after(exit_after))
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    resync = asyncio.create_task(driver.resync_loop())
    ticks = asyncio.create_task(driver.tick_loop())
    tasks: set[asyncio.Task[None]] = set()
    try:
        while line := await reader.readline():
            try:
                msg = json.loads(line)
            except ValueError:
                log.warning("ignoring a line that is not JSON")
                continue
            # start/stop/connected in order; executes concurrently, as real drivers run them.
            if msg.get("op") == "exec":
                task = asyncio.create_task(driver.handle(msg))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            else:
                await driver.handle(msg)
    finally:
        resync.cancel()
        ticks.cancel()
        with contextlib.suppress(Exception):
            await redis.aclose()
    log.info("core closed the pipe; driver process exiting")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--driver-id", required=True)
    parser.add_argument("--exit-after", type=float, default=None, help="exit with code 1 after S seconds")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format=f"%(asctime)s driver[{args.driver_id}] %(levelname)s %(message)s"
    )
    redis_url = os.environ.get("SANDBOX_REDIS_URL", "redis://127.0.0.1:6379")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(args.driver_id, redis_url, args.exit_after))


if __name__ == "__main__":
    main()
