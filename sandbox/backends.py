"""Real etcd, Redis and PostgreSQL servers on loopback, for the sandbox and the tests.

The sandbox's point is that its faults are real (design §6): a killed, stopped (SIGSTOP) or
re-passworded backend must fail its clients the way the production one would, so these are the real
servers the PlaceOS compose files run (internals §8), each on a free 127.0.0.1 port with its data in
a given directory, so `restart()` after a kill comes back on the same port with the same data.

`break_credentials()` is the sandbox's `wrong-credentials` fault, done over each server's own
protocol as an operator would (README contract 4); `heal_credentials()` undoes it. The change is
stored by the server, so it survives a restart like a real password change:

* etcd: the client user's password is changed; without auth, auth is switched on (a client with no
  credentials is then refused, "etcdserver: user name is empty").
* Redis: `CONFIG SET requirepass` (or `ACL SETUSER` for an ACL user), then `CONFIG REWRITE`.
* PostgreSQL: `ALTER ROLE placeos PASSWORD`, sent as a SCRAM verifier so the plaintext never
  reaches the server or its log.

Passwords are generated per run (`secrets.token_urlsafe`) and never appear in argv, logs, reprs or
exception messages; they live in the handle only, so a server is restarted through its handle
(`restart()`), not by a new `start_*` on the old data dir. Calls block; asyncio code runs them with
`asyncio.to_thread` (safe: see `sandbox.procs`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

import redis

from sandbox.ports import free_port
from sandbox.procs import Proc, ProcError, ReadyCheck, run

HOST = "127.0.0.1"
SANDBOX_USER = "placeos-sandbox"  # PostgreSQL refuses to run as root
MASK = "***"


class BackendError(RuntimeError):
    """A backend admin operation failed (message never carries a secret)."""


def _password() -> str:
    return secrets.token_urlsafe(18)


def _env_without(*prefixes: str) -> dict[str, str]:
    """Our environment minus variables a server or client would read as its own configuration."""
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (it holds a password)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # the mode given to open only applies to a new file
    with os.fdopen(fd, "w") as f:
        f.write(text)


class Backend:
    """A real server process on 127.0.0.1 with its data dir: restart, credentials fault, cleanup."""

    name: ClassVar[str]
    host: str = HOST
    port: int
    proc: Proc
    credentials_broken: bool = False
    _user: str | None = None  # the account the server runs as (None: ours)
    _term_signal: int = signal.SIGTERM

    def __init__(self, data_dir: Path, port: int | None, ready_timeout: float) -> None:
        self.data_dir = data_dir.resolve()
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.ready_timeout = ready_timeout
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port()

    # -- what a subclass provides
    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str]:
        return dict(os.environ)

    def _ready_check(self) -> ReadyCheck:
        return self.port

    def _pick_ports(self) -> None:
        self.port = free_port()

    def _set_credentials_broken(self, broken: bool) -> None:
        raise NotImplementedError

    def _masked_url(self) -> str:
        raise NotImplementedError

    # -- lifecycle
    @property
    def log_path(self) -> Path:
        return self.data_dir / f"{self.name}.log"

    def _launch(self) -> None:
        self.proc = Proc.start(
            self._argv(),
            log_path=self.log_path,
            name=self.name,
            env=self._env(),
            cwd=self.data_dir,
            user=self._user,
            term_signal=self._term_signal,
        )
        try:
            self.proc.wait_ready(self._ready_check(), self.ready_timeout)
        except ProcError:
            self.proc.kill()
            raise

    def _first_launch(self) -> None:
        """Launch; if a port we picked was taken meanwhile (parallel runs), pick again (3 tries)."""
        for attempt in range(3):
            try:
                self._launch()
                return
            except ProcError as exc:
                if self._fixed_port or attempt == 2 or "address already in use" not in exc.log_tail.lower():
                    raise
                self._pick_ports()

    def restart(self) -> None:
        """Start again on the same port(s) with the same data (terminating it first if it runs)."""
        if self.proc.alive:
            self.proc.terminate()
        self._launch()

    def close(self) -> None:
        """Terminate the server and everything it started."""
        self.proc.terminate()

    def break_credentials(self) -> None:
        """The `wrong-credentials` fault: the credentials clients were given stop working."""
        if not self.credentials_broken:
            self._set_credentials_broken(True)
            self.credentials_broken = True

    def heal_credentials(self) -> None:
        """Undo `break_credentials`: the original credentials work again."""
        if self.credentials_broken:
            self._set_credentials_broken(False)
            self.credentials_broken = False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._masked_url()} {self.proc!r}>"


# --------------------------------------------------------------------------------------------- etcd


def _make_tls(tls_dir: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost (openssl CLI); reused if present.

    Returns (ca, cert, key). The `cryptography` package is not a dependency, openssl is on every host.
    """
    ca, ca_key = tls_dir / "ca.pem", tls_dir / "ca.key"
    cert, key, csr = tls_dir / "server.pem", tls_dir / "server.key", tls_dir / "server.csr"
    if cert.exists() and key.exists() and ca.exists():
        return ca, cert, key
    tls_dir.mkdir(parents=True, exist_ok=True)
    ext = tls_dir / "server.ext"
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    commands = [
        ["openssl", "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca), "-days", "7",
         "-subj", "/CN=placeos-sandbox CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["openssl", "req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1"],
        ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
         "-CAcreateserial", "-out", str(cert), "-days", "7", "-extfile", str(ext)],
    ]  # fmt: skip
    for argv in commands:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BackendError(f"openssl failed: {result.stderr.strip()[-500:]}")
    for private in (ca_key, key):
        private.chmod(0o600)
    return ca, cert, key


class EtcdServer(Backend):
    """etcd 3.x, single member, spoken to through its JSON gateway as PlaceOS does (internals §1.1).

    A root user and a client user (`user`, readwrite on every key) always exist; `auth=True`
    switches auth on at start. `tls=True` serves https with a throwaway CA (`ca_path`).
    """

    name = "etcd"
    user = "placeos"

    def __init__(self, data_dir: Path, *, auth: bool, tls: bool, port: int | None, ready_timeout: float) -> None:
        super().__init__(data_dir, port, ready_timeout)
        self.auth = auth
        self.peer_port = free_port()
        self.password = _password()
        self._root_password = _password()
        self.ca_path: Path | None = None
        self._cert: tuple[Path, Path] | None = None
        if tls:
            self.ca_path, cert, key = _make_tls(self.data_dir / "tls")
            self._cert = (cert, key)

    @property
    def scheme(self) -> str:
        return "https" if self._cert else "http"

    @property
    def url(self) -> str:
        """The client URL (no credentials: etcd takes them in `POST /v3/auth/authenticate`)."""
        return f"{self.scheme}://{self.host}:{self.port}"

    def _masked_url(self) -> str:
        return f"{self.url} user={self.user if self.auth else None}"

    def placeos_env(self) -> dict[str, str]:
        """The env a PlaceOS service reads for this etcd (internals §1.1; crystal-etcd `from_env`)."""
        env = {"ETCD_HOST": self.host, "ETCD_PORT": str(self.port)}
        if self.auth:
            env |= {"ETCD_USERNAME": self.user, "ETCD_PASSWORD": self.password}
        return env

    def _pick_ports(self) -> None:
        self.port, self.peer_port = free_port(), free_port()

    def _env(self) -> dict[str, str]:
        return _env_without("ETCD")  # etcd reads ETCD_<FLAG> variables as flags

    def _argv(self) -> list[str]:
        peer = f"http://{self.host}:{self.peer_port}"
        argv = [
            "etcd", "--name", "sandbox", "--data-dir", str(self.data_dir / "etcd"),
            "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"sandbox={peer}", "--initial-cluster-state", "new",
            # One member: no peers to wait for, so short timeouts only make the first election fast.
            "--heartbeat-interval", "10", "--election-timeout", "50",
            "--logger", "zap", "--log-outputs", "stderr",
        ]  # fmt: skip
        if self._cert:
            argv += ["--cert-file", str(self._cert[0]), "--key-file", str(self._cert[1])]
        return argv

    def _ssl_context(self) -> ssl.SSLContext | None:
        return ssl.create_default_context(cafile=str(self.ca_path)) if self.ca_path else None

    def ssl_context(self) -> ssl.SSLContext | None:
        """An SSL context trusting the sandbox CA (None without TLS)."""
        return self._ssl_context()

    def call(self, path: str, body: dict[str, Any], token: str | None = None, timeout: float = 5.0) -> Any:
        """POST `body` to the gateway at `/v3/<path>` and return the JSON answer (raise BackendError)."""
        conn: http.client.HTTPConnection
        if self._cert:
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self._ssl_context())
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        headers = {"Content-Type": "application/json"} | ({"Authorization": token} if token else {})
        try:
            conn.request("POST", f"/v3/{path}", json.dumps(body), headers)
            resp = conn.getresponse()
            answer = json.loads(resp.read() or b"{}")
        finally:
            conn.close()
        if resp.status != 200:
            raise BackendError(f"etcd {path}: HTTP {resp.status} {answer.get('message', '')}")
        return answer

    def _ready_check(self) -> ReadyCheck:
        # The port opens before the member has a leader; the status call answers only once it serves.
        return lambda: self.call("maintenance/status", {}, timeout=1.0)

    def _root_token(self) -> str:
        answer = self.call("auth/authenticate", {"name": "root", "password": self._root_password})
        return str(answer["token"])

    def _setup(self) -> None:
        """Create root (with the root role) and the client user with a readwrite-everything role."""
        every_key = base64.b64encode(b"\0").decode()  # key "\0" with range_end "\0": all keys
        steps: list[tuple[str, dict[str, Any]]] = [
            ("auth/user/add", {"name": "root", "password": self._root_password}),
            ("auth/user/grant", {"user": "root", "role": "root"}),
            ("auth/user/add", {"name": self.user, "password": self.password}),
            ("auth/role/add", {"name": self.user}),
            (
                "auth/role/grant",
                {"name": self.user, "perm": {"permType": "READWRITE", "key": every_key, "range_end": every_key}},
            ),
            ("auth/user/grant", {"user": self.user, "role": self.user}),
        ]
        if self.auth:
            steps.append(("auth/enable", {}))
        for path, body in steps:
            self.call(path, body)

    def _set_credentials_broken(self, broken: bool) -> None:
        if not self.auth:
            # No client credentials to change: switching auth on is what locks anonymous clients out.
            if broken:
                self.call("auth/enable", {})
            else:
                self.call("auth/disable", {}, token=self._root_token())
            return
        password = _password() if broken else self.password
        self.call("auth/user/changepw", {"name": self.user, "password": password}, token=self._root_token())


def start_etcd(
    data_dir: Path,
    *,
    auth: bool = False,
    tls: bool = False,
    port: int | None = None,
    ready_timeout: float = 15.0,
) -> EtcdServer:
    """Start etcd with its data in `data_dir/etcd` (reused if present) and wait until it serves."""
    server = EtcdServer(data_dir, auth=auth, tls=tls, port=port, ready_timeout=ready_timeout)
    fresh = not (server.data_dir / "etcd" / "member").exists()
    server._first_launch()
    if fresh:
        try:
            server._setup()
        except BaseException:
            server.close()
            raise
    return server


# -------------------------------------------------------------------------------------------- Redis


class RedisServer(Backend):
    """redis-server without persistence (`save ""`, no AOF), optionally with a password or ACL user.

    PlaceOS runs Redis with no auth (internals §8); `auth=True` sets `requirepass`, `acl_user`
    adds that ACL user for clients and protects the default user with an admin password.
    """

    name = "redis"

    def __init__(
        self, data_dir: Path, *, auth: bool, acl_user: str | None, port: int | None, ready_timeout: float
    ) -> None:
        super().__init__(data_dir, port, ready_timeout)
        self.username = acl_user
        self.password: str | None = _password() if (auth or acl_user) else None
        # The default user's password: the client's, or an admin-only one when clients use an ACL user.
        self._requirepass: str | None = _password() if acl_user else self.password
        self._conf = self.data_dir / "redis.conf"
        lines = []
        if self._requirepass:
            lines.append(f"requirepass {self._requirepass}")
        if acl_user:
            lines.append(f"user {acl_user} on >{self.password} ~* &* +@all")
        # Secrets live in a 0600 file, not in argv where `ps` shows them. CONFIG REWRITE updates it.
        _write_private(self._conf, "".join(f"{line}\n" for line in lines))

    @property
    def url(self) -> str:
        """`redis://[user:password@]127.0.0.1:port/0`, as PlaceOS's REDIS_URL (internals §3)."""
        return self._url(self.password)

    def _url(self, password: str | None) -> str:
        auth = f"{self.username or ''}:{password}@" if password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    def _masked_url(self) -> str:
        return self._url(MASK if self.password else None)

    def placeos_env(self) -> dict[str, str]:
        return {"REDIS_URL": self.url}

    def _argv(self) -> list[str]:
        return [
            "redis-server", str(self._conf), "--port", str(self.port), "--bind", self.host,
            "--dir", str(self.data_dir), "--save", "", "--appendonly", "no", "--daemonize", "no",
        ]  # fmt: skip

    def _ready_check(self) -> ReadyCheck:
        def pong() -> bool:
            with socket.create_connection((self.host, self.port), timeout=1.0) as s:
                s.sendall(b"PING\r\n")
                reply = s.recv(64)
            return reply.startswith((b"+PONG", b"-NOAUTH"))  # not "-LOADING"

        return pong

    def admin(self) -> redis.Redis:
        """A sync client as the default user (its current password), for admin commands."""
        return redis.Redis(host=self.host, port=self.port, password=self._requirepass, socket_timeout=5.0, protocol=2)

    def _set_credentials_broken(self, broken: bool) -> None:
        with self.admin() as conn:
            if self.username:
                password = _password() if broken else self.password
                conn.acl_setuser(self.username, enabled=True, reset_passwords=True, passwords=[f"+{password}"])
            else:
                new = _password() if broken else self.password
                conn.config_set("requirepass", new or "")
                self._requirepass = new
            conn.config_rewrite()
        self._conf.chmod(0o600)  # CONFIG REWRITE recreates the file world-readable


def start_redis(
    data_dir: Path,
    *,
    auth: bool = False,
    acl_user: str | None = None,
    port: int | None = None,
    ready_timeout: float = 10.0,
) -> RedisServer:
    """Start redis-server in `data_dir` and wait until it answers PING."""
    server = RedisServer(data_dir, auth=auth, acl_user=acl_user, port=port, ready_timeout=ready_timeout)
    server._first_launch()
    return server


# --------------------------------------------------------------------------------------- PostgreSQL


def _pg_bin(tool: str) -> str:
    """Path of a PostgreSQL server tool: the newest /usr/lib/postgresql/<v>/bin (Debian), else PATH."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name or 0))
    for bindir in reversed(versions):
        if (bindir / tool).exists():
            return str(bindir / tool)
    found = shutil.which(tool)
    if found is None:
        raise BackendError(f"PostgreSQL tool {tool!r} not found")
    return found


def ensure_system_user(name: str = SANDBOX_USER) -> None:
    """Create the unprivileged system account PostgreSQL runs as when we are root (idempotent)."""
    try:
        pwd.getpwnam(name)
        return
    except KeyError:
        pass
    argv = ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent"]
    result = subprocess.run([*argv, "--shell", "/usr/sbin/nologin", name], capture_output=True, text=True)
    try:
        pwd.getpwnam(name)  # a parallel run may have created it (or held the passwd lock) meanwhile
    except KeyError:
        raise BackendError(f"useradd {name} failed: {result.stderr.strip()}") from None


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802/7677).

    `ALTER ROLE ... PASSWORD '<verifier>'` sets the password without the plaintext reaching the
    server, so not even a failed statement can print it in the server log.
    """
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


class PostgresServer(Backend):
    """PostgreSQL with role and database `placeos` (the PlaceOS compose names, internals §8).

    Host connections on 127.0.0.1 use scram-sha-256; the superuser `postgres` has no password and
    is trusted on the Unix socket only (`sql()`). As root, the server runs as `placeos-sandbox`.
    Tuned for tests: fsync off (data survives a killed process, not a host crash), small buffers.
    """

    name = "postgres"
    user = "placeos"
    database = "placeos"
    superuser = "postgres"
    _term_signal = signal.SIGINT  # "fast" shutdown; SIGTERM would wait for clients to disconnect

    def __init__(self, data_dir: Path, *, port: int | None, ready_timeout: float) -> None:
        super().__init__(data_dir, port, ready_timeout)
        self.password = _password()
        self.pgdata = self.data_dir / "pgdata"
        self._user = SANDBOX_USER if os.geteuid() == 0 else None
        self.socket_dir = self.data_dir / "run"
        self._own_socket_dir = False
        if len(str(self.socket_dir)) > 90:  # a Unix socket path may hold at most 107 bytes
            self.socket_dir = Path(tempfile.mkdtemp(prefix="placeos-pg-"))
            self._own_socket_dir = True

    @property
    def dsn(self) -> str:
        """`postgresql://placeos:<password>@127.0.0.1:<port>/placeos` (PlaceOS's PG_DATABASE_URL)."""
        return self._dsn(self.password)

    url = dsn

    def _dsn(self, password: str) -> str:
        return f"postgresql://{self.user}:{password}@{self.host}:{self.port}/{self.database}"

    def _masked_url(self) -> str:
        return self._dsn(MASK)

    def placeos_env(self) -> dict[str, str]:
        """PlaceOS's PostgreSQL env (pg-orm settings, internals §2.2)."""
        return {
            "PG_DATABASE_URL": self.dsn,
            "PG_HOST": self.host,
            "PG_PORT": str(self.port),
            "PG_DB": self.database,
            "PG_USER": self.user,
            "PG_PASSWORD": self.password,
        }

    def _env(self) -> dict[str, str]:
        return _env_without("PG")

    def _prepare_dirs(self) -> None:
        """Create pgdata and the socket dir, owned by the account the server runs as."""
        for path in (self.pgdata, self.socket_dir):
            path.mkdir(mode=0o700, exist_ok=True)
            if self._user:
                entry = pwd.getpwnam(self._user)
                os.chown(path, entry.pw_uid, entry.pw_gid)

    def _initdb(self) -> None:
        argv = [
            _pg_bin("initdb"), "-D", str(self.pgdata), "-U", self.superuser, "-E", "UTF8", "--locale=C",
            "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync", "--no-instructions",
        ]  # fmt: skip
        run(argv, log_path=self.data_dir / "initdb.log", env=self._env(), cwd=self.data_dir, user=self._user)
        hba = self.pgdata / "pg_hba.conf"
        hba.write_text(
            "# placeos-sandbox: superuser trusted on the socket only; everyone else scram over TCP\n"
            f"local all {self.superuser} trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
        )
        if self._user:
            entry = pwd.getpwnam(self._user)
            os.chown(hba, entry.pw_uid, entry.pw_gid)

    def _argv(self) -> list[str]:
        settings = {
            "listen_addresses": self.host,
            "shared_buffers": "16MB",
            "max_connections": "50",
            # fsync off only costs data on a host crash. synchronous_commit stays on: off would keep
            # recent commits in shared memory, and a SIGKILLed server would lose them.
            "fsync": "off",
            "full_page_writes": "off",
            "huge_pages": "off",
        }
        argv = [_pg_bin("postgres"), "-D", str(self.pgdata), "-p", str(self.port), "-k", str(self.socket_dir)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        return argv

    def _ready_check(self) -> ReadyCheck:
        def accepting() -> bool:
            # What pg_isready does: send a startup packet; an auth request ('R') means it accepts
            # logins, an error ('E') means it is still starting up or recovering.
            body = f"user\0{self.user}\0database\0{self.database}\0\0".encode()
            with socket.create_connection((self.host, self.port), timeout=1.0) as s:
                s.sendall(struct.pack("!ii", 8 + len(body), 196608) + body)
                return s.recv(1) == b"R"

        return accepting

    def sql(self, statements: str, *, secret: bool = False, timeout: float = 30.0) -> str:
        """Run SQL as the superuser over the Unix socket with psql; return its unaligned output.

        With `secret=True` a failure's message leaves out psql's output (it may quote the statement).
        """
        argv = [
            _pg_bin("psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", str(self.socket_dir),
            "-p", str(self.port), "-U", self.superuser, "-d", "postgres", "-f", "-",
        ]  # fmt: skip
        result = subprocess.run(
            argv, input=statements, capture_output=True, text=True, env=self._env(), timeout=timeout
        )
        if result.returncode != 0:
            detail = "output withheld: the statement holds a secret" if secret else result.stderr.strip()
            raise BackendError(f"psql failed (exit {result.returncode}): {detail}")
        return result.stdout

    def _set_password(self, password: str) -> None:
        self.sql(f"ALTER ROLE {self.user} PASSWORD '{scram_verifier(password)}';", secret=True)

    def _setup(self) -> None:
        self.sql(f"CREATE ROLE {self.user} LOGIN PASSWORD '{scram_verifier(self.password)}';", secret=True)
        self.sql(f"CREATE DATABASE {self.database} OWNER {self.user};")

    def _set_credentials_broken(self, broken: bool) -> None:
        self._set_password(_password() if broken else self.password)

    def close(self) -> None:
        super().close()
        if self._own_socket_dir:
            shutil.rmtree(self.socket_dir, ignore_errors=True)


def start_postgres(data_dir: Path, *, port: int | None = None, ready_timeout: float = 30.0) -> PostgresServer:
    """initdb `data_dir/pgdata` unless it exists, start PostgreSQL, create role and database `placeos`."""
    server = PostgresServer(data_dir, port=port, ready_timeout=ready_timeout)
    if server._user:
        ensure_system_user(server._user)
    server._prepare_dirs()
    fresh = not (server.pgdata / "PG_VERSION").exists()
    if fresh:
        server._initdb()
    server._first_launch()
    if fresh:
        try:
            server._setup()
        except BaseException:
            server.close()
            raise
    return server


__all__ = [
    "HOST",
    "SANDBOX_USER",
    "Backend",
    "BackendError",
    "EtcdServer",
    "PostgresServer",
    "RedisServer",
    "ensure_system_user",
    "scram_verifier",
    "start_etcd",
    "start_postgres",
    "start_redis",
]
