"""A person's double click on an action button (probe s51a, findings 1 and 2): two clicks some
150-350 ms apart at the same spot, as a hand makes them (Playwright's `dblclick()` sends both with
no gap: both land on the button still disabled by its running request). The page redraws after
an action, and what it draws at that spot may be the opposite action (Cancel becomes Retry, Retry
becomes Cancel, Pause becomes Resume) or the same one anew (Trigger, Send): the second click must
send nothing. Every POST the page sends is counted, not only the expected one. A second click a
second and a half later is a new action, and it is sent."""

from __future__ import annotations

import pathlib
from datetime import datetime, timedelta, timezone
import time
import urllib.parse
import uuid

import pytest
from playwright.sync_api import expect

from conftest import Server, auth_config, new_context

GAPS = [150, 350]  # ms between the two clicks: a double click, as people make them
DELIBERATE = 1.5  # s: a second click this long after is a new action


def open_page(page, server, route="/"):
    page.goto(f"{server.url}/#{route}")
    expect(page.locator("body")).to_have_attribute("data-ready", route.split("?")[0], timeout=15000)


def record_posts(page):
    """Every POST the page sends, as its path (with the query, if any)."""
    posts = []

    def seen(r):
        if r.method == "POST":
            u = urllib.parse.urlsplit(r.url)
            posts.append(u.path + (f"?{u.query}" if u.query else ""))

    page.on("request", seen)
    return posts


def human_double_click(page, locator, gap_ms):
    """Two clicks `gap_ms` apart at the middle of `locator` (where it is at the first click), each
    on whatever the page shows at that spot then (as a mouse's would be: a disabled button takes
    none), sent from inside the page so that the gap is the page's own timer, not two round trips
    of the browser's protocol on a loaded machine. Checks that they came less than 600 ms apart
    (the page's settling time, which starts after the first action's answer, so later than the
    first click): else the machine stretched the gap and the trial says nothing."""
    locator.scroll_into_view_if_needed()
    box = locator.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    gap = page.evaluate(
        """async ([x, y, gap]) => {
            const click = () => { const el = document.elementFromPoint(x, y); if (el) el.click(); return performance.now(); };
            const first = click();
            await new Promise((r) => setTimeout(r, gap));
            return click() - first;
        }""",
        [x, y, gap_ms],
    )
    assert gap < 600, f"the page clicked {gap:.0f} ms apart: not a double click"


def gate(job):
    pathlib.Path(f"/tmp/runyard-gate-{job}").touch()


@pytest.mark.parametrize("gap", GAPS)
def test_a_double_click_on_cancel_cancels_and_does_not_retry(server, page, gap):
    # A running job: Cancel ends it CANCELLED, and the page draws Retry where Cancel was.
    job = server.submit({"type": "slow.dbl-cancel", "max_attempts": 3})
    try:
        server.wait(job, {"RUNNING"})
        open_page(page, server, f"/job/{job}")
        posts = record_posts(page)
        human_double_click(page, page.locator("#cancel"), gap)
        page.wait_for_timeout(1500)
        assert posts == [f"/async/jobs/{job}/cancel"], posts
        expect(page.locator("#status .badge")).to_have_text("CANCELLED", timeout=15000)
        expect(page.locator("#retry")).to_be_visible()
        j = server.job(job)
        assert (j["status"], j["attempt"]) == ("CANCELLED", 1), j
    finally:
        gate(job)
        server.call("POST", f"/async/jobs/{job}/cancel")


@pytest.mark.parametrize("gap", GAPS)
def test_a_double_click_on_retry_retries_and_does_not_cancel(server, page, gap):
    # A job cancelled while SCHEDULED: Retry queues it now, and the page draws Cancel where Retry
    # was. Then a deliberate click on that Cancel, a second and a half later, cancels it.
    later = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    job = server.submit({"type": "slow.dbl-retry", "run_at": later, "max_attempts": 3})
    try:
        assert server.call("POST", f"/async/jobs/{job}/cancel")[0] == 200
        server.wait(job, {"CANCELLED"})
        open_page(page, server, f"/job/{job}")
        posts = record_posts(page)
        human_double_click(page, page.locator("#retry"), gap)
        page.wait_for_timeout(1500)
        assert posts == [f"/async/jobs/{job}/retry"], posts
        expect(page.locator("#cancel")).to_be_visible(timeout=15000)
        j = server.job(job)
        assert j["status"] in ("QUEUED", "STARTING", "RUNNING"), j
        time.sleep(DELIBERATE)
        page.locator("#cancel").click()
        expect(page.locator("#status .badge")).to_have_text("CANCELLED", timeout=15000)
        assert posts == [f"/async/jobs/{job}/retry", f"/async/jobs/{job}/cancel"], posts
    finally:
        gate(job)
        server.call("POST", f"/async/jobs/{job}/cancel")


@pytest.fixture(scope="module")
def schedules_in_use(server):
    """A schedule with a long name and three runs, as on a page in use: its cells set the table's
    column widths, so the row under test does not move when it gains a "paused" badge or a run
    (the table is 100% wide: a lone row's buttons would shift and the second click miss them)."""
    name = "a-schedule-in-use-with-a-longer-name-than-the-others"
    status, s = server.call("POST", "/async/schedules", {"name": name, "cron": "0 3 * * *", "job": {"type": "noop.in-use"}})
    assert status == 201, s
    for _ in range(3):
        assert server.call("POST", f"/async/schedules/{name}/trigger")[0] in (200, 201, 202)
    yield name
    server.call("DELETE", f"/async/schedules/{name}")


def make_schedule(server, tag):
    name = f"dbl-{tag}-{uuid.uuid4().hex[:6]}"
    status, s = server.call("POST", "/async/schedules", {"name": name, "cron": "0 3 * * *", "job": {"type": f"noop.{name}"}})
    assert status == 201, s
    return name


@pytest.mark.parametrize("gap", GAPS)
def test_a_double_click_on_pause_pauses_and_does_not_resume(server, page, gap, schedules_in_use):
    # Pause: the row is drawn again with Resume where Pause was. A deliberate click on Resume a
    # second and a half later resumes it.
    name = make_schedule(server, "pause")
    try:
        open_page(page, server, "/schedules")
        row = page.locator(f'#schedules tr[data-schedule="{name}"]')
        posts = record_posts(page)
        human_double_click(page, row.locator("button", has_text="Pause"), gap)
        page.wait_for_timeout(1500)
        assert posts == [f"/async/schedules/{name}/pause"], posts
        expect(row.locator("button", has_text="Resume")).to_be_visible(timeout=15000)
        assert server.call("GET", f"/async/schedules/{name}")[1]["paused"] is True
        time.sleep(DELIBERATE)
        row.locator("button", has_text="Resume").click()
        expect(row.locator("button", has_text="Pause")).to_be_visible(timeout=15000)
        assert posts == [f"/async/schedules/{name}/pause", f"/async/schedules/{name}/resume"], posts
        assert server.call("GET", f"/async/schedules/{name}")[1]["paused"] is False
    finally:
        server.call("DELETE", f"/async/schedules/{name}")


@pytest.mark.parametrize("gap", GAPS)
def test_a_double_click_on_trigger_makes_one_job(server, page, gap, schedules_in_use):
    name = make_schedule(server, "trigger")
    try:
        open_page(page, server, "/schedules")
        row = page.locator(f'#schedules tr[data-schedule="{name}"]')
        posts = record_posts(page)
        human_double_click(page, row.locator("button", has_text="Trigger"), gap)
        page.wait_for_timeout(1500)
        assert posts == [f"/async/schedules/{name}/trigger"], posts
        expect(page.locator("#toast")).to_contain_text(f"{name}: trigger", timeout=15000)
        jobs = server.call("GET", f"/async/jobs?schedule={name}")[1]["jobs"]
        assert len(jobs) == 1, jobs
    finally:
        server.call("DELETE", f"/async/schedules/{name}")


def records(server, key, token=None):
    status, page = server.call("GET", f"/async/signals/{key}", token=token)
    assert status == 200, page
    return page["signals"]


@pytest.mark.parametrize("gap", GAPS)
def test_a_double_click_on_send_to_a_key_on_the_page_writes_one_record(server, page, gap):
    # The key is on the page already: the page stays, and the same Send button is under the
    # second click. A deliberate click a second and a half later writes a second record.
    key = f"dbl.{uuid.uuid4().hex[:6]}"
    open_page(page, server, f"/signals?key={key}")
    expect(page.locator(f'[data-signal="{key}"]')).to_be_visible()
    page.fill("#send-key", key)
    posts = record_posts(page)
    human_double_click(page, page.locator("#signal-send button[type=submit]"), gap)
    page.wait_for_timeout(1500)
    assert posts == [f"/async/signals/{key}"], posts
    expect(page.locator("#toast")).to_contain_text(f"Signal {key} #1 written", timeout=10000)
    assert len(records(server, key)) == 1
    time.sleep(DELIBERATE)
    page.locator("#signal-send button[type=submit]").click()
    expect(page.locator("#toast")).to_contain_text(f"Signal {key} #2 written", timeout=10000)
    assert posts == [f"/async/signals/{key}"] * 2, posts
    assert len(records(server, key)) == 2


ADMIN, WRITER = "ry_admin_token_for_the_double_clicks", "ry_writer_token_for_the_double_clicks"


@pytest.fixture(scope="module")
def authed():
    srv = Server(extra_config=auth_config({
        "admin": (ADMIN, 'scopes = ["admin"]'),
        "writer": (WRITER, 'scopes = ["signals:write"]'),
    }))
    yield srv
    srv.stop()


@pytest.mark.parametrize("gap", GAPS)
def test_a_double_click_on_send_with_a_write_only_token_writes_one_record(authed, browser, gap):
    # A `signals:write` token without `jobs:read`: the page shows the form alone and does nothing
    # after a send (it cannot read), so the same Send button is under the second click.
    ctx = new_context(browser)
    page = ctx.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(f"{authed.url}/#/signals")
        expect(page.locator("#signin")).to_be_visible(timeout=10000)
        page.fill("#token", WRITER)
        page.locator("#signin button").click()
        expect(page.locator("#signals-readless")).to_be_visible(timeout=10000)
        key = f"dbl.writer.{uuid.uuid4().hex[:6]}"
        page.fill("#send-key", key)
        posts = record_posts(page)
        human_double_click(page, page.locator("#signal-send button[type=submit]"), gap)
        page.wait_for_timeout(1500)
        assert posts == [f"/async/signals/{key}"], posts
        expect(page.locator("#toast")).to_contain_text(f"Signal {key} #1 written", timeout=10000)
        assert len(records(authed, key, ADMIN)) == 1
        assert not errors, f"JavaScript errors: {errors}"
    finally:
        ctx.close()
