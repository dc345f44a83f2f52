#!/usr/bin/env bash
# Flame graphs of where the server's time goes, one per shape of load of scripts/compare/run.sh
# (embedded store, the server `runyard bench` starts; issue 14):
#
#   scripts/flame.sh BIN OUTDIR [SHAPE ...]   # SHAPE: sequential inflight batch true (default: all)
#
# Each shape runs `BIN bench` under scripts/cpu-per-job.py with `perf record` (dwarf call graphs,
# 499 Hz) attached to the server for the measured run, folds the samples with
# `inferno-collapse-perf` and draws OUTDIR/SHAPE.svg with `inferno-flamegraph` (`cargo install
# inferno`). Prints each shape's CPU per job and the share of samples by thread. BIN must be a
# release build with debug info (the workspace's release profile keeps it). Sizes: N_SEQ, N_INF,
# N_BATCH, N_TRUE (defaults 2000, 5000, 5000, 1000). Kills nothing it did not start.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "$1"); out=$2; shift 2
shapes=("$@"); [ ${#shapes[@]} -gt 0 ] || shapes=(sequential inflight batch true)
mkdir -p "$out"
command -v inferno-flamegraph >/dev/null || { echo "needs inferno: cargo install inferno" >&2; exit 1; }
N_SEQ=${N_SEQ:-2000}; N_INF=${N_INF:-5000}; N_BATCH=${N_BATCH:-5000}; N_TRUE=${N_TRUE:-1000}
for shape in "${shapes[@]}"; do
  case $shape in
    sequential) args="--only service --jobs $N_SEQ --connections 1 --trickle-jobs 0" ;;
    inflight) args="--only service --jobs $N_INF --connections 32 --trickle-jobs 0" ;;
    batch) args="--only service --jobs $N_BATCH --connections 1 --batch-size 1000 --trickle-jobs 0" ;;
    true) args="--only local --local-jobs $N_TRUE --connections 32 --trickle-jobs 0 --local-concurrency 16" ;;
    *) echo "unknown shape $shape" >&2; exit 2 ;;
  esac
  data=$out/$shape.perf
  # shellcheck disable=SC2086
  res=$(PERF=$data RUNYARD_LOG=warn python3 scripts/cpu-per-job.py "$bin" --json --warmup 200 $args)
  perf script -i "$data" 2>/dev/null | inferno-collapse-perf >"$out/$shape.folded"
  inferno-flamegraph --title "runyard server, $shape ($args)" --minwidth 1 \
    <"$out/$shape.folded" >"$out/$shape.svg"
  rm -f "$data"
  echo "== $shape: $res"
  python3 - "$out/$shape.folded" <<'PY'
import sys, collections
by = collections.Counter(); total = 0
for line in open(sys.argv[1]):
    stack, n = line.rsplit(' ', 1); n = int(n); total += n
    by[stack.split(';', 1)[0]] += n
for t, n in by.most_common(8):
    print(f'   {100 * n / total:5.1f}%  {t}')
PY
done
