"""``python -m exporter.generate [--check] [--config FILE]``: every generated file, from the code's rows.

Alerts, inhibit rules, promtool tests, the runbook, docs/metrics.md, docs/configuration.md and the
Grafana dashboards. ``--check`` writes nothing and exits 1 naming the files that differ from what the
code generates (CI runs it); ``--config`` overrides the mixin-style settings of ``generate/config.py``
(job selector, cluster label, runbook URL) for a site's own copy.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

from exporter.generate import alerts, dashboards, docs, promtool_tests, runbook
from exporter.generate.config import DEFAULT, GeneratorConfig
from exporter.generate.grafana import Json

ROOT = Path(__file__).resolve().parent.parent.parent


def outputs(config: GeneratorConfig = DEFAULT) -> dict[str, Callable[[], str]]:
    """Repository path -> what generates it."""
    return {
        "docs/metrics.md": docs.metrics_md,
        "docs/configuration.md": docs.configuration_md,
        "docs/runbook.md": partial(runbook.runbook_md, config),
        "alerts/placeos-exporter.rules.yml": partial(alerts.rules_yaml, config),
        "alerts/alertmanager-inhibit.yml": partial(alerts.inhibit_yaml, config),
        "alerts/tests.yml": partial(promtool_tests.tests_yaml, config),
        **{f"dashboards/{name}": partial(_board, make) for name, make in dashboards.DASHBOARDS.items()},
    }


def _board(make: Callable[[], Json]) -> str:
    return dashboards.render(make())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exporter.generate", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed file differs; write nothing")
    parser.add_argument("--config", type=Path, help="YAML overriding the generator config (job, labels, URLs)")
    parser.add_argument("--out", type=Path, default=ROOT, help="where to write (default: the repository)")
    args = parser.parse_args(argv)
    try:
        config = GeneratorConfig.load(args.config)
    except (OSError, ValueError) as exc:
        print(f"exporter.generate: {exc}", file=sys.stderr)
        return 2
    stale = []
    for rel, make in outputs(config).items():
        path, text = args.out / rel, make()
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(rel)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"stale generated files: {', '.join(stale)}; run python -m exporter.generate", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
