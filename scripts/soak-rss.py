#!/usr/bin/env python3
"""Memory soak (docs/benchmarks.md "Memory with short retention", issue 14): N no-op service jobs
pass through a `runyard serve` with short retention; the server's RSS, the database and WAL
sizes and the jobs done are sampled every few seconds, then a table and a verdict are printed:
RSS once 10% of the jobs are done (after warm-up) against RSS at the end, the largest RSS, and
whether the end is within 10% of the 10% mark; bytes of database per job held in the store.

  scripts/soak-rss.py                      # 1,000,000 jobs, embedded store, retention 60 s
  N=20000 RETENTION=5s scripts/soak-rss.py # the short form, under a minute

Env: N (jobs, default 1000000), STORE (embedded | redis: `serve --no-worker` + `runyard worker`
and a private redis-server whose used_memory is sampled too), RUNYARD (binary, default
target/release/runyard), RETENTION (`retention.finished`, default 60s), INTERVAL
(`retention.interval`, default 1s), BATCH (jobs per POST /async/jobs/batch, default 1000), CONNECTIONS (submitting
connections, default 2), BACKLOG (most jobs submitted and not yet done, default 20000),
SAMPLE (seconds between table rows, default 5), TIMEOUT (whole run, seconds, default 3600),
KEEP=1 keeps the temporary directory. Only the processes it starts are stopped, by pid.
"""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

N = int(os.environ.get("N", "1000000"))
STORE = os.environ.get("STORE", "embedded")
BIN = os.environ.get("RUNYARD", "target/release/runyard")
RETENTION = os.environ.get("RETENTION", "60s")
INTERVAL = os.environ.get("INTERVAL", "1s")
BATCH = max(1, min(1000, int(os.environ.get("BATCH", "1000"))))
CONNS = max(1, int(os.environ.get("CONNECTIONS", "2")))
BACKLOG = max(BATCH, int(os.environ.get("BACKLOG", "20000")))
SAMPLE = float(os.environ.get("SAMPLE", "5"))
TIMEOUT = float(os.environ.get("TIMEOUT", "3600"))
MASTER_KEY = "soak-rss-master-key-0123456789abcdef0123456789abcdef"

procs = []  # (name, Popen) of what we started; stopped by pid at exit


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def stop_all():
    for _, p in reversed(procs):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.time() + 10
    for _, p in reversed(procs):
        try:
            p.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def start(name, args, log_dir):
    log = open(os.path.join(log_dir, name + ".log"), "wb")
    env = dict(os.environ, RUNYARD_LOG="warn")
    env.pop("RUNYARD_REDIS", None)
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
    procs.append((name, p))
    return p


def status_kib(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kib(pid):
    return status_kib(pid, "VmRSS")


def fsize(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def wait_health(port, what, proc):
    for _ in range(400):
        if proc.poll() is not None:
            sys.exit(f"{what} exited with {proc.returncode} before answering")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit(f"{what} does not answer /health")


METRIC = re.compile(r"^(runyard_job_outcomes_total|runyard_jobs)\{([^}]*)\} ([0-9.e+]+)$", re.M)


def scrape(port):
    """(jobs that ended through this process, jobs held in the store, held and not finished,
    bytes on SQLite's heap: 0 on Redis and from builds without the gauge)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    done = held = open_ = 0
    for name, labels, v in METRIC.findall(text):
        if name == "runyard_job_outcomes_total":
            done += int(float(v))
        else:
            held += int(float(v))
            if not re.search(r'status="(SUCCESS|ERROR|CANCELLED)"', labels):
                open_ += int(float(v))
    m = re.search(r"^runyard_sqlite_heap_bytes (\S+)$", text, re.M)
    return done, held, open_, int(float(m.group(1))) if m else 0


def redis_used_memory(port):
    out = subprocess.run(
        ["redis-cli", "-p", str(port), "INFO", "memory"], capture_output=True, text=True, timeout=10
    ).stdout
    m = re.search(r"^used_memory:(\d+)", out, re.M)
    return int(m.group(1)) if m else 0


def config(tmp, port, redis_url):
    runner = """
[[runners]]
kind = "service"
types = ["bench.noop"]
operation = "runyard.noop"
concurrency = 256
max_attempts = 1
"""
    lines = [
        f'listen = "127.0.0.1:{port}"',
        f'public_url = "http://127.0.0.1:{port}"',
        f'data_dir = "{tmp}/data"',
    ]
    if redis_url:
        lines += [f'redis = "{redis_url}"', f'master_key = "{MASTER_KEY}"']
    lines += [
        "[retention]",
        f'finished = "{RETENTION}"',
        f'interval = "{INTERVAL}"',
        "log_lines_per_job = 100",
    ]
    if redis_url:
        lines.append('events = "1h"')
    path = os.path.join(tmp, "runyard.toml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n" + runner)
    return path


class Submitter:
    def __init__(self, port):
        self.port = port
        self.lock = threading.Lock()
        self.next = 0
        self.accepted = 0
        self.done = 0  # updated by the sampler
        self.error = None
        self.body_cache = {}

    def body(self, k):
        if k not in self.body_cache:
            self.body_cache[k] = json.dumps({"jobs": [{"type": "bench.noop"}] * k}).encode()
        return self.body_cache[k]

    def take(self):
        with self.lock:
            if self.next >= N or self.error:
                return 0
            if self.next - self.done >= BACKLOG:
                return -1
            k = min(BATCH, N - self.next)
            self.next += k
            return k

    def run(self, stop_at):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        while time.time() < stop_at:
            k = self.take()
            if k == 0:
                return
            if k < 0:
                time.sleep(0.05)
                continue
            try:
                c.request("POST", "/async/jobs/batch", self.body(k), {"Content-Type": "application/json"})
                r = c.getresponse()
                data = r.read()
            except (OSError, http.client.HTTPException) as e:
                self.error = f"batch submit failed: {e}"
                return
            if r.status != 200:
                self.error = f"batch submit answered {r.status}: {data[:300]!r}"
                return
            acc = json.loads(data)["accepted"]
            with self.lock:
                self.accepted += acc
            if acc != k:
                self.error = f"{k - acc} of a batch of {k} refused: {data[:300]!r}"
                return


def fmt_kib(k):
    return f"{k / 1024:.1f}"


def main():
    tmp = tempfile.mkdtemp(prefix="soak-rss-")
    port = free_port()
    redis_port = None
    redis_url = None
    try:
        if STORE == "redis":
            redis_port = free_port()
            r = start(
                "redis",
                ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", tmp],
                tmp,
            )
            for _ in range(100):
                if subprocess.run(["redis-cli", "-p", str(redis_port), "PING"], capture_output=True).returncode == 0:
                    break
                time.sleep(0.05)
            redis_url = f"redis://127.0.0.1:{redis_port}/0"
        elif STORE != "embedded":
            sys.exit("STORE is embedded or redis")
        cfg = config(tmp, port, redis_url)
        serve_args = [BIN, "serve", "--config", cfg] + (["--no-worker"] if redis_url else [])
        server = start("server", serve_args, tmp)
        wait_health(port, "runyard serve", server)
        worker = start("worker", [BIN, "worker", "--config", cfg], tmp) if redis_url else None
        db = os.path.join(tmp, "data", "runyard.db")
        print(f"soak-rss: {N} jobs, store {STORE}, retention.finished {RETENTION} (interval {INTERVAL}), "
              f"batches of {BATCH}, {CONNS} connections, backlog <= {BACKLOG}, binary {BIN}")
        print(f"server pid {server.pid}" + (f", worker pid {worker.pid}" if worker else ""))
        # RSS = anonymous (heap, stacks) + file-backed (the binary, libraries) + shmem; sqlite: SQLite heap (part of anon)
        head = f"{'t(s)':>7} {'done':>9} {'held':>8} {'jobs/s':>7} {'RSS MiB':>8} {'anon':>6} {'file':>6} {'sqlite':>6}"
        if worker:
            head += f" {'wRSS MiB':>8} {'redis MiB':>9}"
        else:
            head += f" {'db MiB':>8} {'wal MiB':>8}"
        print(head, flush=True)
        sub = Submitter(port)
        t0 = time.time()
        stop_at = t0 + TIMEOUT
        threads = [threading.Thread(target=sub.run, args=(stop_at,), daemon=True) for _ in range(CONNS)]
        for t in threads:
            t.start()
        rows = []
        last_print = 0.0
        last_done, last_t = 0, t0
        while True:
            time.sleep(0.5)
            for name, p in procs:
                if p.poll() is not None:
                    sys.exit(f"{name} exited with {p.returncode} (logs in {tmp}; KEEP=1 keeps them)")
            done, held, open_, sqlite_heap = scrape(port)
            with sub.lock:
                if worker:  # the worker process ends the jobs: done = accepted - not finished
                    done = sub.accepted - open_
                sub.done = done
            now = time.time()
            finished = done >= N or sub.error or now > stop_at
            if now - last_print >= SAMPLE or finished:
                row = {
                    "t": now - t0, "done": done, "held": held,
                    "rate": (done - last_done) / max(1e-9, now - last_t),
                    "rss": rss_kib(server.pid),
                    "anon": status_kib(server.pid, "RssAnon"),
                    "file": status_kib(server.pid, "RssFile"),
                    "sqlite": sqlite_heap // 1024,
                    "db": fsize(db), "wal": fsize(db + "-wal"),
                }
                if worker:
                    row["wrss"] = rss_kib(worker.pid)
                    row["redis"] = redis_used_memory(redis_port)
                rows.append(row)
                line = (f"{row['t']:7.0f} {done:9d} {held:8d} {row['rate']:7.0f} {fmt_kib(row['rss']):>8}"
                        f" {fmt_kib(row['anon']):>6} {fmt_kib(row['file']):>6} {fmt_kib(row['sqlite']):>6}")
                if worker:
                    line += f" {fmt_kib(row['wrss']):>8} {row['redis'] / 2**20:9.1f}"
                else:
                    line += f" {row['db'] / 2**20:8.1f} {row['wal'] / 2**20:8.1f}"
                print(line, flush=True)
                last_print, last_done, last_t = now, done, now
            if finished:
                break
        if sub.error:
            print(f"FAILED: {sub.error}")
            return 1
        if done < N:
            print(f"FAILED: {done} of {N} jobs done within {TIMEOUT:.0f}s")
            return 1
        return verdict(rows, bool(worker), db)
    finally:
        stop_all()
        if os.environ.get("KEEP"):
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def verdict(rows, redis, db):
    ten = next(r for r in rows if r["done"] >= N / 10)
    end = rows[-1]
    after = [r for r in rows if r["t"] >= ten["t"]]
    mx = max(after, key=lambda r: r["rss"])
    growth = end["rss"] / ten["rss"] - 1
    ok = abs(growth) <= 0.10
    print(f"RSS at 10% of the jobs ({ten['done']} done, {ten['t']:.0f}s): {ten['rss']} KiB; "
          f"at the end ({end['done']} done, {end['t']:.0f}s): {end['rss']} KiB ({growth * 100:+.1f}%); "
          f"largest after 10%: {mx['rss']} KiB ({mx['rss'] / ten['rss'] * 100 - 100:+.1f}%)")
    if redis:
        print(f"worker RSS at 10%: {ten['wrss']} KiB, at the end: {end['wrss']} KiB; redis used_memory "
              f"at 10%: {ten['redis']} B, at the end: {end['redis']} B, largest: {max(r['redis'] for r in after)} B")
    else:
        held = [r for r in after if r["held"] > 0]
        dbmax = max(r["db"] for r in rows)
        walmax = max(r["wal"] for r in rows)
        per = [r["db"] / r["held"] for r in held]
        print(f"database file at the end {end['db']} B (largest {dbmax} B), WAL largest {walmax} B; "
              f"jobs held at the end {end['held']}")
        if per:
            print(f"database file bytes per job held (after 10%): median {sorted(per)[len(per) // 2]:.0f} B, "
                  f"at the largest file {dbmax / max(r['held'] for r in held if r['db'] == dbmax):.0f} B")
        pages = pages_per_job(db, end["held"])
        if pages:
            print(pages)
    print(f"verdict: RSS {'FLAT' if ok else 'NOT FLAT'} (end within 10% of the 10% mark: {growth * 100:+.1f}%)")
    return 0 if ok else 2


def pages_per_job(db, held):
    """Bytes of pages in use (not free) per job held, read from the live database (read only)."""
    if not shutil.which("sqlite3") or held <= 0:
        return None
    q = ("SELECT (SELECT page_count FROM pragma_page_count) - (SELECT freelist_count FROM pragma_freelist_count),"
         " (SELECT page_size FROM pragma_page_size), (SELECT COUNT(*) FROM jobs), (SELECT COUNT(*) FROM events);")
    out = subprocess.run(["sqlite3", "-readonly", db, q], capture_output=True, text=True, timeout=60).stdout.strip()
    try:
        used, psize, jobs, events = (int(x) for x in out.split("|"))
    except ValueError:
        return None
    if jobs == 0:
        return None
    return (f"pages in use {used} x {psize} B = {used * psize} B for {jobs} jobs and {events} events held: "
            f"{used * psize / jobs:.0f} B per job held (events included)")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
