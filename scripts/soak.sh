#!/usr/bin/env bash
# Soak: runs sluice for SOAK_MINUTES under churn against a private MariaDB and judges whether
# it leaks. Not part of CI (30 minutes by default).
#
#   scripts/soak.sh                      30 minutes, release build
#   SOAK_MINUTES=3 scripts/soak.sh       a short run (proves the script; not a soak)
#
# The churn, all at once for the whole run:
#   - sluice-load storm: loops that connect, log in, run one SELECT and quit (COM_QUIT);
#   - sluice-load select: point selects at a steady rate beside a set of idle clients;
#   - scripts/soak_churn.py: short client lives with binary prepared statements (some left open
#     at disconnect), provoked errors, pinning session state (user variables, temporary tables,
#     SQL PREPARE, transactions), KILL by SQL and by the admin console, dropped sockets;
#   - reloads: the console's RELOAD at 1/4 and 3/4 of the run, SIGHUP at 1/2;
#   - an upgrade in place at SOAK_UPGRADE_AT of the run (5/8 by default; SIGUSR2: the binary at the same path takes the clients over;
#     the old process stops): from then on the successor is the one sampled and judged.
# Every SOAK_SAMPLE_SECONDS (default 5) sluice's RSS and open descriptors go to
# OUT/samples.csv. At the end the churn stops, the clients leave, idle pooled connections
# close (pool.idle_timeout_ms is 5 s here), and the script judges:
#   - RSS growth per hour of the process that ran last (the successor of the upgrade), after
#     its warm-up (the first fifth of its samples' span, at most 5 minutes): the least-squares
#     slope of RSS over the later samples, against the RSS at warm-up's end; target <= 1 %/h;
#   - descriptors leaked: open when quiet at the end minus open when quiet before the churn
#     (same pool state: the health probe's connection only; the successor holds the same
#     listeners, console and admin sockets as its predecessor); target 0.
# Each is printed as met or missed; OUT/summary.json has the numbers, OUT/soak.svg the picture
# (sluice-plot soak). Clients whose state lived on their backend at the upgrade (pins,
# transactions) end with the old process, told why: counted as ended_by_upgrade, not errors.
#
# Environment: SOAK_MINUTES (30), SOAK_SAMPLE_SECONDS (5), SOAK_PROFILE (release; "dev" reuses
# a debug build), SOAK_OUT (target/soak), SOAK_IDLE (idle clients, 500), SOAK_RATE (selects/s,
# 200), SOAK_STORM (storm loops, 4, at SOAK_STORM_RATE connects/s in all, 40), SOAK_UPGRADE_AT
# (the fraction of the run at which the upgrade happens, 0.625: a long run that judges RSS wants it
# early, e.g. 0.1, so the successor it judges runs for most of the time).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib/deps.sh
. scripts/lib/deps.sh

MINUTES=${SOAK_MINUTES:-30}
SAMPLE=${SOAK_SAMPLE_SECONDS:-5}
PROFILE=${SOAK_PROFILE:-release}
OUT=${SOAK_OUT:-$ROOT/target/soak}
IDLE=${SOAK_IDLE:-500}
RATE=${SOAK_RATE:-200}
STORM=${SOAK_STORM:-4}
STORM_RATE=${SOAK_STORM_RATE:-40}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
case "$PROFILE" in dev) BIN=$TARGET/debug ;; *) BIN=$TARGET/$PROFILE ;; esac
SECONDS_TOTAL=$(python3 -c "print(int(float('$MINUTES') * 60))")
WARMUP=$(( SECONDS_TOTAL / 5 < 300 ? SECONDS_TOTAL / 5 : 300 ))

log() { echo "soak: $*" >&2; }

ensure_rust
ensure_mariadb
ensure_python_drivers
mkdir -p "$OUT"
rm -f "$OUT"/samples.csv "$OUT"/summary.json "$OUT"/*.log "$OUT"/*.json

log "building sluice and sluice-load ($PROFILE)"
cargo build --profile "$PROFILE" -p sluice -p sluice-load --bin sluice --bin sluice-load --bin sluice-plot

MARIADB_DIR=$(mktemp -d /tmp/sluice-mariadb.XXXXXX)
SLUICE_PID=
CHURN_PIDS=()
cleanup() {
  for p in "${CHURN_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "$SLUICE_PID" ] && kill -0 "$SLUICE_PID" 2>/dev/null; then
    kill -TERM "$SLUICE_PID" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$SLUICE_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SLUICE_PID" 2>/dev/null || true
  fi
  scripts/mariadb.sh stop "$MARIADB_DIR" || true
}
trap cleanup EXIT INT TERM
eval "$(MARIADB_EXTRA_ARGS=--max-connections=1000 scripts/mariadb.sh start "$MARIADB_DIR")"
log "MariaDB on 127.0.0.1:$MARIADB_PORT"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
PORT=$(free_port)
CONSOLE=$(free_port)
cat > "$OUT/sluice.toml" <<EOF
listen = "127.0.0.1:$PORT"
shards = 2
log_level = "info"
metrics_listen = ""
shutdown_timeout_ms = 5000
[pool]
mode = "transaction"
size = 32
queue_timeout_ms = 5000
idle_timeout_ms = 5000
[[backends]]
address = "127.0.0.1:$MARIADB_PORT"
[health]
user = "app"
password = "app"
[admin]
listen = "127.0.0.1:$CONSOLE"
[[admin.users]]
name = "admin"
password = "admin"
[[users]]
name = "app"
password = "app"
backend_user = "app"
backend_password = "app"
EOF

"$BIN/sluice" --config "$OUT/sluice.toml" 2>"$OUT/sluice.log" &
SLUICE_PID=$!
console() {
  mariadb --no-defaults -h127.0.0.1 -P"$CONSOLE" -uadmin -padmin --batch -e "$1"
}
for _ in $(seq 1 200); do
  if mariadb --no-defaults -h127.0.0.1 -P"$PORT" -uapp -papp app -e 'SELECT 1' >/dev/null 2>&1; then break; fi
  kill -0 "$SLUICE_PID" 2>/dev/null || { log "sluice exited at start:"; tail -n 20 "$OUT/sluice.log" >&2; exit 1; }
  sleep 0.1
done
log "sluice (pid $SLUICE_PID) on 127.0.0.1:$PORT, console on $CONSOLE"

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$SLUICE_PID/status"; }
fds() { find "/proc/$SLUICE_PID/fd" -mindepth 1 -maxdepth 1 | wc -l; }
# Descriptors once the pool holds no idle connection and no client is left: waits (90 s at
# most) until the count has not changed for 8 s, longer than pool.idle_timeout_ms (5 s) plus
# the janitor's second.
quiet_fds() {
  local last=-1 same=0 now
  for _ in $(seq 1 90); do
    now=$(fds)
    if [ "$now" = "$last" ]; then same=$((same + 1)); else same=0; fi
    [ "$same" -ge 8 ] && break
    last=$now
    sleep 1
  done
  echo "$now"
}

# The churn's table, and one client life so every lazy start-up allocation is made.
"$BIN/sluice-load" -t "127.0.0.1:$PORT" -m select --prepare-table --table-size 1000 --active 1 \
  --duration 1 --quiet --no-source-bind >/dev/null
FDS_BEFORE=$(quiet_fds)
log "quiet before the churn: $FDS_BEFORE descriptors, RSS $(rss_kib) KiB"

START=$(date +%s)
echo "seconds,rss_kib,fds,phase" > "$OUT/samples.csv"
"$BIN/sluice-load" -t "127.0.0.1:$PORT" -m storm -w "$STORM" --rate "$STORM_RATE" \
  --duration "$SECONDS_TOTAL" --src-base 127.2.0.1 --quiet --json "$OUT/storm.json" \
  >"$OUT/storm.log" 2>&1 &
CHURN_PIDS+=($!)
"$BIN/sluice-load" -t "127.0.0.1:$PORT" -m select --active 8 --rate "$RATE" --idle "$IDLE" \
  --duration "$SECONDS_TOTAL" --src-base 127.3.0.1 --quiet --json "$OUT/select.json" \
  >"$OUT/select.log" 2>&1 &
CHURN_PIDS+=($!)
"$SLUICE_TEST_PYTHON" scripts/soak_churn.py --port "$PORT" --console-port "$CONSOLE" \
  --seconds "$SECONDS_TOTAL" --threads 4 --json "$OUT/churn.json" >"$OUT/churn.log" 2>&1 &
CHURN_PIDS+=($!)

reload1=$((SECONDS_TOTAL / 4)); reload2=$((SECONDS_TOTAL / 2)); reload3=$((SECONDS_TOTAL * 3 / 4))
upgrade_at=$(python3 -c "print(int($SECONDS_TOTAL * float('${SOAK_UPGRADE_AT:-0.625}')))")
done1='' done2='' done3='' upgraded=''
PHASE=churn
# upgrade: SIGUSR2 to sluice; waits (60 s at most) for the successor named in the log to take
# over and the old process to stop, then samples the successor.
upgrade() {
  local old=$SLUICE_PID new=""
  kill -USR2 "$old"
  for _ in $(seq 1 600); do
    new=$(sed 's/\x1b\[[0-9;]*m//g' "$OUT/sluice.log" | sed -n 's/.*upgrade: successor started pid=\([0-9]*\).*/\1/p' | tail -1)
    if [ -n "$new" ] && ! kill -0 "$old" 2>/dev/null; then
      SLUICE_PID=$new
      PHASE=successor
      log "upgraded: pid $old handed over to pid $new and stopped"
      return 0
    fi
    sleep 0.1
  done
  log "upgrade: no successor took over within 60 s (old pid $old, successor ${new:-none}); see $OUT/sluice.log"
  return 1
}
while :; do
  now=$(( $(date +%s) - START ))
  kill -0 "$SLUICE_PID" 2>/dev/null || { log "sluice died during the soak:"; tail -n 30 "$OUT/sluice.log" >&2; exit 1; }
  # Samples while the churn runs only (the generators stop by themselves at the end).
  [ "$now" -ge "$SECONDS_TOTAL" ] && break
  echo "$now,$(rss_kib),$(fds),$PHASE" >> "$OUT/samples.csv"
  if [ -z "$done1" ] && [ "$now" -ge "$reload1" ]; then done1=1; log "console RELOAD: $(console RELOAD | tail -n +2 | tr '\n' ' ')"; fi
  if [ -z "$done2" ] && [ "$now" -ge "$reload2" ]; then done2=1; kill -HUP "$SLUICE_PID"; log "SIGHUP sent"; fi
  if [ -z "$upgraded" ] && [ "$now" -ge "$upgrade_at" ]; then upgraded=1; upgrade || exit 1; fi
  if [ -z "$done3" ] && [ "$now" -ge "$reload3" ]; then done3=1; log "console RELOAD: $(console RELOAD | tail -n +2 | tr '\n' ' ')"; fi
  sleep "$SAMPLE"
done

log "churn over; waiting for the load generators"
churn_status=0
for p in "${CHURN_PIDS[@]}"; do
  # Each stops by itself at its --duration (plus its own grace); bounded here too.
  for _ in $(seq 1 600); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$p" 2>/dev/null; then log "a churn process ($p) overran; killing it"; kill "$p" || true; fi
  wait "$p" || churn_status=$((churn_status + 1))
done
CHURN_PIDS=()
FDS_AFTER=$(quiet_fds)
end=$(( $(date +%s) - START ))
echo "$end,$(rss_kib),$FDS_AFTER,quiet" >> "$OUT/samples.csv"

python3 - "$OUT" "$WARMUP" "$FDS_BEFORE" "$FDS_AFTER" "$MINUTES" "$PROFILE" <<'PY'
import csv, json, sys
out, warmup, before, after, minutes, profile = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
rows = [r for r in csv.DictReader(open(f"{out}/samples.csv")) if r["phase"] != "quiet"]
# The process that ran last (the upgrade's successor when there was one), after its warm-up.
last = rows[-1]["phase"] if rows else "churn"
mine = [r for r in rows if r["phase"] == last]
if mine and last != "churn":
    t0, t1 = float(mine[0]["seconds"]), float(mine[-1]["seconds"])
    warmup = int(t0 + min((t1 - t0) / 5, 300))
pts = [(float(r["seconds"]), float(r["rss_kib"])) for r in mine if float(r["seconds"]) >= warmup]
summary = {"minutes": float(minutes), "profile": profile, "warmup_s": warmup, "samples": len(rows),
           "judged_process": last,
           "fds_quiet_before": before, "fds_quiet_after": after, "fds_leaked": after - before}
if len(pts) >= 3:
    n = len(pts)
    mx = sum(t for t, _ in pts) / n
    my = sum(v for _, v in pts) / n
    sxx = sum((t - mx) ** 2 for t, _ in pts)
    slope = sum((t - mx) * (v - my) for t, v in pts) / sxx if sxx else 0.0  # KiB per second
    base = pts[0][1]
    summary.update({
        "rss_kib_at_warmup": base, "rss_kib_end": pts[-1][1],
        "rss_kib_min": min(v for _, v in pts), "rss_kib_max": max(v for _, v in pts),
        "rss_growth_pct_per_hour": slope * 3600 / base * 100,
    })
json.dump(summary, open(f"{out}/summary.json", "w"), indent=1)
short = " (SHORT RUN: not a soak)" if float(minutes) < 30 else ""
print(f"soak: {minutes} min of churn, {profile} build, {len(rows)} samples, warm-up {warmup} s{short}")
if "rss_growth_pct_per_hour" in summary:
    g = summary["rss_growth_pct_per_hour"]
    print(f"soak: RSS {summary['rss_kib_at_warmup']/1024:.1f} MiB after warm-up, {summary['rss_kib_end']/1024:.1f} MiB at the end "
          f"(min {summary['rss_kib_min']/1024:.1f}, max {summary['rss_kib_max']/1024:.1f}); "
          f"growth {g:+.2f} %/h (target <= 1 %/h): {'met' if g <= 1.0 else 'missed'}")
else:
    print("soak: too few samples after warm-up to judge RSS growth: missed")
leak = summary["fds_leaked"]
print(f"soak: descriptors quiet before {before}, quiet after {after}: leaked {leak} (target 0): {'met' if leak <= 0 else 'missed'}")
PY
for f in storm select; do
  python3 -c "
import json,sys
r=json.load(open('$OUT/$f.json'))
run=r.get('run') or {}
print('soak: sluice-load $f: ok', run.get('ok'), 'failed', run.get('failed'), 'connects', run.get('connects'),
      'errors', r.get('errors_total'), json.dumps(r.get('errors', {}))[:300])
" 2>/dev/null || log "sluice-load $f: no report (see $OUT/$f.log)"
done
python3 -c "
import json
r=json.load(open('$OUT/churn.json'))
print('soak: churn:', json.dumps(r['counts'], sort_keys=True))
print('soak: churn unexpected errors:', sum(r['unexpected'].values()), json.dumps(r['unexpected'])[:400])
" || log "soak_churn.py: no report (see $OUT/churn.log)"
if "$BIN/sluice-plot" soak "$OUT/samples.csv" -o "$OUT/soak.svg" \
     --note "$( [ "${MINUTES%.*}" -lt 30 ] 2>/dev/null && echo "short run ($MINUTES min): not a soak" || echo "$MINUTES min soak")" 2>/dev/null; then
  log "picture: $OUT/soak.svg"
fi
[ "$churn_status" -eq 0 ] || log "$churn_status churn process(es) exited with errors (their logs are in $OUT)"
