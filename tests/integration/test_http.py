"""The HTTP surface as Prometheus and operators use it: /metrics, /probe?cluster=, health routes."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import aiohttp
import pytest
from support import RunningExporter, parse, settings_for, wait_for

from sandbox.backends import RedisServer
from sandbox.ports import free_port
from sandbox.procs import Proc


def two_clusters(redis_server: RedisServer) -> list[dict[str, object]]:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    return [
        {"name": "main", "era": "C", "redis": {"url": redis_server.url}},
        {"name": "branch", "era": "C", "redis": {"url": dead}},
    ]


async def test_the_status_page_is_a_fleet_overview_with_several_clusters(redis_server: RedisServer) -> None:
    """With several clusters, / is one row per cluster (verdict, causes, last change, a link to its page)."""
    clusters = [c | {"probes": {"core_discovery": {"enabled": False}}} for c in two_clusters(redis_server)]
    settings = settings_for({}, clusters=clusters)
    async with RunningExporter(settings) as exp:

        async def both_known() -> bool:
            _, page, _ = await exp.get("/")
            return "Redis failure" in page and "Healthy: every enabled probe passes" in page

        await wait_for(both_known, 15, "the fleet page to show a healthy and a failing cluster")
        status, page, _ = await exp.get("/")
        assert status == 200 and "<title>PlaceOS fleet: 1 of 2 failing</title>" in page
        assert '<a href="/?cluster=main">main</a>' in page and '<a href="/?cluster=branch">branch</a>' in page
        status, branch, _ = await exp.get("/?cluster=branch")
        assert status == 200 and "PlaceOS cluster <b>branch</b>" in branch and "Redis failure" in branch


async def test_probe_serves_one_cluster_from_a_fresh_registry(redis_server: RedisServer) -> None:
    settings = settings_for({}, clusters=two_clusters(redis_server))
    async with RunningExporter(settings) as exp:
        await exp.wait_reason("redis", "ok")  # /metrics = the default (first) cluster
        main = await exp.samples("/probe?cluster=main")
        # Series of one cluster never leak into another; the exporter's own series are on /metrics only.
        assert not any(name.startswith("placeos_exporter_") for name, _ in main)
        assert "placeos_exporter_build_info" in {name for name, _ in await exp.samples("/metrics")}

        async def branch_refused() -> bool:
            return (await exp.samples("/probe?cluster=branch")).get(
                ("placeos_probe_failure_reason", frozenset({("probe", "redis"), ("reason", "connection_refused")}))
            ) == 1

        await wait_for(branch_refused, 10, "branch's redis to be refused")
        assert (await exp.samples("/probe?cluster=main"))[
            ("placeos_probe_failure_reason", frozenset({("probe", "redis"), ("reason", "ok")}))
        ] == 1

        status, text, _ = await exp.get("/probe?cluster=nope")
        assert status == 404 and text.count("\n") == 1 and "unknown cluster" in text
        status, text, _ = await exp.get("/probe")
        assert status == 400 and "cluster" in text


async def test_health_routes_and_formats(redis_server: RedisServer) -> None:
    async with RunningExporter(settings_for({"era": "C", "redis": {"url": redis_server.url}})) as exp:
        status, text, _ = await exp.get("/-/healthy")
        assert status == 200 and text.strip() == "Healthy"
        await exp.wait_reason("redis", "ok")

        async def ready() -> bool:
            return (await exp.get("/-/ready"))[0] == 200  # once every probe has a first result

        await wait_for(ready, 10, "/-/ready")

        status, text, headers = await exp.get("/metrics", Accept="application/openmetrics-text; version=1.0.0")
        assert status == 200
        assert headers["Content-Type"].startswith("application/openmetrics-text")
        assert text.rstrip().endswith("# EOF")

        assert exp.http is not None
        async with exp.http.get(
            exp.url + "/metrics", headers={"Accept-Encoding": "gzip"}, auto_decompress=False
        ) as resp:
            assert resp.headers["Content-Encoding"] == "gzip"
            body = gzip.decompress(await resp.read()).decode()
        assert "placeos_probe_success" in body

        status, text, _ = await exp.get("/")
        assert status == 200 and "PlaceOS cluster" in text


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool comes with Debian's prometheus package")
async def test_promtool_accepts_a_live_scrape(redis_server: RedisServer) -> None:
    async with RunningExporter(settings_for({"era": "C", "redis": {"url": redis_server.url}})) as exp:
        await exp.wait_reason("redis", "ok")
        status, text, _ = await exp.get("/metrics")
        assert status == 200
        parse(text)  # parses as the Prometheus text format
    result = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


async def test_scrape_does_not_need_a_backend() -> None:
    """With every backend unreachable, /metrics still answers and carries every probe's series."""
    dead = {"host": "127.0.0.1", "port": free_port()}
    cluster = {"era": "A", "etcd": dead, "rethinkdb": dead, "elasticsearch": dead,
               "redis": {"url": f"redis://127.0.0.1:{free_port()}/0"}}  # fmt: skip
    async with RunningExporter(settings_for(cluster)) as exp:
        samples = await exp.samples()
        for probe in ("etcd", "rethinkdb", "redis", "elasticsearch", "core_discovery", "search_index_lag"):
            assert ("placeos_probe_success", frozenset({("probe", probe)})) in samples
        for probe in ("etcd", "rethinkdb", "redis", "elasticsearch"):
            await exp.wait_reason(probe, "connection_refused")
        async with aiohttp.ClientSession() as http, http.get(exp.url + "/diagnose") as resp:
            report = await resp.json()
        assert {c["cause"] for c in report["root_causes"]} == {"etcd", "database", "redis", "elasticsearch"}


def test_web_listen_address_is_repeatable(tmp_path: Path) -> None:
    """As Prometheus exporters do: one server on every --web.listen-address."""
    ports = [free_port(), free_port()]
    argv = [sys.executable, "-m", "exporter.cli"]
    for port in ports:
        argv += ["--web.listen-address", f"127.0.0.1:{port}"]
    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{free_port()}"}
    proc = Proc.start(argv, log_path=tmp_path / "exporter.log", name="exporter", env=env)
    try:
        for port in ports:
            proc.wait_ready(port, 20)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/healthy", timeout=5) as resp:
                assert resp.status == 200
    finally:
        proc.terminate()
