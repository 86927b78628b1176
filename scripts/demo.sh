#!/usr/bin/env bash
# The main job in one command: a private MariaDB, sluice in front of it, and a short load run
# through sluice (2,000 idle clients, 50 active ones running point selects at 2,000/s, first
# without and then with the idle ones), with a printed summary. Everything is stopped at the end.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib/deps.sh
. scripts/lib/deps.sh
# shellcheck source=scripts/lib/bench.sh
. scripts/lib/bench.sh

ensure_rust
ensure_mariadb
echo "demo: building sluice and sluice-load (release)" >&2
cargo build --release --quiet -p sluice -p sluice-load

WORK=$(mktemp -d /tmp/sluice-demo.XXXXXX)
MARIADB_DIR="$WORK/mariadb"
SLUICE_PID=
cleanup() {
  [ -n "$SLUICE_PID" ] && kill -TERM "$SLUICE_PID" 2>/dev/null && wait "$SLUICE_PID" 2>/dev/null
  scripts/mariadb.sh stop "$MARIADB_DIR" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
eval "$(scripts/mariadb.sh start "$MARIADB_DIR")"
PORT=$(free_port)
MPORT=$(free_port)
cat > "$WORK/sluice.toml" <<TOML
listen = "127.0.0.1:$PORT"
metrics_listen = "127.0.0.1:$MPORT"
[pool]
mode = "transaction"
size = 16
TOML
backend_and_app_user "127.0.0.1:$MARIADB_PORT" >> "$WORK/sluice.toml"
target/release/sluice --config "$WORK/sluice.toml" --log-level warn &
SLUICE_PID=$!
wait_port "$PORT"
echo "demo: MariaDB on 127.0.0.1:$MARIADB_PORT, sluice on 127.0.0.1:$PORT (pool of 16)" >&2
target/release/sluice-load -t "127.0.0.1:$PORT" -m select --prepare-table \
  --idle 2000 --active 50 --rate 2000 --duration 10 --baseline \
  --sample-pid "$SLUICE_PID" --json "$WORK/report.json"
echo
echo "sluice's own counters (http://127.0.0.1:$MPORT/metrics):"
printf '  %-46s %s\n' "commands served" "$(metric "$MPORT" sluice_commands_total)"
printf '  %-46s %s\n' "backend checkouts" "$(metric "$MPORT" sluice_pool_checkouts_total)"
printf '  %-46s %s\n' "backend connections open now (pool of 16)" "$(metric "$MPORT" 'sluice_backend_connections{' 'state="open"')"
printf '  %-46s %s\n' "backend connections opened in all" "$(metric "$MPORT" sluice_pool_connects_total)"
printf '  %-46s %s\n' "errors" "$(metric "$MPORT" sluice_errors_total)"
