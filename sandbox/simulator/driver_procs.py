"""Core's driver processes: one supervised `sandbox.simulator.driver` child per driver (launch, relaunch,
requests and replies, crash loops) and the /proc sampling behind core's load figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # core.py imports this module
    from sandbox.simulator.core import Core

log = logging.getLogger("sandbox.core")

EXEC_TIMEOUT = 10.0
CRASH_LOOP_EXIT_AFTER = 0.5
CRASH_LOOP_RELAUNCH_DELAY = 1.0

_REPO_ROOT = Path(__file__).resolve().parents[2]


def crystal_exit_code(returncode: int) -> int:
    """Exit code as placeos-driver saw it: 0 for a signal death (Crystal ``(status & 0xff00) >> 8``)."""
    return returncode if returncode >= 0 else 0


# --------------------------------------------------------------------------- /proc sampling


def _proc_cpu_seconds(pid: int | str) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_rss_kb(pid: int | str) -> int:
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def _meminfo_kb() -> tuple[int, int]:
    """(total, used) memory in KB."""
    info: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            name, _, rest = line.partition(":")
            info[name] = int(rest.split()[0])
    total = info.get("MemTotal", 0)
    return total, total - info.get("MemAvailable", total)


def _system_cpu() -> tuple[float, float]:
    """(busy, total) jiffies from /proc/stat."""
    try:
        values = [float(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, IndexError, ValueError):
        return 0.0, 0.0
    idle = values[3] + (values[4] if len(values) > 4 else 0.0)
    return sum(values) - idle, sum(values)


class CpuSampler:
    """A process's CPU percentage since the previous sample, as a status route reports it."""

    def __init__(self) -> None:
        self._last: tuple[float, float] | None = None

    def percent(self, pid: int | str) -> float:
        cpu = _proc_cpu_seconds(pid)
        now = time.monotonic()
        if cpu is None:
            return 0.0
        last, self._last = self._last, (now, cpu)
        if last is None or now <= last[0]:
            return 0.0
        return round(max(0.0, (cpu - last[1]) / (now - last[0]) * 100.0), 2)


# --------------------------------------------------------------------------- driver processes


async def _terminate(proc: asyncio.subprocess.Process) -> None:
    """Close the pipe, SIGTERM, SIGKILL after 5 s."""
    if proc.stdin is not None:
        proc.stdin.close()
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), 5)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


class ProcessDown(Exception):
    """The driver process is not running (or died during the request)."""


class DriverRaisedError(Exception):
    """The driver code raised; core answers 203 with ``{error, backtrace}``."""

    def __init__(self, message: str, backtrace: list[str], code: int) -> None:
        super().__init__(message)
        self.backtrace = backtrace
        self.code = code


@dataclass
class DriverProcess:
    """One driver binary's process manager: launch, supervise, relaunch, talk over the pipe."""

    core: Core
    driver: dict[str, Any]
    key: str
    modules: set[str] = field(default_factory=set)
    proc: asyncio.subprocess.Process | None = None
    launch_count: int = 0
    last_exit_code: int = 0
    launch_time: int = 0
    stopping: bool = False
    _seq: int = 0
    _pending: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    _supervisor: asyncio.Task[None] | None = None
    _cpu: CpuSampler = field(default_factory=CpuSampler)

    @property
    def id(self) -> str:
        return str(self.driver["id"])

    @property
    def running(self) -> bool:
        """IPC to the process is up (core's ``!!@io``)."""
        return self.proc is not None and self.proc.returncode is None

    def start(self) -> None:
        self.stopping = False
        if self._supervisor is None or self._supervisor.done():
            self._supervisor = asyncio.create_task(self._supervise(), name=f"driver {self.key}")

    async def _launch(self) -> asyncio.subprocess.Process:
        crash_loop = self.id in self.core.faults.crash_loop
        argv = [sys.executable, "-m", "sandbox.simulator.driver", "--driver-id", self.id]
        if crash_loop:
            argv += ["--exit-after", str(CRASH_LOOP_EXIT_AFTER)]
        env = dict(os.environ)
        env["SANDBOX_REDIS_URL"] = self.core.args.redis
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env
        )
        self.launch_count += 1
        self.launch_time = int(time.time())
        self.proc = proc
        log.info("launched driver %s (pid %d, launch %d)", self.key, proc.pid, self.launch_count)
        for mod in sorted(self.modules):
            with contextlib.suppress(ProcessDown):  # died at once: the supervisor sees the exit
                self._send({"op": "start", "module": mod, "connected": mod not in self.core.faults.disconnected})
        return proc

    async def _supervise(self) -> None:
        """Launch, wait for exit, relaunch at once while modules remain (a crash loop waits ~1 s)."""
        while not self.stopping and self.modules:
            try:
                proc = await self._launch()
            except Exception as e:  # a failed launch is retried after 5 s (placeos-driver >= 6.9)
                log.error("cannot launch driver %s: %s", self.key, e)
                self.last_exit_code = -1
                await asyncio.sleep(5)
                continue
            reader = asyncio.create_task(self._read(proc))
            code = await proc.wait()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            self.last_exit_code = crystal_exit_code(code)
            self._fail_pending("process terminated")
            if self.stopping:
                break
            log.warning("driver process %s exited with %s, relaunching", self.key, code)
            if self.id in self.core.faults.crash_loop:
                await asyncio.sleep(CRASH_LOOP_RELAUNCH_DELAY)

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            fut = self._pending.pop(int(msg.get("seq", -1)), None)
            if fut is not None and not fut.done():
                fut.set_result(msg)

    def _fail_pending(self, why: str) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ProcessDown(why))
        self._pending.clear()

    def _send(self, msg: dict[str, Any]) -> None:
        if not self.running or self.proc is None or self.proc.stdin is None:
            raise ProcessDown(f"module not running on this host ({self.key})")
        try:
            self.proc.stdin.write((json.dumps(msg) + "\n").encode())
        except (BrokenPipeError, ConnectionResetError) as e:
            raise ProcessDown("process terminated") from e

    async def request(self, msg: dict[str, Any], timeout: float = EXEC_TIMEOUT) -> Any:
        """Send one request and wait for its reply; raises ProcessDown or DriverRaisedError."""
        self._seq += 1
        seq = self._seq
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[seq] = fut
        try:
            self._send({**msg, "seq": seq})
            reply = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise ProcessDown(f"request timed out after {timeout:g}s") from None
        finally:
            self._pending.pop(seq, None)
        if "error" in reply:
            raise DriverRaisedError(
                str(reply["error"]), list(reply.get("backtrace") or []), int(reply.get("code", 500))
            )
        return reply.get("result")

    async def add_module(self, mod: str) -> None:
        self.modules.add(mod)
        if self.running:
            with contextlib.suppress(ProcessDown):
                self._send({"op": "start", "module": mod, "connected": mod not in self.core.faults.disconnected})
        else:
            self.start()

    async def remove_module(self, mod: str) -> None:
        self.modules.discard(mod)
        if self.running:
            with contextlib.suppress(ProcessDown):
                self._send({"op": "stop", "module": mod})
        if not self.modules:
            await self.stop()

    def kill(self) -> bool:
        """SIGKILL the process (the crash fault); the supervisor relaunches it."""
        if not self.running or self.proc is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        return True

    async def stop(self) -> None:
        """Intentional stop: no relaunch. Terminates whatever process the supervisor has up."""
        self.stopping = True
        sup = self._supervisor
        while sup is not None and not sup.done():
            proc = self.proc
            if proc is not None and proc.returncode is None:
                await _terminate(proc)
            await asyncio.wait({sup}, timeout=0.2)
        self._supervisor = None

    def status(self) -> dict[str, Any]:
        """core ``GET /status/driver?path=<key>`` (internals §11.1)."""
        out: dict[str, Any] = {
            "running": self.running,
            "module_instances": len(self.modules),
            "last_exit_code": self.last_exit_code,
            "launch_count": self.launch_count,
            "launch_time": self.launch_time,
        }
        if self.running and self.proc is not None:
            total, _ = _meminfo_kb()
            out["percentage_cpu"] = self._cpu.percent(self.proc.pid)
            out["memory_total"] = total
            out["memory_usage"] = _proc_rss_kb(self.proc.pid)
        return out
