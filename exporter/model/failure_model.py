"""The failure model: the troubleshooting page as rows (design §3, internals §9). Pure data, no I/O.

Everything the product says about failures comes from these rows, and each row carries everything
said about it:

- ``IMPACTS``: what users feel, quoting the page. ``COMPONENTS``: the parts that fail and their impacts.
- ``CAUSES``: what the diagnosis can name; each with its alert (name, severity), its runbook text
  (confirm, recover) and the other alerts it explains.
- ``SYMPTOMS``: one row per probe, in triage order, with the page's question it answers, its alert (for
  the user paths) and its triage rules as typed objects that ``model.triage`` interprets.

The diagnosis, ``placeos_failure_mode``, the alerts, inhibit rules, runbook, ``check`` steps and the
status page are all derived from these rows; tests prove every probe has its symptom and every cause
its alert and runbook.
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.model.vocabulary import ALL_ERAS, CREDENTIAL_REASONS, Era, ProbeName, Reason

# Where the runbook generated from these rows is published (the alerts' runbook_url; generator config).
RUNBOOK_URL = "https://github.com/PlaceOS/placeos-exporter/blob/main/docs/runbook.md"


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
    eras: frozenset[Era] = ALL_ERAS  # where the cluster has this part at all


@dataclass(frozen=True)
class CauseAlert:
    """The root-cause alert of a cause: critical pages now, warning is a ticket (monitoring mixins)."""

    name: str
    severity: str


@dataclass(frozen=True)
class Runbook:
    """How to confirm a cause and recover from it (docs/runbook.md, the status page, ``check``)."""

    confirm: tuple[str, ...]
    recover: tuple[str, ...]


@dataclass(frozen=True)
class Cause:
    """A root cause the diagnosis can name: the components it fails and any impacts of its own."""

    id: str
    title: str
    components: tuple[str, ...] = ()
    impacts: tuple[str, ...] = ()
    advice: str = ""
    alert: CauseAlert | None = None
    runbook: Runbook | None = None
    silences: tuple[str, ...] = ()  # other (non-symptom) alerts this cause explains
    playbook: str = ""  # PlaceOS's own ai-support-agent diagnostic playbook for this failure (placeos-2026 §3)


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
        Impact("stale_search", "Lists and searches are stale: new and changed items are missing", ""),
        Impact("driver_execute", "Executes to modules of the failed driver fail",
               "Executes directed at a module running on the driver will fail"),
    )
}  # fmt: skip

COMPONENTS: dict[str, Component] = {
    c.id: c
    for c in (
        Component("etcd", "etcd", "finds running cores and where each module runs",
                  ("driver_faults", "core_clustering", "execute", "websocket", "triggers"),
                  "Most other API requests keep working", "etcd probe fails", eras=frozenset({Era.A, Era.B})),
        Component("database", "Database (RethinkDB in era A, PostgreSQL from B)", "holds the cluster configuration",
                  ("login", "api_requests"), "Existing WebSocket sessions keep working",
                  "rethinkdb or postgres probe fails"),
        Component("redis", "Redis", "holds runtime state: module metadata and status",
                  ("status_updates", "signals", "execute", "cross_driver_calls"), "",
                  "redis probe fails"),
        Component("elasticsearch", "Elasticsearch", "serves the index/list/search routes (eras A-C)",
                  ("search",), "All other aspects of the system keep functioning",
                  "elasticsearch probe fails or the cluster is red", eras=frozenset({Era.A, Era.B, Era.C})),
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

DEBUG_LOGS = (
    "Get debug logs from a PlaceOS service: `ps aux | grep <service>` on its host, then `kill -USR1 <pid>` "
    "toggles trace logging (internals §7)."
)

# Causes = the components, plus what the page leaves open and the exporter's own problems. The runbook
# text: the page's troubleshooting steps, the health routes of internals §7 and the debug-log tip of §9.
CAUSES: dict[str, Cause] = {
    c.id: c
    for c in (
        Cause("etcd", "etcd failure", ("etcd",),
              alert=CauseAlert("PlaceOSEtcdDown", "critical"),
              playbook="platform-pods-unhealthy",
              runbook=Runbook(
        confirm=("`etcdctl --endpoints http://$ETCD_HOST:$ETCD_PORT endpoint health` (and `endpoint status -w table` "
                 "for the leader)",
                 "`curl -s -XPOST http://$ETCD_HOST:$ETCD_PORT/v3/maintenance/status -d '{}'`: what rest-api and core "
                 "check (internals §1.1)",
                 "Execute a function from Backoffice: the error names core instances or etcd"),
        recover=("Restart the etcd member(s); check disk space (NOSPACE alarm: `etcdctl alarm list`, then "
                 "`etcdctl defrag` and `etcdctl alarm disarm`)",
                 "Cores re-register within the lease TTL (15 s); restart core if "
                 "`placeos_core_instances{state=\"live\"}` stays 0"))),
        Cause("database", "Database (RethinkDB in era A, PostgreSQL from B) failure", ("database",),
              alert=CauseAlert("PlaceOSDatabaseDown", "critical"),
              playbook="platform-pods-unhealthy",
              runbook=Runbook(
        confirm=("Can you log in to Backoffice? A 401 `unknown X-API-Key` is also what PlaceOS answers while its "
                 "database is down (internals §5.2)",
                 "RethinkDB (era A): the admin UI or `r.db('rethinkdb').table('server_status')`; PostgreSQL (B/C): "
                 "`pg_isready -h $PG_HOST` and `psql -c 'select datname from pg_stat_activity'`",
                 "`curl -i https://<placeos>/api/engine/v2/` returns 500 while a backend is down"),
        recover=("Restart or fail over the database; check disk and credentials (`RETHINKDB_PASSWORD` / "
                 "`PG_PASSWORD`) of rest-api, core and auth",
                 "Existing WebSocket sessions keep working meanwhile; new logins fail until it is back")),
              silences=("PlaceOSSearchIndexLagging",)),
        Cause("redis", "Redis failure", ("redis",),
              alert=CauseAlert("PlaceOSRedisDown", "critical"),
              playbook="platform-pods-unhealthy",
              runbook=Runbook(
        confirm=("`redis-cli -u $REDIS_URL ping`",
                 "Open a system in Backoffice: do the modules and module functions load? (the page's Redis step)"),
        recover=("Restart Redis; module status and metadata are rewritten by the drivers as they reconnect",
                 "In era C core discovery lives in Redis too: check `placeos_core_instances` after recovery"))),
        Cause("elasticsearch", "Elasticsearch failure", ("elasticsearch",),
              alert=CauseAlert("PlaceOSElasticsearchDown", "warning"),
              playbook="platform-pods-unhealthy",
              runbook=Runbook(
        confirm=("`curl -s http://$ELASTIC_HOST:$ELASTIC_PORT/_cluster/health?pretty` (red = down)",
                 "Does Backoffice list the systems? (the page's Elasticsearch step)"),
        recover=("Bring Elasticsearch back (red: unassigned primary shards, `GET /_cluster/allocation/explain`)",
                 "If indices are empty or behind, `POST /api/search-ingest/v1/reindex` then `/backfill`")),
              silences=("PlaceOSElasticsearchRed", "PlaceOSSearchIndexLagging")),
        Cause("core", "Core failure", ("core",),
              alert=CauseAlert("PlaceOSCoreDown", "critical"),
              playbook="platform-pods-unhealthy",
              runbook=Runbook(
        confirm=("`placeos_core_instances`: live 0 means no core registered; stale > 0 (era C) means a core died "
                 "without deregistering and the API still routes to it (internals §1.2)",
                 "`curl http://<core>:3000/api/core/v1/` on each core; execute error `No registered core instances`"),
        recover=("Restart core; in era C, if a dead core's entry stays, `POST /api/engine/v2/cluster/rebalance` or "
                 "restart a live core (registered cores prune expired entries)",)),
              silences=("PlaceOSCoreRegistrationStale",)),
        Cause("driver", "Driver failure", ("driver",),
              alert=CauseAlert("PlaceOSDriverFailing", "warning"),
              playbook="driver-compile-failure",
              runbook=Runbook(
        confirm=("`placeos_driver_up == 0` names the driver; Backoffice > Drivers shows compilation output",
                 "`GET /api/engine/v2/cluster/<core>?include_status=true`: `running`, `launch_count`, "
                 "`last_exit_code` (internals §11.1)"),
        recover=("Fix the driver and recompile (`POST /api/engine/v2/drivers/<id>/recompile`), or roll back its "
                 "commit; a crash loop shows as a rising `placeos_driver_launches_total`",))),
        Cause("api", "rest-api or load balancer failure", ("api",),
              alert=CauseAlert("PlaceOSApiUnreachable", "critical"),
              playbook="api-timeout",
              runbook=Runbook(
        confirm=("`curl -i https://<placeos>/api/engine/v2/` through the load balancer and directly to rest-api "
                 "(port 3000): is the request reaching the service?",
                 "Load balancer / nginx logs, rest-api container health "
                 "(`/rest-api -c http://127.0.0.1:3000/api/engine/v2/`)"),
        recover=("Restart rest-api or fix the load balancer route; backends are healthy in this case",)),
              silences=("PlaceOSDriverDown",)),
        Cause("api_etcd", "The API cannot reach etcd (etcd itself answers)", (),
              ("execute", "websocket", "driver_faults"),
              advice="etcd answers the exporter, so check the network path and ETCD_HOST of rest-api",
              alert=CauseAlert("PlaceOSApiCannotReachEtcd", "critical"),
              playbook="platform-pods-unhealthy",
              runbook=Runbook(
        confirm=("etcd answers the exporter, but execute says `unable to connect to etcd`: check `ETCD_HOST`/"
                 "`ETCD_PORT` of rest-api and the network path from rest-api to etcd",),
        recover=("Fix the rest-api's etcd address or network policy, then restart rest-api",))),
        Cause("search_ingest", "search-ingest has stalled: search indices fall behind the database", (),
              ("stale_search",),
              advice="lists and searches miss new and changed items; everything else works",
              alert=CauseAlert("PlaceOSSearchIngestStalled", "warning"),
              playbook="search-index-stale",
              runbook=Runbook(
        confirm=("`placeos_search_index_lag_documents` stays above the threshold between counts: which indices",
                 "`GET /api/search-ingest/v1/` (search-ingest's health) and its logs"),
        recover=("Restart search-ingest; then `POST /api/search-ingest/v1/reindex` and `/backfill` to catch up",)),
              silences=("PlaceOSSearchIndexLagging",)),
        Cause("redis_pubsub", "Redis answers, but status updates are lost (pub/sub)", (),
              ("status_updates", "signals"),
              advice="PING and executes work while status changes no longer reach WebSocket clients: a Redis "
                     "subscriber lost its subscriptions (driver #170/#171, rest-api #375)",
              alert=CauseAlert("PlaceOSStatusUpdatesLost", "critical"),
              runbook=Runbook(
        confirm=("Bind a status in Backoffice (or the exporter's websocket probe): no notify arrives while "
                 "`redis-cli ping` answers and executes work",
                 "rest-api logs `redis_reconnects` with every health check: a count that rose is the trigger"),
        recover=("Restart rest-api (and core, whose drivers subscribe too) so they subscribe again",
                 "Upgrade past the reconnect fixes (driver #170/#171, rest-api #375)")),
              playbook="platform-pods-unhealthy"),
        Cause("modules_not_loaded", "Modules are loaded on no core", (), ("driver_execute",),
              advice="after a core restart the discovery events may not have fired (fixed in 2.2405.1), a core "
                     "is missing, or the driver binary is missing on the node",
              alert=CauseAlert("PlaceOSModulesNotLoaded", "warning"),
              runbook=Runbook(
        confirm=("`GET /api/engine/v2/cluster/<core>?include_status=true` per core: the module ids a system "
                 "lists (`GET /api/engine/v2/systems/<id>`) appear under no driver's `local.modules`",
                 "The platform version (`GET /api/engine/v2/version`): before 2.2405.1 a core restart could "
                 "leave modules unloaded"),
        recover=("Restart the cores one at a time, waiting for each to load its modules",
                 "If a binary is missing on a node, recompile the driver "
                 "(`POST /api/engine/v2/drivers/<id>/recompile`)")),
              playbook="modules-not-loaded"),
        Cause("build_service", "The build service is unreachable: drivers cannot compile", (), (),
              advice="running drivers keep working; new drivers and updates cannot compile until the cores reach "
                     "the build service again",
              alert=CauseAlert("PlaceOSBuildServiceUnreachable", "warning"),
              runbook=Runbook(
        confirm=("`GET /api/engine/v2/build/monitor` answers 5xx `Call to Build service endpoint failed ...` "
                 "(rest-api #413)",
                 "From a core: `curl $BUILD_URL/api/build/v1/` (internals §11.3) through its proxy"),
        recover=("Restore the build service, or the proxy or firewall path from the cores to `BUILD_URL`",
                 "Then recompile the drivers that failed meanwhile")),
              silences=("PlaceOSDriverDown",),
              playbook="driver-compile-failure"),
        Cause("api_backend", "A backend behind the API fails (seen only through the API)",
              advice="rest-api's health route fails while no directly probed backend does: Redis, the database "
                     "or etcd as the API sees them; configure the backend probes (REDIS_URL, PG_*, ETCD_*) to tell "
                     "which",
              alert=CauseAlert("PlaceOSApiBackendFailing", "critical"),
              playbook="platform-pods-unhealthy",
              runbook=Runbook(
        confirm=("`curl -i https://<placeos>/api/engine/v2/` answers 500: rest-api's health check (Redis PING, the "
                 "database query, etcd in eras A/B) failed (internals §5.1)",
                 "rest-api's logs name the backend it could not reach; from a rest-api pod: "
                 "`redis-cli -u $REDIS_URL ping`, `pg_isready -h $PG_HOST`"),
        recover=("Restore the backend rest-api cannot reach (or the network path to it), then the health route "
                 "answers 200",
                 "Give the exporter direct access to the backends so the next failure names the backend itself")),
              silences=("PlaceOSDriverDown",)),
        Cause("exporter_config", "The exporter's own settings or credentials are wrong",
              advice="a credential or target in the exporter's settings is rejected; PlaceOS itself may be fine",
              alert=CauseAlert("PlaceOSExporterMisconfigured", "warning"),
              playbook="http-authentication-failure",
              runbook=Runbook(
        confirm=("`placeos-exporter check` from the exporter's host, and `placeos-exporter check-config` (secrets "
                 "masked): which credential or target is rejected?",),
        recover=("Correct the exporter's settings (API key of a support/admin user with the cluster and public "
                 "scopes, backend passwords, system/module/function to probe) and reload (`POST /-/reload`)",))),
        Cause("unknown", "Failing probes match no documented cause", advice="see the failing probes and their reasons",
              alert=CauseAlert("PlaceOSUnexplainedFailure", "warning"),
              playbook="unknown-incident",
              runbook=Runbook(
        confirm=("`/diagnose` lists the failing probes and their reasons; walk the page's triage: login, systems "
                 "list, modules and functions, execute",),
        recover=("Follow the failing probe's backend section above",))),
        Cause("none", "Healthy"),
    )
}  # fmt: skip

PAIRS: tuple[tuple[str, str], ...] = tuple((c.id, i) for c in COMPONENTS.values() for i in c.impacts)


def impacts_of(cause_ids: set[str] | frozenset[str]) -> set[str]:
    """Every impact the given causes imply: their components' documented impacts and their own."""
    out: set[str] = set()
    for cause_id in cause_ids:
        cause = CAUSES[cause_id]
        out.update(cause.impacts)
        for component in cause.components:
            out.update(COMPONENTS[component].impacts)
    return out


# --- triage rules: typed conditions and outcomes, interpreted by model.triage ----------------------


@dataclass(frozen=True)
class Failing:
    """Holds when one of these probes runs and fails."""

    probes: tuple[str, ...]


@dataclass(frozen=True)
class Passing:
    """Holds when one of these probes runs and passes."""

    probes: tuple[str, ...]


@dataclass(frozen=True)
class Unprobed:
    """Holds when none of these probes runs (an API-only cluster): the API's own word must decide."""

    probes: tuple[str, ...]


@dataclass(frozen=True)
class InEras:
    """Holds in these eras (not where the era is unknown)."""

    eras: frozenset[Era]


@dataclass(frozen=True)
class AllOf:
    """Holds when every one of these conditions holds."""

    conditions: tuple[Failing | Passing | Unprobed | InEras, ...]


Condition = Failing | Passing | Unprobed | InEras | AllOf | None  # None: always


@dataclass(frozen=True)
class Blame:
    """The symptom is this cause (when the condition holds)."""

    cause: str
    when: Condition = None


@dataclass(frozen=True)
class ExplainedBy:
    """The symptom is explained by a cause found earlier in the walk (filed under it, no new cause)."""

    cause: str


@dataclass(frozen=True)
class AfterProbe:
    """The symptom follows from another failing probe ("a request that needs a login fails because the
    login does"): filed under whatever cause explains that probe."""

    probe: str


Verdict = Blame | ExplainedBy | AfterProbe


@dataclass(frozen=True)
class Rule:
    """For these reasons (None: any failing reason), the first verdict that holds decides."""

    reasons: frozenset[Reason] | None
    then: tuple[Verdict, ...]


@dataclass(frozen=True)
class SymptomAlert:
    """A symptom alert for a user path: fires on the failing probe, inhibited while a cause explains it."""

    name: str
    summary: str


@dataclass(frozen=True)
class Symptom:
    """One probe failing, as the page sees it: its question, what it is called, how triage reads it."""

    probe: str
    question: str
    rules: tuple[Rule, ...]
    alert: SymptomAlert | None = None
    works: str = ""  # what users can still do while this probe passes ("logins"), said by the verdict


# The page's questions, in its order: the steps of ``check`` and of the status page.
BACKENDS = "Do the backends answer? (etcd, database, Redis, Elasticsearch)"
LOGIN = "Can you log in?"
LISTING = "Does Backoffice list the systems?"
FUNCTIONS = "Do the modules and module functions load?"
EXECUTE = "Does executing a function work?"
CORES = "Are cores registered and drivers running?"
QUESTIONS: tuple[str, ...] = (BACKENDS, LOGIN, LISTING, FUNCTIONS, EXECUTE, CORES)

P = ProbeName
DATABASE = (P.RETHINKDB.value, P.POSTGRES.value)  # whichever runs in the cluster's era
ANY = None
CREDENTIALS = CREDENTIAL_REASONS
NO_CORE = frozenset({Reason.NO_CORE_INSTANCES})
ETCD_UNREACHABLE = frozenset({Reason.ETCD_UNREACHABLE})
CORE_UNREACHABLE = frozenset({Reason.CORE_UNREACHABLE})
DRIVER_ERROR = frozenset({Reason.DRIVER_ERROR})
NOT_FOUND = frozenset({Reason.NOT_FOUND})

# Requests that need a login are explained by a failing login (the page's first question).
AFTER_LOGIN = Rule(ANY, (AfterProbe(P.LOGIN),))
# A backend that rejects the exporter's credential answered: it is up, and the credential is the
# exporter's (its own settings), whichever backend and however many reject it.
EXPORTER_CREDENTIAL = Rule(CREDENTIALS, (Blame("exporter_config"),))
# Unless PlaceOS is refused too (its logins fail and its health route with them): the password changed
# for everyone, and the database is down for PlaceOS.
DATABASE_RULES = (
    Rule(
        CREDENTIALS,
        (Blame("database", AllOf((Failing((P.LOGIN,)), Failing((P.API_HEALTH,))))), Blame("exporter_config")),
    ),
    Rule(ANY, (Blame("database"),)),
)
REDIS_UNREACHABLE = frozenset({Reason.REDIS_UNREACHABLE})
DATABASE_UNREACHABLE = frozenset({Reason.DATABASE_UNREACHABLE})
API_ONLY_DATABASE = AllOf((Failing((P.API_HEALTH,)), Unprobed(DATABASE)))
# What an execute's (or a control session's) error names: a backend the API could not reach. With the
# backend probed, its own probe decides; API-only, the API's word names it (internals §5.3).
NAMED_BACKEND_RULES = (
    # "no core instances": core down or unable to connect to etcd (Redis holds discovery in era C).
    Rule(NO_CORE, (ExplainedBy("etcd"), ExplainedBy("redis"), ExplainedBy("core"), Blame("core"))),
    # "unable to connect to etcd": etcd down, or the API cannot connect to it (the etcd probe decides).
    Rule(ETCD_UNREACHABLE, (ExplainedBy("etcd"), Blame("api_etcd", Passing((P.ETCD,))), Blame("etcd"))),
    Rule(REDIS_UNREACHABLE, (ExplainedBy("redis"), Blame("redis", Unprobed((P.REDIS,))), Blame("api_backend"))),
    Rule(DATABASE_UNREACHABLE, (ExplainedBy("database"), Blame("database", Unprobed(DATABASE)), Blame("api_backend"))),
    Rule(CORE_UNREACHABLE, (ExplainedBy("core"), Blame("core"))),
)
BEHIND_THE_API = (
    ExplainedBy("database"),
    ExplainedBy("redis"),
    ExplainedBy("etcd"),
    ExplainedBy("api_etcd"),
    ExplainedBy("api_backend"),
)

# In triage order: the backends seen directly, then the symptoms whose reason names a cause by itself
# (no core instances, a backend the API cannot reach, driver errors), then the general ones (login,
# health route, listing, functions), which are mostly explained by what was found before.
SYMPTOMS: tuple[Symptom, ...] = (
    Symptom(P.ETCD, BACKENDS, (
        # PlaceOS does not use etcd auth (internals §1.1): a rejected credential, or credentials sent to an
        # etcd without auth (HTTP 412), is the exporter's.
        EXPORTER_CREDENTIAL,
        Rule(ANY, (Blame("etcd"),)),
    )),
    Symptom(P.RETHINKDB, BACKENDS, DATABASE_RULES),
    Symptom(P.POSTGRES, BACKENDS, DATABASE_RULES),
    Symptom(P.REDIS, BACKENDS, (EXPORTER_CREDENTIAL, Rule(ANY, (Blame("redis"),)))),
    Symptom(P.ELASTICSEARCH, BACKENDS, (EXPORTER_CREDENTIAL, Rule(ANY, (Blame("elasticsearch"),)))),
    Symptom(P.CORE_DISCOVERY, CORES, (
        EXPORTER_CREDENTIAL,
        # Discovery storage answered and holds no live core (or a stale one): core, in every era.
        Rule(NO_CORE | CORE_UNREACHABLE, (Blame("core"),)),
        # Storage did not answer: etcd (A/B) or Redis (C) is already named for it.
        Rule(ANY, (ExplainedBy("etcd"), ExplainedBy("redis"), Blame("unknown"))),
    )),
    Symptom(P.DRIVERS, CORES, (
        AFTER_LOGIN,
        Rule(CREDENTIALS, (Blame("exporter_config"),)),
        Rule(frozenset({Reason.NOT_LOADED}), (ExplainedBy("core"), Blame("modules_not_loaded"))),
        # A compile failure while the build service is unreachable is the build service's (placeos-2026 §2).
        Rule(DRIVER_ERROR, (ExplainedBy("build_service"), Blame("driver"))),
        # No core registered, or a registered core that does not answer the cluster route (internals §11.1).
        Rule(NO_CORE | CORE_UNREACHABLE, (ExplainedBy("etcd"), ExplainedBy("redis"), ExplainedBy("core"),
                                          Blame("core"))),
        Rule(ANY, (ExplainedBy("api"), ExplainedBy("core"), *BEHIND_THE_API, Blame("unknown"))),
    )),
    Symptom(P.EXECUTE, EXECUTE, (
        # "Does executing a function work? View the response to see the error."
        AFTER_LOGIN,
        *NAMED_BACKEND_RULES,
        Rule(DRIVER_ERROR, (ExplainedBy("modules_not_loaded"), ExplainedBy("driver"), Blame("driver"))),
        # "module not found": its driver never ran (the drivers probe says so), else the exporter's target.
        Rule(NOT_FOUND, (ExplainedBy("redis"), ExplainedBy("driver"), ExplainedBy("core"),
                         Blame("exporter_config", Passing((P.DRIVERS,))), Blame("driver"))),
        Rule(CREDENTIALS, (Blame("exporter_config"),)),
        Rule(ANY, (ExplainedBy("redis"), ExplainedBy("core"), ExplainedBy("etcd"), ExplainedBy("api_etcd"),
                   ExplainedBy("api_backend"), Blame("unknown"))),
    ), SymptomAlert("PlaceOSExecuteFailing", "Executing module functions fails"), works="executing functions"),
    Symptom(P.WEBSOCKET, EXECUTE, (
        AFTER_LOGIN,
        *NAMED_BACKEND_RULES,
        Rule(DRIVER_ERROR | NOT_FOUND, (ExplainedBy("redis"), ExplainedBy("modules_not_loaded"),
                                        ExplainedBy("driver"), Blame("driver"))),
        # Bound, but no notify while Redis reads and executes work: deliveries are lost (placeos-2026 §2).
        Rule(frozenset({Reason.TIMEOUT}), (ExplainedBy("redis"), ExplainedBy("core"), ExplainedBy("api_backend"),
                                           Blame("redis_pubsub", AllOf((Passing((P.EXECUTE,)),
                                                                        Passing((P.MODULE_FUNCTIONS,))))))),
        Rule(CREDENTIALS, (Blame("exporter_config"),)),
        # No notify after a bind: the module has no status (its driver never ran) or is not the exporter's
        # to bind (a bind to a missing system or module is answered success and never notified, §5.4).
        Rule(ANY, (ExplainedBy("redis"), ExplainedBy("core"), ExplainedBy("etcd"), ExplainedBy("api_etcd"),
                   ExplainedBy("api_backend"), ExplainedBy("api"), ExplainedBy("driver"),
                   ExplainedBy("exporter_config"), Blame("unknown"))),
    ), SymptomAlert("PlaceOSWebSocketFailing", "WebSocket control sessions fail")),
    Symptom(P.LOGIN, LOGIN, (
        # "Can you log in? If not it's probably a RethinkDB failure or load balancer issue."
        Rule(ANY, (ExplainedBy("database"), ExplainedBy("api"))),
        # 401 "unknown X-API-Key" is also the answer while the database is down (internals §5.2): with the
        # health route failing too and no database probe, that is the database; otherwise the key.
        Rule(CREDENTIALS, (Blame("database", API_ONLY_DATABASE), Blame("exporter_config"))),
        Rule(ANY, (Blame("api", Passing(DATABASE)), Blame("api", Failing((P.API_HEALTH,))), Blame("unknown"))),
    ), SymptomAlert("PlaceOSLoginFailing", "Users cannot log in"), works="logins"),
    Symptom(P.API_HEALTH, LOGIN, (
        # The route checks Redis, the database (and etcd in eras A/B) itself and answers 500 when one fails
        # (internals §5.1); it hangs with a hung backend. No answer, or a proxy's 502/503: rest-api itself.
        Rule(frozenset({Reason.UNHEALTHY}), (*BEHIND_THE_API, Blame("api_backend"))),
        Rule(frozenset({Reason.TIMEOUT}), (*BEHIND_THE_API, Blame("api_backend", Passing((P.LOGIN,))),
                                           Blame("api"))),
        Rule(ANY, (Blame("api"),)),
    )),
    Symptom(P.SYSTEMS_LIST, LISTING, (
        # "Does Backoffice list the systems? If not it's probably an Elasticsearch failure." The health
        # route does not check Elasticsearch, so API-only a failing list with logins working is it. In era
        # D lists are PostgreSQL full-text search (placeos-2026 §1): the database.
        AFTER_LOGIN,
        Rule(CREDENTIALS, (Blame("exporter_config"),)),
        Rule(ANY, (ExplainedBy("elasticsearch"), ExplainedBy("database"), ExplainedBy("api_backend"),
                   Blame("database", InEras(frozenset({Era.D}))),
                   Blame("elasticsearch", AllOf((Unprobed((P.ELASTICSEARCH,)), Passing((P.LOGIN,))))),
                   Blame("unknown"))),
    ), SymptomAlert("PlaceOSSearchFailing", "Backoffice cannot list systems"), works="listing and search"),
    Symptom(P.MODULE_FUNCTIONS, FUNCTIONS, (
        # "Does the list of modules and module functions load? If not it's probably a Redis failure." The
        # functions come from Redis alone (internals §3.3): API-only, its 500 is Redis.
        AFTER_LOGIN,
        Rule(ANY, (ExplainedBy("redis"),)),
        Rule(frozenset({Reason.HTTP_5XX}), (ExplainedBy("api_backend"), Blame("redis", Unprobed((P.REDIS,))))),
        # 404 "metadata not found": the module is not running; its driver, or the exporter's target.
        Rule(NOT_FOUND, (ExplainedBy("driver"), ExplainedBy("core"), Blame("exporter_config"))),
        Rule(CREDENTIALS, (Blame("exporter_config"),)),
        Rule(ANY, (Blame("unknown"),)),
    ), SymptomAlert("PlaceOSModuleFunctionsFailing", "Modules and their functions do not load")),
    Symptom(P.TRIGGERS_HEALTH, CORES, (
        Rule(ANY, (*BEHIND_THE_API, ExplainedBy("api"), Blame("unknown"))),
    )),
    Symptom(P.BUILD_SERVICE, CORES, (
        AFTER_LOGIN,
        Rule(CREDENTIALS, (Blame("exporter_config"),)),
        # rest-api asks every core: a core that does not answer fails the route too.
        Rule(ANY, (ExplainedBy("core"), ExplainedBy("api"), *BEHIND_THE_API, Blame("build_service"))),
    )),
    # Edge health never fails (an absent capability passes); a failure here is the API's own trouble.
    Symptom(P.EDGES, CORES, (AFTER_LOGIN, Rule(ANY, (ExplainedBy("api"), *BEHIND_THE_API, Blame("unknown"))))),
    Symptom(P.STATUS_DELIVERY, EXECUTE, (
        AFTER_LOGIN,
        Rule(CREDENTIALS, (Blame("exporter_config"),)),
        # No change delivered while Redis reads work: the subscriptions are lost (placeos-2026 §2), unless
        # the driver behind the status stopped (the drivers probe) or Redis itself is down.
        Rule(frozenset({Reason.TIMEOUT}), (ExplainedBy("redis"), ExplainedBy("driver"), ExplainedBy("core"),
                                           ExplainedBy("modules_not_loaded"), ExplainedBy("api_backend"),
                                           Blame("redis_pubsub", Passing((P.MODULE_FUNCTIONS,))))),
        Rule(ANY, (ExplainedBy("redis"), ExplainedBy("core"), ExplainedBy("api"), ExplainedBy("driver"),
                   ExplainedBy("exporter_config"), *BEHIND_THE_API, Blame("unknown"))),
    ), SymptomAlert("PlaceOSStatusUpdatesFailing", "Status updates do not reach Backoffice")),
    Symptom(P.SEARCH_INDEX_LAG, LISTING, (
        # Counted, and behind without catching up: search-ingest has stalled (design §3).
        Rule(frozenset({Reason.UNHEALTHY}), (Blame("search_ingest"),)),
        # Counting needs the database and Elasticsearch with the exporter's credentials for both.
        Rule(ANY, (ExplainedBy("elasticsearch"), ExplainedBy("database"), ExplainedBy("exporter_config"),
                   Blame("unknown"))),
    )),
)  # fmt: skip
