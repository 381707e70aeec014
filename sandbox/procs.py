"""Handles for the sandbox's child processes: start, wait ready, kill, stop/cont, terminate.

The sandbox's faults (`kill`, `stop`) are real signals sent to real processes by PID (README contract
1), so the handle works on the whole process tree: PostgreSQL's postmaster forks backends that put
themselves in their own sessions, and a `kill` that left them running would not look like a killed
server, and would leave processes behind. Every child gets `PR_SET_PDEATHSIG=SIGKILL`, so an
interrupted test run or a killed orchestrator takes its servers with it. Linux only (prctl, /proc).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

# A readiness check: a TCP port on 127.0.0.1, a (host, port) pair, or a callable that returns a
# truthy value when the child is ready (an exception counts as "not ready yet"; its text ends up in
# the ProcError if the deadline passes, so a check must not raise with a secret in its message).
ReadyCheck = int | tuple[str, int] | Callable[[], object]

_PR_SET_PDEATHSIG = 1
_PR_SET_KEEPCAPS = 8
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_RAISE = 2
_CAP_DAC_READ_SEARCH = 2
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

_libc = ctypes.CDLL(None, use_errno=True)
# Resolved now: the preexec_fn runs in a forked child, where the less it does the better.
_libc_prctl = _libc.prctl
_libc_capset = _libc.capset


class ProcError(RuntimeError):
    """A child died or did not become ready; the message ends with the last lines of its log."""

    def __init__(self, name: str, message: str, log_tail: str = "") -> None:
        self.name = name
        self.log_tail = log_tail
        text = f"{name}: {message}"
        if log_tail:
            text += f"\n--- last lines of {name}'s log ---\n{log_tail}"
        super().__init__(text)


@dataclass(frozen=True)
class _RunAs:
    """An unprivileged account to run a child as, resolved in the parent (no NSS lookups after fork)."""

    uid: int
    gid: int


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _prctl(option: int, arg: int, arg3: int = 0) -> None:
    if _libc_prctl(option, arg, arg3, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")


def _drop_privileges(run_as: _RunAs) -> None:
    """Become `run_as`, keeping only CAP_DAC_READ_SEARCH (also across exec, as an ambient capability).

    PostgreSQL refuses to run as root, and the data dirs the sandbox and pytest hand out sit under
    root-only (0700) temp dirs that another user could not even traverse. Searching directories is
    all the capability grants; the child cannot write anything it does not own.
    """
    _prctl(_PR_SET_KEEPCAPS, 1)
    os.setgroups([])
    os.setresgid(run_as.gid, run_as.gid, run_as.gid)
    os.setresuid(run_as.uid, run_as.uid, run_as.uid)
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    bit = 1 << _CAP_DAC_READ_SEARCH
    data[0].effective = data[0].permitted = data[0].inheritable = bit
    if _libc_capset(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")
    _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_RAISE, _CAP_DAC_READ_SEARCH)


def _child_setup(parent_pid: int, run_as: _RunAs | None) -> Callable[[], None]:
    """The preexec_fn: switch user first, then set the death signal (a uid change clears it)."""

    def setup() -> None:
        if run_as is not None:
            _drop_privileges(run_as)
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent_pid:  # the parent died before the death signal was armed
            os.kill(os.getpid(), signal.SIGKILL)

    return setup


_spawner: ThreadPoolExecutor | None = None
_spawner_lock = threading.Lock()


def _in_spawner_thread(popen: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    """Fork from one thread that lives as long as this process.

    The kernel sends PR_SET_PDEATHSIG when the *thread* that forked the child ends, not the process:
    a server started from `asyncio.to_thread` would be SIGKILLed when its event loop closes.
    """
    global _spawner
    with _spawner_lock:
        if _spawner is None:
            _spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandbox-spawner")
    return _spawner.submit(popen).result()


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a live process, None if it is gone or a zombie."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw.rpartition(")")[2].split()  # the command name may hold spaces and parentheses
    state, ppid = fields[0], int(fields[1])
    return None if state in ("Z", "X") else (state, ppid)


def pid_alive(pid: int) -> bool:
    """True while `pid` is a running or stopped process (zombies count as gone)."""
    return _stat(pid) is not None


def _tree(root: int) -> list[int]:
    """`root` and all its live descendants, found through the parent links in /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None:
                children.setdefault(st[1], []).append(int(entry.name))
    found: list[int] = []
    pending = [root] if pid_alive(root) else []
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(children.get(pid, ()))
    return found


def _signal_all(pids: Sequence[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _wait_gone(pids: Sequence[int], timeout: float) -> list[int]:
    """Poll until none of `pids` is alive; return those still alive at the deadline."""
    end = time.monotonic() + timeout
    while True:
        left = [p for p in pids if pid_alive(p)]
        if not left or time.monotonic() >= end:
            return left
        time.sleep(0.01)


def _check_once(check: ReadyCheck, timeout: float) -> bool:
    if isinstance(check, int | tuple):
        host, port = ("127.0.0.1", check) if isinstance(check, int) else check
        with socket.create_connection((host, port), timeout=timeout):
            return True
    return bool(check())


def tail(path: Path, lines: int = 20) -> str:
    """The last `lines` lines of a log file ('' if there is none yet)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            data = f.read()
    except FileNotFoundError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


class Proc:
    """One child process and its descendants. Create with `Proc.start`."""

    def __init__(self, popen: subprocess.Popen[bytes], name: str, log_path: Path, term_signal: int) -> None:
        self._popen = popen
        self.name = name
        self.log_path = log_path
        self.term_signal = term_signal
        self.stopped = False

    @classmethod
    def start(
        cls,
        argv: Sequence[str],
        *,
        log_path: Path,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
        term_signal: int = signal.SIGTERM,
    ) -> Proc:
        """Start `argv` with stdout and stderr appended to `log_path`.

        `env` is the child's whole environment (default: ours). `user` runs the child as that
        account (needs root; it keeps only CAP_DAC_READ_SEARCH, see `_drop_privileges`).
        `term_signal` is what `terminate` sends first (PostgreSQL wants SIGINT, a fast shutdown).
        Safe from any thread (see `_in_spawner_thread`).
        """
        name = name or Path(argv[0]).name
        run_as = None
        if user is not None:
            entry = pwd.getpwnam(user)
            if entry.pw_uid != os.geteuid():
                run_as = _RunAs(entry.pw_uid, entry.pw_gid)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            log.write(f"=== {time.strftime('%H:%M:%S')} starting {name} ===\n".encode())
            log.flush()
            popen = _in_spawner_thread(
                lambda: subprocess.Popen(
                    list(argv),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=dict(env) if env is not None else None,
                    cwd=cwd,
                    start_new_session=True,  # a Ctrl-C in the terminal reaches us, not our servers
                    preexec_fn=_child_setup(os.getpid(), run_as),
                )
            )
        return cls(popen, name, log_path, term_signal)

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def alive(self) -> bool:
        """True until the child has exited (a stopped child is alive)."""
        return self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    def tree(self) -> list[int]:
        """The child's PID and those of its live descendants."""
        return _tree(self.pid) if self.alive else []

    def log_tail(self, lines: int = 20) -> str:
        return tail(self.log_path, lines)

    def error(self, message: str) -> ProcError:
        """A ProcError about this child, carrying its log tail."""
        return ProcError(self.name, message, self.log_tail())

    def wait_ready(self, check: ReadyCheck, deadline: float = 10.0, interval: float = 0.02) -> None:
        """Poll `check` until it passes; `deadline` is the most seconds to wait.

        Raises ProcError (with the log tail) if the child exits first or the deadline passes.
        """
        end = time.monotonic() + deadline
        last = "no check ran"
        while True:
            if not self.alive:
                raise self.error(f"exited with code {self.returncode} before it was ready")
            try:
                if _check_once(check, timeout=max(0.05, min(1.0, end - time.monotonic()))):
                    return
                last = "check returned false"
            except Exception as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= end:
                raise self.error(f"not ready after {deadline:g}s (last check: {last})")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(timeout=interval)  # the poll interval, cut short if the child exits

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the child to exit and return its exit code (raises subprocess.TimeoutExpired)."""
        return self._popen.wait(timeout)

    def _freeze(self) -> list[int]:
        """SIGSTOP the child and every descendant, repeating until no new process appears."""
        frozen: set[int] = set()
        pending = self.tree()
        while pending:
            _signal_all(pending, signal.SIGSTOP)
            frozen.update(pending)
            pending = [p for p in self.tree() if p not in frozen]
        return sorted(frozen)

    def kill(self, timeout: float = 5.0) -> None:
        """SIGKILL the child and its descendants and reap it; a no-op if it has already exited.

        The tree is frozen first so nothing can fork or be re-parented away while it is collected.
        """
        self.stopped = False
        if not self.alive:
            return
        pids = self._freeze()
        _signal_all(pids, signal.SIGKILL)
        self._popen.wait()
        left = _wait_gone(pids, timeout)
        if left:
            raise self.error(f"processes {left} survived SIGKILL")

    def stop(self) -> None:
        """SIGSTOP the child and its descendants (the `stop` fault: a hung server, like docker pause)."""
        if self.alive:
            self._freeze()
            self.stopped = True

    def cont(self) -> None:
        """SIGCONT the child and its descendants."""
        if self.alive:
            _signal_all(self.tree(), signal.SIGCONT)
        self.stopped = False

    def terminate(self, timeout: float = 5.0) -> int | None:
        """Ask the child to exit (`term_signal`), SIGKILL the tree after `timeout`; return the exit code.

        Descendants still there once the child has exited are orphans: they are SIGKILLed at once.
        """
        if not self.alive:
            return self.returncode
        pids = self.tree()
        if self.stopped:
            self.cont()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, self.term_signal)
        try:
            self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.returncode
        left = [p for p in pids if pid_alive(p)]
        _signal_all(left, signal.SIGKILL)
        _wait_gone(left, timeout)
        return self.returncode

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.terminate()

    def __repr__(self) -> str:
        state = ("stopped" if self.stopped else "running") if self.alive else f"exited {self.returncode}"
        return f"<Proc {self.name} pid={self.pid} {state}>"


def run(
    argv: Sequence[str],
    *,
    log_path: Path,
    name: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
    timeout: float = 60.0,
) -> None:
    """Run a one-shot command (e.g. initdb) like `Proc.start`; raise ProcError unless it exits 0."""
    proc = Proc.start(argv, log_path=log_path, name=name, env=env, cwd=cwd, user=user)
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise proc.error(f"did not finish within {timeout:g}s") from None
    if code != 0:
        raise proc.error(f"exited with code {code}")
