"""Breaking and healing parts (`break_part`, `heal`): the part of `Sandbox` that applies faults."""

from __future__ import annotations

import contextlib
import secrets
from typing import Any

from sandbox import backends, garbage
from sandbox.cluster.base import SandboxBase
from sandbox.cluster.common import (
    HOST,
    MODES,
    PARTS,
    SandboxError,
    SandboxInputError,
    _core_loaded,
    _poll,
    http_json,
)
from sandbox.cluster.parts import _Fault
from sandbox.procs import ProcError
from sandbox.simulator import seed

# Why a part is missing from an era, for the one-line refusal of `break <part> ...`.
_ABSENT = {
    "elasticsearch": "era D serves search from PostgreSQL (rest-api 51faa1a #445): no Elasticsearch",
    "search-ingest": "era D serves search from PostgreSQL (rest-api 51faa1a #445): no search-ingest",
    "build-service": "only era D's core and rest-api use the build service (core #282, rest-api #413)",
}
# The modules `core modules-not-loaded` leaves unloaded: every module of the probe system, so the probe
# module's driver keeps other modules (mod-display-2) while another driver (Lighting) loses its only one.
NOT_LOADED_MODULES = tuple(seed.system_mappings(seed.PROBE_SYSTEM).values())


class Sandbox(SandboxBase):
    """A small PlaceOS of era A, B, C or D on loopback. `start()`, `stop()`, break and heal its parts.

    `root_dir` holds `data/<part>` and `logs/<part>.log` (both wiped at start: passwords are new each
    run, so old data would not match them); None makes a temp dir removed at `stop()`.
    `etcd_ttl` is the cores' lease TTL and how long rest-api keeps routing with cores it saw when etcd
    cannot be read (hound-dog's 15 s; short in tests). `redis_ttl` is era C's node key TTL.
    `exporter_listen` ("host:port") also runs `placeos-exporter serve` against the sandbox.
    """

    # ------------------------------------------------------------------------------------ faults

    def _resolve(self, part: str) -> list[str]:
        """The process parts a name addresses (`core` = every core); SandboxInputError if none."""
        if part == "core":
            return list(self.core_names)
        if part in self.core_names:
            return [part]
        if part not in PARTS:
            names = ", ".join(self.part_names + (self.core_names if self.cores > 1 else []))
            raise SandboxInputError(f"unknown part {part!r}; parts in era {self.era}: {names}")
        if part in ("etcd", "rethinkdb", "postgres") and part not in self.backend_names:
            raise SandboxInputError(
                f"{part} is not part of era {self.era} (its backends: {', '.join(self.backend_names)})"
            )
        if part not in self.part_names:
            raise SandboxInputError(f"{part} is not part of era {self.era} ({_ABSENT.get(part, 'not simulated')})")
        return [part]

    def _check_mode(self, part: str, mode: str) -> None:
        kind = "core" if part.startswith("core") else part
        if mode not in MODES[kind]:
            raise SandboxInputError(f"{part} has no mode {mode!r}; its modes: {', '.join(MODES[kind])}")
        if mode == "etcd-unreachable" and self.era in ("C", "D"):
            raise SandboxInputError(f"rest-api etcd-unreachable: era {self.era} does not use etcd")

    def _check_target(self, part: str, driver: str | None, module: str | None) -> str | None:
        if driver is not None and part != "driver":
            raise SandboxInputError("--driver only applies to part driver")
        if module is not None and part != "module":
            raise SandboxInputError("--module only applies to part module")
        if part == "driver":
            target = driver or self._default_target("driver")
            known = [d.id for d in seed.DRIVERS]
            if target not in known:
                raise SandboxInputError(f"unknown driver {target!r}; drivers: {', '.join(known)}")
            return target
        if part == "module":
            target = module or self._default_target("module")
            known = [m for m, _ in seed.MODULES]
            if target not in known:
                raise SandboxInputError(f"unknown module {target!r}; modules: {', '.join(known)}")
            return target
        return None

    def break_part(self, part: str, mode: str, *, driver: str | None = None, module: str | None = None) -> str:
        """Apply a fault; returns what was done. SandboxInputError for a bad request."""
        with self._lock:
            if not self._started or not self._parts:
                raise SandboxError("the sandbox is not running")
            names = self._resolve(part)
            self._check_mode(part, mode)
            target = self._check_target(part, driver, module)
            for name in names:
                if name in self._faults:
                    raise SandboxInputError(f"{name} is already broken ({self._faults[name].mode}); heal it first")
            done = [self._break_one(name, mode, target) for name in names]
            return "; ".join(done) + f" (undo: placeos-sandbox heal {part})"

    def heal(self, part: str) -> str:
        """Undo the fault on `part` (restart a dead part on its port and data); returns what was done."""
        with self._lock:
            if not self._started or not self._parts:
                raise SandboxError("the sandbox is not running")
            names = self._resolve(part)
            return "; ".join(self._heal_one(name) for name in names)

    def _break_one(self, name: str, mode: str, target: str | None) -> str:
        if name in ("driver", "module"):
            assert target is not None
            return self._break_core_route(name, mode, target)
        part = self._parts[name]
        proc = part.proc
        fault = _Fault(mode, target)
        if proc is None or not proc.alive:
            raise SandboxError(f"{name} is not running; heal it first")
        if mode == "kill":
            pid = proc.pid
            proc.kill()
            msg = f"{name}: SIGKILL pid {pid} and its children"
        elif mode == "stop":
            pids = proc.tree()
            proc.stop()
            msg = f"{name}: SIGSTOP {pids}"
        elif mode == "garbage":
            if name in self.core_names:
                proc.kill()  # no deregistration: the API keeps routing to the port
            else:
                part.terminate()
            self._garbage[name] = garbage.start(part.port, log_path=self._log(f"garbage-{name}"))
            msg = f"{name}: stopped; nonsense listener on port {part.port} (pid {self._garbage[name].pid})"
        elif mode == "wrong-credentials":
            msg = self._break_credentials(name, fault)
        elif mode == "red":
            self._sandbox_route(name, "/_sandbox/health", {"status": "red"})
            msg = "elasticsearch: cluster health red (searches fail with all shards failed)"
        elif mode == "pause":
            self._sandbox_route(name, "/_sandbox/pause", {})
            msg = "search-ingest: mirroring paused (indices lag behind the database)"
        elif mode == "unreachable":
            part.terminate()
            msg = f"rest-api: listener on port {part.port} gone (connections refused)"
        elif mode == "bad-gateway":
            self._sandbox_route(name, "/_sandbox/unreachable", {"on": True})
            msg = "rest-api: every route answers nginx's 502 page"
        elif mode == "etcd-unreachable":
            self._sandbox_route(name, "/_sandbox/etcd-unreachable", {"on": True})
            msg = "rest-api: cannot reach etcd (etcd itself stays up)"
        elif mode == "pubsub-drop":
            msg = self._break_pubsub()
        elif mode == "modules-not-loaded":
            answer = self._sandbox_route(name, "/_sandbox/modules/not-loaded", {"modules": list(NOT_LOADED_MODULES)})
            unloaded = ", ".join(answer.get("unloaded") or []) or "none of them ran here"
            msg = f"{name}: did not load {', '.join(NOT_LOADED_MODULES)} (unloaded: {unloaded})"
        else:
            raise AssertionError(mode)
        self._faults[name] = fault
        return msg

    def _heal_one(self, name: str) -> str:
        fault = self._faults.get(name)
        if name in ("driver", "module"):
            if fault is None:
                return f"{name}: not broken, nothing to heal"
            assert fault.target is not None
            msg = self._heal_core_route(name, fault.target)
            del self._faults[name]
            return msg
        part = self._parts[name]
        if fault is None:
            if part.alive:
                return f"{name}: not broken, nothing to heal"
            self._restart(name)
            return f"{name}: was not running; restarted on port {part.port}"
        mode = fault.mode
        if mode == "stop":
            proc = part.proc
            if proc is not None:
                proc.cont()
            msg = f"{name}: SIGCONT"
        elif mode in ("kill", "unreachable"):
            self._restart(name)
            msg = f"{name}: restarted on port {part.port} with the same data"
        elif mode == "garbage":
            listener = self._garbage.pop(name, None)
            if listener is not None:
                listener.terminate()
            self._restart(name)
            msg = f"{name}: nonsense listener stopped; restarted on port {part.port}"
        elif mode == "wrong-credentials":
            msg = self._heal_credentials(name, fault)
        elif mode == "red":
            self._sandbox_route(name, "/_sandbox/health", {"status": "green"})
            msg = "elasticsearch: cluster health green"
        elif mode == "pause":
            self._sandbox_route(name, "/_sandbox/resume", {})
            msg = "search-ingest: mirroring resumed"
        elif mode == "bad-gateway":
            self._sandbox_route(name, "/_sandbox/unreachable", {"on": False})
            msg = "rest-api: reachable again"
        elif mode == "etcd-unreachable":
            self._sandbox_route(name, "/_sandbox/etcd-unreachable", {"on": False})
            msg = "rest-api: reaches etcd again"
        elif mode == "pubsub-drop":
            msg = self._heal_pubsub()
        elif mode == "modules-not-loaded":
            if part.alive and name not in self._garbage:
                self._sandbox_route(name, "/_sandbox/modules/reload", {})
                msg = f"{name}: modules reloaded"
            else:
                msg = f"{name}: not running; it loads every module when it starts again"
        else:
            raise AssertionError(mode)
        del self._faults[name]
        return msg

    def _restart(self, name: str) -> None:
        part = self._parts[name]
        try:
            part.start()
        except ProcError as e:
            raise SandboxError(f"{name} did not come back: {e}") from e
        if name in self.core_names:
            # A core is back once it has re-registered and loaded its modules; if a backend it needs
            # is still broken it keeps retrying (as real core does), so this wait is best effort.
            with contextlib.suppress(SandboxError):
                _poll(_core_loaded(self.url(name)), 10.0, f"{name} loaded")

    def _sandbox_route(self, name: str, path: str, body: dict[str, Any]) -> Any:
        url = f"http://{HOST}:{self._parts[name].port}{path}"
        try:
            status, answer = http_json("POST", url, body, timeout=10.0)
        except OSError as e:
            raise SandboxError(f"{name} {path}: {e}") from e
        if status != 200:
            raise SandboxError(f"{name} {path}: HTTP {status} {answer}")
        return answer

    def _break_core_route(self, name: str, mode: str, target: str) -> str:
        key = "driver" if name == "driver" else "module"
        path = f"/_sandbox/driver/{mode}" if name == "driver" else "/_sandbox/module/disconnect"
        applied = self._core_routes(path, {key: target}, f"{name} {mode} {target}")
        self._faults[name] = _Fault(mode, target)
        return f"{name} {target}: {mode} on {', '.join(applied)}"

    def _heal_core_route(self, name: str, target: str) -> str:
        key = "driver" if name == "driver" else "module"
        path = "/_sandbox/driver/heal" if name == "driver" else "/_sandbox/module/connect"
        applied = self._core_routes(path, {key: target}, f"heal {name} {target}")
        return f"{name} {target}: healed on {', '.join(applied)}"

    def _core_routes(self, path: str, body: dict[str, Any], what: str) -> list[str]:
        """POST to every running core; the cores that answered 200 (SandboxError if none did)."""
        applied: list[str] = []
        refusals: list[str] = []
        for core in self.core_names:
            if core in self._garbage or not self._parts[core].alive:
                refusals.append(f"{core}: not running")
                continue
            try:
                status, answer = http_json("POST", f"http://{HOST}:{self._parts[core].port}{path}", body, timeout=10)
            except OSError as e:
                refusals.append(f"{core}: {e}")
                continue
            if status == 200:
                applied.append(core)
            else:
                refusals.append(f"{core}: HTTP {status} {answer}")
        if not applied:
            raise SandboxError(f"{what}: no core applied it ({'; '.join(refusals)})")
        return applied

    # -- pub/sub

    def _subscriber(self) -> dict[str, Any]:
        """rest-api's shared status subscriber, as its `/_sandbox/ready` reports it."""
        status, body = http_json("GET", f"{self.url('rest-api')}/_sandbox/ready", timeout=5.0)
        if status != 200 or not isinstance(body, dict) or not isinstance(body.get("subscriber"), dict):
            raise SandboxError(f"rest-api /_sandbox/ready: HTTP {status}")
        return dict(body["subscriber"])

    def _break_pubsub(self) -> str:
        """Redis drops its pub/sub clients and rest-api's subscriber comes back without its channels.

        The drop is done over Redis's own protocol (`CLIENT KILL TYPE pubsub`, as a failover or an
        output-buffer limit does); the silent loss is rest-api's subscriber reconnecting with the
        reconnect bug of driver #170/#171 switched on (`/_sandbox/pubsub-drop`, README contract 5).
        """
        if not self._parts["rest-api"].alive or "rest-api" in self._garbage:
            raise SandboxError("rest-api is not running; heal it first")
        before = int(self._subscriber().get("reconnects", 0))
        self._sandbox_route("rest-api", "/_sandbox/pubsub-drop", {"on": True})
        backend = self._backend("redis")
        assert isinstance(backend, backends.RedisServer)
        with backend.admin() as conn:
            killed = conn.client_kill_filter(_type="pubsub", skipme=True)

        def reconnected() -> bool:
            state = self._subscriber()
            return bool(state.get("connected")) and int(state.get("reconnects", 0)) > before

        _poll(reconnected, 15.0, "rest-api's subscriber reconnected")
        return (
            f"redis: {killed} pub/sub connection(s) dropped (CLIENT KILL TYPE pubsub); rest-api's subscriber "
            "reconnected without its status channels (PING still answers, binds still succeed)"
        )

    def _heal_pubsub(self) -> str:
        if not self._parts["rest-api"].alive or "rest-api" in self._garbage:
            return "redis: rest-api is not running; it subscribes afresh when it starts"
        self._sandbox_route("rest-api", "/_sandbox/pubsub-drop", {"on": False})

        def restored() -> bool:
            state = self._subscriber()
            return bool(state.get("connected")) and not state.get("dropped") and state.get("lost") == 0

        _poll(restored, 15.0, "rest-api's subscriber restored its channels")
        return "redis: rest-api's subscriber reconnected and subscribed to every bound channel again"

    # -- credentials

    def _break_credentials(self, name: str, fault: _Fault) -> str:
        if name in ("etcd", "redis", "postgres"):
            backend = self._backend(name)
            backend.break_credentials()
            if isinstance(backend, backends.RedisServer):
                # Redis checks a password once per connection: the clients' open connections would go
                # on working. An operator rotating it drops them too (CLIENT KILL), so every client
                # has to authenticate again, with the password it was given.
                with backend.admin() as conn:
                    for kind in ("normal", "pubsub"):
                        conn.client_kill_filter(_type=kind, skipme=True)
            return f"{name}: the clients' credentials no longer work (changed over its own protocol)"
        wrong = secrets.token_urlsafe(18)
        if name == "rethinkdb":
            self._rethinkdb_set_password(self._rethinkdb_password, wrong)
        elif name == "elasticsearch":
            self._es_set_password(self._es_password, wrong)
        else:
            raise AssertionError(name)
        fault.data["password"] = wrong  # heal authenticates with it to set the right one back
        return f"{name}: admin password changed; the clients' one no longer works"

    def _heal_credentials(self, name: str, fault: _Fault) -> str:
        if name in ("etcd", "redis", "postgres"):
            self._backend(name).heal_credentials()
        elif name == "rethinkdb":
            self._rethinkdb_set_password(fault.data["password"], self._rethinkdb_password)
        elif name == "elasticsearch":
            self._es_set_password(fault.data["password"], self._es_password)
        return f"{name}: the clients' credentials work again"
