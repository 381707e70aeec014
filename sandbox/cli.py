"""`placeos-sandbox`: run a small PlaceOS on loopback and break and heal its parts from another shell.

Why a foreground `up` plus a control API: the sandbox's processes are children of one orchestrator
(sandbox.cluster), which alone holds their PIDs, the generated secrets and the fault state, and stops
every child by PID when it ends (Ctrl-C, SIGTERM, or its own death through PR_SET_PDEATHSIG). So
`status`, `break` and `heal` run in another shell talk to that process over a tiny HTTP API on a free
loopback port, found through `<dir>/sandbox.json` (mode 0600, with a random token the API requires).

    placeos-sandbox up [--era A|B|C|D] [--dir DIR] [--cores N] [--with-exporter] [--exporter-listen H:P]
    placeos-sandbox status [--dir DIR] [--json]
    placeos-sandbox break PART MODE [--driver ID] [--module ID] [--dir DIR]
    placeos-sandbox heal PART [--dir DIR]

`--dir` defaults to `.sandbox` in the current directory. `up` prints the endpoints and the exporter's
settings (env block and YAML) including this throwaway sandbox's generated passwords: that printout is
deliberate and the only place they are shown. Bad input is one line on stderr and exit 2; a sandbox
that is not running or a fault that could not be applied is one line and exit 1.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import json
import os
import secrets
import shlex
import signal
import socket
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from sandbox.cluster import ERAS, MODES, PARTS, Sandbox, SandboxError, SandboxInputError
from sandbox.simulator import seed

DEFAULT_DIR = ".sandbox"
STATE_FILE = "sandbox.json"
TOKEN_HEADER = "X-Sandbox-Token"
DEFAULT_EXPORTER_LISTEN = "127.0.0.1:9864"


class UsageError(Exception):
    """Bad input: exit 2."""


class Failure(Exception):
    """The sandbox is not running or refused/failed the request: exit 1."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (exit 2) instead of usage text."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _modes_help() -> str:
    lines = ["parts and their modes:"]
    lines += [f"  {part:<14} {', '.join(MODES[part])}" for part in PARTS]
    lines += [
        "eras: A = etcd, rethinkdb, redis, elasticsearch; B = etcd, postgres, redis, elasticsearch;",
        "      C = postgres, redis, elasticsearch; D = postgres, redis (search in PostgreSQL).",
        "      Every era runs core, rest-api, triggers; A-C also search-ingest; D also build-service.",
        "`core` addresses every core (`core-N` one of them with --cores N > 1).",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="placeos-sandbox", description="A small PlaceOS on loopback, with faults on demand.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{up,status,break,heal}")

    def with_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument("--dir", type=Path, default=Path(DEFAULT_DIR), help=f"sandbox directory (default {DEFAULT_DIR})")

    up = sub.add_parser("up", help="start a sandbox and stay in the foreground until Ctrl-C")
    up.add_argument("--era", type=str.upper, choices=ERAS, default="A", help="PlaceOS release era (default A)")
    with_dir(up)
    up.add_argument("--cores", type=int, default=1, help="number of core instances (default 1)")
    up.add_argument("--etcd-ttl", type=int, default=15, help="core lease TTL in etcd, s (default 15)")
    up.add_argument("--with-exporter", action="store_true", help="also run placeos-exporter against it")
    up.add_argument(
        "--exporter-listen",
        default=DEFAULT_EXPORTER_LISTEN,
        help=f"exporter's listen address with --with-exporter (default {DEFAULT_EXPORTER_LISTEN})",
    )

    status = sub.add_parser("status", help="parts of the running sandbox: pid, port, state")
    with_dir(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")

    brk = sub.add_parser(
        "break",
        help="break a part (see break --help for parts and modes)",
        epilog=_modes_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    brk.add_argument("part")
    brk.add_argument("mode")
    brk.add_argument("--driver", help="driver id for part driver (default: the probe module's driver)")
    brk.add_argument("--module", help="module id for part module (default: the probe module)")
    with_dir(brk)

    heal = sub.add_parser("heal", help="undo the fault on a part (or restart a part that is down)")
    heal.add_argument("part")
    with_dir(heal)
    return parser


# ----------------------------------------------------------------------------------- control API


class ControlServer:
    """The running sandbox's control API on a free loopback port (`GET /status`, `POST /break|/heal`)."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.token = secrets.token_urlsafe(24)
        handler = self._handler_class()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="sandbox-control", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def handle(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        try:
            if method == "GET" and path == "/status":
                return 200, self.sandbox.status()
            if method == "POST" and path == "/break":
                message = self.sandbox.break_part(
                    _text(body, "part"), _text(body, "mode"), driver=body.get("driver"), module=body.get("module")
                )
                return 200, {"message": message}
            if method == "POST" and path == "/heal":
                return 200, {"message": self.sandbox.heal(_text(body, "part"))}
        except SandboxInputError as e:
            return 400, {"error": str(e)}
        except (SandboxError, OSError) as e:
            return 500, {"error": str(e)}
        return 404, {"error": f"no route {method} {path}"}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self, method: str) -> None:
                if not hmac.compare_digest(self.headers.get(TOKEN_HEADER, ""), server.token):
                    self._reply(403, {"error": "missing or wrong control token"})
                    return
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                    body = json.loads(self.rfile.read(length) or b"{}") if length else {}
                    if not isinstance(body, dict):
                        raise ValueError("body must be a JSON object")
                except ValueError as e:
                    self._reply(400, {"error": f"bad request body: {e}"})
                    return
                self._reply(*server.handle(method, self.path, body))

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the foreground terminal shows the sandbox's own output

        return Handler


def _text(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise SandboxInputError(f"missing {key}")
    return value


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _read_state(directory: Path) -> dict[str, Any]:
    path = directory / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        raise Failure(f"no sandbox running in {directory} (no {path}); start one with: placeos-sandbox up") from None
    except (OSError, ValueError) as e:
        raise Failure(f"cannot read {path}: {e}") from None
    if not isinstance(state, dict) or not {"control_url", "token"} <= set(state):
        raise Failure(f"{path} is not a sandbox state file")
    return state


def _call(state: dict[str, Any], method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """One control API call; UsageError on 400, Failure on anything else that is not 200."""
    url = str(state["control_url"])
    if not url.startswith("http://127.0.0.1:"):
        raise Failure(f"unexpected control URL {url}")
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, data=data, method=method)  # noqa: S310 (loopback http only)
    req.add_header(TOKEN_HEADER, str(state["token"]))
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=180) as resp:  # noqa: S310
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    except OSError as e:
        raise Failure(f"the sandbox is not running (stale {STATE_FILE}?): {e}") from None
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = {"error": raw.decode("utf-8", "replace")[:200]}
    if status == 400:
        raise UsageError(str(answer.get("error")))
    if status != 200:
        raise Failure(str(answer.get("error", f"HTTP {status}")))
    return dict(answer)


# ----------------------------------------------------------------------------------- commands


def _self_command() -> str:
    """How the user ran us, for the printed examples."""
    argv0 = sys.argv[0] if sys.argv else ""
    if Path(argv0).name == "placeos-sandbox":
        rel = os.path.relpath(argv0)
        return rel if not rel.startswith("..") and "/" in rel else "placeos-sandbox"
    return "python -m sandbox.cli"


def _check_listen(address: str) -> None:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise UsageError(f"--exporter-listen must be host:port, got {address!r}")
    try:
        with socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host.strip("[]"), int(port)))
    except OSError as e:
        raise UsageError(f"cannot listen on {address} ({e.strerror}); pass --exporter-listen HOST:PORT") from None


def _print_summary(sb: Sandbox, args: argparse.Namespace, control_url: str) -> None:
    me = _self_command()
    dir_opt = "" if str(args.dir) == DEFAULT_DIR else f" --dir {shlex.quote(str(args.dir))}"
    out = [
        f"PlaceOS sandbox, era {sb.era}, up in {sb.timings.get('up', 0.0):.1f} s "
        f"(data and logs in {sb.root_dir}; control API {control_url})",
        "",
        "Endpoints:",
    ]
    out += [f"  {name:<14} {url}" for name, url in sb.endpoints().items()]
    out += [
        "",
        "Exporter settings as env (PlaceOS's own names; this throwaway sandbox's generated secrets):",
    ]
    out += [f"  {key}={shlex.quote(value)}" for key, value in sb.exporter_env().items()]
    out += ["", "The same as an exporter config file (placeos-exporter serve --config FILE):"]
    out += [f"  {line}" for line in sb.exporter_yaml().rstrip().splitlines()]
    out += [""]
    if sb.exporter_listen:
        host, _, port = sb.exporter_listen.rpartition(":")
        base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
        out += [
            f"The exporter runs against it (log: {sb.log_dir / 'exporter.log'}):",
            f"  {base}/          status page",
            f"  {base}/metrics   Prometheus metrics",
            f"  {base}/diagnose  diagnosis (JSON)",
            "",
        ]
    out += [
        "Break and heal a part from another shell (in this directory):",
        f"  {me} status{dir_opt}",
        f"  {me} break redis kill{dir_opt}       # then watch the diagnosis name Redis",
        f"  {me} heal redis{dir_opt}",
        f"  {me} break --help{' ' * len(dir_opt)}            # every part and mode",
        f"Parts in era {sb.era}: {', '.join(sb.part_names)}. "
        f"Probe target: {seed.PROBE_SYSTEM} {seed.PROBE_MODULE}.{seed.PROBE_FUNCTION}.",
        "Ctrl-C stops everything.",
    ]
    print("\n".join(out), flush=True)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def cmd_up(args: argparse.Namespace) -> int:
    directory: Path = args.dir
    if args.cores < 1:
        raise UsageError("--cores must be at least 1")
    if args.etcd_ttl < 1:
        raise UsageError("--etcd-ttl must be at least 1")
    if (directory / STATE_FILE).exists():
        running: dict[str, Any] | None = None
        with contextlib.suppress(Failure, UsageError):
            state = _read_state(directory)
            _call(state, "GET", "/status")
            running = state
        if running is not None:
            raise Failure(f"a sandbox is already running in {directory} (pid {running.get('pid')}); stop it first")
    if args.with_exporter:
        _check_listen(args.exporter_listen)
    directory.mkdir(parents=True, exist_ok=True)
    # SIGTERM stops us like Ctrl-C does; SIGINT explicitly too, as a shell starts background jobs
    # with SIGINT ignored and Python then installs no KeyboardInterrupt handler.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _raise_interrupt)
    sb = Sandbox(
        args.era,
        directory,
        cores=args.cores,
        etcd_ttl=args.etcd_ttl,
        exporter_listen=args.exporter_listen if args.with_exporter else None,
    )
    control: ControlServer | None = None
    state_path = directory / STATE_FILE
    print(f"starting a PlaceOS sandbox, era {sb.era}, in {sb.root_dir} ...", flush=True)
    try:
        try:
            sb.start()
        except SandboxInputError as e:
            raise UsageError(str(e)) from None
        except SandboxError as e:
            first = str(e).splitlines()[0]
            raise Failure(f"the sandbox did not start: {first} (logs in {sb.log_dir})") from None
        control = ControlServer(sb)
        control.start()
        state = {
            "control_url": control.url,
            "token": control.token,
            "era": sb.era,
            "pid": os.getpid(),
            "root_dir": str(sb.root_dir),
            "endpoints": sb.endpoints(),
        }
        _write_private(state_path, json.dumps(state, indent=1) + "\n")
        _print_summary(sb, args, control.url)
        threading.Event().wait()  # until Ctrl-C or SIGTERM
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        if control is not None:
            control.close()
        with contextlib.suppress(FileNotFoundError):
            state_path.unlink()
        try:
            sb.stop()
        except SandboxError as e:
            print(f"placeos-sandbox: {e}", file=sys.stderr)
    print("stopped: every sandbox process has exited", flush=True)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    state = _read_state(args.dir)
    status = _call(state, "GET", "/status")
    if args.json:
        print(json.dumps(status, indent=1))
        return 0
    print(f"era {status['era']}, data in {status['root_dir']}, control {state['control_url']}")
    print(f"{'PART':<15} {'PID':>7} {'PORT':>6}  STATE")
    for name, part in status["parts"].items():
        pid = part.get("pid") or "-"
        port = part.get("port") or "-"
        extra = f" ({part['target']})" if part.get("target") else ""
        if part.get("garbage_pid"):
            extra += f" (nonsense listener pid {part['garbage_pid']})"
        print(f"{name:<15} {pid!s:>7} {port!s:>6}  {part['state']}{extra}")
    return 0


def cmd_break(args: argparse.Namespace) -> int:
    state = _read_state(args.dir)
    body = {"part": args.part, "mode": args.mode, "driver": args.driver, "module": args.module}
    print(_call(state, "POST", "/break", body)["message"])
    return 0


def cmd_heal(args: argparse.Namespace) -> int:
    state = _read_state(args.dir)
    print(_call(state, "POST", "/heal", {"part": args.part})["message"])
    return 0


COMMANDS = {"up": cmd_up, "status": cmd_status, "break": cmd_break, "heal": cmd_heal}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UsageError as e:
        print(f"placeos-sandbox: error: {e}", file=sys.stderr)
        return 2
    except Failure as e:
        print(f"placeos-sandbox: {e}", file=sys.stderr)
        return 1
    except SandboxInputError as e:
        print(f"placeos-sandbox: error: {e}", file=sys.stderr)
        return 2
    except SandboxError as e:
        print(f"placeos-sandbox: {str(e).splitlines()[0]}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
