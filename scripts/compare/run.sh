#!/usr/bin/env bash
# runyard against BullMQ 5 (Node) and Celery 5 (Python), one protocol, one run, interleaved:
#
#   scripts/compare/run.sh            # REPS=3 repetitions, results in target/compare/
#   QUICK=1 scripts/compare/run.sh    # tiny sizes, one repetition: checks that the harness runs
#   RUNYARD=new RUNYARD_BASE=old scripts/compare/run.sh  # also an older build, in the same rotation:
#                                     # the report adds this build against it, shape by shape
#
# Shapes (the same on every side; workers: runyard's embedded server runs its own, runyard on
# Redis has 2 `runyard worker` nodes, BullMQ 2 worker processes x concurrency 8, Celery 2 prefork
# workers x 8):
#   sequential  one producer, one request at a time, no-op jobs, end to end
#   inflight    32 requests in flight (BullMQ: 32 adds in flight; Celery: 32 producer threads)
#   batch       bulk submit (BullMQ addBulk, Celery group) plus the workers
#   idle        one job every 20 ms: submit-to-start p50/p99 on an idle queue
#   true        /bin/true as a process per job, 32 in flight, 16 at a time, against the
#               machine's spawn ceiling (two parallel shell loops of /bin/true) measured here too:
#               once per repetition, and right before and after each runyard embedded run (the
#               report pairs each run with the mean of those two, repetition by repetition)
# The sequential and 32-in-flight shapes also measure the machine's HTTP ceiling in each
# repetition (`runyard bench --http-ceiling`: a bare server answering 202 without a store, the
# same client), so the report can say what share of a bare round trip each system keeps.
# Every run has its own redis-server on a free loopback port (no persistence: BullMQ's and
# Celery's usual setup; runyard on Redis gets the same), killed at the end by pid.
# CPU per job (user + system time of every process of a system; the report's second table, for
# sequential, inflight and batch), taken with scripts/compare/cpu.py:
#   runyard embedded  `runyard bench` with its server, over the whole run (start-up and the 200
#                     warm-up jobs included), per job of the run and of the warm-up
#   runyard on Redis  redis-server, the API, both worker nodes and the bench client, the same
#                     (as scripts/redis-bench.sh prints them)
#   BullMQ, Celery    from the end of the warm-up to the end of the run: the producer's own CPU
#                     over its run (it reports it), the two workers' (with Celery's pool
#                     processes) and the shared redis-server's, per job of the run (BullMQ's
#                     queue is emptied after the figures are taken). Their Node and Python
#                     start-ups (hundreds of ms each) are left out; runyard's are not. Celery's
#                     tasks mark themselves done in Redis (three commands in one round trip per
#                     task: this harness's, not Celery's own cost, counted with it).
# Needs: cargo, node + npm (registry), python3 + pip (PyPI), redis-server.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
out=${OUT:-$root/target/compare}
mkdir -p "$out"
results="$out/results.jsonl"
: >"$results"
if [ -n "${QUICK:-}" ]; then
  REPS=${REPS:-1}; N_SEQ=300; N_INF=1000; N_BATCH=1000; N_IDLE=50; N_TRUE=200; N_CEIL=200
else
  REPS=${REPS:-3}; N_SEQ=${N_SEQ:-5000}; N_INF=${N_INF:-20000}; N_BATCH=${N_BATCH:-20000}
  N_IDLE=${N_IDLE:-1000}; N_TRUE=${N_TRUE:-2000}; N_CEIL=${N_CEIL:-4000}
fi
log() { printf '\n== %s\n' "$*" >&2; }

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

if [ -n "${RUNYARD:-}" ]; then
  bin=$(realpath "$RUNYARD")   # a binary you built (a debug build measures nothing)
else
  log "build runyard (release)"
  cargo build --release --quiet --bin runyard
  bin=$root/target/release/runyard
fi

log "install BullMQ (npm) and Celery (PyPI)"
(cd scripts/compare/bullmq && npm install --no-audit --no-fund --silent >/dev/null)
venv=$out/venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q "celery[redis]==5.5.3" packaging
node -e 'console.log("bullmq", require("./scripts/compare/bullmq/node_modules/bullmq/package.json").version)' >&2
"$venv/bin/python" -c 'import celery; print("celery", celery.__version__)' >&2

if [ -z "${QUICK:-}" ] && [ -z "${NO_PREWARM:-}" ]; then
  log "touch 16 GiB once (this VM forks 2-4x slower until its memory has been touched)"
  python3 -c "b=bytearray(16*1024**3); [b.__setitem__(i,1) for i in range(0,len(b),4096)]"
fi

rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no >"$out/redis.log" 2>&1 &
redis_pid=$!
pids+=($redis_pid)
for _ in $(seq 100); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.05; done
export COMPARE_REDIS_PORT=$rport

record() { # system store shape rep <json on stdin>; env CPU_S, CPU_JOBS: see report.py record
  python3 scripts/compare/report.py record "$1" "$2" "$3" "$4" >>"$results"
}
cpu_run() { python3 scripts/compare/cpu.py run "$@"; }   # FILE CMD...: CMD's CPU time into FILE
cpu_tree() { python3 scripts/compare/cpu.py tree "$@"; } # PID...: their CPU time so far
add() { python3 -c "import sys; print(f'{sum(float(x) for x in sys.argv[1:]):.3f}')" "$@"; }
sub() { python3 -c "import sys; print(f'{float(sys.argv[1]) - float(sys.argv[2]):.3f}')" "$1" "$2"; }
shape_n() { # shape -> its job count
  case $1 in sequential) echo "$N_SEQ" ;; inflight) echo "$N_INF" ;; batch) echo "$N_BATCH" ;;
    idle) echo "$N_IDLE" ;; true) echo "$N_TRUE" ;; esac
}

runyard_flags() { # shape -> runyard bench flags
  case $1 in
    sequential) echo "--only service --jobs $N_SEQ --connections 1 --trickle-jobs 0" ;;
    inflight) echo "--only service --jobs $N_INF --connections 32 --trickle-jobs 0" ;;
    # One producer sending 1,000 jobs per request, as BullMQ's addBulk in chunks of 1,000.
    batch) echo "--only service --jobs $N_BATCH --connections 1 --batch-size 1000 --trickle-jobs 0" ;;
    idle) echo "--only service --jobs 0 --trickle-jobs $N_IDLE --trickle-rate 50" ;;
    true) echo "--only local --local-jobs $N_TRUE --connections 32 --trickle-jobs 0 --local-concurrency 16" ;;
  esac
}

run_runyard_embedded() { # shape rep [binary system-name]
  # shellcheck disable=SC2046
  RUNYARD_LOG=warn cpu_run "$out/cpu" "${3:-$bin}" bench --json --warmup 200 $(runyard_flags "$1") \
    >"$out/last.json"
  CPU_S=$(cat "$out/cpu") CPU_JOBS=$(( $(shape_n "$1") + 200 )) \
    record "${4:-runyard}" embedded "$1" "$2" <"$out/last.json"
}

run_runyard_redis() { # shape rep [binary system-name]
  # Two worker nodes with 8 local slots each (scripts/redis-bench.sh's config): 16 at a time.
  # shellcheck disable=SC2046
  RUNYARD="${3:-$bin}" scripts/redis-bench.sh 2 --json --warmup 200 \
    $(runyard_flags "$1" | sed 's/--local-concurrency [0-9]*//') >"$out/last.json" 2>"$out/redis-bench.log"
  # Its processes' CPU as it prints them: redis-server, the API, each worker, the bench client
  # (five figures; with any missing, none is recorded and the report shows "-").
  local cpus
  cpus=$(grep -oE '(cpu: [0-9.]+ s|[0-9.]+ s of cpu)' "$out/last.json" | grep -oE '[0-9.]+' || true)
  [ "$(echo "$cpus" | grep -c .)" -eq 5 ] || cpus=""
  CPU_S=$([ -n "$cpus" ] && add $cpus) CPU_JOBS=$(( $(shape_n "$1") + 200 )) \
    record "${4:-runyard}" redis "$1" "$2" <"$out/last.json"
}

# RUNYARD_BASE=binary: an older build runs every shape too, in the same rotation, recorded as
# `runyard-base`; the report adds a table of this build against it (the same run, the same hour).
base_bin=""
[ -n "${RUNYARD_BASE:-}" ] && base_bin=$(realpath "$RUNYARD_BASE")
run_base_embedded() { run_runyard_embedded "$1" "$2" "$base_bin" runyard-base; }
run_base_redis() { run_runyard_redis "$1" "$2" "$base_bin" runyard-base; }

start_workers() { # kind
  wp=()
  for i in 1 2; do
    if [ "$1" = bullmq ]; then
      WORKER_CONCURRENCY=8 node scripts/compare/bullmq/worker.mjs "compare" "$rport" 2>>"$out/bullmq-worker.log" &
    else
      (cd scripts/compare/celery && exec "$venv/bin/celery" -A tasks worker -c 8 --pool prefork \
        -Q celery -n "w$i@%h" --loglevel WARNING) >>"$out/celery-worker.log" 2>&1 &
    fi
    wp+=($!)
    pids+=($!)
  done
}
stop_workers() {
  for p in "${wp[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${wp[@]}"; do wait "$p" 2>/dev/null || true; done
}

# BullMQ and Celery: the workers' and the shared redis-server's CPU from the end of the warm-up
# (`cpu_mark`) to the end of the run; the producer adds its own (`cpu_s` in its JSON line).
cpu_mark() { r0=$(cpu_tree "$redis_pid"); w0=$(cpu_tree "${wp[@]}"); }
cpu_since_mark() {
  add "$(sub "$(cpu_tree "$redis_pid")" "$r0")" "$(sub "$(cpu_tree "${wp[@]}")" "$w0")"
}

run_bullmq() { # shape rep
  local n
  n=$(shape_n "$1")
  local extra=""
  case $1 in inflight|true) extra=32 ;; idle) extra=50 ;; esac
  KEEP_JOBS=1 node scripts/compare/bullmq/bench.mjs compare "$rport" "$1" "$n" $extra >"$out/last.json"
  CPU_S=$(cpu_since_mark) CPU_JOBS=$n record bullmq redis "$1" "$2" <"$out/last.json"
  node scripts/compare/bullmq/bench.mjs compare "$rport" cleanup # not counted: after the figures
}

run_celery() { # shape rep
  local n
  n=$(shape_n "$1")
  local extra=""
  case $1 in inflight|true) extra=32 ;; idle) extra=50 ;; esac
  "$venv/bin/python" scripts/compare/celery/bench.py "$1" "$n" $extra >"$out/last.json"
  CPU_S=$(cpu_since_mark) CPU_JOBS=$n record celery redis "$1" "$2" <"$out/last.json"
}

spawn_ceiling() { # rep [store]: two parallel shell loops of /bin/true
  local t0 t1
  t0=$(date +%s.%N)
  local loops=()
  for _ in 1 2; do (for _ in $(seq "$N_CEIL"); do /bin/true; done) & loops+=($!); done
  wait "${loops[@]}"
  t1=$(date +%s.%N)
  python3 -c "import json,sys; n=2*$N_CEIL; print(json.dumps({'e2e_rate': n/($t1-$t0), 'jobs': n}))" |
    record ceiling "${2:-machine}" true "$1"
}

http_ceiling() { # shape rep: `runyard bench --http-ceiling`, the same client and connections
  local c=1 n=$N_SEQ
  [ "$1" = inflight ] && { c=32; n=$N_INF; }
  RUNYARD_LOG=warn "$bin" bench --http-ceiling --json --warmup 200 --connections "$c" --jobs "$n" >"$out/last.json"
  record ceiling http "$1" "$2" <"$out/last.json"
}

shapes=(sequential inflight batch idle true)
for rep in $(seq "$REPS"); do
  # Interleaved: every system runs each shape once per repetition, in a rotating order.
  for shape in "${shapes[@]}"; do
    log "rep $rep: $shape"
    [ "$shape" = true ] && spawn_ceiling "$rep"
    case $shape in sequential|inflight) http_ceiling "$shape" "$rep" ;; esac
    order=(runyard_embedded runyard_redis bullmq celery)
    [ -n "$base_bin" ] && order+=(base_embedded base_redis)
    rot=$(( (rep - 1) % ${#order[@]} ))
    order=("${order[@]:$rot}" "${order[@]:0:$rot}")
    for sys in "${order[@]}"; do
      echo "   $sys" >&2
      case $sys in
        # Each side warms up with 200 unmeasured jobs first, as `runyard bench --warmup 200` does
        # (this also waits until the worker processes are up).
        bullmq) start_workers bullmq
          node scripts/compare/bullmq/bench.mjs compare "$rport" sequential 200 >/dev/null
          cpu_mark; run_bullmq "$shape" "$rep"; stop_workers ;;
        celery) start_workers celery
          "$venv/bin/python" scripts/compare/celery/bench.py sequential 200 >/dev/null
          cpu_mark; run_celery "$shape" "$rep"; stop_workers ;;
        # The spawn ceiling swings by minutes on this VM: for runyard's own local runs it is
        # also measured right before and right after, and the report pairs them by repetition.
        runyard_embedded|base_embedded)
          if [ "$shape" = true ]; then spawn_ceiling "$rep" "next-to-$sys"; fi
          "run_$sys" "$shape" "$rep"
          if [ "$shape" = true ]; then spawn_ceiling "$rep" "next-to-$sys"; fi ;;
        *) "run_$sys" "$shape" "$rep" ;;
      esac
    done
  done
done

log "report"
python3 scripts/compare/report.py table "$results" --svg "$out/compare.svg" | tee "$out/table.md"
echo "results: $results; plot: $out/compare.svg" >&2
