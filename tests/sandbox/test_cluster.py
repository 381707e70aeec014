"""End-to-end tests of the sandbox orchestrator (sandbox.cluster) and its CLI, one sandbox per era.

Each era's sandbox is started once per test class with short TTLs, and each test breaks a part, checks
the documented symptom over plain HTTP against the rest-api simulator (the troubleshooting page,
internals §5.3, §9), heals it and checks the path works again. Nothing here fakes a symptom: it comes
from a real process being killed, stopped, replaced by a nonsense listener or re-passworded. After
each class the sandbox is stopped and every PID it ever had is checked to be gone. Waits are polls
with deadlines.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from support import poll

from exporter.settings import load_settings
from sandbox import cli
from sandbox.cluster import Sandbox, SandboxError, SandboxInputError, http_json
from sandbox.ports import free_port
from sandbox.procs import pid_alive
from sandbox.simulator import seed

REPO = Path(__file__).resolve().parents[2]
API = "/api/engine/v2"
TTL = 3  # etcd lease TTL (A/B) and how long rest-api keeps routing with cores it saw
REDIS_TTL = 4  # era C node key TTL
DEADLINE = 30.0
FUNCTIONS = f"/systems/{seed.PROBE_SYSTEM}/functions/{seed.PROBE_MODULE}"
PROBE_MODULE_ID = seed.system_mappings(seed.PROBE_SYSTEM)["Display/1"]
PROBE_DRIVER_ID = dict(seed.MODULES)[PROBE_MODULE_ID]


# ----------------------------------------------------------------------------------------- helpers


def execute(sb: Sandbox) -> tuple[int, Any]:
    return sb.api("POST", sb.probe_execute_path, [])


def works(sb: Sandbox) -> bool:
    """The whole user path: authentication, listing, functions and execute all answer 200."""
    return all(
        sb.api(method, path, body)[0] == 200
        for method, path, body in (
            ("GET", "/api_keys/inspect", None),
            ("GET", "/systems", None),
            ("GET", FUNCTIONS, None),
            ("POST", sb.probe_execute_path, []),
        )
    )


def unknown_key(sb: Sandbox) -> bool:
    """`GET /api_keys/inspect` with the seeded key is 401 `{"error":"unknown X-API-Key"}` (§5.2)."""
    return sb.api("GET", "/api_keys/inspect") == (401, {"error": "unknown X-API-Key"})


def execute_failure(sb: Sandbox) -> dict[str, Any] | None:
    """The §5.3 body of a 500 `unexpected failure` from execute, None while execute gives anything else."""
    status, body = execute(sb)
    if status == 500 and isinstance(body, dict) and body.get("error") == "unexpected failure":
        return body
    return None


def assert_no_secret_in_argv(sb: Sandbox, *secrets_: str) -> None:
    """No process of the sandbox shows a password or the API key secret in /proc/<pid>/cmdline."""
    for secret in (*secrets_, sb.api_key_secret, sb.user_password):
        assert len(secret) >= 16
    for pid in sb.pids():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            leaked = [s for s in (*secrets_, sb.api_key_secret, sb.user_password) if s in cmdline]
            assert not leaked, f"a secret is in the argv of pid {pid}"


def start_sandbox(era: str, root: Path, **kwargs: Any) -> Sandbox:
    sb = Sandbox(era, root, etcd_ttl=TTL, redis_ttl=REDIS_TTL, **kwargs)
    sb.start()
    return sb


def stop_and_check_nothing_left(sb: Sandbox) -> None:
    pids = sb.pids()
    assert pids, "the sandbox had no processes"
    sb.stop()
    left = [pid for pid in pids if pid_alive(pid)]
    assert not left, f"processes left behind after stop: {left}"


@pytest.fixture
def healthy_after(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test: heal whatever it left broken and wait until the user path works again."""
    yield
    sb: Sandbox = request.getfixturevalue(request.node.cls.sandbox_fixture)
    for name, part in sb.status()["parts"].items():
        if str(part["state"]).startswith("broken:") or part["state"] == "stopped":
            with contextlib.suppress(SandboxError):
                sb.heal("core" if name.startswith("core") else name)
    sb.wait_working(DEADLINE)


def cluster_entry(sb: Sandbox, module_id: str) -> dict[str, Any]:
    """The `/cluster/<core>?include_status=true` entry of the driver running `module_id` (§11.1)."""
    status, cores = sb.api("GET", "/cluster")
    assert status == 200 and cores, cores
    for core in cores:
        status, entries = sb.api("GET", f"/cluster/{core['id']}?include_status=true")
        assert status == 200, entries
        for entry in entries:
            if module_id in entry["local"]["modules"]:
                return dict(entry)
    raise AssertionError(f"no core runs {module_id}")


# ------------------------------------------------------------------------------------------ era A


@pytest.fixture(scope="class")
def sandbox_a(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    sb = start_sandbox("A", tmp_path_factory.mktemp("era-a"))
    try:
        yield sb
    finally:
        stop_and_check_nothing_left(sb)


@pytest.mark.usefixtures("healthy_after")
class TestEraA:
    """etcd + RethinkDB stand-in + Redis + ES stand-in: the troubleshooting page's own set."""

    sandbox_fixture = "sandbox_a"

    def test_up_answers_with_the_seeded_key(self, sandbox_a: Sandbox) -> None:
        sb = sandbox_a
        assert sb.timings["up"] < 20.0, sb.timings
        status, claims = sb.api("GET", "/api_keys/inspect")
        assert status == 200 and claims["sub"] == seed.SUPPORT_USER_ID, claims
        wrong = http_json(
            "GET",
            f"{sb.api_url}{API}/api_keys/inspect",
            headers={"X-API-Key": f"{seed.API_KEY_ID}.wrong", "Host": seed.AUTHORITY_DOMAIN},
        )
        assert wrong == (401, {"error": "unknown X-API-Key"})
        assert works(sb)
        status, version = sb.api("GET", "/version")
        assert status == 200 and version["platform_version"].startswith("1."), version
        parts = sb.status()["parts"]
        assert set(parts) == {*sb.part_names, "core"}
        assert all(p["state"] == "running" for p in parts.values()), parts
        assert all(pid_alive(p["pid"]) for p in parts.values() if p["pid"] is not None)

    def test_no_secret_in_any_command_line(self, sandbox_a: Sandbox) -> None:
        env = sandbox_a.exporter_env()
        assert_no_secret_in_argv(sandbox_a, env["RETHINKDB_PASSWORD"], env["ELASTIC_PASSWORD"])

    def test_exporter_settings_are_read_by_the_exporter(self, sandbox_a: Sandbox, tmp_path: Path) -> None:
        sb = sandbox_a
        env = sb.exporter_env()
        for key in ("ETCD_HOST", "ETCD_PORT", "REDIS_URL", "RETHINKDB_HOST", "RETHINKDB_PORT", "RETHINKDB_DB"):
            assert key in env
        assert env["PLACEOS_EXPORTER_API_API_KEY"] == sb.api_key
        assert (env["PLACE_URI"], env["PLACE_DOMAIN"], env["PLACEOS_EXPORTER_ERA"]) == (sb.api_url, "localhost", "auto")
        from_env = load_settings(None, environ=env).clusters[0]
        assert from_env.api.api_key is not None and from_env.api.api_key.get_secret_value() == sb.api_key
        assert (from_env.api.system_id, from_env.api.module, from_env.api.function) == (
            seed.PROBE_SYSTEM,
            seed.PROBE_MODULE,
            seed.PROBE_FUNCTION,
        )
        assert from_env.rethinkdb.port == sb.status()["parts"]["rethinkdb"]["port"]
        assert from_env.elasticsearch.username == "elastic"
        config = tmp_path / "exporter.yaml"
        config.write_text(sb.exporter_yaml())
        from_yaml = load_settings(config, environ={}).clusters[0]
        assert from_yaml.etcd.port == from_env.etcd.port and from_yaml.redis.url == from_env.redis.url
        assert from_yaml.api.triggers_url == env["PLACEOS_EXPORTER_API_TRIGGERS_URL"]
        assert yaml.safe_load(sb.exporter_yaml())["clusters"][0]["era"] == "auto"

    async def test_rethinkdb_kill_unknown_key_but_open_websocket_works(self, sandbox_a: Sandbox) -> None:
        sb = sandbox_a
        headers = {"X-API-Key": sb.api_key, "Host": seed.AUTHORITY_DOMAIN}
        meta = {"sys": seed.PROBE_SYSTEM, "mod": "Display", "index": 1, "name": "power"}
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(f"{sb.api_url}{API}/systems/control", headers=headers) as ws,
        ):
            await ws.send_json({"id": 1, "cmd": "bind", "sys": seed.PROBE_SYSTEM, "mod": "Display", "name": "power"})
            assert await ws.receive_json(timeout=10) == {"id": 1, "type": "success", "meta": meta}
            first = await ws.receive_json(timeout=10)
            assert first["type"] == "notify"
            start = first["value"]

            sb.break_part("rethinkdb", "kill")
            assert unknown_key(sb)  # authentication needs the database: every API request is 401
            assert sb.status()["parts"]["rethinkdb"]["state"] == "broken:kill"

            # The socket authenticated at upgrade: it still executes and still receives (§9).
            await ws.send_json(
                {
                    "id": 2,
                    "cmd": "exec",
                    "sys": seed.PROBE_SYSTEM,
                    "mod": "Display",
                    "name": "power",
                    "args": [not start],
                }
            )
            seen: dict[str, dict[str, Any]] = {}
            while len(seen) < 2:
                msg = await ws.receive_json(timeout=10)
                seen[msg["type"]] = msg
            assert seen["success"]["id"] == 2 and seen["success"]["code"] == 200, seen
            assert seen["notify"] == {"id": 1, "type": "notify", "value": not start, "meta": meta}

            sb.heal("rethinkdb")
            poll(lambda: sb.api("GET", "/api_keys/inspect")[0] == 200, DEADLINE, "the API key works again")
            await ws.send_json(
                {"id": 3, "cmd": "exec", "sys": seed.PROBE_SYSTEM, "mod": "Display", "name": "power", "args": [start]}
            )
            assert (await ws.receive_json(timeout=10))["type"] in ("success", "notify")

    def test_rethinkdb_wrong_credentials(self, sandbox_a: Sandbox) -> None:
        sb = sandbox_a
        sb.break_part("rethinkdb", "wrong-credentials")
        poll(lambda: unknown_key(sb), DEADLINE, "401 unknown X-API-Key with the database refusing the password")
        sb.heal("rethinkdb")
        poll(lambda: works(sb), DEADLINE, "the user path works again")

    def test_elasticsearch_red_lists_fail_execute_works(self, sandbox_a: Sandbox) -> None:
        sb = sandbox_a
        sb.break_part("elasticsearch", "red")
        assert sb.api("GET", "/systems")[0] == 500
        assert execute(sb)[0] == 200
        assert sb.api("GET", FUNCTIONS)[0] == 200
        sb.heal("elasticsearch")
        assert sb.api("GET", "/systems")[0] == 200

    def test_redis_kill_functions_fail_then_heal(self, sandbox_a: Sandbox) -> None:
        sb = sandbox_a
        sb.break_part("redis", "kill")
        assert sb.api("GET", FUNCTIONS)[0] == 500
        assert execute(sb)[0] == 500
        assert sb.api("GET", "/api_keys/inspect")[0] == 200  # login still works
        sb.heal("redis")
        poll(lambda: sb.api("GET", FUNCTIONS)[0] == 200, DEADLINE, "module functions load again")
        poll(lambda: execute(sb)[0] == 200, DEADLINE, "execute works again")

    def test_etcd_kill_execute_fails_after_the_ttl(self, sandbox_a: Sandbox) -> None:
        sb = sandbox_a
        sb.break_part("etcd", "kill")
        body = poll(lambda: execute_failure(sb), TTL + DEADLINE, "execute fails once the cores' TTL has passed")
        # crystal-etcd's wording (rest_api.py docstring, internals §1.4): the docs' "unable to connect
        # to etcd" triage branch; an etcd that answers with no core gives "No registered core instances".
        assert body["message"].startswith("Could not connect to etcd endpoint: http://127.0.0.1:"), body
        assert sb.api("GET", "/api_keys/inspect")[0] == 200  # most API requests keep working
        assert sb.api("GET", FUNCTIONS)[0] == 200
        sb.heal("etcd")
        poll(lambda: execute(sb)[0] == 200, DEADLINE, "execute works again")

    def test_driver_crash_launch_count_rises(self, sandbox_a: Sandbox) -> None:
        sb = sandbox_a
        before = cluster_entry(sb, PROBE_MODULE_ID)["local"]["status"]["launch_count"]
        message = sb.break_part("driver", "crash")
        assert PROBE_DRIVER_ID in message
        poll(
            lambda: cluster_entry(sb, PROBE_MODULE_ID)["local"]["status"]["launch_count"] > before,
            DEADLINE,
            "launch_count rises after the crash",
        )
        assert sb.status()["parts"]["driver"] == {
            "pid": None,
            "port": None,
            "state": "broken:crash",
            "target": PROBE_DRIVER_ID,
        }
        sb.heal("driver")
        poll(lambda: execute(sb)[0] == 200, DEADLINE, "execute works on the relaunched driver")

    def test_rest_api_unreachable_connection_refused(self, sandbox_a: Sandbox) -> None:
        sb = sandbox_a
        sb.break_part("rest-api", "unreachable")
        with pytest.raises(urllib.error.URLError) as info:
            sb.api("GET", "/api_keys/inspect")
        assert isinstance(info.value.reason, ConnectionRefusedError), info.value
        sb.heal("rest-api")
        assert sb.api("GET", "/api_keys/inspect")[0] == 200

    def test_bad_requests_are_refused_with_one_line(self, sandbox_a: Sandbox) -> None:
        sb = sandbox_a
        refused = [
            (("postgres", "kill"), {}, "not part of era A"),
            (("etcd", "red"), {}, "has no mode 'red'"),
            (("nope", "kill"), {}, "unknown part 'nope'"),
            (("driver", "crash"), {"driver": "nope"}, "unknown driver 'nope'"),
            (("redis", "kill"), {"driver": PROBE_DRIVER_ID}, "--driver only applies"),
        ]
        for args, kwargs, text in refused:
            with pytest.raises(SandboxInputError, match=text) as info:
                sb.break_part(*args, **kwargs)
            assert "\n" not in str(info.value)
        assert "not broken" in sb.heal("redis")
        sb.break_part("triggers", "stop")
        with pytest.raises(SandboxInputError, match="already broken"):
            sb.break_part("triggers", "kill")
        sb.heal("triggers")


# ------------------------------------------------------------------------------------------ era B


@pytest.fixture(scope="class")
def sandbox_b(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    sb = start_sandbox("B", tmp_path_factory.mktemp("era-b"))
    try:
        yield sb
    finally:
        stop_and_check_nothing_left(sb)


@pytest.mark.usefixtures("healthy_after")
class TestEraB:
    """etcd + PostgreSQL + Redis + ES."""

    sandbox_fixture = "sandbox_b"

    def test_up(self, sandbox_b: Sandbox) -> None:
        assert sandbox_b.timings["up"] < 20.0, sandbox_b.timings
        assert works(sandbox_b)
        assert "rethinkdb" not in sandbox_b.status()["parts"]
        env = sandbox_b.exporter_env()
        assert "PG_DATABASE_URL" in env and "RETHINKDB_HOST" not in env
        pg_password = urllib.parse.urlsplit(env["PG_DATABASE_URL"]).password
        assert pg_password is not None
        assert_no_secret_in_argv(sandbox_b, urllib.parse.unquote(pg_password), env["ELASTIC_PASSWORD"])

    def test_postgres_kill_unknown_key_then_heal(self, sandbox_b: Sandbox) -> None:
        sb = sandbox_b
        sb.break_part("postgres", "kill")
        assert unknown_key(sb)
        sb.heal("postgres")
        poll(lambda: works(sb), DEADLINE, "the user path works again")

    def test_postgres_wrong_credentials(self, sandbox_b: Sandbox) -> None:
        sb = sandbox_b
        sb.break_part("postgres", "wrong-credentials")
        poll(lambda: unknown_key(sb), DEADLINE, "401 once PostgreSQL refuses the password")
        sb.heal("postgres")
        poll(lambda: sb.api("GET", "/api_keys/inspect")[0] == 200, DEADLINE, "the key works again")

    def test_core_kill_no_registered_core_instances_after_the_lease(self, sandbox_b: Sandbox) -> None:
        sb = sandbox_b
        sb.break_part("core", "kill")
        body = poll(
            lambda: (b := execute_failure(sb)) and b["message"] == "No registered core instances" and b,
            TTL + DEADLINE,
            "execute says No registered core instances once the lease ran out",
        )
        assert body["sys_id"] == seed.PROBE_SYSTEM
        sb.heal("core")
        poll(lambda: execute(sb)[0] == 200, DEADLINE, "the restarted core registered and executes")

    def test_elasticsearch_wrong_credentials_lists_fail(self, sandbox_b: Sandbox) -> None:
        sb = sandbox_b
        sb.break_part("elasticsearch", "wrong-credentials")
        assert sb.api("GET", "/systems")[0] == 500
        assert execute(sb)[0] == 200
        sb.heal("elasticsearch")
        assert sb.api("GET", "/systems")[0] == 200

    def test_redis_garbage_then_heal(self, sandbox_b: Sandbox) -> None:
        sb = sandbox_b
        sb.break_part("redis", "garbage")
        part = sb.status()["parts"]["redis"]
        assert part["state"] == "broken:garbage" and part["pid"] is None and pid_alive(part["garbage_pid"])
        assert sb.api("GET", FUNCTIONS)[0] == 500
        status, body = execute(sb)
        assert status == 500 and "Protocol Error" in body["message"], body
        sb.heal("redis")
        assert not pid_alive(part["garbage_pid"])
        poll(lambda: execute(sb)[0] == 200, DEADLINE, "execute works again")

    def test_redis_wrong_credentials(self, sandbox_b: Sandbox) -> None:
        sb = sandbox_b
        sb.break_part("redis", "wrong-credentials")
        poll(lambda: sb.api("GET", FUNCTIONS)[0] == 500, DEADLINE, "module functions fail with Redis refusing")
        sb.heal("redis")
        poll(lambda: execute(sb)[0] == 200, DEADLINE, "execute works again")

    def test_redis_pubsub_drop_keeps_ping(self, sandbox_b: Sandbox) -> None:
        sb = sandbox_b
        assert "CLIENT KILL TYPE pubsub" in sb.break_part("redis", "pubsub-drop")
        assert execute(sb)[0] == 200 and sb.api("GET", FUNCTIONS)[0] == 200  # Redis itself answers
        assert sb.status()["parts"]["redis"]["state"] == "broken:pubsub-drop"
        assert "subscribed to every bound channel again" in sb.heal("redis")

    def test_redis_stop_times_out_then_heal(self, sandbox_b: Sandbox) -> None:
        sb = sandbox_b
        sb.break_part("redis", "stop")
        assert sb.status()["parts"]["redis"]["state"] == "broken:stop"
        assert sb.api("GET", FUNCTIONS)[0] == 500  # rest-api's Redis timeout, not a hang
        sb.heal("redis")
        poll(lambda: sb.api("GET", FUNCTIONS)[0] == 200, DEADLINE, "module functions load again")


# ------------------------------------------------------------------------------------------ era C


@pytest.fixture(scope="class")
def sandbox_c(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    sb = start_sandbox("C", tmp_path_factory.mktemp("era-c"))
    try:
        yield sb
    finally:
        stop_and_check_nothing_left(sb)


@pytest.mark.usefixtures("healthy_after")
class TestEraC:
    """PostgreSQL + Redis (also discovery) + ES."""

    sandbox_fixture = "sandbox_c"

    def test_up_without_etcd(self, sandbox_c: Sandbox) -> None:
        sb = sandbox_c
        assert sb.timings["up"] < 20.0, sb.timings
        assert works(sb)
        assert "etcd" not in sb.status()["parts"] and "ETCD_HOST" not in sb.exporter_env()
        with pytest.raises(SandboxInputError, match="etcd is not part of era C"):
            sb.break_part("etcd", "kill")
        with pytest.raises(SandboxInputError, match="era C does not use etcd"):
            sb.break_part("rest-api", "etcd-unreachable")
        # The era-D signal reads 1 here: paginate_results' `range_end + 1` (rest-api before 51faa1a).
        req = urllib.request.Request(
            f"{sb.api_url}{API}/systems?limit=0", headers={"X-API-Key": sb.api_key, "Host": seed.AUTHORITY_DOMAIN}
        )
        with urllib.request.urlopen(req, timeout=15) as resp:
            assert resp.headers["Link"] == f'<{API}/systems?limit=0&offset=1>; rel="next"'
        status, versions = sb.api("GET", "/cluster/versions")
        assert status == 200 and "search-ingest" in {v["service"] for v in versions}, versions

    def test_core_kill_leaves_a_stale_registration(self, sandbox_c: Sandbox) -> None:
        sb = sandbox_c
        status, cores = sb.api("GET", "/cluster")
        assert status == 200 and len(cores) == 1
        sb.break_part("core", "kill")
        body = poll(lambda: execute_failure(sb), DEADLINE, "execute fails")
        assert "Connection refused" in body["message"], body
        # Past the node key's TTL: nothing prunes the lookup entry, the API still routes to it (§1.2).
        time_past_ttl = time.monotonic() + REDIS_TTL + 1
        poll(lambda: time.monotonic() > time_past_ttl, REDIS_TTL + 5, "the node key TTL passed", interval=0.5)
        assert sb.api("GET", "/cluster") == (200, cores)
        body = execute_failure(sb)
        assert body is not None and "Connection refused" in body["message"], body
        sb.heal("core")
        poll(lambda: execute(sb)[0] == 200, DEADLINE, "the restarted core registered and executes")

    def test_module_disconnect(self, sandbox_c: Sandbox) -> None:
        sb = sandbox_c
        key = f"/systems/{seed.PROBE_SYSTEM}/{seed.PROBE_MODULE}/connected"
        assert sb.api("GET", key) == (200, True)
        sb.break_part("module", "disconnect")
        poll(lambda: sb.api("GET", key) == (200, False), DEADLINE, "the module reports disconnected")
        sb.heal("module")
        poll(lambda: sb.api("GET", key) == (200, True), DEADLINE, "the module is connected again")

    def test_driver_compile_fail(self, sandbox_c: Sandbox) -> None:
        sb = sandbox_c
        sb.break_part("driver", "compile-fail")
        body = poll(lambda: execute_failure(sb), DEADLINE, "execute fails with the driver not loaded")
        assert "failed with" in body["message"], body
        status, compiled = sb.api("GET", f"/drivers/{PROBE_DRIVER_ID}/compiled")
        assert status == 503 and "compile-fail" in compiled["compilation_output"], compiled
        sb.heal("driver")
        poll(lambda: execute(sb)[0] == 200, DEADLINE, "execute works once the driver compiles")

    def test_core_modules_not_loaded_execute_fails(self, sandbox_c: Sandbox) -> None:
        """Era C's core (before 37aab5c) answers 404 for a module it has not loaded (internals §11.2)."""
        sb = sandbox_c
        assert "mod-display-1, mod-lighting-1" in sb.break_part("core", "modules-not-loaded")
        body = poll(lambda: execute_failure(sb), DEADLINE, "execute fails with the module not loaded")
        assert body["message"].startswith("request to 127.0.0.1:"), body
        assert "failed with {" in body["message"] and f"module {PROBE_MODULE_ID} not loaded" in body["message"]
        assert cluster_entry(sb, "mod-display-2")["local"]["modules"] == ["mod-display-2"]
        assert sb.status()["parts"]["core"]["state"] == "broken:modules-not-loaded"
        sb.heal("core")
        poll(lambda: execute(sb)[0] == 200, DEADLINE, "execute works once the modules are loaded again")
        # No build monitor before rest-api #413 (2025-09): the router's 404, whoever asks.
        assert http_json("GET", f"{sb.api_url}{API}/build/monitor") == (404, "404 Not Found\n")
        with pytest.raises(SandboxInputError, match="build-service is not part of era C"):
            sb.break_part("build-service", "kill")

    def test_elasticsearch_kill_lists_fail_execute_works(self, sandbox_c: Sandbox) -> None:
        sb = sandbox_c
        sb.break_part("elasticsearch", "kill")
        assert sb.api("GET", "/systems")[0] == 500
        assert execute(sb)[0] == 200
        sb.heal("elasticsearch")
        poll(lambda: sb.api("GET", "/systems")[0] == 200, DEADLINE, "systems list again")

    def test_cli_talks_to_the_running_sandbox(
        self, sandbox_c: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        sb = sandbox_c
        control = cli.ControlServer(sb)
        control.start()
        try:
            state = {"control_url": control.url, "token": control.token, "era": "C", "pid": os.getpid()}
            (tmp_path / cli.STATE_FILE).write_text(json.dumps(state))
            d = str(tmp_path)
            capsys.readouterr()
            assert cli.main(["status", "--dir", d]) == 0
            out = capsys.readouterr().out
            assert "era C" in out and "search-ingest" in out and "running" in out
            assert cli.main(["break", "search-ingest", "pause", "--dir", d]) == 0
            assert "paused" in capsys.readouterr().out
            assert cli.main(["status", "--json", "--dir", d]) == 0
            parts = json.loads(capsys.readouterr().out)["parts"]
            assert parts["search-ingest"]["state"] == "broken:pause"
            assert cli.main(["heal", "search-ingest", "--dir", d]) == 0
            capsys.readouterr()
            for argv in (["break", "etcd", "kill"], ["break", "redis", "melt"], ["heal", "nope"]):
                assert cli.main([*argv, "--dir", d]) == 2
                err = capsys.readouterr().err
                assert err.count("\n") == 1 and "Traceback" not in err, err
            (tmp_path / cli.STATE_FILE).write_text(json.dumps({**state, "token": "wrong"}))
            assert cli.main(["status", "--dir", d]) == 1
            assert "token" in capsys.readouterr().err
        finally:
            control.close()
        assert cli.main(["status", "--dir", str(tmp_path / "nothing")]) == 1
        assert "no sandbox running" in capsys.readouterr().err
        with pytest.raises(SystemExit) as info:
            cli.main(["break"])
        assert info.value.code == 2
        assert capsys.readouterr().err.count("\n") == 1


# ------------------------------------------------------------------------------------ start / stop


def test_a_failed_start_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []

    def failing_seed(self: Sandbox) -> None:
        seen.extend(self.pids())
        raise SandboxError("seeding failed on purpose")

    monkeypatch.setattr(Sandbox, "_seed", failing_seed)
    sb = Sandbox("B", tmp_path / "sb")
    with pytest.raises(SandboxError, match="on purpose"):
        sb.start()
    assert len(seen) >= 3, seen  # etcd, Redis, PostgreSQL (with its own children), ES stand-in
    assert not [pid for pid in seen if pid_alive(pid)]


def test_cli_up_with_exporter_and_sigterm(tmp_path: Path) -> None:
    """`placeos-sandbox up` in the foreground: sandbox.json, status from another process, SIGTERM stops all."""
    listen = f"127.0.0.1:{free_port()}"
    argv = [sys.executable, "-m", "sandbox.cli", "up", "--era", "C", "--dir", str(tmp_path), "--with-exporter"]
    argv += ["--exporter-listen", listen]
    log = tmp_path / "up.out"
    with log.open("wb") as out:
        up = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    pids: list[int] = []
    try:
        state_file = tmp_path / cli.STATE_FILE
        poll(lambda: state_file.exists() or up.poll() is not None, 60, "sandbox.json written")
        assert up.poll() is None, log.read_text()
        assert state_file.stat().st_mode & 0o777 == 0o600
        poll(lambda: "Ctrl-C stops everything" in log.read_text(), 10, "the summary printed")
        text = log.read_text()
        for expected in ("PLACEOS_EXPORTER_API_API_KEY=apikey-exporter.", "clusters:", f"http://{listen}/metrics"):
            assert expected in text
        status = subprocess.run(
            [sys.executable, "-m", "sandbox.cli", "status", "--json", "--dir", str(tmp_path)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert status.returncode == 0, status.stderr
        parsed = json.loads(status.stdout)
        assert parsed["era"] == "C" and parsed["parts"]["exporter"]["state"] == "running"
        pids = parsed["pids"]
        code, _ = http_json("GET", f"http://{listen}/metrics", timeout=5)
        assert code == 200
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=60) == 0, log.read_text()
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
    assert "stopped: every sandbox process has exited" in log.read_text()
    assert not (tmp_path / cli.STATE_FILE).exists()
    assert pids and not [pid for pid in pids if pid_alive(pid)]
