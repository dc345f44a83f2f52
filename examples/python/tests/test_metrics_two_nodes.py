"""``/metrics`` of two ``runyard serve`` processes on one Redis, after a known workload, read with
the Prometheus text parser of ``prometheus_client``:

- the store gauges (``runyard_jobs{type,status}``, ``runyard_queue_depth``,
  ``runyard_queue_oldest_age_seconds``) are the same on both nodes and agree with
  ``GET /async/jobs`` on both nodes;
- the per-process counters (submits, outcomes, retries, attempts, HTTP requests) summed over the
  two nodes equal the workload.

The test starts its own redis-server and two servers (the debug binary, ``target/debug/runyard``
or ``$RUNYARD_BIN``) on free ports. Skipped when the binary, redis-server or prometheus_client is
missing.
"""

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections import Counter

import pytest
import requests

parser = pytest.importorskip("prometheus_client.parser")

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
BIN = os.environ.get("RUNYARD_BIN") or os.path.join(REPO, "target", "debug", "runyard")
REDIS = shutil.which("redis-server")

pytestmark = [
    pytest.mark.skipif(not os.access(BIN, os.X_OK), reason=f"no runyard binary at {BIN}"),
    pytest.mark.skipif(REDIS is None, reason="no redis-server"),
]

N_OK = 6  # runyard.noop: succeed
M_FAIL = 2  # runyard.fail: fail every attempt
ATTEMPTS = 3
WAIT = 60  # seconds, for any one condition (CI's machine is small and busy)

RUNNERS = """
[[runners]]
kind = "service"
types = ["runyard.*"]

[[runners]]
kind = "service"
name = "serial"
types = ["slot.*"]
operation = "runyard.sleep"
concurrency = 1
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what, pred, timeout=WAIT):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout}s (last: {last!r})")


@pytest.fixture
def redis_url(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/"

    def up():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    wait_until("redis-server up", up, 20)
    yield url
    proc.terminate()
    proc.wait(timeout=20)


def start_node(tmp_path, name, redis_url, prefix, key):
    port = free_port()
    d = tmp_path / name
    d.mkdir()
    cfg = d / "runyard.toml"
    cfg.write_text(
        f'listen = "127.0.0.1:{port}"\n'
        f'data_dir = "{d / "data"}"\n'
        f'redis = "{redis_url}"\n'
        f'master_key = "{key}"\n'
        "[store]\n"
        f'prefix = "{prefix}"\n'
        "[worker]\n"
        'poll_interval = "200ms"\n' + RUNNERS
    )
    log = open(d / "server.log", "wb")
    proc = subprocess.Popen([BIN, "serve", "--config", str(cfg)], stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"

    def healthy():
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited: " + (d / "server.log").read_text())
        try:
            return requests.get(base + "/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    wait_until(f"{name} healthy", healthy, 30)
    return proc, base


@pytest.fixture
def nodes(tmp_path, redis_url):
    prefix = "mx" + uuid.uuid4().hex[:8]
    key = "metrics-two-nodes-" + uuid.uuid4().hex
    started = []
    try:
        for name in ("a", "b"):
            started.append(start_node(tmp_path, name, redis_url, prefix, key))
        yield [base for _, base in started]
    finally:
        for proc, _ in started:
            proc.terminate()
        for proc, _ in started:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def submit(base, body):
    r = requests.post(base + "/async/jobs", json=body, timeout=10)
    assert r.status_code == 202, r.text
    return r.json()["job_id"]


def job(base, jid):
    r = requests.get(f"{base}/async/jobs/{jid}", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def list_jobs(base):
    jobs, cursor = [], None
    for _ in range(100):
        params = {"limit": 100}
        if cursor:
            params["cursor"] = cursor
        r = requests.get(base + "/async/jobs", params=params, timeout=10)
        assert r.status_code == 200, r.text
        page = r.json()
        jobs += page["jobs"]
        cursor = page.get("next_cursor")
        if not cursor:
            return jobs
    raise AssertionError("job listing did not end")


def scrape(base):
    r = requests.get(base + "/metrics", timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4"), r.headers
    samples = {}
    for fam in parser.text_string_to_metric_families(r.text):
        for s in fam.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in samples, f"duplicate sample {key}"
            samples[key] = s.value
    return samples, r.text


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def series(samples, name):
    """{labels dict as a sorted tuple: value} of every sample named ``name``."""
    return {labels: v for (n, labels), v in samples.items() if n == name}


def total(samples, name, **labels):
    return sum(
        v for (n, ls), v in samples.items()
        if n == name and all(dict(ls).get(k) == x for k, x in labels.items())
    )


def test_two_nodes_agree_with_the_api_and_counters_sum_to_the_workload(nodes):
    a, b = nodes
    # Before any job (on Redis this sets up the job counts on an empty database, so what follows
    # is counted by the writes themselves): no job series on either node.
    for base in nodes:
        samples, text = scrape(base)
        assert not series(samples, "runyard_jobs"), text
    fast = {"initial_ms": 10, "max_ms": 10, "multiplier": 1.0, "jitter": False}
    ids = []
    for i in range(N_OK):
        ids.append(submit(nodes[i % 2], {"type": "runyard.noop"}))
    for i in range(M_FAIL):
        ids.append(submit(nodes[i % 2], {"type": "runyard.fail", "max_attempts": ATTEMPTS,
                                         "backoff": fast}))
    hold = submit(b, {"type": "runyard.sleep", "args": {"ms": 60000}})
    # Two slots (one per node): two slot jobs run, the third waits in the queue.
    slots = [submit(a, {"type": "slot.run", "args": {"ms": 60000}}),
             submit(b, {"type": "slot.run", "args": {"ms": 60000}})]
    for s in slots:
        wait_until(f"slot {s} RUNNING", lambda: job(a, s)["status"] == "RUNNING")
    queued = submit(a, {"type": "slot.wait", "args": {"ms": 10}})
    queued_at = time.time()
    submitted = N_OK + M_FAIL + 1 + 3
    for jid in ids:
        wait_until(f"{jid} final",
                   lambda: job(b, jid)["status"] in ("SUCCESS", "ERROR", "TIMEOUT", "CANCELLED"))
    wait_until("hold RUNNING", lambda: job(a, hold)["status"] == "RUNNING")
    r = requests.post(f"{a}/async/jobs/{hold}/cancel", timeout=10)
    assert r.status_code == 200, r.text
    wait_until("hold CANCELLED", lambda: job(b, hold)["status"] == "CANCELLED")
    assert job(b, queued)["status"] == "QUEUED"
    time.sleep(0.5)

    scraped = [scrape(a), scrape(b)]
    waited = time.time() - queued_at

    # Store gauges: the same on both nodes, and what both nodes' API lists.
    for base in (a, b):
        listed = Counter((j["type"], j["status"]) for j in list_jobs(base))
        assert sum(listed.values()) == submitted
        for samples, text in scraped:
            jobs = {(dict(ls)["type"], dict(ls)["status"]): v
                    for ls, v in series(samples, "runyard_jobs").items()}
            assert jobs == {k: float(n) for k, n in listed.items()}, text
    for samples, text in scraped:
        assert value(samples, "runyard_jobs", type="runyard.noop", status="SUCCESS") == N_OK, text
        assert value(samples, "runyard_jobs", type="runyard.fail", status="ERROR") == M_FAIL
        assert value(samples, "runyard_jobs", type="slot.run", status="RUNNING") == 2
        # Every type the store holds jobs of has a depth, 0 when none is QUEUED.
        depth = series(samples, "runyard_queue_depth")
        assert {k: v for k, v in depth.items() if v} == {(("type", "slot.wait"),): 1.0}, text
        assert {k[0][1] for k in depth} == {t for t, _ in listed}, text
        age = value(samples, "runyard_queue_oldest_age_seconds", type="slot.wait")
        assert 0.3 < age <= waited + 2, (age, waited, text)
        assert value(samples, "runyard_store_up") == 1

    # Counters: per process, summed over the nodes = the workload.
    def both(name, **labels):
        return sum(total(s, name, **labels) for s, _ in scraped)

    texts = "\n".join(t for _, t in scraped)
    # Both nodes took submits, so the sums below add two processes' counters.
    for samples, text in scraped:
        assert total(samples, "runyard_jobs_submitted_total") > 0, text
    assert both("runyard_jobs_submitted_total") == submitted, texts
    assert both("runyard_jobs_submitted_total", type="runyard.noop") == N_OK
    assert both("runyard_job_outcomes_total", type="runyard.noop", outcome="success") == N_OK
    assert both("runyard_job_outcomes_total", type="runyard.fail", outcome="error") == M_FAIL
    assert both("runyard_job_outcomes_total", type="runyard.sleep", outcome="cancelled") == 1
    assert both("runyard_job_outcomes_total") == N_OK + M_FAIL + 1, texts
    assert both("runyard_job_retries_total", type="runyard.fail") == M_FAIL * (ATTEMPTS - 1)
    assert both("runyard_job_retries_total") == M_FAIL * (ATTEMPTS - 1)
    # Every attempt was claimed from the queue by one node: the wait histogram counts them.
    attempts = N_OK + M_FAIL * ATTEMPTS + 1 + 2
    assert both("runyard_job_queue_wait_seconds_count") == attempts, texts
    assert both("runyard_job_run_seconds_count", type="runyard.fail") == M_FAIL * ATTEMPTS
    assert both("runyard_http_requests_total", method="POST", route="/async/jobs",
                status="202") == submitted
    assert both("runyard_http_requests_total", method="POST",
                route="/async/jobs/{id}/cancel", status="200") == 1
    assert both("runyard_store_errors_total") == 0
    assert hold not in texts and queued not in texts, "a job id in a label"

    for s in slots + [queued]:
        requests.post(f"{a}/async/jobs/{s}/cancel", timeout=10)
