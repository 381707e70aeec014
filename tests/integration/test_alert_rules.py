"""The shipped alert rules and inhibit rules, proved with the real tools: promtool checks and unit
tests every alert, and a real Alertmanager silences each symptom while its root cause fires."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.generate.alerts import cause_rows, symptom_rows
from exporter.model.triage import explaining_causes
from exporter.model.vocabulary import ProbeName
from sandbox.ports import free_port
from sandbox.procs import Proc

CAUSE_ALERTS = {c.id: (c.alert.name, c.alert.severity) for c in cause_rows() if c.alert}
SYMPTOM_ALERTS = {s.probe: (s.alert.name, s.alert.summary) for s in symptom_rows() if s.alert}
ALERTS = Path(__file__).resolve().parents[2] / "alerts"
needs_tools = pytest.mark.skipif(
    shutil.which("promtool") is None or shutil.which("prometheus-alertmanager") is None,
    reason="promtool and Alertmanager come with Debian's prometheus and prometheus-alertmanager (scripts/bootstrap.sh)",
)


@needs_tools
def test_promtool_checks_and_unit_tests_every_alert() -> None:
    check = subprocess.run(["promtool", "check", "rules", "placeos-exporter.rules.yml"], cwd=ALERTS,
                           capture_output=True, text=True, check=False)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    run = subprocess.run(["promtool", "test", "rules", "tests.yml"], cwd=ALERTS, capture_output=True, text=True,
                         check=False, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    names = {r["alert"] for g in yaml.safe_load((ALERTS / "placeos-exporter.rules.yml").read_text())["groups"]
             for r in g["rules"]}  # fmt: skip
    tested = yaml.safe_load((ALERTS / "tests.yml").read_text())["tests"]
    for name in names:
        cases = {t["name"].split(": ", 1)[1] for t in tested if t["name"].startswith(f"{name}: ")}
        assert cases == {"fires", "healthy", "single failed scrape", "flapping"}, name


def test_every_rule_has_the_required_annotations() -> None:
    rules = yaml.safe_load((ALERTS / "placeos-exporter.rules.yml").read_text())["groups"][0]["rules"]
    for rule in rules:
        assert rule["alert"].startswith("PlaceOS")
        assert rule["labels"]["severity"] in ("critical", "warning", "info")
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"])
    runbook = (ALERTS.parent / "docs" / "runbook.md").read_text()
    for rule in rules:
        anchor = rule["annotations"]["runbook_url"].split("#", 1)[1]
        assert f'<a id="{anchor}"></a>' in runbook, anchor


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    config = {
        "route": {"receiver": "null", "group_by": ["alertname"]},
        "receivers": [{"name": "null"}],
        **yaml.safe_load((ALERTS / "alertmanager-inhibit.yml").read_text()),
    }
    (tmp_path / "am.yml").write_text(yaml.safe_dump(config))
    check = subprocess.run(["amtool", "check-config", str(tmp_path / "am.yml")], capture_output=True, text=True,
                           check=False)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    port = free_port()
    proc = Proc.start(
        ["prometheus-alertmanager", f"--config.file={tmp_path / 'am.yml'}", f"--storage.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        log_path=tmp_path / "am.log", name="alertmanager",
    )  # fmt: skip
    try:
        proc.wait_ready(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1), 20)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()


def post_alerts(url: str, alerts: list[dict[str, Any]]) -> None:
    req = urllib.request.Request(f"{url}/api/v2/alerts", data=json.dumps(alerts).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200


def alert_states(url: str) -> dict[tuple[str, str], list[str]]:
    with urllib.request.urlopen(f"{url}/api/v2/alerts", timeout=5) as resp:
        body = json.load(resp)
    return {(a["labels"]["alertname"], a["labels"]["instance"]): a["status"]["inhibitedBy"] for a in body}


@needs_tools
def test_root_cause_inhibits_exactly_the_symptoms_it_explains(alertmanager: str) -> None:
    """For each root cause on its own cluster (instance): the symptoms it explains are inhibited, the
    others still page, and a symptom of another cluster is never silenced by it."""
    alerts = []
    for cause, (source, _) in CAUSE_ALERTS.items():
        instance = f"cluster-{cause}:9864"
        alerts.append({"labels": {"alertname": source, "instance": instance, "severity": "critical"}})
        for _probe, (symptom, _) in SYMPTOM_ALERTS.items():
            alerts.append({"labels": {"alertname": symptom, "instance": instance, "severity": "warning"}})
    alerts.append({"labels": {"alertname": "PlaceOSLoginFailing", "instance": "healthy:9864"}})
    post_alerts(alertmanager, alerts)
    deadline = time.monotonic() + 15
    expected = {
        (symptom, f"cluster-{cause}:9864"): cause in explaining_causes(ProbeName(probe))
        for cause in CAUSE_ALERTS
        for probe, (symptom, _) in SYMPTOM_ALERTS.items()
    }
    while True:
        states = alert_states(alertmanager)
        got = {key: bool(states.get(key)) for key in expected}
        if got == expected or time.monotonic() > deadline:
            break
        time.sleep(0.2)  # polling Alertmanager's inhibition state, bounded by the deadline above
    assert got == expected
    assert not states[("PlaceOSLoginFailing", "healthy:9864")]  # another cluster: never inhibited
    # The model's own claims, checked on the real Alertmanager: Redis down explains execute, not login.
    assert got[("PlaceOSExecuteFailing", "cluster-redis:9864")]
    assert not got[("PlaceOSLoginFailing", "cluster-redis:9864")]
    assert got[("PlaceOSLoginFailing", "cluster-database:9864")]
    assert got[("PlaceOSSearchFailing", "cluster-elasticsearch:9864")]


@pytest.mark.skipif(shutil.which("amtool") is None, reason="amtool comes with Debian's prometheus-alertmanager")
def test_the_support_agent_receiver_example_is_a_valid_alertmanager_config(tmp_path: Path) -> None:
    """docs/deploy.md (e): the route that sends root causes (with their placeos_playbook) to PlaceOS's agent."""
    text = (ALERTS.parent / "docs" / "deploy.md").read_text()
    block = text.split("# alertmanager.yml (excerpt)\n", 1)[1].split("```", 1)[0]
    config = yaml.safe_load(block)
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(config))
    check = subprocess.run(["amtool", "check-config", str(tmp_path / "alertmanager.yml")], capture_output=True,
                           text=True, check=False, timeout=30)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    rules = yaml.safe_load((ALERTS / "placeos-exporter.rules.yml").read_text())["groups"][0]["rules"]
    causes = [r for r in rules if "cause" in r["expr"] and "placeos_root_cause" in r["expr"]]
    assert causes and all(r["annotations"].get("placeos_playbook") for r in causes)
