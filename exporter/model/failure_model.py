"""The failure model: the troubleshooting page as data (design §3, internals §9).

Everything the product says about failures comes from this module: the diagnosis interprets
``RULES``; ``placeos_failure_mode`` emits ``PAIRS``; alert descriptions, the runbook and the status
page read ``COMPONENTS``, ``IMPACTS`` and ``CAUSES``. Change the model here and tests catch any
alert, doc or dashboard that disagrees.
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.reasons import Reason
from exporter.settings import ProbeName


@dataclass(frozen=True)
class Impact:
    """What users feel. ``page`` quotes the troubleshooting page where it says it."""

    id: str
    text: str
    page: str


@dataclass(frozen=True)
class Component:
    """A part of PlaceOS that can fail, with its documented impacts and what keeps working."""

    id: str
    title: str
    role: str  # what the part does, in the page's words
    impacts: tuple[str, ...]
    unaffected: str  # what the page says keeps working ("" if it says nothing)
    detected_by: str
    eras: str = "A, B, C"


@dataclass(frozen=True)
class Cause:
    """A root cause the diagnosis can name: the components it fails and any impacts of its own."""

    id: str
    title: str
    components: tuple[str, ...] = ()
    impacts: tuple[str, ...] = ()
    advice: str = ""


IMPACTS: dict[str, Impact] = {
    i.id: i
    for i in (
        Impact("driver_faults", "Some drivers stop working: the API cannot reach them",
               "Some drivers may not function as the API won't be able to reach them"),
        Impact("core_clustering", "Core instances cannot join the cluster or launch drivers",
               "Core instances won't be able to join the cluster and won't launch drivers"),
        Impact("execute", "Executing module functions fails",
               "execute and WebSocket requests will fail"),
        Impact("websocket", "WebSocket control sessions fail (bind, exec)",
               "execute and WebSocket requests will fail"),
        Impact("triggers", "Triggers fail", "Triggers will fail"),
        Impact("login", "Users cannot log in", "Most API requests will stop functioning, including authentication"),
        Impact("api_requests", "Most API requests fail", "Most API requests will stop functioning"),
        Impact("status_updates", "Module status changes stop updating",
               "Status changes and signals will stop functioning"),
        Impact("signals", "Signals stop", "Status changes and signals will stop functioning"),
        Impact("cross_driver_calls", "Cross-driver calls fail: module metadata is unavailable",
               "Execute APIs and cross driver communication will be effected as module metadata will be unavailable"),
        Impact("search", "Listing and searching (systems, modules, zones...) fails, mostly seen in Backoffice",
               "API index / listing / searching requests will fail - "
               "this will be mostly apparent when using Backoffice"),
        Impact("driver_execute", "Executes to modules of the failed driver fail",
               "Executes directed at a module running on the driver will fail"),
    )
}  # fmt: skip

COMPONENTS: dict[str, Component] = {
    c.id: c
    for c in (
        Component("etcd", "etcd", "finds running cores and where each module runs",
                  ("driver_faults", "core_clustering", "execute", "websocket", "triggers"),
                  "Most other API requests keep working", "etcd probe fails", eras="A, B"),
        Component("database", "Database (RethinkDB in era A, PostgreSQL in B/C)", "holds the cluster configuration",
                  ("login", "api_requests"), "Existing WebSocket sessions keep working",
                  "rethinkdb or postgres probe fails"),
        Component("redis", "Redis", "holds runtime state: module metadata and status",
                  ("status_updates", "signals", "execute", "cross_driver_calls"), "",
                  "redis probe fails"),
        Component("elasticsearch", "Elasticsearch", "serves the index/list/search routes",
                  ("search",), "All other aspects of the system keep functioning",
                  "elasticsearch probe fails or the cluster is red"),
        Component("core", "Core", "runs the drivers and serves executes",
                  ("execute", "websocket", "driver_faults"), "",
                  "no live core registered, or a registered core does not answer"),
        Component("driver", "Driver", "runs a device's module code",
                  ("driver_execute",), "Executes to other drivers keep working",
                  "a driver failed to compile, is crash-looping or is down with modules; "
                  "or execute fails in the driver"),
        Component("api", "rest-api or load balancer", "answers every user request",
                  ("login", "api_requests"), "", "the API is unreachable or fails while its backends are healthy"),
    )
}  # fmt: skip

# Causes = the components, plus what the page leaves open and the exporter's own problems.
CAUSES: dict[str, Cause] = {
    c.id: c
    for c in (
        *(Cause(comp.id, f"{comp.title} failure", (comp.id,)) for comp in COMPONENTS.values()),
        Cause("api_etcd", "The API cannot reach etcd (etcd itself answers)", (),
              ("execute", "websocket", "driver_faults"),
              "etcd answers the exporter, so check the network path and ETCD_HOST of rest-api"),
        Cause("exporter_config", "The exporter's own settings or credentials are wrong", (), (),
              "a credential or target in the exporter's settings is rejected; PlaceOS itself may be fine"),
        Cause("unknown", "Failing probes match no documented cause", (), (),
              "see the failing probes and their reasons"),
        Cause("none", "Healthy"),
    )
}  # fmt: skip

PAIRS: tuple[tuple[str, str], ...] = tuple((c.id, i) for c in COMPONENTS.values() for i in c.impacts)

# --- the triage as rules --------------------------------------------------------------------------
# For each probe (in the page's triage order: backends first, then login, systems, functions, execute),
# a list of (reasons, candidates). The first entry whose reasons include the probe's failure reason
# and one of whose candidates' condition holds decides: the candidate's target is a cause id, or
# "explained" (an already-found cause accounts for this symptom). Conditions:
#   "always" | "failing:<probe>" | "ok:<probe>" | "cause:<cause>"
# where <probe> "database" means whichever of rethinkdb/postgres runs in the cluster's era.

ANY: frozenset[Reason] | None = None
CREDENTIALS = frozenset({Reason.AUTH_FAILED, Reason.ACCESS_DENIED})
Candidate = tuple[str, str]  # (target, condition)
Rule = tuple[frozenset[Reason] | None, tuple[Candidate, ...]]

# Requests that need a login are explained by a failing login (the page's first question).
_AFTER_LOGIN: Rule = (ANY, (("explained", "failing:login"),))

RULES: dict[ProbeName | str, tuple[Rule, ...]] = {
    ProbeName.ETCD: (
        # PlaceOS does not use etcd auth (internals §1.1): a rejected credential is the exporter's.
        (CREDENTIALS, (("exporter_config", "always"),)),
        (ANY, (("etcd", "always"),)),
    ),
    "database": (
        # Rejected for PlaceOS too (login fails) = database; only for the exporter = its settings.
        (CREDENTIALS, (("database", "failing:login"), ("exporter_config", "always"))),
        (ANY, (("database", "always"),)),
    ),
    ProbeName.REDIS: (
        (CREDENTIALS, (("redis", "failing:module_functions"), ("exporter_config", "always"))),
        (ANY, (("redis", "always"),)),
    ),
    ProbeName.ELASTICSEARCH: (
        (CREDENTIALS, (("elasticsearch", "failing:systems_list"), ("exporter_config", "always"))),
        (ANY, (("elasticsearch", "always"),)),
    ),
    ProbeName.CORE_DISCOVERY: (
        (CREDENTIALS, (("exporter_config", "always"),)),
        # Discovery storage answered and holds no live core (or a stale one): core, in every era.
        (frozenset({Reason.NO_CORE_INSTANCES, Reason.CORE_UNREACHABLE}), (("core", "always"),)),
        # Storage did not answer: etcd (A/B) or Redis (C) is already named for it.
        (ANY, (("explained", "cause:etcd"), ("explained", "cause:redis"), ("unknown", "always"))),
    ),
    ProbeName.API_HEALTH: (
        # The health route checks Redis, etcd and the database itself (internals §5.1), as the API sees them;
        # it fails (5xx) or hangs with them (timeout).
        (frozenset({Reason.HTTP_5XX, Reason.TIMEOUT}), (
            ("explained", "cause:database"), ("explained", "cause:redis"), ("explained", "cause:etcd"),
            ("explained", "cause:api_etcd"),
        )),
        (ANY, (("api", "always"),)),
    ),
    ProbeName.LOGIN: (
        # "Can you log in? If not it's probably a RethinkDB failure or load balancer issue."
        (ANY, (("explained", "cause:database"), ("explained", "cause:api"))),
        # 401 with the database answering the exporter: the exporter's credential is wrong.
        (CREDENTIALS, (("exporter_config", "ok:database"),)),
        (ANY, (("api", "ok:database"), ("api", "failing:api_health"), ("unknown", "always"))),
    ),
    ProbeName.SYSTEMS_LIST: (
        # "Does Backoffice list the systems? If not it's probably an Elasticsearch failure."
        _AFTER_LOGIN,
        (ANY, (("explained", "cause:elasticsearch"), ("explained", "cause:database"), ("unknown", "always"))),
    ),
    ProbeName.MODULE_FUNCTIONS: (
        # "Does the list of modules and module functions load? If not it's probably a Redis failure."
        _AFTER_LOGIN,
        (ANY, (("explained", "cause:redis"),)),
        # 404 "metadata not found": the module is not running; its driver, or the exporter's target.
        (frozenset({Reason.NOT_FOUND}), (("explained", "cause:driver"), ("explained", "cause:core"),
                                         ("exporter_config", "always"))),
        (CREDENTIALS, (("exporter_config", "always"),)),
        (ANY, (("unknown", "always"),)),
    ),
    ProbeName.EXECUTE: (
        # "Does executing a function work? View the response to see the error."
        _AFTER_LOGIN,
        # "no core instances": core down or unable to connect to etcd (Redis holds discovery in era C).
        (frozenset({Reason.NO_CORE_INSTANCES}), (
            ("explained", "cause:etcd"), ("explained", "cause:redis"), ("explained", "cause:core"), ("core", "always"),
        )),
        # "unable to connect to etcd": etcd down, or the API cannot connect to it.
        (frozenset({Reason.ETCD_UNREACHABLE}), (("explained", "cause:etcd"), ("api_etcd", "always"))),
        (frozenset({Reason.CORE_UNREACHABLE}), (("explained", "cause:core"), ("core", "always"))),
        (frozenset({Reason.DRIVER_ERROR}), (("explained", "cause:driver"), ("driver", "always"))),
        (frozenset({Reason.NOT_FOUND}), (
            ("explained", "cause:redis"), ("explained", "cause:driver"), ("explained", "cause:core"),
            ("driver", "always"),
        )),
        (CREDENTIALS, (("exporter_config", "always"),)),
        (ANY, (
            ("explained", "cause:redis"), ("explained", "cause:core"), ("explained", "cause:etcd"),
            ("explained", "cause:api_etcd"), ("unknown", "always"),
        )),
    ),
    ProbeName.WEBSOCKET: (
        _AFTER_LOGIN,
        (frozenset({Reason.NO_CORE_INSTANCES}), (
            ("explained", "cause:core"), ("explained", "cause:etcd"), ("explained", "cause:redis"), ("core", "always"),
        )),
        (frozenset({Reason.ETCD_UNREACHABLE}), (("explained", "cause:etcd"), ("api_etcd", "always"))),
        (frozenset({Reason.CORE_UNREACHABLE}), (("explained", "cause:core"), ("core", "always"))),
        (frozenset({Reason.DRIVER_ERROR, Reason.NOT_FOUND}), (
            ("explained", "cause:redis"), ("explained", "cause:driver"), ("driver", "always"),
        )),
        (CREDENTIALS, (("exporter_config", "always"),)),
        (ANY, (
            ("explained", "cause:redis"), ("explained", "cause:core"), ("explained", "cause:etcd"),
            ("explained", "cause:api_etcd"), ("explained", "cause:api"), ("unknown", "always"),
        )),
    ),
    ProbeName.DRIVERS: (
        _AFTER_LOGIN,
        (CREDENTIALS, (("exporter_config", "always"),)),
        (frozenset({Reason.DRIVER_ERROR}), (("driver", "always"),)),
        (ANY, (("explained", "cause:api"), ("explained", "cause:core"), ("explained", "cause:database"),
               ("explained", "cause:etcd"), ("explained", "cause:redis"), ("explained", "cause:api_etcd"),
               ("unknown", "always"))),
    ),
    ProbeName.TRIGGERS_HEALTH: (
        (ANY, (("explained", "cause:database"), ("explained", "cause:redis"), ("explained", "cause:etcd"),
               ("unknown", "always"))),
    ),
}  # fmt: skip

# The order the diagnosis walks the probes in: the backends seen directly, then the symptoms whose
# reason names a cause by itself (no core instances, etcd unreachable, driver errors), then the
# general ones (health route, login, listing, functions), which are mostly explained by what was
# found before. ``check`` and the status page still present the page's own order (report.STEPS).
TRIAGE_ORDER: tuple[ProbeName | str, ...] = (
    ProbeName.ETCD,
    "database",
    ProbeName.REDIS,
    ProbeName.ELASTICSEARCH,
    ProbeName.CORE_DISCOVERY,
    ProbeName.EXECUTE,
    ProbeName.WEBSOCKET,
    ProbeName.DRIVERS,
    ProbeName.API_HEALTH,
    ProbeName.LOGIN,
    ProbeName.SYSTEMS_LIST,
    ProbeName.MODULE_FUNCTIONS,
    ProbeName.TRIGGERS_HEALTH,
)

DATABASE_PROBES = (ProbeName.RETHINKDB, ProbeName.POSTGRES)


def impacts_of(cause_ids: set[str] | frozenset[str]) -> set[str]:
    """Every impact the given causes imply: their components' documented impacts and their own."""
    out: set[str] = set()
    for cause_id in cause_ids:
        cause = CAUSES[cause_id]
        out.update(cause.impacts)
        for component in cause.components:
            out.update(COMPONENTS[component].impacts)
    return out


# --- the runbook: how to confirm and recover, per cause (docs/runbook.md and alert runbook_url) -------
# The page's troubleshooting steps, the health routes of internals §7 and the debug-log tip of §9.
DEBUG_LOGS = (
    "Get debug logs from a PlaceOS service: `ps aux | grep <service>` on its host, then `kill -USR1 <pid>` "
    "toggles trace logging (internals §7)."
)


@dataclass(frozen=True)
class RunbookEntry:
    confirm: tuple[str, ...]
    recover: tuple[str, ...]


RUNBOOK: dict[str, RunbookEntry] = {
    "etcd": RunbookEntry(
        confirm=("`etcdctl --endpoints http://$ETCD_HOST:$ETCD_PORT endpoint health` (and `endpoint status -w table` "
                 "for the leader)",
                 "`curl -s -XPOST http://$ETCD_HOST:$ETCD_PORT/v3/maintenance/status -d '{}'`: what rest-api and core "
                 "check (internals §1.1)",
                 "Execute a function from Backoffice: the error names core instances or etcd"),
        recover=("Restart the etcd member(s); check disk space (NOSPACE alarm: `etcdctl alarm list`, then "
                 "`etcdctl defrag` and `etcdctl alarm disarm`)",
                 "Cores re-register within the lease TTL (15 s); restart core if "
                 "`placeos_core_instances{state=\"live\"}` stays 0")),
    "database": RunbookEntry(
        confirm=("Can you log in to Backoffice? A 401 `unknown X-API-Key` is also what PlaceOS answers while its "
                 "database is down (internals §5.2)",
                 "RethinkDB (era A): the admin UI or `r.db('rethinkdb').table('server_status')`; PostgreSQL (B/C): "
                 "`pg_isready -h $PG_HOST` and `psql -c 'select datname from pg_stat_activity'`",
                 "`curl -i https://<placeos>/api/engine/v2/` returns 500 while a backend is down"),
        recover=("Restart or fail over the database; check disk and credentials (`RETHINKDB_PASSWORD` / "
                 "`PG_PASSWORD`) of rest-api, core and auth",
                 "Existing WebSocket sessions keep working meanwhile; new logins fail until it is back")),
    "redis": RunbookEntry(
        confirm=("`redis-cli -u $REDIS_URL ping`",
                 "Open a system in Backoffice: do the modules and module functions load? (the page's Redis step)"),
        recover=("Restart Redis; module status and metadata are rewritten by the drivers as they reconnect",
                 "In era C core discovery lives in Redis too: check `placeos_core_instances` after recovery")),
    "elasticsearch": RunbookEntry(
        confirm=("`curl -s http://$ELASTIC_HOST:$ELASTIC_PORT/_cluster/health?pretty` (red = down)",
                 "Does Backoffice list the systems? (the page's Elasticsearch step)"),
        recover=("Bring Elasticsearch back (red: unassigned primary shards, `GET /_cluster/allocation/explain`)",
                 "If indices are empty or behind, `POST /api/search-ingest/v1/reindex` then `/backfill`")),
    "core": RunbookEntry(
        confirm=("`placeos_core_instances`: live 0 means no core registered; stale > 0 (era C) means a core died "
                 "without deregistering and the API still routes to it (internals §1.2)",
                 "`curl http://<core>:3000/api/core/v1/` on each core; execute error `No registered core instances`"),
        recover=("Restart core; in era C, if a dead core's entry stays, `POST /api/engine/v2/cluster/rebalance` or "
                 "restart a live core (registered cores prune expired entries)",)),
    "driver": RunbookEntry(
        confirm=("`placeos_driver_up == 0` names the driver; Backoffice > Drivers shows compilation output",
                 "`GET /api/engine/v2/cluster/<core>?include_status=true`: `running`, `launch_count`, "
                 "`last_exit_code` (internals §11.1)"),
        recover=("Fix the driver and recompile (`POST /api/engine/v2/drivers/<id>/recompile`), or roll back its "
                 "commit; a crash loop shows as a rising `placeos_driver_launches_total`",)),
    "api": RunbookEntry(
        confirm=("`curl -i https://<placeos>/api/engine/v2/` through the load balancer and directly to rest-api "
                 "(port 3000): is the request reaching the service?",
                 "Load balancer / nginx logs, rest-api container health "
                 "(`/rest-api -c http://127.0.0.1:3000/api/engine/v2/`)"),
        recover=("Restart rest-api or fix the load balancer route; backends are healthy in this case",)),
    "api_etcd": RunbookEntry(
        confirm=("etcd answers the exporter, but execute says `unable to connect to etcd`: check `ETCD_HOST`/"
                 "`ETCD_PORT` of rest-api and the network path from rest-api to etcd",),
        recover=("Fix the rest-api's etcd address or network policy, then restart rest-api",)),
    "exporter_config": RunbookEntry(
        confirm=("`placeos-exporter check` from the exporter's host, and `placeos-exporter check-config` (secrets "
                 "masked): which credential or target is rejected?",),
        recover=("Correct the exporter's settings (API key of a support/admin user with the cluster and public "
                 "scopes, backend passwords, system/module/function to probe) and reload (`POST /-/reload`)",)),
    "unknown": RunbookEntry(
        confirm=("`/diagnose` lists the failing probes and their reasons; walk the page's triage: login, systems "
                 "list, modules and functions, execute",),
        recover=("Follow the failing probe's backend section above",)),
}  # fmt: skip
