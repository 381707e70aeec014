"""The Elasticsearch stand-in, driven by the official `elasticsearch` 8.x client (sync and async).

Each server is a real child process (`python -m sandbox.standins.elasticsearch`) on a free port with a
temp data dir; readiness is polled with a deadline and processes are stopped by PID (SIGTERM must give
exit 0, SIGKILL must lose nothing). Two servers live for the whole module (an 8.14.3 and a 7.17.6, both
with security); tests that change the password or the health colour get their own.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from elastic_transport import AiohttpHttpNode, HttpHeaders, Urllib3HttpNode
from elastic_transport._node import NodeApiResponse
from elastic_transport.client_utils import DEFAULT, DefaultType
from elasticsearch import (
    ApiError,
    AsyncElasticsearch,
    AuthenticationException,
    BadRequestError,
    ConflictError,
    Elasticsearch,
    NotFoundError,
)

from sandbox.ports import free_port

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "changeme"
CLIENT_OPTS: dict[str, Any] = {"request_timeout": 10, "max_retries": 0, "retry_on_status": ()}
COMPAT7 = "application/vnd.elasticsearch+json; compatible-with=7"


# -- process handling ---------------------------------------------------------------------------------


class EsProcess:
    """One stand-in child process: start, poll ready, SIGTERM (must exit 0) or SIGKILL, by PID."""

    def __init__(self, data_dir: Path, log_path: Path, *, version: str = "8.14.3", password: str | None = PASSWORD):
        self.data_dir = data_dir
        self.log_path = log_path
        self.version = version
        self.password = password
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> EsProcess:
        cmd = [sys.executable, "-m", "sandbox.standins.elasticsearch", "--port", str(self.port)]
        cmd += ["--data-dir", str(self.data_dir), "--version", self.version]
        if self.password is not None:
            cmd += ["--password", self.password]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self.wait_ready()
        return self

    def wait_ready(self, deadline: float = 15.0) -> None:
        end = time.monotonic() + deadline
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"stand-in exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/_sandbox/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() >= end:
                raise AssertionError(f"stand-in not ready after {deadline}s:\n{self.log()}")
            time.sleep(0.02)

    def terminate(self) -> int:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGTERM)
        return self.proc.wait(timeout=10)

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def set_health(self, status: str, indices: list[str] | None = None) -> None:
        body: dict[str, Any] = {"status": status}
        if indices is not None:
            body["indices"] = indices
        code, _, _ = http(self.url, "POST", "/_sandbox/health", json.dumps(body).encode(), auth=None)
        assert code == 200


def _start(tmp: Path, name: str, **kwargs: Any) -> EsProcess:
    data = tmp / name
    return EsProcess(data, tmp / f"{name}.log", **kwargs).start()


def _stop(es: EsProcess) -> None:
    if es.proc is not None and es.proc.poll() is None:
        assert es.terminate() == 0, es.log()
    assert "Traceback" not in es.log(), es.log()


@pytest.fixture(scope="module")
def es8(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EsProcess]:
    es = _start(tmp_path_factory.mktemp("es8"), "es8")
    yield es
    _stop(es)


@pytest.fixture(scope="module")
def es7(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EsProcess]:
    es = _start(tmp_path_factory.mktemp("es7"), "es7", version="7.17.6")
    yield es
    _stop(es)


@pytest.fixture
def fresh8(tmp_path: Path) -> Iterator[EsProcess]:
    """A server of its own, for tests that change the password or the cluster colour."""
    es = _start(tmp_path, "fresh")
    yield es
    _stop(es)


def http(
    base: str,
    method: str,
    path: str,
    body: bytes | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    auth: tuple[str, str] | None = ("elastic", PASSWORD),
) -> tuple[int, Mapping[str, str], bytes]:
    """A raw request, for what the client would never send (garbage, odd media types)."""
    req = urllib.request.Request(base + path, data=body, method=method)
    for key, value in (headers or {}).items():
        req.add_header(key, value)
    if body is not None and not any(k.lower() == "content-type" for k in headers or {}):
        req.add_header("Content-Type", "application/json")
    if auth is not None:
        req.add_header("Authorization", "Basic " + b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, headers_out, data = resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        status, headers_out, data = exc.code, exc.headers, exc.read()
    return int(status), {k.lower(): str(v) for k, v in headers_out.items()}, bytes(data)


def sync_client(es: EsProcess, **kwargs: Any) -> Elasticsearch:
    kwargs.setdefault("basic_auth", ("elastic", PASSWORD))
    return Elasticsearch(es.url, **CLIENT_OPTS, **kwargs)


def async_client(es: EsProcess, **kwargs: Any) -> AsyncElasticsearch:
    kwargs.setdefault("basic_auth", ("elastic", PASSWORD))
    return AsyncElasticsearch(es.url, **CLIENT_OPTS, **kwargs)


# -- what an 8.x client needs for a 7.17 server -------------------------------------------------------

_COMPAT_RE = re.compile(r"application/vnd\.elasticsearch\+([\w-]+)\s*;\s*compatible-with=\d+")


def _plain_json(headers: HttpHeaders | None) -> HttpHeaders | None:
    """Undo the client's compatible-with=8 rewrite, last thing before the bytes go out."""
    if headers is None:
        return None
    out = HttpHeaders(headers.items())
    for name in ("accept", "content-type"):
        if name in out:
            out[name] = _COMPAT_RE.sub(r"application/\1", out[name])
    return out


class PlainJsonNode(Urllib3HttpNode):
    def perform_request(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        headers: HttpHeaders | None = None,
        request_timeout: DefaultType | float | None = DEFAULT,
    ) -> NodeApiResponse:
        return super().perform_request(
            method, target, body=body, headers=_plain_json(headers), request_timeout=request_timeout
        )


class AsyncPlainJsonNode(AiohttpHttpNode):
    async def perform_request(  # type: ignore[override]
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        headers: HttpHeaders | None = None,
        request_timeout: DefaultType | float | None = DEFAULT,
    ) -> NodeApiResponse:
        return await super().perform_request(
            method, target, body=body, headers=_plain_json(headers), request_timeout=request_timeout
        )


# -- info, product check, media types -----------------------------------------------------------------


def test_info_and_product_check_sync(es8: EsProcess) -> None:
    client = sync_client(es8)
    info = client.info()
    assert info["version"]["number"] == "8.14.3"
    assert info["version"]["build_flavor"] == "default"
    assert info["version"]["lucene_version"] == "9.10.0"
    assert info["version"]["minimum_wire_compatibility_version"] == "7.17.0"
    assert info["tagline"] == "You Know, for Search"
    assert info["cluster_name"] == "docker-cluster"
    assert info.meta.headers["x-elastic-product"] == "Elasticsearch"
    assert info.meta.headers["content-type"] == "application/vnd.elasticsearch+json;compatible-with=8"
    assert client.ping() is True
    client.close()


async def test_info_and_product_check_async(es8: EsProcess) -> None:
    client = async_client(es8)
    try:
        info = await client.info()
        assert info["version"]["number"] == "8.14.3"
        assert await client.ping() is True
        health = await client.cluster.health()
        assert health["status"] == "green"
    finally:
        await client.close()


def test_media_types_on_8x(es8: EsProcess) -> None:
    code, headers, body = http(es8.url, "GET", "/", headers={"Accept": "application/json"})
    assert (code, headers["content-type"], headers["x-elastic-product"]) == (200, "application/json", "Elasticsearch")
    code, headers, _ = http(es8.url, "GET", "/", headers={"Accept": COMPAT7})
    assert (code, headers["content-type"]) == (200, "application/vnd.elasticsearch+json;compatible-with=7")
    code, headers, body = http(
        es8.url, "GET", "/", headers={"Accept": "application/vnd.elasticsearch+json; compatible-with=9"}
    )
    error = json.loads(body)["error"]
    assert code == 400 and headers["x-elastic-product"] == "Elasticsearch"
    assert error["type"] == "media_type_header_exception"
    assert error["reason"] == "Invalid media-type value on headers [Accept, Content-Type]"
    assert error["caused_by"]["reason"].startswith("Accept version must be either version 8 or 7, but found 9.")
    # both headers must carry the same compatible version when there is a body
    code, _, body = http(
        es8.url, "POST", "/_count", b"{}", headers={"Accept": COMPAT7, "Content-Type": "application/json"}
    )
    assert code == 400 and "A compatible version is required" in json.loads(body)["error"]["caused_by"]["reason"]


def test_unmodified_8x_client_is_rejected_by_7x(es7: EsProcess) -> None:
    client = sync_client(es7)
    with pytest.raises(BadRequestError) as err:
        client.info()
    assert err.value.error == "media_type_header_exception"
    assert "but found 8" in err.value.body["error"]["caused_by"]["reason"]
    assert client.ping() is False
    # Overriding headers does not help: the client rewrites application/json to compatible-with=8 after
    # merging them (elasticsearch/_sync/client/_base.py mimetype_header_to_compat).
    plain = {"accept": "application/json", "content-type": "application/json"}
    with pytest.raises(BadRequestError):
        client.options(headers=plain).search(index="sys")
    # Quirk of the real parser: an Accept with a comma is a media range and is not version-checked.
    assert client.cat.health(h="status").body.strip() == "green"
    # Explicit compatible-with=7 on a raw request is left alone by the client and accepted by 7.17.
    raw = client.perform_request("GET", "/", headers={"accept": COMPAT7})
    assert raw["version"]["number"] == "7.17.6"
    assert raw.meta.headers["content-type"] == "application/json; charset=UTF-8"
    client.close()


def test_8x_client_with_plain_json_node_talks_to_7x(es7: EsProcess) -> None:
    client = sync_client(es7, node_class=PlainJsonNode)
    assert client.info()["version"]["number"] == "7.17.6"
    assert client.ping() is True
    created = client.index(index="mod", id="mod-1", document={"name": "Display", "running": True})
    assert created["result"] == "created" and created["_type"] == "_doc"
    bulk = client.bulk(operations=[{"index": {"_index": "mod", "_id": "mod-2"}}, {"name": "Camera"}])
    assert bulk["errors"] is False
    found = client.search(index="mod", query={"match": {"name": "camera"}})
    assert found["hits"]["total"] == {"value": 1, "relation": "eq"}
    assert found["hits"]["hits"][0]["_type"] == "_doc"
    assert client.count(index="mod")["count"] == 2
    client.close()


async def test_async_8x_client_with_plain_json_node_talks_to_7x(es7: EsProcess) -> None:
    client = async_client(es7, node_class=AsyncPlainJsonNode)
    try:
        assert (await client.info())["version"]["number"] == "7.17.6"
        assert (await client.cluster.health())["status"] == "green"
        await client.index(index="zone", id="zone-1", document={"name": "Level 1"})
        assert (await client.count(index="zone", q="name:level"))["count"] == 1
    finally:
        await client.close()


# -- indices, documents, bulk, search -----------------------------------------------------------------


def test_index_bulk_count_search_paging(es8: EsProcess) -> None:
    client = sync_client(es8)
    assert client.indices.create(index="sys")["acknowledged"] is True
    assert client.indices.exists(index="sys")
    assert not client.indices.exists(index="sys_missing")
    ops: list[dict[str, Any]] = []
    for i in range(25):
        ops.append({"index": {"_index": "sys", "_id": f"sys-{i:02d}"}})
        ops.append({"name": f"Room {i:02d}", "kind": "building" if i % 5 == 0 else "room", "zones": [f"z{i % 3}"]})
    result = client.bulk(operations=ops)
    assert result["errors"] is False and len(result["items"]) == 25
    assert result["items"][0]["index"]["status"] == 201
    assert client.count(index="sys")["count"] == 25

    page = client.search(index="sys", from_=20, size=10, sort=[{"name.keyword": "asc"}])
    assert page["hits"]["total"] == {"value": 25, "relation": "eq"}  # rest-api's X-Total-Count
    assert [h["_id"] for h in page["hits"]["hits"]] == [f"sys-{i}" for i in range(20, 25)]
    assert page["hits"]["hits"][0]["sort"] == ["Room 20"]
    assert client.search(index="sys", track_total_hits=10)["hits"]["total"] == {"value": 10, "relation": "gte"}
    assert "total" not in client.search(index="sys", track_total_hits=False)["hits"]
    assert client.search(index="sys", size=0)["hits"]["hits"] == []

    assert client.count(index="sys", query={"term": {"kind": "building"}})["count"] == 5
    assert client.count(index="sys", query={"terms": {"zones": ["z0", "z1"]}})["count"] == 17
    assert client.count(index="sys", query={"match": {"name": "room 07"}})["count"] == 25
    assert client.count(index="sys", query={"match": {"name": {"query": "room 07", "operator": "and"}}})["count"] == 1
    qs = {"query_string": {"query": "oom 1*", "fields": ["name"]}}
    assert client.count(index="sys", query=qs)["count"] == 25  # "oom" is a substring of every name
    assert client.count(index="sys", query={"simple_query_string": {"query": "+oom +12"}})["count"] == 1
    boolean = {
        "bool": {
            "must": [{"match_all": {}}],
            "filter": [{"term": {"kind": "room"}}],
            "must_not": [{"ids": {"values": ["sys-01"]}}],
            "should": [{"term": {"zones": "z2"}}, {"term": {"zones": "z1"}}],
            "minimum_should_match": 1,
        }
    }
    assert client.count(index="sys", query=boolean)["count"] == 12
    assert client.search(index="sys", q="name:19")["hits"]["hits"][0]["_id"] == "sys-19"
    filtered = client.search(index="sys", q="19", source_includes=["name"])["hits"]["hits"][0]
    assert filtered["_source"] == {"name": "Room 19"}

    with pytest.raises(NotFoundError) as err:
        client.search(index="sys_missing")
    assert err.value.error == "index_not_found_exception"
    assert err.value.body["error"]["resource.id"] == "sys_missing"
    with pytest.raises(BadRequestError) as bad:
        client.search(index="sys", query={"bogus": {}})
    assert bad.value.error == "parsing_exception"

    rows: Any = client.cat.indices(index="sys", format="json").body
    assert rows[0]["index"] == "sys" and rows[0]["docs.count"] == "25" and rows[0]["health"] == "green"
    client.close()


def test_document_lifecycle(es8: EsProcess) -> None:
    client = sync_client(es8)
    assert client.index(index="driver", id="driver-1", document={"name": "Sony"})["result"] == "created"
    again = client.index(index="driver", id="driver-1", document={"name": "Sony Bravia"})
    assert (again["result"], again["_version"]) == ("updated", 2)
    auto = client.index(index="driver", document={"name": "Auto"})
    assert len(auto["_id"]) == 20
    got = client.get(index="driver", id="driver-1")
    assert got["found"] is True and got["_source"] == {"name": "Sony Bravia"}
    assert client.exists(index="driver", id="driver-1")
    with pytest.raises(ConflictError) as conflict:
        client.create(index="driver", id="driver-1", document={"name": "dup"})
    assert conflict.value.error == "version_conflict_engine_exception"
    assert client.update(index="driver", id="driver-1", doc={"role": 1})["result"] == "updated"
    assert client.update(index="driver", id="driver-1", doc={"role": 1})["result"] == "noop"
    assert client.delete(index="driver", id="driver-1")["result"] == "deleted"
    with pytest.raises(NotFoundError) as missing:
        client.get(index="driver", id="driver-1")
    assert missing.value.body == {"_index": "driver", "_id": "driver-1", "found": False}
    assert not client.exists(index="driver", id="driver-1")
    assert client.indices.delete(index="driver")["acknowledged"] is True
    with pytest.raises(NotFoundError):
        client.indices.delete(index="driver")
    client.close()


async def test_async_client_bulk_and_search(es8: EsProcess) -> None:
    client = async_client(es8)
    try:
        ops: list[dict[str, Any]] = []
        for i in range(12):
            ops += [{"create": {"_index": "authority", "_id": f"auth-{i}"}}, {"domain": f"site{i}.example.com"}]
        ops += [
            {"delete": {"_index": "authority", "_id": "auth-0"}},
            {"create": {"_index": "authority", "_id": "auth-1"}},
        ]
        ops += [{"name": "duplicate"}]
        result = await client.bulk(operations=ops)
        assert result["errors"] is True
        assert result["items"][12]["delete"]["result"] == "deleted"
        assert result["items"][13]["create"]["status"] == 409
        page = await client.search(index="authority", size=5, from_=5, sort="domain.keyword:desc")
        assert page["hits"]["total"]["value"] == 11
        assert len(page["hits"]["hits"]) == 5
        hits = (await client.search(index="authority", query={"prefix": {"domain.keyword": "site1"}}))["hits"]
        assert {h["_id"] for h in hits["hits"]} == {"auth-1", "auth-10", "auth-11"}
    finally:
        await client.close()


# -- health ------------------------------------------------------------------------------------------


def test_cluster_health_green_yellow_red(fresh8: EsProcess) -> None:
    client = sync_client(fresh8)
    client.index(index="sys", id="s1", document={"name": "one"})
    client.index(index="zone", id="z1", document={"name": "zone"})
    assert client.cluster.health()["status"] == "green"

    fresh8.set_health("yellow")
    health = client.cluster.health()
    assert health["status"] == "yellow" and health["active_shards_percent_as_number"] == 50.0
    assert client.search(index="sys")["hits"]["total"]["value"] == 1  # yellow still serves

    fresh8.set_health("red", indices=["sys"])
    health = client.cluster.health()
    assert health.meta.status == 200 and health["status"] == "red" and health["unassigned_shards"] == 2
    cat_rows: Any = client.cat.health(format="json").body
    assert cat_rows[0]["status"] == "red"
    with pytest.raises(ApiError) as timed_out:
        client.cluster.health(wait_for_status="yellow", timeout="100ms")
    assert timed_out.value.meta.status == 408 and timed_out.value.body["timed_out"] is True
    with pytest.raises(ApiError) as failed:
        client.search(index="sys")
    assert failed.value.meta.status == 503
    assert failed.value.body["error"]["type"] == "search_phase_execution_exception"
    assert failed.value.body["error"]["reason"] == "all shards failed"
    with pytest.raises(ApiError) as get_failed:
        client.get(index="sys", id="s1")
    assert get_failed.value.body["error"]["type"] == "no_shard_available_action_exception"
    partial = client.search(index="sys,zone")
    assert partial["_shards"]["failed"] == 1 and partial["hits"]["total"]["value"] == 1
    write = client.bulk(operations=[{"index": {"_index": "sys", "_id": "s2"}}, {"n": 2}], timeout="100ms")
    assert write["errors"] is True and write["items"][0]["index"]["status"] == 503
    assert write["items"][0]["index"]["error"]["type"] == "unavailable_shards_exception"

    fresh8.set_health("green")
    assert client.cluster.health(wait_for_status="green", timeout="1s")["status"] == "green"
    assert client.search(index="sys")["hits"]["total"]["value"] == 1
    client.close()


# -- security ----------------------------------------------------------------------------------------


def test_wrong_password_and_password_change(fresh8: EsProcess) -> None:
    wrong = sync_client(fresh8, basic_auth=("elastic", "not-it"))
    with pytest.raises(AuthenticationException) as err:
        wrong.info()
    assert err.value.error == "security_exception"
    assert err.value.body["error"]["reason"] == "unable to authenticate user [elastic] for REST request [/]"
    assert "Basic realm=" in err.value.meta.headers["www-authenticate"]
    assert wrong.ping() is False
    code, _, body = http(fresh8.url, "GET", "/_cluster/health", auth=None)
    assert code == 401 and "missing authentication credentials" in json.loads(body)["error"]["reason"]

    client = sync_client(fresh8)
    assert client.security.change_password(username="elastic", password="rotated-1").body == {}
    with pytest.raises(AuthenticationException):
        client.info()
    rotated = sync_client(fresh8, basic_auth=("elastic", "rotated-1"))
    assert rotated.security.authenticate()["username"] == "elastic"
    with pytest.raises(BadRequestError):
        rotated.security.change_password(username="elastic", password="short")

    key = rotated.security.create_api_key(name="placeos-exporter")
    by_key = sync_client(fresh8, basic_auth=None, api_key=key["encoded"])
    assert by_key.info()["version"]["number"] == "8.14.3"
    assert by_key.security.authenticate()["authentication_type"] == "api_key"
    rotated.security.invalidate_api_key(ids=[key["id"]])
    with pytest.raises(AuthenticationException):
        by_key.info()
    for c in (wrong, client, rotated, by_key):
        c.close()


def test_data_survives_sigkill_and_restart(tmp_path: Path) -> None:
    es = _start(tmp_path, "persist")
    client = sync_client(es)
    client.bulk(operations=[op for i in range(7) for op in ({"index": {"_index": "user", "_id": f"u{i}"}}, {"n": i})])
    client.security.change_password(username="elastic", password="rotated-2")
    key = sync_client(es, basic_auth=("elastic", "rotated-2")).security.create_api_key(name="k")
    es.set_health("yellow")
    client.close()
    es.kill()

    es.start()  # same port, same data dir, same --password flag: the stored password wins
    try:
        after = sync_client(es, basic_auth=("elastic", "rotated-2"))
        assert after.count(index="user")["count"] == 7
        assert after.get(index="user", id="u3")["_source"] == {"n": 3}
        assert after.cluster.health()["status"] == "yellow"
        with pytest.raises(AuthenticationException):
            sync_client(es).info()
        assert sync_client(es, basic_auth=None, api_key=key["encoded"]).count(index="user")["count"] == 7
        after.close()
    finally:
        _stop(es)


# -- garbage -----------------------------------------------------------------------------------------


def test_garbage_gets_proper_errors(es8: EsProcess) -> None:
    def error_of(method: str, path: str, body: bytes | None = None, **kwargs: Any) -> tuple[int, Any]:
        code, _, raw = http(es8.url, method, path, body, **kwargs)
        payload = json.loads(raw)
        return code, payload["error"] if isinstance(payload["error"], str) else payload["error"]["type"]

    assert error_of("POST", "/sys/_search", b"{not json") == (400, "x_content_parse_exception")
    assert error_of("POST", "/sys/_search", b'{"size": 1, "size": 2}') == (400, "x_content_parse_exception")
    assert error_of("POST", "/sys/_search", b"\xff\xfe") == (400, "x_content_parse_exception")
    assert error_of("POST", "/sys/_search", b'{"size": "ten"}') == (400, "x_content_parse_exception")
    assert error_of("POST", "/sys/_search", b'{"frobnicate": 1}') == (400, "parsing_exception")
    assert error_of("GET", "/sys/_search?size=abc") == (400, "illegal_argument_exception")
    assert error_of("GET", "/sys/_search?from=9995&size=10") == (400, "illegal_argument_exception")
    ndjson = {"Content-Type": "application/x-ndjson"}
    assert error_of("POST", "/_bulk", b'{"index":{}}\n{}', headers=ndjson) == (400, "illegal_argument_exception")
    assert error_of("POST", "/_bulk", b'"str"\n', headers=ndjson) == (400, "illegal_argument_exception")
    assert error_of("POST", "/_bulk", b'{"index":{"_id":"1"}}\n{}\n', headers=ndjson) == (
        400,
        "action_request_validation_exception",
    )
    assert error_of("PUT", "/Bad_Name") == (400, "invalid_index_name_exception")
    assert error_of("GET", "/", headers={"Accept": "garbage"}) == (400, "media_type_header_exception")
    code, reason = error_of("POST", "/sys/_doc", b"hello", headers={"Content-Type": "text/plain"})
    assert (code, reason) == (406, "Content-Type header [text/plain] is not supported")
    code, reason = error_of("GET", "/_nonsense/x/y/z")
    assert (code, reason) == (400, "no handler found for uri [/_nonsense/x/y/z] and method [GET]")
    code, reason = error_of("GET", "/_bulk")
    assert code == 405 and reason.startswith("Incorrect HTTP method for uri [/_bulk] and method [GET]")
    code, _, _ = http(es8.url, "POST", "/_sandbox/health", b"[1, 2", auth=None)
    assert code == 400
    code, _, _ = http(es8.url, "POST", "/_sandbox/health", b'{"status": "purple"}', auth=None)
    assert code == 400
    assert "Traceback" not in es8.log()


# -- a real third-party consumer ---------------------------------------------------------------------

EXPORTER = shutil.which("prometheus-elasticsearch-exporter")


@pytest.mark.skipif(EXPORTER is None, reason="prometheus-elasticsearch-exporter not installed (Debian package)")
def test_prometheus_elasticsearch_exporter_reads_health(tmp_path: Path) -> None:
    es = _start(tmp_path, "exp", password=None)
    port = free_port()
    assert EXPORTER is not None
    log = (tmp_path / "exporter.log").open("wb")
    exporter = subprocess.Popen(
        [EXPORTER, f"--es.uri={es.url}", f"--web.listen-address=127.0.0.1:{port}", "--es.timeout=3s"],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )

    def wait_for_colour(colour: str, deadline: float = 15.0) -> str:
        pattern = re.compile(rf'^elasticsearch_cluster_health_status\{{[^}}]*color="{colour}"[^}}]*\}} 1$', re.M)
        end = time.monotonic() + deadline
        text = ""
        while time.monotonic() < end:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                    text = str(resp.read().decode())
                if pattern.search(text):
                    return text
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"no {colour} health in metrics:\n{text[-3000:]}")

    try:
        text = wait_for_colour("green")
        assert re.search(r'elasticsearch_cluster_health_status\{[^}]*color="red"[^}]*\} 0', text)
        es.set_health("red")
        wait_for_colour("red")
    finally:
        os.kill(exporter.pid, signal.SIGTERM)
        exporter.wait(timeout=10)
        log.close()
        _stop(es)


def test_sigterm_exits_cleanly(tmp_path: Path) -> None:
    es = _start(tmp_path, "term", password=None)
    assert es.terminate() == 0
    assert "stopped" in es.log()


async def test_health_wait_returns_when_colour_changes(fresh8: EsProcess) -> None:
    """A request waiting for green while the cluster is yellow answers 200 (not 408) once it turns green."""
    fresh8.set_health("yellow")
    client = async_client(fresh8)
    try:
        waiting = asyncio.create_task(client.cluster.health(wait_for_status="green", timeout="10s"))
        # flip the colour from another connection while the request is (most likely) parked in the server
        await asyncio.to_thread(fresh8.set_health, "green")
        health = await asyncio.wait_for(waiting, timeout=10)
        assert health.meta.status == 200 and health["status"] == "green" and health["timed_out"] is False
    finally:
        await client.close()
