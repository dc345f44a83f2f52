"""The overview over large jobs (probe dash2 F4): its panels read only the members they show
(`GET /async/jobs?fields=...`), so "Latest jobs" shows 20 rows of 20 jobs whose results are
~900 KB each and "Nodes holding leases" counts all 12 running jobs whose args are ~700 KB each
(whole jobs in pages of at most 4 MiB showed 4 rows and counted 5); the rows of "Latest jobs"
have no checkbox cell; and progress events (one job reporting progress for 3 s, no status
change) do not make the overview read its panels again (it read them every 500 ms, whole).
Review of that fix: `listJobs` follows `next_cursor` (a first page routed to end short with a
cursor); a slow read of "Latest jobs" cannot put older rows back over a newer read's; the lease
panel reads at most 2 pages of each status, says when it stopped there, and is read again at most
every 5 s while status events flow, and after the last one. The dead letters page reads only the
members its rows show too (probe s51a finding 3: 6 dead letters of ~1 MB of args each showed 4).

On servers of their own: the other tests' jobs would be the latest ones."""

from __future__ import annotations

import json
import pathlib
import re
import time
import uuid

import pytest
from playwright.sync_api import expect

from conftest import ROOT, Server

EXTRA = """
[[runners]]
name = "hold"
kind = "local"
types = ["hold.*"]
large_args = "hook"
concurrency = 13
command = ["sleep", "600"]

[[runners]]
name = "bigresult"
kind = "local"
types = ["bigresult.*"]
concurrency = 4
env = { PYTHONPATH = "@ROOT@/examples/python" }
command = ["python3", "-c", "from runyard_job import JobClient; JobClient.from_env().result({'big': 'r' * 900000})"]

[[runners]]
name = "quick"
kind = "service"
types = ["quick.*"]
operation = "runyard.noop"

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
        # The re-reads its last status event started are over (the leases' comes up to 5 s
        # after the one before it).
        page.wait_for_timeout(6500)
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


LATEST = re.compile(r"/async/jobs\?fields=[^&]*&limit=20$")  # Latest jobs' first page


def test_latest_jobs_follows_next_cursor(large, page):
    """The first page of "Latest jobs" routed to end after 7 jobs with a cursor: the page asks for
    the rest from that cursor and shows the 20 latest jobs, in order."""
    srv, _, _ = large
    _, listed = srv.call("GET", "/async/jobs?limit=20&fields=id")
    latest = [j["id"] for j in listed["jobs"]]
    asked = []
    page.on("request", lambda r: asked.append(r.url) if "/async/jobs?" in r.url else None)

    def short(route):
        answer = route.fetch()
        body = answer.json()
        body["jobs"] = body["jobs"][:7]
        body["next_cursor"] = body["jobs"][-1]["id"]
        headers = {k: v for k, v in answer.headers.items() if k.lower() != "content-length"}
        route.fulfill(status=answer.status, headers=headers, body=json.dumps(body))

    page.route(LATEST, short)
    open_overview(page, srv)
    rows = page.locator("#recent tr")
    expect(rows).to_have_count(20, timeout=15000)
    assert rows.evaluate_all("rs => rs.map((r) => r.dataset.job)") == latest
    follow = [u for u in asked if f"cursor={latest[6]}" in u]
    assert len(follow) == 1 and "limit=13" in follow[0], asked


def test_a_slow_read_of_latest_jobs_does_not_put_older_rows_back(large, page):
    """A re-read of "Latest jobs" held (its answer taken from the server when asked, given to the
    page later) while the job on top goes on to SUCCESS: the page reads again once it has that
    answer, and shows SUCCESS. Before, the reads after it came in first and the held one, older,
    was drawn last: the row stayed at the status it had then."""
    srv, _, _ = large
    open_overview(page, srv)
    expect(page.locator("#live")).to_have_text("live", timeout=15000)
    held = []

    def hold(route):
        if held:
            return route.continue_()
        held.append((route, route.fetch()))

    page.route(LATEST, hold)
    job = srv.submit({"type": "progress.steps"})
    gate = pathlib.Path(f"/tmp/runyard-gate-{job}")
    try:
        srv.wait(job, {"RUNNING"})
        deadline = time.time() + 15
        while not held and time.time() < deadline:
            page.wait_for_timeout(100)
        assert held, "no re-read of the latest jobs after the job's status events"
        gate.touch()
        srv.wait(job, {"SUCCESS"})
        page.wait_for_timeout(1500)  # the status event is in; reads that do not wait are done
        route, answer = held[0]
        route.fulfill(response=answer)
        page.wait_for_timeout(1500)  # the held answer is drawn
        top = page.locator("#recent tr").first
        expect(top).to_have_attribute("data-job", job, timeout=10000)
        expect(top.locator("[data-status]")).to_have_text("SUCCESS", timeout=10000)
    finally:
        gate.touch()
        srv.wait(job, {"SUCCESS"})
        gate.unlink(missing_ok=True)


def test_the_leases_panel_reads_two_pages_of_each_status_and_says_so(large, page):
    """Lease listings routed to pages of 100 that always go on: the panel reads 2 pages of each
    status, not more, and says it counted the first 200 of each."""
    srv, _, _ = large
    reads = []

    def endless(route):
        url = route.request.url
        reads.append(url)
        jobs = [{"id": str(uuid.uuid4()), "type": "hold.lease", "worker": "w-fake"} for _ in range(100)]
        route.fulfill(status=200, content_type="application/json",
                      body=json.dumps({"jobs": jobs, "next_cursor": jobs[-1]["id"]}))

    page.route(re.compile(r"/async/jobs\?status=(STARTING|RUNNING)&fields="), endless)
    open_overview(page, srv)
    cut = page.locator("#leases-cut")
    expect(cut).to_have_text("Counted from the first 200 starting and 200 running jobs; there may be more.", timeout=15000)
    expect(page.locator('#leases tr[data-worker="w-fake"] td').nth(1)).to_have_text("400")
    page.wait_for_timeout(1000)
    for st in ("STARTING", "RUNNING"):
        mine = [u for u in reads if f"status={st}&" in u]
        rounds = [u for u in mine if "cursor=" not in u]
        # Each round (one, unless an event came) reads its first page and one more.
        assert rounds and len(mine) == 2 * len(rounds), reads


def test_the_leases_panel_is_read_at_most_every_5_s_and_after_the_last_event(large, page):
    """Status events for 6 s (a quick job submitted every 0.4 s): the lease panel is read at most
    every 5 s (it was read with every round of the other panels, every 500 ms: 12 times); a job
    taking a lease after them shows in the panel within a few seconds (the read after the last
    event)."""
    srv, held, _ = large
    worker = srv.job(held[0])["worker"]
    open_overview(page, srv)
    expect(page.locator("#live")).to_have_text("live", timeout=15000)
    row = page.locator(f'#leases tr[data-worker="{worker}"]')
    expect(row.locator("td").nth(1)).to_have_text("12", timeout=15000)
    page.wait_for_timeout(6000)  # any read started before now is 5 s old
    rounds = []
    page.on("request", lambda r: rounds.append(time.time()) if "status=RUNNING&fields=" in r.url and "cursor=" not in r.url else None)
    start = time.time()
    quick = []
    while time.time() < start + 6:
        quick.append(srv.submit({"type": "quick.one"}))
        page.wait_for_timeout(400)  # (the page's requests are seen while Playwright waits)
    for j in quick:
        srv.wait(j, {"SUCCESS"})
    in_window = [round(t - start, 1) for t in rounds if t < start + 6]
    assert 1 <= len(in_window) <= 2, in_window
    extra = srv.submit({"type": "hold.lease", "args": {"i": 13}})
    try:
        srv.wait(extra, {"RUNNING"}, bound=60)
        expect(row.locator("td").nth(1)).to_have_text("13", timeout=10000)
    finally:
        srv.call("POST", f"/async/jobs/{extra}/cancel")


BIGFAIL = """
[[runners]]
name = "bigfail"
kind = "service"
types = ["bigfail.*"]
operation = "runyard.fail"
max_attempts = 1
"""


@pytest.fixture(scope="module")
def dead_letters():
    """6 dead letters of ~1 MB of args each (6 MB: more than a page of whole jobs holds)."""
    srv = Server(BIGFAIL)
    try:
        kind = f"bigfail.{uuid.uuid4().hex[:6]}"
        dead = [srv.submit({"type": kind, "args": {"i": i, "pad": "z" * 1_000_000}}) for i in range(6)]
        for j in dead:
            assert srv.wait(j, {"SUCCESS", "ERROR"}, bound=60)["status"] == "ERROR"
        yield srv, kind, dead
    finally:
        srv.stop()


def test_the_dead_letters_page_reads_only_the_members_it_shows(dead_letters, page):
    """Probe s51a finding 3: the dead letters page read whole jobs (`?dead=true&limit=50`, no
    `fields`): a page of them ends at 4 MiB, so it showed 4 of these 6 (and "Retry all shown"
    retried 4). It reads the members its rows show, as the other panels do: all 6 on one page."""
    srv, kind, dead = dead_letters
    reads = []
    page.on("request", lambda r: reads.append(r.url) if "dead=true" in r.url else None)
    page.goto(f"{srv.url}/#/dead?type={kind}")
    expect(page.locator("body")).to_have_attribute("data-ready", "/dead", timeout=30000)
    rows = page.locator("#rows tr[data-job]")
    expect(rows).to_have_count(6, timeout=15000)
    assert set(rows.evaluate_all("rs => rs.map((r) => r.dataset.job)")) == set(dead)
    expect(page.locator("#dead-note")).to_have_text("6 shown.")
    # Each row still shows what it did: type, status, attempt and the error.
    first = rows.first
    expect(first).to_contain_text(kind)
    expect(first.locator(".badge")).to_have_text("ERROR")
    expect(first).to_contain_text("1/1")
    assert first.locator("td.error").inner_text().strip(), "no error shown"
    assert reads and all("fields=id%2Ctype%2Cstatus%2Cattempt%2Cmax_attempts%2Cfinished_at%2Cerror%2Cupdated_at" in u
                         for u in reads), reads
