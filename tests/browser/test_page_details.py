"""What a user of the dashboard trips over (probe dash2, findings F7-F13): the signals page's
waiting jobs past the first 100, its "n of m" to the microsecond, the keys `.` and `..`, a token
that cannot be sent in a header, double clicks on action buttons, the jobs table's page in the
URL, the chart's legend when the stream is refused, a failed dead-letter re-read after a resync,
and the send form for a token with `signals:write` but no `jobs:read`; from probe s53a (F3, F5,
F10): a dead letter retried elsewhere leaves the list, a first page of dead letters cut by the
scan bound, "Sign out" once signed out."""

from __future__ import annotations

import datetime
import json
import pathlib
import re
import time
import uuid

import pytest
from playwright.sync_api import expect

from conftest import Server, auth_config, new_context, send_resync, wait_until


def open_page(page, server, route="/"):
    page.goto(f"{server.url}/#{route}")
    expect(page.locator("body")).to_have_attribute("data-ready", route.split("?")[0], timeout=15000)


def test_the_signals_page_shows_the_keys_of_waiting_jobs_past_the_first_hundred(server, page):
    # The oldest of 105 waiting jobs waits for its own key: newest first, it is the 105th.
    tag = uuid.uuid4().hex[:6]
    oldest = server.submit({"type": "noop.wait", "wait_for": [{"key": f"first.{tag}"}], "deadline": "+1h"})
    others = [server.submit({"type": "noop.wait", "wait_for": [{"key": f"many.{tag}"}], "deadline": "+1h"})
              for _ in range(104)]
    reads = []
    page.on("request", lambda r: reads.append(r.url) if "/async/jobs?" in r.url else None)
    try:
        open_page(page, server, "/signals")
        card = page.locator(f'[data-signal="first.{tag}"]')
        expect(card.locator(f'.waiters li[data-job="{oldest}"]')).to_contain_text("0 of 1", timeout=15000)
        expect(page.locator(f'[data-signal="many.{tag}"] .waiters li')).to_have_count(104)
        # Only the members the page uses, 100 at a time, following the cursor.
        assert reads and all("fields=id%2Ctype%2Cwait" in u and "status=WAITING" in u for u in reads), reads
        assert any("cursor=" in u for u in reads), reads
    finally:
        for j in [oldest, *others]:
            server.call("POST", f"/async/jobs/{j}/cancel")


def test_the_waiting_jobs_read_is_bounded_and_says_when_it_was_cut(server, page):
    # A listing that never ends (each page answers a cursor): the page reads 10 pages of 100 and
    # says it saw the first waiting jobs only.
    tag = uuid.uuid4().hex[:6]
    job = {"id": f"00000000-0000-0000-0000-{tag:0>12}", "type": "noop.wait",
           "wait": {"items": [{"key": f"endless.{tag}", "needed": 1}]}}
    reads = []

    def endless(route):
        reads.append(route.request.url)
        route.fulfill(status=200, headers={"Content-Type": "application/json"},
                      body=json.dumps({"jobs": [job], "next_cursor": f"c{len(reads)}"}))

    page.route(re.compile(r"/async/jobs\?status=WAITING"), endless)
    open_page(page, server, "/signals")
    expect(page.locator("#waiting-cut")).to_contain_text("the first 10 waiting jobs; there may be more", timeout=15000)
    expect(page.locator(f'[data-signal="endless.{tag}"]')).to_be_visible()
    # One load reads 10 pages: the first without a cursor, then c1..c9; never c10 (an 11th page).
    # (Later loads, every 5 s, start again without a cursor: counted by their cursors, not by time.)
    assert "cursor=" not in reads[0], reads
    assert [f"cursor=c{i}" in reads[i] for i in range(1, 10)] == [True] * 9, reads
    assert not any("cursor=c10" in u for u in reads), reads


def _plus_us(ts: str, us: int) -> str:
    t = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ") + datetime.timedelta(microseconds=us)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_n_of_m_counts_records_to_the_microsecond(server, page):
    # A record and a job waiting for records since one microsecond after it, in the same
    # millisecond: the server counts 0; Date.parse (milliseconds) would count 1.
    key = f"micro.{uuid.uuid4().hex[:6]}"
    for _ in range(10):
        status, rec = server.call("POST", f"/async/signals/{key}", {})
        assert status == 201, rec
        if not rec["at"].endswith("999Z"):
            break
    since = _plus_us(rec["at"], 1)
    after = server.submit({"type": "noop.wait", "wait_for": [{"key": key, "count": 2, "since": since}], "deadline": "+1h"})
    at = server.submit({"type": "noop.wait", "wait_for": [{"key": key, "count": 2, "since": rec["at"]}], "deadline": "+1h"})
    try:
        assert [i["seen"] for i in server.job(after)["wait"]["items"]] == [0]
        assert [i["seen"] for i in server.job(at)["wait"]["items"]] == [1]
        open_page(page, server, f"/signals?key={key}")
        card = page.locator(f'[data-signal="{key}"]')
        expect(card.locator(f'.waiters li[data-job="{at}"]')).to_contain_text("1 of 2", timeout=15000)
        expect(card.locator(f'.waiters li[data-job="{after}"]')).to_contain_text("0 of 2")
    finally:
        for j in (after, at):
            server.call("POST", f"/async/jobs/{j}/cancel")


def test_the_keys_dot_and_dot_dot_say_why_the_page_cannot_reach_them(server, page):
    # The API refuses them for new records (a client would resolve them as a path); records an
    # older version stored under them stay readable with curl (the server decodes %2E), but a
    # browser's URL parser drops such a path segment, even encoded: the page says so.
    for enc in ("%2E", "%2E%2E"):
        status, rec = server.call("POST", f"/async/signals/{enc}", {})
        assert status == 422 and "`.` or `..`" in rec["error"]["message"], rec
    open_page(page, server, "/signals?key=.&key=..")
    dot = page.locator('[data-signal="."]')
    expect(dot).to_contain_text("cannot be read from a browser", timeout=15000)
    expect(dot).to_contain_text("/async/signals/%2E")
    expect(page.locator('[data-signal=".."]')).to_contain_text("/async/signals/%2E%2E")
    page.fill("#send-key", "..")
    page.locator("#signal-send button[type=submit]").click()
    expect(page.locator("#toast")).to_contain_text('a signal key may not be "." or ".."')


def test_a_double_click_on_cancel_sends_one_request(server, page):
    job = server.submit({"type": "hang.twice"})
    server.wait(job, {"RUNNING"})
    posts = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    open_page(page, server, f"/job/{job}")
    page.locator("#cancel").dblclick()
    expect(page.locator("#status .badge")).to_have_text("CANCELLED", timeout=15000)
    page.wait_for_timeout(1000)
    assert [u for u in posts if u.endswith("/cancel")] == [f"{server.url}/async/jobs/{job}/cancel"], posts


def test_a_double_click_on_send_writes_one_signal(server, page):
    key = f"twice.{uuid.uuid4().hex[:6]}"
    open_page(page, server, "/signals")
    page.fill("#send-key", key)
    page.locator("#signal-send button[type=submit]").dblclick()
    expect(page.locator("#toast")).to_contain_text(f"Signal {key} #1 written", timeout=10000)
    page.wait_for_timeout(1000)
    assert len(server.call("GET", f"/async/signals/{key}")[1]["signals"]) == 1


def test_the_jobs_tables_page_is_in_the_url(server, page):
    kind = f"noop.page{uuid.uuid4().hex[:6]}"
    ids = [server.submit({"type": kind}) for _ in range(55)]
    server.wait(ids[-1], {"SUCCESS"})
    open_page(page, server, f"/jobs?type={kind}")
    rows = page.locator("#rows tr[data-job]")
    expect(rows).to_have_count(50)
    page.locator("#next-page").click()
    expect(rows).to_have_count(5, timeout=10000)
    assert "cursor=" in page.url, page.url
    older = sorted(rows.evaluate_all("rs => rs.map((r) => r.dataset.job)"))
    page.reload()
    expect(rows).to_have_count(5, timeout=15000)
    assert sorted(rows.evaluate_all("rs => rs.map((r) => r.dataset.job)")) == older
    page.go_back()
    expect(rows).to_have_count(50, timeout=10000)
    assert "cursor=" not in page.url
    page.go_forward()
    expect(rows).to_have_count(5, timeout=10000)
    page.locator("#prev-page").click()  # "Newer": back to the first page
    expect(rows).to_have_count(50, timeout=10000)
    assert "cursor=" not in page.url


def test_the_charts_legend_does_not_say_live_when_the_stream_is_refused(server, page):
    refused = json.dumps({"error": {"code": "forbidden", "message": "no jobs:read"}})
    page.route("**/async/events/sse", lambda r: r.fulfill(status=403, body=refused, headers={"Content-Type": "application/json"}))
    open_page(page, server, "/")
    expect(page.locator("#live")).to_have_text("no live updates", timeout=10000)
    legend = page.locator("#throughput .legend")
    expect(legend).to_contain_text("not live", timeout=10000)
    expect(legend).not_to_contain_text("live from the event stream")


def test_a_failed_dead_letter_re_read_after_a_resync_is_shown_and_retried(server, page):
    kind = f"fail.dead{uuid.uuid4().hex[:6]}"
    job = server.submit({"type": kind})
    server.wait(job, {"ERROR"})
    streams, reads = [], []

    def stream(route):
        if streams:
            return route.continue_()
        streams.append(route)  # answered by the test with a resync

    held = []

    def dead(route):
        reads.append(route.request.url)
        if len(reads) == 2:  # the re-read after the resync fails once
            return route.fulfill(status=503, body=json.dumps({"error": {"code": "unavailable", "message": "store away"}}),
                                 headers={"Content-Type": "application/json"})
        if len(reads) == 3:  # the retry waits until the note was seen (no race with its 2 s)
            return held.append(route)
        route.continue_()

    page.route("**/async/events/sse", stream)
    page.route(re.compile(r"/async/jobs\?dead=true"), dead)
    open_page(page, server, f"/dead?type={kind}")
    expect(page.locator(f'#rows tr[data-job="{job}"]')).to_be_visible()
    wait_until(page, streams, "the page opened no event stream")
    send_resync(streams[0])
    note = page.locator("#dead-note")
    expect(note).to_contain_text("could not be read again (store away)", timeout=10000)
    deadline = time.time() + 15
    while not held and time.time() < deadline:
        page.wait_for_timeout(50)
    assert held, f"no retry after the failed re-read: {reads}"
    held[0].continue_()
    expect(note).to_have_text("1 shown.", timeout=15000)  # retried after 2 s
    assert len(reads) >= 3, reads
    expect(page.locator(f'#rows tr[data-job="{job}"]')).to_be_visible()


def test_a_dead_letter_retried_elsewhere_leaves_the_list(server, page):
    # A dead letter retried through the API (another tab, a script) stayed in the list with its
    # badge changed (SUCCESS), its old attempt and error, and "Retry all shown" then retried it
    # too, refused (probe s53a, F5). It leaves, the count is read again, and the others stay.
    kind = f"flaky.dead{uuid.uuid4().hex[:6]}"
    fixed, other = server.submit({"type": f"{kind}.a"}), server.submit({"type": f"{kind}.b"})
    for job in (fixed, other):
        server.wait(job, {"ERROR"})
    gate = pathlib.Path(f"/tmp/runyard-gate-{fixed}")
    try:
        open_page(page, server, f"/dead?type={kind}.*")
        rows = page.locator("#rows tr[data-job]")
        expect(rows).to_have_count(2)
        expect(page.locator("#dead-total")).to_have_text(f"2 dead letters in all of types {kind}.*.")
        expect(page.locator("#live")).to_have_text("live", timeout=10000)
        gate.touch()
        assert server.call("POST", f"/async/jobs/{fixed}/retry")[0] == 202
        server.wait(fixed, {"SUCCESS"})
        expect(page.locator(f'#rows tr[data-job="{fixed}"]')).to_have_count(0, timeout=10000)
        expect(page.locator(f'#rows tr[data-job="{other}"]')).to_be_visible()
        expect(page.locator("#dead-note")).to_have_text("1 shown.")
        expect(page.locator("#dead-total")).to_have_text(f"1 dead letter in all of types {kind}.*.", timeout=10000)
        posts = []
        page.on("request", lambda r: r.method == "POST" and posts.append(r.url))
        page.locator("#retry-all").click()
        expect(page.locator("#toast")).to_have_text("retry: 1 queued", timeout=15000)
        assert [p.split("/async/jobs/")[1] for p in posts] == [f"{other}/retry"], posts
    finally:
        gate.unlink(missing_ok=True)


def test_a_dead_letter_retried_elsewhere_that_fails_again_comes_back(server, page):
    # Its row left at its retry (QUEUED) and never came back, though its new attempt's ERROR made
    # it a dead letter again (a retry sets max_attempts to the new attempt): the count said 1, the
    # list showed none (review rev53c). The page is read again for it.
    kind = f"fail.again{uuid.uuid4().hex[:6]}"
    job = server.submit({"type": kind})
    server.wait(job, {"ERROR"})
    open_page(page, server, f"/dead?type={kind}")
    row = page.locator(f'#rows tr[data-job="{job}"]')
    expect(row.locator("td:nth-child(5)")).to_have_text("1/1")
    expect(page.locator("#live")).to_have_text("live", timeout=10000)
    assert server.call("POST", f"/async/jobs/{job}/retry")[0] == 202
    deadline = time.time() + 30
    while server.job(job)["attempt"] != 2 or server.job(job)["status"] != "ERROR":
        assert time.time() < deadline, server.job(job)
        time.sleep(0.1)
    expect(row.locator("td:nth-child(5)")).to_have_text("2/2", timeout=15000)
    expect(page.locator("#dead-note")).to_have_text("1 shown.")
    expect(page.locator("#dead-total")).to_have_text(f"1 dead letter in all of types {kind}.")


def test_a_first_page_of_dead_letters_cut_by_the_scan_bound_says_to_go_on(server, page):
    # `dead=true` is checked record by record, at most 10,000 a read: past that the page comes back
    # short, even empty, with a `next_cursor` (docs/api.md). The page said "No dead letter." over
    # "2 dead letters in all" (probe s53a, F3). Here the first read is answered so (routed: the
    # real case needs 10,000 newer jobs that are not dead letters).
    kind = f"flaky.cut{uuid.uuid4().hex[:6]}"
    dead = [server.submit({"type": f"{kind}.{i}"}) for i in range(2)]
    for job in dead:
        server.wait(job, {"ERROR"})
    newer = server.submit({"type": f"{kind}.newer", "run_at": "2099-01-01T00:00:00Z"})

    def cut(route):
        if "cursor=" in route.request.url:
            return route.continue_()
        route.fulfill(status=200, headers={"Content-Type": "application/json"},
                      body=json.dumps({"jobs": [], "next_cursor": newer}))

    page.route(re.compile(r"/async/jobs\?dead=true"), cut)
    try:
        open_page(page, server, f"/dead?type={kind}.*")
        expect(page.locator("#dead-total")).to_have_text(f"2 dead letters in all of types {kind}.*.")
        expect(page.locator("#rows")).to_have_text("No dead letter among the jobs searched so far: go on with Older.")
        posts = []
        page.on("request", lambda r: r.method == "POST" and posts.append(r.url))
        page.locator("#retry-all").click()
        expect(page.locator("#toast")).to_have_text("No dead letter shown.")
        page.locator("#next-page").click()
        for job in dead:
            expect(page.locator(f'#rows tr[data-job="{job}"]')).to_be_visible()
        assert posts == [], posts
    finally:
        server.call("POST", f"/async/jobs/{newer}/cancel")


ADMIN, WRITER = "ry_admin_token_for_the_details_test", "ry_writer_token_for_the_details_test"


@pytest.fixture(scope="module")
def authed():
    srv = Server(extra_config=auth_config({
        "admin": (ADMIN, 'scopes = ["admin"]'),
        "writer": (WRITER, 'scopes = ["signals:write"]'),
    }))
    yield srv
    srv.stop()


def sign_in_page(browser, srv, route):
    ctx = new_context(browser)
    page = ctx.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{srv.url}/#{route}")
    expect(page.locator("#signin")).to_be_visible(timeout=10000)
    return ctx, page, errors


def test_a_token_that_cannot_be_sent_in_a_header_is_refused_in_the_form(authed, browser):
    """A pasted token with a character past U+00FF (fetch cannot send it) is refused in the form:
    the page stays signed out, nothing stored; then a good token signs in."""
    ctx, page, errors = sign_in_page(browser, authed, "/jobs")
    try:
        page.fill("#token", "ry_token_with_\u0416_in_it")
        page.locator("#signin button").click()
        expect(page.locator("#signin-error")).to_contain_text("U+0416", timeout=5000)
        expect(page.locator("#signin")).to_be_visible()
        expect(page.locator("#signout")).to_be_hidden()
        assert page.evaluate("sessionStorage.getItem('runyard.token')") is None
        page.fill("#token", ADMIN)
        page.locator("#signin button").click()
        expect(page.locator("body")).to_have_attribute("data-ready", "/jobs", timeout=10000)
        expect(page.locator("#signout")).to_be_visible()
        assert not errors, f"JavaScript errors: {errors}"
    finally:
        ctx.close()


def test_a_token_with_signals_write_but_no_jobs_read_gets_the_send_form(authed, browser):
    """The page cannot list (no `jobs:read`), but sending needs `signals:write` only: the send
    form alone, and its signal is written."""
    ctx, page, errors = sign_in_page(browser, authed, "/signals")
    try:
        page.fill("#token", WRITER)
        page.locator("#signin button").click()
        expect(page.locator("body")).to_have_attribute("data-ready", "/signals", timeout=10000)
        expect(page.locator("#signals-readless")).to_be_visible()
        key = f"from.writer.{uuid.uuid4().hex[:6]}"
        page.fill("#send-key", key)
        page.fill("#send-payload", '{"n": 1}')
        page.locator("#signal-send button[type=submit]").click()
        expect(page.locator("#toast")).to_contain_text(f"Signal {key} #1 written", timeout=10000)
        status, recs = authed.call("GET", f"/async/signals/{key}", token=ADMIN)
        assert status == 200 and [r["payload"] for r in recs["signals"]] == [{"n": 1}], recs
        assert not errors, f"JavaScript errors: {errors}"
    finally:
        ctx.close()


def test_sign_out_is_hidden_once_signed_out(authed, browser):
    # "Sign out" stayed in the header over the sign-in form it brought: the 401 that shows the
    # form ended the read of the scopes before the button was hidden (probe s53a, F10).
    ctx, page, errors = sign_in_page(browser, authed, "/jobs")
    try:
        page.fill("#token", ADMIN)
        page.locator("#signin button").click()
        expect(page.locator("body")).to_have_attribute("data-ready", "/jobs", timeout=10000)
        page.locator("#signout").click()
        expect(page.locator("#signin")).to_be_visible(timeout=10000)
        expect(page.locator("#signout")).to_be_hidden()
        assert page.evaluate("sessionStorage.getItem('runyard.token')") is None
        assert not errors, f"JavaScript errors: {errors}"
    finally:
        ctx.close()
