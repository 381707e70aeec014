"""drivers probe: the page's "driver compilation issue / crash", from the cluster routes (internals §11).

Needs a credential of an admin user with the ``cluster`` (or ``public``) scope.

- ``GET /api/engine/v2/cluster?include_status=true``: per core, ``unavailable_drivers`` (compile or
  install errors). That list is an event log that outlives the fix (§11.1), so each name is confirmed
  against the driver's current ``compilation_output`` (``GET /drivers?q=`` then ``/drivers/:id``);
  a driver that compiled since is not reported.
- ``GET /api/engine/v2/cluster/<core>?include_status=true``: per driver process, ``running``,
  ``module_instances`` and ``launch_count``. Down with modules assigned is a failure; a launch count
  that rose since the last run is a crash (the most robust crash-loop signal, §11.2 "Implications").

The ``driver`` label is the binary's name core reports (or the driver's name for one that failed to
compile and so has no binary); the metrics layer caps it at 100 values with an overflow bucket.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from exporter.probes.api import ENGINE, api_get, fail_for
from exporter.probes.base import Outcome, ProbeContext, ProbeFailure
from exporter.reasons import Reason

MAX_COMPILE_CONFIRMATIONS = 20  # lookups per run at most; more failures are reported unconfirmed


async def cluster_status(ctx: ProbeContext) -> list[dict[str, Any]]:
    status, body, _ = await api_get(ctx, f"{ENGINE}/cluster?include_status=true")
    if status != 200 or not isinstance(body, list):
        raise fail_for(status, body, "cluster")
    return [c for c in body if isinstance(c, dict)]


async def still_failing(ctx: ProbeContext, name: str) -> bool:
    """True if the driver called ``name`` still has a compilation_output (the failure is current)."""
    status, found, _ = await api_get(ctx, f"{ENGINE}/drivers?q={quote(name)}&limit=20")
    if status != 200 or not isinstance(found, list):
        return True  # cannot confirm: keep reporting what core reports
    for driver in found:
        if isinstance(driver, dict) and driver.get("name") == name and driver.get("id"):
            status, full, _ = await api_get(ctx, f"{ENGINE}/drivers/{quote(str(driver['id']))}")
            if status == 200 and isinstance(full, dict):
                return full.get("compilation_output") is not None
    return True


async def probe(ctx: ProbeContext) -> Outcome:
    cores = await cluster_status(ctx)
    previous: dict[str, int] = ctx.state.get("launches", {})
    launches: dict[str, int] = {}
    up: dict[str, int] = {}
    down: list[str] = []
    crashed: list[str] = []
    unavailable: set[str] = set()
    for core in cores:
        for entry in (core.get("status") or {}).get("unavailable_drivers") or []:
            if isinstance(entry, dict) and entry.get("name"):
                unavailable.add(str(entry["name"]))
        core_id = quote(str(core.get("id", "")))
        status, drivers, _ = await api_get(ctx, f"{ENGINE}/cluster/{core_id}?include_status=true")
        if status != 200 or not isinstance(drivers, list):
            continue  # a core that stopped answering: core_discovery reports it
        for driver in drivers:
            key = str(driver.get("driver", "")) if isinstance(driver, dict) else ""
            local = driver.get("local") if isinstance(driver, dict) else None
            info = (local or {}).get("status") if isinstance(local, dict) else None
            if not key or not isinstance(info, dict):
                continue
            count = int(info.get("launch_count") or 0)
            launches[key] = launches.get(key, 0) + count
            running = bool(info.get("running"))
            assigned = int(info.get("module_instances") or 0) > 0
            relaunched = key in previous and count > previous[key]
            if not running and assigned:
                down.append(key)
            elif relaunched:
                crashed.append(key)
            up[key] = 1 if running and not relaunched else (0 if assigned or relaunched else 1)
    failed = []
    for name in sorted(unavailable)[:MAX_COMPILE_CONFIRMATIONS]:
        if await still_failing(ctx, name):
            failed.append(name)
            up[name] = 0
    failed += sorted(unavailable)[MAX_COMPILE_CONFIRMATIONS:]
    ctx.state["launches"] = launches
    facts = {
        "drivers_running": sum(1 for k, v in up.items() if v and k in launches),
        "drivers_down": len(down) + len(crashed),
        "drivers_failed_compile": len(failed),
        "driver_up": up,
        "driver_launches": launches,
    }
    problems = [f"failed to compile: {', '.join(failed)}"] if failed else []
    problems += [f"down with modules: {', '.join(down)}"] if down else []
    problems += [f"relaunched since last run (crash): {', '.join(crashed)}"] if crashed else []
    if problems:
        raise ProbeFailure(Reason.DRIVER_ERROR, "; ".join(problems)[:300], facts)
    return Outcome(Reason.OK, f"{facts['drivers_running']} drivers running on {len(cores)} core(s)", facts)
