# Shared helpers for sluice's benchmark and demo scripts.
# shellcheck shell=bash

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_port PORT [SECONDS]: waits until something accepts on 127.0.0.1:PORT.
wait_port() {
  local port=$1 limit=${2:-30}
  for _ in $(seq 1 $((limit * 10))); do
    if python3 -c "import socket,sys; s=socket.socket(); s.settimeout(0.2); sys.exit(0 if s.connect_ex(('127.0.0.1',$port))==0 else 1)"; then
      return 0
    fi
    sleep 0.1
  done
  echo "nothing listens on 127.0.0.1:$port after ${limit}s" >&2
  return 1
}

# wait_listening PID PORT [SECONDS]: like wait_port, but fails at once if process PID exits.
wait_listening() {
  local pid=$1 port=$2 limit=${3:-30}
  for _ in $(seq 1 $((limit * 10))); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "process $pid exited before listening on 127.0.0.1:$port" >&2
      return 1
    fi
    if python3 -c "import socket,sys; s=socket.socket(); s.settimeout(0.2); sys.exit(0 if s.connect_ex(('127.0.0.1',$port))==0 else 1)"; then
      return 0
    fi
    sleep 0.1
  done
  echo "nothing listens on 127.0.0.1:$port after ${limit}s" >&2
  return 1
}

# sysctl_raise NAME VALUE: raises a sysctl for the run (only upwards), remembering the old value
# in SYSCTL_SAVED for sysctl_restore.
SYSCTL_SAVED=()
sysctl_raise() {
  local name=$1 want=$2 old
  old=$(sysctl -n "$name" 2>/dev/null) || { echo "bench: cannot read $name" >&2; return 0; }
  if [ "$old" -lt "$want" ] 2>/dev/null; then
    if as_root sysctl -q -w "$name=$want" >/dev/null 2>&1; then
      SYSCTL_SAVED+=("$name=$old")
    else
      echo "bench: cannot raise $name to $want (not root?); continuing with $old" >&2
    fi
  fi
}

sysctl_restore() {
  local kv
  for kv in "${SYSCTL_SAVED[@]}"; do
    as_root sysctl -q -w "$kv" >/dev/null 2>&1 || echo "bench: could not restore $kv" >&2
  done
  SYSCTL_SAVED=()
}

# json_get FILE EXPR: a value from a JSON report (python expression over `r`).
json_get() {
  python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print($2)" "$1"
}

# metric PORT PREFIX [CONTAINING]: the sum of the values of every metric line starting with
# PREFIX (and containing CONTAINING, e.g. a label).
metric() {
  python3 - "$1" "$2" "${3:-}" <<'PY'
import sys, urllib.request
port, prefix, containing = sys.argv[1:4]
text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
total = sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
            if l.startswith(prefix) and containing in l)
print(int(total) if total == int(total) else total)
PY
}

# backend_and_app_user ADDRESS [BACKEND_USER [BACKEND_PASSWORD]]: the [[backends]] and [[users]]
# tables of a sluice config that proxies user app (password app) to ADDRESS, logging in there
# as BACKEND_USER (default app/app).
backend_and_app_user() {
  cat <<TOML
[[backends]]
address = "$1"
[[users]]
name = "app"
password = "app"
backend_user = "${2:-app}"
backend_password = "${3:-app}"
TOML
}

# ---------------------------------------------------------------- processes a script starts

# bg_track PID [NAME]: remember a background process so that stop_tracked stops it.
BG_PIDS=()
BG_NAMES=()
bg_track() {
  BG_PIDS+=("$1")
  BG_NAMES+=("${2:-$1}")
}

# stop_pid PID [SECONDS]: SIGTERM, a bounded wait (default 10 s), then SIGKILL.
stop_pid() {
  local pid=$1 limit=${2:-10}
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 $((limit * 10))); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "bench: pid $pid ignored SIGTERM for ${limit}s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

# run_child OUT ERR CMD...: runs CMD (a program, not a shell function) in the background with
# its stdout in file OUT and its stderr in file ERR ("-": the script's own; ERR "+": with stdout),
# and waits for it. So a signal to the script is handled at once (bash runs traps only after a
# foreground command ends), the cleanup can stop CMD (stop_tracked stops CHILD too), and the
# cleanup's own messages are not redirected with CMD's. Returns CMD's status.
CHILD=
run_child() {
  local out=$1 err=$2 rc=0
  shift 2
  if [ "$out" != - ] && [ "$err" = + ]; then
    "$@" >"$out" 2>&1 &
  elif [ "$out" != - ] && [ "$err" != - ]; then
    "$@" >"$out" 2>"$err" &
  elif [ "$out" != - ]; then
    "$@" >"$out" &
  elif [ "$err" != - ]; then
    "$@" 2>"$err" &
  else
    "$@" &
  fi
  CHILD=$!
  wait "$CHILD" || rc=$?
  CHILD=
  return "$rc"
}

# stop_tracked: stops the running run_child command, then every process bg_track remembered,
# newest first.
stop_tracked() {
  local i
  if [ -n "${CHILD:-}" ]; then
    stop_pid "$CHILD"
    CHILD=
  fi
  for ((i = ${#BG_PIDS[@]} - 1; i >= 0; i--)); do
    stop_pid "${BG_PIDS[$i]}"
  done
  BG_PIDS=()
  BG_NAMES=()
}

# cpu_ticks PID: utime + stime of a process (all its threads), in clock ticks (getconf CLK_TCK),
# from /proc/PID/stat (the command name, in parentheses, may contain spaces).
cpu_ticks() {
  local stat
  stat=$(cat "/proc/$1/stat") || { echo "bench: process $1 is gone" >&2; return 1; }
  stat=${stat##*) }
  awk '{print $12 + $13}' <<<"$stat"
}

# bench_meta COMMAND: a JSON object saying where a result comes from (date, commit, machine,
# the command line with its knobs), for the result files and the pictures drawn from them.
bench_meta() {
  local commit
  commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  if [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    commit="$commit-dirty"
  fi
  python3 - "$commit" "$1" <<'PY'
import json, os, sys, time
print(json.dumps({
    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    "commit": sys.argv[1],
    "host": f"{os.cpu_count()} cpus, kernel {os.uname().release}",
    "command": sys.argv[2],
}))
PY
}

# plot KIND OUT.svg JSON...: draws a picture with sluice-plot (from BIN_DIR, else the release
# build). A missing plotter or a failed plot is reported, never fatal: the numbers matter more.
# PLOT_NOTE, when set, is drawn in red under the title (e.g. "smoke run, not a measurement").
plot() {
  local kind=$1 out=$2 bin=${BIN_DIR:-$ROOT/target/release}/sluice-plot
  shift 2
  if [ ! -x "$bin" ]; then
    echo "bench: no $bin; no picture" >&2
    return 0
  fi
  local note=()
  [ -n "${PLOT_NOTE:-}" ] && note=(--note "$PLOT_NOTE")
  "$bin" "$kind" "$@" -o "$out" "${note[@]}" || echo "bench: sluice-plot $kind failed; no picture" >&2
}

# release_bins: unless BIN_DIR names the binaries to use, builds sluice's and the load
# generator's release binaries and points BIN_DIR where cargo put them (CARGO_TARGET_DIR
# respected, so a run uses what it just built). Needs ROOT and scripts/lib/deps.sh.
release_bins() {
  if [ -z "${BIN_DIR:-}" ]; then
    ensure_rust
    cargo build --release --quiet -p sluice -p sluice-load --bins
    BIN_DIR=${CARGO_TARGET_DIR:-$ROOT/target}/release
  fi
}
