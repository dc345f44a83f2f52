"""The operator's pages beyond a single job: signals with their latest records, the overview's
chart of the last hour and the nodes holding leases, dead letters with bulk retry, and the jobs
table's page-only filters. Each check reads what a user sees, and the API for what happened."""

from __future__ import annotations

import re
import time
import uuid

from playwright.sync_api import expect

from conftest import screenshot


def open_page(page, server, route="/"):
    page.goto(f"{server.url}/#{route}")
    # The page marks the route it finished rendering (as test_first_paint.py waits for it).
    ready = route.split("?")[0]
    expect(page.locator("body")).to_have_attribute("data-ready", ready, timeout=15000)


def test_the_signals_page_shows_a_signal_sent_through_the_api(server, page):
    key = f"src.orders.{uuid.uuid4().hex[:6]}"
    waiting = server.submit({"type": "noop.wait", "wait_for": [{"key": key, "count": 3}], "deadline": "+1h",
                             "on_deadline": "fail"})
    assert server.wait(waiting, {"WAITING"})["status"] == "WAITING"
    status, rec = server.call("POST", f"/async/signals/{key}", {"payload": {"batch": 7}, "id": "b7"})
    assert status == 201, rec

    open_page(page, server, "/signals")
    card = page.locator(f'[data-signal="{key}"]')
    expect(card).to_be_visible()
    expect(card.locator('tr[data-seq="1"]')).to_contain_text("b7")
    expect(card.locator('tr[data-seq="1"]')).to_contain_text('{"batch":7}')
    expect(card.locator(f'.waiters li[data-job="{waiting}"]')).to_contain_text("1 of 3")
    expect(card.locator(f'.waiters li[data-job="{waiting}"]')).to_contain_text("deadline")

    # A second record shows on the open page without a reload (the page re-reads every 5 s).
    server.call("POST", f"/async/signals/{key}", {"id": "b8"})
    expect(card.locator('tr[data-seq="2"]')).to_contain_text("b8", timeout=15000)
    expect(card.locator(f'.waiters li[data-job="{waiting}"]')).to_contain_text("2 of 3")

    # A key no job waits for: looked up by name.
    other = f"lookup.only.{uuid.uuid4().hex[:6]}"
    server.call("POST", f"/async/signals/{other}", {"payload": "hello"})
    page.fill("#signal-key", other)
    page.locator("form[role=search] button").click()
    expect(page.locator(f'[data-signal="{other}"] tr[data-seq="1"]')).to_contain_text('"hello"', timeout=10000)
    screenshot(page, "signals")

    # The waiting job's own page says what it waits for.
    open_page(page, server, f"/job/{waiting}")
    expect(page.locator("#why")).to_contain_text(f"Waiting for signal {key} (2 of 3")
    expect(page.locator("#why")).to_contain_text("(then fail)")
    server.call("POST", f"/async/jobs/{waiting}/cancel")


def test_the_signals_page_counts_records_past_one_answer(server, page):
    # Seven records of 900 KB: the API answers them in pages of about 4 MiB (five, then two);
    # the page follows `next_since` and shows all seven, the newest first.
    key = f"big.loads.{uuid.uuid4().hex[:6]}"
    waiting = server.submit({"type": "noop.wait", "wait_for": [{"key": key, "count": 10}], "deadline": "+1h"})
    for i in range(7):
        status, rec = server.call("POST", f"/async/signals/{key}", {"payload": {"i": i, "pad": "p" * 900_000}})
        assert status == 201, rec
    status, first = server.call("GET", f"/async/signals/{key}?limit=10000")
    assert status == 200 and len(first["signals"]) < 7 and first["next_since"], len(first["signals"])

    open_page(page, server, "/signals")
    card = page.locator(f'[data-signal="{key}"]')
    expect(card).to_contain_text("7 records kept", timeout=15000)
    expect(card.locator('tr[data-seq="7"]')).to_contain_text('"i":6')
    expect(card.locator(f'.waiters li[data-job="{waiting}"]')).to_contain_text("7 of 10")
    server.call("POST", f"/async/jobs/{waiting}/cancel")


def test_the_overview_charts_the_last_hour_and_shows_lease_holders(server, page):
    ok = [server.submit({"type": "noop.chart"}) for _ in range(3)]
    bad = [server.submit({"type": "fail.chart"}) for _ in range(2)]
    for j in ok:
        server.wait(j, {"SUCCESS"})
    for j in bad:
        server.wait(j, {"ERROR"})
    running = server.submit({"type": "hang.lease"})
    worker = server.wait(running, {"RUNNING"})["worker"]
    assert worker

    open_page(page, server, "/")
    chart = page.locator("#throughput")
    # Filled from the event stream's replay of the hour before the page was opened.
    expect(chart).to_have_attribute("data-ok", re.compile(r"^([3-9]|\d\d+)$"), timeout=15000)
    expect(chart).to_have_attribute("data-failed", re.compile(r"^([2-9]|\d\d+)$"), timeout=15000)
    assert chart.locator("svg rect.ok").count() >= 1
    assert chart.locator("svg rect.failed").count() >= 1
    expect(chart.locator("svg")).to_have_attribute("aria-label", re.compile(r"Last hour: \d+ done, \d+ failed"))

    # Live: one more failure raises the count without a reload.
    before = int(chart.get_attribute("data-failed"))
    server.wait(server.submit({"type": "fail.chart"}), {"ERROR"})
    deadline = time.time() + 15
    while int(chart.get_attribute("data-failed")) <= before and time.time() < deadline:
        time.sleep(0.2)
    assert int(chart.get_attribute("data-failed")) == before + 1

    # The node holding the running job's lease, linked to the job.
    row = page.locator(f'#leases tr[data-worker="{worker}"]')
    expect(row).to_be_visible(timeout=10000)
    expect(row.locator(f'a[href="#/job/{running}"]')).to_have_count(1)
    expect(page.locator("#runners")).to_contain_text("hang")
    server.call("POST", f"/async/jobs/{running}/cancel")
    expect(page.locator(f'#leases tr[data-worker="{worker}"] a[href="#/job/{running}"]')).to_have_count(0, timeout=10000)


def test_dead_letters_bulk_retry(server, page):
    tag = uuid.uuid4().hex[:6]
    dead = [server.submit({"type": f"fail.dead{tag}.{i}"}) for i in range(3)]
    before = {}
    for j in dead:
        d = server.wait(j, {"ERROR"})
        assert d["attempt"] >= d["max_attempts"], d
        before[j] = d["attempt"]
    # An ERROR that did not use its attempts (its wait ran out, nothing ran) is no dead letter.
    missed = server.submit({"type": f"fail.dead{tag}.missed", "wait_for": [{"key": f"never.{tag}"}],
                            "deadline": "+1s", "on_deadline": "fail"})
    m = server.wait(missed, {"ERROR"})
    assert m["attempt"] < m["max_attempts"], m

    open_page(page, server, f"/dead?type=fail.dead{tag}.*")
    for j in dead:
        expect(page.locator(f'#rows tr[data-job="{j}"]')).to_be_visible()
    expect(page.locator(f'#rows tr[data-job="{missed}"]')).to_have_count(0)
    expect(page.locator("#rows tr")).to_have_count(3)
    screenshot(page, "dead")
    page.locator("#pick-all").check()
    page.locator("#retry-all").click()
    expect(page.locator("#toast")).to_contain_text("3 queued", timeout=15000)
    # The page reloaded its rows after the retries: none selected, nor "select all shown".
    expect(page.locator("#pick-all")).not_to_be_checked()
    # Each got a new attempt (the toast came after every retry answered): it runs again and,
    # this runner failing again, ends in ERROR one attempt later.
    for j in dead:
        got = server.wait(j, {"ERROR"})
        assert got["attempt"] == before[j] + 1, got
    assert server.job(missed)["attempt"] == m["attempt"], "a job not shown was retried"


def test_bulk_cancel_from_the_jobs_table(server, page):
    tag = uuid.uuid4().hex[:6]
    jobs = [server.submit({"type": f"hang.bulk{tag}.{i}"}) for i in range(3)]
    open_page(page, server, f"/jobs?type=hang.bulk{tag}.*")
    for j in jobs:
        expect(page.locator(f'#rows tr[data-job="{j}"]')).to_be_visible()
    expect(page.locator("#rows tr")).to_have_count(3)
    page.locator("#pick-all").check()
    expect(page.locator("#rows .pick:checked")).to_have_count(3)
    page.locator("#bulk-cancel").click()
    expect(page.locator("#toast")).to_contain_text("cancel: 3 done", timeout=15000)
    for j in jobs:
        assert server.wait(j, {"CANCELLED"})["status"] == "CANCELLED"
    # The table shows them cancelled, with nothing left selected: not the rows, not "select all".
    expect(page.locator("#rows .badge")).to_have_text(["CANCELLED"] * 3, timeout=15000)
    expect(page.locator("#rows .pick:checked")).to_have_count(0)
    expect(page.locator("#pick-all")).not_to_be_checked()


def test_the_jobs_table_filters_in_the_store_by_text_and_channel(server, page):
    tag = uuid.uuid4().hex[:6]
    a = server.submit({"type": "noop.text", "args": {"customer": f"acme-{tag}"}, "channel": f"ch-{tag}"})
    b = server.submit({"type": "noop.text", "args": {"customer": "globex"}})
    server.wait(a, {"SUCCESS"})
    server.wait(b, {"SUCCESS"})
    open_page(page, server, "/jobs?type=noop.text")
    expect(page.locator(f'#rows tr[data-job="{b}"]')).to_be_visible()
    page.fill("#f-text", f"ACME-{tag}")
    page.locator("form.filters > button").click()
    expect(page.locator(f'#rows tr[data-job="{a}"]')).to_be_visible()
    expect(page.locator(f'#rows tr[data-job="{b}"]')).to_have_count(0)
    expect(page.locator("#local-note")).to_contain_text("filtered by the server")
    page.fill("#f-text", "")
    page.fill("#f-channel", f"ch-{tag}")
    page.locator("form.filters > button").click()
    expect(page.locator(f'#rows tr[data-job="{a}"]')).to_be_visible()
    expect(page.locator("#rows tr")).to_have_count(1)
    # A match far past the first page: 120 newer jobs of the same type, 50 rows a page.
    for i in range(120):
        server.submit({"type": "noop.text", "args": {"i": i}})
    open_page(page, server, f"/jobs?type=noop.text&text=ACME-{tag}")
    expect(page.locator(f'#rows tr[data-job="{a}"]')).to_be_visible()
    expect(page.locator("#rows tr")).to_have_count(1)


def test_usable_on_a_phone_in_dark_mode(browser, server):
    from conftest import new_context

    ctx = new_context(browser, viewport={"width": 390, "height": 844}, color_scheme="dark", is_mobile=True, has_touch=True)
    page = ctx.new_page()
    # Long names in every table: a queue (the hang runner runs one at a time), a dead letter.
    long = "x" * 80
    held = [server.submit({"type": f"hang.{long}.{i}"}) for i in range(2)]
    server.wait(held[0], {"RUNNING"})
    server.wait(server.submit({"type": f"fail.{long}"}), {"ERROR"})
    try:
        for route in ("/", "/jobs", "/dead", "/signals"):
            open_page(page, server, route)
            # Nothing wider than the screen but the scrolling tables inside their cards.
            page.wait_for_timeout(500)  # late parts (runners, leases, queues) are in
            width = page.evaluate("document.documentElement.scrollWidth")
            wide = page.evaluate("""() => [...document.querySelectorAll('main *')]
                .filter((e) => e.getBoundingClientRect().right > 391 && !e.closest('.scroll, .card'))
                .slice(0, 3).map((e) => e.outerHTML.slice(0, 120))""")
            assert width <= 390 + 1, f"{route} is {width}px wide on a 390px screen: {wide}"
        bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert bg == "rgb(19, 19, 22)", bg
    finally:
        ctx.close()
        for j in held:
            server.call("POST", f"/async/jobs/{j}/cancel")


def test_every_column_and_action_is_reachable_on_a_320px_screen(browser, server):
    """At 320 px wide no table drops a column (the schedules table's 5th holds Pause / Resume /
    Trigger; the jobs and dead-letter tables' "Attempt"; the latest jobs' "Updated"): the tables
    scroll inside their boxes, the page itself never scrolls sideways, and a schedule's buttons
    work."""
    from conftest import new_context

    ctx = new_context(browser, viewport={"width": 320, "height": 640}, is_mobile=True, has_touch=True)
    page = ctx.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    tag = uuid.uuid4().hex[:6]
    long = "x" * 80
    done = server.submit({"type": f"noop.narrow{tag}.{long}"})
    server.wait(done, {"SUCCESS"})
    server.wait(server.submit({"type": f"fail.narrow{tag}"}), {"ERROR"})
    name = f"narrow-{tag}"
    status, s = server.call("POST", "/async/schedules", {"name": name, "cron": "0 3 * * *", "job": {"type": "noop.narrow"}})
    assert status == 201, s
    try:
        for route in ("/", "/jobs", "/dead", "/signals", "/schedules", f"/job/{done}"):
            open_page(page, server, route)
            page.wait_for_timeout(500)  # late parts (runners, leases, queues) are in
            width = page.evaluate("document.documentElement.scrollWidth")
            wide = page.evaluate("""() => [...document.querySelectorAll('main *')]
                .filter((e) => e.getBoundingClientRect().right > 321 && !e.closest('.scroll, .card'))
                .slice(0, 3).map((e) => e.outerHTML.slice(0, 120))""")
            assert width <= 320, f"{route} is {width}px wide on a 320px screen: {wide}"
            hidden = page.evaluate("""() => [...document.querySelectorAll('main th, main td')]
                .filter((e) => getComputedStyle(e).display === 'none').map((e) => e.outerHTML.slice(0, 80))""")
            assert hidden == [], f"{route} hides table cells: {hidden[:3]}"
        open_page(page, server, "/schedules")
        pause = page.locator(f'#schedules tr[data-schedule="{name}"] button', has_text="Pause")
        pause.scroll_into_view_if_needed()
        expect(pause).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 320
        pause.click()
        expect(page.locator("#toast")).to_contain_text(f"{name}: pause", timeout=10000)
        assert server.call("GET", f"/async/schedules/{name}")[1]["paused"] is True
        expect(page.locator(f'#schedules tr[data-schedule="{name}"] button', has_text="Resume")).to_be_visible()
        assert not errors, f"JavaScript errors: {errors}"
    finally:
        ctx.close()
        server.call("DELETE", f"/async/schedules/{name}")


def test_the_signals_page_does_not_re_read_on_every_event(page):
    """Records are not events: an open Signals page re-reads every 5 s, and when a waiting job's
    status changes, not on every event. Jobs that do not wait run for about 6 s (many status
    events): the page reads its keys no more often than its 5 s timer fires in the time measured,
    instead of after each event. A waiting job that stops waiting leaves the page at once (well
    before the next 5 s re-read), even when its event comes while a read is still going. On a
    server of its own: the page reads every key there is, and the other tests' keys would make
    each read long on a loaded machine."""
    from conftest import Server

    server = Server()
    try:
        _quiet_signals_page(server, page)
    finally:
        server.stop()


def _quiet_signals_page(server, page):
    key = f"quiet.{uuid.uuid4().hex[:6]}"
    waiting = server.submit({"type": "noop.wait", "wait_for": [{"key": key}], "deadline": "+1h"})
    server.wait(waiting, {"WAITING"})
    server.call("POST", f"/async/signals/{key}-other", {"payload": 1})
    open_page(page, server, "/signals")
    expect(page.locator(f'[data-signal="{key}"] .waiters li[data-job="{waiting}"]')).to_be_visible()
    expect(page.locator("#live")).to_have_text("live", timeout=10000)
    reads = []
    page.on("request", lambda r: reads.append(time.time()) if "/async/jobs?status=WAITING" in r.url else None)
    start = time.time()
    ran = []
    while time.time() < start + 6:
        ran.append(server.submit({"type": "noop.busy"}))
        page.wait_for_timeout(150)
    for j in ran:
        server.wait(j, {"SUCCESS"})
    # The count and the time it was counted in, taken together: the 5 s timer fires at most
    # elapsed // 5 + 1 times in that window, each at most one read.
    n, elapsed = len(reads), time.time() - start
    assert len(ran) >= 2, ran
    assert n <= elapsed // 5 + 1, f"{n} reads of the signals in {elapsed:.1f} s while {len(ran)} other jobs ran"
    # A waiting job that stops waiting (here cancelled) leaves the page by the early re-read its
    # event starts, not by the timer's: cancelled just after a timer's read began (the next one
    # is 5 s later), it is gone within 4.2 s.
    seen = len(reads)
    deadline = time.time() + 15
    while len(reads) == seen and time.time() < deadline:
        page.wait_for_timeout(50)
    assert len(reads) > seen, "no re-read of the signals in 15 s"
    server.call("POST", f"/async/jobs/{waiting}/cancel")
    expect(page.locator(f'.waiters li[data-job="{waiting}"]')).to_have_count(0, timeout=4200)
