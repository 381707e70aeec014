"""Stand-in backends for tests, with the same handle shape as sandbox.backends (proc, port, restart,
break/heal credentials), so one fault matrix covers real servers and stand-ins alike."""

from __future__ import annotations

import json
import secrets
import sys
import urllib.request
from base64 import b64encode
from pathlib import Path
from typing import Any

from rethinkdb import RethinkDB

from exporter.model.placeos import KEY_TABLES
from sandbox.ports import free_port
from sandbox.procs import Proc

ROOT = Path(__file__).resolve().parent.parent


class StandIn:
    """A stand-in process on a free port with a data dir; restart keeps port and data."""

    name = "standin"
    host = "127.0.0.1"

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.password = secrets.token_urlsafe(12)  # may start with "-": always pass it as --flag=value
        self.proc = self._start()
        self.credentials_broken = False

    def argv(self) -> list[str]:
        raise NotImplementedError

    def _start(self) -> Proc:
        proc = Proc.start(self.argv(), log_path=self.data_dir / f"{self.name}.log", name=self.name, cwd=ROOT)
        try:
            proc.wait_ready(self.port, 15.0)
        except BaseException:
            proc.kill()
            raise
        return proc

    def restart(self) -> None:
        if self.proc.alive:
            self.proc.terminate()
        self.proc = self._start()

    def close(self) -> None:
        self.proc.terminate()

    def set_password(self, old: str, new: str) -> None:
        raise NotImplementedError

    def break_credentials(self) -> None:
        self.set_password(self.password, "broken-" + self.password)
        self.credentials_broken = True

    def heal_credentials(self) -> None:
        self.set_password("broken-" + self.password, self.password)
        self.credentials_broken = False


class RethinkDBStandIn(StandIn):
    """sandbox.standins.rethinkdb with db place_development and PlaceOS's key tables."""

    name = "rethinkdb"
    db = "place_development"

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        r = RethinkDB()
        with r.connect(self.host, self.port, password=self.password) as conn:
            r.db_create(self.db).run(conn)
            for table in KEY_TABLES:
                r.db(self.db).table_create(table).run(conn)
            r.db(self.db).table("sys").insert([{"id": f"sys-{i}"} for i in range(7)]).run(conn)

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "sandbox.standins.rethinkdb", "--port", str(self.port),
                "--data-dir", str(self.data_dir), f"--admin-password={self.password}"]  # fmt: skip

    def set_password(self, old: str, new: str) -> None:
        """As an operator would: r.db("rethinkdb").table("users").get("admin").update(...)."""
        r = RethinkDB()
        with r.connect(self.host, self.port, password=old) as conn:
            r.db("rethinkdb").table("users").get("admin").update({"password": new}).run(conn)


class ElasticsearchStandIn(StandIn):
    """sandbox.standins.elasticsearch of a given version, security on (user elastic)."""

    name = "elasticsearch"

    def __init__(self, data_dir: Path, version: str = "8.14.3") -> None:
        self.version = version
        super().__init__(data_dir)

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "sandbox.standins.elasticsearch", "--port", str(self.port),
                "--data-dir", str(self.data_dir), "--version", self.version, f"--password={self.password}"]  # fmt: skip

    def call(self, method: str, path: str, body: Any = None, password: str | None = None) -> Any:
        auth = b64encode(f"elastic:{password or self.password}".encode()).decode()
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://{self.host}:{self.port}{path}", data=data, method=method)
        req.add_header("Authorization", f"Basic {auth}")
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=5) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def set_password(self, old: str, new: str) -> None:
        self.call("POST", "/_security/user/elastic/_password", {"password": new}, password=old)

    def set_health(self, status: str) -> None:
        self.call("POST", "/_sandbox/health", {"status": status})
