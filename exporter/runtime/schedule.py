"""When each probe runs and how long it may take: the settings' overrides over the probe's own defaults.

The timeout must be below the interval (design §1), so a run can never overlap the next one; a
default timeout is capped at 80 % of the interval, an explicit one is kept and validated. ``load``
is how every entry point reads its settings, so a schedule that cannot work is refused at start and
at reload alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from exporter.probes import REGISTRY
from exporter.probes.base import ProbeSpec
from exporter.settings import ClusterConfig, ConfigError, Settings, load_settings


def schedule(settings: Settings, cluster: ClusterConfig, spec: ProbeSpec) -> tuple[float, float]:
    """(interval, timeout): the cluster's tuning (Settings has merged the exporter-wide one into it), then
    the probe's defaults."""
    interval = spec.interval(cluster) if spec.interval else settings.interval
    tuning = cluster.probes.get(spec.name)  # type: ignore[call-overload]
    timeout = tuning.timeout if tuning is not None else None
    if tuning is not None and tuning.interval:
        interval = tuning.interval
    if timeout is None:
        timeout = min(spec.timeout or settings.timeout, interval * 0.8)
    return interval, timeout


def validate(settings: Settings, registry: Sequence[ProbeSpec] = REGISTRY) -> None:
    """Raise ConfigError (one line) if any probe's timeout is not below its interval."""
    for cluster in settings.clusters:
        for spec in registry:
            interval, timeout = schedule(settings, cluster, spec)
            if timeout >= interval:
                raise ConfigError(
                    f"invalid setting probes.{spec.name}: timeout {timeout:g}s of cluster {cluster.name} "
                    f"must be below interval {interval:g}s"
                )


def load(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Settings from the YAML file, env and CLI overrides, with every probe's schedule checked."""
    settings = load_settings(config_file, environ, overrides)
    validate(settings)
    return settings


def longest_timeout(settings: Settings, registry: Sequence[ProbeSpec] = REGISTRY) -> float:
    return max(schedule(settings, c, spec)[1] for c in settings.clusters for spec in registry)
