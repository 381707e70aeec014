"""The serving process: settings, scheduler, HTTP server and configuration reload; and ``check``'s one round.

``cli`` parses the command line and calls into here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client.core import GaugeMetricFamily, Metric

from exporter import __version__, log
from exporter.expose.metrics import new
from exporter.expose.report import check_report, render_check
from exporter.expose.routes import AppState, make_app
from exporter.expose.webconfig import WebConfig
from exporter.model.triage import NOTHING_CONFIGURED
from exporter.probes.clients.rest_api import platform_version
from exporter.runtime.schedule import load, longest_timeout
from exporter.runtime.scheduler import MAX_START_SPREAD, Scheduler
from exporter.runtime.snapshot import ClusterSnapshot, Snapshot
from exporter.settings import ConfigError, Settings


async def check(settings: Settings, as_json: bool) -> int:
    """One round of every enabled probe, printed as the page's troubleshooting steps."""
    snapshot = Snapshot()
    scheduler = Scheduler(settings, snapshot, detect_era=platform_version)
    await scheduler.run_once()
    idle = [cs.name for cs in snapshot.clusters.values() if not cs.enabled()]
    if idle:
        print(f"placeos-exporter: nothing to probe in cluster {', '.join(idle)}: {NOTHING_CONFIGURED}", file=sys.stderr)
        return 2
    report = check_report(snapshot)
    print(log.REDACT(json.dumps(report, indent=2) if as_json else render_check(report)))
    return 0 if report["ok"] else 1


class ListenError(Exception):
    """The listen address is taken or invalid."""


def split_address(address: str) -> tuple[str, int]:
    """(host, port) of an address the settings have validated as host:port."""
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


class Exporter:
    """The serving process: settings, scheduler, HTTP server, and config reload."""

    def __init__(
        self, settings: Settings, config_file: Path | None, cli_overrides: dict[str, Any], lifecycle: bool = True
    ) -> None:
        self.detect = platform_version
        self.settings = settings
        self.config_file = config_file
        self.cli_overrides = cli_overrides
        self.snapshot = Snapshot()
        self.scheduler = Scheduler(settings, self.snapshot, detect_era=self.detect)
        self.reload_ok = 1
        self.reload_at = time.time()
        self.reload_count = 0
        self.started = time.monotonic()
        self.lock = asyncio.Lock()
        self.runner: web.AppRunner
        self.state = AppState(
            settings=settings,
            snapshot=self.snapshot,
            ready=self.ready,
            reload=self.reload if lifecycle else None,  # POST /-/reload only with --web.enable-lifecycle
            exporter_series=self.series,
            exporter_version=lambda: self.reload_count,
        )

    async def start(self) -> int:
        """Listen on every address, then start probing; returns the first bound port (0 in the settings
        picks a free one)."""
        web_config = WebConfig.load(self.settings.web_config_file) if self.settings.web_config_file else None
        middlewares = [web_config.middleware()] if web_config else []
        self.runner = web.AppRunner(make_app(self.state, middlewares), access_log=None, handle_signals=False)
        await self.runner.setup()
        ports = []
        for address in self.settings.listen_addresses:
            host, port = split_address(address)
            site = web.TCPSite(
                self.runner, host, port, reuse_address=True, ssl_context=web_config.ssl_context if web_config else None
            )
            try:
                await site.start()
            except OSError as exc:
                await self.runner.cleanup()
                raise ListenError(f"cannot listen on {address}: {exc.strerror}") from None
            sockets = getattr(site._server, "sockets", None) or []
            ports.append(int(sockets[0].getsockname()[1]) if sockets else port)
        await self.scheduler.start()
        return ports[0]

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.scheduler.stop()
        await self.runner.cleanup()

    def ready(self) -> bool:
        if self.scheduler.first_round.is_set():
            return True
        # A probe that cannot finish is cut at its timeout, so by then every probe has a result.
        return time.monotonic() - self.started > longest_timeout(self.settings) + MAX_START_SPREAD + 1

    def series(self) -> Iterator[Metric]:
        ok: GaugeMetricFamily = new("placeos_exporter_config_last_reload_successful")
        ok.add_metric([], self.reload_ok)
        yield ok
        at: GaugeMetricFamily = new("placeos_exporter_config_last_reload_success_timestamp_seconds")
        at.add_metric([], self.reload_at)
        yield at

    async def reload(self) -> tuple[bool, str]:
        """Re-read the configuration; a bad one keeps the old running (and says so in a gauge)."""
        async with self.lock:
            try:
                settings = load(self.config_file, overrides=self.cli_overrides)
            except ConfigError as exc:
                self.reload_ok = 0
                self.reload_count += 1
                log.get().error("reload failed, keeping the running configuration: %s", exc)
                return False, f"reload failed: {exc}"
            log.setup(settings.log_format, settings.log_level, settings.secrets())
            await self.scheduler.stop()
            # Keep history and counters of clusters that stay, in the new order; drop the others.
            old = self.snapshot.clusters
            self.snapshot.clusters = {
                c.name: old.get(c.name) or ClusterSnapshot(c.name, settings.history) for c in settings.clusters
            }
            self.settings = settings
            self.scheduler = Scheduler(settings, self.snapshot, detect_era=self.detect)
            await self.scheduler.start()
            self.state.settings = settings
            self.reload_ok, self.reload_at = 1, time.time()
            self.reload_count += 1
            log.get().info("configuration reloaded: %d cluster(s)", len(settings.clusters))
            return True, "reloaded"


async def serve(
    settings: Settings, config_file: Path | None, cli_overrides: dict[str, Any], lifecycle: bool = False
) -> None:
    exporter = Exporter(settings, config_file, cli_overrides, lifecycle=lifecycle)
    await exporter.start()
    log.get().info("placeos-exporter %s listening on %s", __version__, settings.listen_address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(exporter.reload()))
    try:
        await stop.wait()
    finally:
        log.get().info("shutting down")
        await exporter.stop()
