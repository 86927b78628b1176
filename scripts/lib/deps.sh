# Shared helpers for sluice's scripts: install what a fresh Debian machine lacks.
# shellcheck shell=bash

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

APT_UPDATED=${APT_UPDATED:-}
apt_install() {
  # apt_install PACKAGE... : installs the packages that are not installed yet.
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ -z "$APT_UPDATED" ]; then
    echo "deps: apt-get update" >&2
    as_root apt-get update -qq >&2
    APT_UPDATED=1
  fi
  echo "deps: installing ${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >&2
}

ensure_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    echo "deps: cargo not found; install Rust with rustup (https://rustup.rs) first" >&2
    exit 1
  fi
}

ensure_nextest() {
  if ! cargo nextest --version >/dev/null 2>&1; then
    echo "deps: installing cargo-nextest" >&2
    cargo install --locked cargo-nextest >&2
  fi
}

ensure_mariadb() {
  command -v mariadbd >/dev/null 2>&1 && command -v mariadb >/dev/null 2>&1 \
    || apt_install mariadb-server mariadb-client
}

# A Python with the two drivers the tests use, in a private virtualenv under target/.
ensure_python_drivers() {
  local venv="$ROOT/target/test-python"
  if [ ! -x "$venv/bin/python" ]; then
    command -v python3 >/dev/null 2>&1 || apt_install python3
    python3 -m venv "$venv" >/dev/null 2>&1 || { apt_install python3-venv; rm -rf "$venv"; python3 -m venv "$venv"; }
  fi
  if ! "$venv/bin/python" -c 'import pymysql, mysql.connector' >/dev/null 2>&1; then
    echo "deps: installing PyMySQL and mysql-connector-python into $venv" >&2
    "$venv/bin/python" -m pip install -q --disable-pip-version-check PyMySQL mysql-connector-python >&2
  fi
  export SLUICE_TEST_PYTHON="$venv/bin/python"
}

ensure_node_drivers() {
  command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || apt_install nodejs npm
  if [ ! -d "$ROOT/tests/drivers/node/node_modules/mysql2" ]; then
    echo "deps: installing mysql2 (npm)" >&2
    (cd "$ROOT/tests/drivers/node" && npm install --no-audit --no-fund --loglevel=error >&2)
  fi
}

ensure_java_driver() {
  command -v javac >/dev/null 2>&1 || apt_install default-jdk-headless
  apt_install libmariadb-java
  export SLUICE_TEST_JDBC_JAR=/usr/share/java/mariadb-java-client.jar
}

ensure_sysbench() {
  command -v sysbench >/dev/null 2>&1 || apt_install sysbench
}

# Prometheus (Debian's package) for tests/grafana.rs, which scrapes a sluice with a private
# Prometheus of its own on a free port. The package's postinst starts a system service; none is
# wanted (no systemd here, and a service on :9090 is nobody's): a policy-rc.d that denies starts
# covers the install (Docker images ship one already), and a service that started anyway is
# stopped and disabled afterwards. No recommends: prometheus-node-exporter would be a service too.
ensure_prometheus() {
  [ -x /usr/bin/prometheus ] && return 0
  local policy=/usr/sbin/policy-rc.d made_policy=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# Written by sluice scripts/lib/deps.sh during one install; removed after.\nexit 101\n' \
      | as_root tee "$policy" >/dev/null
    as_root chmod 755 "$policy"
    made_policy=1
  fi
  if [ -z "$APT_UPDATED" ]; then
    echo "deps: apt-get update" >&2
    as_root apt-get update -qq >&2
    APT_UPDATED=1
  fi
  echo "deps: installing prometheus" >&2
  local rc=0
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends prometheus >&2 || rc=$?
  if [ -n "$made_policy" ]; then as_root rm -f "$policy"; fi
  if [ -d /run/systemd/system ]; then
    as_root systemctl disable --now prometheus >/dev/null 2>&1 || true
  elif [ -s /run/prometheus/prometheus.pid ]; then
    # The package's init script started one (its pid file): stop that process only.
    as_root kill "$(cat /run/prometheus/prometheus.pid)" 2>/dev/null || true
  fi
  if [ "$rc" -ne 0 ] || [ ! -x /usr/bin/prometheus ]; then
    echo "deps: installing prometheus failed" >&2
    exit 1
  fi
}

# cargo-deb for the Debian package (scripts/package.sh, tests/package.rs), installed with cargo
# as nextest is; dpkg-dev for the shared-library dependencies it computes ($auto). When the
# install fails, SLUICE_CARGO_DEB_UNAVAILABLE says why: tests/package.rs then skips with that
# reason (and fails when cargo-deb is missing without one).
CARGO_DEB_VERSION=3.8.0
ensure_cargo_deb() {
  apt_install dpkg-dev
  cargo deb --version >/dev/null 2>&1 && return 0
  echo "deps: installing cargo-deb" >&2
  local log
  log=$(mktemp)
  # A known version: the test packages the debug build (`--profile dev`), which 3.8 accepts
  # with a warning that later versions may turn into an error.
  if ! cargo install --locked cargo-deb --version "$CARGO_DEB_VERSION" >"$log" 2>&1; then
    SLUICE_CARGO_DEB_UNAVAILABLE="cargo install --locked cargo-deb --version $CARGO_DEB_VERSION failed: $(tail -n 3 "$log" | tr '\n' ' ')"
    export SLUICE_CARGO_DEB_UNAVAILABLE
    echo "deps: $SLUICE_CARGO_DEB_UNAVAILABLE" >&2
  fi
  rm -f "$log"
}
