"""What users saw the diagnosis get wrong, each pinned by a test (the issue "diagnosis that holds off our
own ground"). Expected answers come from the reference (internals §5.1-§5.3 bodies, §1.1 etcd auth,
§11.1 cluster routes), not from the sandbox.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from exporter.expose.metrics import ClusterCollector, render
from exporter.model.triage import Observation, diagnose
from exporter.model.vocabulary import Era
from exporter.model.vocabulary import ProbeName as P
from exporter.model.vocabulary import Reason as R
from exporter.probes.base import classify
from exporter.probes.clients.etcd_gateway import gateway_reason
from exporter.probes.clients.rest_api import classify_error
from exporter.runtime.era import era_of
from exporter.runtime.snapshot import ClusterSnapshot, ProbeResult
from exporter.settings import ClusterConfig

API_ONLY = (P.API_HEALTH, P.LOGIN, P.SYSTEMS_LIST, P.MODULE_FUNCTIONS, P.EXECUTE, P.WEBSOCKET, P.DRIVERS,
            P.TRIGGERS_HEALTH)  # fmt: skip


def seen(probes: tuple[P, ...], failing: dict[P, R]) -> dict[str, Observation]:
    return {p: Observation(failing.get(p, R.OK)) for p in probes}


def test_an_execute_error_names_the_backend_it_could_not_reach() -> None:
    """internals §5.3: an IO error reaches the caller as ``unexpected failure`` with the exception text."""
    body = {"error": "unexpected failure", "message": "Error connecting to 'redis:6379': Connection refused"}
    assert classify_error(500, body, ClusterConfig()) is R.REDIS_UNREACHABLE
    body["message"] = "Error connecting to 'postgres:5432': Connection refused"
    assert classify_error(500, body, ClusterConfig()) is R.DATABASE_UNREACHABLE
    # A configured backend's address is recognised whatever its port.
    config = ClusterConfig.model_validate({"redis": {"url": "redis://cache.internal:6380"}})
    body["message"] = "Error connecting to 'cache.internal:6380': Connection refused"
    assert classify_error(500, body, config) is R.REDIS_UNREACHABLE
    # Any other address is a core's (a registered core that does not answer).
    body["message"] = "Error connecting to '10.0.4.7:3000': Connection refused"
    assert classify_error(500, body, ClusterConfig()) is R.CORE_UNREACHABLE


def test_redis_down_seen_only_through_the_api_is_redis() -> None:
    """Seen: causes core, driver, api and unknown, and "users cannot log in" while the login probe passed."""
    d = diagnose(seen(API_ONLY, {P.API_HEALTH: R.UNHEALTHY, P.MODULE_FUNCTIONS: R.HTTP_5XX,
                                 P.EXECUTE: R.REDIS_UNREACHABLE, P.WEBSOCKET: R.REDIS_UNREACHABLE,
                                 P.TRIGGERS_HEALTH: R.HTTP_5XX}))  # fmt: skip
    assert set(d.causes) == {"redis"}
    assert "cannot log in" not in d.verdict() and "Still working: logins" in d.verdict()


def test_a_credential_a_backend_rejects_is_the_exporters() -> None:
    """Seen: API key and RethinkDB password both wrong gave cause ``database``; every secret wrong gave
    database, elasticsearch and etcd on a healthy PlaceOS. A backend that rejected a credential answered."""
    both = seen((P.RETHINKDB, P.ETCD, P.REDIS, P.ELASTICSEARCH, *API_ONLY),
                {P.RETHINKDB: R.AUTH_FAILED, P.LOGIN: R.AUTH_FAILED, P.SYSTEMS_LIST: R.AUTH_FAILED,
                 P.EXECUTE: R.AUTH_FAILED, P.DRIVERS: R.AUTH_FAILED})  # fmt: skip
    assert set(diagnose(both).causes) == {"exporter_config"}
    every = dict(both)
    every.update({P.ETCD: Observation(R.AUTH_FAILED), P.REDIS: Observation(R.AUTH_FAILED),
                  P.ELASTICSEARCH: Observation(R.AUTH_FAILED)})  # fmt: skip
    assert set(diagnose(every).causes) == {"exporter_config"}
    # etcd credentials set while etcd runs without auth: HTTP 412 "authentication is not enabled".
    assert gateway_reason(412, "etcdserver: authentication is not enabled") is R.AUTH_FAILED
    # But a password changed for everyone: PlaceOS's own logins and health route fail too.
    everyone = seen((P.POSTGRES, *API_ONLY), {P.POSTGRES: R.AUTH_FAILED, P.LOGIN: R.AUTH_FAILED,
                                              P.API_HEALTH: R.UNHEALTHY})  # fmt: skip
    assert set(diagnose(everyone).causes) == {"database"}


def test_still_working_is_what_passing_probes_show() -> None:
    """Seen: era C with PostgreSQL down said "Still working: ... executing functions" while execute failed."""
    d = diagnose(seen((P.POSTGRES, P.REDIS, *API_ONLY),
                      {P.POSTGRES: R.CONNECTION_REFUSED, P.API_HEALTH: R.UNHEALTHY, P.LOGIN: R.AUTH_FAILED,
                       P.SYSTEMS_LIST: R.AUTH_FAILED, P.EXECUTE: R.AUTH_FAILED,
                       P.WEBSOCKET: R.AUTH_FAILED}))  # fmt: skip
    assert set(d.causes) == {"database"} and "executing functions" not in d.verdict()
    # rest-api unreachable: nothing is said to still work.
    gone = diagnose(seen(API_ONLY, dict.fromkeys(API_ONLY, R.CONNECTION_REFUSED)))
    assert set(gone.causes) == {"api"} and "Still working" not in gone.verdict()


def test_a_part_the_era_does_not_have_is_not_up() -> None:
    """Seen: era C reported placeos_component_up{component="etcd"} 1."""
    cluster = ClusterSnapshot("default", 5)
    cluster.set_era(Era.C, "configured")
    cluster.set_enabled([P.REDIS])
    cluster.record(ProbeResult(P.REDIS, R.OK, "", 0.01, time.time()))
    body = render([ClusterCollector(cluster)], None)[0].decode()
    assert 'placeos_component_up{component="redis"} 1.0' in body
    assert 'component="etcd"' not in body


def test_details_say_what_was_wrong_on_the_wire_not_which_python_operation() -> None:
    """Seen: ``AttributeError: 'list' object has no attribute 'get'`` and ``RecursionError`` as details."""
    for exc in (AttributeError("'list' object has no attribute 'get'"), KeyError("id"), RecursionError("depth")):
        reason, detail = classify(exc)
        assert reason is R.PROTOCOL_ERROR
        assert "Error" not in detail and "object has no attribute" not in detail and "PlaceOS" in detail


def check_config(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PLACEOS_EXPORTER_")}
    return subprocess.run([sys.executable, "-m", "exporter.cli", "check-config"], env=clean | env,
                          capture_output=True, text=True, check=False, timeout=30)  # fmt: skip


def test_the_tls_key_mistaken_for_the_api_key_is_refused_with_a_hint() -> None:
    """Seen: PLACEOS_EXPORTER_API_KEY_FILE (the API's TLS client key) set for PLACEOS_EXPORTER_API_API_KEY_FILE
    silently switched six user-path probes off and check said "Healthy: every probe passes"."""
    result = check_config(PLACE_URI="https://placeos.example.com", PLACEOS_EXPORTER_API_KEY_FILE="/dev/null")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "key_file is a TLS client key and needs cert_file" in result.stderr
    assert "PLACEOS_EXPORTER_API_API_KEY" in result.stderr


def test_an_unknown_environment_name_is_warned_about_with_the_nearest_one() -> None:
    result = check_config(REDIS_URL="redis://127.0.0.1:1", PLACEOS_EXPORTER_REDIS_URLL="redis://x:1")
    assert result.returncode == 0
    assert ("unknown environment variable PLACEOS_EXPORTER_REDIS_URLL is ignored; did you mean "
            "PLACEOS_EXPORTER_REDIS_URL?") in result.stderr  # fmt: skip


def test_healthy_says_how_many_probes_are_off() -> None:
    cluster = ClusterSnapshot("default", 5)
    cluster.set_enabled([P.REDIS], {P.LOGIN: "not configured: needs api.url", P.ETCD: "not part of era C"})
    cluster.record(ProbeResult(P.REDIS, R.OK, "", 0.01, time.time()))
    assert cluster.diagnosis.verdict() == "Healthy: every enabled probe passes; 2 of 3 off (see /diagnose for why)"


def test_era_d_is_told_from_what_the_cluster_shows() -> None:
    """placeos-2026 §1: no platform release names era D (dev images say DEV); rest-api #445 (51faa1a)
    changed the paging of list routes (next page at offset 0, not 1) and dropped search-ingest from
    /cluster/versions."""
    c_services = ["core", "rest-api", "search-ingest", "triggers"]
    assert era_of("1.2303.4") is Era.A and era_of("2.2310.0") is Era.B
    assert era_of("2.2410.0", c_services, next_offset=1) is Era.C
    assert era_of("2.2410.0", c_services[:2], next_offset=0) is Era.D
    assert era_of("DEV", ["core", "rest-api"], next_offset=0) is Era.D
    assert era_of("DEV", ["core", "rest-api"]) is Era.D  # no system to page: the version list decides
    assert era_of("DEV", c_services) is None and era_of("DEV") is None  # nothing tells: the fallback era
    assert era_of("2.2410.0", ["core", "rest-api"], next_offset=1) is Era.C  # search-ingest merely down
