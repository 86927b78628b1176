#!/usr/bin/env bash
# Builds sluice's Debian package with cargo-deb (installed if missing): the proxy, the load
# generator (sluice-load), the systemd unit and a default /etc/sluice/sluice.toml, as
# [package.metadata.deb] in Cargo.toml lists them.
#
#   scripts/package.sh                 release build, package in $TARGET/debian/
#   SLUICE_PACKAGE_PROFILE=dev scripts/package.sh   package the debug build (quick; for tests)
#   scripts/package.sh --output DIR    more arguments go to `cargo deb`
#
# Install with `dpkg -i sluice_*.deb`, then edit /etc/sluice/sluice.toml and
# `systemctl enable --now sluice` (README, "Deploying").
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib/deps.sh
. scripts/lib/deps.sh

ensure_rust
ensure_cargo_deb
if ! cargo deb --version >/dev/null 2>&1; then
  echo "package.sh: ${SLUICE_CARGO_DEB_UNAVAILABLE:-cargo-deb is not available}" >&2
  exit 1
fi
PROFILE=${SLUICE_PACKAGE_PROFILE:-release}
# cargo deb would build only the sluice crate; the load generator is another workspace member,
# so both are built here and cargo deb packages what is built.
cargo build --profile "$PROFILE" -p sluice -p sluice-load --bin sluice --bin sluice-load
cargo deb -p sluice --no-build --profile "$PROFILE" "$@"
