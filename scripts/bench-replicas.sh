#!/usr/bin/env bash
# Issue 13's benchmark targets (reads on replicas, with read-your-writes), in one run, on a GTID
# primary with two replicas (scripts/mariadb-cluster.sh start --replicas DIR 3):
#
# 1. Throughput: sysbench oltp_read_only, THREADS client threads (64), DURATION seconds (20) per
#    run, against each target in turn:
#      direct    straight to the primary (no sluice);
#      primary   through sluice, transaction mode, [routing] reads = "primary" (everything on
#                the primary);
#      session   through sluice, reads = "replicas", consistency = "session";
#      eventual  through sluice, reads = "replicas", consistency = "eventual" (add it to
#                SB_TARGETS; a read-only load has no writes to wait for, so it is session's twin).
#    Each in several sysbench variants (VARIANTS): ps (sysbench's defaults: prepared statements,
#    every 14 reads in BEGIN … COMMIT), text (--db-ps-mode=disable), and the same two with
#    --skip_trx=on (ps-notrx, text-notrx: autocommit reads). sluice routes to replicas only plain
#    reads outside a transaction, so the variants in BEGIN … COMMIT keep every read on the
#    primary (what such a client gets); ps-notrx shows whether binary prepared statements are
#    routed (they are since commit 96d9787, not before). Reported: queries/s, session ÷ primary, the share of reads replicas
#    served (sluice metrics), and where the CPU went: utime + stime (/proc/PID/stat, before and
#    after) of each mariadbd, of sluice and of sysbench (the script's reaped-children time), and
#    the rest of the machine (/proc/stat busy time minus ours: other engineers' builds, kernel
#    threads), as shares of the machine's capacity over the run.
# 2. Causal-read latency: sluice-causal (loadtest/src/bin/sluice-causal.rs) on one connection
#    writes a row (INSERT) then reads it back at once, N times, timing the read, through each of
#    CAUSAL_TARGETS (direct primary session eventual), in two modes (CAUSAL_MODES):
#      immediate the read follows the write at once (it races replication, as a client's would);
#      settled   between the write and the read the tool waits, on its own direct connections,
#                until both replicas have applied the primary's position (caught up): the read
#                then measures what the causal check costs (sluice asks the replica with
#                MASTER_GTID_WAIT unless its probe already saw the position).
#    Reported: the read's p50/p99, stale reads, session − primary and session − eventual, and
#    from sluice's metrics the reads replicas served, fallbacks to the primary by reason and
#    causal waits (count, mean time).
#
# Environment: THREADS, DURATION, TABLE_SIZE (10,000), VARIANTS (default "ps text ps-notrx
# text-notrx"), SB_TARGETS (default "direct primary session"), N (causal iterations, 2000),
# CAUSAL_WARMUP (iterations not measured, 200), CAUSAL_MODES (default "immediate settled"),
# CAUSAL_TARGETS (default "direct primary session eventual"), POOL (sluice pool.size, 64), SHARDS
# (sluice shards, 0 = one per core), CAUSAL_WAIT_MS (routing.causal_wait_ms, default 100),
# WARMUP (seconds of sysbench text reads straight to each server before measuring, default 3),
# SMOKE=1 (tiny durations: DURATION=2, N=50, CAUSAL_WARMUP=10, TABLE_SIZE=1000, WARMUP=0; checks
# that everything works, measures nothing), BIN_DIR (use the binaries there instead of building),
# CARGO_TARGET_DIR (honoured by the build), OUT_DIR (default target/bench).
# Writes OUT_DIR/replicas.json and OUT_DIR/replicas.txt (the tables it prints).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
. scripts/lib/deps.sh
. scripts/lib/bench.sh
SMOKE=${SMOKE:-0}
if [ "$SMOKE" = 1 ]; then
  DURATION=${DURATION:-2}
  N=${N:-50}
  CAUSAL_WARMUP=${CAUSAL_WARMUP:-10}
  TABLE_SIZE=${TABLE_SIZE:-1000}
  WARMUP=${WARMUP:-0}
fi
THREADS=${THREADS:-64}
DURATION=${DURATION:-20}
TABLE_SIZE=${TABLE_SIZE:-10000}
VARIANTS=${VARIANTS:-"ps text ps-notrx text-notrx"}
SB_TARGETS=${SB_TARGETS:-"direct primary session"}
N=${N:-2000}
CAUSAL_WARMUP=${CAUSAL_WARMUP:-200}
CAUSAL_MODES=${CAUSAL_MODES:-"immediate settled"}
CAUSAL_TARGETS=${CAUSAL_TARGETS:-"direct primary session eventual"}
POOL=${POOL:-64}
SHARDS=${SHARDS:-0}
CAUSAL_WAIT_MS=${CAUSAL_WAIT_MS:-100}
WARMUP=${WARMUP:-3}
OUT_DIR=${OUT_DIR:-$ROOT/target/bench}
for v in $VARIANTS; do
  case "$v" in ps | text | ps-notrx | text-notrx) ;;
    *) echo "bench-replicas: unknown variant $v (ps, text, ps-notrx, text-notrx)" >&2; exit 2 ;;
  esac
done
for t in $SB_TARGETS $CAUSAL_TARGETS; do
  case "$t" in direct | primary | session | eventual) ;;
    *) echo "bench-replicas: unknown target $t (direct, primary, session, eventual)" >&2; exit 2 ;;
  esac
done
for m in $CAUSAL_MODES; do
  case "$m" in immediate | settled) ;;
    *) echo "bench-replicas: unknown causal mode $m (immediate, settled)" >&2; exit 2 ;;
  esac
done
COMMAND="SMOKE=$SMOKE THREADS=$THREADS DURATION=$DURATION TABLE_SIZE=$TABLE_SIZE VARIANTS='$VARIANTS' SB_TARGETS='$SB_TARGETS' N=$N CAUSAL_WARMUP=$CAUSAL_WARMUP CAUSAL_MODES='$CAUSAL_MODES' CAUSAL_TARGETS='$CAUSAL_TARGETS' POOL=$POOL SHARDS=$SHARDS CAUSAL_WAIT_MS=$CAUSAL_WAIT_MS scripts/bench-replicas.sh"
log() { echo "bench-replicas: $*" >&2; }

mkdir -p "$OUT_DIR"
WORK=$(mktemp -d /tmp/sluice-bench-replicas.XXXXXX)
CLUSTER=$WORK/cluster
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  stop_tracked
  if [ "$status" -ne 0 ]; then
    for f in "$WORK"/*.log; do
      [ -s "$f" ] && { echo "--- last lines of $(basename "$f"):" >&2; tail -n 15 "$f" >&2; }
    done
  fi
  scripts/mariadb-cluster.sh stop "$CLUSTER" >/dev/null 2>&1 || true
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

# The machine's load, before and after (other engineers build on this box: say so).
machine_load() {
  { uptime; top -bn1 | sed -n '3p;7,12p'; } 2>/dev/null || true
}
machine_load > "$WORK/load-before.txt"

ensure_mariadb
ensure_sysbench
release_bins
for b in sluice sluice-causal; do
  [ -x "$BIN_DIR/$b" ] || { log "no $BIN_DIR/$b"; exit 1; }
done

log "starting a primary and two replicas"
eval "$(MARIADB_EXTRA_ARGS="--max-connections=1000" scripts/mariadb-cluster.sh start --replicas "$CLUSTER" 3)"
P_ADDR=127.0.0.1:$S0_PORT
R1_ADDR=127.0.0.1:$S1_PORT
R2_ADDR=127.0.0.1:$S2_PORT
SERVER_PIDS="$S0_PID $S1_PID $S2_PID"

# root over a server's socket (for waits the app user may not do on a replica).
root_sql() { mariadb --no-defaults -uroot --socket="$1/mariadb.sock" -N -B -e "$2"; }
wait_replicas() { # the replicas apply everything the primary has written (60 s at most)
  local pos r d
  pos=$(root_sql "$S0_DIR" 'SELECT @@gtid_binlog_pos')
  for d in "$S1_DIR" "$S2_DIR"; do
    r=$(root_sql "$d" "SELECT MASTER_GTID_WAIT('$pos', 60)")
    [ "$r" = 0 ] || { log "a replica did not reach $pos in 60 s ($r)"; exit 1; }
  done
}

# The sluices: one per routing setup, all started now, each measured while it serves.
declare -A PORT_OF=([direct]=$S0_PORT) PID_OF=() METRICS_OF=()
for name in primary session eventual; do
  port=$(free_port)
  mport=$(free_port)
  case $name in
    primary) routing='reads = "primary"' ;;
    session) routing=$'reads = "replicas"\nconsistency = "session"' ;;
    eventual) routing=$'reads = "replicas"\nconsistency = "eventual"' ;;
  esac
  cat > "$WORK/$name.toml" <<TOML
listen = "127.0.0.1:$port"
metrics_listen = "127.0.0.1:$mport"
shards = $SHARDS
[pool]
mode = "transaction"
size = $POOL
queue_timeout_ms = 30000
[routing]
$routing
causal_wait_ms = $CAUSAL_WAIT_MS
[[backends]]
address = "$P_ADDR"
role = "primary"
[[backends]]
address = "$R1_ADDR"
role = "replica"
[[backends]]
address = "$R2_ADDR"
role = "replica"
[[users]]
name = "app"
password = "app"
backend_user = "app"
backend_password = "app"
TOML
  "$BIN_DIR/sluice" --config "$WORK/$name.toml" --log-level warn 2>"$WORK/$name.log" &
  bg_track $! "sluice-$name"
  PID_OF[$name]=$!
  PORT_OF[$name]=$port
  METRICS_OF[$name]=$mport
  wait_listening "$!" "$port"
done
log "primary on $S0_PORT, replicas on $S1_PORT and $S2_PORT; sluice: $(for t in primary session eventual; do printf '%s on %s (pid %s) ' "$t" "${PORT_OF[$t]}" "${PID_OF[$t]}"; done)"

sb() { # sb TEST PORT SECONDS OUT EXTRA...: one sysbench run, its report in OUT
  local test=$1 port=$2 secs=$3 out=$4
  shift 4
  run_child "$out" + sysbench "$test" --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$port" \
    --mysql-user=app --mysql-password=app --mysql-db=app --tables=1 --table-size="$TABLE_SIZE" \
    --threads="$THREADS" --time="$secs" --report-interval=0 --histogram=off "$@" run
}

log "preparing sbtest1 ($TABLE_SIZE rows) and sluice_causal on the primary"
sysbench oltp_read_only --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$S0_PORT" \
  --mysql-user=app --mysql-password=app --mysql-db=app --tables=1 --table-size="$TABLE_SIZE" \
  prepare >/dev/null
mariadb --no-defaults -h127.0.0.1 -P"$S0_PORT" -uapp -papp app -e \
  "CREATE TABLE sluice_causal (id BIGINT NOT NULL PRIMARY KEY, v BIGINT NOT NULL) ENGINE=InnoDB"
wait_replicas

# metrics TARGET: "to_replicas fb_no_replica fb_behind fb_global causal_waits causal_wait_us
# fb_all follow_waits follow_applied" (fb_all: fallbacks of every reason, replica_error too;
# follow_*: the position follower's waits sent and answered "applied") summed over sluice's
# workers ("0 0 0 0 0 0 0 0 0" for direct).
metrics() {
  local port=${METRICS_OF[$1]:-}
  if [ -z "$port" ]; then echo "0 0 0 0 0 0 0 0 0"; return; fi
  python3 - "$port" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode()
def s(name, containing=""):
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
               if (l.startswith(name + "{") or l.startswith(name + " ")) and containing in l)
print(int(s("sluice_reads_to_replicas_total")),
      int(s("sluice_read_fallbacks_total", 'reason="no_replica"')),
      int(s("sluice_read_fallbacks_total", 'reason="behind"')),
      int(s("sluice_read_fallbacks_total", 'reason="global"')),
      int(s("sluice_causal_waits_total")),
      int(round(s("sluice_causal_wait_seconds_total") * 1e6)),
      int(s("sluice_read_fallbacks_total")),
      int(s("sluice_follow_waits_total")),
      int(s("sluice_follow_applied_total")))
PY
}

# Every replica-routing sluice serves reads from replicas before anything is measured (its
# probe has seen them replicating and caught up).
for name in session eventual; do
  ok=0
  for _ in $(seq 1 150); do
    mariadb --no-defaults -h127.0.0.1 -P"${PORT_OF[$name]}" -uapp -papp app -N -B \
      -e "SELECT COUNT(*) FROM sluice_causal" >/dev/null
    read -r routed _ < <(metrics "$name")
    if [ "$routed" -gt 0 ]; then ok=1; break; fi
    sleep 0.2
  done
  [ "$ok" = 1 ] || { log "sluice ($name) routed no read to a replica in 30 s"; exit 1; }
done

if [ "$WARMUP" != 0 ]; then
  for port in "$S0_PORT" "$S1_PORT" "$S2_PORT"; do
    log "warming 127.0.0.1:$port up (${WARMUP}s of oltp_read_only, text, autocommit)"
    sb oltp_read_only "$port" "$WARMUP" "$WORK/warmup.$port" --db-ps-mode=disable --skip_trx=on || true
  done
fi

# snap TARGET: CPU ticks of the three servers and the target's sluice, the machine's busy and
# total ticks (/proc/stat, all CPUs), then the target's metrics. Only builtins and one python
# (metrics) run here; the children-time of the script is read separately (children_ticks).
pid_ticks() {
  local line f
  read -r line < "/proc/$1/stat" || { echo 0; return; }
  line=${line##*) }
  read -ra f <<<"$line"
  echo $((f[11] + f[12]))
}
children_ticks() { # utime + stime of the script's reaped children (cutime + cstime)
  local line f
  read -r line < "/proc/$$/stat"
  line=${line##*) }
  read -ra f <<<"$line"
  echo $((f[13] + f[14]))
}
machine_ticks() { # "busy steal total" over all CPUs (steal: the hypervisor's, not this box's work)
  local user nice sys idle iowait irq softirq steal _rest
  read -r _ user nice sys idle iowait irq softirq steal _rest < /proc/stat
  echo "$((user + nice + sys + irq + softirq)) $steal $((user + nice + sys + idle + iowait + irq + softirq + steal))"
}
snap() {
  local t=$1 out="" p
  for p in $SERVER_PIDS; do out+="$(pid_ticks "$p") "; done
  if [ -n "${PID_OF[$t]:-}" ]; then out+="$(pid_ticks "${PID_OF[$t]}") "; else out+="0 "; fi
  out+="$(machine_ticks) "
  out+="$(metrics "$t")"
  echo "$out"
}

# Throughput.
: > "$WORK/sb-runs"
for v in $VARIANTS; do
  extra=()
  case "$v" in text*) extra+=(--db-ps-mode=disable) ;; esac
  case "$v" in *-notrx) extra+=(--skip_trx=on) ;; esac
  for t in $SB_TARGETS; do
    log "oltp_read_only $v, $THREADS threads, ${DURATION}s, $t"
    out="$WORK/sb.$v.$t"
    before=$(snap "$t")
    c0=$(children_ticks)
    ok=1
    sb oltp_read_only "${PORT_OF[$t]}" "$DURATION" "$out" "${extra[@]}" || ok=0
    c1=$(children_ticks)
    after=$(snap "$t")
    [ "$ok" = 1 ] || log "oltp_read_only $v through $t failed (see the report)"
    echo "$v $t $out $ok $((c1 - c0)) | $before | $after" >> "$WORK/sb-runs"
  done
done

# Causal-read latency.
: > "$WORK/causal-runs"
base=0
for m in $CAUSAL_MODES; do
  settle=()
  [ "$m" = settled ] && settle=(--settle "$P_ADDR" --settle "$R1_ADDR" --settle "$R2_ADDR")
  for t in $CAUSAL_TARGETS; do
    base=$((base + 10000000))
    log "causal reads, $m, $t: $N write + read pairs (after $CAUSAL_WARMUP unmeasured)"
    out="$WORK/causal.$m.$t.json"
    before=$(snap "$t")
    c0=$(children_ticks)
    ok=1
    run_child - "$WORK/causal.$m.$t.log" "$BIN_DIR/sluice-causal" -t "127.0.0.1:${PORT_OF[$t]}" \
      -u app -p app -d app -n "$N" --warmup "$CAUSAL_WARMUP" --id-base "$base" \
      --label "$m/$t" --json "$out" "${settle[@]}" || ok=0
    c1=$(children_ticks)
    after=$(snap "$t")
    [ "$ok" = 1 ] || { log "sluice-causal $m/$t failed:"; tail -n 5 "$WORK/causal.$m.$t.log" >&2; }
    echo "$m $t $out $ok $((c1 - c0)) | $before | $after" >> "$WORK/causal-runs"
  done
done

machine_load > "$WORK/load-after.txt"
bench_meta "$COMMAND" > "$WORK/meta.json"
python3 - "$WORK" "$OUT_DIR/replicas.json" "$THREADS" "$DURATION" "$N" "$SMOKE" "$(getconf CLK_TCK)" <<'PY' | tee "$OUT_DIR/replicas.txt"
import json, os, re, sys
work, out, threads, duration, n, smoke, hz = sys.argv[1:8]
hz = int(hz)
cpus = os.cpu_count()
MET = ["to_replicas", "fallback_no_replica", "fallback_behind", "fallback_global",
       "causal_waits", "causal_wait_us", "fallbacks_all_reasons", "follow_waits", "follow_applied"]

def sysbench(path):
    try:
        text = open(path).read()
    except OSError:
        text = ""
    q = re.search(r"queries:\s+(\d+)\s+\(([\d.]+) per sec", text)
    rd = re.search(r"read:\s+(\d+)", text)
    err = re.search(r"ignored errors:\s+(\d+)", text)
    if not q:
        lines = text.strip().splitlines()
        return {"qps": None, "failed": True, "message": lines[-1] if lines else "no output"}
    return {"qps": float(q.group(2)), "queries": int(q.group(1)),
            "reads": int(rd.group(1)) if rd else None, "errors": int(err.group(1)) if err else 0}

def deltas(before, after):
    b, a = [int(x) for x in before.split()], [int(x) for x in after.split()]
    return [y - x for x, y in zip(b, a)]

rnd = lambda v, k=3: None if v is None else round(v, k)
div = lambda a, b: a / b if a is not None and b else None

throughput = {}
for line in open(os.path.join(work, "sb-runs")):
    head, before, after = [p.strip() for p in line.split("|")]
    variant, target, path, ok, child = head.split()
    d = deltas(before, after)
    s0, s1, s2, sl, busy, steal, total = d[:7]
    m = dict(zip(MET, d[7:]))
    r = sysbench(path)
    sb = int(child)
    ours = s0 + s1 + s2 + sl + sb
    pct = lambda t: rnd(100 * t / total, 1) if total else None
    r["cpu_ticks"] = {"primary": s0, "replica1": s1, "replica2": s2, "sluice": sl,
                      "sysbench": sb, "machine_busy": busy, "machine_steal": steal,
                      "machine_total": total}
    r["cpu_share_pct"] = {"primary": pct(s0), "replica1": pct(s1), "replica2": pct(s2),
                          "sluice": pct(sl), "sysbench": pct(sb), "other": pct(max(busy - ours, 0)),
                          "steal": pct(steal), "idle": pct(total - busy - steal)}
    per_q = lambda t: rnd(div(t / hz * 1e6, r.get("queries")), 1)
    r["cpu_us_per_query"] = {"servers": per_q(s0 + s1 + s2), "sluice": per_q(sl),
                             "sysbench": per_q(sb)}
    if target != "direct":
        r["metrics"] = m
        r["share_of_reads_on_replicas"] = rnd(div(m["to_replicas"], r.get("reads")))
    throughput.setdefault(variant, {})[target] = r
for res in throughput.values():
    base = res.get("primary", {}).get("qps")
    for t, r in res.items():
        if t != "primary" and r.get("qps") is not None:
            r["ratio_to_primary"] = rnd(div(r["qps"], base))
        if t != "direct" and r.get("qps") is not None:
            r["ratio_to_direct"] = rnd(div(r["qps"], res.get("direct", {}).get("qps")))

causal = {}
for line in open(os.path.join(work, "causal-runs")):
    head, before, after = [p.strip() for p in line.split("|")]
    mode, target, path, ok, child = head.split()
    d = deltas(before, after)
    m = dict(zip(MET, d[7:]))
    ours = sum(d[:4]) + int(child)
    try:
        r = json.load(open(path))
    except (OSError, ValueError):
        r = {"failed": True}
    # The machine while this latency was measured: ours (servers, sluice, sluice-causal) and the
    # rest (other builds on the box), as shares of its capacity.
    if d[6]:
        r["cpu_share_pct"] = {"ours": rnd(100 * ours / d[6], 1),
                              "other": rnd(100 * max(d[4] - ours, 0) / d[6], 1)}
    if target != "direct":
        r["metrics"] = m
        r["mean_causal_wait_us"] = rnd(div(m["causal_wait_us"], m["causal_waits"]), 1)
    causal.setdefault(mode, {})[target] = r
diffs = {}
for mode, res in causal.items():
    get = lambda t, k: (res.get(t, {}).get("read") or {}).get(k)
    d = {}
    for other in ("primary", "eventual"):
        for k in ("p50_us", "p99_us"):
            a, b = get("session", k), get(other, k)
            if a is not None and b is not None:
                d[f"session_minus_{other}_{k}"] = rnd(a - b, 1)
    diffs[mode] = d

summary = {
    "benchmark": "replicas",
    "meta": json.load(open(os.path.join(work, "meta.json"))),
    "smoke": smoke == "1",
    "cpus": cpus,
    "threads": int(threads), "duration_s": float(duration), "causal_iterations": int(n),
    "load_before": open(os.path.join(work, "load-before.txt")).read().splitlines(),
    "load_after": open(os.path.join(work, "load-after.txt")).read().splitlines(),
    "throughput": throughput,
    "causal": causal,
    "causal_differences": diffs,
}
json.dump(summary, open(out, "w"), indent=1)

fmt = lambda v, f: "-" if v is None else f(v)
meta = summary["meta"]
print(f"bench-replicas{' (SMOKE: not a measurement)' if smoke == '1' else ''}: {meta['date']}, "
      f"commit {meta['commit']}, {meta['host']}")
print(f"1. sysbench oltp_read_only, {threads} threads, {duration} s per run; primary + 2 replicas "
      f"(GTID), sluice transaction mode")
print(f"{'variant':12}{'target':10}{'q/s':>9}{'×primary':>10}{'×direct':>9}{'on repl.':>9}"
      f"{'errors':>7}{'db µs/q':>9}{'sluice µs/q':>12}   CPU share of the machine (% of {cpus} CPUs): "
      f"primary repl1 repl2 sluice sysbench other steal idle")
for v, res in throughput.items():
    for i, (t, r) in enumerate(res.items()):
        c = r["cpu_share_pct"]
        cpu = " ".join(fmt(c[k], lambda x: f"{x:5.1f}") for k in
                       ("primary", "replica1", "replica2", "sluice", "sysbench", "other", "steal", "idle"))
        print(f"{(v if i == 0 else ''):12}{t:10}{fmt(r.get('qps'), lambda x: f'{x:.0f}'):>9}"
              f"{fmt(r.get('ratio_to_primary'), lambda x: f'{x:.2f}'):>10}"
              f"{fmt(r.get('ratio_to_direct'), lambda x: f'{x:.2f}'):>9}"
              f"{fmt(r.get('share_of_reads_on_replicas'), lambda x: f'{100 * x:.0f}%'):>9}"
              f"{fmt(r.get('errors'), str):>7}"
              f"{fmt(r.get('cpu_us_per_query', {}).get('servers'), lambda x: f'{x:.0f}'):>9}"
              f"{fmt(r.get('cpu_us_per_query', {}).get('sluice') if t != 'direct' else None, lambda x: f'{x:.0f}'):>12}   {cpu}"
              + (f"  FAILED: {r.get('message', '')}" if r.get("failed") else ""))
print("on repl.: sluice_reads_to_replicas_total over the run ÷ sysbench's reads. CPU: utime+stime "
      "of each process over the run (/proc/PID/stat; sysbench = the script's reaped children); "
      "db µs/q and sluice µs/q: the three servers' and sluice's CPU time ÷ sysbench's queries; "
      "other = /proc/stat busy − ours (other builds, kernel threads); steal = the hypervisor's; idle = the rest.")
print()
print(f"2. causal reads: INSERT then SELECT of that row at once, one connection, {n} pairs per run")
print(f"{'mode':11}{'target':10}{'read p50':>10}{'read p99':>10}{'write p50':>10}{'stale':>7}"
      f"{'on repl.':>9}{'fallbacks':>10}{'behind':>8}{'waits':>7}{'mean wait':>10}{'followed':>14}{'CPU ours/other':>16}")
cpu_pair = lambda c: "{:.0f}%/{:.0f}%".format(c["ours"], c["other"])
for mode, res in causal.items():
    for i, (t, r) in enumerate(res.items()):
        rd, wr, mt = r.get("read") or {}, r.get("write") or {}, r.get("metrics") or {}
        us = lambda x: f"{x:.0f} µs"
        print(f"{(mode if i == 0 else ''):11}{t:10}{fmt(rd.get('p50_us'), us):>10}"
              f"{fmt(rd.get('p99_us'), us):>10}{fmt(wr.get('p50_us'), us):>10}"
              f"{fmt(r.get('stale_reads'), str):>7}{fmt(mt.get('to_replicas'), str):>9}"
              f"{fmt(mt.get('fallbacks_all_reasons'), str):>10}{fmt(mt.get('fallback_behind'), str):>8}"
              f"{fmt(mt.get('causal_waits'), str):>7}{fmt(r.get('mean_causal_wait_us'), us):>10}"
              f"{(str(mt['follow_applied']) + '/' + str(mt['follow_waits'])) if mt else '-':>14}"
              f"{fmt(r.get('cpu_share_pct'), cpu_pair):>16}"
              + ("  FAILED" if r.get("failed") else ""))
    d = diffs.get(mode, {})
    print(f"{'':11}session − primary: p50 {fmt(d.get('session_minus_primary_p50_us'), lambda x: f'{x:+.0f} µs')}, "
          f"p99 {fmt(d.get('session_minus_primary_p99_us'), lambda x: f'{x:+.0f} µs')}; "
          f"session − eventual: p50 {fmt(d.get('session_minus_eventual_p50_us'), lambda x: f'{x:+.0f} µs')}, "
          f"p99 {fmt(d.get('session_minus_eventual_p99_us'), lambda x: f'{x:+.0f} µs')}")
print("on repl. / fallbacks / behind / waits: sluice_reads_to_replicas_total, "
      "sluice_read_fallbacks_total (every reason; reason=behind), sluice_causal_waits_total over the run "
      "(warm-up pairs included); followed: the position follower's waits answered applied / sent "
      "(sluice_follow_applied_total / sluice_follow_waits_total); stale: reads that did not return the row just written; CPU "
      "ours/other: the servers', sluice's and sluice-causal's share of the machine during the run, "
      "and the rest's (other work on the box).")
print("machine load before:", summary["load_before"][0] if summary["load_before"] else "-")
print("machine load after: ", summary["load_after"][0] if summary["load_after"] else "-")
print(f"JSON: {out}")
PY
