"""The generator's config, in the style of the kubernetes-mixin's ``_config``: what a user may override.

``python -m exporter.generate --config my.yaml`` reads a YAML mapping with any of these keys; the
committed files under alerts/, docs/ and dashboards/ are generated with the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

from exporter.model.failure_model import RUNBOOK_URL


@dataclass(frozen=True)
class GeneratorConfig:
    job: str = "placeos-exporter"  # the scrape job the exporter's own alerts select
    group_labels: tuple[str, ...] = ("instance", "cluster")  # what identifies one PlaceOS cluster
    runbook_url: str = RUNBOOK_URL
    # Root-cause alerts keep firing this long: > the longest probe interval + timeout of the defaults
    # (15 s + 12 s), so the symptoms they explain (a probe cycle later) stay inhibited until they clear.
    keep_firing_for: str = "1m"

    @classmethod
    def load(cls, path: Path | None) -> GeneratorConfig:
        """Defaults, overridden by the keys of a YAML file (unknown keys are an error)."""
        if path is None:
            return cls()
        data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        if "group_labels" in data:
            data["group_labels"] = tuple(data["group_labels"])
        return replace(cls(), **data)


DEFAULT = GeneratorConfig()
