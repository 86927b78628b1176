#!/usr/bin/env bash
# Start or stop a private, throwaway MariaDB for sluice's tests, demo and benchmarks.
#
#   scripts/mariadb.sh start [DIR]   install mariadb-server if missing, initialise DIR (default: a new
#                                    mktemp dir), start mariadbd on a free 127.0.0.1 port, create the
#                                    `app` user (password `app`) and database `app`, and print
#                                    shell assignments: MARIADB_DIR=… MARIADB_PORT=… MARIADB_PID=…
#   scripts/mariadb.sh stop DIR      stop the server started in DIR (by its pid) and delete DIR
#   scripts/mariadb.sh restart DIR   stop and start the server in DIR again on the same port (keeps data)
#
# Environment: MARIADB_PORT (use this port instead of a free one), MARIADB_PROFILE (production, the
# default, or minimal; see set_profile), MARIADB_SERVER_ID (for several servers), MARIADB_EXTRA_ARGS
# (extra mariadbd flags, e.g. "--max-connections=2000"). Everything is logged to DIR/mariadb.log.
set -euo pipefail

log() { echo "mariadb.sh: $*" >&2; }

ensure_installed() {
  if command -v mariadbd >/dev/null 2>&1 && command -v mariadb-install-db >/dev/null 2>&1 \
     && command -v mariadb >/dev/null 2>&1; then
    return
  fi
  log "installing mariadb-server (apt-get)"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mariadb-server mariadb-client >&2
}

free_port() {
  python3 - <<'PY'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

mariadbd_bin() { command -v mariadbd || echo /usr/sbin/mariadbd; }

# The server's configuration: `production` (the default; what CI uses) is configured like a
# production primary: binary log with GTIDs (strict), log_slave_updates, row format, performance
# schema, strict sql_mode and utf8mb4 as the server character set. `minimal` is the bare server
# the first version was tested against (no binary log, no performance schema, latin1 defaults).
profile_args=()
set_profile() {
  case "${MARIADB_PROFILE:-production}" in
    production)
      profile_args=(--log-bin=mariadb-bin --server-id="${MARIADB_SERVER_ID:-1}" --log-slave-updates
        --gtid-strict-mode=ON --binlog-format=ROW --sync-binlog=0 --expire-logs-days=1
        --performance-schema=ON
        --sql-mode=STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_AUTO_CREATE_USER,NO_ENGINE_SUBSTITUTION
        --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci) ;;
    minimal) profile_args=(--performance-schema=OFF --skip-log-bin) ;;
    *) log "MARIADB_PROFILE must be production or minimal"; return 1 ;;
  esac
}

launch() {
  local dir=$1 port=$2
  mkdir -p "$dir/tmp"
  local user_args=()
  if [ "$(id -u)" -eq 0 ]; then user_args=(--user=root); fi
  set_profile
  # shellcheck disable=SC2086
  "$(mariadbd_bin)" --no-defaults "${user_args[@]}" \
    --datadir="$dir/data" --socket="$dir/mariadb.sock" --pid-file="$dir/mariadb.pid" \
    --tmpdir="$dir/tmp" --port="$port" --bind-address=127.0.0.1 --skip-name-resolve \
    --log-error="$dir/mariadb.log" --max-allowed-packet=64M --max-connections=400 \
    --innodb-buffer-pool-size=256M --innodb-log-file-size=64M --innodb-flush-log-at-trx-commit=2 \
    --local-infile=1 "${profile_args[@]}" \
    ${MARIADB_EXTRA_ARGS:-} >/dev/null 2>&1 &
  local pid=$!
  echo "$pid" > "$dir/mariadbd.pid"
  echo "$port" > "$dir/port"
  # Wait (bounded) until the server answers on its socket.
  for _ in $(seq 1 300); do
    if mariadb --no-defaults -uroot --socket="$dir/mariadb.sock" -e 'SELECT 1' >/dev/null 2>&1; then
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      log "mariadbd exited during start; last log lines:"; tail -n 20 "$dir/mariadb.log" >&2 || true
      return 1
    fi
    sleep 0.1
  done
  log "mariadbd did not become ready within 30 s"; tail -n 20 "$dir/mariadb.log" >&2 || true
  return 1
}

start() {
  ensure_installed
  local dir=${1:-}
  if [ -z "$dir" ]; then dir=$(mktemp -d /tmp/sluice-mariadb.XXXXXX); fi
  # Each server's temporary files in its own directory: a server starting up removes every
  # `#sql*` file in its tmpdir, so servers sharing /tmp (tests and benchmarks start several at
  # once) delete each other's temporary tables ("Error on delete of '/tmp/#sql-temptable…'",
  # or a failing mariadb-install-db).
  mkdir -p "$dir/tmp"
  dir=$(cd "$dir" && pwd)
  # Its server already runs: say where (a second one would wait on the data dir's locks, then
  # fail, having rewritten the port and pid files meanwhile).
  local running
  running=$(cat "$dir/mariadbd.pid" 2>/dev/null || true)
  if [ -n "$running" ] && ours "$running" "$dir"; then
    log "a server already runs in $dir (pid $running)"
    echo "MARIADB_DIR=$dir"; echo "MARIADB_PORT=$(cat "$dir/port")"; echo "MARIADB_PID=$running"
    return 0
  fi
  local port=${MARIADB_PORT:-$(free_port)}
  if [ ! -d "$dir/data/mysql" ]; then
    local user_args=()
    if [ "$(id -u)" -eq 0 ]; then user_args=(--user=root); fi
    # One retry: under heavy load the bootstrap server occasionally fails to start in time.
    local attempt
    for attempt in 1 2; do
      if mariadb-install-db --no-defaults "${user_args[@]}" --datadir="$dir/data" \
           --tmpdir="$dir/tmp" --auth-root-authentication-method=socket --skip-test-db >"$dir/install.log" 2>&1; then
        break
      fi
      if [ "$attempt" -eq 2 ]; then
        log "mariadb-install-db failed twice:"; tail -n 60 "$dir/install.log" >&2; return 1
      fi
      log "mariadb-install-db failed; retrying once"
      rm -rf "$dir/data"
    done
  fi
  launch "$dir" "$port"
  mariadb --no-defaults -uroot --socket="$dir/mariadb.sock" <<'SQL'
CREATE DATABASE IF NOT EXISTS app;
CREATE USER IF NOT EXISTS 'app'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('app');
CREATE USER IF NOT EXISTS 'app'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('app');
GRANT ALL PRIVILEGES ON *.* TO 'app'@'%' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO 'app'@'localhost' WITH GRANT OPTION;
FLUSH PRIVILEGES;
SQL
  echo "MARIADB_DIR=$dir"
  echo "MARIADB_PORT=$port"
  echo "MARIADB_PID=$(cat "$dir/mariadbd.pid")"
}

# Is process $1 running? A zombie (a server killed with -9 whose parent has not reaped it yet;
# PID 1 may reap late or never) is not: `kill -0` alone succeeds on one.
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  [ "$(sed -n 's/.*) \(.\).*/\1/p' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

# Is process $1 the mariadbd of data dir $2? A pid file outlives a server killed with -9, and
# pids wrap around (pid_max is 32768 here): the pid may belong to another process by now, even
# another test's server, which must never be signalled.
ours() {
  alive "$1" && tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | grep -qxF -- "--datadir=$2/data"
}

stop_server() {
  local dir
  dir=$(cd "$1" && pwd)
  [ -f "$dir/mariadbd.pid" ] || return 0
  local pid; pid=$(cat "$dir/mariadbd.pid")
  if ours "$pid" "$dir"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 300); do ours "$pid" "$dir" || break; sleep 0.1; done
    if ours "$pid" "$dir"; then log "mariadbd $pid ignored SIGTERM for 30 s; killing"; kill -KILL "$pid" || true; fi
  fi
  rm -f "$dir/mariadbd.pid"
}

case "${1:-}" in
  start) shift; start "${1:-}" ;;
  stop)
    [ -n "${2:-}" ] || { log "usage: $0 stop DIR"; exit 2; }
    stop_server "$2"
    case "$2" in /tmp/sluice-mariadb.*) rm -rf "$2" ;; esac ;;
  restart)
    [ -n "${2:-}" ] || { log "usage: $0 restart DIR"; exit 2; }
    port=$(cat "$2/port"); stop_server "$2"; launch "$2" "$port"
    echo "MARIADB_DIR=$2"; echo "MARIADB_PORT=$port"; echo "MARIADB_PID=$(cat "$2/mariadbd.pid")" ;;
  *) log "usage: $0 start [DIR] | stop DIR | restart DIR"; exit 2 ;;
esac
