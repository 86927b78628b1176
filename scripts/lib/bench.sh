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
