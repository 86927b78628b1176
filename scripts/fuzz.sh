#!/usr/bin/env bash
# Build sluice's fuzz targets (fuzz/, cargo-fuzz + libFuzzer) and run each for a bounded time on a
# scratch copy of its committed seed corpus.
#
#   scripts/fuzz.sh [SECONDS]      every target, SECONDS each (default 30)
#
# Environment:
#   FUZZ_TARGETS="sql framer"      only these targets (default: all of `cargo fuzz list`)
#   FUZZ_SANITIZER=none            build without AddressSanitizer (default: address)
#   FUZZ_KEEP_CORPUS=1             keep fuzz/corpus-run/ from the last run instead of recopying
#   FUZZ_BUILD_TIMEOUT=SECONDS     bound on the build (default 2400)
#
# Runs with -malloc_limit_mb=256 (any single allocation above 256 MiB is a crash: that is how an
# allocation sized by an untrusted length field shows), -rss_limit_mb=2048 and -timeout=10 (one
# input taking over 10 s is a crash). Exits non-zero if any target crashed, printing the artifact
# path (under fuzz/artifacts/<target>/). The toolchain is stable: RUSTC_BOOTSTRAP=1 lets
# cargo-fuzz use the -Z flags it needs (sanitizer, coverage instrumentation).
set -euo pipefail

SECS=${1:-30}
case $SECS in '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;; esac
ROOT=$(cd "$(dirname "$0")/.." && pwd)
FUZZ=$ROOT/fuzz
SANITIZER=${FUZZ_SANITIZER:-address}
export RUSTC_BOOTSTRAP=1

log() { echo "fuzz.sh: $*" >&2; }

# libFuzzer itself is C++, built by libfuzzer-sys.
# shellcheck source=scripts/lib/deps.sh
. "$ROOT/scripts/lib/deps.sh"
command -v c++ >/dev/null 2>&1 || apt_install g++

if ! cargo fuzz --version >/dev/null 2>&1; then
  log "installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi

cd "$FUZZ"
TARGETS=${FUZZ_TARGETS:-$(cargo fuzz list)}
HOST=$(rustc -vV | sed -n 's/^host: //p')

log "building (sanitizer: $SANITIZER)"
# Release with overflow checks and debug assertions: an arithmetic overflow is a crash too.
timeout "${FUZZ_BUILD_TIMEOUT:-2400}" \
  cargo fuzz build -O -a --sanitizer "$SANITIZER" --target "$HOST"
BIN=$FUZZ/target/$HOST/release

failed=0
mkdir -p "$FUZZ/corpus-run" "$FUZZ/artifacts"
for t in $TARGETS; do
  run=$FUZZ/corpus-run/$t
  if [ -z "${FUZZ_KEEP_CORPUS:-}" ] || [ ! -d "$run" ]; then
    rm -rf "$run"
    mkdir -p "$run"
    if [ -d "$FUZZ/corpus/$t" ]; then cp -r "$FUZZ/corpus/$t/." "$run/"; fi
  fi
  art=$FUZZ/artifacts/$t
  mkdir -p "$art"
  logf=$FUZZ/artifacts/$t.log
  log "running $t for ${SECS}s ($(find "$run" -type f | wc -l) inputs)"
  rc=0
  # The outer timeout only guards against a hung process; libFuzzer stops itself at SECS.
  timeout --kill-after=10 $((SECS + 120)) "$BIN/$t" "$run" \
    -max_total_time="$SECS" -malloc_limit_mb=256 -rss_limit_mb=2048 -timeout=10 \
    -artifact_prefix="$art/" -print_final_stats=1 >"$logf" 2>&1 || rc=$?
  grep -E '^#[0-9]+[[:space:]]+DONE' "$logf" | tail -n 1 | sed "s/^/fuzz.sh: $t: /" >&2 || true
  if [ "$rc" -ne 0 ]; then
    failed=1
    log "$t FAILED (exit $rc); log: $logf"
    grep -E 'panicked at|ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer)|==ERROR|SUMMARY' "$logf" | head -n 5 >&2 || true
    found=$(grep -oE 'Test unit written to [^ ]+' "$logf" | sed 's/Test unit written to //' || true)
    if [ -n "$found" ]; then
      for a in $found; do log "artifact: $a"; done
    else
      log "no artifact written (exit $rc): see the log"
    fi
  fi
done
if [ "$failed" -ne 0 ]; then
  log "crashes found; reproduce with: fuzz/target/$HOST/release/<target> <artifact>"
  exit 1
fi
log "all targets ran ${SECS}s without a crash"
