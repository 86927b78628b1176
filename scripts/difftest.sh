#!/usr/bin/env bash
# The long differential run (hours; not part of CI): generated client sessions against a private,
# production-like MariaDB directly and through sluice in each pool mode (session, transaction,
# statement) with a pool much smaller than the client count, compared response by response, seed
# after seed until the time is up. The short seeded run is in the test suite
# (difftest/tests/short.rs); difftest/README.md explains the tester.
#
#   scripts/difftest.sh [SECONDS]    run for SECONDS (default 3600); 0 = one seed only
#
# Environment:
#   DIFFTEST_SESSIONS     sessions per seed (default 32)
#   DIFFTEST_STEPS        commands per session (default 150)
#   DIFFTEST_CONCURRENCY  sessions at a time (default 32)
#   DIFFTEST_POOL_SIZE    sluice pool.size (default 4)
#   DIFFTEST_SEED         first seed (default: from the clock); then +1 per run
#   DIFFTEST_OUT          output directory (default target/difftest/long-<date>)
#   DIFFTEST_KEEP         full reports kept for this many runs with differences (default 20);
#                         later runs only add to the summary
#   DIFFTEST_RELEASE=1    build and run release binaries (default: debug, as the test suite)
#   DIFFTEST_REPLICAS=N   a primary with N GTID replicas (scripts/mariadb-cluster.sh) instead of
#                         one server, and sluice routing plain reads to the replicas with
#                         session consistency (read-your-writes); direct sessions use the primary
#
# Writes DIFFTEST_OUT/summary.json (runs, sessions, statements, differences and sessions stopped
# early per mode, kinds of difference with counts and an example seed/session each, sluice
# crashes), runs.jsonl (one line per seed), seed-N.txt/json (reproducers) and the sluice logs.
# Exit status 0 when no run found a difference and nothing crashed, else 1.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib/deps.sh
. scripts/lib/deps.sh

DURATION=${1:-3600}
SESSIONS=${DIFFTEST_SESSIONS:-32}
STEPS=${DIFFTEST_STEPS:-150}
CONCURRENCY=${DIFFTEST_CONCURRENCY:-32}
POOL_SIZE=${DIFFTEST_POOL_SIZE:-4}
SEED=${DIFFTEST_SEED:-$(date +%s)}
KEEP=${DIFFTEST_KEEP:-20}
OUT=${DIFFTEST_OUT:-$ROOT/target/difftest/long-$(date +%Y%m%d-%H%M%S)}
MODES=(session transaction statement)

log() { echo "difftest.sh: $*" >&2; }

ensure_rust
ensure_mariadb
command -v python3 >/dev/null 2>&1 || apt_install python3

PROFILE_DIR=debug
BUILD_ARGS=()
if [ "${DIFFTEST_RELEASE:-0}" = 1 ]; then PROFILE_DIR=release; BUILD_ARGS=(--release); fi
log "building sluice and sluice-difftest ($PROFILE_DIR)"
cargo build "${BUILD_ARGS[@]}" -p sluice -p sluice-difftest --quiet
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
SLUICE=$TARGET_DIR/$PROFILE_DIR/sluice
DIFFTEST=$TARGET_DIR/$PROFILE_DIR/sluice-difftest

mkdir -p "$OUT"
MARIADB_DIR=$(mktemp -d /tmp/sluice-mariadb.XXXXXX)
declare -A SLUICE_PID=() SLUICE_PORT=()

REPLICAS=${DIFFTEST_REPLICAS:-0}
REPLICA_ARGS=()
cleanup() {
  local m
  for m in "${!SLUICE_PID[@]}"; do stop_sluice "$m"; done
  if [ "$REPLICAS" -gt 0 ]; then
    scripts/mariadb-cluster.sh stop "$MARIADB_DIR" >/dev/null 2>&1 || true
  else
    scripts/mariadb.sh stop "$MARIADB_DIR" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

stop_sluice() {
  local m=$1 pid=${SLUICE_PID[$1]:-}
  [ -n "$pid" ] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  unset "SLUICE_PID[$m]"
}

start_sluice() {
  local m=$1 port
  port=$(free_port)
  cat > "$OUT/sluice-$m.toml" <<EOF
listen = "127.0.0.1:$port"
shards = 2
auth_failure_delay_ms = 100
shutdown_timeout_ms = 3000

[pool]
mode = "$m"
size = $POOL_SIZE
# Clients far outnumber the pool: they queue (bounded) instead of failing, and pinned sessions
# wait for a slot instead of getting ERR 9003, a configured refusal rather than a difference.
queue_timeout_ms = 120000
pin_budget = $POOL_SIZE
pin_overflow = "wait"

$BACKENDS_TOML

[[users]]
name = "app"
password = "app"
backend_user = "app"
backend_password = "app"
EOF
  "$SLUICE" --config "$OUT/sluice-$m.toml" >>"$OUT/sluice-$m.log" 2>&1 &
  SLUICE_PID[$m]=$!
  SLUICE_PORT[$m]=$port
  local _
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    kill -0 "${SLUICE_PID[$m]}" 2>/dev/null || break
    sleep 0.1
  done
  log "sluice ($m) did not start; last log lines:"; tail -n 20 "$OUT/sluice-$m.log" >&2
  return 1
}

# The server's temporary files in its own directory: a shared /tmp that something else cleans
# makes internal temporary tables vanish (ERROR 6 "Error on delete of '/tmp/#sql-temptable…'"),
# which would show up as differences of the server with itself.
mkdir -p "$MARIADB_DIR/tmp"
if [ "$REPLICAS" -gt 0 ]; then
  eval "$(MARIADB_EXTRA_ARGS="--tmpdir=$MARIADB_DIR/tmp ${MARIADB_EXTRA_ARGS:-}" \
    scripts/mariadb-cluster.sh start --replicas "$MARIADB_DIR" $((REPLICAS + 1)))"
  MARIADB_PORT=$S0_PORT
  BACKENDS_TOML=$(printf '[[backends]]\naddress = "127.0.0.1:%s"\nrole = "primary"\n' "$S0_PORT")
  for ((i = 1; i <= REPLICAS; i++)); do
    port_var="S${i}_PORT"
    BACKENDS_TOML+=$(printf '\n[[backends]]\naddress = "127.0.0.1:%s"\nrole = "replica"\n' "${!port_var}")
    # The tester waits for the replicas to apply each run's fixtures (written by other
    # connections than the sessions': not their own writes).
    REPLICA_ARGS+=(--replica "127.0.0.1:${!port_var}")
  done
  BACKENDS_TOML+=$'\n[routing]\nreads = "replicas"\nconsistency = "session"\nmax_replication_lag_ms = 60000\n'
  log "MariaDB primary on 127.0.0.1:$MARIADB_PORT with $REPLICAS replicas (reads routed to them); output in $OUT"
else
  eval "$(MARIADB_EXTRA_ARGS="--tmpdir=$MARIADB_DIR/tmp ${MARIADB_EXTRA_ARGS:-}" scripts/mariadb.sh start "$MARIADB_DIR")"
  BACKENDS_TOML=$(printf '[[backends]]\naddress = "127.0.0.1:%s"\n' "$MARIADB_PORT")
  log "MariaDB on 127.0.0.1:$MARIADB_PORT (production profile); output in $OUT"
fi
for m in "${MODES[@]}"; do start_sluice "$m"; done

: > "$OUT/runs.jsonl"
: > "$OUT/crashes.txt"
started=$SECONDS
end=$((SECONDS + DURATION))
runs=0 kept=0 status=0
while :; do
  proxies=()
  for m in "${MODES[@]}"; do proxies+=(--proxy "$m=127.0.0.1:${SLUICE_PORT[$m]}"); done
  # Each run is bounded too: sessions not started by the end (plus ten minutes, room for a
  # stalled pool's queue timeouts) are not played.
  left=$(( end - SECONDS )); [ "$left" -lt 0 ] && left=0
  rc=0
  "$DIFFTEST" --direct "127.0.0.1:$MARIADB_PORT" "${proxies[@]}" "${REPLICA_ARGS[@]}" --self-check \
    --seed "$SEED" --sessions "$SESSIONS" --steps "$STEPS" --concurrency "$CONCURRENCY" \
    --schema-prefix dtlong --deadline-secs "$((left + 600))" --json "$OUT/seed-$SEED.json" -q \
    > "$OUT/seed-$SEED.txt" 2> "$OUT/seed-$SEED.err" || rc=$?
  runs=$((runs + 1))
  python3 - "$OUT/seed-$SEED.json" "$SEED" "$rc" >> "$OUT/runs.jsonl" <<'PY'
import json, sys
path, seed, rc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
try:
    s = json.load(open(path))
except (OSError, ValueError):
    s = {}
kinds = {}
for d in s.get("details", []):
    k = kinds.setdefault(d["kind"], {"count": {}, "example": {"seed": seed, "session": d["session"], "step": d["step"], "mode": d["mode"]}})
    k["count"][d["mode"]] = k["count"].get(d["mode"], 0) + 1
print(json.dumps({"seed": seed, "rc": rc, "sessions": s.get("sessions", 0),
                  "statements": s.get("statements", {}), "differences": s.get("differences", {}),
                  "stopped": s.get("stopped", {}),
                  "direct_stopped": s.get("direct_stopped", 0), "duration_secs": s.get("duration_secs", 0),
                  "kinds": kinds}))
PY
  case $rc in
    0) rm -f "$OUT/seed-$SEED.txt" "$OUT/seed-$SEED.json" "$OUT/seed-$SEED.err" ;;
    1) status=1
       if [ "$kept" -lt "$KEEP" ]; then kept=$((kept + 1))
       else rm -f "$OUT/seed-$SEED.txt" "$OUT/seed-$SEED.json"; fi
       log "seed $SEED: differences (runs so far: $runs)" ;;
    *) status=1; log "seed $SEED: the run failed (exit $rc): $(tail -n 3 "$OUT/seed-$SEED.err")" ;;
  esac
  # A sluice that died is a finding of its own: record it, keep its log, start it again.
  for m in "${MODES[@]}"; do
    if ! kill -0 "${SLUICE_PID[$m]}" 2>/dev/null; then
      status=1
      echo "seed $SEED: sluice ($m) exited; log: sluice-$m.crash-$SEED.log" >> "$OUT/crashes.txt"
      cp "$OUT/sluice-$m.log" "$OUT/sluice-$m.crash-$SEED.log"
      log "sluice ($m) exited during seed $SEED; restarting it"
      stop_sluice "$m"; start_sluice "$m"
    fi
  done
  SEED=$((SEED + 1))
  [ "$DURATION" -gt 0 ] && [ "$SECONDS" -lt "$end" ] || break
done

python3 - "$OUT" "$((SECONDS - started))" "$POOL_SIZE" "$CONCURRENCY" "$STEPS" > "$OUT/summary.json" <<'PY'
import json, sys
out, secs, pool, conc, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
runs = [json.loads(l) for l in open(f"{out}/runs.jsonl") if l.strip()]
def add(total, d):
    for k, v in d.items():
        total[k] = total.get(k, 0) + v
statements, differences, stopped, kinds = {}, {}, {}, {}
for r in runs:
    add(statements, r["statements"]); add(differences, r["differences"]); add(stopped, r["stopped"])
    for k, v in r["kinds"].items():
        e = kinds.setdefault(k, {"count": {}, "example": v["example"]})
        add(e["count"], v["count"])
crashes = [l.strip() for l in open(f"{out}/crashes.txt") if l.strip()]
print(json.dumps({
    "duration_secs": secs, "runs": len(runs), "seeds": [r["seed"] for r in runs],
    "sessions": sum(r["sessions"] for r in runs), "steps_per_session": steps,
    "concurrency": conc, "pool_size": pool, "modes": ["self-check", "session", "transaction", "statement"],
    "statements": statements, "differences": differences, "sessions_stopped_early": stopped,
    "runs_with_differences": [r["seed"] for r in runs if r["rc"] == 1],
    "failed_runs": [r["seed"] for r in runs if r["rc"] not in (0, 1)],
    "direct_stopped": sum(r["direct_stopped"] for r in runs),
    "kinds": dict(sorted(kinds.items(), key=lambda kv: -sum(kv[1]["count"].values()))),
    "sluice_crashes": crashes,
}, indent=2))
PY
python3 - "$OUT/summary.json" <<'PY' >&2
import json, sys
s = json.load(open(sys.argv[1]))
print(f"difftest.sh: {s['runs']} run(s) in {s['duration_secs']} s, {s['sessions']} sessions; "
      f"steps played {s['statements']}; sessions with differences {s['differences']}; "
      f"{len(s['kinds'])} kind(s) of difference; {len(s['sluice_crashes'])} sluice crash(es)")
PY
log "summary: $OUT/summary.json"
exit "$status"
