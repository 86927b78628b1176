#!/usr/bin/env bash
# Runs sluice's whole test suite on this machine: unit tests, integration tests against a real
# MariaDB (started here in a private data dir on a free loopback port, stopped at the end), and
# the driver tests (Python, Node, Java, Rust), then a short run of every fuzz target. Installs
# whatever is missing on a fresh Debian.
#
#   scripts/test.sh            everything
#   scripts/test.sh FILTER     only tests whose name matches FILTER (passed to cargo nextest)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib/deps.sh
. scripts/lib/deps.sh

ensure_rust
ensure_nextest
ensure_cargo_deb
ensure_mariadb
ensure_sysbench
ensure_prometheus
ensure_python_drivers
ensure_node_drivers
ensure_java_driver

MARIADB_DIR=$(mktemp -d /tmp/sluice-mariadb.XXXXXX)
cleanup() {
  # A server that died during the run (a crash sluice's traffic provoked is a finding too):
  # show why before its directory goes.
  if [ -n "${MARIADB_PID:-}" ] && ! kill -0 "$MARIADB_PID" 2>/dev/null; then
    echo "test.sh: MariaDB (pid $MARIADB_PID) is gone; the end of its log:" >&2
    tail -n 80 "$MARIADB_DIR/mariadb.log" >&2 || true
  fi
  scripts/mariadb.sh stop "$MARIADB_DIR" || true
}
trap cleanup EXIT INT TERM
eval "$(scripts/mariadb.sh start "$MARIADB_DIR")"
export SLUICE_TEST_MARIADB="127.0.0.1:$MARIADB_PORT"
export SLUICE_TEST_MARIADB_DIR="$MARIADB_DIR"
echo "test.sh: MariaDB on $SLUICE_TEST_MARIADB (pid $MARIADB_PID)" >&2

cargo build --workspace --all-targets --quiet
status=0
cargo nextest run --workspace --profile ci --no-fail-fast "$@" || status=$?

# A short, bounded run of every fuzz target (the whole suite only, not a filtered run):
# SLUICE_FUZZ_SECONDS per target (default 30; 0 skips). fuzz/README.md has the long runs.
FUZZ_SECONDS=${SLUICE_FUZZ_SECONDS:-30}
if [ $# -eq 0 ] && [ "$FUZZ_SECONDS" -gt 0 ]; then
  scripts/fuzz.sh "$FUZZ_SECONDS" || status=1
fi
exit "$status"
