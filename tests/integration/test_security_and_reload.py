"""Exporter TLS and bcrypt basic auth (exporter-toolkit web config), and configuration reload on
SIGHUP and POST /-/reload: a bad new config keeps the old one and says so in a gauge."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path

import aiohttp
import pytest
from support import parse, wait_for

from exporter.expose.webconfig import hash_password
from sandbox.backends import RedisServer, _make_tls
from sandbox.ports import free_port
from sandbox.procs import Proc


def start_exporter(tmp_path: Path, env: dict[str, str], *args: str) -> tuple[Proc, int]:
    port = free_port()
    proc = Proc.start(
        [sys.executable, "-m", "exporter.cli", "serve", "--web.listen-address", f"127.0.0.1:{port}", *args],
        log_path=tmp_path / "exporter.log", name="exporter",
        env={**os.environ, "PLACEOS_EXPORTER_INTERVAL": "1", "PLACEOS_EXPORTER_TIMEOUT": "0.5", **env},
    )  # fmt: skip
    proc.wait_ready(port, 20)
    return proc, port


def basic(user: str, password: str) -> str:
    return "Basic " + b64encode(f"{user}:{password}".encode()).decode()


async def test_tls_and_basic_auth(tmp_path: Path, redis_server: RedisServer) -> None:
    ca, cert, key = _make_tls(tmp_path / "tls")
    web_config = tmp_path / "web.yml"
    web_config.write_text(
        f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
        f"basic_auth_users:\n  prometheus: {hash_password('scrape-pass-4711')}\n"
        "http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n"
    )
    proc, port = start_exporter(tmp_path, {"REDIS_URL": redis_server.url}, "--web.config.file", str(web_config))
    try:
        context = ssl.create_default_context(cafile=str(ca))
        async with aiohttp.ClientSession() as http:
            url = f"https://127.0.0.1:{port}"
            good = {"Authorization": basic("prometheus", "scrape-pass-4711")}
            async with http.get(url + "/metrics", ssl=context, headers=good) as resp:
                assert resp.status == 200 and "placeos_probe_success" in await resp.text()
                assert resp.headers["X-Content-Type-Options"] == "nosniff"
            for auth in (basic("prometheus", "wrong"), basic("nobody", "scrape-pass-4711"), None):
                headers = {"Authorization": auth} if auth else {}
                async with http.get(url + "/metrics", ssl=context, headers=headers) as resp:
                    assert resp.status == 401
                    assert resp.headers["WWW-Authenticate"].startswith("Basic")
            async with http.get(url + "/-/healthy", ssl=context) as resp:
                assert resp.status == 200  # kubelet probes need no credential
            with pytest.raises(aiohttp.ClientError):  # plain HTTP to the TLS port is refused
                async with http.get(f"http://127.0.0.1:{port}/-/healthy") as resp:
                    await resp.text()
            # Users rotate without a restart: the file is re-read when it changes.
            web_config.write_text(
                f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
                f"basic_auth_users:\n  prometheus: {hash_password('rotated-pass-0815')}\n"
            )
            os.utime(web_config, (os.path.getmtime(web_config) + 5,) * 2)
            rotated = {"Authorization": basic("prometheus", "rotated-pass-0815")}
            async with http.get(url + "/metrics", ssl=context, headers=rotated) as resp:
                assert resp.status == 200
    finally:
        proc.terminate()
    log = (tmp_path / "exporter.log").read_text()
    assert "scrape-pass-4711" not in log and "rotated-pass-0815" not in log


def test_bad_web_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    web_config = tmp_path / "web.yml"
    web_config.write_text("basic_auth_users:\n  prometheus: not-a-hash\n")
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "exporter.cli", "serve", "--web.listen-address", f"127.0.0.1:{port}",
         "--web.config.file", str(web_config)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "not a bcrypt hash" in result.stderr


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return parse(resp.read().decode())


def post_reload(port: int) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/-/reload", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


RELOAD_OK = ("placeos_exporter_config_last_reload_successful", frozenset())


async def test_reload_on_sighup_and_post(tmp_path: Path, redis_server: RedisServer) -> None:
    config = tmp_path / "config.yml"
    config.write_text(f"clusters:\n  - name: one\n    era: C\n    redis: {{url: '{redis_server.url}'}}\n")
    proc, port = start_exporter(tmp_path, {}, "--config.file", str(config), "--web.enable-lifecycle")
    try:
        assert scrape(port)[RELOAD_OK] == 1
        # A second cluster appears after SIGHUP.
        config.write_text(config.read_text() + f"  - name: two\n    era: C\n    redis: {{url: '{redis_server.url}'}}\n")
        os.kill(proc.pid, signal.SIGHUP)

        async def two_served() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/probe?cluster=two", timeout=5) as resp:
                    return resp.status == 200
            except urllib.error.HTTPError:
                return False

        await wait_for(two_served, 10, "cluster two after SIGHUP")
        # A broken file is refused: the old configuration keeps running and the gauge says so.
        config.write_text("clusters: [ {name: x, era: Z} ]\n")
        assert post_reload(port) == 500
        samples = scrape(port)
        assert samples[RELOAD_OK] == 0
        assert ("placeos_probe_success", frozenset({("probe", "redis")})) in samples
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/probe?cluster=two", timeout=5).status == 200
        # Fixed again: reload succeeds.
        config.write_text(f"clusters:\n  - name: one\n    era: C\n    redis: {{url: '{redis_server.url}'}}\n")
        assert post_reload(port) == 200
        assert scrape(port)[RELOAD_OK] == 1
    finally:
        proc.terminate()
