#!/usr/bin/env bash
# A release build of runyard optimised with a profile of its own hot paths (profile-guided
# optimisation, PGO; docs/benchmarks.md "Session 55: PGO"): an instrumented build runs the
# shapes of scripts/compare/ (one producer, 32 in flight, batch, idle trickle, local /bin/true
# jobs; embedded store, then Redis with two worker nodes), llvm-profdata merges what they
# recorded, and a second build uses it. The Rust code (runyard and its Rust dependencies) is
# profiled; SQLite and the other C libraries are built as in a plain release build.
#
#   scripts/pgo-build.sh [OUT]        # default OUT: target/pgo/runyard
#
# Needs: the rustup component llvm-tools (`rustup component add llvm-tools-preview`, for
# llvm-profdata), redis-server and redis-cli (the Redis training), python3. Takes two full
# release builds (25-35 minutes on a 2-core machine) and about half a minute of training. Both
# builds compile the checked-out tree: it must not change meanwhile (checked before the second).
# Env: PGO_DIR (work directory, default target/pgo), PGO_JOBS (jobs per training shape, default
# 20000); RUSTFLAGS is kept and the PGO flags added to it.
set -euo pipefail
# OUT and PGO_DIR as given, relative to where the script was called from.
work=$(realpath -m "${PGO_DIR:-$(dirname "${BASH_SOURCE[0]}")/../target/pgo}")
out=$(realpath -m "${1:-$work/runyard}")
cd "$(dirname "${BASH_SOURCE[0]}")/.."
n=${PGO_JOBS:-20000}
host=$(rustc -vV | sed -n 's/^host: //p')
profdata="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"
if [ ! -x "$profdata" ]; then
  echo "pgo-build: llvm-profdata not found at $profdata: run \`rustup component add llvm-tools-preview\`" >&2
  exit 2
fi
for tool in redis-server redis-cli python3; do
  command -v "$tool" >/dev/null || { echo "pgo-build: $tool not found (the training needs it)" >&2; exit 2; }
done
if [ -n "${CARGO_ENCODED_RUSTFLAGS:-}" ]; then
  # Cargo would take it and drop RUSTFLAGS, the PGO flags with it.
  echo "pgo-build: CARGO_ENCODED_RUSTFLAGS is set: unset it (put its flags in RUSTFLAGS)" >&2
  exit 2
fi
tree_state() { git rev-parse HEAD 2>/dev/null; git status --porcelain 2>/dev/null; }
tree_at_start=$(tree_state)

echo "== instrumented build"
mkdir -p "$work/raw"
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$work/raw" CARGO_TARGET_DIR="$work/gen" \
  cargo build --release -p runyard
gen="$work/gen/release/runyard"
# Only the training's profiles: not an earlier run's, nor those of the build scripts and
# procedural macros, which were instrumented too and wrote theirs while the build ran.
rm -rf "$work/raw" && mkdir -p "$work/raw"

echo "== training (each process writes its profile when it exits)"
shapes=(
  "--only service --jobs $((n / 5)) --connections 1 --trickle-jobs 0"
  "--only service --jobs $n --connections 32 --trickle-jobs 0"
  "--only service --jobs $n --connections 1 --batch-size 1000 --trickle-jobs 0"
  "--only service --jobs 0 --trickle-jobs 200 --trickle-rate 200"
  "--only local --local-jobs $((n / 10)) --connections 32 --trickle-jobs 0 --local-concurrency 16"
)
train() { # name command...: its output in $work/train-NAME.log, shown when it fails
  local log="$work/train-$1.log"
  shift
  if ! "$@" >"$log" 2>&1; then
    echo "pgo-build: training step failed: $*" >&2
    tail -20 "$log" >&2
    exit 1
  fi
}
i=0
for s in "${shapes[@]}"; do
  i=$((i + 1))
  echo "   embedded: $s"
  # shellcheck disable=SC2086
  RUNYARD_LOG=warn train "embedded-$i" "$gen" bench --json --warmup 200 $s
  case $s in *local*) continue ;; esac # Redis workers run local jobs as the embedded store does
  echo "   redis: $s"
  # shellcheck disable=SC2086
  RUNYARD="$gen" train "redis-$i" scripts/redis-bench.sh 2 --json --warmup 200 $s
done
files=$(find "$work/raw" -name '*.profraw' | wc -l)
[ "$files" -gt 0 ] || { echo "pgo-build: the training wrote no profile" >&2; exit 1; }
"$profdata" merge -o "$work/runyard.profdata" "$work/raw"
echo "   $files profile files merged into $work/runyard.profdata"

if [ "$(tree_state)" != "$tree_at_start" ]; then
  echo "pgo-build: the checked-out tree changed since the instrumented build: run again" >&2
  exit 1
fi
echo "== optimised build"
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$work/runyard.profdata" CARGO_TARGET_DIR="$work/use" \
  cargo build --release -p runyard
mkdir -p "$(dirname "$out")"
cp "$work/use/release/runyard" "$out"
echo "pgo-build: $out"
