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
