#!/usr/bin/env bash
# Writes per finished job (docs/benchmarks.md "Writes per job"): runs N no-op service jobs
# (`bench.noop`) through `runyard bench --server`, one request at a time, and prints what each
# finished job cost the store:
#   embedded: bytes of database (pages in use after a full checkpoint, by table and index),
#             WAL frames written, write transactions (the WAL write lock taken) per job;
#   redis:    commands (INFO commandstats deltas) and round trips (reads by redis-server of a
#             client request) per job, and bytes of used memory per job (about 1.1 HGET per job
#             is `runyard bench` listing the jobs at its end, not the jobs' own cost).
# Counting uses strace on the server (embedded) or on redis-server: the rates it prints are
# meaningless, the counts are exact. Kills only the processes it started.
#
#   scripts/writes-per-job.sh [embedded|redis|both] [N]      (default: both 1000)
# Env: RUNYARD (binary, default target/debug/runyard), CONNECTIONS (default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-both}
n=${2:-1000}
bin=${RUNYARD:-target/debug/runyard}
conns=${CONNECTIONS:-1}
. scripts/lib/procs.sh
wait_http() { for _ in $(seq 200); do curl -fs "$1/health" >/dev/null 2>&1 && return 0; sleep 0.05; done; echo "no answer from $1" >&2; return 1; }
bench() { "$bin" bench --server "$1" --only service --warmup 0 --trickle-jobs 0 --connections "$conns" --jobs "$2" --timeout 600s >"$dir/bench.out" 2>&1 || { cat "$dir/bench.out" >&2; return 1; }; }
stop_strace() { kill -INT "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

runner_toml='
[[runners]]
kind = "service"
types = ["bench.noop"]
operation = "runyard.noop"
concurrency = 256
max_attempts = 1'

# Pages in use (page_count - freelist) and bytes by table/index, of a checkpointed database.
db_pages() {
  sqlite3 "$1" "PRAGMA wal_checkpoint(TRUNCATE);" >/dev/null
  sqlite3 "$1" "SELECT (SELECT page_count FROM pragma_page_count) - (SELECT freelist_count FROM pragma_freelist_count);"
}
db_by_name() { sqlite3 -separator ' ' "$1" "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY name;"; }

embedded() {
  local port url db pid st
  port=$(free_port); url="http://127.0.0.1:$port"
  mkdir -p "$dir/emb"
  printf 'data_dir = "%s"\n[worker]\nshutdown_grace = "5s"\n%s\n' "$dir/emb/data" "$runner_toml" >"$dir/emb/runyard.toml"
  RUNYARD_LOG=warn "$bin" serve --config "$dir/emb/runyard.toml" --listen "127.0.0.1:$port" 2>"$dir/emb/server.log" &
  pid=$!; pids+=($pid)
  wait_http "$url"
  bench "$url" 50 # warm-up: every table and index has its first pages
  db="$dir/emb/data/runyard.db"
  sleep 0.3
  local before; before=$(db_pages "$db"); db_by_name "$db" >"$dir/emb/before"
  strace -f -qq -y -e trace=fcntl,pwrite64 -o "$dir/emb/strace" -p "$pid" &
  st=$!; sleep 1
  bench "$url" "$n"
  sleep 0.5
  stop_strace "$st"
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  local after; after=$(db_pages "$db"); db_by_name "$db" >"$dir/emb/after"
  local psize; psize=$(sqlite3 "$db" "PRAGMA page_size;")
  local tx frames
  tx=$(grep -c 'runyard.db-shm>, F_SETLK, {l_type=F_WRLCK, l_whence=SEEK_SET, l_start=120, l_len=1}) = 0' "$dir/emb/strace" || true)
  # Frames from the bytes written to the WAL (a frame is its 24-byte header and a page, written
  # as two calls by SQLite's own VFS, gathered into one call per transaction since session 9).
  local walbytes calls
  walbytes=$(grep -E 'pwrite64\([0-9]+<[^>]*runyard.db-wal>, .*\) = [0-9]+$' "$dir/emb/strace" |
    sed -E 's/.* = ([0-9]+)$/\1/' | awk '{s+=$1} END {print s+0}')
  calls=$(grep -cE 'pwrite64\([0-9]+<[^>]*runyard.db-wal>' "$dir/emb/strace" || true)
  frames=$((walbytes / (psize + 24)))
  echo "embedded: $n no-op service jobs, $conns connection(s)"
  python3 - "$n" "$before" "$after" "$psize" "$tx" "$frames" "$dir/emb/before" "$dir/emb/after" "$calls" <<'PY'
import sys
n, before, after, psize, tx, frames = (int(x) for x in sys.argv[1:7])
calls = int(sys.argv[9])
def load(p):
    d = {}
    for line in open(p):
        k, v = line.split()
        d[k] = int(v)
    return d
b, a = load(sys.argv[7]), load(sys.argv[8])
print(f"  database bytes per job: {(after - before) * psize / n:.0f} (pages in use {before} -> {after}, page {psize} B)")
for k in sorted(a, key=lambda k: -(a[k] - b.get(k, 0))):
    d = a[k] - b.get(k, 0)
    if d:
        print(f"    {k:24} {d / n:8.0f} B/job")
print(f"  write transactions per job: {tx / n:.2f} ({tx})")
print(f"  WAL frames per job: {frames / n:.2f} ({frames}; {frames * (psize + 24) / n:.0f} B of WAL per job)")
print(f"  WAL write calls per job: {calls / n:.2f} ({calls})")
PY
}

redis() {
  local rport aport url st rpid
  rport=$(free_port); aport=$(free_port); url="http://127.0.0.1:$aport"
  mkdir -p "$dir/red"
  redis-server --port "$rport" --bind 127.0.0.1 --dir "$dir/red" --save '' --appendonly no >"$dir/red/redis.log" 2>&1 &
  rpid=$!; pids+=($rpid)
  for _ in $(seq 100); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.05; done
  printf 'listen = "127.0.0.1:%s"\npublic_url = "%s"\nredis = "redis://127.0.0.1:%s"\nmaster_key = "writes-per-job-master-key-0123456789"\n%s\n' \
    "$aport" "$url" "$rport" "$runner_toml" >"$dir/red/runyard.toml"
  RUNYARD_LOG=warn "$bin" serve --no-worker --config "$dir/red/runyard.toml" --data-dir "$dir/red/api" 2>"$dir/red/api.log" &
  pids+=($!)
  RUNYARD_LOG=warn "$bin" worker --config "$dir/red/runyard.toml" --data-dir "$dir/red/w1" 2>"$dir/red/worker.log" &
  pids+=($!)
  wait_http "$url"
  bench "$url" 50
  sleep 0.5
  local mem0; mem0=$(redis-cli -p "$rport" info memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p')
  redis-cli -p "$rport" config resetstat >/dev/null
  strace -qq -e trace=read -o "$dir/red/strace" -p "$rpid" &
  st=$!; sleep 1
  bench "$url" "$n"
  stop_strace "$st"
  redis-cli -p "$rport" info commandstats >"$dir/red/cmdstats"
  local mem1; mem1=$(redis-cli -p "$rport" info memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p')
  local reads; reads=$(grep -cE '^read\([0-9]+, "\*' "$dir/red/strace" || true)
  echo "redis: $n no-op service jobs, $conns connection(s), one API and one worker node"
  python3 - "$n" "$reads" "$mem0" "$mem1" "$dir/red/cmdstats" <<'PY'
import sys, re
n, reads, mem0, mem1 = (int(x) for x in sys.argv[1:5])
rows = []
for line in open(sys.argv[5]):
    m = re.match(r"cmdstat_([^:]+):calls=(\d+)", line)
    if m and not m.group(1).startswith(("config", "info")):
        rows.append((int(m.group(2)), m.group(1)))
total = sum(c for c, _ in rows)
print(f"  commands per job: {total / n:.2f} ({total})")
for c, name in sorted(rows, reverse=True):
    print(f"    {name:24} {c / n:8.2f}")
print(f"  round trips per job (client requests read by redis-server): {reads / n:.2f} ({reads})")
print(f"  used_memory growth per job: {(mem1 - mem0) / n:.0f} B")
PY
}

case $what in
  embedded) embedded ;;
  redis) redis ;;
  both) embedded; redis ;;
  *) echo "usage: $0 [embedded|redis|both] [N]" >&2; exit 2 ;;
esac
