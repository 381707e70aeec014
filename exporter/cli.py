"""Command line: ``placeos-exporter serve | check [--json] | check-config``: parsing only; the serving
process is ``runtime.process``.

Exit codes: 0 ok; 1 something failed (``check``); 2 bad configuration. Bad input never produces a
traceback: one line naming the field, and exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from exporter import __version__, log
from exporter.runtime.process import ListenError, check, serve
from exporter.runtime.schedule import load
from exporter.settings import ConfigError, Settings, redact_url, unknown_env_warnings


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="placeos-exporter",
        description="Prometheus exporter that tells PlaceOS operators which backend failed and what it breaks.",
    )
    parser.add_argument("--version", action="version", version=f"placeos-exporter {__version__}")
    sub = parser.add_subparsers(dest="command")

    def common(p: argparse.ArgumentParser) -> None:
        # Prometheus exporters' flag names; the earlier ones stay as deprecated aliases (DEPRECATED).
        p.add_argument("--config.file", "--config", dest="config", type=Path, help="YAML file: clusters and tuning")
        p.add_argument("--log.format", "--log-format", dest="log_format", choices=["plain", "json"],
                       help="log line format")  # fmt: skip
        p.add_argument("--log.level", "--log-level", dest="log_level", choices=["debug", "info", "warning", "error"],
                       help="log level")  # fmt: skip

    serve = sub.add_parser("serve", help="probe in the background and serve /metrics (default)")
    common(serve)
    serve.add_argument("--web.listen-address", "--listen-address", dest="listen_address", action="append",
                       help="host:port to listen on (repeatable)")  # fmt: skip
    serve.add_argument("--web.config.file", dest="web_config_file", type=Path, help="exporter-toolkit web config")
    serve.add_argument("--web.enable-lifecycle", dest="enable_lifecycle", action="store_true",
                       help="accept POST /-/reload (SIGHUP always reloads), as Prometheus does")  # fmt: skip
    check = sub.add_parser("check", help="run every enabled probe once and print the troubleshooting report")
    common(check)
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check_config = sub.add_parser("check-config", help="print the configuration as read, secrets masked")
    common(check_config)
    given = list(argv if argv is not None else sys.argv[1:])
    if given and given[0].startswith("-") and given[0] not in ("-h", "--help", "--version"):
        given = ["serve", *given]  # `placeos-exporter --config.file f.yaml` serves
    args = parser.parse_args(given or ["serve"])
    for old, new in DEPRECATED.items():
        if any(a == old or a.startswith(f"{old}=") for a in given):
            print(f"placeos-exporter: warning: {old} is deprecated, use {new}", file=sys.stderr)
    return args


DEPRECATED = {
    "--config": "--config.file",
    "--log-format": "--log.format",
    "--log-level": "--log.level",
    "--listen-address": "--web.listen-address",
}


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("log_format", "log_level", "listen_address", "web_config_file")
    out = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    if isinstance(out.get("listen_address"), list):  # --web.listen-address is repeatable
        out["listen_address"] = ",".join(out["listen_address"])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load(args.config, overrides=overrides(args))
    except ConfigError as exc:
        print(f"placeos-exporter: {exc}", file=sys.stderr)
        return 2
    # check prints its own report; its log shows only errors unless a level is asked for.
    level = settings.log_level if args.command == "serve" or args.log_level else "error"
    log.setup(settings.log_format, level, settings.secrets())
    for warning in unknown_env_warnings(os.environ):
        log.get().warning("%s", warning)
        if args.command != "serve":
            print(f"placeos-exporter: warning: {warning}", file=sys.stderr)
    if args.command == "check-config":
        print(json.dumps(masked(settings), indent=2, default=str))
        return 0
    if args.command == "check":
        return asyncio.run(check(settings, as_json=args.json))
    try:
        asyncio.run(serve(settings, args.config, overrides(args), lifecycle=args.enable_lifecycle))
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


if __name__ == "__main__":
    raise SystemExit(main())
