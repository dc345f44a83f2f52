#!/usr/bin/env bash
# Redis commands per job, split by the process that sent them (the API, each worker node) and by
# script (commit.lua, claim.lua, ...), with the commands each script ran inside Redis: runs N no-op
# service jobs one request at a time through `runyard bench --server` against one API
# (`serve --no-worker`) and WORKERS worker nodes on a redis-server of its own, recorded with
# `MONITOR` (docs/benchmarks.md "Session 10: redis"). The counts per submit on the request path
# are the API's rows (about 1.1 `HGET` per job there is `runyard bench` reading the jobs back at
# its end, not the submits). MONITOR slows Redis down: the rate it prints means nothing, the
# counts are exact for that run (how many writes share a call depends on timing). Kills only the
# processes it started.
#
#   scripts/redis-calls-by-process.sh [N] [WORKERS]      (default: 300 2)
# Env: RUNYARD (binary, default target/release/runyard).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-300}
workers=${2:-2}
bin=${RUNYARD:-target/release/runyard}
. scripts/lib/procs.sh
rport=$(free_port)
aport=$(free_port)
url="http://127.0.0.1:$aport"
redis-server --port "$rport" --bind 127.0.0.1 --dir "$dir" --save '' --appendonly no >"$dir/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.05; done
cat >"$dir/runyard.toml" <<TOML
listen = "127.0.0.1:$aport"
public_url = "$url"
redis = "redis://127.0.0.1:$rport"
master_key = "calls-by-process-master-key-0123456789"

[[runners]]
kind = "service"
types = ["bench.noop"]
operation = "runyard.noop"
concurrency = 256
TOML
RUNYARD_LOG=warn "$bin" serve --no-worker --config "$dir/runyard.toml" --data-dir "$dir/api" 2>"$dir/api.log" &
api=$!
pids+=($api)
who="$api=api"
for i in $(seq "$workers"); do
  RUNYARD_LOG=warn "$bin" worker --config "$dir/runyard.toml" --data-dir "$dir/w$i" 2>"$dir/w$i.log" &
  pids+=($!)
  who="$who $!=worker$i"
done
for _ in $(seq 200); do curl -fs "$url/health" >/dev/null 2>&1 && break; sleep 0.05; done
bench() { "$bin" bench --server "$url" --only service --warmup 0 --trickle-jobs 0 --connections 1 --jobs "$1" --timeout 600s >"$dir/bench.out" 2>&1 || { cat "$dir/bench.out" >&2; return 1; }; }
bench 50 # warm-up: every connection is open and every script loaded
sleep 0.5
# Which process holds each client connection (by its local port).
ss -tnp | grep ":$rport " >"$dir/ss.txt" || true
timeout 600 redis-cli -p "$rport" monitor >"$dir/monitor.txt" &
mon=$!
sleep 0.3
bench "$n"
sleep 0.5
kill "$mon" 2>/dev/null || true
wait "$mon" 2>/dev/null || true
echo "redis: $n no-op service jobs, one request at a time, one API and $workers worker node(s)"
python3 - "$dir" "$n" "$who" <<'PY'
import collections, re, sys
d, n, who = sys.argv[1], int(sys.argv[2]), dict(w.split("=") for w in sys.argv[3].split())
port2pid = {}
for line in open(d + "/ss.txt"):
    f = line.split()
    m = re.search(r"pid=(\d+)", line)
    if len(f) >= 5 and m:
        port2pid[f[3].rsplit(":", 1)[1]] = m.group(1)
count, by_script = collections.Counter(), collections.Counter()
last = None
for line in open(d + "/monitor.txt"):
    m = re.match(r"[\d.]+ \[\d+ ([^\]]+)\] (.*)", line)
    if not m:
        continue
    addr, rest = m.groups()
    args = re.findall(r'"((?:[^"\\]|\\.)*)"', rest)
    if not args:
        continue
    cmd = args[0].upper()
    if addr == "lua":
        # A command a script ran: counted under the call it belongs to.
        count[(last, "  in script: " + cmd)] += 1
        continue
    p = who.get(port2pid.get(addr.rsplit(":", 1)[1], "?"), "other")
    if cmd in ("EVALSHA", "EVAL"):
        # Named by its first key: P:all / P:jc ... (commit.lua), P:q:{runner} (claim.lua).
        key = args[3] if len(args) > 3 else ""
        part = key.split(":")[1] if ":" in key else key
        script = "claim.lua" if part == "q" else "commit.lua" if part in (
            "all", "jc", "lease", "fin", "ev", "evwant", "job") else "script(" + part + ")"
        cmd = "EVALSHA " + script
    last = p
    count[(p, cmd)] += 1
for p in sorted({p for p, _ in count}, key=str):
    calls = sum(c for (q, k), c in count.items() if q == p and not k.startswith("  "))
    inner = sum(c for (q, k), c in count.items() if q == p and k.startswith("  "))
    print(f"  {p}: {calls / n:.2f} requests per job, {inner / n:.2f} commands inside its scripts")
    for (q, k), c in sorted(count.items(), key=lambda x: -x[1]):
        if q == p:
            print(f"    {k:28} {c / n:6.2f}")
PY
