#!/bin/bash
# Interleaved A/B of the server's CPU seconds per job (docs/benchmarks.md "Embedded store, session 6"):
# REPS x (A, B) of scripts/cpu-per-job.py on one-connection (3,000 jobs) and 32-connection (10,000
# jobs) embedded service bursts. Usage: scripts/cpu-ab.sh BIN_A BIN_B REPS OUTFILE
A=$(realpath "$1"); B=$(realpath "$2"); R=$3; O=$(realpath -m "$4"); : > "$O"
cd "$(dirname "$0")/.."
for rep in $(seq $R); do for t in A B; do
  bin=$A; [ $t = B ] && bin=$B
  echo "$t c1 $(scripts/cpu-per-job.py $bin --only service --jobs 3000 --connections 1 --trickle-jobs 0 --json)" >> $O
  echo "$t c32 $(scripts/cpu-per-job.py $bin --only service --jobs 10000 --connections 32 --trickle-jobs 0 --json)" >> $O
done; done
python3 - $O <<'PY'
import json,sys,statistics as st
r={}
for l in open(sys.argv[1]):
    t,s,j=l.split(' ',2); d=json.loads(j)
    r.setdefault((t,s),[]).append((d['cpu_ms_per_job'],d.get('rates',{}).get('burst')))
for s in ['c1','c32']:
    a=r.get(('A',s),[]); b=r.get(('B',s),[])
    if a and b:
        print(f"{s}: A cpu ms/job {[x[0] for x in a]} e2e/s {[x[1] for x in a]} | B cpu ms/job {[x[0] for x in b]} e2e/s {[x[1] for x in b]} | B/A cpu {st.median([x[0] for x in b])/st.median([x[0] for x in a]):.2f} rate {st.median([x[1] for x in b])/st.median([x[1] for x in a]):.2f}")
PY
