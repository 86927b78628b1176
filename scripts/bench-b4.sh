#!/usr/bin/env bash
# Benchmark B4 (../shared/BENCHMARKS.md): multiplexing under fan-in. CLIENTS clients (default
# 5,000) run short transactions (BEGIN; SELECT; UPDATE; COMMIT) in a loop for DURATION seconds
# (default 30) through sluice with a POOL-connection upstream pool (default 32), then the same
# clients straight to MariaDB (max_connections 151: most cannot even connect).
# Reports transactions/s, errors, upstream connections (sampled from MariaDB's processlist during
# the run), the p99 queue wait and pinned sessions (from sluice's metrics).
# Writes target/bench/b4.json and prints a table. BIN_DIR: binaries to use instead of building
# release ones.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
. scripts/lib/deps.sh
. scripts/lib/bench.sh
CLIENTS=${CLIENTS:-5000}
POOL=${POOL:-32}
DURATION=${DURATION:-30}

ensure_rust
ensure_mariadb
release_bins
BIN=$BIN_DIR
mkdir -p target/bench
WORK=$(mktemp -d /tmp/sluice-b4.XXXXXX)
MARIADB_DIR="$WORK/mariadb"
SLUICE_PID=
SAMPLER_PID=
cleanup() {
  [ -n "$SAMPLER_PID" ] && kill "$SAMPLER_PID" 2>/dev/null || true
  [ -n "$SLUICE_PID" ] && kill -TERM "$SLUICE_PID" 2>/dev/null && wait "$SLUICE_PID" 2>/dev/null || true
  scripts/mariadb.sh stop "$MARIADB_DIR" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
sysctl_raise net.core.somaxconn 65535
sysctl_raise net.ipv4.tcp_max_syn_backlog 65535
trap 'cleanup; sysctl_restore' EXIT INT TERM

eval "$(MARIADB_EXTRA_ARGS="--max-connections=151" scripts/mariadb.sh start "$MARIADB_DIR")"
SQL="mariadb --no-defaults -uroot --socket=$MARIADB_DIR/mariadb.sock -N"
$SQL -e "CREATE USER 'b4pool'@'%' IDENTIFIED BY 'pw'; GRANT ALL ON *.* TO 'b4pool'@'%';"
PORT=$(free_port)
MPORT=$(free_port)
cat > "$WORK/sluice.toml" <<TOML
listen = "127.0.0.1:$PORT"
listen_backlog = 65535
metrics_listen = "127.0.0.1:$MPORT"
[pool]
mode = "transaction"
size = $POOL
queue_timeout_ms = 30000
TOML
backend_and_app_user "127.0.0.1:$MARIADB_PORT" b4pool pw >> "$WORK/sluice.toml"
"$BIN/sluice" --config "$WORK/sluice.toml" --log-level warn &
SLUICE_PID=$!
wait_port "$PORT"

# Peak of sluice's upstream connections as MariaDB sees them, sampled every 100 ms.
(
  peak=0
  while true; do
    n=$($SQL -e "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER='b4pool'" 2>/dev/null || echo 0)
    [ "$n" -gt "$peak" ] && peak=$n && echo "$peak" > "$WORK/peak"
    sleep 0.1
  done
) &
SAMPLER_PID=$!

echo "B4: $CLIENTS clients, pool $POOL, ${DURATION}s through sluice" >&2
"$BIN/sluice-load" -t "127.0.0.1:$PORT" -m trx --prepare-table --active "$CLIENTS" \
  --duration "$DURATION" --sample-pid "$SLUICE_PID" --json "$WORK/through.json" -q || true
kill "$SAMPLER_PID" 2>/dev/null || true
SAMPLER_PID=
PEAK=$(cat "$WORK/peak" 2>/dev/null || echo 0)
python3 - "$MPORT" > "$WORK/metrics.json" <<'PY'
import json, sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode()
buckets, count, pins_total, pinned = {}, 0.0, 0.0, 0.0
for l in text.splitlines():
    if l.startswith("sluice_pool_queue_wait_seconds_bucket{"):
        le = l.split('le="')[1].split('"')[0]
        buckets[le] = buckets.get(le, 0.0) + float(l.rsplit(" ", 1)[1])
    elif l.startswith("sluice_pool_queue_wait_seconds_count{"):
        count += float(l.rsplit(" ", 1)[1])
    elif l.startswith("sluice_pins_total{"):
        pins_total += float(l.rsplit(" ", 1)[1])
    elif l.startswith("sluice_pinned_sessions{"):
        pinned += float(l.rsplit(" ", 1)[1])
p99 = None
for le, c in sorted(((float(k), v) for k, v in buckets.items() if k != "+Inf")):
    if count and c >= 0.99 * count:
        p99 = le
        break
print(json.dumps({"queued_checkouts": count, "queue_wait_p99_le_seconds": p99, "pins_total": pins_total, "pinned_now": pinned}))
PY

echo "B4: the same $CLIENTS clients straight to MariaDB (max_connections 151)" >&2
"$BIN/sluice-load" -t "127.0.0.1:$MARIADB_PORT" -m trx --active "$CLIENTS" \
  --duration "$DURATION" --json "$WORK/direct.json" -q || true

python3 - "$WORK/through.json" "$WORK/direct.json" "$WORK/metrics.json" "$PEAK" "$CLIENTS" "$POOL" "$DURATION" <<'PY' | tee target/bench/b4.txt
import json, sys
t, d, m = (json.load(open(p)) for p in sys.argv[1:4])
peak, clients, pool, duration = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
def row(r):
    run = r.get("run", {})
    return {
        "connected": run.get("connections", 0),
        "transactions_per_s": round(run.get("throughput", 0.0), 1),
        "p99_ms": (run.get("latency_us") or {}).get("p99", 0) / 1000,
        "errors": r.get("errors_total", 0),
        "errors_by_kind": r.get("errors", {}),
    }
res = {"clients": clients, "pool": pool, "duration_s": duration, "through_sluice": row(t), "direct": row(d),
       "upstream_peak": peak, **m}
json.dump(res, open("target/bench/b4.json", "w"), indent=1)
s, x = res["through_sluice"], res["direct"]
print(f"B4: {clients} clients, short transactions for {duration}s")
print(f"{'':28}{'through sluice':>18}{'direct':>18}")
print(f"{'clients connected':28}{s['connected']:>18}{x['connected']:>18}")
print(f"{'transactions/s':28}{s['transactions_per_s']:>18}{x['transactions_per_s']:>18}")
print(f"{'transaction p99 (ms)':28}{s['p99_ms']:>18.1f}{x['p99_ms']:>18.1f}")
print(f"{'errors':28}{s['errors']:>18}{x['errors']:>18}")
print(f"upstream connections (peak, MariaDB's processlist): {peak} (pool {pool})")
print(f"queue wait p99: <= {res['queue_wait_p99_le_seconds']} s over {int(res['queued_checkouts'])} queued checkouts")
print(f"pinned sessions now: {int(res['pinned_now'])}, pins during the run: {int(res['pins_total'])}")
print(f"direct errors by kind: {x['errors_by_kind']}")
PY
