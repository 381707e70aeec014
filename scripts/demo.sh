#!/usr/bin/env bash
# The README's first command: a local sandbox PlaceOS (real etcd/Redis/PostgreSQL, stand-ins for
# RethinkDB and Elasticsearch, simulated PlaceOS services) with the exporter running against it.
# Installs what it needs first (scripts/bootstrap.sh), then stays in the foreground; Ctrl-C stops
# every process it started. Break and heal parts from another shell with .venv/bin/placeos-sandbox.
#
#   bash scripts/demo.sh [--era A|B|C] [--cores N] [--dir DIR] [--exporter-listen HOST:PORT]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/placeos-sandbox up --with-exporter "$@"
