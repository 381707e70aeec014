"""Run every bench with short defaults and print one table: figure, value, target, met, command.

    .venv/bin/python -m bench                 # short defaults (about 6 minutes)
    .venv/bin/python -m bench --quick         # seconds: every bench's --quick
    .venv/bin/python -m bench --only scale,hung_cycle
    .venv/bin/python -m bench --all-figures   # the summary lists informational figures too

Each bench prints its own full table as it finishes; the summary at the end keeps the figures with a
target and the main informational ones. Every bench starts and stops its own backends and exporter.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from bench import detection_latency, hung_cycle, metrics_latency, rss_soak, scale
from bench.common import Figures, interrupts_as_keyboard_interrupt, machine_load, print_figures, print_table

# name -> (module, argv of the short defaults)
BENCHES: dict[str, tuple[ModuleType, list[str]]] = {
    "metrics_latency": (metrics_latency, []),
    "detection_latency": (detection_latency, []),
    "hung_cycle": (hung_cycle, []),
    "rss_soak": (rss_soak, ["--minutes", "2", "--warmup", "20", "--fault-every", "10"]),
    "scale": (scale, ["--duration", "30"]),
}


def run(names: Sequence[str], quick: bool, all_figures: bool) -> int:
    rows: list[list[str]] = []
    missed = 0
    for name in names:
        module, argv = BENCHES[name]
        argv = ["--quick"] if quick else argv
        command = shlex.join([".venv/bin/python", "-m", f"bench.{name}", *argv])
        print(f"\n## {name}: {machine_load()}", flush=True)
        parse: Callable[[Sequence[str]], Any] = module.parse_args
        measure: Callable[[Any], Figures] = module.measure
        figures = measure(parse(argv))
        print_figures(name, figures, command)
        for figure_name, f in figures.items():
            if f.met is False:
                missed += 1
            if all_figures or f.target or f.key:
                met = "" if f.met is None else ("yes" if f.met else "NO")
                rows.append([f"{name}.{figure_name}", f.shown(), f.target, met, command])
    print(f"\n== summary ({machine_load()})")
    print_table(("figure", "value", "target", "met", "command"), rows)
    print(f"\n{missed} figure(s) missed their target")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="every bench's --quick (seconds, for a smoke run)")
    p.add_argument("--only", help=f"comma list of {', '.join(BENCHES)}")
    p.add_argument("--all-figures", action="store_true", help="list informational figures in the summary too")
    a = p.parse_args(argv)
    names = a.only.split(",") if a.only else list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        p.error(f"unknown bench(es): {', '.join(unknown)}")
    try:
        with interrupts_as_keyboard_interrupt():
            return run(names, a.quick, a.all_figures)
    except KeyboardInterrupt:
        print("interrupted: every process the benches started has been stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
