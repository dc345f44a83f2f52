#!/usr/bin/env python3
"""Chaos suite of runyard (issue 9): real processes, real faults, then invariants.

Two phases, each under a steady submit load of short jobs:

1. **redis**: one redis-server (`--appendonly yes --appendfsync always`), two API nodes
   (`runyard serve --no-worker`) and two workers (`runyard worker`). Worker A reaches Redis
   through a TCP proxy of this script that can black-hole traffic (a partition: nothing is
   forwarded, no socket is closed); worker B runs under libfaketime so its wall clock can be
   stepped at run time (CLOCK_MONOTONIC is left alone).
2. **embedded**: one `runyard serve` (API and worker, SQLite data dir), killed and restarted, and
   its wall clock stepped.

Faults, one at a time, every few seconds at random (seeded): `kill -9` of an API node, a worker,
the server or Redis, restarted after a short random delay on the same data; a partition of worker
A from Redis longer than the lease; a clock step of worker B (or of the embedded server).

At the end (faults healed, every process up, load stopped, queue drained within a bound):
- every accepted job (202) is terminal, exactly once (one terminal status event on its
  channel), none lost;
- no two runs of a local job overlapped: the job itself (scripts/chaos/chaosjob.c) records its
  runs with CLOCK_MONOTONIC and checks, when it starts, that no earlier attempt of its job is
  still alive;
- no two runs of any job overlap in the API's run records (only between runs whose clocks were
  not stepped);
- the RSS of every process that lived through the load is back within a bound of its level after
  warm-up.
Exit status 1 when an invariant fails, 2 when the run itself could not be made.
"""

import argparse
import asyncio
import collections
import concurrent.futures
import ctypes
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import requests

TERMINAL = ("SUCCESS", "ERROR", "TIMEOUT", "CANCELLED")
LEASE_TTL = 3.0
FAKETIME_LIBS = (
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
)
_libc = ctypes.CDLL(None, use_errno=True)
KILLED = {}  # pid -> when we killed it with SIGKILL (wall time)


def log(msg):
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _die_with_parent():
    # PR_SET_PDEATHSIG(SIGKILL): nothing outlives this script, even if it is killed.
    _libc.prctl(1, signal.SIGKILL)


class Proc:
    """A child process we start, kill -9 and restart; each start is a new instance."""

    def __init__(self, name, argv, env, logdir):
        self.name, self.argv, self.env = name, argv, env
        self.log_path = os.path.join(logdir, f"{name}.log")
        self.p = None
        self.started = 0.0
        self.instances = []  # (pid, start time)
        self.kills = 0

    def start(self):
        assert self.p is None
        out = open(self.log_path, "ab")
        out.write(f"=== start {time.time():.3f}\n".encode())
        out.flush()
        self.p = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL,
                                  stdout=out, stderr=out, preexec_fn=_die_with_parent)
        out.close()
        self.started = time.monotonic()
        self.instances.append((self.p.pid, time.time()))

    def kill9(self):
        if self.p is not None:
            KILLED[self.p.pid] = time.time()
            self.p.kill()
            self.p.wait()
            self.p = None
            self.kills += 1

    def stop(self):
        """Graceful stop (SIGTERM, then SIGKILL after 15 s): only at the very end."""
        if self.p is not None:
            self.p.terminate()
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
            self.p = None

    @property
    def pid(self):
        return self.p.pid if self.p else None

    def alive(self):
        return self.p is not None and self.p.poll() is None

    def tail(self, n=30):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""


class Proxy:
    """TCP proxy on 127.0.0.1 that can black-hole traffic: while partitioned it neither forwards
    nor closes anything (new connections are accepted and held); healed, it forwards again."""

    def __init__(self, upstream_port):
        self.upstream = upstream_port
        self.port = free_port()
        self.blocked = False
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(10)

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())

    async def _serve(self):
        srv = await asyncio.start_server(self._conn, "127.0.0.1", self.port)
        self.ready.set()
        async with srv:
            await srv.serve_forever()

    async def _hold(self):
        while self.blocked:
            await asyncio.sleep(0.02)

    async def _pump(self, r, w):
        try:
            while True:
                data = await r.read(65536)
                await self._hold()
                if not data:
                    break
                w.write(data)
                await w.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            try:
                w.close()
            except Exception:
                pass

    async def _conn(self, cr, cw):
        await self._hold()
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            cw.close()
            return
        await asyncio.gather(self._pump(cr, uw), self._pump(ur, cw))


class Submitter:
    """A steady, bounded load: `rate` submits a second spread over a few threads. Every 202 is
    recorded (job id, type, time); refusals and unanswered requests are counted apart."""

    def __init__(self, urls, rate, rng_seed, threads=4):
        self.urls, self.rate, self.threads = urls, rate, threads
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.accepted = {}  # id -> type
        self.attempted = 0
        self.refused = collections.Counter()
        self.indeterminate = 0
        self.seed = rng_seed
        self.ts = []

    def body(self, rng):
        x = rng.random()
        backoff = {"initial_ms": 100, "max_ms": 1000, "multiplier": 2.0, "jitter": False}
        if x < 0.4:
            # Mostly short, some longer than the lease: those are the runs a partition or a clock
            # step catches while they still run.
            ms = rng.randint(1500, 5000) if rng.random() < 0.08 else rng.randint(50, 400)
            return {"type": "chaos.local", "args": {"sleep_ms": ms},
                    "max_attempts": 20, "backoff": backoff}
        if x < 0.8:
            return {"type": "runyard.sleep", "args": {"ms": rng.randint(20, 300)},
                    "max_attempts": 20, "backoff": backoff}
        return {"type": "runyard.noop", "max_attempts": 20, "backoff": backoff}

    def _loop(self, i):
        rng = random.Random(self.seed * 1000 + i)
        s = requests.Session()
        period = self.threads / self.rate
        nxt = time.monotonic()
        k = i
        while not self.stop_ev.is_set():
            nxt += period
            url = self.urls[k % len(self.urls)]
            k += 1
            b = self.body(rng)
            with self.lock:
                self.attempted += 1
            try:
                r = s.post(f"{url}/async/jobs", json=b, timeout=5)
                if r.status_code == 202:
                    jid = r.json()["job_id"]
                    with self.lock:
                        self.accepted[jid] = b["type"]
                else:
                    with self.lock:
                        self.refused[str(r.status_code)] += 1
            except requests.exceptions.ConnectionError as e:
                # Refused connection: nothing was sent. A reset or timeout after sending: unknown.
                if "refused" in str(e).lower():
                    with self.lock:
                        self.refused["conn-refused"] += 1
                else:
                    with self.lock:
                        self.indeterminate += 1
            except requests.exceptions.RequestException:
                with self.lock:
                    self.indeterminate += 1
            d = nxt - time.monotonic()
            if d > 0:
                self.stop_ev.wait(d)
            else:
                nxt = time.monotonic()

    def start(self):
        self.ts = [threading.Thread(target=self._loop, args=(i,), daemon=True)
                   for i in range(self.threads)]
        for t in self.ts:
            t.start()

    def stop(self):
        self.stop_ev.set()
        for t in self.ts:
            t.join(15)


class Phase:
    """One deployment under load and faults, then its checks."""

    def __init__(self, name, args, bin_path, job_bin, base, rng):
        self.name, self.args, self.bin, self.job_bin = name, args, bin_path, job_bin
        self.rng = rng
        self.dir = os.path.join(base, name)
        os.makedirs(os.path.join(self.dir, "runs", "pids"))
        self.procs = {}
        self.faults = collections.Counter()
        self.timeline = []  # (wall start, wall end, kind, target)
        self.clock_offsets = []
        self.rss = collections.defaultdict(list)  # pid -> [(monotonic, kib)]
        self.clocked = None  # the Proc whose clock is stepped
        self.proxy = None
        self.redis = None
        self.failures = []
        self.crashes = []

    # --- set-up -------------------------------------------------------------------------------
    def runners_toml(self):
        return f"""
[[runners]]
name = "svc"
kind = "service"
types = ["runyard.*"]
concurrency = 32
max_attempts = 20

[[runners]]
name = "loc"
kind = "local"
types = ["chaos.*"]
command = [{json.dumps(self.job_bin)}]
concurrency = 16
max_attempts = 20
env = {{ RUNS_DIR = {json.dumps(os.path.join(self.dir, "runs"))} }}
"""

    def worker_toml(self):
        return f"""
[worker]
lease_ttl = "{int(LEASE_TTL * 1000)}ms"
poll_interval = "200ms"
shutdown_grace = "2s"
kill_grace = "200ms"
"""

    def env(self, hostname, faketime=False):
        e = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
        e["RUNYARD_LOG"] = os.environ.get("CHAOS_RUNYARD_LOG", "info")
        e["HOSTNAME"] = hostname
        if faketime:
            clock = os.path.join(self.dir, f"clock-{hostname}")
            with open(clock, "w") as f:
                f.write("+0\n")
            e["LD_PRELOAD"] = self.args.faketime_lib
            e["FAKETIME_TIMESTAMP_FILE"] = clock
            e["FAKETIME_NO_CACHE"] = "1"
            e["DONT_FAKE_MONOTONIC"] = "1"
            e["FAKETIME_DONT_FAKE_MONOTONIC"] = "1"
        return e

    def step_clock(self, proc, offset):
        clock = proc.env["FAKETIME_TIMESTAMP_FILE"]
        tmp = clock + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{offset:+d}\n")
        os.replace(tmp, clock)

    def wait_healthy(self, url, proc, bound=30):
        until = time.monotonic() + bound
        while time.monotonic() < until:
            if proc is not None and not proc.alive():
                raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
            try:
                if requests.get(f"{url}/health", timeout=1).status_code == 200:
                    return True
            except requests.exceptions.RequestException:
                pass
            time.sleep(0.05)
        return False

    def start_redis(self):
        rdir = os.path.join(self.dir, "redis")
        os.makedirs(rdir, exist_ok=True)
        self.redis_port = free_port()
        self.redis = Proc("redis", [
            "redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
            "--dir", rdir, "--save", "", "--appendonly", "yes", "--appendfsync", "always",
        ], dict(os.environ), self.dir)
        self.procs["redis"] = self.redis
        self.redis.start()
        self.wait_redis()

    def wait_redis(self, bound=20):
        until = time.monotonic() + bound
        while time.monotonic() < until:
            try:
                s = socket.create_connection(("127.0.0.1", self.redis_port), 0.2)
                s.sendall(b"PING\r\n")
                s.settimeout(0.5)
                if s.recv(64).startswith(b"+PONG"):
                    s.close()
                    return
                s.close()
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("redis did not come up:\n" + self.redis.tail())

    def setup_redis(self):
        self.start_redis()
        self.proxy = Proxy(self.redis_port)
        key = "chaos-master-key-0123456789abcdef"
        self.urls = []
        for n in ("api-1", "api-2"):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            cfg = os.path.join(self.dir, f"{n}.toml")
            with open(cfg, "w") as f:
                f.write(f'listen = "127.0.0.1:{port}"\npublic_url = "{url}"\n'
                        f'redis = "redis://127.0.0.1:{self.redis_port}"\nmaster_key = "{key}"\n'
                        f'[store]\nretry = "2s"\n' + self.worker_toml() + self.runners_toml())
            p = Proc(n, [self.bin, "serve", "--no-worker", "--config", cfg,
                         "--data-dir", os.path.join(self.dir, f"data-{n}")], self.env(n), self.dir)
            p.url = url
            self.procs[n] = p
            self.urls.append(url)
        for n, port, ft in (("worker-a", self.proxy.port, False), ("worker-b", self.redis_port, True)):
            cfg = os.path.join(self.dir, f"{n}.toml")
            with open(cfg, "w") as f:
                f.write(f'public_url = "{self.urls[0]}"\nredis = "redis://127.0.0.1:{port}"\n'
                        f'master_key = "{key}"\n[store]\nretry = "2s"\n'
                        + self.worker_toml() + self.runners_toml())
            p = Proc(n, [self.bin, "worker", "--config", cfg,
                         "--data-dir", os.path.join(self.dir, f"data-{n}")],
                     self.env(n, faketime=ft), self.dir)
            self.procs[n] = p
        self.clocked = self.procs["worker-b"]
        for n in ("api-1", "api-2", "worker-a", "worker-b"):
            self.procs[n].start()
        for n in ("api-1", "api-2"):
            if not self.wait_healthy(self.procs[n].url, self.procs[n]):
                raise RuntimeError(f"{n} never healthy:\n{self.procs[n].tail()}")
        # api-2 and worker-a are never killed (worker-a is the one partitioned): the submitter
        # always has an API, and their memory is compared from the warm-up to the end.
        self.targets = ["api-1", "worker-b", "redis", "partition", "clock"]

    def setup_embedded(self):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cfg = os.path.join(self.dir, "server.toml")
        with open(cfg, "w") as f:
            f.write(f'listen = "127.0.0.1:{port}"\npublic_url = "{url}"\n'
                    f'data_dir = {json.dumps(os.path.join(self.dir, "data"))}\n'
                    + self.worker_toml() + self.runners_toml())
        p = Proc("server", [self.bin, "serve", "--config", cfg], self.env("server", faketime=True),
                 self.dir)
        p.url = url
        self.procs["server"] = p
        self.urls = [url]
        self.clocked = p
        p.start()
        if not self.wait_healthy(url, p):
            raise RuntimeError(f"server never healthy:\n{p.tail()}")
        self.targets = ["server", "server", "clock"]

    # --- faults -------------------------------------------------------------------------------
    def sample_rss(self):
        now = time.monotonic()
        for p in self.procs.values():
            if p.alive():
                k = rss_kib(p.pid)
                if k:
                    self.rss[p.pid].append((now, k))

    def sleep(self, secs):
        until = time.monotonic() + secs
        while True:
            left = until - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.5))
            self.sample_rss()
            self.reap_crashed()

    def reap_crashed(self):
        """A process that died without being killed is a finding: recorded, then restarted."""
        for p in self.procs.values():
            if p.p is not None and p.p.poll() is not None:
                code = p.p.returncode
                log(f"{self.name}: {p.name} (pid {p.pid}) EXITED by itself ({code}):\n{p.tail(15)}")
                self.crashes.append(f"{p.name} exited with {code}")
                p.p = None
                p.start()

    def restart(self, name):
        p = self.procs[name]
        p.start()
        if name == "redis":
            self.wait_redis()

    def fault(self):
        a, rng = self.args, self.rng
        kind = rng.choice(self.targets)
        t0 = time.time()
        if kind == "partition":
            secs = rng.uniform(1.5 * LEASE_TTL, 3.0 * LEASE_TTL)
            log(f"{self.name}: partition worker-a <-> redis for {secs:.1f}s")
            self.proxy.blocked = True
            self.sleep(secs)
            self.proxy.blocked = False
            self.faults["partition worker-a/redis"] += 1
        elif kind == "clock":
            big = a.clock_step
            off = rng.choice([-1, 1]) * rng.randint(max(1, big // 2), big)
            secs = rng.uniform(3, 8)
            log(f"{self.name}: clock of {self.clocked.name} stepped {off:+d}s for {secs:.1f}s")
            self.step_clock(self.clocked, off)
            self.clock_offsets.append(off)
            self.sleep(secs)
            self.step_clock(self.clocked, 0)
            self.faults[f"clock step {self.clocked.name}"] += 1
            kind = f"clock {off:+d}s"
        else:
            p = self.procs[kind]
            down = rng.uniform(0.3, 3.0)
            log(f"{self.name}: kill -9 {kind} (pid {p.pid}), restart in {down:.1f}s")
            p.kill9()
            self.sleep(down)
            self.restart(kind)
            self.faults[f"kill -9 {kind}"] += 1
        self.timeline.append((t0, time.time(), kind))

    # --- run ----------------------------------------------------------------------------------
    def run(self, seconds):
        (self.setup_redis if self.name == "redis" else self.setup_embedded)()
        sub = Submitter(self.urls, self.args.rate, self.args.seed + (7 if self.name == "redis" else 11))
        self.sub = sub
        sub.start()
        t_start = time.monotonic()
        # Warm-up without faults: the RSS baselines of the first instances are taken here.
        warm = min(10.0, seconds / 4)
        self.sleep(warm)
        self.warm_end = time.monotonic()
        end = t_start + seconds
        while time.monotonic() < end - 2:
            self.sleep(self.rng.uniform(1.0, 4.0))
            if time.monotonic() >= end - 2:
                break
            self.fault()
        sub.stop()
        self.load_end = time.monotonic()
        log(f"{self.name}: load stopped: {sub.attempted} submits, {len(sub.accepted)} accepted; "
            f"faults {dict(self.faults)}")
        self.reap_crashed()
        for p in self.procs.values():
            if p.p is None:
                p.start()
        if self.proxy:
            self.proxy.blocked = False
        self.drain()
        self.sleep(3)
        self.check()
        for p in self.procs.values():
            p.stop()

    def get_json(self, s, path, bound=10):
        until = time.monotonic() + bound
        while True:
            for url in self.urls:
                try:
                    r = s.get(f"{url}{path}", timeout=5)
                    if r.status_code in (200, 404):
                        return r.status_code, r.json()
                except (requests.exceptions.RequestException, ValueError):
                    pass
            if time.monotonic() > until:
                return None, None
            time.sleep(0.2)

    def drain(self):
        ids = list(self.sub.accepted)
        until = time.monotonic() + self.args.drain
        pending = ids
        s = requests.Session()
        self.jobs = {}
        while True:
            still = []
            with concurrent.futures.ThreadPoolExecutor(8) as ex:
                res = list(ex.map(lambda i: (i, self.get_json(s, f"/async/jobs/{i}")), pending))
            for i, (code, body) in res:
                if code == 200 and body.get("status") in TERMINAL:
                    self.jobs[i] = body
                else:
                    still.append(i)
            pending = still
            log(f"{self.name}: drain: {len(ids) - len(pending)}/{len(ids)} terminal")
            if not pending or time.monotonic() > until:
                break
            self.sleep(2)
        self.pending = pending

    # --- checks -------------------------------------------------------------------------------
    def check(self):
        s = requests.Session()
        missing, not_terminal = [], []
        for i in self.pending:
            code, body = self.get_json(s, f"/async/jobs/{i}")
            if code == 404:
                missing.append(i)
            else:
                not_terminal.append((i, body.get("status") if body else "unreadable"))
                if body:
                    self.jobs[i] = body
        self.lost, self.not_terminal = missing, not_terminal
        self.by_status = collections.Counter(j["status"] for j in self.jobs.values())

        # Terminal exactly once: one terminal status event on the job's channel.
        def terminal_events(i):
            code, body = self.get_json(s2.session(), f"/api/v1/async_event/?channel={i}&limit=100")
            if code != 200:
                return i, None
            return i, sum(1 for e in body.get("result", [])
                          if e.get("type") == "status" and e.get("runyard_status") in TERMINAL)

        class S2(threading.local):
            def session(self):
                if not hasattr(self, "s"):
                    self.s = requests.Session()
                return self.s

        s2 = S2()
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            counts = dict(ex.map(terminal_events, list(self.jobs)))
        self.dup_terminal = [i for i, c in counts.items() if c is not None and c > 1]
        self.no_terminal_event = [i for i, c in counts.items() if c == 0]
        self.unread_events = [i for i, c in counts.items() if c is None]

        # The runs file: overlaps seen by the jobs themselves, and from their monotonic times.
        runs = collections.defaultdict(dict)  # id -> attempt -> [start, end, pid]
        alive = []
        with open(os.path.join(self.dir, "runs", "runs")) as f:
            for line in f:
                p = line.split()
                if p[0] == "alive":
                    alive.append(line.strip())
                    continue
                slot = runs[p[1]].setdefault(int(p[2]), [None, None, int(p[4])])
                slot[0 if p[0] == "start" else 1] = int(p[3])
        self.alive_overlaps = alive
        interval_overlaps = []
        for jid, att in runs.items():
            spans = sorted((v[0], v[1], a) for a, v in att.items() if v[0] is not None)
            for x, y in zip(spans, spans[1:]):
                if x[1] is not None and x[1] > y[0]:
                    interval_overlaps.append(f"{jid}: attempt {x[2]} ended at {x[1]} after "
                                             f"attempt {y[2]} started at {y[0]}")
        self.interval_overlaps = interval_overlaps
        self.local_runs = sum(len(a) for a in runs.values())
        self.local_killed_runs = sum(1 for a in runs.values() for v in a.values() if v[1] is None)
        self.completed_then_rerun = sum(
            1 for a in runs.values()
            if any(v[1] is not None for k, v in a.items() if k < max(a)))

        # The API's run records; skip pairs involving a run on the clock-stepped node.
        stepped = self.clocked.name
        api_overlaps = []
        reruns, causes = 0, collections.Counter()
        for jid, j in self.jobs.items():
            rs = j.get("runs") or []
            if len(rs) > 1:
                reruns += 1
            for r in rs[:-1]:
                causes[self.cause(r)] += 1
            for x, y in zip(rs, rs[1:]):
                if stepped in (x.get("worker") or "") or stepped in (y.get("worker") or ""):
                    continue
                if x.get("ended_at") and y.get("claimed_at") and x["ended_at"] > y["claimed_at"]:
                    api_overlaps.append(f"{jid}: run {x} / run {y}")
        self.api_overlaps, self.reruns, self.causes = api_overlaps, reruns, causes
        # What a failed (then retried) run said: the job-stream log lines of a few such jobs.
        self.error_samples = []
        for jid, j in self.jobs.items():
            if len(self.error_samples) >= 5:
                break
            if any(r.get("outcome") in ("ERROR", "TIMEOUT") for r in (j.get("runs") or [])[:-1]):
                code, body = self.get_json(s, f"/api/v1/async_event/?channel={jid}&limit=100")
                errs = [(e.get("attempt"), e.get("runyard_status"), e.get("errors"))
                        for e in (body or {}).get("result", []) if e.get("errors")]
                self.error_samples.append(f"{jid} ({j.get('type')}): {errs[:3]}")

        # Memory: every instance that lived from the warm-up to the end.
        self.mem = []
        for p in self.procs.values():
            if not p.alive():
                continue
            samples = self.rss.get(p.pid, [])
            base = [k for t, k in samples if p.started + 5 <= t <= self.load_end and t >= self.warm_end - 1]
            final = rss_kib(p.pid)
            if not base or final is None or p.started > self.warm_end:
                self.mem.append((p.name, None, final, "restarted during the run: no baseline"))
                continue
            b = base[0]
            bound = int(b * 1.5) + 32 * 1024
            verdict = "ok" if final <= bound else f"GREW (bound {bound})"
            self.mem.append((p.name, b, final, verdict))

        bad = []
        if self.lost:
            bad.append(f"{len(self.lost)} accepted jobs lost (404): {self.lost[:5]}")
        if self.not_terminal:
            bad.append(f"{len(self.not_terminal)} jobs not terminal after the drain: "
                       f"{self.not_terminal[:5]}")
        if self.dup_terminal:
            bad.append(f"{len(self.dup_terminal)} jobs terminal more than once: {self.dup_terminal[:5]}")
        if self.alive_overlaps:
            bad.append(f"{len(self.alive_overlaps)} runs started while an earlier attempt of the "
                       f"same job was alive: {self.alive_overlaps[:5]}")
        if self.interval_overlaps:
            bad.append(f"{len(self.interval_overlaps)} overlapping run intervals: "
                       f"{self.interval_overlaps[:5]}")
        if self.api_overlaps:
            bad.append(f"{len(self.api_overlaps)} overlapping API run records: {self.api_overlaps[:3]}")
        if self.crashes:
            bad.append(f"processes exited by themselves: {self.crashes}")
        for name, b, f, v in self.mem:
            if v.startswith("GREW"):
                bad.append(f"{name} RSS {b} KiB -> {f} KiB: {v}")
        self.failures = bad

    def cause(self, run):
        """Why a run was not the last: its outcome, and the fault around its end."""
        out = run.get("outcome") or "?"
        w = run.get("worker") or ""
        end = run.get("ended_at")
        when = None
        if end:
            try:
                from datetime import datetime
                when = datetime.fromisoformat(end.replace("Z", "+00:00")).timestamp()
            except ValueError:
                pass
        fault = "no fault nearby"
        parts = w.split("-")
        pid = next((int(x) for x in parts if x.isdigit()), None)
        killed = KILLED.get(pid)
        if killed is not None and (when is None or killed - 1 <= when <= killed + 3 * LEASE_TTL + 5):
            fault = "its worker was killed"
        elif when is not None:
            # A run is reaped a lease or more after what cut it off: the cause is the latest
            # fault that began at least (almost) a lease before the reap and ended shortly before.
            near = [k for (a, b, k) in self.timeline
                    if a <= when - LEASE_TTL + 0.5 and when <= b + 2 * LEASE_TTL + 2]
            if near:
                fault = near[-1]
        return f"{out} on {w.split('-')[0]}{'-' + w.split('-')[1] if w.startswith('worker') else ''} ({fault})"

    def summary(self):
        sub = self.sub
        lines = [f"== phase {self.name} =="]
        lines.append(f"  submits attempted {sub.attempted}, accepted {len(sub.accepted)}, refused "
                     f"{sum(sub.refused.values())} {dict(sub.refused)}, indeterminate {sub.indeterminate}")
        by_type = collections.Counter(sub.accepted.values())
        lines.append(f"  accepted by type {dict(by_type)}")
        lines.append(f"  terminal by status {dict(self.by_status)}; not terminal {len(self.not_terminal)}; "
                     f"lost {len(self.lost)}")
        lines.append(f"  terminal status events: duplicates {len(self.dup_terminal)}, none "
                     f"{len(self.no_terminal_event)}, unreadable {len(self.unread_events)}")
        lines.append(f"  faults {dict(sorted(self.faults.items()))}")
        if self.clock_offsets:
            lines.append(f"  clock steps (s) {self.clock_offsets}")
        lines.append(f"  jobs re-run (more than one run) {self.reruns}")
        for c, n in self.causes.most_common():
            lines.append(f"    {n:5d} ended runs: {c}")
        lines.append(f"  local runs {self.local_runs}, killed mid-run {self.local_killed_runs}, jobs "
                     f"re-run after an attempt had completed {self.completed_then_rerun}")
        lines.append(f"  overlaps: seen alive by the next attempt {len(self.alive_overlaps)}, "
                     f"monotonic intervals {len(self.interval_overlaps)}, API run records "
                     f"{len(self.api_overlaps)}")
        for e in self.error_samples:
            lines.append(f"    a failed run that was retried: {e}")
        for name, b, f, v in self.mem:
            lines.append(f"  RSS {name}: after warm-up {b} KiB, at the end {f} KiB: {v}")
        for p in self.procs.values():
            lines.append(f"  {p.name}: {len(p.instances)} instance(s), {p.kills} kill -9")
        return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("seconds", nargs="?", type=float, default=60.0,
                    help="total seconds of load and faults (split 2:1 redis:embedded)")
    ap.add_argument("--bin", default=os.environ.get("RUNYARD", "target/debug/runyard"))
    ap.add_argument("--seed", type=int, default=int(os.environ.get("CHAOS_SEED", "0")) or None)
    ap.add_argument("--rate", type=float, default=float(os.environ.get("CHAOS_RATE", "50")))
    ap.add_argument("--drain", type=float, default=120.0, help="bound on the final drain (s)")
    ap.add_argument("--clock-step", type=int, default=int(os.environ.get("CHAOS_CLOCK_STEP", "10")),
                    help="largest clock step (s); steps are drawn from [max/2, max], either sign")
    ap.add_argument("--phases", default="redis,embedded")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, runs files)")
    a = ap.parse_args()
    if a.seed is None:
        a.seed = random.randrange(1, 1 << 31)
    a.faketime_lib = next((p for p in FAKETIME_LIBS if os.path.exists(p)), None)
    if a.faketime_lib is None:
        print("libfaketime not found: apt-get install faketime", file=sys.stderr)
        return 2
    if shutil.which("redis-server") is None:
        print("redis-server not found", file=sys.stderr)
        return 2
    base = tempfile.mkdtemp(prefix="runyard-chaos-")
    job_bin = os.path.join(base, "chaosjob")
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "chaosjob.c")
    subprocess.run([os.environ.get("CC", "cc"), "-O2", "-o", job_bin, src], check=True)
    binp = os.path.abspath(a.bin)
    log(f"seed {a.seed}, {a.seconds:.0f}s, rate {a.rate}/s, lease {LEASE_TTL}s, clock steps up to "
        f"{a.clock_step}s, bin {binp}, work dir {base}")
    rng = random.Random(a.seed)
    phases = [p for p in a.phases.split(",") if p]
    share = {"redis": 2.0, "embedded": 1.0}
    total = sum(share[p] for p in phases)
    done = []
    rc = 0
    try:
        for name in phases:
            secs = max(20.0, a.seconds * share[name] / total)
            ph = Phase(name, a, binp, job_bin, base, rng)
            log(f"phase {name}: {secs:.0f}s")
            try:
                ph.run(secs)
            except Exception:
                for p in ph.procs.values():
                    print(f"--- {p.name} log tail ---\n{p.tail()}", file=sys.stderr)
                    p.kill9()
                raise
            done.append(ph)
    except Exception as e:  # the run itself failed
        log(f"run failed: {e!r}; work dir {base}")
        return 2
    print()
    print(f"runyard chaos: seed {a.seed}, {a.seconds:.0f}s, rate {a.rate}/s, lease {LEASE_TTL}s")
    for ph in done:
        print(ph.summary())
    bad = [f"{ph.name}: {b}" for ph in done for b in ph.failures]
    print()
    if bad:
        print(":valid? false")
        for b in bad:
            print(f"  {b}")
        print(f"work dir kept: {base} (logs, runs/runs); re-run with --seed {a.seed}")
        rc = 1
    else:
        print(":valid? true")
        if not a.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"work dir kept: {base}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
