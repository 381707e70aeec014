"""Process parts (a real backend through its handle, or a `python -m sandbox....` process on a fixed
port) and the record of an active fault.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox import backends
from sandbox.cluster.common import REPO
from sandbox.procs import Proc, ReadyCheck

# --------------------------------------------------------------------------------------------- parts


class _Part:
    """One process part: started, restarted on the same port and data dir, stopped."""

    name: str

    @property
    def proc(self) -> Proc | None:
        raise NotImplementedError

    @property
    def port(self) -> int:
        raise NotImplementedError

    @property
    def log_path(self) -> Path | None:
        proc = self.proc
        return proc.log_path if proc is not None else None

    def start(self) -> None:
        """Start (or start again, same port and data) and wait until ready."""
        raise NotImplementedError

    def terminate(self) -> None:
        proc = self.proc
        if proc is not None:
            proc.terminate()

    @property
    def alive(self) -> bool:
        proc = self.proc
        return proc is not None and proc.alive


class _BackendPart(_Part):
    """A real server from sandbox.backends (etcd, Redis, PostgreSQL), restarted through its handle."""

    def __init__(self, name: str, factory: Callable[[], backends.Backend]) -> None:
        self.name = name
        self._factory = factory
        self.backend: backends.Backend | None = None

    @property
    def proc(self) -> Proc | None:
        return self.backend.proc if self.backend is not None else None

    @property
    def port(self) -> int:
        assert self.backend is not None, f"{self.name} never started"
        return self.backend.port

    def start(self) -> None:
        if self.backend is None:
            self.backend = self._factory()
        else:
            self.backend.restart()

    def terminate(self) -> None:
        if self.backend is not None:
            self.backend.close()


class _ProcPart(_Part):
    """A `python -m sandbox....` part (stand-in or simulator) on a fixed port."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        port: int,
        log_path: Path,
        env: dict[str, str],
        ready: ReadyCheck,
        ready_timeout: float,
    ) -> None:
        self.name = name
        self.argv = argv
        self._port = port
        self._log_path = log_path
        self.env = env
        self.ready = ready
        self.ready_timeout = ready_timeout
        self._proc: Proc | None = None

    @property
    def proc(self) -> Proc | None:
        return self._proc

    @property
    def port(self) -> int:
        return self._port

    @property
    def log_path(self) -> Path:
        return self._log_path

    def launch(self) -> None:
        if self._proc is not None and self._proc.alive:
            self._proc.terminate()
        self._proc = Proc.start(self.argv, log_path=self._log_path, name=self.name, env=self.env, cwd=REPO)

    def wait_ready(self) -> None:
        assert self._proc is not None
        try:
            self._proc.wait_ready(self.ready, self.ready_timeout)
        except BaseException:
            self._proc.kill()
            raise

    def start(self) -> None:
        self.launch()
        self.wait_ready()


@dataclass
class _Fault:
    """An active fault: its mode, its target (driver or module id) and what heal needs."""

    mode: str
    target: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
