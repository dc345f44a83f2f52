#!/usr/bin/env bash
# A release build of runyard optimised with a profile of its own hot paths (profile-guided
# optimisation, PGO; docs/benchmarks.md "Session 55: PGO"): an instrumented build runs the
# shapes of scripts/compare/ (one producer, 32 in flight, batch, idle trickle, local /bin/true
# jobs; embedded store, then Redis with two worker nodes), llvm-profdata merges what they
# recorded, and a second build uses it. Only runyard's Rust code is profiled: SQLite and the
# other C libraries are built as in a plain release build.
#
#   scripts/pgo-build.sh [OUT]        # default OUT: target/pgo/runyard
#
# Needs: the rustup component llvm-tools (`rustup component add llvm-tools-preview`, for
# llvm-profdata), redis-server (the Redis training). Takes two full release builds (about 25
# minutes on the 2-core machine) and a minute of training. Env: PGO_DIR (work directory,
# default target/pgo), PGO_JOBS (jobs per training shape, default 20000).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
work=$(realpath -m "${PGO_DIR:-target/pgo}")
out=$(realpath -m "${1:-$work/runyard}")
n=${PGO_JOBS:-20000}
host=$(rustc -vV | sed -n 's/^host: //p')
profdata="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"
if [ ! -x "$profdata" ]; then
  echo "pgo-build: llvm-profdata not found at $profdata: run \`rustup component add llvm-tools-preview\`" >&2
  exit 2
fi
command -v redis-server >/dev/null || { echo "pgo-build: redis-server not found (the Redis training needs it)" >&2; exit 2; }

# Separate target directories: the two builds' flags differ, and each would rebuild the other's.
rm -rf "$work/raw" && mkdir -p "$work/raw"
echo "== instrumented build"
RUSTFLAGS="-Cprofile-generate=$work/raw" CARGO_TARGET_DIR="$work/gen" cargo build --release -p runyard
gen="$work/gen/release/runyard"

echo "== training (each server writes its profile when it exits)"
shapes=(
  "--only service --jobs $((n / 5)) --connections 1 --trickle-jobs 0"
  "--only service --jobs $n --connections 32 --trickle-jobs 0"
  "--only service --jobs $n --connections 1 --batch-size 1000 --trickle-jobs 0"
  "--only service --jobs 0 --trickle-jobs 200 --trickle-rate 200"
)
for s in "${shapes[@]}"; do
  echo "   embedded: $s"
  # shellcheck disable=SC2086
  RUNYARD_LOG=warn "$gen" bench --json --warmup 200 $s >/dev/null
  echo "   redis: $s"
  # shellcheck disable=SC2086
  RUNYARD="$gen" scripts/redis-bench.sh 2 --json --warmup 200 $s >/dev/null 2>&1
done
echo "   embedded: local /bin/true jobs"
RUNYARD_LOG=warn "$gen" bench --json --warmup 200 --only local --local-jobs $((n / 10)) \
  --connections 32 --trickle-jobs 0 --local-concurrency 16 >/dev/null
files=$(find "$work/raw" -name '*.profraw' | wc -l)
[ "$files" -gt 0 ] || { echo "pgo-build: the training wrote no profile" >&2; exit 1; }
"$profdata" merge -o "$work/runyard.profdata" "$work/raw"
echo "   $files profiles merged into $work/runyard.profdata"

echo "== optimised build"
RUSTFLAGS="-Cprofile-use=$work/runyard.profdata" CARGO_TARGET_DIR="$work/use" \
  cargo build --release -p runyard
mkdir -p "$(dirname "$out")"
cp "$work/use/release/runyard" "$out"
echo "pgo-build: $out"
