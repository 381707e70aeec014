"""The diagnosis, table-driven: every scenario of the troubleshooting page in each era where it
applies, every pair of simultaneous failures, exporter-side misconfiguration, and the healthy state.

Scenarios are data: the probe results a real outage produces (as the sandbox shows them) and the
exact root causes expected. The health route's own 500 is ``unhealthy`` (internals §5.1); a proxy's
502/503 is ``http_5xx``.
"""

from __future__ import annotations

from itertools import combinations

import pytest

from exporter.model.triage import Observation, diagnose
from exporter.model.vocabulary import ProbeName as P
from exporter.model.vocabulary import Reason as R

USER_PATH = (P.API_HEALTH, P.LOGIN, P.SYSTEMS_LIST, P.MODULE_FUNCTIONS, P.EXECUTE, P.WEBSOCKET,
             P.CORE_DISCOVERY, P.DRIVERS, P.TRIGGERS_HEALTH)  # fmt: skip
ERA_PROBES = {
    "A": (P.ETCD, P.RETHINKDB, P.REDIS, P.ELASTICSEARCH, *USER_PATH),
    "B": (P.ETCD, P.POSTGRES, P.REDIS, P.ELASTICSEARCH, *USER_PATH),
    "C": (P.POSTGRES, P.REDIS, P.ELASTICSEARCH, *USER_PATH),
}
DB = {"A": P.RETHINKDB, "B": P.POSTGRES, "C": P.POSTGRES}

# name -> (eras, symptoms as {probe or "db": reason}, expected causes). Symptoms are what each outage
# really produces (internals §5.1-§5.4 bodies, classified by the probes).
SCENARIOS: dict[str, tuple[str, dict[P | str, R], set[str]]] = {
    "etcd down": ("AB", {
        P.ETCD: R.CONNECTION_REFUSED, P.CORE_DISCOVERY: R.CONNECTION_REFUSED, P.API_HEALTH: R.UNHEALTHY,
        P.EXECUTE: R.NO_CORE_INSTANCES, P.WEBSOCKET: R.NO_CORE_INSTANCES, P.TRIGGERS_HEALTH: R.HTTP_5XX,
    }, {"etcd"}),
    "etcd hung": ("AB", {P.ETCD: R.TIMEOUT, P.CORE_DISCOVERY: R.TIMEOUT, P.EXECUTE: R.TIMEOUT}, {"etcd"}),
    "redis hung (era C: discovery and health route hang too)": ("C", {
        P.REDIS: R.TIMEOUT, P.API_HEALTH: R.TIMEOUT, P.MODULE_FUNCTIONS: R.TIMEOUT, P.EXECUTE: R.TIMEOUT,
        P.WEBSOCKET: R.TIMEOUT, P.CORE_DISCOVERY: R.TIMEOUT, P.DRIVERS: R.TIMEOUT, P.TRIGGERS_HEALTH: R.TIMEOUT,
    }, {"redis"}),
    "database down": ("ABC", {
        "db": R.CONNECTION_REFUSED, P.API_HEALTH: R.UNHEALTHY, P.LOGIN: R.AUTH_FAILED,
        P.SYSTEMS_LIST: R.AUTH_FAILED, P.MODULE_FUNCTIONS: R.AUTH_FAILED, P.EXECUTE: R.AUTH_FAILED,
        P.DRIVERS: R.AUTH_FAILED, P.TRIGGERS_HEALTH: R.HTTP_5XX,
    }, {"database"}),
    "database password changed for everyone": ("ABC", {
        "db": R.AUTH_FAILED, P.LOGIN: R.AUTH_FAILED, P.SYSTEMS_LIST: R.AUTH_FAILED, P.API_HEALTH: R.UNHEALTHY,
    }, {"database"}),
    "redis down": ("ABC", {
        P.REDIS: R.CONNECTION_REFUSED, P.API_HEALTH: R.UNHEALTHY, P.MODULE_FUNCTIONS: R.HTTP_5XX,
        P.EXECUTE: R.HTTP_5XX, P.WEBSOCKET: R.PROTOCOL_ERROR, P.TRIGGERS_HEALTH: R.HTTP_5XX,
    }, {"redis"}),
    "redis down in era C (discovery too)": ("C", {
        P.REDIS: R.CONNECTION_REFUSED, P.CORE_DISCOVERY: R.CONNECTION_REFUSED, P.EXECUTE: R.NO_CORE_INSTANCES,
    }, {"redis"}),
    "elasticsearch down": ("ABC", {P.ELASTICSEARCH: R.CONNECTION_REFUSED, P.SYSTEMS_LIST: R.HTTP_5XX},
                           {"elasticsearch"}),
    "elasticsearch red": ("ABC", {P.ELASTICSEARCH: R.UNHEALTHY, P.SYSTEMS_LIST: R.HTTP_5XX}, {"elasticsearch"}),
    "core down, etcd up": ("AB", {P.CORE_DISCOVERY: R.NO_CORE_INSTANCES, P.EXECUTE: R.NO_CORE_INSTANCES,
                                  P.WEBSOCKET: R.NO_CORE_INSTANCES}, {"core"}),
    "only core killed, stale registration (era C)": ("C", {
        P.CORE_DISCOVERY: R.CORE_UNREACHABLE, P.EXECUTE: R.CORE_UNREACHABLE, P.WEBSOCKET: R.CORE_UNREACHABLE,
    }, {"core"}),
    "no core instances, discovery probe not run": ("ABC", {P.EXECUTE: R.NO_CORE_INSTANCES}, {"core"}),
    "API cannot reach etcd": ("AB", {P.EXECUTE: R.ETCD_UNREACHABLE, P.WEBSOCKET: R.ETCD_UNREACHABLE,
                                     P.API_HEALTH: R.UNHEALTHY, P.DRIVERS: R.HTTP_5XX}, {"api_etcd"}),
    "driver crash loop": ("ABC", {P.DRIVERS: R.DRIVER_ERROR, P.EXECUTE: R.DRIVER_ERROR}, {"driver"}),
    "driver raised on execute": ("ABC", {P.EXECUTE: R.DRIVER_ERROR}, {"driver"}),
    "driver failed to compile": ("ABC", {P.DRIVERS: R.DRIVER_ERROR, P.MODULE_FUNCTIONS: R.NOT_FOUND,
                                         P.EXECUTE: R.NOT_FOUND}, {"driver"}),
    "load balancer gone": ("ABC", {
        P.API_HEALTH: R.CONNECTION_REFUSED, P.LOGIN: R.CONNECTION_REFUSED, P.SYSTEMS_LIST: R.CONNECTION_REFUSED,
        P.MODULE_FUNCTIONS: R.CONNECTION_REFUSED, P.EXECUTE: R.CONNECTION_REFUSED,
        P.WEBSOCKET: R.CONNECTION_REFUSED, P.DRIVERS: R.CONNECTION_REFUSED,
    }, {"api"}),
    "rest-api 5xx with healthy backends": ("ABC", {P.API_HEALTH: R.HTTP_5XX, P.LOGIN: R.HTTP_5XX}, {"api"}),
    "exporter's database password wrong": ("ABC", {"db": R.AUTH_FAILED}, {"exporter_config"}),
    "exporter's API key rejected": ("ABC", {P.LOGIN: R.AUTH_FAILED, P.SYSTEMS_LIST: R.AUTH_FAILED,
                                            P.EXECUTE: R.AUTH_FAILED}, {"exporter_config"}),
    "exporter's redis password wrong": ("ABC", {P.REDIS: R.AUTH_FAILED}, {"exporter_config"}),
    "exporter's etcd password wrong": ("AB", {P.ETCD: R.AUTH_FAILED, P.CORE_DISCOVERY: R.AUTH_FAILED},
                                       {"exporter_config"}),
    "exporter's module does not exist": ("ABC", {P.MODULE_FUNCTIONS: R.NOT_FOUND}, {"exporter_config"}),
    "exporter's key lacks permission": ("ABC", {P.EXECUTE: R.ACCESS_DENIED}, {"exporter_config"}),
    "unexplained listing failure": ("ABC", {P.SYSTEMS_LIST: R.HTTP_5XX}, {"unknown"}),
    "healthy": ("ABC", {}, {"none"}),
}  # fmt: skip


def observations(era: str, symptoms: dict[P | str, R]) -> dict[P, Observation]:
    out = {p: Observation(R.OK) for p in ERA_PROBES[era]}
    for probe, reason in symptoms.items():
        out[DB[era] if probe == "db" else P(probe)] = Observation(reason)
    return out


CASES = [(name, era) for name, (eras, _, _) in SCENARIOS.items() for era in eras]


@pytest.mark.parametrize(("name", "era"), CASES, ids=[f"{n}-{e}" for n, e in CASES])
def test_scenario(name: str, era: str) -> None:
    _, symptoms, expected = SCENARIOS[name]
    d = diagnose(observations(era, symptoms))
    assert set(d.causes) == expected
    if expected != {"none"}:
        # Every failing probe is accounted for: evidence of a cause, or explained by one.
        accounted = {e.probe for ev in (*d.causes.values(), *d.explained.values()) for e in ev}
        failing = {(DB[era] if p == "db" else P(p)).value for p in symptoms}
        assert accounted == failing


# Impacts in the troubleshooting page's words, for the page's own scenarios.
@pytest.mark.parametrize(
    ("name", "era", "impacts", "not_impacted"),
    [
        ("etcd down", "A", {"driver_faults", "core_clustering", "execute", "websocket", "triggers"}, {"login"}),
        ("database down", "A", {"login", "api_requests"}, {"websocket", "execute"}),
        ("redis down", "A", {"status_updates", "signals", "execute", "cross_driver_calls"}, {"login", "search"}),
        ("elasticsearch down", "A", {"search"}, {"login", "execute"}),
        ("driver crash loop", "A", {"driver_execute"}, {"execute", "login"}),
        ("API cannot reach etcd", "B", {"execute", "websocket"}, {"login", "triggers"}),
        ("exporter's database password wrong", "C", set(), {"login", "api_requests"}),
    ],
)
def test_impacts_match_the_page(name: str, era: str, impacts: set[str], not_impacted: set[str]) -> None:
    d = diagnose(observations(era, SCENARIOS[name][1]))
    assert impacts <= d.impacts
    assert not (not_impacted & d.impacts)


SINGLE_OUTAGES = ["etcd down", "database down", "redis down", "elasticsearch down", "core down, etcd up",
                  "driver crash loop", "load balancer gone"]  # fmt: skip


# When two parts fail, a probe shows the failure that stops it first: no answer at all beats a
# rejected login, which beats any other answer.
PRECEDENCE = {R.CONNECTION_REFUSED: 0, R.TIMEOUT: 0, R.AUTH_FAILED: 1}
# What one outage hides: with etcd down nobody can tell whether core is down; with the API gone or
# every request rejected (database down), the driver routes cannot be read.
MASKS = {"etcd": {"core"}, "api": {"driver"}, "database": {"driver"}}


@pytest.mark.parametrize(("first", "second"), list(combinations(SINGLE_OUTAGES, 2)))
def test_two_failures_at_once(first: str, second: str) -> None:
    symptoms: dict[P | str, R] = {}
    for name in (first, second):
        for probe, reason in SCENARIOS[name][1].items():
            if probe not in symptoms or PRECEDENCE.get(reason, 2) < PRECEDENCE.get(symptoms[probe], 2):
                symptoms[probe] = reason
    d = diagnose(observations("A", symptoms))
    expected = SCENARIOS[first][2] | SCENARIOS[second][2]
    for cause in list(expected):
        expected -= MASKS.get(cause, set())
    assert set(d.causes) == expected


def test_unknown_lists_the_failing_probes() -> None:
    d = diagnose(observations("A", {P.SYSTEMS_LIST: R.HTTP_5XX, P.TRIGGERS_HEALTH: R.TIMEOUT}))
    assert set(d.causes) == {"unknown"}
    assert {e.probe for e in d.causes["unknown"]} == {"systems_list", "triggers_health"}


def test_pending_is_not_a_failure() -> None:
    d = diagnose({p: Observation(R.PENDING) for p in ERA_PROBES["A"]})
    assert not d.causes and d.pending and d.healthy  # no failure found, but not "none" (= checked, healthy)
    assert d.verdict() == "Waiting for the first probe results"


def test_verdict_names_cause_impacts_and_what_still_works() -> None:
    d = diagnose(observations("A", SCENARIOS["database down"][1]))
    verdict = d.verdict()
    assert "Database" in verdict and "cannot log in" in verdict
    assert "Existing WebSocket sessions keep working" in verdict
