#!/usr/bin/env bash
# The local demo: builds dbmazz, then starts a scratch PostgreSQL, the StarRocks test
# double, dbmazz and some traffic, with a live view. Arguments go to the demo
# (try --help); e.g. tools/demo.sh --outage-after 15 --outage-seconds 20.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 && [ -z "${PG_BIN:-}" ]; then
  echo "PostgreSQL server binaries not found: installing the postgresql package" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
fi
cargo build --release --workspace --bins
exec target/release/dbmazz-demo "$@"
