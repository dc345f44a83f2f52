#!/usr/bin/env bash
# Interleaved A/B/... of any number of runyard builds over five shapes (docs/benchmarks.md
# "Session 41"): embedded one producer ("seq"), 32 in flight ("inf"), batch submits ("batch")
# through scripts/cpu-per-job.py (e2e jobs/s and the server's CPU per job), and on Redis with 2
# worker nodes and compact records one producer ("rseq") and 32 in flight ("rinf") through
# scripts/redis-bench.sh (e2e jobs/s and the CPU seconds of redis-server, the API and the
# workers together). Each repetition runs every shape of every build in turn.
#
#   scripts/builds-ab.sh OUTDIR REPS BIN...
#
# Sizes: N_SEQ, N_INF, N_BATCH (defaults 8000, 40000, 50000). Appends to OUTDIR/results.txt and
# prints the medians (and ranges) per shape and build, with ratios against the first build.
set -u
out=$1; reps=$2; shift 2
mkdir -p "$out"
cd "$(dirname "$0")/.."
N_SEQ=${N_SEQ:-8000}; N_INF=${N_INF:-40000}; N_BATCH=${N_BATCH:-50000}
for rep in $(seq "$reps"); do
  for bin in "$@"; do
    side=$(basename "$bin")
    for shape in seq inf batch; do
      case $shape in
        seq) args="--jobs $N_SEQ --connections 1" ;;
        inf) args="--jobs $N_INF --connections 32" ;;
        batch) args="--jobs $N_BATCH --connections 1 --batch-size 1000" ;;
      esac
      # shellcheck disable=SC2086
      r=$(python3 scripts/cpu-per-job.py "$bin" --json --warmup 200 --only service $args --trickle-jobs 0)
      echo "emb $shape $side $rep $r" >>"$out/results.txt"
    done
    for shape in rseq rinf; do
      case $shape in
        rseq) args="--jobs $N_SEQ --connections 1" ;;
        rinf) args="--jobs $N_INF --connections 32" ;;
      esac
      log="$out/$shape-$side-$rep.log"
      # shellcheck disable=SC2086
      RUNYARD_STORE__RECORDS=compact RUNYARD=$bin CMDSTATS=0 scripts/redis-bench.sh 2 --json \
        --only service $args --trickle-jobs 0 --warmup 200 >"$log" 2>&1
      rate=$(grep -o '"e2e_rate": *[0-9.]*' "$log" | head -1 | grep -oE '[0-9.]+$')
      cpus=$(grep -E "cpu: [0-9.]+ s" "$log" | grep -v "bench client" | grep -oE "[0-9.]+ s" |
        awk '{s+=$1} END {print s}')
      echo "redis $shape $side $rep {\"rate\": ${rate:-null}, \"servers_cpu\": ${cpus:-null}}" >>"$out/results.txt"
    done
  done
done
python3 - "$out/results.txt" <<'PY'
import sys, json, statistics as st, collections
d = collections.defaultdict(list); c = collections.defaultdict(list)
for line in open(sys.argv[1]):
    p = line.split(' ', 4)
    kind, shape, side, rep, js = p
    j = json.loads(js)
    if kind == 'emb' and not j.get('rates'):
        print('failed run:', line.strip()[:200]); continue
    if kind == 'redis' and (j['rate'] is None or j['servers_cpu'] is None):
        print('failed run:', line.strip()[:200]); continue
    if kind == 'emb':
        d[(shape, side)].append(j['rates']['burst']); c[(shape, side)].append(j['cpu_ms_per_job']*1000)
    else:
        d[(shape, side)].append(j['rate']); c[(shape, side)].append(j['servers_cpu'])
sides = []
for (s, side) in d:
    if side not in sides: sides.append(side)
base = sides[0]
for shape in ['seq', 'inf', 'batch', 'rseq', 'rinf']:
    print(shape)
    for side in sides:
        r = d[(shape, side)]; cc = c[(shape, side)]
        if not r: continue
        print(f"  {side:22s} rate med {st.median(r):8.0f} ({min(r):.0f}-{max(r):.0f}) x{st.median(r)/st.median(d[(shape, base)]):.3f}  cpu med {st.median(cc):7.1f} x{st.median(cc)/st.median(c[(shape, base)]):.3f}")
PY
