"""Integers past 2^53 on the dashboard. The API keeps integers exactly up to 64 bits
(docs/api.md); JavaScript's `JSON.parse` makes every number a double, exact only up to 2^53, so
9007199254740993 would be shown, copied and sent back as 9007199254740992. The page must show the
digits the server wrote, its two copy buttons must carry them (running the copied command submits
the same args), and a signal's payload must be shown and sent as written."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
import uuid

from playwright.sync_api import expect

from conftest import ROOT

BIG = 9007199254740993  # 2^53 + 1: no double holds it
U64 = 12345678901234567890  # past i64, within u64
ARGS = {"n": BIG, "neg": -BIG, "u": U64, "s": "9007199254740993", "f": 0.1, "list": [BIG, 1], "small": 42}


def open_page(page, server, route):
    page.goto(f"{server.url}/#{route}")
    expect(page.locator("body")).to_have_attribute("data-ready", route.split("?")[0], timeout=15000)


def exact(text: str):
    """The JSON text parsed by Python (integers exact), after checking the digits are there as
    written: a number where a number was, the string still a string."""
    assert "9007199254740993" in text and "-9007199254740993" in text and "12345678901234567890" in text, text
    assert '"9007199254740993"' in text, text  # the string stays a string
    return json.loads(text)


def copied(page, button: str, prefix: str) -> str:
    """Clicks a copy button and returns what it put on the clipboard (bounded wait)."""
    page.evaluate("navigator.clipboard.writeText('')")
    page.get_by_role("button", name=button).click()
    deadline = time.time() + 10
    while time.time() < deadline:
        text = page.evaluate("navigator.clipboard.readText()")
        if text.startswith(prefix):
            return text
        time.sleep(0.1)
    raise AssertionError(f"{button}: nothing copied")


def test_a_jobs_large_integers_are_shown_copied_and_resubmitted_as_written(server, page):
    job = server.submit({"type": "echo.big", "args": ARGS})
    done = server.wait(job, {"SUCCESS"})
    assert done["args"] == ARGS and done["result"] == ARGS, done  # the server keeps them exactly

    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    open_page(page, server, f"/job/{job}")
    expect(page.locator("pre.json")).to_have_count(2)
    for pre in page.locator("pre.json").all():
        text = pre.inner_text()
        assert exact(text) == ARGS, text
        assert re.search(r'"f": 0\.1\b', text) and '"small": 42' in text, text

    # "Copy as runyard submit": the args as written; running it submits the same args.
    cmd = copied(page, "Copy as runyard submit", "runyard submit")
    argv = shlex.split(cmd)
    assert exact(argv[argv.index("--args") + 1]) == ARGS, cmd
    binary = os.environ.get("RUNYARD_BIN", str(ROOT / "target/debug/runyard"))
    out = subprocess.run([binary, *argv[1:]], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out
    again = server.job(out.stdout.strip())
    assert again["type"] == "echo.big" and again["args"] == ARGS, again

    # "Copy as curl": the same for the body it posts.
    cmd = copied(page, "Copy as curl", "curl ")
    argv = shlex.split(cmd)
    assert exact(argv[argv.index("-d") + 1])["args"] == ARGS, cmd
    out = subprocess.run(argv + ["-sS", "--fail-with-body"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out
    again = server.job(json.loads(out.stdout)["job_id"])
    assert again["type"] == "echo.big" and again["args"] == ARGS, again


def test_a_signals_large_integers_are_shown_and_sent_as_written(server, page):
    key = f"big.{uuid.uuid4().hex[:6]}"
    payload = {"n": BIG, "neg": -BIG, "u": U64, "s": "9007199254740993", "f": 0.1}
    status, rec = server.call("POST", f"/async/signals/{key}", {"payload": payload})
    assert status == 201, rec

    open_page(page, server, f"/signals?key={key}")
    card = page.locator(f'[data-signal="{key}"]')
    cell = card.locator('tr[data-seq="1"] td').nth(3)
    expect(cell).to_contain_text("12345678901234567890")
    assert exact(cell.inner_text()) == payload, cell.inner_text()

    # Sent from the page: the body carries the digits typed, not the nearest double.
    page.fill("#send-key", key)
    page.fill("#send-payload", json.dumps(payload))
    page.locator("#signal-send button").click()
    expect(card.locator('tr[data-seq="2"]')).to_be_visible(timeout=15000)
    status, page2 = server.call("GET", f"/async/signals/{key}")
    assert status == 200, page2
    assert [r["payload"] for r in page2["signals"]] == [payload, payload], page2
    assert exact(card.locator('tr[data-seq="2"] td').nth(3).inner_text()) == payload
