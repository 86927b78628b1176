#!/usr/bin/env bash
# Benchmark B3 (../shared/BENCHMARKS.md): throughput of the hop. sysbench oltp_point_select and
# oltp_read_only, then sluice-load's own point-select mode, each with THREADS client threads
# (default 64) for DURATION seconds (default 20): straight to MariaDB, then through sluice, in the
# same run. Reports queries/s of both, their ratio, and sluice's CPU time per query (utime + stime
# from /proc/PID/stat around the run, divided by the queries served).
# sluice runs in transaction mode with a POOL-connection pool (default 64) over TCP, or over the
# server's Unix socket with BACKEND=unix, with SHARDS shards (default 0: one per core).
# Writes target/bench/b3.json and prints a table.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
. scripts/lib/deps.sh
. scripts/lib/bench.sh
THREADS=${THREADS:-64}
DURATION=${DURATION:-20}
POOL=${POOL:-64}
BACKEND=${BACKEND:-tcp}
SHARDS=${SHARDS:-0}
TABLE_SIZE=${TABLE_SIZE:-10000}

ensure_rust
ensure_mariadb
ensure_sysbench
cargo build --release --quiet -p sluice -p sluice-load
mkdir -p target/bench
WORK=$(mktemp -d /tmp/sluice-b3.XXXXXX)
MARIADB_DIR="$WORK/mariadb"
SLUICE_PID=
cleanup() {
  [ -n "$SLUICE_PID" ] && kill -TERM "$SLUICE_PID" 2>/dev/null && wait "$SLUICE_PID" 2>/dev/null || true
  scripts/mariadb.sh stop "$MARIADB_DIR" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

eval "$(MARIADB_EXTRA_ARGS="--max-connections=500" scripts/mariadb.sh start "$MARIADB_DIR")"
PORT=$(free_port)
if [ "$BACKEND" = unix ]; then
  ADDRESS="unix:$MARIADB_DIR/mariadb.sock"
else
  ADDRESS="127.0.0.1:$MARIADB_PORT"
fi
cat > "$WORK/sluice.toml" <<TOML
listen = "127.0.0.1:$PORT"
shards = $SHARDS
[pool]
mode = "transaction"
size = $POOL
queue_timeout_ms = 30000
TOML
backend_and_app_user "$ADDRESS" >> "$WORK/sluice.toml"
target/release/sluice --config "$WORK/sluice.toml" --log-level warn &
SLUICE_PID=$!
wait_port "$PORT"

# CPU ticks (utime + stime) of a process.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

sb() { # sb TEST PORT OUT: one sysbench run, its report in OUT
  sysbench "$1" --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$2" --mysql-user=app \
    --mysql-password=app --mysql-db=app --tables=1 --table-size="$TABLE_SIZE" \
    --threads="$THREADS" --time="$DURATION" --report-interval=0 --histogram=off run > "$3"
}

echo "B3: preparing sysbench's table ($TABLE_SIZE rows)" >&2
sysbench oltp_point_select --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$MARIADB_PORT" \
  --mysql-user=app --mysql-password=app --mysql-db=app --tables=1 --table-size="$TABLE_SIZE" \
  prepare >/dev/null

: > "$WORK/runs"
for test in oltp_point_select oltp_read_only; do
  echo "B3: $test, $THREADS threads, ${DURATION}s, direct" >&2
  sb "$test" "$MARIADB_PORT" "$WORK/$test.direct"
  echo "B3: $test, $THREADS threads, ${DURATION}s, through sluice" >&2
  t0=$(ticks "$SLUICE_PID")
  sb "$test" "$PORT" "$WORK/$test.sluice"
  t1=$(ticks "$SLUICE_PID")
  echo "$test $WORK/$test.direct $WORK/$test.sluice $((t1 - t0))" >> "$WORK/runs"
done

echo "B3: sluice-load point selects, $THREADS connections, ${DURATION}s, direct" >&2
target/release/sluice-load -t "127.0.0.1:$MARIADB_PORT" -m select --prepare-table --active "$THREADS" \
  --duration "$DURATION" --json "$WORK/load.direct" -q || true
echo "B3: sluice-load point selects, $THREADS connections, ${DURATION}s, through sluice" >&2
t0=$(ticks "$SLUICE_PID")
target/release/sluice-load -t "127.0.0.1:$PORT" -m select --active "$THREADS" \
  --duration "$DURATION" --json "$WORK/load.sluice" -q || true
t1=$(ticks "$SLUICE_PID")
echo "sluice-load $WORK/load.direct $WORK/load.sluice $((t1 - t0))" >> "$WORK/runs"

python3 - "$WORK/runs" "$HZ" "$THREADS" "$DURATION" "$BACKEND" "$POOL" <<'PY' | tee target/bench/b3.txt
import json, re, sys
runs, hz, threads, duration, backend, pool = sys.argv[1], int(sys.argv[2]), *map(int, sys.argv[3:5]), sys.argv[5], int(sys.argv[6])

def sysbench(path):
    text = open(path).read()
    q = re.search(r"queries:\s+\d+\s+\(([\d.]+) per sec", text)
    n = re.search(r"queries:\s+(\d+)", text)
    err = re.search(r"ignored errors:\s+(\d+)", text)
    p95 = re.search(r"95th percentile:\s+([\d.]+)", text)
    return {"qps": float(q.group(1)), "queries": int(n.group(1)),
            "errors": int(err.group(1)) if err else 0, "p95_ms": float(p95.group(1)) if p95 else None}

def load(path):
    r = json.load(open(path))
    run = r.get("run", {})
    return {"qps": run.get("throughput", 0.0), "queries": run.get("ok", 0),
            "errors": r.get("errors_total", 0),
            "p99_ms": (run.get("latency_us") or {}).get("p99", 0) / 1000}

res = {"threads": threads, "duration_s": duration, "backend": backend, "pool": pool, "runs": {}}
for line in open(runs):
    name, direct, through, ticks = line.split()
    parse = load if name == "sluice-load" else sysbench
    d, s = parse(direct), parse(through)
    cpu_us = int(ticks) / hz * 1e6 / s["queries"] if s["queries"] else None
    res["runs"][name] = {"direct": d, "through_sluice": s,
                         "ratio": round(s["qps"] / d["qps"], 3) if d["qps"] else None,
                         "sluice_cpu_us_per_query": round(cpu_us, 2) if cpu_us else None}
json.dump(res, open("target/bench/b3.json", "w"), indent=1)
print(f"B3: {threads} client threads, {duration}s per run, sluice pool {pool} over {backend}")
print(f"{'':20}{'direct q/s':>14}{'sluice q/s':>14}{'ratio':>8}{'sluice CPU/query':>18}{'errors':>9}")
for name, r in res["runs"].items():
    cpu = r["sluice_cpu_us_per_query"]
    ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
    print(f"{name:20}{r['direct']['qps']:>14.0f}{r['through_sluice']['qps']:>14.0f}{ratio:>8}"
          f"{(f'{cpu:.1f} us' if cpu else '-'):>18}{r['through_sluice']['errors']:>9}")
PY
