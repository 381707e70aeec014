"""Command line: ``placeos-exporter serve | check [--json] | check-config``.

Exit codes: 0 ok; 1 something failed (``check``); 2 bad configuration. Bad input never produces a
traceback: one line naming the field, and exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client.core import GaugeMetricFamily, Metric

from exporter import __version__, log
from exporter.metrics import family
from exporter.report import check_report, render_check
from exporter.scheduler import MAX_START_SPREAD, Scheduler
from exporter.settings import ConfigError, ProbeName, Settings, load_settings, redact_url
from exporter.snapshot import ClusterSnapshot, Snapshot
from exporter.web import AppState, make_app
from exporter.webconfig import WebConfig


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="placeos-exporter",
        description="Prometheus exporter that tells PlaceOS operators which backend failed and what it breaks.",
    )
    parser.add_argument("--version", action="version", version=f"placeos-exporter {__version__}")
    sub = parser.add_subparsers(dest="command")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", type=Path, help="YAML file: clusters and per-probe tuning")
        p.add_argument("--log-format", choices=["plain", "json"], help="log line format")
        p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="log level")

    serve = sub.add_parser("serve", help="probe in the background and serve /metrics (default)")
    common(serve)
    serve.add_argument("--listen-address", help="host:port to listen on")
    serve.add_argument("--web.config.file", dest="web_config_file", type=Path, help="exporter-toolkit web config")
    check = sub.add_parser("check", help="run every enabled probe once and print the troubleshooting report")
    common(check)
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check_config = sub.add_parser("check-config", help="print the configuration as read, secrets masked")
    common(check_config)
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["serve", *(argv if argv is not None else sys.argv[1:])])
    return args


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("log_format", "log_level", "listen_address", "web_config_file")
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings(args.config, overrides=overrides(args))
    except ConfigError as exc:
        print(f"placeos-exporter: {exc}", file=sys.stderr)
        return 2
    # check prints its own report; its log shows only errors unless a level is asked for.
    level = settings.log_level if args.command == "serve" or args.log_level else "error"
    log.setup(settings.log_format, level, settings.secrets())
    if args.command == "check-config":
        print(json.dumps(masked(settings), indent=2, default=str))
        return 0
    if args.command == "check":
        return asyncio.run(check(settings, as_json=args.json))
    try:
        asyncio.run(serve(settings, args))
    except KeyboardInterrupt:
        pass
    except (ListenError, ConfigError) as exc:
        print(f"placeos-exporter: {exc}", file=sys.stderr)
        return 2
    return 0


def masked(settings: Settings) -> dict[str, Any]:
    """Settings as read, secrets replaced by '***' and passwords in URLs masked."""
    data = settings.model_dump(mode="json")

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, str) and "://" in value:
            return redact_url(value)
        return value

    out: dict[str, Any] = json.loads(log.REDACT(json.dumps(walk(data))).replace('"**********"', '"***"'))
    return out


async def check(settings: Settings, as_json: bool) -> int:
    """One round of every enabled probe, printed as the page's troubleshooting steps."""
    from exporter.probes.api import platform_version

    snapshot = Snapshot()
    scheduler = Scheduler(settings, snapshot, detect_era=platform_version)
    await scheduler.run_once()
    report = check_report(snapshot)
    print(log.REDACT(json.dumps(report, indent=2) if as_json else render_check(report)))
    return 0 if report["ok"] else 1


class ListenError(Exception):
    """The listen address is taken or invalid."""


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    try:
        return host.strip("[]") or "0.0.0.0", int(port)
    except ValueError:
        raise ListenError(f"invalid listen address {address!r}: expected host:port") from None


class Exporter:
    """The serving process: settings, scheduler, HTTP server, and config reload."""

    def __init__(self, settings: Settings, config_file: Path | None, cli_overrides: dict[str, Any]) -> None:
        from exporter.probes.api import platform_version

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
            reload=self.reload,
            exporter_series=self.series,
            exporter_version=lambda: self.reload_count,
        )

    async def start(self) -> int:
        """Listen, then start probing; returns the bound port (0 in the settings picks a free one)."""
        host, port = split_address(self.settings.listen_address)
        web_config = WebConfig.load(self.settings.web_config_file) if self.settings.web_config_file else None
        middlewares = [web_config.middleware()] if web_config else []
        self.runner = web.AppRunner(make_app(self.state, middlewares), access_log=None, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(
            self.runner, host, port, reuse_address=True, ssl_context=web_config.ssl_context if web_config else None
        )
        try:
            await site.start()
        except OSError as exc:
            await self.runner.cleanup()
            raise ListenError(f"cannot listen on {self.settings.listen_address}: {exc.strerror}") from None
        await self.scheduler.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else port

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.scheduler.stop()
        await self.runner.cleanup()

    def ready(self) -> bool:
        if self.scheduler.first_round.is_set():
            return True
        # A probe that cannot finish is cut at its timeout, so by then every probe has a result.
        longest = max(self.settings.schedule(c, p)[1] for c in self.settings.clusters for p in ProbeName)
        return time.monotonic() - self.started > longest + MAX_START_SPREAD + 1

    def series(self) -> Iterator[Metric]:
        ok: GaugeMetricFamily = family("placeos_exporter_config_last_reload_successful")
        ok.add_metric([], self.reload_ok)
        yield ok
        at: GaugeMetricFamily = family("placeos_exporter_config_last_reload_success_timestamp_seconds")
        at.add_metric([], self.reload_at)
        yield at

    async def reload(self) -> tuple[bool, str]:
        """Re-read the configuration; a bad one keeps the old running (and says so in a gauge)."""
        async with self.lock:
            try:
                settings = load_settings(self.config_file, overrides=self.cli_overrides)
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


async def serve(settings: Settings, args: argparse.Namespace) -> None:
    exporter = Exporter(settings, getattr(args, "config", None), overrides(args))
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


if __name__ == "__main__":
    raise SystemExit(main())
