#!/usr/bin/env python3
"""Benchmark of waiting jobs (issue 15): N jobs WAITING on K signal keys, then every key signalled.

Starts its own `runyard serve` (the given binary) on a fresh temporary data dir and a free port
(embedded store, or `--redis URL`), with a service runner for `bench.noop` (runyard.noop,
concurrency 256). Then:

1. submits N jobs `{"type": "bench.noop", "wait_for": [{"key": "bench.k<i % K>"}]}` over
   `--threads` keep-alive connections;
2. lets the server settle, then measures its CPU time (utime + stime from /proc/PID/stat) over
   `--idle-secs` with every job waiting, and its RSS (VmRSS, VmHWM);
3. signals each key once (`POST /async/signals/{key}`), one after another;
4. reads every job back (`GET /async/jobs?type=bench.noop`, cursor paging) and reports, per job,
   signal -> QUEUED = the job's `wait.released_at` - its key's signal `at` (both server clock),
   p50 / p99 / max, and that every job ended SUCCESS.

Every loop is bounded in count and by `--timeout`. Prints one JSON object at the end.
"""

import argparse
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def us(ts):
    """RFC 3339 (microseconds, Z) -> µs since the epoch."""
    return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1_000_000)


class Api:
    def __init__(self, port):
        self.c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body)
        headers = {"content-type": "application/json"} if data is not None else {}
        self.c.request(method, path, body=data, headers=headers)
        r = self.c.getresponse()
        raw = r.read()
        return r.status, (json.loads(raw) if raw else None)


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return int(parts[11]) + int(parts[12])  # utime, stime (fields 14, 15)


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def pct(sorted_vals, p):
    if not sorted_vals:
        return None
    i = min(len(sorted_vals) - 1, max(0, int(round(p / 100 * len(sorted_vals))) - 1))
    return sorted_vals[i]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default="target/release/runyard")
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--keys", type=int, default=1_000)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--idle-secs", type=float, default=10.0)
    ap.add_argument("--settle-secs", type=float, default=5.0)
    ap.add_argument("--redis", default=None, help="redis URL (default: the embedded store)")
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    if not (1 <= a.keys <= a.jobs <= 1_000_000) or not (1 <= a.threads <= 64):
        sys.exit("need 1 <= keys <= jobs <= 1000000 and 1 <= threads <= 64")
    deadline = time.monotonic() + a.timeout
    tmp = tempfile.mkdtemp(prefix="runyard-bench-waiting-")
    port = free_port()
    redis = ""
    if a.redis:
        redis = f'redis = "{a.redis}"\nmaster_key = "bench-waiting-master-key-0123456789"\n' \
                f'[store]\nprefix = "bw{os.getpid()}"\n'
    cfg = os.path.join(tmp, "runyard.toml")
    with open(cfg, "w") as f:
        f.write(f'data_dir = "{tmp}/data"\n{redis}\n'
                '[[runners]]\nname = "bench-service"\nkind = "service"\ntypes = ["bench.noop"]\n'
                'operation = "runyard.noop"\nconcurrency = 256\nmax_attempts = 1\n')
    log = open(os.path.join(tmp, "server.log"), "w")
    env = dict(os.environ, RUNYARD_LOG=os.environ.get("RUNYARD_LOG", "warn"))
    srv = subprocess.Popen([a.bin, "serve", "--config", cfg, "--listen", f"127.0.0.1:{port}"],
                           stdout=log, stderr=log, env=env)
    out = {"jobs": a.jobs, "keys": a.keys, "store": "redis" if a.redis else "embedded"}
    ok = False
    try:
        for _ in range(300):
            try:
                st, _ = Api(port).call("GET", "/health")
                if st == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            raise SystemExit("server did not become healthy")

        # 1. Submit.
        per = [a.jobs // a.threads + (1 if i < a.jobs % a.threads else 0) for i in range(a.threads)]
        errors = []

        def submitter(t):
            api = Api(port)
            base = sum(per[:t])
            for n in range(per[t]):
                if time.monotonic() > deadline:
                    errors.append("timeout")
                    return
                key = f"bench.k{(base + n) % a.keys}"
                st, v = api.call("POST", "/async/jobs",
                                 {"type": "bench.noop", "wait_for": [{"key": key}]})
                if st != 202:
                    errors.append(f"{st} {v}")
                    return

        t0 = time.monotonic()
        ths = [threading.Thread(target=submitter, args=(t,)) for t in range(a.threads)]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
        if errors:
            raise SystemExit(f"submit failed: {errors[:3]}")
        out["submit_secs"] = round(time.monotonic() - t0, 2)
        out["submit_rate"] = round(a.jobs / out["submit_secs"], 1)

        # 2. Idle with everything waiting.
        time.sleep(a.settle_secs)
        tick = os.sysconf("SC_CLK_TCK")
        c0, w0 = cpu_ticks(srv.pid), time.monotonic()
        time.sleep(a.idle_secs)
        c1, w1 = cpu_ticks(srv.pid), time.monotonic()
        out["idle_cpu_percent_of_a_core"] = round(100 * (c1 - c0) / tick / (w1 - w0), 3)
        out["rss_kib_all_waiting"] = status_kib(srv.pid, "VmRSS")

        # 3. Signal every key.
        api = Api(port)
        at = {}
        t0 = time.monotonic()
        for k in range(a.keys):
            st, v = api.call("POST", f"/async/signals/bench.k{k}", {})
            if st != 201:
                raise SystemExit(f"signal failed: {st} {v}")
            at[f"bench.k{k}"] = us(v["at"])
        out["signal_secs"] = round(time.monotonic() - t0, 2)

        # 4. Read back until every job is terminal.
        lat, by_status = [], {}
        while True:
            if time.monotonic() > deadline:
                raise SystemExit("timeout waiting for the jobs to end")
            lat, by_status, cursor = [], {}, None
            for _ in range(a.jobs // 1000 + 10):
                q = "/async/jobs?type=bench.noop&limit=1000" + (f"&cursor={cursor}" if cursor else "")
                st, v = api.call("GET", q)
                if st != 200:
                    raise SystemExit(f"list failed: {st} {v}")
                for j in v["jobs"]:
                    by_status[j["status"]] = by_status.get(j["status"], 0) + 1
                    w = j.get("wait") or {}
                    if w.get("released_at"):
                        lat.append(us(w["released_at"]) - at[w["items"][0]["key"]])
                cursor = v.get("next_cursor")
                if not cursor:
                    break
            if by_status.get("SUCCESS", 0) == a.jobs or sum(
                    n for s, n in by_status.items() if s in ("WAITING", "QUEUED", "STARTING", "RUNNING")) == 0:
                break
            time.sleep(1)
        lat.sort()
        out["signal_to_queued_ms"] = {
            "count": len(lat),
            "p50": pct(lat, 50) / 1000 if lat else None,
            "p99": pct(lat, 99) / 1000 if lat else None,
            "max": lat[-1] / 1000 if lat else None,
        }
        out["statuses"] = by_status
        out["peak_rss_kib"] = status_kib(srv.pid, "VmHWM")
        ok = by_status.get("SUCCESS", 0) == a.jobs
    finally:
        srv.terminate()
        try:
            srv.wait(timeout=20)
        except subprocess.TimeoutExpired:
            srv.kill()
        log.close()
        if ok and not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            out["kept"] = tmp
    print(json.dumps(out, indent=2))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
