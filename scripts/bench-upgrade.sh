#!/usr/bin/env bash
# Upgrade and reload under load (issue 12's targets; README "Upgrading without dropping
# clients"): IDLE idle clients and ACTIVE active clients (sluice-load point selects, closed loop)
# on a sluice of WORKERS worker processes. Three active runs of RUN_SECONDS each, side by side on
# the same sluice and clients' server: one steady; one with a reload at its middle (the file
# changed — a user added, a timeout and the backend's weight changed — then SIGHUP to the
# supervisor, which every worker applies); one with `SIGUSR2` to the supervisor at its middle (the
# workers are upgraded one at a time to the binary at the same path). Reports:
#   - errors seen by the active clients of each run and by the idle clients (which check every
#     second that their connections are still open): target 0, no client reconnects;
#   - active p50/p99 of the reload and upgrade runs against the steady run (target p99 <= 3x);
#   - the reload's report, and that the user it added logs in;
#   - the handover: from the signal to the supervisor's "every worker upgraded", and what moved.
#
# Environment: IDLE (20000), ACTIVE (200), RUN_SECONDS (20), WORKERS (2), POOL (32), BIN_DIR (binaries
# to use instead of building release ones), OUT_DIR (default target/bench). Writes
# OUT_DIR/upgrade.json and prints a summary.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
. scripts/lib/deps.sh
. scripts/lib/bench.sh
IDLE=${IDLE:-20000}
ACTIVE=${ACTIVE:-200}
SECONDS_RUN=${RUN_SECONDS:-20}
WORKERS=${WORKERS:-2}
POOL=${POOL:-32}
OUT_DIR=${OUT_DIR:-$ROOT/target/bench}
COMMAND="IDLE=$IDLE ACTIVE=$ACTIVE RUN_SECONDS=$SECONDS_RUN WORKERS=$WORKERS POOL=$POOL scripts/bench-upgrade.sh"
log() { echo "bench-upgrade: $*" >&2; }

ensure_rust
ensure_mariadb
release_bins
mkdir -p "$OUT_DIR"
WORK=$(mktemp -d /tmp/sluice-bench-upgrade.XXXXXX)
DB="$WORK/db"
cleanup() {
  stop_tracked
  scripts/mariadb.sh stop "$DB" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
now_ms() { date +%s%3N; }

eval "$(scripts/mariadb.sh start "$DB")"
log "MariaDB on 127.0.0.1:$MARIADB_PORT"
"$BIN_DIR/sluice-load" -t "127.0.0.1:$MARIADB_PORT" -m select --prepare-table --table-size 10000 \
  --active 1 --duration 0.5 -q >/dev/null

PORT=$(free_port)
cat >"$WORK/sluice.toml" <<TOML
listen = "127.0.0.1:$PORT"
shards = 1
workers = $WORKERS
shutdown_timeout_ms = 20000
[pool]
mode = "transaction"
size = $POOL
queue_timeout_ms = 10000
[[backends]]
address = "127.0.0.1:$MARIADB_PORT"
[[users]]
name = "app"
password = "app"
backend_user = "app"
backend_password = "app"
TOML
"$BIN_DIR/sluice" -c "$WORK/sluice.toml" --log-level info 2>"$WORK/sluice.log" &
SUP=$!
bg_track "$SUP" sluice
wait_listening "$SUP" "$PORT" 30
log "sluice (supervisor $SUP, $WORKERS workers) on 127.0.0.1:$PORT"

# The idle clients, held through both runs, checked every second for a close from sluice's side.
HOLD=$((3 * SECONDS_RUN + 50))
"$BIN_DIR/sluice-load" -t "127.0.0.1:$PORT" -m idle -n "$IDLE" --hold "$HOLD" --idle-check 1 \
  --src-base 127.20.0.1 --json "$WORK/idle.json" -q >"$WORK/idle.txt" 2>&1 &
IDLE_PID=$!
bg_track "$IDLE_PID" idle-load
for _ in $(seq 1 1200); do
  # (One answer per worker, a JSON list of its shards each.)
  n=$("$BIN_DIR/sluice" ctl --pid "$SUP" STATS 2>/dev/null |
    python3 -c "import json,sys; print(sum(s.get('clients',0) for l in sys.stdin if l.strip().startswith('[') for s in json.loads(l)))" 2>/dev/null || echo 0)
  [ "${n:-0}" -ge "$IDLE" ] && break
  sleep 0.1
done
log "${n:-?} idle clients connected"

active() { # active N NAME: one active run of SECONDS_RUN from source addresses 127.30.N.x, report NAME.json
  "$BIN_DIR/sluice-load" -t "127.0.0.1:$PORT" -m select --active "$ACTIVE" \
    --duration "$SECONDS_RUN" --src-base "127.30.$1.1" --json "$WORK/$2.json" -q >"$WORK/$2.txt" 2>&1 || true
}
log "steady run: $ACTIVE active clients for ${SECONDS_RUN}s"
active 1 steady
log "run with a reload: the file changed and SIGHUP to the supervisor after $((SECONDS_RUN / 2))s"
active 3 reload &
LOAD=$!
sleep $((SECONDS_RUN / 2))
RELOADS_BEFORE=$(grep -c "configuration reloaded" "$WORK/sluice.log" || true)
python3 - "$WORK/sluice.toml" <<'PY'
import sys
p = sys.argv[1]
s = open(p).read()
s = s.replace("queue_timeout_ms = 10000", "queue_timeout_ms = 9000")
s = s.replace('address = "127.0.0.1:', 'weight = 2\naddress = "127.0.0.1:', 1)
s += '[[users]]\nname = "added"\npassword = "added"\nbackend_user = "app"\nbackend_password = "app"\n'
open(p, "w").write(s)
PY
kill -HUP "$SUP"
RELOADED=""
for _ in $(seq 1 200); do
  n=$(grep -c "configuration reloaded" "$WORK/sluice.log" || true)
  if [ "$n" -ge $((RELOADS_BEFORE + WORKERS)) ]; then RELOADED=yes; break; fi
  sleep 0.05
done
wait "$LOAD" || true
grep "configuration reloaded" "$WORK/sluice.log" | tail -n "$WORKERS" | sed 's/\x1b\[[0-9;]*m//g' >"$WORK/reload.txt" || true
ADDED_USER=no
if mariadb --no-defaults -h127.0.0.1 -P"$PORT" -uadded -padded -N -e "SELECT 1" >/dev/null 2>&1; then
  ADDED_USER=yes
fi
log "reload applied by every worker: ${RELOADED:-no}; the added user logs in: $ADDED_USER"

log "run with the upgrade: SIGUSR2 to the supervisor after $((SECONDS_RUN / 2))s"
active 2 upgrade &
LOAD=$!
sleep $((SECONDS_RUN / 2))
T0=$(now_ms)
kill -USR2 "$SUP"
HANDOVER=""
for _ in $(seq 1 1200); do
  if grep -q "every worker upgraded" "$WORK/sluice.log"; then
    HANDOVER=$(($(now_ms) - T0))
    break
  fi
  if grep -q "upgrade stopped" "$WORK/sluice.log"; then
    HANDOVER="failed: $(grep "upgrade stopped" "$WORK/sluice.log" | tail -1)"
    break
  fi
  sleep 0.05
done
wait "$LOAD" || true
wait "$IDLE_PID" || true
# What each worker's handover said (sessions moved, how long; what stayed and why).
grep -E "upgrade: (every session moved|deadline|sessions that cannot move)|worker upgraded" \
  "$WORK/sluice.log" | sed 's/\x1b\[[0-9;]*m//g' >"$WORK/handover.txt" || true

python3 - "$WORK" "$OUT_DIR/upgrade.json" "$COMMAND" "${HANDOVER:-not seen in 60 s}" "${RELOADED:-no}" "$ADDED_USER" <<'PY'
import json, sys
work, out, command, handover, reloaded, added_user = sys.argv[1:7]
def load(name):
    try:
        return json.load(open(f"{work}/{name}.json"))
    except Exception as e:
        return {"error": str(e)}
steady, reload, upgrade, idle = load("steady"), load("reload"), load("upgrade"), load("idle")
def lat(r, q):
    try:
        return r["run"]["latency_us"][q]
    except Exception:
        return None
def errs(r):
    return r.get("errors_total"), r.get("errors")
report = {
    "command": command,
    "handover_ms": handover,
    "handover_log": [l.strip() for l in open(f"{work}/handover.txt")],
    "steady": {"errors": errs(steady), "p50_us": lat(steady, "p50"), "p99_us": lat(steady, "p99"),
               "ok": steady.get("run", {}).get("ok"), "reconnects": steady.get("run", {}).get("reconnects")},
    "reload": {"errors": errs(reload), "p50_us": lat(reload, "p50"), "p99_us": lat(reload, "p99"),
               "ok": reload.get("run", {}).get("ok"), "reconnects": reload.get("run", {}).get("reconnects"),
               "applied_by_every_worker": reloaded == "yes", "added_user_logs_in": added_user == "yes",
               "log": [l.strip() for l in open(f"{work}/reload.txt")]},
    "upgrade": {"errors": errs(upgrade), "p50_us": lat(upgrade, "p50"), "p99_us": lat(upgrade, "p99"),
                "ok": upgrade.get("run", {}).get("ok"), "reconnects": upgrade.get("run", {}).get("reconnects")},
    "idle": {"errors": errs(idle),
             "summary": [l.strip() for l in open(f"{work}/idle.txt") if "established" in l or "held" in l]},
}
s99, u99 = report["steady"]["p99_us"], report["upgrade"]["p99_us"]
report["p99_ratio"] = (u99 / s99) if (s99 and u99) else None
r99 = report["reload"]["p99_us"]
report["reload_p99_ratio"] = (r99 / s99) if (s99 and r99) else None
json.dump(report, open(out, "w"), indent=1)
print(json.dumps(report, indent=1))
PY
