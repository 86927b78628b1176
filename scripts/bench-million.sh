#!/usr/bin/env bash
# Benchmarks B1, B2 and B5 (../shared/BENCHMARKS.md) with N clients (default 1,000,000):
#   B1  N authenticated clients opened, held idle, torn down: connect rate, errors, sluice RSS per
#       idle client (summed over every sluice process), kernel slab per connection, upstream
#       connections;
#   B2  a fixed active set (ACTIVE=200 clients at RATE=2000 point selects/s) without, then with
#       the N idle clients connected: p50/p99/p99.9 and the p99 ratio;
#   B5  connect storms (64 loops: connect, one query, disconnect) through sluice, then direct.
# It raises (and afterwards restores) the sysctls a big fan-in needs, starts a private MariaDB and
# as many sluice worker processes as the fd limit demands, and stops everything at the end.
# Output: a table on stdout (also in target/bench/million-N.txt), JSON in
# target/bench/million-N.json (or $OUT), and pictures (sluice-plot): million-N.svg next to the
# JSON for this run, and, when the JSON is a target/bench/million-*.json, million.svg drawn from
# every million-*.json there (runs at several N in one picture; the picture lists its files).
#
# Environment: HOLD (s, B1 hold, default 10), B2_SECONDS (20), B5_SECONDS (20), ACTIVE (200),
# RATE (2000), POOL (64), OUT (JSON path), BIN_DIR (use the sluice, sluice-load and sluice-plot
# binaries there instead of building release ones; the test suite's smoke run does this),
# PLOT_NOTE (a red line on the pictures, e.g. "smoke run, not a measurement").
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
. scripts/lib/deps.sh
. scripts/lib/bench.sh
N=${1:-1000000}
HOLD=${HOLD:-10}
B2_SECONDS=${B2_SECONDS:-20}
B5_SECONDS=${B5_SECONDS:-20}
ACTIVE=${ACTIVE:-200}
RATE=${RATE:-2000}
POOL=${POOL:-64}
OUT=${OUT:-$ROOT/target/bench/million-$N.json}

mkdir -p "$(dirname "$OUT")"
WORK=$(mktemp -d /tmp/sluice-million.XXXXXX)
MARIADB_DIR="$WORK/mariadb"
SLUICE_PID=
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  # The generator first (it winds its workers down), then sluice (the supervisor stops its
  # workers); each bounded, then killed.
  [ -n "$CHILD" ] && stop_pid "$CHILD" 30
  [ -n "$SLUICE_PID" ] && stop_pid "$SLUICE_PID" 30
  scripts/mariadb.sh stop "$MARIADB_DIR" >/dev/null 2>&1 || true
  sysctl_restore
  rm -rf "$WORK"
  exit "$status"
}
# Everything is undone once, at exit. A signal ends the script with the conventional status at
# once during a generator run (run_child waits with `wait`, which a signal interrupts; the
# cleanup stops the generator), else when the short foreground command in progress returns.
trap cleanup EXIT
trap 'echo "bench-million: interrupted" >&2; exit 130' INT
trap 'echo "bench-million: terminated" >&2; exit 143' TERM

ensure_mariadb
release_bins

# Bigger accept queues (the defaults overflowed at 500k connections under CPU contention) and
# enough system-wide files for N client sockets plus N proxy sockets.
sysctl_raise net.core.somaxconn 65535
sysctl_raise net.ipv4.tcp_max_syn_backlog 262144
sysctl_raise net.core.netdev_max_backlog 65536
sysctl_raise fs.file-max $((4 * N + 1000000))

eval "$(scripts/mariadb.sh start "$MARIADB_DIR")"

# Workers: one per (fd limit − margin) clients; one shard each when there are several (the
# workers spread over the cores), every core's shard in a single process otherwise.
FDLIMIT=$(ulimit -Hn)
PER_WORKER=$((FDLIMIT - 1000))
WORKERS=$(( (N + PER_WORKER - 1) / PER_WORKER ))
[ "$WORKERS" -lt 1 ] && WORKERS=1
SHARDS=0
[ "$WORKERS" -gt 1 ] && SHARDS=1
PORT=$(free_port)
MPORT=$(free_port)
cat > "$WORK/sluice.toml" <<TOML
listen = "127.0.0.1:$PORT"
listen_backlog = 65535
shards = $SHARDS
workers = $WORKERS
metrics_listen = "127.0.0.1:$MPORT"
log_level = "warn"
[pool]
mode = "transaction"
size = $POOL
queue_timeout_ms = 30000
TOML
backend_and_app_user "127.0.0.1:$MARIADB_PORT" >> "$WORK/sluice.toml"
"$BIN_DIR/sluice" --config "$WORK/sluice.toml" &
SLUICE_PID=$!
wait_listening "$SLUICE_PID" "$PORT" 60
# With several workers: every one up (each binds the port itself), then their pids for RSS
# sampling (the supervisor's too).
if [ "$WORKERS" -gt 1 ]; then
  for _ in $(seq 1 600); do
    [ "$(pgrep -P "$SLUICE_PID" | wc -l)" -ge "$WORKERS" ] && break
    sleep 0.1
  done
  sleep 1
fi
{ echo "$SLUICE_PID"; pgrep -P "$SLUICE_PID" || true; } > "$WORK/pids"
echo "bench-million: N=$N, $WORKERS sluice worker process(es), pool $POOL, fd limit $FDLIMIT" >&2

echo "B1+B2: $N idle clients; $ACTIVE active at $RATE/s for ${B2_SECONDS}s without, then with them" >&2
run_child - - "$BIN_DIR/sluice-load" -t "127.0.0.1:$PORT" -m select --prepare-table \
  --idle "$N" --active "$ACTIVE" --rate "$RATE" --duration "$B2_SECONDS" --baseline --settle "$HOLD" \
  --sample-pids-from "$WORK/pids" --sample-backend "127.0.0.1:$MARIADB_PORT" \
  --json "$WORK/b12.json" -q || true
python3 - "$MPORT" > "$WORK/upstream" <<'PY'
import sys, urllib.request
t = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=10).read().decode()
print(int(sum(float(l.rsplit(" ", 1)[1]) for l in t.splitlines()
              if l.startswith("sluice_backend_connections{") and 'state="open"' in l)))
PY

# The generator has closed its idle clients; wait until sluice has closed its side too (a
# million closes keep the kernel busy for a while), so that B5 measures storms, not the teardown.
TEARDOWN_START=$(date +%s.%N)
TEARDOWN_DEADLINE=$((SECONDS + 180))
while [ "$SECONDS" -lt "$TEARDOWN_DEADLINE" ]; do
  left=$(metric "$MPORT" sluice_clients_connected 2>/dev/null || echo unknown)
  [ "$left" != unknown ] && [ "$left" -lt 100 ] && break
  sleep 0.5
done
TEARDOWN_SECONDS=$(python3 -c "import time; print(round(time.time() - $TEARDOWN_START, 1))")
echo "sluice closed its side of the idle clients ${TEARDOWN_SECONDS}s after the generator finished" >&2

echo "B5: connect storm through sluice, ${B5_SECONDS}s" >&2
run_child - - "$BIN_DIR/sluice-load" -t "127.0.0.1:$PORT" -m storm -w 64 --duration "$B5_SECONDS" \
  --active-procs 2 --json "$WORK/b5_sluice.json" -q || true
echo "B5: connect storm straight to MariaDB, ${B5_SECONDS}s" >&2
run_child - - "$BIN_DIR/sluice-load" -t "127.0.0.1:$MARIADB_PORT" -m storm -w 64 --duration "$B5_SECONDS" \
  --active-procs 2 --json "$WORK/b5_direct.json" -q || true
# How often the shard watchdog had to wake a stalled shard (src/shard/poller.rs).
KICKS=$(metric "$MPORT" sluice_shard_kicks_total 2>/dev/null || echo unknown)

bench_meta "HOLD=$HOLD B2_SECONDS=$B2_SECONDS B5_SECONDS=$B5_SECONDS ACTIVE=$ACTIVE RATE=$RATE POOL=$POOL scripts/bench-million.sh $N" > "$WORK/meta.json"
python3 - "$WORK" "$OUT" "$N" "$WORKERS" "$POOL" "$(cat "$WORK/upstream")" "$(uname -r)" "$(nproc)" "$TEARDOWN_SECONDS" "$KICKS" <<'PY' | tee "${OUT%.json}.txt"
import json, sys, os
work, out, n, workers, pool, upstream, kernel, cpus, teardown, kicks = sys.argv[1:11]
load = lambda f: json.load(open(os.path.join(work, f)))
b12, b5s, b5d = load("b12.json"), load("b5_sluice.json"), load("b5_direct.json")
res = b12.get("resources", {})
idle = b12.get("idle", {})
base, with_idle = b12.get("baseline", {}), b12.get("run", {})
lat = lambda r, k: (r.get("latency_us") or {}).get(k)
ratio = lambda a, b: round(a / b, 2) if a and b else None
rate = lambda r: r.get("run", {}).get("throughput") or 0.0
summary = {
    "meta": load("meta.json"),
    "n": int(n), "sluice_workers": int(workers), "pool": int(pool), "kernel": kernel, "cpus": int(cpus),
    "b1": {
        "established": idle.get("established"), "errors": b12.get("errors_total"),
        "errors_by_kind": b12.get("errors", {}),
        "establish_seconds": idle.get("connect_seconds"), "connects_per_s": idle.get("connect_rate"),
        "alive_at_end": idle.get("alive_at_end"),
        "sluice_rss_per_idle_client_bytes": res.get("rss_per_conn_bytes"),
        "kernel_slab_per_connection_bytes": res.get("slab_per_conn_bytes"),
        "upstream_connections_open": int(upstream),
        "generator_close_seconds": idle.get("close_seconds"),
        "sluice_teardown_after_generator_seconds": float(teardown),
        "shard_watchdog_kicks": kicks,
    },
    "b2": {
        "active": with_idle.get("connections"), "rate": with_idle.get("target_rate"),
        "without_idle_us": {k: lat(base, k) for k in ("p50", "p99", "p999")},
        "with_idle_us": {k: lat(with_idle, k) for k in ("p50", "p99", "p999")},
        "p99_ratio": ratio(lat(with_idle, "p99"), lat(base, "p99")),
    },
    "b5": {
        "sluice_connects_per_s": round(rate(b5s), 1), "direct_connects_per_s": round(rate(b5d), 1),
        "ratio": ratio(rate(b5s), rate(b5d)),
        "sluice_errors": b5s.get("errors_total"), "direct_errors": b5d.get("errors_total"),
        "sluice_p99_us": lat(b5s.get("run", {}), "p99"), "direct_p99_us": lat(b5d.get("run", {}), "p99"),
    },
}
json.dump(summary, open(out, "w"), indent=1)
b1, b2, b5 = summary["b1"], summary["b2"], summary["b5"]
print(f"bench-million: N={n} ({workers} sluice processes, pool {pool}, {cpus} cores, kernel {kernel})")
print(f"B1  established {b1['established']}/{n}, errors {b1['errors']}, in {b1['establish_seconds']} s ({b1['connects_per_s']} connects/s)")
print(f"    sluice RSS per idle client: {b1['sluice_rss_per_idle_client_bytes']} B; kernel slab per connection: {b1['kernel_slab_per_connection_bytes']} B")
print(f"    upstream connections open: {b1['upstream_connections_open']} (pool {pool})")
print(f"    teardown: generator closed its side in {b1['generator_close_seconds']} s; sluice done {b1['sluice_teardown_after_generator_seconds']} s later; shard watchdog kicks {b1['shard_watchdog_kicks']}")
print(f"B2  {b2['active']} active at {b2['rate']}/s: p50/p99/p99.9 (us) without idle {b2['without_idle_us']}, with {n} idle {b2['with_idle_us']}; p99 ratio {b2['p99_ratio']}")
print(f"B5  connects/s through sluice {b5['sluice_connects_per_s']} vs direct {b5['direct_connects_per_s']} (ratio {b5['ratio']}); errors {b5['sluice_errors']} / {b5['direct_errors']}")
print(f"JSON: {out}")
PY
plot million "${OUT%.json}.svg" "$OUT"
case "$(basename "$OUT")" in
  million-*.json) plot million "$(dirname "$OUT")/million.svg" "$(dirname "$OUT")"/million-*.json ;;
esac
