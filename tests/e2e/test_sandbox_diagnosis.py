"""End to end: the exporter watches the sandbox PlaceOS; each break produces the documented symptom,
the user-path probes classify it with the right reason, and the diagnosis names exactly the right
root cause on /metrics and /diagnose; after heal everything returns to healthy.

Scenarios are data: (era, part, mode) -> the probe reasons that must show and the causes expected.
One sandbox per era (module scope) keeps the suite fast; each scenario heals before the next.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import RunningExporter, wait_for

from exporter.settings import load_settings
from sandbox.cluster import Sandbox
from sandbox.simulator import seed

# A healed crash loop must read healthy within the test's wait (10 min in production).
CRASH_HOLD = {"PLACEOS_EXPORTER_API_CRASH_HOLD_SECONDS": "3"}
ETCD_TTL = 3  # short leases so lease-expiry symptoms show quickly (hound-dog's default is 15 s)

# (part, mode, {probe: reason that must show}, causes). Reasons are the ones the real bodies produce.
Scenario = tuple[str, str, dict[str, str], set[str]]
SCENARIOS: dict[str, list[Scenario]] = {
    "A": [
        ("etcd", "kill", {"etcd": "connection_refused", "login": "ok", "execute": "etcd_unreachable"}, {"etcd"}),
        ("rethinkdb", "kill", {"rethinkdb": "connection_refused", "login": "auth_failed"}, {"database"}),
        ("redis", "kill", {"redis": "connection_refused", "module_functions": "http_5xx", "login": "ok"}, {"redis"}),
        ("elasticsearch", "red", {"elasticsearch": "unhealthy", "systems_list": "http_5xx", "execute": "ok"},
         {"elasticsearch"}),
        ("core", "kill", {"core_discovery": "no_core_instances", "execute": "no_core_instances"}, {"core"}),
        ("driver", "crash-loop", {"drivers": "driver_error"}, {"driver"}),
        ("driver", "compile-fail", {"drivers": "driver_error", "execute": "driver_error"}, {"driver"}),
        ("rest-api", "unreachable", {"api_health": "connection_refused", "login": "connection_refused"}, {"api"}),
        ("rest-api", "etcd-unreachable", {"etcd": "ok", "execute": "etcd_unreachable"}, {"api_etcd"}),
        ("rethinkdb", "wrong-credentials", {"rethinkdb": "auth_failed", "login": "auth_failed"}, {"database"}),
    ],
    "C": [
        ("core", "kill", {"core_discovery": "core_unreachable"}, {"core"}),
        ("postgres", "kill", {"postgres": "connection_refused", "login": "auth_failed"}, {"database"}),
        ("redis", "stop", {"redis": "timeout"}, {"redis"}),
        ("redis", "pubsub-drop", {"redis": "ok", "status_delivery": "timeout", "execute": "ok"}, {"redis_pubsub"}),
        ("core", "modules-not-loaded", {"drivers": "not_loaded", "execute": "driver_error"}, {"modules_not_loaded"}),
    ],
    # Era D (placeos-2026 §1-2): search in PostgreSQL, no Elasticsearch; today's failures.
    "D": [
        ("postgres", "kill", {"postgres": "connection_refused", "login": "auth_failed", "api_health": "unhealthy"},
         {"database"}),
        ("redis", "kill", {"redis": "connection_refused", "module_functions": "http_5xx", "login": "ok"}, {"redis"}),
        ("core", "kill", {"core_discovery": "core_unreachable"}, {"core"}),
        ("driver", "crash-loop", {"drivers": "driver_error"}, {"driver"}),
        ("rest-api", "unreachable", {"api_health": "connection_refused", "login": "connection_refused"}, {"api"}),
        ("redis", "pubsub-drop", {"redis": "ok", "status_delivery": "timeout", "execute": "ok"}, {"redis_pubsub"}),
        # Era-D core loads a module on demand (core 37aab5c): only the cluster routes show the others missing.
        ("core", "modules-not-loaded", {"drivers": "not_loaded"}, {"modules_not_loaded"}),
        # core retries the build service before rest-api answers: a 5xx or a timeout, either way the cause.
        ("build-service", "kill", {"drivers": "ok", "execute": "ok"}, {"build_service"}),
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def sandbox(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    sb = Sandbox(request.param, tmp_path_factory.mktemp(f"sandbox-{request.param}"), etcd_ttl=ETCD_TTL)
    sb.start()
    try:
        yield sb
    finally:
        sb.stop()


@pytest.fixture
async def exporter(sandbox: Sandbox) -> AsyncIterator[RunningExporter]:
    fast: dict[str, Any] = {"interval": 2.0, "timeout": 1.5}
    settings = load_settings(
        environ=sandbox.exporter_env() | CRASH_HOLD,
        overrides={"listen_address": "127.0.0.1:0", "interval": 1.0, "timeout": 0.8,
                   "probes": {"execute": fast, "websocket": fast, "drivers": fast, "login": fast,
                              # a status that changes every second must get the time to change
                              "status_delivery": {"interval": 4.0, "timeout": 3.0}, "build_service": fast}},
    )  # fmt: skip
    async with RunningExporter(settings) as exp:
        await wait_healthy(exp)
        yield exp


async def causes(exp: RunningExporter) -> set[str]:
    samples = await exp.samples()
    return {dict(labels)["cause"] for (name, labels), v in samples.items() if name == "placeos_root_cause" and v == 1}


async def wait_healthy(exp: RunningExporter, timeout: float = 40) -> None:
    async def healthy() -> bool:
        return await causes(exp) == {"none"}

    await wait_for(healthy, timeout, "the diagnosis to be healthy")


async def diagnose(exp: RunningExporter) -> dict[str, Any]:
    status, text, _ = await exp.get("/diagnose")
    assert status == 200
    result: dict[str, Any] = json.loads(text)
    return result


@pytest.mark.parametrize("sandbox", ["A"], indirect=True)
async def test_module_disconnect_is_counted_not_an_outage(sandbox: Sandbox, exporter: RunningExporter) -> None:
    sandbox.break_part("module", "disconnect")
    try:

        async def counted() -> bool:
            return await exporter.value("placeos_modules", state="disconnected") == 1

        await wait_for(counted, 20, "one disconnected module")
        assert await causes(exporter) == {"none"}
    finally:
        sandbox.heal("module")


@pytest.mark.parametrize("sandbox", ["A"], indirect=True)
async def test_status_page_shows_the_verdict(sandbox: Sandbox, exporter: RunningExporter, tmp_path: Path) -> None:
    status, html, _ = await exporter.get("/")
    assert status == 200 and "Healthy" in html
    sandbox.break_part("redis", "kill")
    try:

        async def shown() -> bool:
            _, page, _ = await exporter.get("/")
            return "Redis failure" in page and "Module status changes stop updating" in page

        await wait_for(shown, 30, "the status page to name Redis and its impacts")
        _, page, _ = await exporter.get("/")
        # What to do, inline: the runbook's steps for the cause, its alert, section and PlaceOS playbook.
        assert "<b>Confirm:</b>" in page and "redis-cli -u $REDIS_URL ping" in page and "<b>Recover:</b>" in page
        assert "docs/runbook.md#redis" in page and "PlaceOSRedisDown" in page and "platform-pods-unhealthy" in page
        assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", page)  # absolute times beside "5s ago"
    finally:
        sandbox.heal("redis")
    await wait_healthy(exporter, timeout=60)


@pytest.mark.parametrize("sandbox", ["A"], indirect=True)
async def test_oauth_login_and_token_reuse(sandbox: Sandbox) -> None:
    """The password grant at /auth/oauth/token instead of an API key: login makes a fresh grant each
    run, the other probes reuse the token; the database down fails the grant (Rails' 500)."""
    env = {k: v for k, v in sandbox.exporter_env().items() if k != "PLACEOS_EXPORTER_API_API_KEY"}
    env |= {"PLACE_EMAIL": seed.SUPPORT_EMAIL, "PLACE_PASSWORD": sandbox.user_password,
            "PLACEOS_EXPORTER_API_CLIENT_ID": seed.OAUTH_CLIENT_ID}  # fmt: skip
    fast: dict[str, Any] = {"interval": 2.0, "timeout": 1.5}
    # a status that changes every second must get the time to change (as in the exporter fixture)
    probes = {"execute": fast, "websocket": fast, "login": fast, "status_delivery": {"interval": 4.0, "timeout": 3.0}}
    overrides = {"listen_address": "127.0.0.1:0", "interval": 1.0, "timeout": 0.8, "probes": probes}
    settings = load_settings(environ=env, overrides=overrides)
    async with RunningExporter(settings) as exp:
        await wait_healthy(exp)
        for probe in ("login", "systems_list", "execute", "websocket"):
            assert await exp.reason(probe) == "ok"
        sandbox.break_part("rethinkdb", "kill")
        try:

            async def diagnosed() -> bool:
                return await causes(exp) == {"database"} and await exp.reason("login") == "http_5xx"

            await wait_for(diagnosed, 30, "the failed grant to be blamed on the database")
        finally:
            sandbox.heal("rethinkdb")
        await wait_healthy(exp, timeout=60)


CASES = [(era, i) for era in sorted(SCENARIOS) for i in range(len(SCENARIOS[era]))]


@pytest.mark.parametrize(
    ("sandbox", "index"), CASES, indirect=["sandbox"],
    ids=[f"{era}-{SCENARIOS[era][i][0]}-{SCENARIOS[era][i][1]}" for era, i in CASES],
)  # fmt: skip
async def test_break_diagnose_heal(sandbox: Sandbox, exporter: RunningExporter, index: int) -> None:
    part, mode, reasons, expected = SCENARIOS[sandbox.era][index]
    sandbox.break_part(part, mode)
    try:

        async def diagnosed() -> bool:
            if await causes(exp_) != expected:
                return False
            return all([await exp_.reason(p) == r for p, r in reasons.items()])

        exp_ = exporter
        await wait_for(diagnosed, 45, f"{part} {mode}: causes {expected} and reasons {reasons}")
        report = await diagnose(exporter)
        assert {c["cause"] for c in report["root_causes"]} == expected, json.dumps(report["root_causes"])
        assert not report["healthy"]
        assert (report["era"], report["era_source"]) == (sandbox.era, "detected")  # D from what the API shows
    finally:
        sandbox.heal(part)
    await wait_healthy(exporter, timeout=60)
