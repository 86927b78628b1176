#!/usr/bin/env bash
# What an upgrade does to TLS clients, measured (issue 12; README "Upgrading without dropping
# clients", the TLS row). Their rustls state cannot leave the old process on a kernel without
# kTLS (see src/upgrade/mod.rs), so they stay there, are served until they leave or
# `shutdown_timeout_ms`, and are then told why (ERR 1053) at their next command. This script
# measures that fallback as a driver's connection pool lives it, beside plaintext clients that
# move:
#   - TLS_ACTIVE TLS clients and PLAIN_ACTIVE plaintext clients (PyMySQL, one thread each) run
#     `SELECT 1` every INTERVAL_MS; on an error they record it (code, message, seconds after the
#     signal), reconnect as a pool would, and go on;
#   - TLS_IDLE TLS clients run one query at the start and one more once the old process has
#     exited (a pooled connection borrowed again): what does that query see?
#   - SIGUSR2 after WARMUP seconds; the old process's exit is timed from the signal.
# Environment: TLS_ACTIVE (20), TLS_IDLE (100), PLAIN_ACTIVE (20), INTERVAL_MS (100), WARMUP (5),
# SHUTDOWN_TIMEOUT_MS (the old process's deadline, 10000), BIN_DIR (a sluice binary to use
# instead of building a release one), OUT_DIR (target/bench). Writes OUT_DIR/upgrade-tls.json
# and prints it.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
. scripts/lib/deps.sh
. scripts/lib/bench.sh
TLS_ACTIVE=${TLS_ACTIVE:-20}
TLS_IDLE=${TLS_IDLE:-100}
PLAIN_ACTIVE=${PLAIN_ACTIVE:-20}
INTERVAL_MS=${INTERVAL_MS:-100}
WARMUP=${WARMUP:-5}
SHUTDOWN_TIMEOUT_MS=${SHUTDOWN_TIMEOUT_MS:-10000}
OUT_DIR=${OUT_DIR:-$ROOT/target/bench}
COMMAND="TLS_ACTIVE=$TLS_ACTIVE TLS_IDLE=$TLS_IDLE PLAIN_ACTIVE=$PLAIN_ACTIVE INTERVAL_MS=$INTERVAL_MS SHUTDOWN_TIMEOUT_MS=$SHUTDOWN_TIMEOUT_MS scripts/bench-upgrade-tls.sh"
log() { echo "bench-upgrade-tls: $*" >&2; }

ensure_rust
ensure_mariadb
ensure_python_drivers
if [ -z "${BIN_DIR:-}" ]; then
  cargo build --release --quiet -p sluice --bin sluice
  BIN_DIR=${CARGO_TARGET_DIR:-$ROOT/target}/release
fi
mkdir -p "$OUT_DIR"
WORK=$(mktemp -d /tmp/sluice-bench-upgrade-tls.XXXXXX)
DB="$WORK/db"
cleanup() {
  stop_tracked
  # The successor is not our child (the old process started it): stop it by the pid logged.
  local new
  new=$(sed 's/\x1b\[[0-9;]*m//g' "$WORK/sluice.log" 2>/dev/null |
    sed -n 's/.*upgrade: successor started pid=\([0-9]*\).*/\1/p' | tail -1)
  if [ -n "$new" ]; then stop_pid "$new" >/dev/null 2>&1 || true; fi
  scripts/mariadb.sh stop "$DB" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

eval "$(scripts/mariadb.sh start "$DB")"
log "MariaDB on 127.0.0.1:$MARIADB_PORT"
PORT=$(free_port)
# One process (no workers): SIGUSR2 goes to it, and its successor takes the listener.
cat >"$WORK/sluice.toml" <<TOML
listen = "127.0.0.1:$PORT"
shards = 1
shutdown_timeout_ms = $SHUTDOWN_TIMEOUT_MS
[pool]
mode = "transaction"
size = 8
[[backends]]
address = "127.0.0.1:$MARIADB_PORT"
[[users]]
name = "app"
password = "app"
backend_user = "app"
backend_password = "app"
TOML
"$BIN_DIR/sluice" -c "$WORK/sluice.toml" --log-level info 2>"$WORK/sluice.log" &
OLD=$!
bg_track "$OLD" sluice
wait_listening "$OLD" "$PORT" 30
log "sluice $OLD on 127.0.0.1:$PORT (a self-signed certificate made at start)"

"$SLUICE_TEST_PYTHON" - "$PORT" "$OLD" "$WORK" "$OUT_DIR/upgrade-tls.json" "$COMMAND" \
  "$TLS_ACTIVE" "$TLS_IDLE" "$PLAIN_ACTIVE" "$INTERVAL_MS" "$WARMUP" "$SHUTDOWN_TIMEOUT_MS" <<'PY'
import json, os, ssl, statistics, sys, threading, time
import pymysql

(port, old, work, out, command, tls_active, tls_idle, plain_active, interval_ms, warmup,
 deadline_ms) = sys.argv[1:12]
port, old = int(port), int(old)
tls_active, tls_idle, plain_active = int(tls_active), int(tls_idle), int(plain_active)
interval, warmup, deadline = int(interval_ms) / 1000, float(warmup), int(deadline_ms) / 1000

ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE  # sluice's self-signed certificate

def connect(tls):
    c = pymysql.connect(host="127.0.0.1", port=port, user="app", password="app",
                        ssl=ctx if tls else None, ssl_disabled=not tls,
                        connect_timeout=10, read_timeout=30,
                        write_timeout=30, autocommit=True)
    is_tls = hasattr(c._sock, "version") and c._sock.version() is not None
    if is_tls != tls:
        raise SystemExit(f"asked for tls={tls}, got tls={is_tls}")
    return c

signal_at = None  # monotonic time of SIGUSR2
stop = threading.Event()
lock = threading.Lock()

def since():
    return None if signal_at is None else round(time.monotonic() - signal_at, 3)

class Active(threading.Thread):
    def __init__(self, tls):
        super().__init__(daemon=True)
        self.tls, self.ok, self.errors, self.reconnects = tls, 0, [], []
        self.conn = connect(tls)
    def run(self):
        while not stop.is_set():
            try:
                with self.conn.cursor() as cur:
                    cur.execute("SELECT 1")
                    cur.fetchall()
                self.ok += 1
            except Exception as e:
                code = e.args[0] if getattr(e, "args", None) else None
                self.errors.append({"code": code, "message": str(e.args[1:] or e)[:160],
                                    "after_signal_s": since()})
                t = time.monotonic()
                for _ in range(100):  # a pool replaces the connection (bounded: 100 tries)
                    try:
                        self.conn = connect(self.tls)
                        break
                    except Exception:
                        time.sleep(0.05)
                self.reconnects.append(round((time.monotonic() - t) * 1000, 1))
            stop.wait(interval)

def idle_query(c):
    try:
        with c.cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchall()
        return None
    except Exception as e:
        return {"code": e.args[0] if e.args else None, "message": str(e.args[1:] or e)[:160]}

tls_threads = [Active(True) for _ in range(tls_active)]
plain_threads = [Active(False) for _ in range(plain_active)]
idle = [connect(True) for _ in range(tls_idle)]
first = [idle_query(c) for c in idle]
assert all(r is None for r in first), first
for t in tls_threads + plain_threads:
    t.start()
time.sleep(warmup)
signal_at = time.monotonic()
os.kill(old, 12)  # SIGUSR2
exited = None
limit = signal_at + deadline + 60
while time.monotonic() < limit:
    try:
        os.kill(old, 0)
        # A zombie (our parent has not reaped it yet) has exited too.
        if open(f"/proc/{old}/stat").read().split(")")[-1].split()[0] == "Z":
            raise ProcessLookupError
    except (ProcessLookupError, FileNotFoundError):
        exited = since()
        break
    time.sleep(0.02)
time.sleep(1)  # the active clients run a second past the old process's exit
stop.set()
for t in tls_threads + plain_threads:
    t.join(30)
# The idle TLS clients are borrowed again: their next query.
later = [idle_query(c) for c in idle]
reconnected = 0
for r in later:
    if r is not None:
        try:
            c = connect(True)
            if idle_query(c) is None:
                reconnected += 1
        except Exception:
            pass

def group(ts):
    errs = [e for t in ts for e in t.errors]
    rec = sorted(r for t in ts for r in t.reconnects)
    codes = {}
    for e in errs:
        codes[str(e["code"])] = codes.get(str(e["code"]), 0) + 1
    after = [e["after_signal_s"] for e in errs if e["after_signal_s"] is not None]
    return {
        "clients": len(ts),
        "queries_ok": sum(t.ok for t in ts),
        "clients_with_an_error": sum(1 for t in ts if t.errors),
        "errors": len(errs),
        "errors_by_code": codes,
        "error_example": errs[0]["message"] if errs else None,
        "errors_after_signal_s": [min(after), max(after)] if after else None,
        "reconnect_ms_p50_max": [statistics.median(rec), rec[-1]] if rec else None,
    }

codes = {}
for r in later:
    if r is not None:
        codes[str(r["code"])] = codes.get(str(r["code"]), 0) + 1
report = {
    "command": command,
    "old_process_exited_after_s": exited,
    "shutdown_timeout_s": deadline,
    "tls_active": group(tls_threads),
    "plain_active": group(plain_threads),
    "tls_idle": {
        "clients": len(idle),
        "next_query_failed": sum(1 for r in later if r is not None),
        "by_code": codes,
        "example": next((r["message"] for r in later if r is not None), None),
        "reconnected_and_served": reconnected,
    },
    "handover_log": [l.strip() for l in open(f"{work}/sluice.log")
                     if "upgrade:" in l or "could not move" in l][-8:],
}
json.dump(report, open(out, "w"), indent=1)
print(json.dumps(report, indent=1))
PY
