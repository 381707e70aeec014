"""Exporter TLS and basic auth from a web config file in the Prometheus exporter-toolkit format.

Supported (anchors §7): ``tls_server_config`` (``cert_file``, ``key_file``, ``client_auth_type``,
``client_ca_file``, ``min_version``, ``max_version``), ``basic_auth_users`` (user -> bcrypt hash) and
``http_server_config.headers``. As in exporter-toolkit, the file is re-read when it changes, so
certificates and users rotate without a restart; successful checks are cached per (user, hash,
password) since bcrypt is slow on purpose; unknown users are checked against a dummy hash so timing
does not reveal which users exist; failures get 401 with ``WWW-Authenticate: Basic``.
``/-/healthy`` and ``/-/ready`` stay reachable without credentials (``health_without_auth``, on by
default) so kubelet probes need no secret; they reveal nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml
from aiohttp import web

from exporter import log
from exporter.settings import ConfigError

TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}  # fmt: skip
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
OPEN_PATHS = frozenset({"/-/healthy", "/-/ready"})
_DUMMY_HASH = bcrypt.hashpw(b"placeos-exporter-dummy", bcrypt.gensalt(rounds=10))

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class WebConfig:
    """The parsed file; ``ssl`` is kept and updated in place when certificates rotate."""

    path: Path
    health_without_auth: bool = True
    users: dict[str, bytes] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    ssl_context: ssl.SSLContext | None = None
    _mtime: float = 0.0
    _failed_mtime: float = 0.0
    _tls: dict[str, Any] = field(default_factory=dict)
    _ok_cache: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, path: Path, health_without_auth: bool = True) -> WebConfig:
        config = cls(path, health_without_auth)
        config.reload(force=True)
        return config

    def reload(self, force: bool = False) -> None:
        """Re-read the file if it changed. A broken new file raises ConfigError; the caller decides."""
        try:
            mtime = self.path.stat().st_mtime
        except OSError as exc:
            raise ConfigError(f"web config {self.path}: {exc.strerror}") from None
        if not force and mtime in (self._mtime, self._failed_mtime):
            return
        try:
            self._apply(_read(self.path), mtime)
        except ConfigError:
            self._failed_mtime = mtime
            raise

    def _apply(self, data: dict[str, Any], mtime: float) -> None:
        users = {}
        for user, hashed in (data.get("basic_auth_users") or {}).items():
            if not isinstance(hashed, str) or not hashed.startswith("$2"):
                raise ConfigError(f"web config {self.path}: basic_auth_users.{user}: not a bcrypt hash")
            users[str(user)] = hashed.encode()
        headers = {str(k): str(v) for k, v in ((data.get("http_server_config") or {}).get("headers") or {}).items()}
        tls = data.get("tls_server_config") or {}
        context = self._tls_context(tls) if tls else None
        self.users, self.headers, self._mtime, self._ok_cache = users, headers, mtime, set()
        if context is not None and self.ssl_context is not None and tls != self._tls:
            # Rotate in place: the listening socket keeps this context; new handshakes use the new chain.
            self.ssl_context.load_cert_chain(tls["cert_file"], tls["key_file"])
        elif self.ssl_context is None:
            self.ssl_context = context
        self._tls = tls

    def _tls_context(self, tls: dict[str, Any]) -> ssl.SSLContext:
        where = f"web config {self.path}: tls_server_config"
        if not tls.get("cert_file") or not tls.get("key_file"):
            raise ConfigError(f"{where}: cert_file and key_file are required")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.minimum_version = TLS_VERSIONS[str(tls.get("min_version", "TLS12"))]
            if tls.get("max_version"):
                context.maximum_version = TLS_VERSIONS[str(tls["max_version"])]
            context.load_cert_chain(str(tls["cert_file"]), str(tls["key_file"]))
            auth_type = str(tls.get("client_auth_type", "NoClientCert"))
            context.verify_mode = CLIENT_AUTH[auth_type]
            if tls.get("client_ca_file"):
                context.load_verify_locations(str(tls["client_ca_file"]))
            elif auth_type in ("RequireAndVerifyClientCert", "VerifyClientCertIfGiven"):
                raise ConfigError(f"{where}: client_ca_file is required for {auth_type}")
        except KeyError as exc:
            raise ConfigError(f"{where}: unknown value {exc.args[0]!r}") from None
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{where}: cannot load certificate: {getattr(exc, 'strerror', None) or exc}") from None
        return context

    def authorised(self, header: str | None) -> bool:
        if not self.users:
            return True
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        hashed = self.users.get(user)
        key = hashlib.sha256(b"\0".join([user.encode(), hashed or b"", password.encode()])).hexdigest()
        if hashed is not None and key in self._ok_cache:
            return True
        ok = bcrypt.checkpw(password.encode(), hashed or _DUMMY_HASH) and hashed is not None
        if ok:
            self._ok_cache.add(key)
        return ok

    def middleware(self) -> Any:
        @web.middleware
        async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
            try:
                self.reload()
            except ConfigError as exc:  # logged once per bad version; the last good file stays in force
                log.get().error("web config not reloaded, keeping the previous one: %s", exc)
            if not (self.health_without_auth and request.path in OPEN_PATHS) and not self.authorised(
                request.headers.get("Authorization")
            ):
                response: web.StreamResponse = web.Response(
                    status=401, text="Unauthorized\n", headers={"WWW-Authenticate": 'Basic realm="placeos-exporter"'}
                )
            else:
                response = await handler(request)
            for name, value in self.headers.items():
                response.headers[name] = value
            return response

        return guard


def _read(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"web config {path}: {exc.strerror}") from None
    except yaml.YAMLError:
        raise ConfigError(f"web config {path}: not valid YAML") from None
    if not isinstance(data, dict):
        raise ConfigError(f"web config {path}: top level must be a mapping")
    unknown = set(data) - {"tls_server_config", "basic_auth_users", "http_server_config", "rate_limit"}
    if unknown:
        raise ConfigError(f"web config {path}: unknown key {sorted(unknown)[0]!r}")
    return data


def hash_password(password: str) -> str:
    """A bcrypt hash for ``basic_auth_users`` (``python -m exporter.expose.webconfig <password>``)."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()


if __name__ == "__main__":
    import getpass

    # Read from the terminal, not argv: a password in argv is visible to every user via ps.
    print(hash_password(getpass.getpass("password to hash: ")))
