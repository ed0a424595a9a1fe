#!/usr/bin/env bash
# Runs the whole test suite. Tests start their own private PostgreSQL clusters (never a
# server someone started by hand), so the PostgreSQL server binaries must be installed:
# this script installs the Debian `postgresql` package when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 && [ -z "${PG_BIN:-}" ]; then
  echo "PostgreSQL server binaries not found: installing the postgresql package" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
fi

exec cargo test --workspace "$@"
