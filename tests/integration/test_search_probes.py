"""Elasticsearch health on each server major, red and yellow, and the search-index lag following a
paused and resumed search-ingest (the sandbox's real mirroring process over a real PostgreSQL): a lag
over the threshold that does not shrink is the search_ingest cause."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from standins import ROOT, ElasticsearchStandIn
from support import RunningExporter, settings_for, wait_for

from sandbox.backends import PostgresServer
from sandbox.ports import free_port
from sandbox.procs import Proc
from sandbox.simulator import db as configdb
from sandbox.simulator import seed


def es_cluster(server: ElasticsearchStandIn, **extra: Any) -> dict[str, Any]:
    elastic = {"host": server.host, "port": server.port, "username": "elastic", "password": server.password}
    return {"era": "C", "elasticsearch": elastic, "postgres": {"enabled": False}, "redis": {"enabled": False}, **extra}


@pytest.mark.parametrize("version", ["7.17.6", "8.14.3"])
async def test_health_colours_on_each_major(version: str, tmp_path: Path) -> None:
    server = ElasticsearchStandIn(tmp_path / "es", version=version)
    try:
        async with RunningExporter(settings_for(es_cluster(server))) as exp:
            await exp.wait_reason("elasticsearch", "ok")
            assert await exp.value("placeos_elasticsearch_cluster_status", color="green") == 1
            server.set_health("yellow")

            async def colour_is(color: str) -> bool:
                return await exp.value("placeos_elasticsearch_cluster_status", color=color) == 1

            await wait_for(lambda: colour_is("yellow"), 10, "yellow")
            assert await exp.reason("elasticsearch") == "ok"  # yellow is up, as search-ingest sees it
            server.set_health("red")
            await exp.wait_reason("elasticsearch", "unhealthy")
            assert await exp.value("placeos_elasticsearch_cluster_status", color="red") == 1
            assert await exp.value("placeos_elasticsearch_cluster_status", color="green") == 0
            server.set_health("green")
            await exp.wait_reason("elasticsearch", "ok")
    finally:
        server.close()


async def test_index_lag_follows_search_ingest(postgres: PostgresServer, tmp_path: Path) -> None:
    db = await configdb.open_db(postgres.dsn, timeout=5)
    await configdb.seed(db, seed.seed_documents("key-secret-for-test", "user-password-for-test"))
    es = ElasticsearchStandIn(tmp_path / "es")
    ingest_port = free_port()
    es_url = f"http://elastic:{es.password}@{es.host}:{es.port}"
    ingest = Proc.start(
        [sys.executable, "-m", "sandbox.simulator.search_ingest", "--port", str(ingest_port), "--db", postgres.dsn,
         "--es", es_url, "--interval", "0.3"],
        log_path=tmp_path / "ingest.log", name="search-ingest", cwd=ROOT,
    )  # fmt: skip
    try:
        ingest.wait_ready(ingest_port, 15)
        cluster = es_cluster(es, postgres={"url": postgres.dsn},
                             probes={"search_index_lag": {"interval": 1.0, "timeout": 0.9}})  # fmt: skip
        async with RunningExporter(settings_for(cluster)) as exp, aiohttp.ClientSession() as http:

            async def lag_is(n: int) -> bool:
                return await exp.value("placeos_search_index_lag_documents", index="sys") == n

            await wait_for(lambda: lag_is(0), 20, "the sys index to catch up")
            async with http.post(f"http://127.0.0.1:{ingest_port}/_sandbox/pause") as resp:
                assert resp.status == 200
            for i in range(15):  # over the default threshold of 10
                await db.upsert("sys", {"id": f"sys-new-{i}", "name": f"New room {i}", "modules": []})
            await wait_for(lambda: lag_is(15), 20, "fifteen rows not yet indexed")

            async def stalled() -> bool:
                # Seen by a user: a paused search-ingest (15 documents behind) read "Healthy".
                return (
                    await exp.reason("search_index_lag") == "unhealthy"
                    and await exp.value("placeos_root_cause", cause="search_ingest") == 1
                )

            await wait_for(stalled, 20, "a lag that does not shrink to be a search-ingest stall")
            async with http.post(f"http://127.0.0.1:{ingest_port}/_sandbox/resume") as resp:
                assert resp.status == 200
            await wait_for(lambda: lag_is(0), 20, "search-ingest to catch up after resume")
            assert await exp.reason("search_index_lag") == "ok"
    finally:
        ingest.terminate()
        es.close()
        await db.close()


async def test_api_key_auth_and_a_wrong_key(tmp_path: Path) -> None:
    server = ElasticsearchStandIn(tmp_path / "es")
    try:
        created = server.call("POST", "/_security/api_key", {"name": "placeos-exporter"})
        base = {"host": server.host, "port": server.port, "api_key": created["encoded"]}
        cluster = {"era": "C", "elasticsearch": base, "postgres": {"enabled": False}, "redis": {"enabled": False}}
        async with RunningExporter(settings_for(cluster)) as exp:
            await exp.wait_reason("elasticsearch", "ok")
        wrong = {**base, "api_key": "d3Jvbmc6a2V5LWZvci10ZXN0"}  # base64("wrong:key-for-test")
        async with RunningExporter(settings_for({**cluster, "elasticsearch": wrong})) as exp:
            await exp.wait_reason("elasticsearch", "auth_failed")
    finally:
        server.close()
