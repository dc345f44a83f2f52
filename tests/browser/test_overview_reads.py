"""The overview over large jobs (probe dash2 F4): its panels read only the members they show
(`GET /async/jobs?fields=...`), so "Latest jobs" shows 20 rows of 20 jobs whose results are
~900 KB each and "Nodes holding leases" counts all 12 running jobs whose args are ~700 KB each
(whole jobs in pages of at most 4 MiB showed 4 rows and counted 5); the rows of "Latest jobs"
have no checkbox cell; and progress events (one job reporting progress for 3 s, no status
change) do not make the overview read its panels again (it read them every 500 ms, whole).

On a server of its own: the other tests' jobs would be the latest ones."""

from __future__ import annotations

import pathlib
import time

import pytest
from playwright.sync_api import expect

from conftest import ROOT, Server

EXTRA = """
[[runners]]
name = "hold"
kind = "local"
types = ["hold.*"]
large_args = "hook"
concurrency = 12
command = ["sleep", "600"]

[[runners]]
name = "bigresult"
kind = "local"
types = ["bigresult.*"]
concurrency = 4
env = { PYTHONPATH = "@ROOT@/examples/python" }
command = ["python3", "-c", "from runyard_job import JobClient; JobClient.from_env().result({'big': 'r' * 900000})"]

[[runners]]
name = "progress"
kind = "local"
types = ["progress.*"]
env = { PYTHONPATH = "@ROOT@/examples/python" }
# Reports progress every 0.1 s (events at most every 200 ms) until /tmp/runyard-gate-$JOB_ID
# exists (at most 120 s).
command = ["python3", "-c", "import os, time\\nfrom runyard_job import JobClient\\nc = JobClient.from_env()\\ngate = '/tmp/runyard-gate-' + os.environ['JOB_ID']\\nfor i in range(1200):\\n    if os.path.exists(gate): break\\n    c.progress(min(0.99, (i + 1) / 1200))\\n    time.sleep(0.1)\\n"]
""".replace("@ROOT@", str(ROOT))


@pytest.fixture(scope="module")
def large():
    """12 RUNNING jobs of ~700 KB of args, then 20 jobs that ended SUCCESS with ~900 KB results."""
    srv = Server(EXTRA)
    held = []
    try:
        held = [srv.submit({"type": "hold.lease", "args": {"i": i, "big": "a" * 700_000}}) for i in range(12)]
        for j in held:
            srv.wait(j, {"RUNNING"}, bound=60)
        done = [srv.submit({"type": "bigresult.one", "args": {"i": i}}) for i in range(20)]
        for j in done:
            assert srv.wait(j, {"SUCCESS", "ERROR"}, bound=60)["status"] == "SUCCESS"
        yield srv, held, done
    finally:
        for j in held:
            srv.call("POST", f"/async/jobs/{j}/cancel")
        srv.stop()


def open_overview(page, srv):
    page.goto(f"{srv.url}/#/")
    expect(page.locator("body")).to_have_attribute("data-ready", "/", timeout=30000)


def test_latest_jobs_shows_twenty_rows_of_jobs_with_large_results_and_no_checkbox(large, page):
    srv, _, done = large
    open_overview(page, srv)
    rows = page.locator("#recent tr")
    expect(rows.first).to_be_visible(timeout=15000)
    # Job, type, status, attempt, updated: five cells a row, no checkbox (only the jobs table
    # selects rows).
    assert page.locator("#recent input").count() == 0
    assert set(rows.evaluate_all("rs => rs.map((r) => r.children.length)")) == {5}
    expect(rows).to_have_count(20, timeout=15000)
    assert set(rows.evaluate_all("rs => rs.map((r) => r.dataset.job)")) == set(done)
    expect(rows.first.locator("[data-status]")).to_have_text("SUCCESS")


def test_the_leases_panel_counts_every_running_job_with_large_args(large, page):
    srv, held, _ = large
    worker = srv.job(held[0])["worker"]
    assert worker
    open_overview(page, srv)
    row = page.locator(f'#leases tr[data-worker="{worker}"]')
    expect(row).to_be_visible(timeout=15000)
    expect(row.locator("td").nth(1)).to_have_text("12")
    expect(row).to_contain_text("and 7 more")
    assert page.locator("#leases-cut").count() == 0


def test_progress_events_do_not_re_read_the_overview(large, page):
    srv, _, _ = large
    open_overview(page, srv)
    expect(page.locator("#recent tr").first).to_be_visible(timeout=15000)
    expect(page.locator("#live")).to_have_text("live", timeout=15000)
    job = srv.submit({"type": "progress.steps"})
    gate = pathlib.Path(f"/tmp/runyard-gate-{job}")
    try:
        # Its status events (QUEUED, STARTING, RUNNING) re-read the panels, once each at most
        # every 500 ms: the new job is on top of the latest jobs.
        expect(page.locator("#recent tr").first).to_have_attribute("data-job", job, timeout=15000)
        expect(page.locator("#recent tr").first.locator("[data-status]")).to_have_text("RUNNING", timeout=15000)
        deadline = time.time() + 30
        while srv.job(job)["progress"] <= 0 and time.time() < deadline:
            time.sleep(0.1)
        assert srv.job(job)["progress"] > 0
        page.wait_for_timeout(1500)  # a re-read its last status event started is over
        mark = srv.call("GET", "/async/activity")[1]["last_event_id"]
        reads = []
        page.on("request", lambda r: reads.append(r.url) if "/async/jobs?" in r.url else None)
        page.wait_for_timeout(3000)
        seen = list(reads)
        status, polled = srv.call("GET", f"/api/v1/async_event/?last_id={mark}&limit=100")
        assert status == 200, polled
        events = [e for e in polled["result"] if e["job_id"] == job]
        assert srv.job(job)["status"] == "RUNNING"
        kinds = [e["type"] for e in events]
        assert kinds.count("progress") >= 5 and "status" not in kinds, kinds
        # Whole re-reads came every 500 ms (3 listings each): 18 in 3 s. Now none.
        assert seen == [], seen
    finally:
        gate.touch()
        srv.wait(job, {"SUCCESS"})
        gate.unlink(missing_ok=True)
