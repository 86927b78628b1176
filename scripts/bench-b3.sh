#!/usr/bin/env bash
# Benchmark B3 (../shared/BENCHMARKS.md): throughput of the hop. In one run, side by side:
#   direct      clients straight to MariaDB (TCP);
#   floor       through the floor relay (loadtest/src/bin/sluice-floor.rs: a 1:1 byte relay, no
#               parsing, one edge-triggered epoll loop per core): what any userspace hop costs here;
#   floor-glommio  (with FLOOR_GLOMMIO=1) the same relay on glommio executors and streams: what
#               the runtime adds to the floor;
#   sluice-P    through sluice in transaction mode with a pool of P connections, for each P in
#               POOLS (default "64 16": more clients than connections is the normal case).
# Workloads (WORKLOADS): sysbench oltp_point_select and oltp_read_only, and sluice-load's own
# point-select mode, each with THREADS client threads (default 64) for DURATION seconds (20). Each
# workload runs against every target in turn, so ratios compare runs seconds apart. Then the
# low-rate case: LOW_CLIENTS clients (50) at LOW_RATE queries/s (2,000) for LOW_DURATION seconds,
# where a proxy sleeps between queries.
# Reported: queries/s, ratio to direct, ratio to the floor, errors, and each proxy's CPU time per
# query (utime + stime from /proc/PID/stat before and after the run, ÷ queries served); at the low
# rate, latency p50/p99 too.
#
# Environment: THREADS, DURATION, POOL (the first pool size, default 64), POOLS (all of them,
# default "$POOL 16"), BACKEND (tcp, or unix: both proxies reach MariaDB through its Unix socket;
# clients always use TCP), SHARDS (sluice shards, 0 = one per core), FLOOR_THREADS (default: as
# many as sluice's shards), FLOOR_GLOMMIO (1: add floor-glommio; default 0), TABLE_SIZE (10,000),
# WORKLOADS (default "oltp_point_select oltp_read_only sluice-load"), LOW_CLIENTS, LOW_RATE,
# LOW_DURATION (0 skips the low-rate case),
# WARMUP (seconds of point selects straight to MariaDB before measuring, default 3), BIN_DIR (use
# the binaries there instead of building release ones), OUT_DIR (default target/bench),
# PLOT_NOTE (a red line on the picture, e.g. "smoke run, not a measurement"), ALLOCS (1: run
# sluice built with the counting allocator, feature count-allocs, and report its heap allocations
# per query; the shared counter costs CPU, so take throughput and CPU from a run without it).
# Sluice's share of checkouts that queued for a pool connection is always reported.
# Writes OUT_DIR/b3.json, OUT_DIR/b3.txt (the table it prints) and OUT_DIR/b3.svg.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
. scripts/lib/deps.sh
. scripts/lib/bench.sh
THREADS=${THREADS:-64}
DURATION=${DURATION:-20}
POOL=${POOL:-64}
POOLS=${POOLS:-"$POOL 16"}
BACKEND=${BACKEND:-tcp}
SHARDS=${SHARDS:-0}
FLOOR_THREADS=${FLOOR_THREADS:-$SHARDS}
FLOOR_GLOMMIO=${FLOOR_GLOMMIO:-0}
TABLE_SIZE=${TABLE_SIZE:-10000}
WORKLOADS=${WORKLOADS:-"oltp_point_select oltp_read_only sluice-load"}
LOW_CLIENTS=${LOW_CLIENTS:-50}
LOW_RATE=${LOW_RATE:-2000}
LOW_DURATION=${LOW_DURATION:-$DURATION}
WARMUP=${WARMUP:-3}
ALLOCS=${ALLOCS:-0}
OUT_DIR=${OUT_DIR:-$ROOT/target/bench}
case "$BACKEND" in tcp | unix) ;; *) echo "bench-b3: BACKEND must be tcp or unix" >&2; exit 2 ;; esac
for w in $WORKLOADS; do
  case "$w" in oltp_point_select | oltp_read_only | sluice-load) ;;
    *) echo "bench-b3: unknown workload $w (oltp_point_select, oltp_read_only, sluice-load)" >&2; exit 2 ;;
  esac
done
COMMAND="THREADS=$THREADS DURATION=$DURATION POOLS='$POOLS' BACKEND=$BACKEND SHARDS=$SHARDS FLOOR_THREADS=$FLOOR_THREADS FLOOR_GLOMMIO=$FLOOR_GLOMMIO LOW_DURATION=$LOW_DURATION scripts/bench-b3.sh"

mkdir -p "$OUT_DIR"
WORK=$(mktemp -d /tmp/sluice-b3.XXXXXX)
MARIADB_DIR="$WORK/mariadb"
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  stop_tracked
  if [ "$status" -ne 0 ]; then
    for log in "$WORK"/*.log; do
      [ -s "$log" ] && { echo "--- last lines of $(basename "$log"):" >&2; tail -n 15 "$log" >&2; }
    done
  fi
  scripts/mariadb.sh stop "$MARIADB_DIR" >/dev/null 2>&1 || true
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'echo "bench-b3: interrupted" >&2; exit 130' INT
trap 'echo "bench-b3: terminated" >&2; exit 143' TERM

ensure_mariadb
ensure_sysbench
release_bins
SLUICE_BIN=$BIN_DIR/sluice
if [ "$ALLOCS" = 1 ]; then
  # sluice with a counting allocator (src/alloc_count.rs), in a target directory of its own.
  ensure_rust
  cargo build --release --quiet -p sluice --bin sluice --features count-allocs \
    --target-dir "$ROOT/target/count-allocs"
  SLUICE_BIN=$ROOT/target/count-allocs/release/sluice
fi
for b in sluice sluice-load sluice-floor; do
  [ -x "$BIN_DIR/$b" ] || { echo "bench-b3: no $BIN_DIR/$b" >&2; exit 1; }
done

eval "$(MARIADB_EXTRA_ARGS="--max-connections=500" scripts/mariadb.sh start "$MARIADB_DIR")"
if [ "$BACKEND" = unix ]; then
  UPSTREAM="unix:$MARIADB_DIR/mariadb.sock"
else
  UPSTREAM="127.0.0.1:$MARIADB_PORT"
fi

# The targets: name, port, and the pid whose CPU is counted (none for direct).
TARGETS=(direct)
declare -A PORT_OF=([direct]=$MARIADB_PORT) PID_OF=() METRICS_OF=()

FLOOR_PORT=$(free_port)
"$BIN_DIR/sluice-floor" --listen "127.0.0.1:$FLOOR_PORT" --upstream "$UPSTREAM" \
  --threads "$FLOOR_THREADS" 2>"$WORK/floor.log" &
bg_track $! floor
TARGETS+=(floor)
PORT_OF[floor]=$FLOOR_PORT
PID_OF[floor]=$!
wait_listening "${PID_OF[floor]}" "$FLOOR_PORT"
if [ "$FLOOR_GLOMMIO" = 1 ]; then
  port=$(free_port)
  "$BIN_DIR/sluice-floor" --glommio --listen "127.0.0.1:$port" --upstream "$UPSTREAM" \
    --threads "$FLOOR_THREADS" 2>"$WORK/floor-glommio.log" &
  bg_track $! floor-glommio
  TARGETS+=(floor-glommio)
  PORT_OF[floor-glommio]=$port
  PID_OF[floor-glommio]=$!
  wait_listening "${PID_OF[floor-glommio]}" "$port"
fi

for p in $POOLS; do
  name="sluice-$p"
  port=$(free_port)
  mport=$(free_port)
  METRICS_OF[$name]=$mport
  cat > "$WORK/$name.toml" <<TOML
listen = "127.0.0.1:$port"
metrics_listen = "127.0.0.1:$mport"
shards = $SHARDS
[pool]
mode = "transaction"
size = $p
queue_timeout_ms = 30000
TOML
  backend_and_app_user "$UPSTREAM" >> "$WORK/$name.toml"
  "$SLUICE_BIN" --config "$WORK/$name.toml" --log-level warn 2>"$WORK/$name.log" &
  bg_track $! "$name"
  TARGETS+=("$name")
  PORT_OF[$name]=$port
  PID_OF[$name]=$!
  wait_listening "${PID_OF[$name]}" "$port"
done
echo "bench-b3: MariaDB on 127.0.0.1:$MARIADB_PORT; proxies reach it over $BACKEND:" \
  "$(for t in "${TARGETS[@]:1}"; do printf '%s on %s (pid %s) ' "$t" "${PORT_OF[$t]}" "${PID_OF[$t]}"; done)" >&2

sb() { # sb TEST PORT SECONDS OUT: one sysbench run; its report in OUT (fails if sysbench did)
  run_child "$4" + sysbench "$1" --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$2" \
    --mysql-user=app --mysql-password=app --mysql-db=app --tables=1 --table-size="$TABLE_SIZE" \
    --threads="$THREADS" --time="$3" --report-interval=0 --histogram=off run
}

# Each sluice-load run binds its own source addresses, so no run meets the TIME_WAIT sockets of
# the one before.
SRC=10
load() { # load PORT OUT ARGS...: one sluice-load point-select run
  local port=$1 out=$2
  shift 2
  SRC=$((SRC + 1))
  run_child /dev/null "$out.err" "$BIN_DIR/sluice-load" -t "127.0.0.1:$port" -m select \
    --src-base "127.$SRC.0.1" --json "$out" -q "$@" || true
}

echo "bench-b3: preparing the tables ($TABLE_SIZE rows)" >&2
sysbench oltp_point_select --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$MARIADB_PORT" \
  --mysql-user=app --mysql-password=app --mysql-db=app --tables=1 --table-size="$TABLE_SIZE" \
  prepare >/dev/null
load "$MARIADB_PORT" "$WORK/prepare.json" --prepare-table --table-size "$TABLE_SIZE" --active 1 --duration 0.5
if [ "$WARMUP" != 0 ]; then
  echo "bench-b3: warming MariaDB up (${WARMUP}s of point selects)" >&2
  sb oltp_point_select "$MARIADB_PORT" "$WARMUP" "$WORK/warmup" || true
fi

# pool_counts TARGET: "checkouts queued allocations", the first two summed over sluice's pools,
# the last 0 unless ALLOCS=1 ("- - -" for other targets).
pool_counts() {
  local port=${METRICS_OF[$1]:-}
  if [ -z "$port" ]; then echo "- - -"; return; fi
  python3 -c 'import sys, urllib.request as u; sys.stdout.write(u.urlopen(sys.argv[1], timeout=5).read().decode())' \
    "http://127.0.0.1:$port/metrics" | awk '
    /^sluice_pool_checkouts_total/ { c += $NF } /^sluice_pool_queue_waits_total/ { q += $NF }
    /^sluice_heap_allocations_total/ { a += $NF }
    END { printf "%d %d %d\n", c, q, a }'
}

# measure TARGET KIND OUT CMD...: runs CMD, recording the target's proxy CPU ticks and (sluice)
# checkouts and queued checkouts around it. Appends "workload target kind out ticks ok
# checkouts queued" to $WORK/runs.
measure() {
  local workload=$1 target=$2 kind=$3 out=$4 t0=- t1=- ok=1 c0 q0 a0 c1 q1 a1
  shift 4
  local pid=${PID_OF[$target]:-}
  [ -n "$pid" ] && t0=$(cpu_ticks "$pid")
  read -r c0 q0 a0 < <(pool_counts "$target")
  "$@" || ok=0
  read -r c1 q1 a1 < <(pool_counts "$target")
  local pool="- - -"
  [ "$c0" != - ] && pool="$((c1 - c0)) $((q1 - q0)) $((a1 - a0))"
  if [ -n "$pid" ]; then
    t1=$(cpu_ticks "$pid") || { echo "bench-b3: $target died during $workload" >&2; exit 1; }
    echo "$workload $target $kind $out $((t1 - t0)) $ok $pool" >> "$WORK/runs"
  else
    echo "$workload $target $kind $out - $ok $pool" >> "$WORK/runs"
  fi
  [ "$ok" = 1 ] || echo "bench-b3: $workload through $target failed (see the report)" >&2
}

: > "$WORK/runs"
for w in $WORKLOADS; do
  for t in "${TARGETS[@]}"; do
    echo "bench-b3: $w, $THREADS threads, ${DURATION}s, $t" >&2
    out="$WORK/$w.$t"
    if [ "$w" = sluice-load ]; then
      measure "$w" "$t" load "$out" load "${PORT_OF[$t]}" "$out" --active "$THREADS" --duration "$DURATION"
    else
      measure "$w" "$t" sysbench "$out" sb "$w" "${PORT_OF[$t]}" "$DURATION" "$out"
    fi
  done
done
if [ "$LOW_DURATION" != 0 ]; then
  for t in "${TARGETS[@]}"; do
    echo "bench-b3: low rate, $LOW_CLIENTS clients at $LOW_RATE q/s, ${LOW_DURATION}s, $t" >&2
    out="$WORK/low.$t"
    measure low_rate "$t" load "$out" load "${PORT_OF[$t]}" "$out" --active "$LOW_CLIENTS" \
      --rate "$LOW_RATE" --duration "$LOW_DURATION"
  done
fi

bench_meta "$COMMAND" > "$WORK/meta.json"
python3 - "$WORK" "$OUT_DIR/b3.json" "$(getconf CLK_TCK)" "$THREADS" "$DURATION" "$BACKEND" \
  "$SHARDS" "$FLOOR_THREADS" "$LOW_CLIENTS" "$LOW_RATE" "$LOW_DURATION" "${TARGETS[*]}" \
  <<'PY' | tee "$OUT_DIR/b3.txt"
import json, os, re, sys
(work, out, hz, threads, duration, backend, shards, floor_threads, low_clients, low_rate,
 low_duration, targets) = sys.argv[1:13]
hz, targets = int(hz), targets.split()
cpus = os.cpu_count()
shards = int(shards)

def sysbench(path):
    try:
        text = open(path).read()
    except OSError:
        text = ""
    q = re.search(r"queries:\s+(\d+)\s+\(([\d.]+) per sec", text)
    err = re.search(r"ignored errors:\s+(\d+)", text)
    p95 = re.search(r"95th percentile:\s+([\d.]+)", text)
    if not q:
        return {"qps": None, "queries": 0, "errors": None, "failed": True,
                "message": text.strip().splitlines()[-1] if text.strip() else "no output"}
    return {"qps": float(q.group(2)), "queries": int(q.group(1)),
            "errors": int(err.group(1)) if err else 0, "p95_ms": float(p95.group(1)) if p95 else None}

def load(path):
    try:
        r = json.load(open(path))
    except (OSError, ValueError):
        err = open(path + ".err").read().strip() if os.path.exists(path + ".err") else ""
        return {"qps": None, "queries": 0, "errors": None, "failed": True,
                "message": err.splitlines()[-1] if err else "no report"}
    run = r.get("run") or {}
    lat = run.get("latency_us") or {}
    res = {"qps": run.get("throughput"), "queries": run.get("ok", 0),
           "errors": r.get("errors_total", 0), "p50_us": lat.get("p50"), "p99_us": lat.get("p99"),
           "p999_us": lat.get("p999")}
    if run.get("target_rate"):
        res["missed"] = run.get("missed", 0)
    if r.get("errors"):
        res["errors_by_kind"] = r["errors"]
    return res

rnd = lambda v, n=3: round(v, n) if v is not None else None
div = lambda a, b: a / b if a is not None and b else None
results = {}
order = []
for line in open(os.path.join(work, "runs")):
    workload, target, kind, path, ticks, ok, checkouts, queued, allocs = line.split()
    r = (load if kind == "load" else sysbench)(path)
    if checkouts != "-":
        r["checkouts"], r["checkouts_queued"] = int(checkouts), int(queued)
    if allocs not in ("-", "0"):
        r["allocations_per_query"] = rnd(div(int(allocs), r["queries"]), 1)
    if ticks != "-":
        r["cpu_ticks"] = int(ticks)
        r["cpu_us_per_query"] = rnd(div(int(ticks) / hz * 1e6, r["queries"]), 2)
    if workload not in results:
        results[workload] = {}
        order.append(workload)
    results[workload][target] = r

for res in results.values():
    d, fl = res.get("direct", {}), res.get("floor", {})
    for t, r in res.items():
        if t == "direct":
            continue
        r["ratio_to_direct"] = rnd(div(r["qps"], d.get("qps")))
        if t != "floor":
            r["ratio_to_floor"] = rnd(div(r["qps"], fl.get("qps")))
            r["cpu_ratio_to_floor"] = rnd(div(r.get("cpu_us_per_query"), fl.get("cpu_us_per_query")), 2)

summary = {
    "benchmark": "b3",
    "meta": json.load(open(os.path.join(work, "meta.json"))),
    "threads": int(threads), "duration_s": float(duration), "backend": backend,
    "shards": shards, "floor_threads": int(floor_threads) or cpus, "cpus": cpus,
    "pools": [int(t.split("-", 1)[1]) for t in targets if t.startswith("sluice-")],
    "clk_tck": hz,
    "targets": targets,
    "workloads": [{"name": w, "results": results[w]} for w in order if w != "low_rate"],
}
if "low_rate" in results:
    summary["low_rate"] = {"clients": int(low_clients), "rate": float(low_rate),
                           "duration_s": float(low_duration), "results": results["low_rate"]}
json.dump(summary, open(out, "w"), indent=1)

fmt = lambda v, f: "-" if v is None else f(v)
print(f"B3: {threads} client threads, {duration} s per run; proxies reach MariaDB over {backend}; "
      f"sluice shards {shards or f'{cpus} (one per core)'}, floor threads {summary['floor_threads']}")
allocs_on = any("allocations_per_query" in r for w in summary["workloads"] for r in w["results"].values())
head = f"{'workload':20}{'target':15}{'q/s':>10}{'×direct':>9}{'×floor':>8}{'CPU/query':>12}{'×floor CPU':>11}{'errors':>8}{'queued':>8}" + (f"{'allocs/query':>13}" if allocs_on else "")
print(head)
for w in summary["workloads"]:
    for i, t in enumerate(targets):
        r = w["results"].get(t, {})
        print(f"{(w['name'] if i == 0 else ''):20}{t:15}"
              f"{fmt(r.get('qps'), lambda v: f'{v:.0f}'):>10}"
              f"{fmt(r.get('ratio_to_direct'), lambda v: f'{v:.2f}'):>9}"
              f"{fmt(r.get('ratio_to_floor'), lambda v: f'{v:.2f}'):>8}"
              f"{fmt(r.get('cpu_us_per_query'), lambda v: f'{v:.1f} µs'):>12}"
              f"{fmt(r.get('cpu_ratio_to_floor'), lambda v: f'{v:.1f}×'):>11}"
              f"{fmt(r.get('errors'), str):>8}"
              f"{fmt(div(r.get('checkouts_queued'), r.get('checkouts')), lambda v: f'{100 * v:.0f}%'):>8}"
              + (f"{fmt(r.get('allocations_per_query'), lambda v: f'{v:.1f}'):>13}" if allocs_on else "")
              + (f"  FAILED: {r.get('message', '')}" if r.get("failed") else ""))
low = summary.get("low_rate")
if low:
    print(f"low rate: {low_clients} clients at {low_rate} q/s for {low_duration} s")
    low_allocs = any("allocations_per_query" in r for r in low["results"].values())
    print(f"{'':20}{'target':15}{'q/s':>10}{'p50':>10}{'p99':>10}{'CPU/query':>12}{'×floor CPU':>11}{'errors':>8}"
          + (f"{'allocs/query':>13}" if low_allocs else ""))
    for t in targets:
        r = low["results"].get(t, {})
        print(f"{'':20}{t:15}{fmt(r.get('qps'), lambda v: f'{v:.0f}'):>10}"
              f"{fmt(r.get('p50_us'), lambda v: f'{v} µs'):>10}{fmt(r.get('p99_us'), lambda v: f'{v} µs'):>10}"
              f"{fmt(r.get('cpu_us_per_query'), lambda v: f'{v:.1f} µs'):>12}"
              f"{fmt(r.get('cpu_ratio_to_floor'), lambda v: f'{v:.1f}×'):>11}"
              f"{fmt(r.get('errors'), str):>8}"
              + (f"{fmt(r.get('allocations_per_query'), lambda v: f'{v:.1f}'):>13}" if low_allocs else "")
              + (f"  FAILED: {r.get('message', '')}" if r.get("failed") else ""))
print(f"CPU per query: utime + stime of the proxy process over the run ÷ queries served ({hz} ticks/s).")
print("queued: sluice's checkouts that waited for a pool connection, of all its checkouts in the run.")
print(f"JSON: {out}")
PY
plot b3 "$OUT_DIR/b3.svg" "$OUT_DIR/b3.json"
