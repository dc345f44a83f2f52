"""The dashboard in a real browser: Chromium from Debian driven by Playwright for Python (no
browser download), against a real `runyard serve` on a free loopback port.

    python3 -m pytest tests/browser        # RUNYARD_BIN (default target/debug/runyard), CHROMIUM

Screenshots of the main pages go to $RUNYARD_SCREENSHOTS when it is set (docs/dashboard/)."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIG = """
master_key = "a-master-key-for-the-browser-tests-0123456789"

[[runners]]
name = "slow"
kind = "local"
types = ["slow.*"]
# Held after its first line until the test makes /tmp/runyard-gate-$JOB_ID (at most 60 s): the
# test sees it RUNNING however slow the browser is.
command = ["sh", "-c", "echo step one; i=0; while [ ! -e /tmp/runyard-gate-$JOB_ID ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; echo step two"]
concurrency = 4

[[runners]]
name = "hang"
kind = "local"
types = ["hang.*"]
command = ["sleep", "120"]
concurrency = 1
max_attempts = 1

[[runners]]
name = "fail"
kind = "local"
types = ["fail.*"]
command = ["sh", "-c", "echo boom >&2; exit 3"]
max_attempts = 1

[[runners]]
name = "flaky"
kind = "local"
types = ["flaky.*"]
# Fails until the test makes /tmp/runyard-gate-$JOB_ID: a dead letter that a retry then ends SUCCESS.
command = ["sh", "-c", "test -e /tmp/runyard-gate-$JOB_ID"]
max_attempts = 1

[[runners]]
name = "noop"
kind = "service"
types = ["noop.*"]
operation = "runyard.noop"

[[runners]]
name = "linger"
kind = "local"
types = ["linger.*"]
# Reports SUCCESS through its hook, then lingers (stopped after worker.exit_grace, 10 s).
env = { PYTHONPATH = "@ROOT@/examples/python" }
command = ["python3", "-c", "import time; from runyard_job import JobClient; JobClient.from_env().result({'done': True}); time.sleep(60)"]

[[runners]]
name = "echo"
kind = "local"
types = ["echo.*"]
# Reports its args as its result, through its hook (Python's json keeps every integer exact).
env = { PYTHONPATH = "@ROOT@/examples/python" }
command = ["python3", "-c", "import json, os; from runyard_job import JobClient; JobClient.from_env().result(json.loads(os.environ['JOB_ARGS']))"]
""".replace("@ROOT@", str(ROOT))


def auth_config(tokens: dict[str, tuple[str, str]]) -> str:
    """`[auth]` with API tokens: name -> (the token, its TOML lines: `scopes = [...]`, ...)."""
    import hashlib

    out = ["[auth]"]
    for name, (token, lines) in tokens.items():
        sha = hashlib.sha256(token.encode()).hexdigest()
        out += ["[[auth.tokens]]", f'name = "{name}"', f'sha256 = "{sha}"', lines]
    return "\n" + "\n".join(out) + "\n"


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    def __init__(self, extra_config: str = ""):
        self.dir = tempfile.mkdtemp(prefix="runyard-browser-")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = pathlib.Path(self.dir) / "runyard.toml"
        cfg.write_text(CONFIG + extra_config)
        binary = os.environ.get("RUNYARD_BIN", str(ROOT / "target/debug/runyard"))
        self.log = open(pathlib.Path(self.dir) / "server.log", "wb")
        self.proc = subprocess.Popen(
            [binary, "serve", "--config", str(cfg), "--data-dir", f"{self.dir}/data",
             "--listen", f"127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/health", timeout=1)
                return
            except (urllib.error.URLError, ConnectionError):
                if self.proc.poll() is not None:
                    break
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"runyard did not start: {(pathlib.Path(self.dir) / 'server.log').read_text()}")

    def call(self, method: str, path: str, body=None, token: str | None = None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        if body is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def submit(self, body, token=None) -> str:
        status, job = self.call("POST", "/async/jobs", body, token)
        assert status == 202, job
        return job["job_id"]

    def job(self, job_id, token=None):
        return self.call("GET", f"/async/jobs/{job_id}", token=token)[1]

    def wait(self, job_id, statuses, bound=30.0, token=None):
        deadline = time.time() + bound
        while time.time() < deadline:
            j = self.job(job_id, token)
            if j["status"] in statuses:
                return j
            time.sleep(0.1)
        raise AssertionError(f"{job_id} never reached {statuses}: {j}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("no Chromium (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield b
        b.close()


# The script is the concatenation src/dashboard/mod.rs serves as /ui/app.js, in that order.
UI_PARTS = ["json.js", "app.js", "chart.js", "signals.js", "dead.js"]
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'")


def wait_until(page, held, what, seconds=15):
    """Waits (at most `seconds`) until the list `held` (filled by a route handler) has an item."""
    deadline = time.time() + seconds
    while not held and time.time() < deadline:
        page.wait_for_timeout(50)
    assert held, what


def send_resync(stream):
    """Answers a held event-stream request with a `resync` (its events after the cursor were
    trimmed), as the server does; the page then reconnects."""
    cursor = stream.request.headers.get("last-event-id") or "0"
    stream.fulfill(status=200, headers={"Content-Type": "text/event-stream"},
                   body=f'id: {cursor}\ndata: {{"type": "resync", "id": "{cursor}"}}\n\n')


def new_context(browser, **kw):
    """A browser context. With RUNYARD_UI_SOURCE=1 the dashboard's files are served from
    src/dashboard/assets instead of the binary (same headers), to try a change without a rebuild;
    CI never sets it."""
    ctx = browser.new_context(**kw)
    if os.environ.get("RUNYARD_UI_SOURCE"):
        assets = ROOT / "src/dashboard/assets"

        def serve(route, body, ctype):
            route.fulfill(status=200, body=body, headers={"Content-Type": ctype, "Content-Security-Policy": CSP})

        ctx.route("**/ui/app.js", lambda r: serve(r, "".join((assets / p).read_text() for p in UI_PARTS), "text/javascript"))
        ctx.route("**/ui/app.css", lambda r: serve(r, (assets / "app.css").read_text(), "text/css"))
        ctx.route(re.compile(r"^http://127\.0\.0\.1:\d+/(#.*)?$"),
                  lambda r: serve(r, (assets / "index.html").read_text(), "text/html; charset=utf-8"))
    return ctx


@pytest.fixture
def page(browser):
    ctx = new_context(browser, viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    ctx.close()
    assert not errors, f"JavaScript errors: {errors}"


def screenshot(page, name):
    out = os.environ.get("RUNYARD_SCREENSHOTS")
    if out:
        pathlib.Path(out).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(pathlib.Path(out) / f"{name}.png"), full_page=True)
