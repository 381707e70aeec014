"""The whole scenario table on ground we did not build: the exporter's real probes against the PlaceOS API
double (tests/placeos_api.py, written from the reference documents only), in every era each failure
applies to, once API-only and once with the backend probes.

API-only, the probes' reasons and the diagnosis come from the double's answers alone. With backends, the
backend probes' own view of the same failure is added (a stopped backend refuses connections; etcd
answers when only the API's path to it is broken; Redis shows a core's expired registration): that view
is the reference's (internals §1-§4), and the real backend probes are tested against real servers in
test_backend_faults.py. The table says where the two modes differ and why.

"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from api_scenarios import SCENARIOS, ApiScenario
from placeos_api import PlaceOSApi
from placeos_api_wire import API_KEY, FUNCTION, MODULE_SLUG, SYSTEM_ID
from support import settings_for

from exporter.model.triage import Observation, diagnose
from exporter.model.vocabulary import Reason
from exporter.probes.clients.rest_api import platform_version
from exporter.runtime.scheduler import Scheduler
from exporter.runtime.snapshot import Snapshot

ERAS_HERE = ("A", "B", "C", "D")
CASES = [(s, era) for s in SCENARIOS for era in s.eras if era in ERAS_HERE]
DATABASE = {"A": "rethinkdb", "B": "postgres", "C": "postgres", "D": "postgres"}


def backends_view(scenario: ApiScenario, era: str) -> dict[str, Reason]:
    """What the backend probes see in this scenario (reference, internals §1-§4)."""
    seen = {DATABASE[era]: Reason.OK, "redis": Reason.OK}
    if era in ("A", "B"):
        seen["etcd"] = Reason.OK
    if era != "D":
        seen["elasticsearch"] = Reason.OK
    down = {"database_down": DATABASE[era], "redis_down": "redis", "elasticsearch_down": "elasticsearch"}
    for switch, probe in down.items():
        if switch in scenario.switches:
            seen[probe] = Reason.CONNECTION_REFUSED
    if "etcd_down" in scenario.switches:
        seen["etcd"] = Reason.CONNECTION_REFUSED
    # A core that does not answer: eras A/B register it under a lease that lapses (no live core); era C
    # keeps a lookup entry whose live key expired (internals §1.1, §1.2).
    if "core_stale" in scenario.switches:
        seen["core_discovery"] = Reason.CORE_UNREACHABLE if era in ("C", "D") else Reason.NO_CORE_INSTANCES
    elif "core_down" in scenario.switches:
        seen["core_discovery"] = Reason.NO_CORE_INSTANCES
    else:
        seen["core_discovery"] = Reason.OK
    return seen


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api() -> AsyncIterator[PlaceOSApi]:
    async with PlaceOSApi(era="C") as double:
        yield double


async def api_only_results(api: PlaceOSApi, era: str) -> dict[str, Any]:
    cluster = {
        "era": era,
        "api": {"url": api.url, "api_key": API_KEY, "system_id": SYSTEM_ID, "module": MODULE_SLUG,
                "function": FUNCTION},
        # Short deadlines: a scenario that hangs (PlaceOS retrying a dead core) reads as a timeout.
        "probes": {"execute": {"timeout": 1.5}, "websocket": {"timeout": 1.5}, "drivers": {"timeout": 1.5}},
    }  # fmt: skip
    settings = settings_for(cluster, interval=10.0, timeout=1.5)
    snapshot = Snapshot()
    await Scheduler(settings, snapshot).run_once()
    return {"cluster": snapshot.clusters["default"]}


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("scenario", "era"), CASES, ids=[f"{s.id}-{era}" for s, era in CASES])
async def test_scenario(api: PlaceOSApi, scenario: ApiScenario, era: str) -> None:
    api.set(era=era, failures=dict(scenario.switches), reset_knobs=True, **scenario.knobs)
    cluster = (await api_only_results(api, era))["cluster"]
    reasons = {s.probe: s.reason.value for s in cluster.enabled() if s.reason is not Reason.OK}
    details = {s.probe: s.last.detail for s in cluster.enabled() if s.last and not s.last.success}
    assert reasons == dict(scenario.reasons_for(era)), details
    # Optional routes: present or absent, never a failure of their own.
    capability_probe = {"build_monitor": "build_service", "edges": "edges"}
    for capability, expected in scenario.expected_capabilities.items():
        state = cluster.probes[capability_probe[capability]]
        available = getattr(state.last.facts if state.last else None, "available", None)
        assert available is (expected != "absent"), (capability, expected, state.last)
    # API-only: the diagnosis from the API's answers alone.
    d = cluster.diagnosis
    assert set(d.causes) == set(scenario.expected_causes_api_only), (d.verdict(), reasons)
    # With the backend probes' view of the same failure.
    observations = {s.probe: Observation(s.reason, s.last.detail if s.last else "") for s in cluster.enabled()}
    observations |= {probe: Observation(reason) for probe, reason in backends_view(scenario, era).items()}
    both = diagnose(observations)
    assert set(both.causes) == set(scenario.expected_causes_with_backends), (both.verdict(), scenario.why_modes_differ)


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("era", ["A", "B", "C", "D"])
async def test_the_era_is_detected_from_the_api(api: PlaceOSApi, era: str) -> None:
    """era: auto reads the platform version, and tells D from C by what rest-api #445 changed."""
    api.set(era=era, failures={}, reset_knobs=True)
    cluster = {"era": "auto", "api": {"url": api.url, "api_key": API_KEY}}
    snapshot = Snapshot()
    await Scheduler(settings_for(cluster), snapshot, detect_era=platform_version).run_once()
    assert (snapshot.clusters["default"].era, snapshot.clusters["default"].era_source) == (era, "detected")


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("broken", [False, True], ids=["delivered", "pubsub-broken"])
async def test_status_changes_reach_a_subscriber_or_the_loss_is_named(api: PlaceOSApi, broken: bool) -> None:
    """placeos-2026 §2: Redis answers PING while status updates stop reaching WebSocket clients. A driver
    updates a status on a schedule (here: the double's publish_status every 0.1 s)."""
    api.set(era="D", failures={"redis_pubsub_broken": True} if broken else {}, reset_knobs=True)
    cluster = {
        "era": "D",
        "api": {"url": api.url, "api_key": API_KEY, "system_id": SYSTEM_ID, "module": MODULE_SLUG,
                "function": FUNCTION, "changing_status": "heartbeat"},
        "probes": {name: {"timeout": 1.5} for name in ("execute", "websocket", "drivers", "status_delivery")},
    }  # fmt: skip

    async def heartbeat() -> None:
        beat = 0
        while True:
            beat += 1
            api.publish_status("heartbeat", beat)
            await asyncio.sleep(0.1)

    ticking = asyncio.ensure_future(heartbeat())
    try:
        snapshot = Snapshot()
        await Scheduler(settings_for(cluster, interval=10.0, timeout=1.5), snapshot).run_once()
    finally:
        ticking.cancel()
    state = snapshot.clusters["default"]
    delivery = state.probes["status_delivery"]
    if broken:
        assert delivery.reason is Reason.TIMEOUT
        assert set(state.diagnosis.causes) == {"redis_pubsub"}, state.diagnosis.verdict()
        assert "executing functions" in state.diagnosis.verdict()  # executes still work
    else:
        assert delivery.reason is Reason.OK, delivery.last
        assert set(state.diagnosis.causes) == {"none"}


@pytest.mark.asyncio(loop_scope="module")
async def test_a_crash_stays_a_cause_for_the_hold_window(api: PlaceOSApi) -> None:
    """Seen by a user: one driver crash was a cause for one probe interval only. The launch count rises
    once (internals §11.2); the crash then stays a failure for api.crash_hold_seconds."""
    api.set(era="C", failures={"driver_crashloop": True}, reset_knobs=True)
    cluster = {"era": "C", "api": {"url": api.url, "api_key": API_KEY, "crash_hold_seconds": 60},
               "probes": {"drivers": {"enabled": True}}}  # fmt: skip
    snapshot = Snapshot()
    scheduler = Scheduler(settings_for(cluster, interval=10.0, timeout=1.5), snapshot)
    state = snapshot.clusters["default"]
    for _ in range(2):  # the second run sees the launch count risen since the first
        await scheduler.run_once()
    assert state.probes["drivers"].reason is Reason.DRIVER_ERROR
    api.set(era="C", failures={}, reset_knobs=True)  # the driver runs again
    await scheduler.run_once()
    last = state.probes["drivers"].last
    assert last is not None and last.reason is Reason.DRIVER_ERROR and "crashed within the last 1 min" in last.detail
    assert set(state.diagnosis.causes) == {"driver"}
