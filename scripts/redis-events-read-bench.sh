#!/usr/bin/env bash
# Redis's time per call of a channel read (`events.lua`) by list length and position of the
# reader: `INFO commandstats` usec_per_call of EVALSHA over N calls by redis-benchmark, on a
# private redis-server started here (loopback, no persistence, killed by its pid at the end).
# Usage: scripts/redis-events-read-bench.sh [events.lua] [list|stream] [N]
#   list: the channel as this build keeps it (P:evl:c), stream: as builds before session 16 did
#   (P:evc:c; give main's events.lua: `git show main:src/store/redis/lua/events.lua > f`).
# Cases: a woken long poll (one event after `last`), an up-to-date poll (none after `last`), a
# read from the oldest kept (`last` ''), each at channel lengths 2, 8, 64, 1000 (limit 100).
set -euo pipefail
LUA=${1:-src/store/redis/lua/events.lua}
KIND=${2:-list}
N=${3:-20000}
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
DIR=$(mktemp -d)
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$DIR" >/dev/null 2>&1 &
PID=$!
trap 'kill "$PID" 2>/dev/null; rm -rf "$DIR"' EXIT
R="redis-cli -p $PORT"
for _ in $(seq 100); do $R ping >/dev/null 2>&1 && break; sleep 0.05; done
SHA=$($R script load "$(cat "$LUA")")
BODY='{"channel_id":"c","job_id":"01938f7e-0000-7000-8000-000000000000","kind":"status","status":"running","runyard_status":"RUNNING","progress":0.5,"errors":[],"attempt":1,"ts":"2026-12-02T14:00:00.000000Z"}'
NOW=$(date +%s%3N)
printf '%-8s %-6s %-14s %s\n' kind len case usec_per_call
for LEN in 2 8 64 1000; do
  $R flushall >/dev/null
  $R eval "for i = 1, tonumber(ARGV[1]) do
      local id = redis.call('XADD', KEYS[1], '*', 'e', ARGV[2])
      if ARGV[3] == 'list' then redis.call('RPUSH', KEYS[2], id .. ' ' .. ARGV[2])
      else redis.call('XADD', KEYS[3], id, 'e', ARGV[2]) end
    end" 3 P:ev P:evl:c P:evc:c "$LEN" "$BODY" "$KIND" >/dev/null
  IDS=$($R xrevrange P:ev + - COUNT 2 | grep -E '^[0-9]+-[0-9]+$')
  LASTID=$(echo "$IDS" | sed -n 1p)
  PREV=$(echo "$IDS" | sed -n 2p)
  for CASE in woken up-to-date oldest; do
    case $CASE in woken) FROM=$PREV ;; up-to-date) FROM=$LASTID ;; oldest) FROM='' ;; esac
    $R config resetstat >/dev/null
    redis-benchmark -p "$PORT" -c 1 -n "$N" -q evalsha "$SHA" 4 P:evc:c P:ev P:evl:c P:evcgone \
      chan 1 last "$FROM" limit 100 now "$NOW" ttl 86400000 >/dev/null
    U=$($R info commandstats | grep '^cmdstat_evalsha:' | sed 's/.*usec_per_call=\([0-9.]*\).*/\1/')
    printf '%-8s %-6s %-14s %s\n' "$KIND" "$LEN" "$CASE" "$U"
  done
done
