#!/bin/bash
# A/B of two runyard binaries in one run of the machine (docs/benchmarks.md "Issue 8 ..."): runyard
# bench (service burst, 32 and 1 connections) embedded and on Redis with 2 workers, two
# interleaved repetitions of BEFORE and AFTER. Usage: scripts/bench-ab.sh BEFORE AFTER OUTDIR
set -u
B=$1; A=$2; O=$3; mkdir -p $O
cd "$(dirname "$0")/.."
for rep in 1 2; do
 for tag in before after; do
  bin=$B; [ $tag = after ] && bin=$A
  timeout 300 $bin bench --only service --jobs 10000 --trickle-jobs 1000 --json > $O/emb32-$tag-$rep.json 2>$O/emb32-$tag-$rep.err
  timeout 300 $bin bench --only service --jobs 3000 --connections 1 --trickle-jobs 200 --json > $O/emb1-$tag-$rep.json 2>$O/emb1-$tag-$rep.err
  RUNYARD=$bin timeout 300 scripts/redis-bench.sh 2 --only service --jobs 10000 --trickle-jobs 1000 --json > $O/red32-$tag-$rep.json 2>$O/red32-$tag-$rep.err
 done
done
python3 - "$O" <<'PY'
import json,sys,glob,statistics as st
O=sys.argv[1]
rows={}
for f in sorted(glob.glob(O+'/*.json')):
    name=f.split('/')[-1][:-5]; shape,tag,rep=name.split('-')
    try: d=json.JSONDecoder().raw_decode(open(f).read().lstrip())[0]
    except Exception as e: print(name,'unreadable',e); continue
    for r in d['results']:
        rows.setdefault((shape,r['scenario'],tag),[]).append((r['e2e_rate'],r['submit_to_start']['p99_ms'],r['not_success']))
for shape in ['emb32','emb1','red32']:
  for sc in ['burst','trickle']:
    b=rows.get((shape,sc,'before'),[]); a=rows.get((shape,sc,'after'),[])
    if not a or not b: continue
    mb=st.median([x[0] for x in b]); ma=st.median([x[0] for x in a])
    print(f"{shape:6} {sc:8} before e2e/s {[round(x[0]) for x in b]} p99 {[x[1] for x in b]} | after {[round(x[0]) for x in a]} p99 {[x[1] for x in a]} | ratio {ma/mb:.2f} notok {[x[2] for x in b+a]}")
PY
