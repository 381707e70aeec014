"""PostgreSQL over TLS: verified with the right CA; `tls` with a wrong CA and for plaintext when the
server demands TLS. The real server gets a certificate and `ssl = on` through ALTER SYSTEM and a
reload, as an operator would turn TLS on."""

from __future__ import annotations

import os
import pwd
import shutil
from pathlib import Path

from support import RunningExporter, settings_for

from sandbox.backends import PostgresServer, _make_tls


def enable_tls(server: PostgresServer, tmp_path: Path) -> Path:
    ca, cert, key = _make_tls(tmp_path / "tls")
    for src, name in ((cert, "server.crt"), (key, "server.key")):
        dst = server.pgdata / name
        shutil.copy(src, dst)
        dst.chmod(0o600)
        if os.geteuid() == 0:  # the server runs as the unprivileged sandbox user
            entry = pwd.getpwnam("placeos-sandbox")
            os.chown(dst, entry.pw_uid, entry.pw_gid)
    # Only TLS connections from TCP from now on (hostssl), so plaintext is refused by the server.
    hba = server.pgdata / "pg_hba.conf"
    hba.write_text(hba.read_text().replace("host all all 127.0.0.1/32", "hostssl all all 127.0.0.1/32"))
    server.sql("alter system set ssl = on;\nselect pg_reload_conf();\n")
    return ca


def cluster(server: PostgresServer, **postgres: object) -> dict[str, object]:
    return {"era": "C", "postgres": {"url": server.dsn, **postgres}, "redis": {"enabled": False},
            "elasticsearch": {"enabled": False}}  # fmt: skip


async def test_postgres_tls_verified_and_mismatched(postgres: PostgresServer, tmp_path: Path) -> None:
    ca = enable_tls(postgres, tmp_path)
    async with RunningExporter(settings_for(cluster(postgres, sslmode="verify-full", ca_file=str(ca)))) as exp:
        await exp.wait_reason("postgres", "ok")
    other_ca, _, _ = _make_tls(tmp_path / "other-ca")
    async with RunningExporter(settings_for(cluster(postgres, sslmode="verify-full", ca_file=str(other_ca)))) as exp:
        await exp.wait_reason("postgres", "tls")
    async with RunningExporter(settings_for(cluster(postgres, sslmode="disable"))) as exp:
        await exp.wait_reason("postgres", "tls")  # pg_hba has only hostssl: plaintext is refused
