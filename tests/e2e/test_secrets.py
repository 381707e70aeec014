"""No secret ever leaves the exporter: with every secret set (database URL with a password, the
Elasticsearch password, the API key, an OAuth client secret and user password), run faults and search
/metrics, /diagnose, the status page, `check` output (text and JSON) and debug logs in both formats."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from support import wait_for

from sandbox.cluster import Sandbox
from sandbox.ports import free_port
from sandbox.procs import Proc

SECRET_KEYS = ("PASSWORD", "API_KEY", "SECRET")


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    sb = Sandbox("B", tmp_path_factory.mktemp("sandbox-secrets"), etcd_ttl=3)
    sb.start()
    try:
        yield sb
    finally:
        sb.stop()


def secrets_of(env: dict[str, str]) -> set[str]:
    found = {v for k, v in env.items() if any(s in k for s in SECRET_KEYS) and v}
    for value in env.values():
        if "://" in value and urlsplit(value).password:
            found.add(urlsplit(value).password or "")
    # The API key's secret half on its own, too (a log could print just that).
    found |= {v.split(".", 1)[1] for k, v in env.items() if k.endswith("API_KEY") and "." in v}
    return {s for s in found if len(s) >= 6}


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return str(resp.read().decode())


@pytest.mark.parametrize("log_format", ["plain", "json"])
async def test_no_secret_anywhere(sandbox: Sandbox, tmp_path: Path, log_format: str) -> None:
    env = sandbox.exporter_env() | {
        # OAuth secrets too: they are never used while an API key is set, but must never show either.
        "PLACEOS_EXPORTER_API_CLIENT_SECRET": "oauth-client-secret-5150",
        "PLACE_PASSWORD": "oauth-user-password-0711",
    }
    secrets = secrets_of(env)
    assert len(secrets) >= 5, "the sandbox must provide database, search, API and OAuth secrets"
    port = free_port()
    log_path = tmp_path / "exporter.log"
    proc = Proc.start(
        [sys.executable, "-m", "exporter.cli", "serve", "--web.listen-address", f"127.0.0.1:{port}",
         "--log.level", "debug", "--log.format", log_format],
        log_path=log_path, name="exporter",
        env={**os.environ, **env, "PLACEOS_EXPORTER_INTERVAL": "1", "PLACEOS_EXPORTER_TIMEOUT": "0.8"},
    )  # fmt: skip
    seen: list[str] = []
    base = f"http://127.0.0.1:{port}"
    try:
        proc.wait_ready(port, 20)
        faults = [("postgres", "wrong-credentials"), ("postgres", "kill"), ("elasticsearch", "wrong-credentials"),
                  ("rest-api", "unreachable"), ("etcd", "kill")]  # fmt: skip
        for part, mode in faults:
            sandbox.break_part(part, mode)
            try:

                async def failing(p: str = part) -> bool:
                    return '"healthy": false' in await asyncio.to_thread(fetch, base + "/diagnose")

                await wait_for(failing, 30, f"{part} {mode} to show")
                for path in ("/metrics", "/diagnose", "/", "/probe?cluster=default"):
                    seen.append(await asyncio.to_thread(fetch, base + path))
            finally:
                sandbox.heal(part)
        check = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "exporter.cli", "check", "--log.level", "debug",
            env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(check.communicate(), 60)
        seen += [out.decode(), err.decode()]
        check_json = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "exporter.cli", "check", "--json",
            env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(check_json.communicate(), 60)
        seen += [out.decode(), err.decode()]
    finally:
        proc.terminate()
    seen.append(log_path.read_text())
    assert "probe postgres" in seen[-1]  # the log did record the faults
    if log_format == "json":  # every line the process wrote, through five faults, is one JSON object
        lines = [line for line in seen[-1].splitlines() if line and not line.startswith("=== ")]  # Proc's marks
        assert lines and all(isinstance(json.loads(line), dict) for line in lines), [
            line for line in lines if not line.startswith("{")
        ][:3]
    for secret in secrets:
        hits = [i for i, text in enumerate(seen) if secret in text]
        assert not hits, f"a secret of {len(secret)} characters leaked into output #{hits}"
