"""The status page as a person sees it: loaded in headless Chromium, verdict first, impacts, probes."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest
from support import RunningExporter, settings_for

from sandbox.backends import RedisServer
from sandbox.ports import free_port

CHROMIUM = shutil.which("chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


async def browse(url: str, profile: Path, *extra: str) -> str:
    """What Chromium renders (the DOM after load), or a screenshot when asked for one."""
    proc = await asyncio.create_subprocess_exec(
        str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *extra, url,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0
    return out.decode()


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is installed by scripts/bootstrap.sh")
async def test_status_page_in_a_browser(redis_auth: RedisServer, tmp_path: Path) -> None:
    redis_server = redis_auth
    url = f"redis://{redis_server.host}:{redis_server.port}/0"
    cluster = {"era": "C", "redis": {"url": url, "password": "visible-only-if-leaked"},
               "postgres": {"enabled": False}, "elasticsearch": {"enabled": False}}  # fmt: skip
    async with RunningExporter(settings_for(cluster)) as exp:
        await exp.wait_reason("redis", "auth_failed")  # a wrong password in the exporter's own settings
        dom = await browse(exp.url + "/", tmp_path / "profile", "--dump-dom")
        assert 'id="verdict"' in dom and "exporter's own settings or credentials are wrong" in dom
        assert "auth_failed" in dom and 'http-equiv="refresh"' in dom
        assert "visible-only-if-leaked" not in dom
        redis_server.proc.kill()
        await exp.wait_reason("redis", "connection_refused")
        dom = await browse(exp.url + "/", tmp_path / "profile", "--dump-dom")
        assert "Redis failure" in dom
        for impact in ("Module status changes stop updating", "Signals stop", "Executing module functions fails"):
            assert impact in dom
        shot = tmp_path / "status.png"
        await browse(exp.url + "/", tmp_path / "profile", f"--screenshot={shot}", "--window-size=1100,800")
        assert shot.stat().st_size > 10_000  # a rendered page, not an empty canvas


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is installed by scripts/bootstrap.sh")
async def test_fleet_overview_in_a_browser(redis_server: RedisServer, tmp_path: Path) -> None:
    """Several clusters: / is one row per cluster, each linking to its own page (with what to do)."""
    dead = f"redis://127.0.0.1:{free_port()}/0"
    off = {"core_discovery": {"enabled": False}}
    clusters = [{"name": "hq", "era": "C", "redis": {"url": redis_server.url}, "probes": off},
                {"name": "branch", "era": "C", "redis": {"url": dead}, "probes": off}]  # fmt: skip
    async with RunningExporter(settings_for({}, clusters=clusters)) as exp:
        await exp.wait_reason("redis", "ok")
        dom = await browse(exp.url + "/", tmp_path / "profile", "--dump-dom")
        assert 'id="fleet"' in dom and "PlaceOS fleet" in dom
        assert '<a href="/?cluster=hq">hq</a>' in dom and '<a href="/?cluster=branch">branch</a>' in dom
        branch = await browse(exp.url + "/?cluster=branch", tmp_path / "profile", "--dump-dom")
        assert "Redis failure" in branch and "<b>Confirm:</b>" in branch and "UTC" in branch
        shot = tmp_path / "fleet.png"
        await browse(exp.url + "/", tmp_path / "profile", f"--screenshot={shot}", "--window-size=1100,500")
        assert shot.stat().st_size > 5_000
