#!/usr/bin/env bash
# Builds runyard's cargo-fuzz targets (fuzz/, nightly toolchain) and runs each one for SECONDS
# (default 30) from its committed corpus (fuzz/corpus/<target>/); fails on any crash, timeout or
# out-of-memory, printing the input that did it.
#
#   scripts/fuzz.sh                 30 s per target (CI runs a shorter form from scripts/test.sh)
#   scripts/fuzz.sh 600             the long form: 10 minutes per target
#   scripts/fuzz.sh 60 hook_verify  some targets only
#   scripts/fuzz.sh --cmin          minimise the committed corpora (after a long run whose finds
#                                   were kept with FUZZ_KEEP=1)
#
# The committed corpus is only read: new inputs go to a temporary directory, unless FUZZ_KEEP=1,
# which adds them to fuzz/corpus/<target>/ (then run --cmin before committing).
# FUZZ_SANITIZER=address builds with AddressSanitizer (slower to build and run; the default,
# none, keeps Rust's checks: bounds, overflow (debug assertions are on), unwrap, RefCell...).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

CMIN=0
if [ "${1:-}" = "--cmin" ]; then
  CMIN=1
  shift
fi
SECS=${1:-30}
[ $# -gt 0 ] && shift
SANITIZER=${FUZZ_SANITIZER:-none}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/fuzz/target}
TRIPLE=$(rustc +nightly -vV 2>/dev/null | sed -n 's/^host: //p' || true)

log() { printf '\n==> %s\n' "$*"; }

if ! rustup toolchain list | grep -q '^nightly'; then
  log "installing the nightly toolchain"
  rustup toolchain install nightly --profile minimal
  TRIPLE=$(rustc +nightly -vV | sed -n 's/^host: //p')
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  log "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

log "building fuzz targets (sanitizer: $SANITIZER)"
start=$(date +%s)
(cd fuzz && cargo +nightly fuzz build --debug-assertions --sanitizer "$SANITIZER" \
  --target-dir "$TARGET_DIR")
echo "built in $(($(date +%s) - start)) s"
BIN="$TARGET_DIR/$TRIPLE/release"

if [ $# -gt 0 ]; then
  TARGETS=("$@")
else
  mapfile -t TARGETS < <(cd fuzz && cargo +nightly fuzz list)
fi

# The in-memory servers of the targets keep their data under TMPDIR.
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export TMPDIR="$WORK"

if [ $CMIN -eq 1 ]; then
  for t in "${TARGETS[@]}"; do
    mkdir -p "$WORK/min-$t" "fuzz/corpus/$t"
    before=$(find "fuzz/corpus/$t" -type f | wc -l)
    "$BIN/$t" -set_cover_merge=1 "$WORK/min-$t" "fuzz/corpus/$t" >"$WORK/$t.cmin.log" 2>&1 || {
      tail -20 "$WORK/$t.cmin.log"
      exit 1
    }
    # Keep the committed corpus small: at most FUZZ_CORPUS_MAX (200) inputs, the smallest.
    ls -S "$WORK/min-$t" | head -n -"${FUZZ_CORPUS_MAX:-200}" | while read -r f; do
      rm -f "$WORK/min-$t/$f"
    done
    rm -rf "fuzz/corpus/$t"
    mv "$WORK/min-$t" "fuzz/corpus/$t"
    echo "$t: $before -> $(find "fuzz/corpus/$t" -type f | wc -l) inputs"
  done
  exit 0
fi

failed=()
printf '\n%-18s %8s %10s %10s %8s\n' target seconds runs exec/s corpus
for t in "${TARGETS[@]}"; do
  mkdir -p "$WORK/new-$t" "$WORK/crash-$t" "fuzz/corpus/$t"
  corpus=("$WORK/new-$t" "fuzz/corpus/$t")
  [ "${FUZZ_KEEP:-0}" = 1 ] && corpus=("fuzz/corpus/$t")
  dict=()
  [ -f "fuzz/dicts/$t.dict" ] && dict=("-dict=fuzz/dicts/$t.dict")
  t0=$(date +%s)
  status=0
  "$BIN/$t" "${corpus[@]}" "${dict[@]}" -max_total_time="$SECS" -timeout=30 \
    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$WORK/crash-$t/" \
    >"$WORK/$t.log" 2>&1 || status=$?
  took=$(($(date +%s) - t0))
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$WORK/$t.log" | tail -1 || true)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$WORK/$t.log" | tail -1 || true)
  size=$({ grep -o 'corp: [0-9]*' "$WORK/$t.log" || true; } | tail -1 | sed 's/corp: //')
  printf '%-18s %8s %10s %10s %8s\n' "$t" "$took" "${runs:-?}" "${speed:-?}" "${size:-?}"
  if [ $status -ne 0 ]; then
    failed+=("$t")
    echo "---- $t FAILED (exit $status): end of its log ----"
    grep -v '^#[0-9]' "$WORK/$t.log" | tail -60
    for a in "$WORK/crash-$t"/*; do
      [ -f "$a" ] || continue
      mkdir -p fuzz/artifacts/"$t"
      cp "$a" fuzz/artifacts/"$t"/
      echo "input kept in fuzz/artifacts/$t/$(basename "$a") (base64: $(head -c 2048 "$a" | base64 -w0))"
      echo "reproduce: $BIN/$t fuzz/artifacts/$t/$(basename "$a")"
    done
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing found crashes in: ${failed[*]}" >&2
  exit 1
fi
echo "no crash in ${#TARGETS[@]} targets"
