"""The Celery producer of scripts/compare; the same shapes as bullmq/bench.mjs, one JSON line.

    python bench.py sequential N | inflight N C | batch N | idle N RATE | true N C

Celery's client is synchronous: "C in flight" is C producer threads (one connection each)."""

import json
import sys
import threading
import time
import uuid

sys.path.insert(0, __import__("os").path.dirname(__file__))
from tasks import _redis, noop, true  # noqa: E402


def main():
    shape, n = sys.argv[1], int(sys.argv[2])
    c = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    run = uuid.uuid4().hex
    task = true if shape == "true" else noop
    r = _redis()
    t0 = time.time()
    cpu0 = time.process_time()  # this process's CPU over the run (scripts/compare's CPU table)
    if shape == "sequential":
        for _ in range(n):
            task.delay(run, time.time())
    elif shape in ("inflight", "true"):
        counter = iter(range(n))
        lock = threading.Lock()

        def producer():
            while True:
                with lock:
                    if next(counter, None) is None:
                        return
                task.delay(run, time.time())

        threads = [threading.Thread(target=producer) for _ in range(c)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    elif shape == "batch":
        # Celery has no bulk add; a group is its closest (one message per task).
        from celery import group

        for i in range(0, n, 1000):
            group(task.s(run, time.time()) for _ in range(min(1000, n - i))).apply_async()
    elif shape == "idle":
        rate = c
        for i in range(n):
            due = t0 + i / rate
            if due > time.time():
                time.sleep(due - time.time())
            task.delay(run, time.time())
    else:
        raise SystemExit(f"unknown shape {shape}")
    submit_secs = time.time() - t0
    deadline = time.time() + 600
    while int(r.get(f"{run}:done") or 0) < n:
        if time.time() > deadline:
            raise SystemExit("timed out")
        time.sleep(0.005)
    last = float(r.get(f"{run}:last"))
    lat = sorted(float(x) * 1000 for x in r.lrange(f"{run}:lat", 0, -1))
    pct = lambda p: lat[min(len(lat) - 1, int(p / 100 * len(lat)))] if lat else None  # noqa: E731
    r.delete(f"{run}:done", f"{run}:lat", f"{run}:last")
    print(json.dumps({
        "system": "celery", "shape": shape, "jobs": n,
        "submit_rate": n / submit_secs, "e2e_rate": n / (last - t0),
        "start_p50_ms": pct(50), "start_p99_ms": pct(99),
        "cpu_s": time.process_time() - cpu0,
    }))


if __name__ == "__main__":
    main()
