"""PlaceOS failure scenarios as seen through the API: what each user-path probe should report, and the causes.

One row per failure of ``tests/placeos_api.py`` (the switches are that double's ``set(failures=..., **knobs)``).
Every expectation is derived from the reference documents (section cited in each description) and the status
codes and bodies the double reproduces, never from the exporter's code. Sections: "internals" =
placeos-internals.md, "page" = troubleshooting-backend-failures.md, "2026" = placeos-2026.md.

How a probe's reason follows from PlaceOS's answer (the probe definitions given with this table):

* ``api_health``: 200 ok; 500, the route's own "not healthy" (internals §5.1), unhealthy; a proxy's 502/503/504
  http_5xx; other 4xx http_4xx.
* ``login`` (``/api_keys/inspect``): 401 auth_failed, 403 access_denied, 5xx http_5xx.
* ``systems_list``, ``module_functions``, ``drivers``: 401 auth_failed, 403 access_denied (the same mapping as
  ``login``; rest-api answers 403 with an empty body, internals §5.2 scopes), 404 not_found, 5xx http_5xx.
* ``execute``: the error body's ``error``/``message`` text first (``No registered core instances`` ->
  no_core_instances; a message naming ``etcd:2379``/``redis:6379`` -> etcd_/redis_unreachable; an IO error naming
  the core's ``core:3000`` -> core_unreachable; ``request to … failed`` / ``module raised`` -> driver_error;
  ``module not found`` -> not_found), then the status (401 auth_failed, 403 access_denied, 5xx http_5xx).
* ``websocket``: the upgrade's status like ``login`` (401/403/5xx); a connection dropped right after the 101 is
  protocol_error; a bind error by its ``error_code`` (6 module_not_found -> not_found); no notify within the
  deadline -> timeout; an exec error like ``execute`` (7 by its ``msg``; ``failed to execute request`` names nothing
  and carries ``code`` 500 -> http_5xx).
* ``drivers``: a compile failure in ``unavailable_drivers``, a driver down with modules or a rising
  ``launch_count`` -> driver_error; a module of the probed system missing from every ``/cluster/:core_id`` ->
  not_loaded; no core listed -> no_core_instances; a core listed with ``include_status=false`` but dropped with
  ``include_status=true`` (eras A-C, internals §11 "Implications") -> core_unreachable.
* ``build_service``: ``GET /build/monitor`` 200 ok, 404 ok (the route is absent: a capability, not a failure), 5xx
  http_5xx.

Probes that pass are omitted from ``expected_reasons``. (Revised after the first run: ``modules_not_loaded`` and
``build_service`` became causes of their own, issue "era D and today's failures".)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

ERAS: tuple[str, ...] = ("A", "B", "C", "D")

PROBES: tuple[str, ...] = (
    "api_health",
    "login",
    "systems_list",
    "module_functions",
    "execute",
    "websocket",
    "drivers",
    "triggers_health",
    "build_service",
)

REASONS: frozenset[str] = frozenset(
    {
        "ok",
        "timeout",
        "connection_refused",
        "dns",
        "tls",
        "auth_failed",
        "unhealthy",
        "protocol_error",
        "http_4xx",
        "http_5xx",
        "not_found",
        "no_core_instances",
        "core_unreachable",
        "etcd_unreachable",
        "redis_unreachable",
        "database_unreachable",
        "driver_error",
        "not_loaded",
        "access_denied",
    }
)

CAUSES: frozenset[str] = frozenset(
    {
        "etcd",
        "database",
        "redis",
        "redis_pubsub",
        "elasticsearch",
        "core",
        "driver",
        "api",
        "api_etcd",
        "api_backend",
        "modules_not_loaded",
        "build_service",
        "exporter_config",
        "unknown",
        "none",
    }
)


def _ro(data: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    return MappingProxyType(dict(data or {}))


@dataclass(frozen=True)
class ApiScenario:
    """One failure, the probes' reasons (probes that pass omitted) and the exact cause sets in both modes."""

    id: str
    description: str
    eras: tuple[str, ...]
    switches: Mapping[str, Any]  # PlaceOSApi.set(failures=...)
    expected_reasons: Mapping[str, str]  # reasons in every era of the row
    expected_causes_api_only: frozenset[str]
    expected_causes_with_backends: frozenset[str]
    why_modes_differ: str | None = None
    era_reasons: Mapping[str, Mapping[str, str]] = field(default_factory=_ro)  # per-era additions to expected_reasons
    knobs: Mapping[str, Any] = field(default_factory=_ro)  # PlaceOSApi.set(**knobs), e.g. delays
    expected_capabilities: Mapping[str, str] = field(
        default_factory=_ro
    )  # optional capabilities: "ok" | "absent" | a reason
    notes: str = ""

    def reasons_for(self, era: str) -> Mapping[str, str]:
        """The failing probes and their reasons in ``era`` (rows list the eras they apply to)."""
        if era not in self.eras:
            raise ValueError(f"{self.id} does not apply to era {era}")
        merged = {**self.expected_reasons, **self.era_reasons.get(era, {})}
        return MappingProxyType({probe: reason for probe, reason in merged.items() if reason != "ok"})


def _row(
    id: str,
    description: str,
    eras: tuple[str, ...],
    switches: Mapping[str, Any],
    reasons: Mapping[str, str],
    api_only: set[str],
    with_backends: set[str],
    *,
    why: str | None = None,
    era_reasons: Mapping[str, Mapping[str, str]] | None = None,
    knobs: Mapping[str, Any] | None = None,
    capabilities: Mapping[str, str] | None = None,
    notes: str = "",
) -> ApiScenario:
    return ApiScenario(
        id=id,
        description=description,
        eras=eras,
        switches=_ro(switches),
        expected_reasons=_ro(reasons),
        expected_causes_api_only=frozenset(api_only),
        expected_causes_with_backends=frozenset(with_backends),
        why_modes_differ=why,
        era_reasons=_ro({era: _ro(r) for era, r in (era_reasons or {}).items()}),
        knobs=_ro(knobs),
        expected_capabilities=_ro(capabilities),
        notes=notes,
    )


_ALL = ERAS
_AB = ("A", "B")
_ABC = ("A", "B", "C")

_AUTH_FAILED = {
    "login": "auth_failed",
    "systems_list": "auth_failed",
    "module_functions": "auth_failed",
    "execute": "auth_failed",
    "websocket": "auth_failed",
    "drivers": "auth_failed",
}
_ETCD_FRESH = {
    "api_health": "unhealthy",
    "execute": "etcd_unreachable",
    "websocket": "protocol_error",
    "drivers": "http_5xx",
}
_NOT_FOUND = {"module_functions": "not_found", "execute": "not_found", "websocket": "timeout"}
_NOT_LOADED = {"execute": "driver_error", "websocket": "driver_error", "drivers": "not_loaded"}

SCENARIOS: tuple[ApiScenario, ...] = (
    _row(
        "healthy",
        "Every backend, core and driver up (internals §5, §11); no /build/monitor before rest-api cd3ae1f.",
        _ABC,
        {},
        {},
        {"none"},
        {"none"},
        capabilities={"build_monitor": "absent", "edges": "absent"},
    ),
    _row(
        "healthy_era_d",
        "Era D with everything up: PostgreSQL search, no Elasticsearch, build monitor present (2026 §1-2).",
        ("D",),
        {},
        {},
        {"none"},
        {"none"},
        capabilities={"build_monitor": "ok", "edges": "ok"},
    ),
    _row(
        "database_down",
        "RethinkDB (A) / PostgreSQL (B-D) down: every key is 401 'unknown X-API-Key', health 500 "
        "(internals §5.1, §5.2; page 'RethinkDB Failure'; triggers checks PG in D, §6).",
        _ALL,
        {"database_down": True},
        {"api_health": "unhealthy", **_AUTH_FAILED},
        {"database"},
        {"database"},
        era_reasons={"D": {"triggers_health": "http_5xx", "build_service": "auth_failed"}},
        notes="API-only: a 401 'unknown X-API-Key' with a failing health route means the database (§5.2, §10.5).",
    ),
    _row(
        "redis_down",
        "Redis down: health 500, functions 500 {}, execute names 'redis:6379', a bind fails as module_not_found "
        "(internals §3, §5.1, §5.3, §5.4; page 'Redis Failure'); /cluster needs Redis in C/D (§1.2).",
        _ALL,
        {"redis_down": True},
        {
            "api_health": "unhealthy",
            "module_functions": "http_5xx",
            "execute": "redis_unreachable",
            "websocket": "not_found",
        },
        {"redis"},
        {"redis"},
        era_reasons={
            "C": {"drivers": "http_5xx"},
            "D": {"drivers": "http_5xx", "triggers_health": "http_5xx"},
        },
    ),
    _row(
        "redis_pubsub_broken",
        "Redis answers PING but status deliveries stop: binds succeed, no notify arrives (2026 §2, driver #170).",
        ("D",),
        {"redis_pubsub_broken": True},
        {"websocket": "timeout"},
        {"redis_pubsub"},
        {"redis_pubsub"},
        notes="In eras A-C the first value is read with HGET (driver v6.7.4 perform_subscribe), so a first-notify "
        "probe cannot see this failure there; the double still drops later notifies.",
    ),
    _row(
        "etcd_down",
        "etcd down, the API's discovery must reach it: health 500, execute 500 naming 'etcd:2379', the WebSocket "
        "is dropped after the upgrade, /cluster 500 (internals §1.1, §1.4, §5.1; page 'etcd Failure').",
        _AB,
        {"etcd_down": {"discovery": "fresh"}},
        _ETCD_FRESH,
        {"etcd"},
        {"etcd"},
    ),
    _row(
        "etcd_down_discovery_cached",
        "etcd down while the API keeps the core list it had (hound-dog discovery.cr): only health is 500 "
        "(internals §1.1, §5.1).",
        _AB,
        {"etcd_down": {"discovery": "cached"}},
        {"api_health": "unhealthy"},
        {"api_backend"},
        {"etcd"},
        why="Only the health route's 500 shows a backend failing; the etcd probe names it.",
    ),
    _row(
        "api_cannot_reach_etcd",
        "The API cannot reach etcd while etcd is up: the same API answers as etcd down (internals §1.4; page "
        "'unable to connect to etcd … or the API can't connect to etcd').",
        _AB,
        {"api_etcd_unreachable": {"discovery": "fresh"}},
        _ETCD_FRESH,
        {"etcd"},
        {"api_etcd"},
        why="The API names etcd; only the exporter's own etcd probe, which succeeds, shows the fault is the API's "
        "path to etcd.",
    ),
    _row(
        "api_cannot_reach_etcd_discovery_cached",
        "The API cannot reach etcd (etcd up) but keeps its cached core list: only health is 500 (internals §1.1).",
        _AB,
        {"api_etcd_unreachable": {"discovery": "cached"}},
        {"api_health": "unhealthy"},
        {"api_backend"},
        {"api_backend"},
        why=None,
        notes="Every backend answers the exporter, so the API's path to one of them is broken, and a bare health "
        "500 does not say which (revised from api_etcd: Redis or the database would look the same, §5.1).",
    ),
    _row(
        "elasticsearch_down",
        "Elasticsearch down: index/list requests 500 {}, health 200 because rest-api never checks ES (internals "
        "§4, §5.1; page 'Elasticsearch failure').",
        _ABC,
        {"elasticsearch_down": True},
        {"systems_list": "http_5xx"},
        {"elasticsearch"},
        {"elasticsearch"},
        notes="API-only: with health 200 and a working login only the listing store can fail in A-C (page triage "
        "'Does Backoffice list the systems?').",
    ),
    _row(
        "core_down",
        "No core registered: 'No registered core instances' 500 / error_code 7, /cluster [] (internals §1.4, §5.3).",
        _ALL,
        {"core_down": True},
        {"execute": "no_core_instances", "websocket": "no_core_instances", "drivers": "no_core_instances"},
        {"core"},
        {"core"},
    ),
    _row(
        "core_stale",
        "A registered core that does not answer: execute 500 with the IO error naming core:3000, /cluster drops "
        "it (internals §1.2, §5.3, §11.1).",
        _ALL,
        {"core_stale": True},
        {"execute": "core_unreachable", "websocket": "core_unreachable", "drivers": "core_unreachable"},
        {"core"},
        {"core"},
        era_reasons={"D": {"drivers": "no_core_instances"}},
        notes="In D /cluster?include_status=false also drops the core (rest-api 37179a6), so no core is listed.",
    ),
    _row(
        "core_stale_slow",
        "A stale core while the core-client retries run for minutes (internals §5.3 'up to 40 s per retry', "
        "driver remote_driver.cr '~3 minutes'): probes time out.",
        ("C", "D"),
        {"core_stale": True},
        {"execute": "timeout", "websocket": "timeout", "drivers": "timeout"},
        {"unknown"},
        {"core"},
        why="The API only times out; Redis shows a lookup entry whose {service_core}.<ULID> key expired "
        "(internals §1.2, §10.3).",
        knobs={"core_retry_delay": 30.0},
        notes="Needs a probe timeout well below 30 s.",
    ),
    _row(
        "driver_raises",
        "The driver raises: core 203 -> 'request failed' 'module raised: …' (internals §5.3 step 6, §11.2 item 5).",
        _ALL,
        {"driver_raises": True},
        {"execute": "driver_error", "websocket": "driver_error"},
        {"driver"},
        {"driver"},
    ),
    _row(
        "driver_crashloop",
        "The driver process is down and relaunched over and over: running false with modules, launch_count "
        "rising; execute 'request to … failed' (internals §11.1, §11.2; page 'Driver … crash').",
        _ALL,
        {"driver_crashloop": True},
        {"execute": "driver_error", "websocket": "driver_error", "drivers": "driver_error"},
        {"driver"},
        {"driver"},
    ),
    _row(
        "driver_compile_failed",
        "A driver failed to compile (Lighting, in no probed system): unavailable_drivers lists it (internals "
        "§11.1, §11.3); user paths unaffected.",
        _ALL,
        {"driver_compile_failed": True},
        {"drivers": "driver_error"},
        {"driver"},
        {"driver"},
    ),
    _row(
        "driver_never_compiled",
        "The probed module's driver never compiled: no interface/<mod> (404 'could not find module', functions "
        "404), empty status hash, unavailable_drivers lists it (internals §3.3, §11.2 item 1, §11.3).",
        _ALL,
        {"driver_never_compiled": True},
        {**_NOT_FOUND, "drivers": "driver_error"},
        {"driver"},
        {"driver"},
        notes="The not-found answers are explained by the compile failure, so no exporter_config cause.",
    ),
    _row(
        "module_not_loaded",
        "The module is not loaded on its core: 500 'request to core:3000/api/core/v1/command/mod-1/execute… failed "
        "with …module mod-1 not loaded' (internals §5.3, §11.2 items 2 and 4).",
        _ABC,
        {"module_not_loaded": True},
        _NOT_LOADED,
        {"modules_not_loaded"},
        {"modules_not_loaded"},
    ),
    _row(
        "modules_not_loaded_after_core_restart",
        "Modules not reloaded after a core restart: /cluster/:core_id lists fewer modules than the system expects "
        "(2026 §2, ai-support-agent modules-not-loaded); execute 'Could not locate module …' (internals §11.2).",
        ("D",),
        {"module_not_loaded": True},
        _NOT_LOADED,
        {"modules_not_loaded"},
        {"modules_not_loaded"},
    ),
    _row(
        "api_unreachable_behind_lb",
        "rest-api down behind the load balancer: nginx 502 HTML on /api/engine/v2 (page 'load balancer issue'); "
        "auth and triggers are other upstreams.",
        _ALL,
        {"api_down": {"status": 502}},
        {
            "api_health": "http_5xx",
            "login": "http_5xx",
            "systems_list": "http_5xx",
            "module_functions": "http_5xx",
            "execute": "http_5xx",
            "websocket": "http_5xx",
            "drivers": "http_5xx",
            "build_service": "http_5xx",
        },
        {"api"},
        {"api"},
    ),
    _row(
        "wrong_api_key",
        "The exporter's key is unknown while the database is up: 401 'unknown X-API-Key', health 200 (internals §5.2).",
        _ALL,
        {"key_unknown": True},
        _AUTH_FAILED,
        {"exporter_config"},
        {"exporter_config"},
        era_reasons={"D": {"build_service": "auth_failed"}},
    ),
    _row(
        "key_without_permission",
        "The key lacks the systems/control/cluster scopes and support rights: 403 with an empty body; "
        "/api_keys/inspect has no scope check (internals §5.2, §11.1).",
        _ALL,
        {"key_forbidden": True},
        {
            "systems_list": "access_denied",
            "module_functions": "access_denied",
            "execute": "access_denied",
            "websocket": "access_denied",
            "drivers": "access_denied",
        },
        {"exporter_config"},
        {"exporter_config"},
    ),
    _row(
        "system_not_found",
        "The configured system does not exist: functions 404 'metadata not found …', execute 404 'module not "
        "found'; a bind to it is answered success and never notified (internals §5.3, §5.4).",
        _ALL,
        {"system_not_found": True},
        _NOT_FOUND,
        {"exporter_config"},
        {"exporter_config"},
    ),
    _row(
        "module_not_found",
        "The configured module is not in the system: the same 404 bodies (internals §5.3, §5.4).",
        _ALL,
        {"module_not_found": True},
        _NOT_FOUND,
        {"exporter_config"},
        {"exporter_config"},
    ),
    _row(
        "build_service_unreachable",
        "Build service unreachable: GET /api/engine/v2/build/monitor 500 'Call to Build service endpoint failed …' "
        "(2026 §2, rest-api #413 / core #282); running drivers are unaffected.",
        ("D",),
        {"build_service_unreachable": True},
        {"build_service": "http_5xx"},
        {"build_service"},
        {"build_service"},
        capabilities={"build_monitor": "http_5xx"},
        notes="Drivers cannot (re)compile; 2026 §2 files it under the driver-compile-failure playbook.",
    ),
)

SCENARIOS_BY_ID: Mapping[str, ApiScenario] = MappingProxyType({s.id: s for s in SCENARIOS})
