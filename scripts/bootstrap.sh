#!/usr/bin/env bash
# Installs what the exporter, the sandbox and the tests need on a fresh Debian machine with Python 3:
# Debian packages (real etcd, Redis, PostgreSQL, Prometheus/promtool, Alertmanager) and a venv in .venv.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(etcd-server etcd-client redis-server postgresql prometheus prometheus-alertmanager
              openssl ca-certificates chromium prometheus-elasticsearch-exporter)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts the packaged services where an init system runs; the project starts its own on free
# ports, so stop the system ones to keep the machine quiet (no-op without systemd).
for svc in redis-server etcd postgresql prometheus prometheus-alertmanager; do
  (command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" && systemctl stop "$svc") 2>/dev/null || true
done

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "bootstrap: installing Python dependencies into .venv" >&2
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e '.[dev]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi
