#!/usr/bin/env bash
# Memory of one job's channel events in Redis (docs/benchmarks.md "Session 16: redis (channel
# events)"): starts its own redis-server on a free loopback port, writes N events of about 300
# bytes (a job's four by default: QUEUED, STARTING, RUNNING, SUCCESS) into a fresh key the way
# builds before session 16 did (a stream, `XADD ... e EVENT`) and the way they do now (a list of
# `<id> <event>`), each with a TTL, and prints `MEMORY USAGE` of each and the `used_memory`
# growth per channel over K channels, and the time Redis spent in those commands per channel. Kills only the redis-server it started.
#
#   scripts/redis-channel-memory.sh [N events per channel] [K channels]   (default: 4 1000)
set -euo pipefail
n=${1:-4}
k=${2:-1000}
workers=0
. "$(dirname "${BASH_SOURCE[0]}")/lib/procs.sh"
port=$(free_port)
redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save '' --appendonly no \
  >"$dir/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
echo "$(redis-server --version)"
python3 - "$port" "$n" "$k" <<'PY'
import socket, sys, uuid
port, n, k = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection(("127.0.0.1", port))
f = s.makefile("rb")
def enc(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)
def reply():
    line = f.readline()
    t, rest = line[:1], line[1:-2]
    if t in (b"+", b":"):
        return rest
    if t == b"-":
        raise RuntimeError(rest)
    if t == b"$":
        ln = int(rest)
        if ln < 0:
            return None
        data = f.read(ln + 2)[:-2]
        return data
    if t == b"*":
        return [reply() for _ in range(int(rest))]
def cmd(*args):
    s.sendall(enc(*args))
    return reply()
def pipe(cmds):
    s.sendall(b"".join(enc(*c) for c in cmds))
    return [reply() for _ in cmds]
statuses = ["QUEUED", "STARTING", "RUNNING", "SUCCESS", "SUCCESS"]
def event(job, i):
    st = statuses[i % len(statuses)]
    return ('{"channel_id":"%s","job_id":"%s","user_id":null,"type":"status","status":"%s",'
            '"runyard_status":"%s","progress":null,"errors":[],"result_url":"/api/v1/async_event/'
            'result/%s","job_type":"bench.noop","runner":"service","at":1764670000000000}'
            % (job, job, st.lower(), st, job)).encode()
def fill(kind, key, job):
    cmds = []
    for i in range(n):
        ev = event(job, i)
        if kind == "stream":
            cmds.append(("XADD", key, "MAXLEN", "~", 1000, "*", "e", ev))
        else:
            cmds.append(("RPUSH", key, b"1764670000000-%d " % i + ev))
    cmds.append(("PEXPIRE", key, 86400000))
    pipe(cmds)
print("event bytes: %d" % len(event(uuid.uuid4(), 0)))
for kind in ("stream", "list"):
    job = str(uuid.uuid4())
    key = "runyard:ev%s:%s" % ("c" if kind == "stream" else "l", job)
    fill(kind, key, job)
    one = int(cmd("MEMORY", "USAGE", key, "SAMPLES", 0))
    cmd("FLUSHALL")
    cmd("CONFIG", "RESETSTAT")
    def used():
        info = cmd("INFO", "memory").decode()
        return int(next(l.split(":")[1] for l in info.splitlines() if l.startswith("used_memory:")))
    before = used()
    for _ in range(k):
        job = str(uuid.uuid4())
        fill(kind, "runyard:ev%s:%s" % ("c" if kind == "stream" else "l", job), job)
    grow = (used() - before) / k
    stats = cmd("INFO", "commandstats").decode()
    def usec(name):
        for l in stats.splitlines():
            if l.startswith("cmdstat_%s:" % name):
                return int(l.split("usec=")[1].split(",")[0])
        return 0
    spent = usec("xadd" if kind == "stream" else "rpush") + usec("pexpire")
    cmd("CONFIG", "RESETSTAT")
    cmd("FLUSHALL")
    print("%-6s %d events: MEMORY USAGE %d bytes; used_memory growth %.0f bytes per channel (%d channels); "
          "command time %.2f us per channel (INFO commandstats: the appends and PEXPIRE)"
          % (kind, n, one, grow, k, spent / k))
PY
