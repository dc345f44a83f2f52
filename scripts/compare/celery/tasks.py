"""The Celery side of scripts/compare: a no-op task and a /bin/true task. Each records its start
time (wall clock) and marks itself done in Redis (a counter and the last finish time), which the
producer reads: Celery has no cheap "all finished" query without a result backend, and a result
backend would cost it more than these two commands."""

import os
import subprocess
import time

import redis
from celery import Celery

PORT = int(os.environ["COMPARE_REDIS_PORT"])
app = Celery("compare", broker=f"redis://127.0.0.1:{PORT}/1")
app.conf.update(
    task_ignore_result=True,
    worker_prefetch_multiplier=4,
    task_acks_late=False,
    broker_connection_retry_on_startup=True,
)
_r = None


def _redis():
    global _r
    if _r is None:
        _r = redis.Redis(host="127.0.0.1", port=PORT, db=2)
    return _r


def _done(run, sent, started):
    p = _redis().pipeline(transaction=False)
    p.incr(f"{run}:done")
    p.rpush(f"{run}:lat", started - sent)
    p.set(f"{run}:last", time.time())
    p.execute()


@app.task(name="noop")
def noop(run, sent):
    started = time.time()
    _done(run, sent, started)


@app.task(name="true")
def true(run, sent):
    started = time.time()
    subprocess.run(["/bin/true"], check=True)
    _done(run, sent, started)
