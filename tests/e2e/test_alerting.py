"""Alerting end to end: the exporter watches the sandbox PlaceOS (eras A and D), a real Prometheus scrapes it
and evaluates the shipped rules, a real Alertmanager with the shipped inhibit rules receives the alerts.

For each break: the root-cause alert fires in Prometheus; Alertmanager holds it, not inhibited, while
the symptom alerts it explains are inhibited by it (``status.inhibitedBy`` is its fingerprint), so the
failure pages exactly once: exactly one active, non-inhibited critical or warning alert, and no other
one seen paging while the failure developed. After heal every alert resolves: Prometheus has none left
(firing or pending) and Alertmanager drops them (``/api/v2/alerts`` does not list resolved alerts).

The rules are a test copy of ``alerts/placeos-exporter.rules.yml`` in tmp_path, byte-identical except
every ``for:`` duration divided by 20 (1m -> 3s, 2m -> 6s, 15m -> 45s): the shipped minutes would make
the test take an hour, and scaling, rather than one flat value, keeps root causes firing before the
symptoms they explain, as in production. Prometheus scrapes and evaluates every second and resends
every second (``--rules.alert.resend-delay=1s``); Alertmanager groups and flushes within a second and
its receiver is a null one. One sandbox, exporter, Prometheus and Alertmanager for the module; each
scenario heals and waits for everything to resolve before the next. Waits are polls with deadlines.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml
from support import RunningExporter, wait_for

from exporter.generate.alerts import cause_rows
from exporter.generate.config import DEFAULT
from exporter.settings import load_settings
from sandbox.cluster import Sandbox
from sandbox.ports import free_port
from sandbox.procs import Proc

ALERTS = Path(__file__).resolve().parents[2] / "alerts"
# A healed crash loop must read healthy within the test's wait (10 min in production).
CRASH_HOLD = {"PLACEOS_EXPORTER_API_CRASH_HOLD_SECONDS": "3"}
ETCD_TTL = 3  # short leases, as in test_sandbox_diagnosis.py
FOR_SCALE = 20  # production `for:` durations divided by this in the test copy of the rules
PAGING = ("critical", "warning")  # what pages a person (info does not)
Json = dict[str, Any]

pytestmark = [
    pytest.mark.skipif(
        not all(shutil.which(t) for t in ("prometheus", "promtool", "prometheus-alertmanager", "amtool")),
        reason="needs Debian's prometheus and prometheus-alertmanager (scripts/bootstrap.sh)",
    ),
    pytest.mark.asyncio(loop_scope="module"),  # the exporter Prometheus scrapes lives for the module
]

CAUSE_ALERTS = {c.id: (c.alert.name, c.alert.severity) for c in cause_rows() if c.alert}
JOB = DEFAULT.job


@dataclass(frozen=True)
class Scenario:
    part: str
    mode: str
    cause: str  # the root cause (a cause row carrying an alert) whose alert must page
    inhibited: frozenset[str]  # symptom alerts this break raises, which must show inhibited by the cause

    @property
    def alert(self) -> str:
        return CAUSE_ALERTS[self.cause][0]

    @property
    def id(self) -> str:
        return f"{self.part}-{self.mode}"


def scenario(part: str, mode: str, cause: str, *inhibited: str) -> Scenario:
    return Scenario(part, mode, cause, frozenset(f"PlaceOS{name}" for name in inhibited))


USER_PATH = ("LoginFailing", "SearchFailing", "ModuleFunctionsFailing", "ExecuteFailing", "WebSocketFailing",
             "StatusUpdatesFailing")  # fmt: skip
SCENARIOS = {
    "A": [
        scenario("redis", "kill", "redis", "ModuleFunctionsFailing", "ExecuteFailing", "WebSocketFailing"),
        scenario("rethinkdb", "kill", "database", *USER_PATH),
        scenario("elasticsearch", "red", "elasticsearch", "ElasticsearchRed", "SearchFailing"),
        scenario("rest-api", "unreachable", "api", *USER_PATH),
        scenario("etcd", "kill", "etcd", "ExecuteFailing", "WebSocketFailing"),
        scenario("driver", "crash-loop", "driver"),  # breaks no user path (PlaceOSDriverDown is info)
    ],
    # Era D (placeos-2026): search in PostgreSQL, and the failures the page never named.
    "D": [
        scenario("postgres", "kill", "database", *USER_PATH),
        scenario("redis", "pubsub-drop", "redis_pubsub", "StatusUpdatesFailing"),
        scenario("build-service", "kill", "build_service"),
    ],
}
CASES = [(era, case) for era, cases in SCENARIOS.items() for case in cases]


# ------------------------------------------------------------------------------------- the rules copy


def fast_rules(text: str) -> tuple[str, int]:
    """The rules file with every ``for:`` divided by FOR_SCALE (whole seconds, at least 1s); how many."""

    def scaled(m: re.Match[str]) -> str:
        amount, unit = int(m[2]), m[3]
        seconds = amount * {"s": 1, "m": 60, "h": 3600}[unit]
        return f"{m[1]}{max(1, seconds // FOR_SCALE)}s"

    return re.subn(r"^(\s+(?:keep_firing_)?for: )(\d+)([smh])$", scaled, text, flags=re.MULTILINE)


def without_for(text: str) -> list[str]:
    return [line for line in text.splitlines() if not re.match(r"\s+(?:keep_firing_)?for: ", line)]


def write_rules(tmp: Path) -> Path:
    shipped = (ALERTS / "placeos-exporter.rules.yml").read_text(encoding="utf-8")
    text, count = fast_rules(shipped)
    rules = yaml.safe_load(shipped)["groups"][0]["rules"]
    kept = sum(1 for r in rules if "keep_firing_for" in r)
    assert count == len(rules) + kept, "every `for:` and `keep_firing_for:` was replaced"
    assert without_for(text) == without_for(shipped), "only the `for:` lines differ"
    path = tmp / "placeos-exporter.rules.yml"
    path.write_text(text, encoding="utf-8")
    check = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    return path


# ------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def sandbox(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    sb = Sandbox(request.param, tmp_path_factory.mktemp(f"sandbox-{request.param}"), etcd_ttl=ETCD_TTL)
    sb.start()
    try:
        yield sb
    finally:
        sb.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def exporter(sandbox: Sandbox) -> AsyncIterator[RunningExporter]:
    fast: dict[str, Any] = {"interval": 2.0, "timeout": 1.5}
    settings = load_settings(
        environ=sandbox.exporter_env() | CRASH_HOLD,
        overrides={"listen_address": "127.0.0.1:0", "interval": 1.0, "timeout": 0.8,
                   "probes": {"execute": fast, "websocket": fast, "drivers": fast, "login": fast,
                              "status_delivery": {"interval": 4.0, "timeout": 3.0}}},
    )  # fmt: skip
    async with RunningExporter(settings) as exp:
        yield exp


def ready(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as resp:
        return bool(resp.status == 200)


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Alertmanager: a null receiver and the shipped inhibit rules, flushing within a second."""
    tmp = tmp_path_factory.mktemp("alertmanager")
    config = {
        "global": {"resolve_timeout": "5s"},
        "route": {"receiver": "null", "group_by": ["alertname", "instance"], "group_wait": "1s",
                  "group_interval": "1s", "repeat_interval": "1h"},
        "receivers": [{"name": "null"}],
        **yaml.safe_load((ALERTS / "alertmanager-inhibit.yml").read_text(encoding="utf-8")),
    }  # fmt: skip
    (tmp / "am.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    check = subprocess.run(["amtool", "check-config", str(tmp / "am.yml")], capture_output=True, text=True,
                           check=False)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    port = free_port()
    proc = Proc.start(
        ["prometheus-alertmanager", f"--config.file={tmp / 'am.yml'}", f"--storage.path={tmp / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=warn"],
        log_path=tmp / "alertmanager.log", name="alertmanager",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        proc.wait_ready(lambda: ready(url), 20)
        yield url
    finally:
        proc.terminate()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory, exporter: RunningExporter, alertmanager: str) -> Iterator[str]:
    """A real Prometheus scraping the exporter every second, evaluating the fast rules copy."""
    tmp = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
        "rule_files": [str(write_rules(tmp))],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager.removeprefix("http://")]}]}]},
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [f"127.0.0.1:{exporter.port}"]}]}],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    proc = Proc.start(
        ["prometheus", f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--rules.alert.resend-delay=1s", "--log.level=warn"],
        log_path=tmp / "prometheus.log", name="prometheus",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        proc.wait_ready(lambda: ready(url), 20)
        yield url
    finally:
        proc.terminate()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


# ------------------------------------------------------------------------------------- views


@dataclass(frozen=True)
class View:
    """What Prometheus and Alertmanager show at one moment."""

    prometheus: list[Json]  # /api/v1/alerts: labels, state (pending | firing)
    alertmanager: list[Json]  # /api/v2/alerts: labels, fingerprint, status {state, inhibitedBy, silencedBy}

    def firing(self) -> set[str]:
        return {a["labels"]["alertname"] for a in self.prometheus if a["state"] == "firing"}

    def held(self, name: str) -> list[Json]:
        return [a for a in self.alertmanager if a["labels"]["alertname"] == name]

    def pages(self) -> set[str]:
        """Active, not inhibited (nor silenced) alerts that page a person."""
        return {
            a["labels"]["alertname"]
            for a in self.alertmanager
            if a["status"]["state"] == "active" and a["labels"].get("severity") in PAGING
        }

    def summary(self) -> str:
        am = [f"{a['labels']['alertname']}[{a['labels'].get('severity')}] {a['status']['state']}"
              f"{' by ' + ','.join(a['status']['inhibitedBy']) if a['status']['inhibitedBy'] else ''}"
              f" fp={a['fingerprint']}" for a in self.alertmanager]  # fmt: skip
        prom = [f"{a['labels']['alertname']} {a['state']}" for a in self.prometheus]
        return f"Prometheus: {sorted(prom)}; Alertmanager: {sorted(am)}"


async def view(http: aiohttp.ClientSession, prometheus: str, alertmanager: str) -> View:
    async with http.get(f"{prometheus}/api/v1/alerts") as resp:
        body = await resp.json()
        assert body["status"] == "success", body
    async with http.get(f"{alertmanager}/api/v2/alerts") as resp:
        held: list[Json] = await resp.json()
    return View(body["data"]["alerts"], held)


async def wait_quiet(http: aiohttp.ClientSession, prometheus: str, alertmanager: str, timeout: float) -> None:
    """Until Prometheus has no alert (firing or pending) and Alertmanager holds none."""
    last: list[View] = []

    async def quiet() -> bool:
        last[:] = [await view(http, prometheus, alertmanager)]
        return not last[0].prometheus and not last[0].alertmanager

    try:
        await wait_for(quiet, timeout, "no alert in Prometheus or Alertmanager", interval=0.25)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{last[0].summary() if last else ''}") from None


# ------------------------------------------------------------------------------------- the test


@pytest.mark.parametrize(("sandbox", "case"), CASES, indirect=["sandbox"], ids=[f"{e}-{c.id}" for e, c in CASES])
async def test_break_pages_once_then_resolves(
    case: Scenario,
    sandbox: Sandbox,
    exporter: RunningExporter,
    prometheus: str,
    alertmanager: str,
    http: aiohttp.ClientSession,
) -> None:
    severity = CAUSE_ALERTS[case.cause][1]
    assert severity in PAGING
    # A clean start: the previous scenario (or start-up) has left nothing behind.
    await wait_quiet(http, prometheus, alertmanager, timeout=60)

    # Blocking sandbox calls run in a thread: the exporter Prometheus scrapes shares this event loop.
    await asyncio.to_thread(sandbox.break_part, case.part, case.mode)
    try:
        seen: list[View] = []
        paged: set[str] = set()  # every alert seen paging while the failure develops

        async def paged_once() -> bool:
            v = await view(http, prometheus, alertmanager)
            seen[:] = [v]
            paged.update(v.pages())
            sources = v.held(case.alert)
            if case.alert not in v.firing() or len(sources) != 1 or sources[0]["status"]["state"] != "active":
                return False
            cause_fp = sources[0]["fingerprint"]
            symptoms_inhibited = all(
                [a["status"]["inhibitedBy"] == [cause_fp] for name in case.inhibited for a in v.held(name)]
            )
            symptoms_there = all(v.held(name) for name in case.inhibited)
            return symptoms_there and symptoms_inhibited and v.pages() == {case.alert}

        try:
            await wait_for(paged_once, 60, f"{case.alert} paging alone", interval=0.25)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{seen[0].summary() if seen else ''}") from None
        v = seen[0]
        (source,) = v.held(case.alert)
        assert source["labels"]["severity"] == severity
        assert source["labels"]["cause"] == case.cause and source["labels"]["job"] == JOB
        assert source["status"]["inhibitedBy"] == [] and source["status"]["silencedBy"] == []
        for name in case.inhibited:
            for symptom in v.held(name):
                assert symptom["status"]["state"] == "suppressed", v.summary()
                assert symptom["status"]["inhibitedBy"] == [source["fingerprint"]], v.summary()
        assert v.pages() == {case.alert}, f"the failure must page exactly once: {v.summary()}"
        assert paged == {case.alert}, f"while the failure developed, other alerts paged too: {sorted(paged)}"
    finally:
        await asyncio.to_thread(sandbox.heal, case.part)

    # Resolved: Prometheus shows no alert, Alertmanager drops the resolved ones (the source included).
    await wait_quiet(http, prometheus, alertmanager, timeout=60)
