"""Every committed generated file (alerts, runbook, docs, dashboards) matches the code's rows."""

from exporter.generate.__main__ import ROOT, outputs


def test_generated_files_are_current() -> None:
    for rel, make in outputs().items():
        committed = (ROOT / rel).read_text(encoding="utf-8")
        assert committed == make(), f"{rel} is stale: run `python -m exporter.generate`"
