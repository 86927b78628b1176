#!/usr/bin/env bash
# Several private, throwaway MariaDB servers on 127.0.0.1 for sluice's tests and benchmarks, each
# one started by scripts/mariadb.sh (production profile: binary log, GTID strict mode,
# log_slave_updates) in DIR/s0 … DIR/s{N-1}, with server_id I+1 for server I.
#
#   scripts/mariadb-cluster.sh start [--replicas] DIR N
#       start N independent, equivalent servers (each with the `app` user and database). With
#       --replicas, s0 is the primary and s1 … s{N-1} replicate from it with GTIDs (read_only,
#       replication user `repl`/`repl`); returns once every replica runs and has caught up.
#       Prints shell assignments: CLUSTER_DIR=… CLUSTER_SIZE=… CLUSTER_PRIMARY=… (replicated
#       only), then SI_DIR=… SI_PORT=… SI_PID=… for every server I.
#   scripts/mariadb-cluster.sh stop DIR
#       stop every server of the cluster (dead, killed or frozen ones too) and delete DIR.
#   scripts/mariadb-cluster.sh kill DIR I       kill -9 server I (waits until it is gone)
#   scripts/mariadb-cluster.sh restart DIR I    stop server I if it runs and start it again on its
#       port and data (works after kill). A replica comes back read-only and replicating from the
#       current primary; a former primary comes back as it would in production: writable and
#       replicating from nobody (see rejoin). Prints SI_DIR=… SI_PORT=… SI_PID=….
#   scripts/mariadb-cluster.sh promote DIR I
#       make replica I the primary. When the old primary answers, it is made read-only first and
#       every live replica catches up with it (a switchover), and it becomes a replica of I; when
#       it does not (killed, frozen), it is skipped (a failover). Every other replica that answers
#       replicates from I afterwards; one that does not is skipped (restart repoints it).
#       Prints CLUSTER_PRIMARY=I.
#   scripts/mariadb-cluster.sh rejoin DIR I     make server I (e.g. a restarted former primary) a
#       read-only replica of the current primary, continuing from its own GTID position.
#
# Notes. In a replicated cluster the replicas' own setup (the `app` user and database that
# mariadb.sh created) is dropped from their binary logs (RESET MASTER) and they replay the
# primary's binary log from its start instead (those statements are idempotent): every server then
# holds the same GTID history (domain 0), as GTID strict mode requires. `app` has ALL PRIVILEGES,
# which include READ_ONLY ADMIN (the privilege to ignore read_only); in a replicated cluster it is
# revoked from `app`, so a write by `app` on a replica fails with error 1290, as in production
# (root, over the Unix socket DIR/sI/mariadb.sock, keeps it). Replicas retry a lost primary every
# second. MARIADB_EXTRA_ARGS applies to every server, at start and at restart. Every wait is
# bounded; everything is logged to stderr (and each server's own log to DIR/sI/mariadb.log).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MARIADB_SH="$HERE/mariadb.sh"
MARKER=.sluice-cluster
REPL_USER=repl
REPL_PASSWORD=repl

log() { echo "mariadb-cluster.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# Is process $1 running (a zombie is not)?
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  [ "$(sed -n 's/.*) \(.\).*/\1/p' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

# Is process $1 the mariadbd of server $2? (Pids wrap around: a pid file left by a server killed
# with -9 may name another process by now, even another cluster's server.)
ours() {
  alive "$1" && tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | grep -qxF -- "--datadir=$(sdir "$2")/data"
}

sdir() { echo "$CLUSTER/s$1"; }
pid_of() { cat "$(sdir "$1")/mariadbd.pid" 2>/dev/null || echo 0; }
port_of() { cat "$(sdir "$1")/port"; }
role_of() { cat "$(sdir "$1")/role" 2>/dev/null || echo standalone; }
set_role() { echo "$2" > "$(sdir "$1")/role"; }
size_of() { cat "$CLUSTER/size"; }
primary_of() { cat "$CLUSTER/primary" 2>/dev/null || echo ""; }

# sql I STATEMENTS: runs them as root over server I's socket, bounded (a frozen server does not
# answer: the client would wait forever); tab-separated output without column names.
sql() {
  local i=$1; shift
  timeout "${SQL_TIMEOUT:-20}" mariadb --no-defaults -uroot --socket="$(sdir "$i")/mariadb.sock" \
    --connect-timeout=5 -N -B -e "$*"
}

# sql_vertical I STATEMENT: the same with every row as `Column: value` lines (the \G format).
sql_vertical() {
  local i=$1; shift
  timeout "${SQL_TIMEOUT:-20}" mariadb --no-defaults -uroot --socket="$(sdir "$i")/mariadb.sock" \
    --connect-timeout=5 -B -E -e "$*"
}

# Does server I answer within 5 s?
answers() {
  local i=$1
  ours "$(pid_of "$i")" "$i" && SQL_TIMEOUT=5 sql "$i" 'SELECT 1' >/dev/null 2>&1
}

# slave_field I FIELD: one field of server I's SHOW SLAVE STATUS (empty when it is no replica).
slave_field() {
  sql_vertical "$1" 'SHOW SLAVE STATUS' | awk -v f="$2" '{ sub(/^ +/, "") } !found && index($0, f ": ") == 1 { print substr($0, length(f) + 3); found = 1 }'
}

slave_errors() {
  sql_vertical "$1" 'SHOW SLAVE STATUS' | grep -E '^ *(Slave_IO_Running|Slave_SQL_Running|Last_IO_Errno|Last_IO_Error|Last_SQL_Errno|Last_SQL_Error|Gtid_IO_Pos):' >&2 || true
}

# Waits (at most 30 s) until both replication threads of server I run (Slave_IO_Running: Yes, not
# Connecting). Fails at once when one of them stopped (an error).
wait_slave_running() {
  local i=$1 io sqlt
  for _ in $(seq 1 150); do
    io=$(slave_field "$i" Slave_IO_Running || true)
    sqlt=$(slave_field "$i" Slave_SQL_Running || true)
    if [ "$io" = Yes ] && [ "$sqlt" = Yes ]; then return 0; fi
    if [ "$io" = No ] || [ "$sqlt" = No ]; then
      log "s$i: replication stopped:"; slave_errors "$i"; return 1
    fi
    sleep 0.2
  done
  log "s$i: replication not running after 30 s:"; slave_errors "$i"; return 1
}

# Waits (at most 30 s) until server I has applied GTID position POS.
wait_gtid() {
  local i=$1 pos=$2 r
  [ -n "$pos" ] || return 0
  r=$(SQL_TIMEOUT=40 sql "$i" "SELECT MASTER_GTID_WAIT('$pos', 30)") || r=error
  if [ "$r" != 0 ]; then
    log "s$i did not reach GTID $pos within 30 s ($r):"; slave_errors "$i"; return 1
  fi
}

# Stops server I's I/O thread and waits (at most 30 s) until its SQL thread has applied everything
# the I/O thread had received (what a failover keeps of a dead primary).
drain_relay_log() {
  local i=$1 file pos r
  [ -n "$(slave_field "$i" Master_Host || true)" ] || return 0
  sql "$i" 'STOP SLAVE IO_THREAD'
  [ "$(slave_field "$i" Slave_SQL_Running)" = Yes ] || return 0
  file=$(slave_field "$i" Master_Log_File); pos=$(slave_field "$i" Read_Master_Log_Pos)
  if [ -z "$file" ] || [ "${pos:-0}" = 0 ]; then return 0; fi
  r=$(SQL_TIMEOUT=40 sql "$i" "SELECT MASTER_POS_WAIT('$file', $pos, 30)") || r=error
  case "$r" in -1|NULL|error) log "s$i: relay log not applied within 30 s ($r); continuing" ;; esac
}

# Points server I at the primary P (GTID, from I's own slave position) and starts replicating.
replicate_from() {
  local i=$1 p=$2
  sql "$i" "STOP SLAVE; SET GLOBAL read_only = 1;
    CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = $(port_of "$p"),
      MASTER_USER = '$REPL_USER', MASTER_PASSWORD = '$REPL_PASSWORD',
      MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1;
    START SLAVE" || return 1
  set_role "$i" replica
  wait_slave_running "$i" || return 1
  [ "$(sql "$i" 'SELECT @@read_only')" = 1 ] || { log "s$i: read_only is not on"; return 1; }
}

# The flags server I starts with (stored at start: restart must use the same server_id).
launch_env() {
  local i=$1 extra
  extra=$(cat "$(sdir "$i")/extra-args" 2>/dev/null || true)
  if [ "$(role_of "$i")" = replica ]; then extra="$extra --read-only=1 --skip-slave-start"; fi
  echo "$extra"
}

print_server() {
  local i=$1
  echo "S${i}_DIR=$(sdir "$i")"
  echo "S${i}_PORT=$(port_of "$i")"
  echo "S${i}_PID=$(pid_of "$i")"
}

cmd_start() {
  local replicas=0 args=()
  for a in "$@"; do
    case "$a" in --replicas) replicas=1 ;; *) args+=("$a") ;; esac
  done
  [ "${#args[@]}" -eq 2 ] || die "usage: $0 start [--replicas] DIR N"
  local n=${args[1]}
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "N must be a positive number, not '$n'"
  mkdir -p "${args[0]}"
  CLUSTER=$(cd "${args[0]}" && pwd)
  [ ! -e "$CLUSTER/$MARKER" ] || die "$CLUSTER already holds a cluster"
  : > "$CLUSTER/$MARKER"
  echo "$n" > "$CLUSTER/size"
  # A failed start leaves nothing running behind.
  trap 'log "start failed; stopping what was started"; cmd_stop "$CLUSTER" >/dev/null 2>&1 || true' EXIT
  local t0=$SECONDS i
  for ((i = 0; i < n; i++)); do
    mkdir -p "$(sdir "$i")"
    printf '%s' "${MARIADB_EXTRA_ARGS:-}" > "$(sdir "$i")/extra-args"
    echo $((i + 1)) > "$(sdir "$i")/server-id"
    log "starting s$i (server_id $((i + 1)))"
    env -u MARIADB_PORT MARIADB_PROFILE=production MARIADB_SERVER_ID=$((i + 1)) \
      MARIADB_EXTRA_ARGS="${MARIADB_EXTRA_ARGS:-}" bash "$MARIADB_SH" start "$(sdir "$i")" >/dev/null
    set_role "$i" standalone
  done
  if [ "$replicas" -eq 1 ]; then
    # The replication account, and read_only made binding for `app`: both logged, so the replicas
    # get them by replication (and every server has the account when it is promoted).
    sql 0 "CREATE USER '$REPL_USER'@'%' IDENTIFIED BY '$REPL_PASSWORD';
      GRANT REPLICATION SLAVE ON *.* TO '$REPL_USER'@'%';
      REVOKE READ_ONLY ADMIN ON *.* FROM 'app'@'%', 'app'@'localhost'"
    set_role 0 primary
    echo 0 > "$CLUSTER/primary"
    for ((i = 1; i < n; i++)); do
      log "s$i: replicating from s0"
      # Forget the replica's own GTIDs (its mariadb.sh setup, 0-(i+1)-1…): it replays the
      # primary's history from the start instead, which strict mode accepts.
      sql "$i" "STOP SLAVE; RESET SLAVE ALL; RESET MASTER; SET GLOBAL gtid_slave_pos = ''"
      replicate_from "$i" 0
    done
    local pos; pos=$(sql 0 'SELECT @@gtid_binlog_pos')
    for ((i = 1; i < n; i++)); do wait_gtid "$i" "$pos"; done
  fi
  trap - EXIT
  log "cluster of $n started in $((SECONDS - t0)) s in $CLUSTER"
  echo "CLUSTER_DIR=$CLUSTER"
  echo "CLUSTER_SIZE=$n"
  if [ "$replicas" -eq 1 ]; then echo "CLUSTER_PRIMARY=0"; fi
  for ((i = 0; i < n; i++)); do print_server "$i"; done
}

cmd_stop() {
  CLUSTER=${1:?usage: $0 stop DIR}
  [ -d "$CLUSTER" ] || { log "$CLUSTER does not exist"; return 0; }
  local d pid jobs=()
  for d in "$CLUSTER"/s*; do
    [ -d "$d" ] || continue
    pid=$(cat "$d/mariadbd.pid" 2>/dev/null || echo 0)
    # A frozen server handles SIGTERM only once it runs again (mariadb.sh checks the pid is it).
    if [ "$pid" != 0 ] && tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF -- "--datadir=$d/data"; then
      kill -CONT "$pid" 2>/dev/null || true
    fi
    bash "$MARIADB_SH" stop "$d" &
    jobs+=($!)
  done
  local rc=0 j
  for j in "${jobs[@]}"; do wait "$j" || rc=1; done
  if [ -e "$CLUSTER/$MARKER" ]; then
    rm -rf "$CLUSTER"
  else
    log "$CLUSTER has no $MARKER: servers stopped, directory kept"
  fi
  return $rc
}

check_index() {
  CLUSTER=${1:?DIR missing}
  [ -e "$CLUSTER/$MARKER" ] || die "$CLUSTER is not a cluster started by $0"
  CLUSTER=$(cd "$CLUSTER" && pwd)
  if ! [[ "${2:-}" =~ ^[0-9]+$ ]] || [ "$2" -ge "$(size_of)" ]; then die "no server '${2:-}' in $CLUSTER"; fi
}

cmd_kill() {
  check_index "$@"
  local i=$2 pid; pid=$(pid_of "$i")
  if ! ours "$pid" "$i"; then log "s$i (pid $pid) is not running"; return 0; fi
  log "kill -9 s$i (pid $pid)"
  kill -KILL "$pid"
  for _ in $(seq 1 100); do alive "$pid" || return 0; sleep 0.1; done
  die "s$i (pid $pid) still runs 10 s after SIGKILL"
}

cmd_restart() {
  check_index "$@"
  local i=$2 p
  if ours "$(pid_of "$i")" "$i"; then kill -CONT "$(pid_of "$i")" 2>/dev/null || true; fi
  log "restarting s$i on port $(port_of "$i")"
  MARIADB_PROFILE=production MARIADB_SERVER_ID=$(cat "$(sdir "$i")/server-id") \
    MARIADB_EXTRA_ARGS="$(launch_env "$i")" bash "$MARIADB_SH" restart "$(sdir "$i")" >/dev/null
  p=$(primary_of)
  if [ "$(role_of "$i")" = replica ] && [ -n "$p" ] && [ "$p" != "$i" ]; then
    if answers "$p"; then
      replicate_from "$i" "$p"
    else
      log "s$i: the primary s$p does not answer; replicating from it anyway (retried every second)"
      sql "$i" "CHANGE MASTER TO MASTER_PORT = $(port_of "$p"); START SLAVE"
    fi
  fi
  print_server "$i"
}

cmd_promote() {
  check_index "$@"
  local i=$2 n old j pos
  n=$(size_of); old=$(primary_of)
  [ -n "$old" ] || die "$CLUSTER is not a replicated cluster (start --replicas)"
  if [ "$old" = "$i" ]; then log "s$i is the primary already"; echo "CLUSTER_PRIMARY=$i"; return 0; fi
  answers "$i" || die "s$i does not answer: cannot promote it"
  local live=()
  for ((j = 0; j < n; j++)); do
    [ "$j" != "$old" ] || continue
    if answers "$j"; then live+=("$j"); else log "s$j does not answer: skipped"; fi
  done
  if answers "$old"; then
    # Switchover: no write reaches the old primary any more (except from root); every live
    # replica applies all it wrote.
    log "switchover: s$old made read-only; replicas catch up"
    sql "$old" 'SET GLOBAL read_only = 1'
    pos=$(sql "$old" 'SELECT @@gtid_binlog_pos')
    for j in "${live[@]}"; do wait_gtid "$j" "$pos"; done
    # Its own GTIDs are where it continues from as a replica.
    sql "$old" "SET GLOBAL gtid_slave_pos = @@gtid_binlog_pos"
    live+=("$old")
  else
    log "failover: the primary s$old does not answer; replicas apply what they received"
    set_role "$old" former-primary
    for j in "${live[@]}"; do drain_relay_log "$j"; done
  fi
  log "promoting s$i"
  sql "$i" 'STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = 0'
  set_role "$i" primary
  echo "$i" > "$CLUSTER/primary"
  local rc=0
  for j in "${live[@]}"; do
    [ "$j" != "$i" ] || continue
    log "s$j: replicating from s$i"
    replicate_from "$j" "$i" || rc=1
  done
  echo "CLUSTER_PRIMARY=$i"
  return $rc
}

cmd_rejoin() {
  check_index "$@"
  local i=$2 p; p=$(primary_of)
  [ -n "$p" ] || die "$CLUSTER is not a replicated cluster"
  [ "$p" != "$i" ] || die "s$i is the primary"
  answers "$i" || die "s$i does not answer"
  answers "$p" || die "the primary s$p does not answer"
  if [ "$(role_of "$i")" != replica ]; then
    # A former primary continues from its own history.
    sql "$i" 'STOP SLAVE; SET GLOBAL read_only = 1; SET GLOBAL gtid_slave_pos = @@gtid_binlog_pos'
  fi
  log "s$i: replicating from s$p"
  replicate_from "$i" "$p"
}

case "${1:-}" in
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  kill) shift; cmd_kill "$@" ;;
  restart) shift; cmd_restart "$@" ;;
  promote) shift; cmd_promote "$@" ;;
  rejoin) shift; cmd_rejoin "$@" ;;
  *) log "usage: $0 start [--replicas] DIR N | stop DIR | kill DIR I | restart DIR I | promote DIR I | rejoin DIR I"; exit 2 ;;
esac
