"""promtool unit tests for every generated alert: fires when the condition holds, silent when healthy,
on a single failed scrape, and while flapping (alerts/tests.yml, run by ``promtool test rules``)."""

from __future__ import annotations

import re

import yaml

from exporter.generate.alerts import HEADER, Alert, alerts
from exporter.generate.config import DEFAULT, GeneratorConfig

INTERVAL = "15s"


def tests_yaml(config: GeneratorConfig = DEFAULT) -> str:
    """promtool unit tests for every alert: fires when the condition holds, silent when healthy, on a
    single failed scrape, and while flapping."""
    tests = []
    for a in alerts(config):
        labels = {"instance": "exporter:9864", "job": config.job}
        series = _with_labels(a.series, labels)
        fire_at = _minutes(a.for_) + 3  # staleness needs 2 minutes before its condition holds
        exp_labels = {**labels, **a.extra_labels, "severity": a.severity}
        annotations = a.annotations(config) | {
            "description": _expand(a.description, {**labels, **a.extra_labels}, a.failing)
        }
        cases = [
            ("fires", f"{a.failing}x{fire_at * 4 + 4}", [{"exp_labels": exp_labels, "exp_annotations": annotations}]),
            ("healthy", _healthy(a, fire_at * 4 + 4), []),
            ("single failed scrape", _single_failure(a, fire_at * 4 + 4), []),
            ("flapping", _flapping(a, fire_at * 4 + 4), []),
        ]
        for case, values, expected in cases:
            tests.append(
                {
                    "name": f"{a.name}: {case}",
                    "interval": INTERVAL,
                    "input_series": [{"series": series, "values": values}],
                    "alert_rule_test": [{"eval_time": f"{fire_at}m", "alertname": a.name, "exp_alerts": expected}],
                }
            )
    doc = {"rule_files": ["placeos-exporter.rules.yml"], "evaluation_interval": "15s", "tests": tests}
    return HEADER + yaml.safe_dump(doc, sort_keys=False, width=120)


def _expand(template: str, labels: dict[str, str], value: str) -> str:
    """What Prometheus renders for our simple templates: $labels.x and $value."""
    text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m[1], ""), template)
    return text.replace("{{ $value }}", value)


def _healthy(a: Alert, n: int) -> str:
    return a.healthy if "x" in a.healthy else f"{a.healthy}x{n}"


def _single_failure(a: Alert, n: int) -> str:
    if "x" in a.healthy:  # a counter-like healthy series: one sample out of line is not a failure mode
        return a.healthy
    half = n // 2
    return f"{a.healthy}x{half} {a.failing} {a.healthy}x{n - half}"


def _flapping(a: Alert, n: int) -> str:
    if "x" in a.healthy:
        return a.healthy
    return " ".join([a.failing, a.healthy] * (n // 2 + 1))


def _with_labels(series: str, labels: dict[str, str]) -> str:
    name, _, rest = series.partition("{")
    inner = rest.rstrip("}")
    extra = ",".join(f'{k}="{v}"' for k, v in labels.items() if f"{k}=" not in inner)
    return f"{name}{{{inner + ',' if inner else ''}{extra}}}"


def _minutes(duration: str) -> int:
    return int(duration.rstrip("m"))
