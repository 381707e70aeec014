"""Smoke test of bench/: every bench's core function runs with its --quick options and tiny counts.

Real etcd and Redis are started once for all of them. No timing assertions (tests do not time
things): only that each bench returns its figures, with the keys it promises, as numbers.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # bench/ is not an installed package

BENCHES = ["metrics_latency", "detection_latency", "hung_cycle", "rss_soak", "scale"]


@pytest.fixture(scope="module")
def backends() -> Iterator[object]:
    common = importlib.import_module("bench.common")
    with common.Backends(("etcd", "redis")) as started:
        yield started


@pytest.mark.parametrize("name", BENCHES)
def test_quick_mode_returns_its_figures(name: str, backends: object) -> None:
    module: ModuleType = importlib.import_module(f"bench.{name}")
    opts = module.parse_args(["--quick"])
    assert opts == module.Options.quick()
    figures = module.measure(opts, backends)
    missing = module.expected_keys(opts) - set(figures)
    assert not missing, f"{name} did not return {sorted(missing)}"
    for key, figure in figures.items():
        assert isinstance(figure.value, int | float), key
        assert figure.met in (True, False, None), key
        assert figure.target or figure.met is None, f"{key}: a met flag without a target"
    # the backends are left healthy for the next bench
    assert all(server.proc.alive and not server.proc.stopped for server in backends.servers.values())  # type: ignore[attr-defined]


def test_run_all_knows_every_bench() -> None:
    run_all = importlib.import_module("bench.run_all")
    assert sorted(run_all.BENCHES) == sorted(BENCHES)
    for name in BENCHES:
        module = importlib.import_module(f"bench.{name}")
        assert callable(module.main) and callable(module.measure) and callable(module.expected_keys)
