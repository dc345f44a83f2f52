#!/bin/bash
# Local /bin/true jobs, A/B: CPU per job of the server, the spawners and the jobs themselves (the
# spawners' reaped children), plus end-to-end jobs/s, for two runyard binaries interleaved, with
# the two-loop spawn ceiling measured in every repetition (as scripts/compare/run.sh does).
#   scripts/local-ab.sh A_BIN B_BIN [REPS]     (env: N jobs per run, 1000; LC concurrency, 16;
#                                               N_CEIL /bin/true per ceiling loop, 2000;
#                                               SPAWNERS_A, SPAWNERS_B: worker.spawners, unset:
#                                               the binary's default; builds before session 26
#                                               have one spawner and refuse the key)
# Each run starts `A_BIN serve` with a local runner of /bin/true, warms it up with 200 jobs, then
# runs `bench --server ... --only local --local-jobs N --connections 32 --trickle-jobs 0` and reads
# utime+stime (and the spawners' cutime+cstime) from /proc/PID/stat before and after, and the
# machine's idle share (/proc/stat) over the run, its ramp-up and read-back included. CPU per job
# does not depend much on what else runs on the machine; jobs/s does.
set -u
A=$1; B=$2; REPS=${3:-2}; N=${N:-1000}; LC=${LC:-16}; N_CEIL=${N_CEIL:-2000}
hz=$(getconf CLK_TCK)
cpu() { awk '{print $14+$15, $16+$17}' "/proc/$1/stat"; }
# The spawners' own CPU and their reaped children's (the jobs'), summed over every spawner.
cpus() { local a=0 b=0 x y p; for p in $1; do read -r x y < <(cpu "$p"); a=$((a + x)); b=$((b + y)); done; echo "$a $b"; }
run() { # BIN TAG SPAWNERS
  local bin=$1 tag=$2 spawners=$3 d port spid sp s0 s1 p0 p1 c0 c1 x rate
  d=$(mktemp -d /tmp/runyard-local-ab-XXXX)
  cat >"$d/runyard.toml" <<T
data_dir = "$d/data"
[worker]
shutdown_grace = "5s"
${spawners:+spawners = $spawners}
[store]
synchronous = "normal"
[[runners]]
name = "bench-local"
kind = "local"
types = ["bench.true"]
command = ["/bin/true"]
concurrency = $LC
max_attempts = 1
[[runners]]
name = "bench-service"
kind = "service"
types = ["bench.noop"]
operation = "runyard.noop"
concurrency = 16
max_attempts = 1
T
  port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  RUNYARD_LOG=warn "$bin" serve --config "$d/runyard.toml" --listen "127.0.0.1:$port" >"$d/log" 2>&1 &
  spid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
  sp=$(pgrep -P "$spid" | tr '\n' ' ')
  "$bin" bench --server "http://127.0.0.1:$port" --only local --local-jobs 200 --warmup 0 \
    --connections 32 --trickle-jobs 0 >/dev/null 2>&1
  read -r s0 x < <(cpu "$spid"); read -r p0 c0 < <(cpus "$sp"); read -r -a m0 < /proc/stat
  "$bin" bench --server "http://127.0.0.1:$port" --only local --local-jobs "$N" --warmup 0 \
    --connections 32 --trickle-jobs 0 --json >"$d/out.json" 2>"$d/err"
  read -r s1 x < <(cpu "$spid"); read -r p1 c1 < <(cpus "$sp"); read -r -a m1 < /proc/stat
  rate=$(python3 -c "import json;d=json.JSONDecoder().raw_decode(open('$d/out.json').read().lstrip())[0];r=[x for x in d['results'] if x['scenario']=='burst'][0];print(round(r['e2e_rate']), 'not ok', r['not_success'])" 2>/dev/null)
  python3 -c "n=$N;hz=$hz;m0='${m0[*]}'.split()[1:];m1='${m1[*]}'.split()[1:];d=[int(b)-int(a) for a,b in zip(m0,m1)]
print('$tag jobs/s', '$rate', '| CPU ms/job: server %.3f spawners %.3f jobs %.3f' % (($s1-$s0)/hz*1000/n, ($p1-$p0)/hz*1000/n, ($c1-$c0)/hz*1000/n), '| machine idle %.1f%%' % (100*d[3]/sum(d[:8])))"
  kill "$spid"; wait "$spid" 2>/dev/null; rm -rf "$d"
}
for rep in $(seq "$REPS"); do
  t0=$(date +%s.%N); for _ in 1 2; do (for _ in $(seq "$N_CEIL"); do /bin/true; done) & done; wait
  t1=$(date +%s.%N); python3 -c "print('rep $rep ceiling jobs/s', round(2*$N_CEIL/($t1-$t0)))"
  if [ $((rep % 2)) = 1 ]; then run "$A" "rep $rep A" "${SPAWNERS_A:-}"; run "$B" "rep $rep B" "${SPAWNERS_B:-}"
  else run "$B" "rep $rep B" "${SPAWNERS_B:-}"; run "$A" "rep $rep A" "${SPAWNERS_A:-}"; fi
done
