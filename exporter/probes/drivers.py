"""drivers probe: the page's "driver compilation issue / crash", from the cluster routes (internals §11).

Needs a credential of an admin user with the ``cluster`` (or ``public``) scope.

- ``GET /api/engine/v2/cluster?include_status=true``: per core, ``unavailable_drivers`` (compile or
  install errors). That list is an event log that outlives the fix (§11.1), so each name is confirmed
  against the driver's current ``compilation_output`` (``GET /drivers?q=`` then ``/drivers/:id``);
  a driver that compiled since is not reported.
- ``GET /api/engine/v2/cluster/<core>?include_status=true``: per driver process, ``running``,
  ``module_instances`` and ``launch_count``. Down with modules assigned is a failure; a launch count
  that rose since the last run is a crash (the most robust crash-loop signal, §11.2 "Implications").

The ``driver`` label is the driver's source file as core names binaries, without commit and arch
(``driver_label``), the same while running, down, crashing or failing to compile (then from the
driver's ``file_name``); the metrics layer caps it at 100 values with an overflow bucket.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from exporter.model.metric import MetricSpec
from exporter.model.vocabulary import ProbeName, Reason
from exporter.probes.base import MetricRow, Outcome, ProbeContext, ProbeFailure, ProbeSpec, Samples
from exporter.probes.clients.rest_api import ENGINE, api_get, can_log_in, fail_for

MAX_COMPILE_CONFIRMATIONS = 20  # lookups per run at most; more failures are reported unconfirmed
# A crash is seen by one run only (the launch count rose since the last one): it stays a failure for
# api.crash_hold_seconds (10 min by default), so one crash is a cause for minutes, not for a single probe
# interval, and a crash loop never reads as fixed between two relaunches.
DRIVER_STATES = ("running", "down", "failed_compile")
DRIVER_LABEL_CAP = 100  # per-driver series at most; the rest fold into driver="other"
DRIVER_OVERFLOW = "other"


@dataclass(frozen=True)
class DriverFacts:
    running: int
    down: int
    failed_compile: int
    up: dict[str, int] = field(default_factory=dict)  # driver -> 1/0
    launches: dict[str, int] = field(default_factory=dict)  # driver -> launch_count summed over cores


async def cluster(ctx: ProbeContext, include_status: bool) -> list[dict[str, Any]]:
    """The cluster route's cores (internals §11.1); with status, a core that does not answer is dropped."""
    flag = "true" if include_status else "false"
    status, body, _ = await api_get(ctx, f"{ENGINE}/cluster?include_status={flag}")
    if status != 200 or not isinstance(body, list):
        raise fail_for(status, body, "cluster")
    return [c for c in body if isinstance(c, dict)]


def driver_label(binary_key: str) -> str:
    """The ``driver`` label: the driver's source file as core names its binaries, without the commit and
    the arch (C) or driver id (A/B) that follow it, so one driver keeps one label across recompiles and in
    every state (core driver_store.cr ``executable_name`` @3351920: file name minus ``.cr``, ``/`` and ``.``
    as ``_``, lower-case; internals §11.1)."""
    return binary_key.rsplit("_", 2)[0] if binary_key.count("_") >= 2 else binary_key


def file_label(file_name: str) -> str:
    """The same label from a driver's ``file_name`` (for a driver that failed to compile: no binary)."""
    return re.sub(r"[/.]", "_", file_name.removesuffix(".cr")).lower()


async def still_failing(ctx: ProbeContext, name: str) -> tuple[bool, str]:
    """(the driver called ``name`` still has a compilation_output, its label). The failure is current
    only then; the label comes from its file name when the API gives it."""
    status, found, _ = await api_get(ctx, f"{ENGINE}/drivers?q={quote(name)}&limit=20")
    if status != 200 or not isinstance(found, list):
        return True, name  # cannot confirm: keep reporting what core reports
    for driver in found:
        if isinstance(driver, dict) and driver.get("name") == name and driver.get("id"):
            status, full, _ = await api_get(ctx, f"{ENGINE}/drivers/{quote(str(driver['id']))}")
            if status == 200 and isinstance(full, dict):
                file_name = full.get("file_name")
                label = file_label(file_name) if isinstance(file_name, str) and file_name else name
                return full.get("compilation_output") is not None, label
    return True, name


async def modules_loaded_nowhere(ctx: ProbeContext, loaded: set[str]) -> list[str]:
    """Modules of the probed system that no core reports loaded (``/cluster/:core_id`` ``local.modules``,
    internals §11.1): after a core restart some modules may be loaded nowhere (placeos-2026 §2, the
    support agent's modules-not-loaded playbook), and executes to them fail."""
    system_id = ctx.cluster.api.system_id
    if not system_id:
        return []
    status, system, _ = await api_get(ctx, f"{ENGINE}/systems/{quote(system_id)}")
    modules = system.get("modules") if status == 200 and isinstance(system, dict) else None
    if not isinstance(modules, list):
        return []  # the systems route's own trouble is the other probes' to report
    return sorted(str(m) for m in modules if isinstance(m, str) and m not in loaded)[:5]


async def run(ctx: ProbeContext) -> Outcome:
    registered = await cluster(ctx, include_status=False)
    if not registered:
        raise ProbeFailure(Reason.NO_CORE_INSTANCES, "the cluster route lists no registered core")
    cores = await cluster(ctx, include_status=True)
    silent = {str(c.get("id")) for c in registered} - {str(c.get("id")) for c in cores}
    previous: dict[str, int] = ctx.state.get("launches", {})
    by_key: dict[str, int] = {}
    launches: dict[str, int] = {}
    up: dict[str, int] = {}
    down: list[str] = []
    crashed: list[str] = []
    unavailable: set[str] = set()
    loaded: set[str] = set()  # module ids some core reports loaded
    for core in cores:
        for entry in (core.get("status") or {}).get("unavailable_drivers") or []:
            if isinstance(entry, dict) and entry.get("name"):
                unavailable.add(str(entry["name"]))
        core_id = quote(str(core.get("id", "")))
        status, drivers, _ = await api_get(ctx, f"{ENGINE}/cluster/{core_id}?include_status=true")
        if status != 200 or not isinstance(drivers, list):
            silent.add(str(core.get("id")))
            continue
        for driver in drivers:
            key = str(driver.get("driver", "")) if isinstance(driver, dict) else ""
            local = driver.get("local") if isinstance(driver, dict) else None
            modules = local.get("modules") if isinstance(local, dict) else None
            if isinstance(modules, list):
                loaded.update(m for m in modules if isinstance(m, str))
            info = (local or {}).get("status") if isinstance(local, dict) else None
            if not key or not isinstance(info, dict):
                continue
            count = int(info.get("launch_count") or 0)
            by_key[key] = by_key.get(key, 0) + count
            label = driver_label(key)
            launches[label] = launches.get(label, 0) + count
            running = bool(info.get("running"))
            assigned = int(info.get("module_instances") or 0) > 0
            relaunched = key in previous and count > previous[key]
            if relaunched:  # a crash (also while a crash loop has it down): held, see api.crash_hold_seconds
                crashed.append(label)
            elif not running and assigned:
                down.append(label)
            state = 1 if running and not relaunched else (0 if assigned or relaunched else 1)
            up[label] = min(up.get(label, 1), state)
    now = time.time()
    hold = ctx.cluster.api.crash_hold_seconds
    held: dict[str, float] = {k: t for k, t in ctx.state.get("crashes", {}).items() if now - t < hold}
    held |= dict.fromkeys(crashed, now)
    ctx.state["crashes"] = held
    recent = sorted(set(held) - set(crashed))
    for label in held:
        up[label] = 0
    failed = []
    for name in sorted(unavailable)[:MAX_COMPILE_CONFIRMATIONS]:
        failing, label = await still_failing(ctx, name)
        if failing:
            failed.append(name)
            up[label] = 0
    failed += sorted(unavailable)[MAX_COMPILE_CONFIRMATIONS:]
    ctx.state["launches"] = by_key  # per binary: a recompiled binary counts its launches anew
    facts = DriverFacts(
        running=sum(1 for k, v in up.items() if v and k in launches),
        down=len(set(down) | set(held)),
        failed_compile=len(failed),
        up=up,
        launches=launches,
    )
    if silent:  # a core that does not answer: its drivers are unknown, and executes routed to it fail
        detail = f"core(s) registered but not answering the cluster route: {', '.join(sorted(silent))}"
        raise ProbeFailure(Reason.CORE_UNREACHABLE, detail[:300], facts)
    problems = [f"failed to compile: {', '.join(failed)}"] if failed else []
    problems += [f"down with modules: {', '.join(down)}"] if down else []
    problems += [f"relaunched since last run (crash): {', '.join(crashed)}"] if crashed else []
    minutes = f"{hold / 60:g}"
    problems += [f"crashed within the last {minutes} min: {', '.join(recent)}"] if recent else []
    if problems:  # a driver that does not run explains its modules not being loaded
        raise ProbeFailure(Reason.DRIVER_ERROR, "; ".join(problems)[:300], facts)
    unassigned = await modules_loaded_nowhere(ctx, loaded)
    if unassigned:
        detail = f"modules of system {ctx.cluster.api.system_id} loaded on no core: {', '.join(unassigned)}"
        raise ProbeFailure(Reason.NOT_LOADED, detail[:300], facts)
    return Outcome(Reason.OK, f"{facts.running} drivers running on {len(cores)} core(s)", facts)


def _states(facts: DriverFacts | None, _: object) -> Samples:
    for state in DRIVER_STATES:
        yield (state,), float("nan") if facts is None else float(getattr(facts, state))


def _capped(facts: DriverFacts | None) -> tuple[dict[str, int], dict[str, int]]:
    """(up, launches) per driver label: the first DRIVER_LABEL_CAP names in sorted order, the rest
    folded into ``other`` (down if any folded driver is down, launches summed)."""
    if facts is None:
        return {}, {}
    names = sorted(set(facts.up) | set(facts.launches))
    up = {n: facts.up[n] for n in names[:DRIVER_LABEL_CAP] if n in facts.up}
    launches = {n: facts.launches.get(n, 0) for n in names[:DRIVER_LABEL_CAP]}
    rest = names[DRIVER_LABEL_CAP:]
    if rest:
        up[DRIVER_OVERFLOW] = min(facts.up.get(n, 1) for n in rest)
        launches[DRIVER_OVERFLOW] = sum(facts.launches.get(n, 0) for n in rest)
    return up, launches


def _up(facts: DriverFacts | None, _: object) -> Samples:
    return (((name,), float(value)) for name, value in _capped(facts)[0].items())


def _launches(facts: DriverFacts | None, _: object) -> Samples:
    return (((name,), float(value)) for name, value in _capped(facts)[1].items())


SPEC = ProbeSpec(
    name=ProbeName.DRIVERS,
    run=run,
    checks="no driver failed to compile, is down with modules assigned, or relaunched since the last run",
    enabled_by=can_log_in,
    needs="api.url and a credential with the cluster scope",
    facts=DriverFacts,
    metrics=(
        MetricRow(MetricSpec("placeos_drivers", "gauge", "Drivers by state, from the cluster routes.",
                             ("state",), {"state": DRIVER_STATES}), _states),
        MetricRow(MetricSpec("placeos_driver_up", "gauge",
                             f"1 if the driver runs with its modules; capped at {DRIVER_LABEL_CAP} drivers, rest in "
                             "'other'.", ("driver",)), _up),
        MetricRow(MetricSpec("placeos_driver_launches_total", "counter",
                             "Driver process launches reported by core (launch_count); a rising rate is a crash loop.",
                             ("driver",)), _launches),
    ),
)  # fmt: skip
