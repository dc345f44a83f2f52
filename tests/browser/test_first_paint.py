"""First paint with many jobs in the store: the overview and the jobs table render their first
screen from counts and one page, never from the whole table.

RUNYARD_BROWSER_JOBS (default 20000) jobs are submitted through the HTTP API by a few keep-alive
clients (bounded in count and time): most are SCHEDULED a day ahead (nothing runs them), a few
hundred run on the service runner so the chart has data. The figures are printed (run with `-s`
to see them); the assertion bound is generous (10 s) because CI shares this slow machine."""

from __future__ import annotations

import http.client
import json
import os
import re
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from playwright.sync_api import expect

from conftest import Server, new_context

JOBS = int(os.environ.get("RUNYARD_BROWSER_JOBS", "20000"))
RUNNING = 300
BOUND_MS = 10000


@pytest.fixture(scope="module")
def crowded():
    srv = Server()
    later = (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()
    counter = iter(range(JOBS))
    lock = threading.Lock()
    errors = []
    deadline = time.time() + 600

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        while time.time() < deadline:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            body = {"type": "noop.ran", "args": {"i": i}} if i < RUNNING else \
                {"type": "noop.crowd", "args": {"i": i}, "run_at": later}
            conn.request("POST", "/async/jobs", json.dumps(body), {"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            if r.status != 202:
                errors.append(r.status)
                break
        conn.close()

    started = time.time()
    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.time() - started
    assert not errors, errors
    status, stats = srv.call("GET", "/async/stats")
    assert sum(stats["by_status"].values()) >= JOBS, stats
    print(f"\nsubmitted {JOBS} jobs in {took:.1f} s ({JOBS / took:.0f}/s)", flush=True)
    yield srv
    srv.stop()


def figures(page):
    return page.evaluate("""() => ({
        ready: Number(document.body.dataset.readyMs),
        fcp: (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime || null,
    })""")


def test_first_paint_with_many_jobs(crowded, browser):
    ctx = new_context(browser, viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    jobs_requests = []
    page.on("request", lambda r: "/async/jobs" in r.url and r.method == "GET" and jobs_requests.append(r.url))
    try:
        page.goto(f"{crowded.url}/#/")
        expect(page.locator("body")).to_have_attribute("data-ready", "/", timeout=30000)
        over = figures(page)
        expect(page.locator('[data-count="SCHEDULED"] .n')).to_have_text(str(JOBS - RUNNING))
        expect(page.locator("#recent tr")).to_have_count(20)

        page.goto("about:blank")
        jobs_requests.clear()
        page.goto(f"{crowded.url}/#/jobs")
        expect(page.locator("body")).to_have_attribute("data-ready", "/jobs", timeout=30000)
        table = figures(page)
        rows = page.locator("#rows tr").count()
        expect(page.locator("#next-page")).to_be_visible()
        print(f"\noverview: data on screen {over['ready']} ms, first contentful paint {over['fcp']} ms; "
              f"jobs table: data on screen {table['ready']} ms, first contentful paint {table['fcp']} ms, "
              f"{rows} rows, {len(jobs_requests)} list requests", flush=True)
        # One page, not the store: 50 rows, and every list call asks for at most 100 jobs.
        assert rows == 50, rows
        limits = [int(re.search(r"limit=(\d+)", u).group(1)) for u in jobs_requests if "limit=" in u]
        assert limits and max(limits) <= 100, jobs_requests
        assert len(jobs_requests) <= 10, jobs_requests
        assert over["ready"] < BOUND_MS and table["ready"] < BOUND_MS, (over, table)
    finally:
        ctx.close()
