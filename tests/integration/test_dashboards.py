"""The Grafana dashboards (dashboards/*.json): the committed JSON is the builder's output, every panel
follows the conventions, and every query is proved against a real Prometheus.

The Prometheus test runs a small PlaceOS of era B on loopback, so that every series the dashboards
read exists: real etcd, Redis and PostgreSQL (conftest), the Elasticsearch stand-in, and the sandbox's
core (a process with drivers), search-ingest, rest-api and triggers. The real exporter watches it, a
real Prometheus scrapes the exporter every second twice over (``/metrics``, and ``/probe?cluster=``
the blackbox way, so the variables work for both deployments), and each panel query, its Grafana
variables replaced, goes through ``/api/v1/query``. Then Redis is killed and Elasticsearch turned red,
and the failure-only panels must show them.
"""

from __future__ import annotations

import importlib.util
import json
import re
import secrets
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import redis as redis_sync
import yaml
from aiohttp import web
from standins import ROOT, ElasticsearchStandIn
from support import RunningExporter, settings_for, wait_for

from exporter.failure_model import CAUSES, impacts_of
from exporter.metrics import SPECS
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
JOB = "placeos-exporter"  # /metrics, as alerts/placeos-exporter.rules.yml expects
PROBE_JOB = "placeos-exporter-probe"  # /probe?cluster=default, instance = the cluster name
CLUSTER = "default"

# What Grafana puts in place of its own variables (longest first: $__range_s before $__range).
GRAFANA_VARS = {
    "${__rate_interval}": "15s",
    "$__rate_interval": "15s",
    "${__interval}": "5s",
    "$__interval": "5s",
    "$__interval_ms": "5000",
    "${__range}": "5m",
    "$__range_s": "300",
    "$__range_ms": "300000",
    "$__range": "5m",
}
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^{}]*)\}")
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def load_builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("placeos_dashboards_build", DASHBOARDS / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


BUILD = load_builder()


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
            maybe_empty = BUILD.MAYBE_EMPTY in panel.get("description", "")
            for t in panel["targets"]:
                out.append(Query(name, panel["title"], panel["type"], t["refId"], t["expr"], maybe_empty))
    return out


def concrete(expr: str, job: str, instance: str) -> str:
    """The query as Grafana sends it: dashboard and built-in variables replaced."""
    values = {**GRAFANA_VARS, "${job}": job, "$job": job, "${instance}": instance, "$instance": instance}
    for var, value in values.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"a variable is left in {expr}"
    return expr


# ------------------------------------------------------------------------------------- static checks


def test_committed_json_is_the_builders_output() -> None:
    for name, text in BUILD.built().items():
        committed = (DASHBOARDS / name).read_text(encoding="utf-8")
        assert committed == text, f"dashboards/{name} is stale: run .venv/bin/python dashboards/build.py"
    assert set(BUILD.built()) == set(FILES)


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
        for var in ("job", "instance"):
            assert variables[var]["type"] == "query" and variables[var]["datasource"] == DATASOURCE
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
                if url.startswith(BUILD.RUNBOOK + "#") and "${" not in url:
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
        if metric == "up":
            continue
        spec = SPECS.get(metric) or SPECS.get(metric.removesuffix("_bucket"))
        assert spec is not None, f"{where}: {metric} is not in the metric contract (exporter/metrics.py)"
        for (label, _op), value in matchers.items():
            if label in ("job", "instance"):
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
                              "index_lag_interval": 1.0},
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


class Prometheus:
    """A real Prometheus scraping the exporter every second, queried over its HTTP API."""

    def __init__(self, tmp: Path, exporter_port: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        target = f"127.0.0.1:{exporter_port}"
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": JOB, "static_configs": [{"targets": [target]}]},
                {"job_name": PROBE_JOB, "metrics_path": "/probe", "static_configs": [{"targets": [CLUSTER]}],
                 "relabel_configs": [
                     {"source_labels": ["__address__"], "target_label": "__param_cluster"},
                     {"source_labels": ["__param_cluster"], "target_label": "instance"},
                     {"target_label": "__address__", "replacement": target},
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

    async def query(self, expr: str) -> Json:
        return await self.api("query", query=expr)

    async def result(self, expr: str) -> list[Json]:
        body = await self.query(expr)
        assert body["status"] == "success", f"{expr}: {body}"
        result: list[Json] = body["data"]["result"]
        return result

    async def close(self) -> None:
        await self.http.close()
        self.proc.terminate()


async def run_all(prom: Prometheus, queries: list[Query], instances: dict[str, str]) -> dict[Query, list[str]]:
    """Every query for both scrape jobs; returns the problems found per query ([] = parsed, had data)."""
    problems: dict[Query, list[str]] = {}
    now = time.time()
    for q in queries:
        found: list[str] = []
        for job, instance in instances.items():
            expr = concrete(q.expr, job, instance)
            body = await prom.query(expr)
            if body["status"] != "success":
                found.append(f"[{job}] does not run: {body.get('errorType')}: {body.get('error')}")
                continue
            if not body["data"]["result"]:
                found.append(f"[{job}] no data")
            if q.kind in ("timeseries", "state-timeline"):
                ranged = await prom.api("query_range", query=expr, start=str(now - 20), end=str(now), step="1")
                if ranged["status"] != "success":
                    found.append(f"[{job}] range query fails: {ranged.get('error')}")
        problems[q] = found
    return problems


async def labels_of(prom: Prometheus, q: Query, job: str, instance: str, label: str) -> set[str]:
    return {r["metric"].get(label, "") for r in await prom.result(concrete(q.expr, job, instance))}


async def test_every_query_against_real_prometheus(
    etcd: EtcdServer,
    redis_server: RedisServer,
    postgres: PostgresServer,
    elasticsearch_standin: ElasticsearchStandIn,
    tmp_path: Path,
) -> None:
    queries = all_queries()
    assert len(queries) > 50
    async with (
        placeos_b(etcd, redis_server, postgres, elasticsearch_standin, tmp_path) as cluster,
        RunningExporter(settings_for(cluster, interval=2.0, timeout=1.5)) as exp,
    ):
        prom = Prometheus(tmp_path / "prometheus", exp.port)
        try:
            await wait_for(prom.ready, 20, "Prometheus ready")
            instances = {JOB: f"127.0.0.1:{exp.port}", PROBE_JOB: CLUSTER}

            # Healthy: every probe of both jobs passed in each of the last few scrapes, and the per-driver
            # series have been there long enough for rate().
            async def healthy() -> bool:
                rows = await prom.result("min by (job) (min_over_time(placeos_probe_success[4s]))")
                ok = {r["metric"]["job"] for r in rows if r["value"][1] == "1"}
                none = await prom.result('min by (job) (min_over_time(placeos_root_cause{cause="none"}[4s])) == 1')
                drivers = await prom.result("count by (job) (count_over_time(placeos_driver_launches_total[4s]) >= 3)")
                return ok == set(instances) and len(none) == 2 and len(drivers) == 2

            await wait_for(healthy, 45, "every probe to pass in the last scrapes", interval=0.25)

            # The variables resolve as Grafana's label_values() would.
            for job, instance in instances.items():
                body = await prom.api("label/instance/values", **{"match[]": f'placeos_probe_success{{job=~"{job}"}}'})
                assert body["data"] == [instance]
            body = await prom.api("label/job/values", **{"match[]": "placeos_probe_success"})
            assert set(body["data"]) == set(instances)

            problems = await run_all(prom, queries, instances)
            bad = [f"{q}\n    " + "; ".join(p) for q, p in problems.items()
                   if any("no data" not in m for m in p) or (p and not q.maybe_empty)]  # fmt: skip
            assert not bad, "panel queries that fail against Prometheus:\n" + "\n".join(bad)
            healthy_empty = {q for q, p in problems.items() if p}
            assert all(q.maybe_empty for q in healthy_empty)

            overview = {q.panel: q for q in queries if q.board == "placeos-overview.json"}
            backends = {q.panel: q for q in queries if q.board == "placeos-backends.json"}
            for job, instance in instances.items():
                verdict = await prom.result(concrete(overview["PlaceOS"].expr, job, instance))
                assert [r["value"][1] for r in verdict] == ["1"]

            # Broken: Redis killed, Elasticsearch red. The failure-only panels must now say so.
            elasticsearch_standin.set_health("red")
            redis_server.proc.kill()

            async def diagnosed() -> bool:
                rows = await prom.result('placeos_root_cause{cause=~"redis|elasticsearch"} == 1')
                rates = await prom.result(
                    'sum by (job, probe) (rate(placeos_probe_failures_total{probe=~"redis|elasticsearch"}[15s])) > 0'
                )
                return len(rows) == 4 and len(rates) == 4

            await wait_for(diagnosed, 30, "the diagnosis of Redis and Elasticsearch in Prometheus", interval=0.25)

            problems = await run_all(prom, [q for q in queries if q.maybe_empty], instances)
            bad = [f"{q}: {p}" for q, p in problems.items() if any("no data" not in m for m in p)]
            assert not bad, "failure-only panel queries that fail against Prometheus:\n" + "\n".join(bad)
            for job, instance in instances.items():
                verdict = await prom.result(concrete(overview["PlaceOS"].expr, job, instance))
                assert [r["value"][1] for r in verdict] == ["0"]
                causes = await labels_of(prom, overview["What is broken"], job, instance, "cause")
                assert {"redis", "elasticsearch"} <= causes
                impacts = await labels_of(prom, overview["What users feel"], job, instance, "impact")
                assert impacts_of({"redis", "elasticsearch"}) <= impacts
                failing = await labels_of(prom, overview["Failing probes and why"], job, instance, "probe")
                assert {"redis", "elasticsearch"} <= failing
                for title in ("Redis probe failures", "Elasticsearch probe failures"):
                    assert await labels_of(prom, backends[title], job, instance, "reason"), title
                health = await prom.result(concrete(backends["Cluster health"].expr, job, instance))
                assert [r["value"][1] for r in health] == ["2"]  # red
            shown = [q for q in healthy_empty if not problems[q]]
            print(f"{len(queries)} queries; {len(healthy_empty)} empty while healthy, {len(shown)} of them "
                  f"showed the failure")  # fmt: skip
        finally:
            await prom.close()
