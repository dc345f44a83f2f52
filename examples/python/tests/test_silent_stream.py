"""``wait()`` / ``result()`` / ``events()`` through a proxy that holds the event stream silent.

A buffering proxy answers ``GET /async/events/sse`` with its headers and then nothing (not even
runyard's keep-alives), a hung one with nothing at all; job reads go through. The client reads the
job again meanwhile (``REREAD_INTERVAL``): that read's answer ends the wait when the job is done,
as the CLI's ``submit --wait`` does. Before, the client stored the job's SUCCESS and went on
waiting for an event that never came: ``WaitTimeout ... still SUCCESS`` (probe s54b F12).

Needs RUNYARD_TEST_SERVER, as test_submit_client.py; the proxy runs in the test.
"""

import asyncio
import http.server
import threading
import time
import urllib.error
import urllib.request

import pytest

from runyard_job import AsyncClient, Client, EventsMissing, api_requests
from submit_support import BOUND, SERVER, TOKEN, server


class SilentProxy(http.server.ThreadingHTTPServer):
    """Forwards GETs to the server, except the event stream: ``sseheaders`` answers it with
    200 text/event-stream and then nothing, ``silent`` answers nothing at all."""

    daemon_threads = True

    def __init__(self, mode):
        super().__init__(("127.0.0.1", 0), SilentHandler)
        self.mode = mode
        self.streams = 0
        self.job_reads = 0
        self.closing = threading.Event()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class SilentHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        proxy = self.server
        if self.path.startswith("/async/events/sse"):
            proxy.streams += 1
            if proxy.mode == "sseheaders":
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.flush()
            proxy.closing.wait(BOUND)
            return
        proxy.job_reads += 1
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("accept", "authorization")}
        request = urllib.request.Request(SERVER + self.path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                status, body, kind = r.status, r.read(), r.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            status, body, kind = e.code, e.read(), e.headers.get("Content-Type", "")
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(params=["sseheaders", "silent"])
def proxy(request, monkeypatch):
    # The knobs made small, so the test takes a second: the job read again every 0.3 s, a stream
    # that sends nothing dropped after 0.5 s (runyard's keep-alives come every 15 s).
    monkeypatch.setattr(api_requests, "REREAD_INTERVAL", 0.3)
    monkeypatch.setattr(api_requests, "STREAM_IDLE", 0.5)
    p = SilentProxy(request.param)
    threading.Thread(target=p.serve_forever, daemon=True).start()
    yield p
    p.closing.set()
    p.shutdown()
    p.server_close()


@server
def test_wait_returns_a_job_that_ended_while_its_stream_stayed_silent(proxy):
    with Client(SERVER, token=TOKEN, timeout=10) as direct:
        submitted = direct.submit("py.sleep", {"seconds": 1}, max_attempts=1)
    with Client(proxy.url, token=TOKEN, timeout=10) as c:
        job = c.job(submitted.id)
        assert not job.done, "the job ends while it is waited for"
        started = time.monotonic()
        assert job.wait(timeout=BOUND) is job
        assert job.status == "SUCCESS"
        assert job.result() == {"slept": 1.0}
        assert time.monotonic() - started < BOUND / 2, "the job read ended the wait, not the timeout"
        # Following the events of the ended job says that its events did not come (the proxy
        # passes none), STREAM_IDLE after the read that found it ended: it ended as if the job
        # had had none, and events() lost those of a gap in a stream (test_stream_gap.py).
        with pytest.raises(EventsMissing) as missing:
            list(c.job(submitted.id).events(timeout=BOUND))
        assert missing.value.job["status"] == "SUCCESS"
    assert proxy.streams >= 1, "the wait went to the event stream"


@server
def test_async_wait_returns_a_job_that_ended_while_its_stream_stayed_silent(proxy):
    async def main():
        async with AsyncClient(SERVER, token=TOKEN, timeout=10) as direct:
            submitted = await direct.submit("py.sleep", {"seconds": 1}, max_attempts=1)
        async with AsyncClient(proxy.url, token=TOKEN, timeout=10) as c:
            job = await c.job(submitted.id)
            assert not job.done, "the job ends while it is waited for"
            return await job.result(timeout=BOUND), job.status

    assert asyncio.run(main()) == ({"slept": 1.0}, "SUCCESS")
    assert proxy.streams >= 1, "the wait went to the event stream"
