"""Settings: PlaceOS env names, secrets from files, YAML clusters; bad input gives one line and exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.model.vocabulary import Era, ProbeName
from exporter.probes import spec_of
from exporter.runtime.schedule import schedule
from exporter.settings import ConfigError, load_settings


def test_placeos_env_block_configures_the_default_cluster() -> None:
    env = {
        "ETCD_HOST": "etcd",
        "ETCD_PORT": "2379",
        "REDIS_URL": "redis://redis:6379",
        "RETHINKDB_HOST": "rethink",
        "RETHINKDB_DB": "place_development",
        "ELASTIC_HOST": "elastic",
        "ES_PORT": "9201",
    }
    cluster = load_settings(environ=env).clusters[0]
    assert (cluster.etcd.host, cluster.etcd.port) == ("etcd", 2379)
    assert cluster.rethinkdb.db == "place_development"
    assert (cluster.elasticsearch.host, cluster.elasticsearch.port) == ("elastic", 9201)
    assert cluster.inferred_era() is Era.A  # RethinkDB configured: the troubleshooting page's world


def test_exporter_specific_name_beats_the_placeos_one() -> None:
    env = {"ETCD_HOST": "etcd", "PLACEOS_EXPORTER_ETCD_HOST": "etcd-for-exporter"}
    assert load_settings(environ=env).clusters[0].etcd.host == "etcd-for-exporter"


def test_secret_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret-from-file\n")
    cluster = load_settings(environ={"PG_PASSWORD_FILE": str(secret)}).clusters[0]
    assert cluster.postgres.password is not None
    assert cluster.postgres.password.get_secret_value() == "s3cret-from-file"


def test_yaml_clusters_and_tuning(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        """
interval: 10
probes:
  execute: {timeout: 8}
clusters:
  - name: prod
    era: C
    redis: {url: "redis://prod:6379"}
    postgres: {url: "postgresql://placeos:pg-url-pw@pg:5432/placeos"}
  - name: lab
    era: A
    rethinkdb: {host: rethink, password_file: %s}
"""
        % (tmp_path / "rpw")
    )
    (tmp_path / "rpw").write_text("rethink-pw")
    settings = load_settings(config, environ={})
    assert [c.name for c in settings.clusters] == ["prod", "lab"]
    assert schedule(settings, settings.clusters[0], spec_of(ProbeName.EXECUTE)) == (10.0, 8.0)
    assert schedule(settings, settings.clusters[0], spec_of(ProbeName.REDIS)) == (10.0, 5.0)
    assert "pg-url-pw" in settings.secrets() and "rethink-pw" in settings.secrets()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"ETCD_PORT": "not-a-port"}, "invalid setting ETCD_PORT:"),  # the name a user typed, not a YAML path
        ({"PLACEOS_EXPORTER_INTERVAL": "1", "PLACEOS_EXPORTER_TIMEOUT": "5",
          "PLACEOS_EXPORTER_PROBES": '{"redis": {"timeout": 2}}'}, "must be below interval"),
        ({"PG_PASSWORD_FILE": "/nonexistent/secret"}, "PG_PASSWORD_FILE"),
    ],
)  # fmt: skip
def test_bad_config_is_one_line_and_exit_2(env: dict[str, str], expected: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "exporter.cli", "check-config"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("clusters:\n  - name: x\n   bad: [\n")
    with pytest.raises(ConfigError, match=r"line \d+: not valid YAML"):
        load_settings(config, environ={})


def test_check_config_masks_secrets() -> None:
    env = {
        **os.environ,
        "REDIS_URL": "redis://:redis-pass-123@redis:6379",
        "PG_PASSWORD": "pg-pass-456",
        "PLACEOS_EXPORTER_API_API_KEY": "key.id-secret-789",
    }
    result = subprocess.run(
        [sys.executable, "-m", "exporter.cli", "check-config"], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    for secret in ("redis-pass-123", "pg-pass-456", "id-secret-789"):
        assert secret not in out
    shown = json.loads(result.stdout)
    assert shown["clusters"][0]["redis"]["url"] == "redis://:***@redis:6379"


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PLACEOS_EXPORTER_")}
    return subprocess.run([sys.executable, "-m", "exporter.cli", *args], env=clean | {"REDIS_URL": "redis://r:1"} | env,
                          capture_output=True, text=True, check=False, timeout=30)  # fmt: skip


def test_a_listen_address_out_of_range_is_one_line_and_exit_2() -> None:
    """Seen: --listen-address 127.0.0.1:99999 printed a 25-line OverflowError traceback and exited 1."""
    for result in (run_cli("--web.listen-address", "127.0.0.1:99999"), run_cli("serve", "--listen-address", ":-5"),
                   run_cli("check-config", PLACEOS_EXPORTER_LISTEN_ADDRESS="0.0.0.0:70000")):  # fmt: skip
        assert result.returncode == 2, result.stderr
        errors = [line for line in result.stderr.splitlines() if "warning:" not in line]
        assert "Traceback" not in result.stderr and len(errors) == 1, result.stderr
        where = errors[0].split(":")[1].strip()
        assert where in ("invalid setting listen_address", "invalid setting PLACEOS_EXPORTER_LISTEN_ADDRESS"), errors


def test_prometheus_flag_names_and_deprecated_aliases() -> None:
    new = run_cli("check-config", "--log.level", "debug", "--config.file", "/nonexistent.yaml")
    assert new.returncode == 2 and "deprecated" not in new.stderr and "/nonexistent.yaml" in new.stderr
    old = run_cli("check-config", "--log-level", "debug", "--config", "/nonexistent.yaml")
    assert "warning: --log-level is deprecated, use --log.level" in old.stderr
    assert "warning: --config is deprecated, use --config.file" in old.stderr
    # Without a command, flags mean `serve` (here refused at once for its bad address).
    served = run_cli("--config.file", "/nonexistent.yaml")
    assert served.returncode == 2 and "config file /nonexistent.yaml" in served.stderr
