"""The overview's last hour and the dead letters come from the store (GET /async/activity,
GET /async/dead_letters), not from replaying the event stream: with a global stream that keeps
3 events, the chart still shows every job that ended in the hour, the live stream starts at the
newest event (no replay), and later finishes and dead letters show without a reload."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from conftest import Server, new_context

# The global stream keeps 3 events, trimmed every second: the replay cannot see the jobs below.
SHORT_STREAM = '\n[events]\nglobal_limit = 3\n\n[retention]\ninterval = "1s"\n'


@pytest.fixture(scope="module")
def short():
    srv = Server(SHORT_STREAM)
    yield srv
    srv.stop()


def events_kept(srv) -> int:
    status, page = srv.call("GET", "/api/v1/async_event/?last_id=0")
    assert status == 200, page
    return len([e for e in page["result"] if e.get("type") != "resync"])


def test_the_chart_and_dead_letters_come_from_the_store(short, browser):
    ok = [short.submit({"type": "noop.hour"}) for _ in range(4)]
    bad = [short.submit({"type": "fail.hour"}) for _ in range(2)]
    for j in ok:
        short.wait(j, {"SUCCESS"})
    for j in bad:
        short.wait(j, {"ERROR"})
    # An ERROR that used no attempt (its wait ran out): failed in the chart, no dead letter.
    missed = short.submit({"type": "fail.hour.missed", "wait_for": [{"key": "never.sent"}],
                           "deadline": "+1s", "on_deadline": "fail"})
    short.wait(missed, {"ERROR"})
    deadline = time.time() + 15
    while events_kept(short) > 3 and time.time() < deadline:
        time.sleep(0.2)
    assert events_kept(short) <= 3, "the stream was not trimmed"

    status, act = short.call("GET", "/async/activity")
    assert status == 200, act
    assert act["totals"]["SUCCESS"] == 4 and act["totals"]["ERROR"] == 3, act

    ctx = new_context(browser, viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    streams = []
    page.on("request", lambda r: "/async/events/sse" in r.url and streams.append(r.headers.get("last-event-id")))
    try:
        page.goto(f"{short.url}/#/")
        expect(page.locator("body")).to_have_attribute("data-ready", "/", timeout=15000)
        chart = page.locator("#throughput")
        expect(chart).to_have_attribute("data-ok", "4", timeout=5000)
        expect(chart).to_have_attribute("data-failed", "3")
        expect(chart.locator("svg")).to_have_attribute("aria-label", re.compile(r"^Last hour: 4 done, 3 failed; busiest minute \d+\.$"))
        expect(chart).to_contain_text("from the store")
        # The live stream went on from the newest event of the read: nothing replayed.
        assert streams and streams[0] == act["last_event_id"], (streams, act["last_event_id"])
        expect(page.locator('[data-count="DEAD"] .n')).to_have_text("2")
        expect(page.locator('[data-count="DEAD"]')).to_have_attribute("href", "#/dead")

        # Live: one more failure, a dead letter, shows in both without a reload.
        page.evaluate("window.__same_document = true")
        short.wait(short.submit({"type": "fail.hour"}), {"ERROR"})
        expect(chart).to_have_attribute("data-failed", "4", timeout=15000)
        expect(chart).to_have_attribute("data-ok", "4")
        expect(page.locator('[data-count="DEAD"] .n')).to_have_text("3", timeout=15000)
        assert page.evaluate("window.__same_document") is True, "the page was reloaded"

        # The dead letters page says how many there are in all (and of a type).
        page.locator('[data-count="DEAD"]').click()
        expect(page.locator("body")).to_have_attribute("data-ready", "/dead", timeout=15000)
        expect(page.locator("#dead-total")).to_have_text("3 dead letters in all.")
        page.goto(f"{short.url}/#/dead?type=noop.*")
        expect(page.locator("#dead-total")).to_have_text("0 dead letters in all of types noop.*.", timeout=15000)
    finally:
        ctx.close()
    assert not errors, f"JavaScript errors: {errors}"


def test_a_token_confined_to_channel_globs_is_told_the_hour_is_not_available(browser):
    """A token confined to channel globs may read neither /async/activity (counts over every
    channel) nor the global stream (it must name one channel): the chart says the hour is not
    available to it, rather than a plausible zero."""
    from conftest import auth_config

    tokens = {"ops": "ry_ops_token_for_the_chart_test", "tenant": "ry_tenant_token_for_the_chart_test"}
    srv = Server(extra_config=auth_config({
        "ops": (tokens["ops"], 'scopes = ["admin"]'),
        "tenant": (tokens["tenant"], 'scopes = ["jobs:read"]\nchannels = ["tenant-a", "tenant-a.*"]'),
    }))
    try:
        done = srv.submit({"type": "noop.tenant", "channel": "tenant-a"}, token=tokens["ops"])
        srv.wait(done, {"SUCCESS"}, token=tokens["ops"])
        ctx = new_context(browser)
        page = ctx.new_page()
        page.goto(f"{srv.url}/#/")
        expect(page.locator("#signin")).to_be_visible(timeout=10000)
        page.fill("#token", tokens["tenant"])
        page.locator("#signin button").click()
        chart = page.locator("#throughput")
        expect(chart).to_contain_text("not available", timeout=15000)
        expect(chart).not_to_have_attribute("data-ok", "0")
        expect(page.locator("#live")).to_have_text("no live updates")
        ctx.close()
    finally:
        srv.stop()


def test_a_failed_read_of_the_hour_says_not_available_and_is_retried(short, browser):
    """/async/activity answers 503 once (the route exists: not an older server): the chart says
    the hour is not available rather than a zero, the live stream does not replay the global
    stream from its start, and the read is retried: the chart then shows the store's counts."""
    short.wait(short.submit({"type": "noop.retried"}), {"SUCCESS"})
    ctx = new_context(browser, viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    failed = []

    def flaky(route):
        if not failed:
            failed.append(route.request.url)
            route.fulfill(status=503, content_type="application/json",
                          body='{"error": {"code": "unavailable", "message": "the store is busy"}}')
        else:
            route.continue_()

    page.route("**/async/activity", flaky)
    streams = []
    page.on("request", lambda r: "/async/events/sse" in r.url and streams.append(r.headers.get("last-event-id")))
    try:
        page.goto(f"{short.url}/#/")
        expect(page.locator("body")).to_have_attribute("data-ready", "/", timeout=15000)
        chart = page.locator("#throughput")
        expect(chart).to_contain_text("not available right now", timeout=5000)
        expect(chart).not_to_have_attribute("data-ok", re.compile(".*"))
        # Retried: the store's counts, then the stream from the read's newest event.
        expect(chart).to_contain_text("from the store", timeout=15000)
        expect(chart).not_to_have_attribute("data-ok", "0")
        expect(page.locator("#live")).to_have_text("live", timeout=10000)
        assert failed, "the read was never refused"
        assert streams and all(streams), f"the stream started from its oldest event: {streams}"
    finally:
        ctx.close()
    assert not errors, f"JavaScript errors: {errors}"


def test_without_the_route_the_chart_counts_the_replayed_stream(short, browser):
    """An older server without /async/activity (404): the stream replays from its oldest event and
    the chart counts what it replays (it says so), with no "not available"."""
    ctx = new_context(browser, viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    page.route("**/async/activity", lambda route: route.fulfill(
        status=404, content_type="application/json", body='{"error": {"code": "not_found", "message": "no such route"}}'))
    streams = []
    page.on("request", lambda r: "/async/events/sse" in r.url and streams.append(r.headers.get("last-event-id")))
    try:
        page.goto(f"{short.url}/#/")
        expect(page.locator("body")).to_have_attribute("data-ready", "/", timeout=15000)
        chart = page.locator("#throughput")
        expect(chart).to_contain_text("from the event stream", timeout=5000)
        expect(chart).not_to_contain_text("not available")
        expect(page.locator("#live")).to_have_text("live", timeout=10000)
        assert streams and streams[0] is None, streams
    finally:
        ctx.close()


def test_a_resync_re_reads_what_the_pages_show(short, browser):
    """The live stream resumes after events it had not read were trimmed (here: each page's first
    stream request held while a followed job ends, a dead letter is retried and five more jobs
    run, the stream keeping 3 events): its first message is a `resync` (docs/api.md: re-read the
    jobs you follow). Then the jobs table shows the job that ended (it stayed RUNNING), the job's
    page and the dead letters show the retried job's second attempt, and the chart counts the
    jobs whose events were trimmed, as the store does."""
    import pathlib

    job = short.submit({"type": "slow.resync"})
    short.wait(job, {"RUNNING"})
    dead = short.submit({"type": "fail.resync"})
    assert short.wait(dead, {"ERROR"})["attempt"] == 1
    ctx = new_context(browser, viewport={"width": 1280, "height": 900})
    errors, held = [], []

    def open_held(route):
        """A page whose first stream request is held until the test lets it go."""
        page = ctx.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        mine = []
        page.route("**/async/events/sse", lambda r: (mine.append(r), held.append(r)) if not mine else r.continue_())
        page.goto(f"{short.url}/#{route}")
        expect(page.locator("body")).to_have_attribute("data-ready", route.split("?")[0], timeout=15000)
        deadline = time.time() + 15
        while not mine and time.time() < deadline:
            page.wait_for_timeout(50)
        assert mine, f"{route} never opened its stream"
        return page

    gate = pathlib.Path(f"/tmp/runyard-gate-{job}")
    try:
        table = open_held("/jobs")
        row = table.locator(f'#rows tr[data-job="{job}"]')
        expect(row.locator(".badge")).to_have_text("RUNNING")
        job_page = open_held(f"/job/{dead}")
        expect(job_page.locator('[data-fact="attempt"]')).to_have_text("1 of 1")
        letters = open_held("/dead?type=fail.resync")
        expect(letters.locator(f'#rows tr[data-job="{dead}"] td:nth-child(5)')).to_have_text("1/1")
        cursors = {r.request.headers.get("last-event-id") for r in held}
        assert all(cursors), f"a stream did not go on from the hour's read: {cursors}"

        gate.touch()
        short.wait(job, {"SUCCESS"})
        assert short.call("POST", f"/async/jobs/{dead}/retry")[0] == 202
        deadline = time.time() + 30
        while short.job(dead)["status"] != "ERROR" or short.job(dead)["attempt"] != 2:
            assert time.time() < deadline, short.job(dead)
            time.sleep(0.1)
        for j in [short.submit({"type": "noop.resync"}) for _ in range(5)]:
            short.wait(j, {"SUCCESS"})
        # The events after each page's cursor are trimmed: a read from it starts with a resync.
        for cursor in cursors:
            deadline = time.time() + 15
            while time.time() < deadline:
                first = short.call("GET", f"/api/v1/async_event/?last_id={cursor}")[1]["result"][0]
                if first["type"] == "resync":
                    break
                time.sleep(0.2)
            assert first["type"] == "resync", first
        status, act = short.call("GET", "/async/activity")
        assert status == 200, act

        for r in held:
            r.continue_()
        for page in (table, job_page, letters):
            expect(page.locator("#live")).to_have_text("live", timeout=10000)
        expect(row.locator(".badge")).to_have_text("SUCCESS", timeout=10000)
        expect(job_page.locator('[data-fact="attempt"]')).to_have_text("2 of 2", timeout=10000)
        expect(letters.locator(f'#rows tr[data-job="{dead}"] td:nth-child(5)')).to_have_text("2/2", timeout=10000)
        # The hour as the store counts it (no page was reloaded: the read at their start missed
        # these jobs, and their events never came).
        table.locator('nav [data-nav="overview"]').click()
        expect(table.locator("body")).to_have_attribute("data-ready", "/", timeout=15000)
        chart = table.locator("#throughput")
        expect(chart).to_have_attribute("data-ok", str(act["totals"]["SUCCESS"]), timeout=10000)
        expect(chart).to_have_attribute("data-failed", str(act["totals"].get("ERROR", 0) + act["totals"].get("TIMEOUT", 0)))
    finally:
        ctx.close()
        gate.touch()
        short.wait(job, {"SUCCESS"})
        gate.unlink()
    assert not errors, f"JavaScript errors: {errors}"
