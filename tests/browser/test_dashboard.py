"""The dashboard as an operator uses it: live status without reloading, logs, cancel and retry
from a job's page, the jobs table's filters, the "why is it not running" line, and the Schedules
page's last runs (each fire's job status)."""

from __future__ import annotations

import os
import pathlib
import re
import time
import uuid
from datetime import datetime, timedelta, timezone

from playwright.sync_api import expect

from conftest import screenshot


def open_page(page, server, route="/"):
    page.goto(f"{server.url}/#{route}")
    expect(page.locator("body")).to_have_attribute("data-ready", re.compile(".*"), timeout=15000)


def test_served_with_a_strict_content_security_policy(server):
    import urllib.request

    with urllib.request.urlopen(f"{server.url}/") as r:
        csp = r.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert r.headers["Content-Type"].startswith("text/html")
        assert b'src="/ui/app.js"' in r.read()


def test_a_page_load_logs_no_error(server, page):
    # The browser asked for /favicon.ico (the page named no icon) and logged its 404 as an error
    # on every load (probe s53a, F7). Chromium asks for it after the load event: the page is
    # watched a second past that. (With RUNYARD_UI_SOURCE=1 the routed page makes Chromium ask
    # for no icon at all: this test then says nothing; CI runs the binary.)
    errors, failed = [], []
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.on("response", lambda r: r.status >= 400 and failed.append(f"{r.status} {r.url}"))
    open_page(page, server, "/")
    page.wait_for_load_state("load")
    page.wait_for_timeout(1000)
    assert not errors and not failed, (errors, failed)


def test_a_job_goes_live_from_queued_to_success_without_reloading(server, page):
    open_page(page, server, "/")
    expect(page.locator("#live")).to_have_text("live", timeout=10000)
    job = server.submit({"type": "slow.report", "args": {"n": 1}})
    # The overview's latest jobs pick it up from the event stream.
    expect(page.locator(f'#recent tr[data-job="{job}"]')).to_be_visible(timeout=10000)
    page.evaluate("window.__same_document = true")
    page.locator(f'#recent tr[data-job="{job}"] a').click()
    expect(page.locator("#status .badge")).to_have_text("RUNNING", timeout=15000)
    expect(page.locator("#why")).to_contain_text("Running on worker")
    gate = pathlib.Path(f"/tmp/runyard-gate-{job}")
    gate.touch()
    try:
        expect(page.locator("#status .badge")).to_have_text("SUCCESS", timeout=20000)
    finally:
        gate.unlink()
    expect(page.locator("#logs")).to_contain_text("step one")
    expect(page.locator("#logs")).to_contain_text("step two")
    expect(page.locator("#timeline")).to_contain_text("SUCCESS (exit 0)")
    assert page.evaluate("window.__same_document") is True, "the page was reloaded"
    screenshot(page, "job")
    open_page(page, server, "/")
    expect(page.locator("#recent tr").first).to_be_visible()
    # Counts from the store's indexes (GET /async/stats), linked to the filtered table.
    expect(page.locator('[data-count="SUCCESS"] .n')).not_to_have_text("0")
    expect(page.locator('[data-count="SUCCESS"]')).to_have_attribute("href", "#/jobs?status=SUCCESS")
    screenshot(page, "overview")


def test_cancel_from_the_job_page_stops_the_process(server, page):
    job = server.submit({"type": "hang.forever"})
    j = server.wait(job, {"RUNNING"})
    pid = int(re.match(r"\d+", str(j["handle"]["id"])).group(0))
    assert os.path.exists(f"/proc/{pid}")
    open_page(page, server, f"/job/{job}")
    expect(page.locator("#status .badge")).to_have_text("RUNNING")
    page.locator("#cancel").click()
    expect(page.locator("#status .badge")).to_have_text("CANCELLED", timeout=15000)
    expect(page.locator("#cancel")).to_have_count(0)
    deadline = time.time() + 15
    while os.path.exists(f"/proc/{pid}") and time.time() < deadline:
        time.sleep(0.1)
    gone = not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read()
    assert gone, f"process {pid} still runs after cancel"


def test_no_cancel_for_a_job_that_reported_its_outcome(server, page):
    # A cancel would be refused (409): the job ends as it reported once its process ends.
    job = server.submit({"type": "linger.done"})
    deadline = time.time() + 30
    while time.time() < deadline:
        j = server.job(job)
        if (j.get("runs") or [{}])[-1].get("reported") == "SUCCESS":
            break
        time.sleep(0.1)
    assert j["runs"][-1]["reported"] == "SUCCESS", j
    open_page(page, server, f"/job/{job}")
    expect(page.locator("#status .badge")).to_have_text(re.compile("STARTING|RUNNING"))
    expect(page.locator("#cancel")).to_have_count(0)
    expect(page.locator("#status .badge")).to_have_text("SUCCESS", timeout=30000)


def test_retry_a_failed_job_from_its_page(server, page):
    job = server.submit({"type": "fail.once"})
    server.wait(job, {"ERROR"})
    open_page(page, server, f"/job/{job}")
    expect(page.locator("#why")).to_contain_text("Ended ERROR")
    expect(page.locator("#logs")).to_contain_text("boom")
    page.locator("#retry").click()
    expect(page.locator('[data-fact="attempt"]')).to_have_text("2 of 2", timeout=15000)
    expect(page.locator("#status .badge")).to_have_text("ERROR", timeout=20000)
    assert server.job(job)["attempt"] == 2


def test_the_jobs_table_filters_by_status_and_type(server, page):
    ok = server.submit({"type": "noop.filter"})
    bad = server.submit({"type": "fail.filter"})
    server.wait(ok, {"SUCCESS"})
    server.wait(bad, {"ERROR"})
    open_page(page, server, "/jobs")
    expect(page.locator(f'#rows tr[data-job="{ok}"]')).to_be_visible()
    page.select_option("#f-status", "ERROR")
    page.locator("form.filters button").click()
    expect(page.locator(f'#rows tr[data-job="{bad}"]')).to_be_visible()
    expect(page.locator(f'#rows tr[data-job="{ok}"]')).to_have_count(0)
    # Waited for, not read once: the table may be drawn again between two reads.
    expect(page.locator("#rows .badge").first).to_have_text("ERROR")
    expect(page.locator("#rows .badge").filter(has_not_text="ERROR")).to_have_count(0)
    page.fill("#f-type", "noop.*")
    page.select_option("#f-status", "")
    page.locator("form.filters button").click()
    expect(page.locator(f'#rows tr[data-job="{ok}"]')).to_be_visible()
    expect(page.locator(f'#rows tr[data-job="{bad}"]')).to_have_count(0)
    screenshot(page, "jobs")


def test_why_not_running_for_a_delayed_and_a_queued_job(server, page):
    later = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    delayed = server.submit({"type": "noop.later", "run_at": later})
    open_page(page, server, f"/job/{delayed}")
    expect(page.locator("#status .badge")).to_have_text("SCHEDULED")
    expect(page.locator("#why")).to_contain_text("Scheduled for")
    expect(page.locator("#why")).to_contain_text(re.compile(r"in (59|60) min|in 1 h"))

    # The hang runner runs one at a time: the second waits for the first's slot.
    first = server.submit({"type": "hang.a"})
    server.wait(first, {"RUNNING"})
    second = server.submit({"type": "hang.b"})
    open_page(page, server, f"/job/{second}")
    expect(page.locator("#status .badge")).to_have_text("QUEUED")
    expect(page.locator("#why")).to_contain_text("Queued for runner hang")
    expect(page.locator("#why")).to_contain_text("has 1 of 1 slots in use")
    server.call("POST", f"/async/jobs/{first}/cancel")
    server.call("POST", f"/async/jobs/{second}/cancel")


def test_a_read_only_token_sees_no_action_buttons(browser):
    """With [auth]: sign in with a token; one with `jobs:read` only is shown no button that it
    could not use, one with `admin` is."""
    from conftest import Server, auth_config, new_context

    tokens = {"viewer": "ry_viewer_token_for_the_browser_test", "ops": "ry_ops_token_for_the_browser_test"}
    srv = Server(extra_config=auth_config({
        "viewer": (tokens["viewer"], 'scopes = ["jobs:read"]'),
        "ops": (tokens["ops"], 'scopes = ["admin"]'),
    }))
    try:
        job = srv.submit({"type": "hang.auth"}, token=tokens["ops"])
        srv.wait(job, {"RUNNING"}, token=tokens["ops"])
        for name, can_act in (("viewer", False), ("ops", True)):
            ctx = new_context(browser)
            page = ctx.new_page()
            page.goto(f"{srv.url}/#/job/{job}")
            expect(page.locator("#signin")).to_be_visible(timeout=10000)
            page.fill("#token", tokens[name])
            page.locator("#signin button").click()
            expect(page.locator("#status .badge")).to_have_text("RUNNING", timeout=10000)
            expect(page.locator("#live")).to_have_text("live", timeout=10000)
            expect(page.locator("#cancel")).to_have_count(1 if can_act else 0)
            page.goto(f"{srv.url}/#/jobs")
            expect(page.locator(f'#rows tr[data-job="{job}"]')).to_be_visible(timeout=10000)
            expect(page.locator("#bulk-cancel")).to_have_count(1 if can_act else 0)
            # Dead letters and signals: no retry, no send for the read-only token.
            page.goto(f"{srv.url}/#/dead")
            expect(page.locator("h1")).to_have_text("Dead letters", timeout=10000)
            expect(page.locator("body")).to_have_attribute("data-ready", "/dead", timeout=10000)
            expect(page.locator("#retry-all")).to_have_count(1 if can_act else 0)
            page.goto(f"{srv.url}/#/signals")
            expect(page.locator("body")).to_have_attribute("data-ready", "/signals", timeout=10000)
            expect(page.locator("#signal-send")).to_have_count(1 if can_act else 0)
            if not can_act:
                # Signing out ends the page's event stream (the only one open on the server:
                # it would go on reading with the token's rights).
                page.goto(f"{srv.url}/#/jobs")
                expect(page.locator("#live")).to_have_text("live", timeout=10000)
                assert _streams_open(srv, tokens["ops"]) == 1
                page.locator("#signout").click()
                expect(page.locator("#signin")).to_be_visible(timeout=10000)
                expect(page.locator("#live")).to_have_text("signed out")
                deadline = time.time() + 30
                while _streams_open(srv, tokens["ops"]) != 0 and time.time() < deadline:
                    time.sleep(0.2)
                assert _streams_open(srv, tokens["ops"]) == 0, "the stream outlived the sign-out"
            ctx.close()
        srv.call("POST", f"/async/jobs/{job}/cancel", token=tokens["ops"])
    finally:
        srv.stop()


def _streams_open(srv, token: str) -> float:
    """`runyard_event_streams_open` from the server's /metrics."""
    import urllib.request

    req = urllib.request.Request(f"{srv.url}/metrics", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("runyard_event_streams_open"))


def _jwt(secret: str, claims: dict) -> str:
    """An HS256 JWT, as a service minting its own credentials signs one (docs/auth.md)."""
    import base64
    import hashlib
    import hmac
    import json

    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def test_an_expired_sign_in_asks_to_sign_in_again_and_stops_reconnecting(browser):
    """Signed in with a short-lived JWT: when it expires the server ends the live stream; the
    dashboard then shows the sign-in form saying why, and does not keep reconnecting with the
    dead credential. A new token brings the page back live."""
    from conftest import Server, new_context

    secret = "a-jwt-secret-for-the-browser-test-0123456789"
    srv = Server(extra_config=f"""
[auth]
jwt_secret = "{secret}"
jwt_leeway = "0s"
""")
    try:
        ctx = new_context(browser)
        page = ctx.new_page()
        streams = []
        page.on("request", lambda r: streams.append(time.time()) if r.url.endswith("/async/events/sse") else None)
        page.goto(f"{srv.url}/#/jobs")
        expect(page.locator("#signin")).to_be_visible(timeout=10000)
        exp = int(time.time()) + 10
        page.fill("#token", _jwt(secret, {"scope": "jobs:read", "sub": "viewer", "exp": exp}))
        page.locator("#signin button").click()
        expect(page.locator("#live")).to_have_text("live", timeout=10000)
        expect(page.locator("#signin")).to_have_count(0)
        # The server closes the stream at exp + leeway + 1; the reconnect is refused.
        expect(page.locator("#signin")).to_be_visible(timeout=30000)
        assert time.time() >= exp, "asked to sign in again before the token expired"
        expect(page.locator("#signin")).to_contain_text("sign in again")
        expect(page.locator("#live")).to_have_text("signed out")
        settled = len(streams)
        page.wait_for_timeout(3000)
        assert len(streams) == settled, f"kept reconnecting with an expired token: {len(streams) - settled} more"
        # Signing in again with a fresh token makes the page live again.
        page.fill("#token", _jwt(secret, {"scope": "jobs:read", "sub": "viewer", "exp": int(time.time()) + 600}))
        page.locator("#signin button").click()
        expect(page.locator("#live")).to_have_text("live", timeout=10000)
        ctx.close()
    finally:
        srv.stop()


def test_text_is_shown_in_the_order_written(server, page):
    """A right-to-left override in a job's args (or anything a job or a submitter wrote) would show
    `deploy to production (safe)` for text that says otherwise: the page shows it as an escape,
    JSON's own in JSON (the copied command is still the same JSON)."""
    job = server.submit({"type": "noop.bidi", "args": {"target": "deploy to \u202enoitcudorp\u202c (safe)"}})
    server.wait(job, {"SUCCESS"})
    open_page(page, server, f"/job/{job}")
    args = page.locator("pre.json").first
    expect(args).to_contain_text("deploy to \\u202enoitcudorp\\u202c (safe)")
    text = page.locator("#main").inner_text()
    assert "\u202e" not in text and "\u202c" not in text, text


def test_a_token_that_cannot_read_is_offered_no_action(browser):
    """A token with `jobs:submit` only cannot read anything here (`/async/whoami` needs `jobs:read`
    and answers 403): the page offers it no action, instead of every action a server without
    whoami would get."""
    from conftest import Server, auth_config, new_context

    token = "ry_submit_only_token_for_the_browser_test"
    srv = Server(extra_config=auth_config({"sub": (token, 'scopes = ["jobs:submit"]')}))
    try:
        ctx = new_context(browser)
        page = ctx.new_page()
        page.goto(f"{srv.url}/#/jobs")
        expect(page.locator("#signin")).to_be_visible(timeout=10000)
        page.fill("#token", token)
        page.locator("#signin button").click()
        expect(page.locator("body")).to_have_attribute("data-ready", "/jobs", timeout=10000)
        expect(page.locator("#bulk-cancel")).to_have_count(0)
        page.goto(f"{srv.url}/#/signals")
        expect(page.locator("body")).to_have_attribute("data-ready", "/signals", timeout=10000)
        expect(page.locator("#signal-send")).to_have_count(0)
        ctx.close()
    finally:
        srv.stop()


def test_a_page_whose_data_comes_after_the_user_left_does_not_replace_the_next(server, page):
    """The job's page waits for its job (held here); meanwhile the user opens Jobs. When the job
    arrives it is dropped: the table stays on screen, and the job's page starts nothing (no log
    read, no 2 s poll of the job)."""
    later = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    job = server.submit({"type": "noop.left", "run_at": later})  # SCHEDULED: its page would poll it
    held = []
    page.route(re.compile(rf"/async/jobs/{job}$"), lambda route: held.append(route) if not held else route.continue_())
    asked = []
    page.on("request", lambda r: asked.append(r.url) if f"/async/jobs/{job}" in r.url else None)
    page.goto(f"{server.url}/#/job/{job}")
    deadline = time.time() + 15
    while not held and time.time() < deadline:
        page.wait_for_timeout(50)
    assert held, "the job's page never asked for its job"
    page.locator('nav [data-nav="jobs"]').click()
    expect(page.locator("body")).to_have_attribute("data-ready", "/jobs", timeout=15000)
    expect(page.locator(f'#rows tr[data-job="{job}"]')).to_be_visible()
    before = len(asked)
    with page.expect_event("requestfinished", lambda r: r.url.endswith(f"/async/jobs/{job}")):
        held[0].continue_()
    # Longer than the job page's poll (2 s): anything it would start has started by then.
    page.wait_for_timeout(3000)
    expect(page.locator("h1")).to_have_text("Jobs")
    expect(page.locator('[data-nav="jobs"]')).to_have_attribute("aria-current", "page")
    expect(page.locator("body")).to_have_attribute("data-ready", "/jobs")
    assert asked[before:] == [], f"the left page went on reading: {asked[before:]}"


def test_an_overview_left_during_its_first_load_leaves_no_chart_running(server, page):
    """The overview's chart redraws every minute (a 60 s interval, chart.js) and on every change
    of the tally. An overview the user leaves while its first data is still coming (its counts held
    here) stops its chart too: no chart interval is left running off screen (the page's intervals
    are counted by a wrapper of setInterval/clearInterval installed before the dashboard loads)."""
    page.add_init_script("""(() => {
        const live = new Set(), set = window.setInterval, clear = window.clearInterval;
        window.setInterval = (f, ms, ...a) => { const id = set(f, ms, ...a); if (ms === 60000) live.add(id); return id; };
        window.clearInterval = (id) => { live.delete(id); clear(id); };
        window.minuteIntervals = () => live.size;
    })()""")
    held = []
    page.route(re.compile(r"/async/stats$"), lambda route: held.append(route) if not held else route.continue_())
    page.goto(f"{server.url}/#/")
    deadline = time.time() + 15
    while not held and time.time() < deadline:
        page.wait_for_timeout(50)
    assert held, "the overview never asked for its counts"
    assert page.evaluate("minuteIntervals()") == 1, "the overview's chart has no minute interval"
    page.locator('nav [data-nav="jobs"]').click()
    expect(page.locator("body")).to_have_attribute("data-ready", "/jobs", timeout=15000)
    with page.expect_event("requestfinished", lambda r: r.url.endswith("/async/stats")):
        held[0].continue_()
    page.wait_for_timeout(1000)  # the overview's first load ends (and returns: it was left)
    expect(page.locator("h1")).to_have_text("Jobs")
    assert page.evaluate("minuteIntervals()") == 0, "the left overview's chart still redraws every minute"


def test_the_why_box_wraps_long_signal_keys(server, page):
    """A job waiting for two 200-character keys: the "why not running" line wraps inside the page
    instead of widening it."""
    keys = [("a" * 199) + "1", ("b" * 199) + "2"]
    job = server.submit({"type": "noop.longkeys", "wait_for": [{"key": k} for k in keys], "deadline": "+1h"})
    open_page(page, server, f"/job/{job}")
    expect(page.locator("#status .badge")).to_have_text("WAITING")
    expect(page.locator("#why")).to_contain_text(keys[1])
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"the page is {widths[0]} px wide in a {widths[1]} px window"
    server.call("POST", f"/async/jobs/{job}/cancel")


def test_schedules_show_each_runs_job_status_and_a_fire_without_one_its_outcome(server, page):
    """The Schedules page's last runs: a fire that made a job shows the job's status (SUCCESS,
    ERROR, RUNNING), linked to it, not the fire's "submitted"; a fire that made none (here an
    `error`: the time's key holds the job of an earlier schedule of the same name) its outcome."""
    def make(name, job_type, cron="0 3 * * *"):
        status, s = server.call("POST", "/async/schedules",
                                {"name": name, "cron": cron, "job": {"type": job_type}})
        assert status == 201, s

    def trigger(name):
        status, fired = server.call("POST", f"/async/schedules/{name}/trigger")
        assert status == 202, fired
        return fired["job_id"]

    make("ui-ok", "noop.report")
    make("ui-fail", "fail.report")
    make("ui-slow", "slow.report")
    ok, bad, slow = trigger("ui-ok"), trigger("ui-fail"), trigger("ui-slow")
    server.wait(ok, {"SUCCESS"})
    server.wait(bad, {"ERROR"})
    server.wait(slow, {"RUNNING"})
    # A fire that makes no job: made again under a deleted schedule's name, a backfill of a
    # time the earlier one had backfilled is refused and recorded as an `error`.
    now = datetime.now(timezone.utc)
    span = {"from": (now - timedelta(hours=1)).isoformat(), "to": now.isoformat()}
    make("ui-again", "noop.report", "0 * * * *")
    status, v = server.call("POST", "/async/schedules/ui-again/backfill", span)
    assert status == 202 and len(v["fires"]) == 1, v
    assert server.call("DELETE", "/async/schedules/ui-again")[0] == 204
    make("ui-again", "noop.report", "0 * * * *")
    status, v = server.call("POST", "/async/schedules/ui-again/backfill", span)
    assert status == 202 and v["fires"] == [] and len(v["refused"]) == 1, v
    gate = pathlib.Path(f"/tmp/runyard-gate-{slow}")
    # The "Last runs" column (by place: the page before this test had no class on it).
    try:
        open_page(page, server, "/schedules")
        for name, job, status in [("ui-ok", ok, "SUCCESS"), ("ui-fail", bad, "ERROR"), ("ui-slow", slow, "RUNNING")]:
            run = page.locator(f'#schedules tr[data-schedule="{name}"] td:nth-child(4) a')
            expect(run).to_have_count(1)
            expect(run).to_have_attribute("href", f"#/job/{job}")
            expect(run.locator(".badge")).to_have_text(status)
            expect(page.locator(f'#schedules tr[data-schedule="{name}"] td:nth-child(4)')).not_to_contain_text("submitted")
        again = page.locator('#schedules tr[data-schedule="ui-again"] td:nth-child(4)')
        expect(again).to_contain_text("error")
        expect(again.locator("a")).to_have_count(0)
        expect(again.locator('[data-run="error"]')).to_have_attribute("title", re.compile("did not make"))
        screenshot(page, "schedules")
        # The job's page is one click away.
        page.locator('#schedules tr[data-schedule="ui-fail"] td:nth-child(4) a').click()
        expect(page.locator("#status .badge")).to_have_text("ERROR")
    finally:
        gate.touch()
        server.wait(slow, {"SUCCESS"})
        gate.unlink()
        for name in ["ui-ok", "ui-fail", "ui-slow", "ui-again"]:
            server.call("DELETE", f"/async/schedules/{name}")


def test_a_skipped_fire_shows_its_outcome_not_the_status_of_the_job_it_overlapped(server, page):
    """`overlap: "forbid"`: while the schedule's job runs, each fire is skipped, and its
    `last_runs` entry (`skipped_overlap`) carries the `job_id` of the job that blocked it. The page
    shows such a fire as `skipped_overlap`, not as that job's status: only the fire that made the
    job shows the job's status."""
    status, s = server.call("POST", "/async/schedules", {
        "name": "ui-forbid", "cron": "* * * * * *", "overlap": "forbid", "job": {"type": "slow.forbid"}})
    assert status == 201, s
    job = None
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            runs = server.call("GET", "/async/schedules/ui-forbid")[1]["last_runs"]
            if sum(r["outcome"] == "skipped_overlap" for r in runs) >= 2:
                break
            time.sleep(0.2)
        assert server.call("POST", "/async/schedules/ui-forbid/pause")[0] == 200
        runs = server.call("GET", "/async/schedules/ui-forbid")[1]["last_runs"][:3]
        submitted = [r for r in runs if r["outcome"] == "submitted"]
        skipped = [r for r in runs if r["outcome"] == "skipped_overlap"]
        # A scheduler that ran late on a loaded machine may have logged a `missed` fire too.
        assert len(skipped) >= 2 and len(submitted) <= 1, runs
        assert all(r["outcome"] in ("submitted", "skipped_overlap", "missed") for r in runs), runs
        job = skipped[0]["job_id"]
        assert job and all(r["job_id"] == job for r in skipped), runs
        assert all(r["job_id"] == job for r in submitted), runs
        # Held by its gate: RUNNING once it started (under load it may still be QUEUED/STARTING).
        server.wait(job, {"RUNNING"})

        open_page(page, server, "/schedules")
        cell = page.locator('#schedules tr[data-schedule="ui-forbid"] td:nth-child(4)')
        expect(cell.locator('[data-run="skipped_overlap"]')).to_have_count(len(skipped))
        for i in range(len(skipped)):
            expect(cell.locator('[data-run="skipped_overlap"]').nth(i)).to_contain_text("skipped_overlap")
            expect(cell.locator('[data-run="skipped_overlap"]').nth(i).locator(".badge")).to_have_count(0)
        # Only the fire that made the job shows its status.
        expect(cell.locator(".badge")).to_have_count(len(submitted))
        if submitted:
            expect(cell.locator('[data-run="submitted"] .badge')).to_have_text("RUNNING")
    finally:
        if job:
            gate = pathlib.Path(f"/tmp/runyard-gate-{job}")
            gate.touch()
            server.wait(job, {"SUCCESS"})
            gate.unlink()
        server.call("DELETE", "/async/schedules/ui-forbid")


def test_an_expired_sign_in_on_a_job_page_stops_its_poll(browser):
    """A job's page polls its job every 2 s while it runs. When the JWT expires the sign-in form
    comes back, and the page stops: no more reads of the job (each would be a 401) until the user
    signs in again."""
    from conftest import Server, new_context

    secret = "a-jwt-secret-for-the-browser-test-0123456789"
    srv = Server(extra_config=f"""
[auth]
jwt_secret = "{secret}"
jwt_leeway = "0s"
""")
    try:
        admin = _jwt(secret, {"scope": "admin", "sub": "ops", "exp": int(time.time()) + 600})
        job = srv.submit({"type": "hang.expiry"}, token=admin)
        srv.wait(job, {"RUNNING"}, token=admin)
        ctx = new_context(browser)
        page = ctx.new_page()
        reads = []
        page.on("request", lambda r: reads.append(time.time()) if r.url.endswith(f"/async/jobs/{job}") else None)
        page.goto(f"{srv.url}/#/job/{job}")
        expect(page.locator("#signin")).to_be_visible(timeout=10000)
        exp = int(time.time()) + 8
        page.fill("#token", _jwt(secret, {"scope": "jobs:read", "sub": "viewer", "exp": exp}))
        page.locator("#signin button").click()
        expect(page.locator("#status .badge")).to_have_text("RUNNING", timeout=10000)
        expect(page.locator("#signin")).to_have_count(0)
        expect(page.locator("#signin")).to_be_visible(timeout=30000)
        assert time.time() >= exp, "asked to sign in again before the token expired"
        polled = len(reads)
        # Three of the job page's 2 s polls.
        page.wait_for_timeout(6000)
        expect(page.locator("#signin")).to_be_visible()
        assert len(reads) == polled, f"the page went on reading the job with an expired token: {len(reads) - polled} more"
        ctx.close()
        srv.call("POST", f"/async/jobs/{job}/cancel", token=admin)
    finally:
        srv.stop()


def test_a_late_refusal_of_an_old_token_does_not_end_the_page_signed_in_again(browser):
    """A 401 asks to sign in only for the token in use: a read of the job made with a token that
    expired while it was on its way, answered after the user signed in again with a new one, does
    not end the new page (before, the sign-in form came back over it with a valid token, and its
    poll and listener were gone). Signed in again, the job's page polls and the page is live."""
    from conftest import Server, new_context

    secret = "a-jwt-secret-for-the-browser-test-0123456789"
    srv = Server(extra_config=f"""
[auth]
jwt_secret = "{secret}"
jwt_leeway = "0s"
""")
    try:
        admin = _jwt(secret, {"scope": "admin", "sub": "ops", "exp": int(time.time()) + 600})
        job = srv.submit({"type": "hang.late"}, token=admin)
        srv.wait(job, {"RUNNING"}, token=admin)
        ctx = new_context(browser)
        page = ctx.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        reads = []  # the token each read of the job carried
        page.on("request", lambda r: reads.append(r.headers.get("authorization")) if r.url.endswith(f"/async/jobs/{job}") else None)
        held, hold = [], {"token": None}

        def read_job(route):
            if hold["token"] and route.request.headers.get("authorization") == f"Bearer {hold['token']}":
                held.append(route)  # answered later, by the test
            else:
                route.continue_()

        page.route(f"**/async/jobs/{job}", read_job)
        page.goto(f"{srv.url}/#/job/{job}")
        expect(page.locator("#signin")).to_be_visible(timeout=10000)
        exp = int(time.time()) + 15
        first = _jwt(secret, {"scope": "jobs:read", "sub": "viewer", "exp": exp})
        page.fill("#token", first)
        page.locator("#signin button").click()
        expect(page.locator("#status .badge")).to_have_text("RUNNING", timeout=10000)
        # The job page's next poll (every 2 s) is held: it is on its way when the token expires.
        hold["token"] = first
        deadline = time.time() + 15
        while not held and time.time() < deadline:
            page.wait_for_timeout(100)
        assert held, "the job's page did not poll its job"
        # The server ends the event stream when its JWT expires: the form comes back.
        expect(page.locator("#signin")).to_be_visible(timeout=30000)
        assert time.time() >= exp, "asked to sign in again before the token expired"
        second = _jwt(secret, {"scope": "jobs:read", "sub": "viewer", "exp": int(time.time()) + 600})
        page.fill("#token", second)
        page.locator("#signin button").click()
        expect(page.locator("#status .badge")).to_have_text("RUNNING", timeout=10000)
        expect(page.locator("#live")).to_have_text("live", timeout=10000)
        # The held read goes now, with the expired token: the server refuses it (401).
        for route in held:
            route.continue_()
        polled = reads.count(f"Bearer {second}")
        # Three of the job page's 2 s polls.
        page.wait_for_timeout(6000)
        expect(page.locator("#signin")).to_have_count(0)
        expect(page.locator("#status .badge")).to_have_text("RUNNING")
        expect(page.locator("#live")).to_have_text("live")
        assert reads.count(f"Bearer {second}") > polled, "the job's page stopped polling after the old token's 401"
        assert not errors, f"JavaScript errors: {errors}"
        ctx.close()
        srv.call("POST", f"/async/jobs/{job}/cancel", token=admin)
    finally:
        srv.stop()


def test_a_resync_read_answered_late_does_not_undo_a_newer_live_status(server, page):
    """A resync re-reads the jobs table; an event that comes while that read is on its way (here
    the job ending: SUCCESS) is newer than the rows the read brings (the job still RUNNING). The
    row keeps the newer status: the event is applied again to the new rows (each row keeps its
    job's `updated_at`, and an event older than it is not applied). Before, the late read put the
    row back to RUNNING, and no event came to change it. The resync here is a stream answer made
    by the test (the same message the server sends when events were trimmed, with the page's own
    cursor as its id), the re-read is answered with what the server said when it was asked, held
    until the job's SUCCESS is on screen."""
    import pathlib

    kind = f"slow.late{uuid.uuid4().hex[:6]}"
    job = server.submit({"type": kind})
    server.wait(job, {"RUNNING"})
    streams, reads = [], []

    def stream(route):
        if streams:
            return route.continue_()
        streams.append(route)  # answered by the test, once the table is on screen

    def table(route):
        if not reads:  # the page's first read
            reads.append(None)
            return route.continue_()
        reads.append((route, route.fetch()))  # the server's answer now, given to the page later

    page.route(re.compile(rf"/async/jobs\?limit=50&fields=[^&]*&type={kind}$"), table)
    page.route("**/async/events/sse", stream)
    gate = pathlib.Path(f"/tmp/runyard-gate-{job}")
    try:
        page.goto(f"{server.url}/#/jobs?type={kind}")
        row = page.locator(f'#rows tr[data-job="{job}"]')
        expect(row.locator(".badge")).to_have_text("RUNNING", timeout=15000)
        expect(page.locator("body")).to_have_attribute("data-ready", "/jobs")
        deadline = time.time() + 15
        while not streams and time.time() < deadline:
            page.wait_for_timeout(50)
        assert streams, "the page opened no event stream"
        cursor = streams[0].request.headers.get("last-event-id") or "0"
        body = f'id: {cursor}\ndata: {{"type": "resync", "id": "{cursor}"}}\n\n'
        streams[0].fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=body)
        deadline = time.time() + 15
        while len(reads) < 2 and time.time() < deadline:
            page.wait_for_timeout(50)
        assert len(reads) == 2, "the resync did not re-read the table"
        route, answer = reads[1]
        assert answer.json()["jobs"][0]["status"] == "RUNNING"
        gate.touch()
        server.wait(job, {"SUCCESS"})
        # The stream came back (after the made-up one ended) and brought the job's end.
        expect(row.locator(".badge")).to_have_text("SUCCESS", timeout=10000)
        route.fulfill(response=answer)
        page.wait_for_timeout(1000)  # the late read is on screen
        expect(row.locator(".badge")).to_have_text("SUCCESS")
        expect(row.locator(".pick")).to_have_count(1)
    finally:
        gate.touch()
        server.wait(job, {"SUCCESS"})
        gate.unlink()
