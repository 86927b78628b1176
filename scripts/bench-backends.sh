#!/usr/bin/env bash
# Backends that come and go, measured (issue "backends come and go"; targets in the README):
#
#   detect-kill   kill -9 one of three equivalent backends; time until sluice marks it down
#                 (REPEAT times; restarted in between);
#   detect-stop   SIGSTOP one instead (a frozen server: accepts TCP, never answers);
#   kill-load     kill -9 one backend under load (sluice-load trx: BEGIN; SELECT; UPDATE; COMMIT
#                 from CLIENTS clients): errors, which only transactions open on it may see;
#   rolling       a rolling restart of the three under the same load, each drained first
#                 (BACKEND DRAIN, wait until it holds nothing, restart, wait until up, UNDRAIN):
#                 errors (target 0) and each drain's time;
#   promote       a primary and a replica (GTID): kill -9 the primary, promote the replica (what an
#                 orchestrator does), time until a write through sluice succeeds again;
#   drain-mixed   a drain (TIMEOUT 10 s) of one of three backends under mixed load: IDLE idle and
#                 CLIENTS active transaction-mode clients (BEGIN; SELECT; UPDATE; COMMIT) and
#                 SESSION_CLIENTS session-mode clients running point selects (they move off
#                 between commands): time until it is drained, errors (target 0).
#
# Environment: REPEAT (5), CLIENTS (200), LOAD_SECONDS (per load scenario; default 30), POOL (32),
# IDLE (10000) and SESSION_CLIENTS (30) for drain-mixed,
# SCENARIOS (default "detect-kill detect-stop kill-load rolling promote drain-mixed"), BIN_DIR (binaries to use
# instead of building release ones), OUT_DIR (default target/bench). Writes OUT_DIR/backends.json
# and prints a summary table.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
. scripts/lib/deps.sh
. scripts/lib/bench.sh
REPEAT=${REPEAT:-5}
CLIENTS=${CLIENTS:-200}
LOAD_SECONDS=${LOAD_SECONDS:-30}
POOL=${POOL:-32}
SCENARIOS=${SCENARIOS:-"detect-kill detect-stop kill-load rolling promote drain-mixed"}
IDLE=${IDLE:-10000}
SESSION_CLIENTS=${SESSION_CLIENTS:-30}
OUT_DIR=${OUT_DIR:-$ROOT/target/bench}
COMMAND="REPEAT=$REPEAT CLIENTS=$CLIENTS LOAD_SECONDS=$LOAD_SECONDS POOL=$POOL IDLE=$IDLE SESSION_CLIENTS=$SESSION_CLIENTS SCENARIOS='$SCENARIOS' scripts/bench-backends.sh"
log() { echo "bench-backends: $*" >&2; }

ensure_rust
ensure_mariadb
release_bins
mkdir -p "$OUT_DIR"
WORK=$(mktemp -d /tmp/sluice-bench-backends.XXXXXX)
CLUSTERS=()
cleanup() {
  stop_tracked
  local c
  for c in "${CLUSTERS[@]}"; do scripts/mariadb-cluster.sh stop "$c" >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

now_ms() { date +%s%3N; }

# start_sluice CONFIG_BODY: starts sluice on a free port; sets SLUICE_PID and SLUICE_PORT.
start_sluice() {
  SLUICE_PORT=$(free_port)
  cat >"$WORK/sluice.toml" <<TOML
listen = "127.0.0.1:$SLUICE_PORT"
max_client_connections = 0
[pool]
mode = "transaction"
size = $POOL
queue_timeout_ms = 10000
$1
[[users]]
name = "app"
password = "app"
backend_user = "app"
backend_password = "app"
[[users]]
name = "sess"
password = "sess"
backend_user = "app"
backend_password = "app"
pool_mode = "session"
TOML
  "$BIN_DIR/sluice" -c "$WORK/sluice.toml" --log-level info 2>"$WORK/sluice.log" &
  SLUICE_PID=$!
  bg_track "$SLUICE_PID" sluice
  wait_listening "$SLUICE_PID" "$SLUICE_PORT" 30
}

stop_sluice() {
  stop_pid "$SLUICE_PID"
}

ctl() { "$BIN_DIR/sluice" ctl --pid "$SLUICE_PID" "$@"; }

# field ADDRESS KEY: a field of the backend at ADDRESS in `ctl BACKENDS`.
field() {
  ctl BACKENDS | python3 -c "import json,sys; print(next(b for b in json.load(sys.stdin) if b['address']=='$1')['$2'])"
}

# wait_field ADDRESS KEY VALUE SECONDS: polls every 10 ms; prints the milliseconds it took.
wait_field() {
  local t0 deadline
  t0=$(now_ms)
  deadline=$((t0 + $4 * 1000))
  while [ "$(field "$1" "$2")" != "$3" ]; do
    if [ "$(now_ms)" -gt "$deadline" ]; then
      log "backend $1: $2 is not $3 after $4 s"
      return 1
    fi
    sleep 0.01
  done
  echo $(($(now_ms) - t0))
}

# start_cluster N [--replicas]: sets CL (its directory) and S<i>_PORT / S<i>_PID.
start_cluster() {
  CL=$(mktemp -d /tmp/sluice-bench-cluster.XXXXXX)
  CLUSTERS+=("$CL")
  local opts=()
  [ -n "${2:-}" ] && opts+=("$2")
  eval "$(scripts/mariadb-cluster.sh start "${opts[@]}" "$CL" "$1")"
}

load() { # load SECONDS JSON
  "$BIN_DIR/sluice-load" -t "127.0.0.1:$SLUICE_PORT" -u app -p app -d app -m trx \
    --active "$CLIENTS" --duration "$1" --json "$2" >"$2.txt" 2>&1 || true
}

RESULTS=$WORK/results.txt
: >"$RESULTS"
result() { echo "$*" >>"$RESULTS"; log "$*"; }

stats() { # stats NAME VALUES...: min / median / max
  python3 - "$@" <<'PY'
import sys, statistics
name, vals = sys.argv[1], [int(v) for v in sys.argv[2:]]
print(f"{name} n={len(vals)} min={min(vals)} median={int(statistics.median(vals))} max={max(vals)} ms")
PY
}

needs_peers=0
for s in $SCENARIOS; do
  case $s in detect-kill | detect-stop | kill-load | rolling | drain-mixed) needs_peers=1 ;; promote) ;;
    *) log "unknown scenario $s"; exit 2 ;;
  esac
done

if [ $needs_peers = 1 ]; then
  start_cluster 3
  PEERS=("127.0.0.1:$S0_PORT" "127.0.0.1:$S1_PORT" "127.0.0.1:$S2_PORT")
  for a in "${PEERS[@]}"; do
    # The load's table on every peer (they are independent servers here).
    "$BIN_DIR/sluice-load" -t "$a" -u app -p app -d app -m select --prepare-table --active 1 \
      --duration 1 >/dev/null 2>&1
  done
  body=""
  for a in "${PEERS[@]}"; do body+=$'[[backends]]\naddress = "'"$a"$'"\n'; done
  start_sluice "$body"
  VICTIM=${PEERS[2]}
  for s in $SCENARIOS; do
    case $s in
      detect-kill | detect-stop)
        times=()
        for _ in $(seq 1 "$REPEAT"); do
          wait_field "$VICTIM" state up 30 >/dev/null
          if [ "$s" = detect-kill ]; then
            scripts/mariadb-cluster.sh kill "$CL" 2 >/dev/null 2>&1
          else
            kill -STOP "$S2_PID"
          fi
          times+=("$(wait_field "$VICTIM" state down 10)")
          if [ "$s" = detect-kill ]; then
            eval "$(scripts/mariadb-cluster.sh restart "$CL" 2 2>/dev/null)"
          else
            kill -CONT "$S2_PID"
          fi
        done
        result "$(stats "$s" "${times[@]}") (signal to 'down' in BACKENDS, 10 ms polling)"
        ;;
      kill-load)
        wait_field "$VICTIM" state up 30 >/dev/null
        load "$LOAD_SECONDS" "$WORK/kill-load.json" &
        lp=$!
        sleep $((LOAD_SECONDS / 3))
        scripts/mariadb-cluster.sh kill "$CL" 2 >/dev/null 2>&1
        wait "$lp"
        eval "$(scripts/mariadb-cluster.sh restart "$CL" 2 2>/dev/null)"
        result "kill-load: $(json_get "$WORK/kill-load.json" "f\"{r['run']['ok']} ok, {r['run']['failed']} failed, errors {r['errors_total']} {dict(r['errors'])}\"")"
        ;;
      rolling)
        wait_field "$VICTIM" state up 30 >/dev/null
        load "$LOAD_SECONDS" "$WORK/rolling.json" &
        lp=$!
        sleep 3
        drains=()
        for i in 0 1 2; do
          a=${PEERS[$i]}
          ctl BACKEND DRAIN "$a" >/dev/null
          drains+=("$(wait_field "$a" in_use 0 30)")
          eval "$(scripts/mariadb-cluster.sh restart "$CL" "$i" 2>/dev/null)"
          ctl BACKEND UNDRAIN "$a" >/dev/null
          wait_field "$a" state up 30 >/dev/null
          sleep 2
        done
        wait "$lp"
        result "rolling: $(json_get "$WORK/rolling.json" "f\"{r['run']['ok']} ok, {r['run']['failed']} failed, errors {r['errors_total']} {dict(r['errors'])}\""); $(stats drain "${drains[@]}")"
        ;;
      drain-mixed)
        wait_field "$VICTIM" state up 30 >/dev/null
        "$BIN_DIR/sluice-load" -t "127.0.0.1:$SLUICE_PORT" -u app -p app -d app -m trx \
          --active "$CLIENTS" --idle "$IDLE" --duration "$LOAD_SECONDS" \
          --json "$WORK/mixed-trx.json" >"$WORK/mixed-trx.txt" 2>&1 &
        lt=$!
        "$BIN_DIR/sluice-load" -t "127.0.0.1:$SLUICE_PORT" -u sess -p sess -d app -m select \
          --active "$SESSION_CLIENTS" --duration "$LOAD_SECONDS" \
          --json "$WORK/mixed-sess.json" >"$WORK/mixed-sess.txt" 2>&1 &
        ls_=$!
        # Once the idle clients are in and both loads run (idle clients log in first).
        for _ in $(seq 1 600); do
          n=$(ctl STATS 2>/dev/null | python3 -c "import json,sys; print(sum(s.get('clients',0) for s in json.load(sys.stdin)))" 2>/dev/null || echo 0)
          [ "${n:-0}" -ge $((IDLE + CLIENTS + SESSION_CLIENTS)) ] && break
          sleep 0.1
        done
        sleep 2
        on_victim=$(field "$VICTIM" in_use)
        ctl BACKEND DRAIN "$VICTIM" TIMEOUT 10000 >/dev/null
        took=$(wait_field "$VICTIM" state drained 60 || echo "not drained in 60 s")
        wait "$lt" "$ls_" || true
        ctl BACKEND UNDRAIN "$VICTIM" >/dev/null
        stat() { ctl STATS | python3 -c "import json,sys; print(sum(sum(v) if isinstance(v, list) else v for v in (s.get('$1', 0) for s in json.load(sys.stdin))))"; }
        moves=$(stat session_moves)
        closes=$(stat drain_closes)
        result "drain-mixed: ${n:-?} clients connected ($IDLE idle, $CLIENTS transaction-mode active, $SESSION_CLIENTS session-mode active), $on_victim backend connections in use on the drained one; drained in $took ms; session-mode moves ${moves:-?}, drain closes ${closes:-?}; transaction load: $(json_get "$WORK/mixed-trx.json" "f\"{r['run']['ok']} ok, {r['run']['failed']} failed, errors {r['errors_total']} {dict(r['errors'])}\""); session-mode load: $(json_get "$WORK/mixed-sess.json" "f\"{r['run']['ok']} ok, {r['run']['failed']} failed, errors {r['errors_total']} {dict(r['errors'])}\"")"
        ;;
    esac
  done
  stop_sluice
fi

if [[ " $SCENARIOS " == *" promote "* ]]; then
  start_cluster 2 --replicas
  P="127.0.0.1:$S0_PORT"
  R="127.0.0.1:$S1_PORT"
  start_sluice $'[[backends]]\naddress = "'"$P"$'"\nrole = "primary"\n[[backends]]\naddress = "'"$R"$'"\nrole = "replica"\n'
  mariadb -h127.0.0.1 -P"$SLUICE_PORT" -uapp -papp app -e "CREATE TABLE ledger (k INT PRIMARY KEY)"
  wait_field "$R" writable False 30 >/dev/null
  scripts/mariadb-cluster.sh kill "$CL" 0 >/dev/null 2>&1
  wait_field "$P" state down 10 >/dev/null
  t0=$(now_ms)
  scripts/mariadb-cluster.sh promote "$CL" 1 >/dev/null 2>&1
  promoted=$(($(now_ms) - t0))
  # A write queued in sluice (no writable backend) runs as soon as sluice sees the promotion.
  mariadb -h127.0.0.1 -P"$SLUICE_PORT" -uapp -papp app -e "INSERT INTO ledger VALUES (1)"
  resumed=$(($(now_ms) - t0))
  result "promote: promotion took ${promoted} ms (script); a write through sluice succeeded ${resumed} ms after the promotion began ($((resumed - promoted)) ms after it ended)"
  stop_sluice
fi

echo "# $(bench_meta "$COMMAND")"
cat "$RESULTS"
python3 - "$RESULTS" "$(bench_meta "$COMMAND")" >"$OUT_DIR/backends.json" <<'PY'
import json, sys
print(json.dumps({"meta": json.loads(sys.argv[2]), "results": open(sys.argv[1]).read().splitlines()}, indent=1))
PY
