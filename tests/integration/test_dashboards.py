"""The Grafana dashboards (dashboards/*.json): the committed JSON is the builder's output, every panel
follows the conventions, and every query is proved against a real Prometheus.

The Prometheus test runs a small PlaceOS of era B on loopback, so that every series the dashboards
read exists: real etcd, Redis and PostgreSQL (conftest), the Elasticsearch stand-in, and the sandbox's
core (a process with drivers), search-ingest, rest-api and triggers. The real exporter watches it and a
second, failing cluster (era C, no core). A real Prometheus scrapes the exporter every second in the
three ways it is deployed: ``/metrics``; ``/probe?cluster=`` the blackbox way (instance = cluster);
``/probe?cluster=`` per cluster with a ``cluster`` label on one shared instance (the Helm chart's
ServiceMonitor). Each panel query, its Grafana variables replaced as Grafana would, goes through
``/api/v1/query`` (and ``query_range`` for time series) in each way, and must run and return data,
unless its panel is marked as empty while healthy. The failing cluster must not leak into the healthy
one's view. Then Redis is killed and Elasticsearch turned red, and the failure-only panels must show it.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis as redis_sync
import yaml
from aiohttp import web
from standins import ROOT, ElasticsearchStandIn
from support import RunningExporter, settings_for, wait_for

from exporter.expose.metrics import SPECS
from exporter.generate import dashboards, grafana
from exporter.model.failure_model import CAUSES, impacts_of
from sandbox.backends import EtcdServer, PostgresServer, RedisServer
from sandbox.ports import free_port
from sandbox.procs import Proc
from sandbox.simulator import db as configdb
from sandbox.simulator import seed
from sandbox.simulator.rest_api import RestApiConfig
from sandbox.simulator.rest_api import make_app as make_api_app
from sandbox.simulator.triggers import TriggersConfig
from sandbox.simulator.triggers import make_app as make_triggers_app

Json = dict[str, Any]

DASHBOARDS = ROOT / "dashboards"
FILES = ("placeos-overview.json", "placeos-backends.json")
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
CLUSTER = "default"

# What Grafana puts in place of its own variables (replaced longest name first: $__range_s before $__range).
GRAFANA_VARS = {
    "$__rate_interval": "15s",
    "$__interval_ms": "5000",
    "$__interval": "5s",
    "$__range_ms": "300000",
    "$__range_s": "300",
    "$__range": "5m",
}
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^{}]*)\}")
LABEL_VALUES = re.compile(r"label_values\((?P<match>.+),\s*(?P<label>\w+)\)")
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def boards() -> dict[str, Json]:
    return {name: json.loads((DASHBOARDS / name).read_text(encoding="utf-8")) for name in FILES}


def panels_of(board: Json) -> Iterator[Json]:
    """Every panel that shows data (rows' nested panels included, the rows themselves not)."""
    for panel in board["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


@dataclass(frozen=True)
class Query:
    board: str
    panel: str
    kind: str
    ref: str
    expr: str
    maybe_empty: bool

    def __str__(self) -> str:
        return f"{self.board} / {self.panel} / {self.ref}: {self.expr}"


def all_queries() -> list[Query]:
    out = []
    for name, board in boards().items():
        for panel in panels_of(board):
            maybe_empty = grafana.MAYBE_EMPTY in panel.get("description", "")
            for t in panel["targets"]:
                out.append(Query(name, panel["title"], panel["type"], t["refId"], t["expr"], maybe_empty))
    return out


# ------------------------------------------------------------------------------------- static checks


def test_every_dashboard_file_is_generated() -> None:
    # Their content is checked with every generated file (tests/unit/test_docs_fresh.py).
    assert set(dashboards.built()) == set(FILES) == {p.name for p in DASHBOARDS.glob("*.json")}


def test_dashboard_conventions() -> None:
    anchors = set(re.findall(r'<a id="([^"]+)"></a>', (ROOT / "docs" / "runbook.md").read_text(encoding="utf-8")))
    uids = set()
    for name, board in boards().items():
        assert board["schemaVersion"] >= 39, name
        assert board["uid"] not in uids
        uids.add(board["uid"])
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
        assert variables["job"]["definition"] == "label_values(placeos_probe_success, job)"
        assert variables["instance"]["definition"] == 'label_values(placeos_probe_success{job=~"$job"}, instance)'
        assert (
            variables["cluster"]["definition"]
            == 'label_values(placeos_probe_success{job=~"$job", instance=~"$instance"}, cluster)'
        )
        for var in ("job", "instance", "cluster"):
            assert not variables[var]["includeAll"] and not variables[var]["multi"], f"{name}: one {var} at a time"
            assert variables[var]["type"] == "query" and variables[var]["datasource"] == DATASOURCE
            assert variables[var]["query"]["query"] == variables[var]["definition"]
        check_datasources(board, name)

        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), f"{name}: panel ids repeat"
        check_grid(board, name)
        for panel in panels_of(board):
            where = f"{name} / {panel.get('title')!r}"
            assert panel.get("title"), f"{name}: a panel without a title"
            description = panel.get("description", "")
            assert "When red:" in description, f"{where}: the description must say what to do when red"
            assert panel["datasource"] == DATASOURCE, where
            assert panel["targets"], where
            for target in panel["targets"]:
                assert target["datasource"] == DATASOURCE, where
                check_expr(target["expr"], where)
            for link in links_of(panel):
                url = link["url"]
                if url.startswith(grafana.RUNBOOK + "#") and "${" not in url:
                    assert url.split("#", 1)[1] in anchors, f"{where}: runbook anchor of {url} does not exist"
    # The root-cause table links each cause to its runbook section by the cause id.
    assert {c for c in CAUSES if c != "none"} <= anchors


def check_datasources(node: Any, where: str) -> None:
    """No hard-coded datasource UID anywhere (the built-in annotation's Grafana source aside)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if (
                key == "datasource"
                and value is not None
                and not (isinstance(value, dict) and value["type"] == "grafana")
            ):
                assert value == DATASOURCE, f"{where}: datasource {value!r}"
            else:
                check_datasources(value, where)
    elif isinstance(node, list):
        for item in node:
            check_datasources(item, where)


def check_grid(board: Json, name: str) -> None:
    taken: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, f"{name} / {panel['title']}: outside the grid"
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & taken, f"{name} / {panel['title']}: overlaps another panel"
        taken |= cells


def links_of(panel: Json) -> Iterator[Json]:
    yield from panel.get("links", [])
    for override in panel["fieldConfig"].get("overrides", []):
        for prop in override["properties"]:
            if prop["id"] == "links":
                yield from prop["value"]


def check_expr(expr: str, where: str) -> None:
    """Every selector carries the job and instance variables; metrics and label values are the contract's."""
    selectors = SELECTOR.findall(expr)
    assert selectors, f"{where}: no selector in {expr}"
    # Every metric name appears with a selector (none read across every job and instance).
    bare = re.findall(r"\b(placeos_[a-z_]+|up)\b(?!\s*\{)", expr)
    assert not bare, f"{where}: {bare} without the job/instance selector in {expr}"
    for metric, body in selectors:
        matchers = {(label, op): value for label, op, value in MATCHER.findall(body)}
        assert matchers.get(("job", "=~")) == "$job", f'{where}: {metric} without job=~"$job"'
        assert matchers.get(("instance", "=~")) == "$instance", f'{where}: {metric} without instance=~"$instance"'
        assert matchers.get(("cluster", "=~")) == "$cluster", f'{where}: {metric} without cluster=~"$cluster"'
        if metric == "up":
            continue
        spec = SPECS.get(metric) or SPECS.get(metric.removesuffix("_bucket"))
        assert spec is not None, f"{where}: {metric} is not in the metric contract (exporter/metrics.py)"
        for (label, _op), value in matchers.items():
            if label in ("job", "instance", "cluster"):
                continue
            assert label in spec.labels, f"{where}: {metric} has no label {label}"
            closed = spec.values.get(label)
            if closed is not None:
                for v in value.split("|"):
                    assert v in closed, f"{where}: {label}={v!r} is not a value {metric} takes ({closed})"


# ------------------------------------------------------------------------------------- the real thing


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return bool(resp.status == 200)


def modules_published(redis_url: str) -> bool:
    """Every seed module mapped in ``system/<sys>`` and its driver's ``interface/<mod>`` written."""
    with redis_sync.Redis.from_url(redis_url, socket_timeout=2) as r:
        mapped = all(r.hlen(f"system/{sys_id}") == len(mods) for sys_id, _, mods in seed.SYSTEMS)
        return mapped and all(r.exists(f"interface/{mod_id}") for mod_id, _ in seed.MODULES)


@asynccontextmanager
async def placeos_b(
    etcd: EtcdServer, redis: RedisServer, postgres: PostgresServer, es: ElasticsearchStandIn, tmp: Path
) -> AsyncIterator[Json]:
    """A small era-B PlaceOS on the fixtures' backends; yields the exporter's cluster config."""
    key_secret, password = secrets.token_urlsafe(16), secrets.token_urlsafe(12)
    db = await configdb.open_db(postgres.dsn, timeout=5)
    try:
        await configdb.seed(db, seed.seed_documents(key_secret, password))
    finally:
        await db.close()
    es_url = f"http://elastic:{es.password}@{es.host}:{es.port}"
    core_port, ingest_port = free_port(), free_port()
    procs = [
        Proc.start([sys.executable, "-m", "sandbox.simulator.core", "--port", str(core_port), "--era", "B",
                    "--redis", redis.url, "--db", postgres.dsn, "--etcd", etcd.url, "--etcd-ttl", "5",
                    "--data-dir", str(tmp / "core")], log_path=tmp / "core.log", name="core", cwd=ROOT),
        Proc.start([sys.executable, "-m", "sandbox.simulator.search_ingest", "--port", str(ingest_port),
                    "--db", postgres.dsn, "--es", es_url, "--interval", "0.5"],
                   log_path=tmp / "search-ingest.log", name="search-ingest", cwd=ROOT),
    ]  # fmt: skip
    runners: list[web.AppRunner] = []
    try:
        procs[0].wait_ready(lambda: http_ok(f"http://127.0.0.1:{core_port}/api/core/v1/ready"), deadline=20)
        procs[0].wait_ready(lambda: modules_published(redis.url), deadline=20)  # its drivers run
        procs[1].wait_ready(ingest_port, deadline=15)
        api = RestApiConfig(port=free_port(), era="B", redis_url=redis.url, db_url=postgres.dsn, es_url=es_url,
                            etcd_url=etcd.url)  # fmt: skip
        triggers = TriggersConfig(port=free_port(), era="B", redis_url=redis.url, db_url=postgres.dsn,
                                  etcd_url=etcd.url)  # fmt: skip
        for app, port in ((make_api_app(api), api.port), (make_triggers_app(triggers), triggers.port)):
            runner = web.AppRunner(app)
            await runner.setup()
            runners.append(runner)
            await web.TCPSite(runner, "127.0.0.1", port).start()
        yield {
            "name": CLUSTER,
            "era": "B",
            "etcd": {"host": etcd.host, "port": etcd.port},
            "redis": {"url": redis.url},
            "postgres": {"url": postgres.dsn},
            "elasticsearch": {"host": es.host, "port": es.port, "username": "elastic", "password": es.password,
                              "index_lag_interval": 3.0},
            "api": {"url": f"http://127.0.0.1:{api.port}", "host_header": seed.AUTHORITY_DOMAIN,
                    "api_key": f"{seed.API_KEY_ID}.{key_secret}", "system_id": seed.PROBE_SYSTEM,
                    "module": seed.PROBE_MODULE, "function": seed.PROBE_FUNCTION,
                    "triggers_url": f"http://127.0.0.1:{triggers.port}"},
        }  # fmt: skip
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
        for proc in procs:
            proc.terminate()


# Three ways to scrape the exporter, each a set of values for the dashboard variables.
METRICS_JOB = "placeos-exporter"  # /metrics: the first cluster, no cluster label (alerts use this job name)
BLACKBOX_JOB = "placeos-exporter-blackbox"  # /probe?cluster=, instance = the cluster name (README)
CLUSTERS_JOB = "placeos-exporter-clusters"  # /probe?cluster= per cluster, cluster label (the Helm chart)
SECOND = "second"  # a second cluster behind the same target: era C with no core registered, so failing


@dataclass(frozen=True)
class Scope:
    """What Grafana substitutes for $job, $instance and $cluster ("" = the variable's None)."""

    job: str
    instance: str
    cluster: str

    def __str__(self) -> str:
        return f"job={self.job} instance={self.instance} cluster={self.cluster or 'None'}"


class Prometheus:
    """A real Prometheus scraping the exporter every second, queried over its HTTP API."""

    def __init__(self, tmp: Path, exporter_port: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        target = f"127.0.0.1:{exporter_port}"
        to_exporter = {"target_label": "__address__", "replacement": target}
        from_param = {"source_labels": ["__address__"], "target_label": "__param_cluster"}
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": METRICS_JOB, "static_configs": [{"targets": [target]}]},
                {"job_name": BLACKBOX_JOB, "metrics_path": "/probe", "static_configs": [{"targets": [CLUSTER]}],
                 "relabel_configs": [
                     from_param, {"source_labels": ["__param_cluster"], "target_label": "instance"}, to_exporter,
                 ]},
                {"job_name": CLUSTERS_JOB, "metrics_path": "/probe",
                 "static_configs": [{"targets": [CLUSTER, SECOND]}],
                 "relabel_configs": [
                     from_param, {"source_labels": ["__param_cluster"], "target_label": "cluster"},
                     {"target_label": "instance", "replacement": target}, to_exporter,
                 ]},
            ],
        }  # fmt: skip
        tmp.mkdir(parents=True, exist_ok=True)
        config_file = tmp / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.proc = Proc.start(
            ["prometheus", f"--config.file={config_file}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            log_path=tmp / "prometheus.log", name="prometheus",
        )  # fmt: skip
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

    async def ready(self) -> bool:
        if not self.proc.alive:
            raise self.proc.error("Prometheus exited")
        try:
            async with self.http.get(f"{self.url}/-/ready") as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False

    async def api(self, path: str, **params: str) -> Json:
        async with self.http.get(f"{self.url}/api/v1/{path}", params=params) as resp:
            body: Json = await resp.json()
            return body

    async def result(self, expr: str) -> list[Json]:
        body = await self.api("query", query=expr)
        assert body["status"] == "success", f"{expr}: {body}"
        result: list[Json] = body["data"]["result"]
        return result

    async def label_values(self, label: str, match: str) -> set[str]:
        body = await self.api(f"label/{label}/values", **{"match[]": match})
        assert body["status"] == "success", body
        return set(body["data"])

    async def close(self) -> None:
        await self.http.close()
        self.proc.terminate()


def concrete(expr: str, scope: Scope) -> str:
    """The query as Grafana sends it: dashboard and built-in variables replaced."""
    values = {**GRAFANA_VARS, "$job": scope.job, "$instance": scope.instance, "$cluster": scope.cluster}
    values |= {"${" + var[1:] + "}": value for var, value in values.items()}  # ${name} is the same variable
    for var in sorted(values, key=len, reverse=True):
        expr = expr.replace(var, values[var])
    assert "$" not in expr, f"a variable is left in {expr}"
    return expr


async def run_all(prom: Prometheus, queries: list[Query], scopes: list[Scope]) -> dict[Query, list[str]]:
    """Every query in every scope: the problems found per query ("no data", or why it does not run)."""
    problems: dict[Query, list[str]] = {}
    now = time.time()
    for q in queries:
        found: list[str] = []
        for scope in scopes:
            expr = concrete(q.expr, scope)
            body = await prom.api("query", query=expr)
            if body["status"] != "success":
                found.append(f"[{scope}] does not run: {body.get('errorType')}: {body.get('error')}")
                continue
            if not body["data"]["result"]:
                found.append(f"[{scope}] no data")
            if q.kind in ("timeseries", "state-timeline"):
                ranged = await prom.api("query_range", query=expr, start=str(now - 20), end=str(now), step="1")
                if ranged["status"] != "success":
                    found.append(f"[{scope}] range query does not run: {ranged.get('error')}")
        problems[q] = found
    return problems


def broken(problems: dict[Query, list[str]], *, data_required: bool) -> list[str]:
    """Queries that do not run; with ``data_required``, also those without data (unless marked)."""
    out = []
    for q, found in problems.items():
        errors = [f for f in found if not f.endswith("no data")]
        if errors or (found and data_required and not q.maybe_empty):
            out.append(f"{q}\n    " + "\n    ".join(found))
    return out


async def labels_of(prom: Prometheus, q: Query, scope: Scope, label: str) -> set[str]:
    return {r["metric"].get(label, "") for r in await prom.result(concrete(q.expr, scope))}


async def values_of(prom: Prometheus, q: Query, scope: Scope) -> list[str]:
    return [r["value"][1] for r in await prom.result(concrete(q.expr, scope))]


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus comes with Debian's prometheus package")
async def test_every_query_against_real_prometheus(
    etcd: EtcdServer,
    redis_server: RedisServer,
    postgres: PostgresServer,
    elasticsearch_standin: ElasticsearchStandIn,
    tmp_path: Path,
) -> None:
    queries = all_queries()
    assert len(queries) > 50
    overview = {q.panel: q for q in queries if q.board == "placeos-overview.json"}
    backends = {q.panel: q for q in queries if q.board == "placeos-backends.json"}
    second = {"name": SECOND, "era": "C", "redis": {"url": redis_server.url}, "postgres": {"url": postgres.dsn},
              "elasticsearch": {"enabled": False}}  # fmt: skip
    async with placeos_b(etcd, redis_server, postgres, elasticsearch_standin, tmp_path) as cluster:
        settings = settings_for(cluster, clusters=[cluster, second], interval=3.0, timeout=2.5)
        async with RunningExporter(settings) as exp:
            prom = Prometheus(tmp_path / "prometheus", exp.port)
            try:
                await check_dashboards(prom, f"127.0.0.1:{exp.port}", queries, overview, backends,
                                       elasticsearch_standin, redis_server)  # fmt: skip
            finally:
                await prom.close()


async def check_dashboards(
    prom: Prometheus,
    target: str,
    queries: list[Query],
    overview: dict[str, Query],
    backends: dict[str, Query],
    es: ElasticsearchStandIn,
    redis_server: RedisServer,
) -> None:
    healthy_scopes = [Scope(METRICS_JOB, target, ""), Scope(BLACKBOX_JOB, CLUSTER, ""),
                      Scope(CLUSTERS_JOB, target, CLUSTER)]  # fmt: skip
    failing_scope = Scope(CLUSTERS_JOB, target, SECOND)
    await wait_for(prom.ready, 20, "Prometheus ready")

    # Healthy, as the overview shows it: in all three jobs every probe of the default cluster passes, the
    # verdict says Healthy and nothing is broken; the second cluster (same job and instance) is FAILING;
    # the per-driver series have been scraped often enough for rate().
    expected = {(s.job, s.cluster) for s in healthy_scopes}

    async def ready() -> bool:
        passing = await prom.result(f'min by (job, cluster) (placeos_probe_success{{cluster!="{SECOND}"}}) == 1')
        drivers = await prom.result("count by (job, cluster) (count_over_time(placeos_driver_launches_total[4s]) >= 3)")
        if not ({(r["metric"]["job"], r["metric"].get("cluster", "")) for r in passing} == expected
                and len(drivers) == len(expected)):  # fmt: skip
            return False
        for scope in healthy_scopes:
            if await values_of(prom, overview["PlaceOS"], scope) != ["1"]:
                return False
            if await values_of(prom, overview["What is broken"], scope) != []:
                return False
        return await values_of(prom, overview["PlaceOS"], failing_scope) == ["0"]

    await wait_for(ready, 45, "the default cluster Healthy in every job, the second FAILING", interval=0.25)

    # Each scope is what the variables offer: their label_values() queries, run as Grafana runs them
    # (the label values API), list its job, instance and cluster; none where there is no cluster label.
    templating = boards()["placeos-overview.json"]["templating"]["list"]
    variables = {v["name"]: v["definition"] for v in templating if v["type"] == "query"}
    assert list(variables) == ["job", "instance", "cluster"]
    for scope in [*healthy_scopes, failing_scope]:
        for name, definition in variables.items():
            found = LABEL_VALUES.fullmatch(concrete(definition, scope))
            assert found is not None, definition
            values = await prom.label_values(found["label"], found["match"])
            value = getattr(scope, name)
            assert value in values if value else values == set(), (scope, name, values)

    problems = await run_all(prom, queries, healthy_scopes)
    bad = broken(problems, data_required=True)
    assert not bad, "panel queries that fail against Prometheus (healthy cluster):\n" + "\n".join(bad)
    empty_when_healthy = {q for q, found in problems.items() if found}

    # The failing cluster behind the same job and instance: every query runs, and nothing of it leaks
    # into the default cluster's view above (the cluster variable separates them).
    bad = broken(await run_all(prom, queries, [failing_scope]), data_required=False)
    assert not bad, "panel queries that fail against Prometheus (failing cluster):\n" + "\n".join(bad)
    assert await labels_of(prom, overview["What is broken"], failing_scope, "cause")

    # Broken: Redis killed, Elasticsearch red. The failure-only panels must now say so.
    es.set_health("red")
    redis_server.proc.kill()

    async def diagnosed() -> bool:
        causes = await prom.result(f'placeos_root_cause{{cause=~"redis|elasticsearch", cluster!="{SECOND}"}} == 1')
        rates = await prom.result(
            "sum by (job, cluster, probe) "
            f'(rate(placeos_probe_failures_total{{probe=~"redis|elasticsearch", cluster!="{SECOND}"}}[15s])) > 0'
        )
        if not len(causes) == len(rates) == 2 * len(healthy_scopes):
            return False
        # The health colour is a fact of the last run: a run that timed out leaves it unknown (NaN).
        return all([await values_of(prom, backends["Cluster health"], s) == ["2"] for s in healthy_scopes])

    await wait_for(diagnosed, 30, "the diagnosis of Redis and Elasticsearch in Prometheus", interval=0.25)

    maybe_empty = [q for q in queries if q.maybe_empty]
    problems = await run_all(prom, maybe_empty, healthy_scopes)
    bad = broken(problems, data_required=False)
    assert not bad, "failure-only panel queries that fail against Prometheus:\n" + "\n".join(bad)
    for scope in healthy_scopes:
        assert await values_of(prom, overview["PlaceOS"], scope) == ["0"], scope
        assert {"redis", "elasticsearch"} <= await labels_of(prom, overview["What is broken"], scope, "cause")
        impacts = await labels_of(prom, overview["What users feel"], scope, "impact")
        assert impacts_of({"redis", "elasticsearch"}) <= impacts, scope
        failing = await labels_of(prom, overview["Failing probes and why"], scope, "probe")
        assert {"redis", "elasticsearch"} <= failing, scope
        for title in ("Redis probe failures", "Elasticsearch probe failures"):
            assert await labels_of(prom, backends[title], scope, "reason"), (title, scope)
    shown = [q for q in maybe_empty if not problems[q]]
    print(f"{len(queries)} queries x {len(healthy_scopes)} scopes; {len(maybe_empty)} failure-only, "
          f"{len(empty_when_healthy)} empty while healthy, {len(shown)} showing the fault")  # fmt: skip
