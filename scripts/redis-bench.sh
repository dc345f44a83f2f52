#!/usr/bin/env bash
# Benchmarks the Redis backend with separate processes: its own redis-server on a free loopback
# port, one API (`serve --no-worker`) and N worker nodes (`runyard worker`), then
# `runyard bench --server` against the API. Kills only the processes it started.
#
#   scripts/redis-bench.sh WORKERS [bench flags...]
#   e.g. scripts/redis-bench.sh 2 --only service --jobs 20000
#
# Env: RUNYARD (binary, default target/release/runyard), APPENDONLY (yes|no, default no),
# MONITOR (a file: the commands redis-server received, for scripts/redis-replay.py), PERF, PERF_API,
# PERF_WORKER (files: perf profiles of redis-server, the API, the first worker
# during the bench; for the API and the worker PERF_F sets the frequency, default 999, and
# PERF_CG the call graph option, default -g, e.g. "--call-graph dwarf,32768"). CMDSTATS: how many
# lines of redis-server's `INFO commandstats` to print at the end, busiest first (default 14). Prints the CPU time of
# redis-server, the API and each worker over the whole run (start-up and warm-up included), and
# the bench client's (`bench client: X s of cpu`).
set -euo pipefail
workers=${1:-1}
shift || true
bin=${RUNYARD:-target/release/runyard}
. "$(dirname "${BASH_SOURCE[0]}")/lib/procs.sh"
rport=$(free_port)
aport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --dir "$dir" --save '' \
  --appendonly "${APPENDONLY:-no}" >"$dir/redis.log" 2>&1 &
rpid=$!
pids+=($rpid)
for _ in $(seq 100); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.05; done
cat >"$dir/runyard.toml" <<TOML
listen = "127.0.0.1:$aport"
public_url = "http://127.0.0.1:$aport"
redis = "redis://127.0.0.1:$rport"
master_key = "bench-master-key-0123456789abcdef"

[[runners]]
kind = "service"
types = ["bench.noop"]
operation = "runyard.noop"
concurrency = 256

[[runners]]
kind = "local"
types = ["bench.true"]
command = ["/bin/true"]
concurrency = 8
TOML
RUNYARD_LOG=warn "$bin" serve --no-worker --config "$dir/runyard.toml" --data-dir "$dir/api" \
  2>"$dir/api.log" &
api=$!
pids+=($api)
for i in $(seq "$workers"); do
  RUNYARD_LOG=warn "$bin" worker --config "$dir/runyard.toml" --data-dir "$dir/w$i" \
    2>"$dir/worker$i.log" &
  pids+=($!)
done
# PERF=FILE: a perf profile of redis-server over the bench (`perf report -i FILE`);
# PERF_API=FILE and PERF_WORKER=FILE the same of the API and of the first worker node.
perf_pids=()
if [ -n "${PERF:-}" ]; then
  perf record -q -F 999 -g -o "$PERF" -p "$rpid" 2>/dev/null &
  perf_pids+=($!)
fi
if [ -n "${PERF_API:-}" ]; then
  perf record -q -F ${PERF_F:-999} ${PERF_CG:--g} -o "$PERF_API" -p "$api" 2>/dev/null &
  perf_pids+=($!)
fi
if [ -n "${PERF_WORKER:-}" ]; then
  perf record -q -F ${PERF_F:-999} ${PERF_CG:--g} -o "$PERF_WORKER" -p "${pids[2]}" 2>/dev/null &
  perf_pids+=($!)
fi
# MONITOR=FILE: every command redis-server receives during the bench (`redis-cli monitor`),
# for scripts/redis-replay.py.
# Stopped with TERM: a background job of a non-interactive shell ignores SIGINT, and redis-cli
# does not catch it (the INT that stops perf left the script waiting forever).
monitor_pid=
if [ -n "${MONITOR:-}" ]; then
  redis-cli -p "$rport" monitor >"$MONITOR" &
  monitor_pid=$!
  pids+=($monitor_pid)
fi
# The bench client's own CPU time is taken too (printed at the end, for scripts/compare).
python3 "$(dirname "${BASH_SOURCE[0]}")/compare/cpu.py" run "$dir/client-cpu" \
  "$bin" bench --server "http://127.0.0.1:$aport" --server-pid "$api" "$@"
for p in "${perf_pids[@]}"; do kill -INT "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
if [ -n "$monitor_pid" ]; then kill -TERM "$monitor_pid" 2>/dev/null || true; wait "$monitor_pid" 2>/dev/null || true; fi
redis-cli -p "$rport" info all | grep -E "^cmdstat" | sort -t= -k3 -n -r | head -${CMDSTATS:-14} | cut -c1-110 || true
echo "redis used_memory_peak: $(redis-cli -p "$rport" info memory | grep '^used_memory_peak_human' | cut -d: -f2)"
# CPU time of redis-server over the whole run (utime + stime, start-up and warm-up included): a
# figure that depends less on the machine's load than wall-clock rates.
echo "redis-server cpu: $(awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f s", ($14 + $15) / hz}' /proc/$rpid/stat)"
cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f s", ($14 + $15) / hz}' "/proc/$1/stat" 2>/dev/null; }
echo "api cpu: $(cpu "$api")"
for i in $(seq "$workers"); do
  pid=${pids[$((i + 1))]}
  echo "worker $i peak RSS: $(grep VmHWM /proc/$pid/status 2>/dev/null | awk '{print $2 " " $3}'), cpu: $(cpu "$pid")"
done
# Not in the "cpu: X s" form that A/B scripts sum (redis-server, the API, the workers).
echo "bench client: $(cat "$dir/client-cpu") s of cpu"
