"""The event stream read by the HTML standard's rules, as the CLI reads it (src/cli/sse.rs):
lines ended by CR, LF or CRLF, a leading byte order mark skipped, the last event id kept by the
standard's rules and sent back as ``Last-Event-ID`` (UTF-8 as it came; an id that could not go in
a header ignored). No runyard needed: a small local server sends hand-made streams, byte for byte
(probe s54b F11).
"""

import asyncio
import http.server
import json
import threading

import pytest

from runyard_job import AsyncClient, Client, sse

JOB_ID = "0190a0a0-0000-7000-8000-00000000f011"


def ev(status):
    return json.dumps({"job_id": JOB_ID, "type": "status", "runyard_status": status}).encode()


class Scripted(http.server.ThreadingHTTPServer):
    """Answers connection ``i`` of the event stream with ``streams[i]`` (the last one for any
    later), then holds it open (``hold``) or closes it; records each one's ``Last-Event-ID`` as
    the bytes that came. The job reads answer SUCCESS."""

    daemon_threads = True

    def __init__(self, streams, hold):
        super().__init__(("127.0.0.1", 0), ScriptedHandler)
        self.streams = streams
        self.hold = hold
        self.last_ids = []
        self.closing = threading.Event()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class ScriptedHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        s = self.server
        if self.path.startswith("/async/jobs/"):
            body = json.dumps({"id": JOB_ID, "status": "SUCCESS", "channel_id": JOB_ID}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        last = self.headers.get("Last-Event-ID")
        # http.server reads header bytes as latin-1: back to the bytes sent.
        s.last_ids.append(None if last is None else last.encode("latin-1"))
        stream = s.streams[min(len(s.last_ids), len(s.streams)) - 1]
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(stream)
        self.wfile.flush()
        if s.hold:
            s.closing.wait(30)


def scripted(streams, hold=False):
    s = Scripted(streams, hold)
    threading.Thread(target=s.serve_forever, daemon=True).start()
    return s


@pytest.fixture
def servers():
    started = []
    yield lambda *a, **k: started.append(scripted(*a, **k)) or started[-1]
    for s in started:
        s.closing.set()
        s.shutdown()
        s.server_close()


def statuses(url, flavour):
    """The statuses of the job's events as ``events()`` yields them."""
    if flavour == "sync":
        with Client(url, timeout=5) as c:
            return [e["runyard_status"] for e in c.job(JOB_ID).events(timeout=10)]

    async def main():
        async with AsyncClient(url, timeout=5) as c:
            job = await c.job(JOB_ID)
            return [e["runyard_status"] async for e in job.events(timeout=10)]

    return asyncio.run(main())


@pytest.mark.parametrize("flavour", ["sync", "asyncio"])
def test_lines_ended_by_cr_alone_end_the_event_at_once(servers, flavour):
    # The terminal event's lines end with CR alone and the connection stays open: the line
    # reader held the last CR waiting for a LF that never came (WaitTimeout, "still RUNNING").
    # A leading byte order mark is no part of the first field (the first event was lost).
    stream = (
        b"\xef\xbb\xbfid: 1\ndata: " + ev("QUEUED") + b"\n\n"
        b"id: 2\r\ndata: " + ev("RUNNING") + b"\r\n\r\n"
        b"id: 3\rdata: " + ev("SUCCESS") + b"\r\r"
    )
    s = servers([stream], hold=True)
    assert statuses(s.url, flavour) == ["QUEUED", "RUNNING", "SUCCESS"]
    assert s.last_ids == [None], "one connection: the end came on it"


def running(head=b""):
    return head + b"data: " + ev("RUNNING") + b"\n\n"


@pytest.mark.parametrize(
    "first,sent",
    [
        # UTF-8 goes back as it came (it raised UnicodeEncodeError at the reconnect).
        (running(b"id: \xc3\xa91\n"), b"\xc3\xa91"),
        # White space around an id is no part of a header's value: sent without it (the HTTP
        # library refused the header and the follow never reconnected).
        (running(b"id:  1 \t\n"), b"1"),
        # An empty id clears the last one: the reconnect sends none (it sent the old one).
        (b"id: 1\ndata: " + ev("QUEUED") + b"\n\n" + running(b"id:\n"), None),
        # An id with a control character cannot go in a header: ignored, as one with NUL.
        (b"id: 7\ndata: " + ev("QUEUED") + b"\n\n" + running(b"id: a\x01b\n"), b"7"),
        # An id with no data after it moves the last id all the same.
        (running(b"id: 7\n") + b"id: 8\n\n", b"8"),
    ],
)
def test_the_reconnect_sends_back_the_last_id_by_the_standards_rules(servers, first, sent):
    s = servers([first, b"id: 9\ndata: " + ev("SUCCESS") + b"\n\n"])
    assert statuses(s.url, "sync")[-2:] == ["RUNNING", "SUCCESS"]
    assert s.last_ids == [None, sent]


def test_any_chunking_gives_the_same_events_and_ids():
    # The lines and ids of the CLI's parser test (src/cli/sse.rs), cut at every size: a CRLF or
    # the byte order mark split between two reads is still one line end, one mark.
    stream = (
        b"\xef\xbb\xbfid: 1\ndata: a\n\nid: 2\r\ndata: x\r\ndata: y\r\n\r\n:keep\n\n"
        b"event: e\rdata:z\r\rid: 3\n\nid: a\x01b\ndata: \xc3\xa9\n\nid:\ndata: c\r\n\r\ndata: cut"
    )
    want = [("1", "a"), ("2", "x\ny"), ("2", "z"), ("3", "\u00e9"), ("", "c")]
    for size in range(1, len(stream) + 1):
        lines, parser, got = sse.Lines(), sse.Parser(None), []
        for at in range(0, len(stream), size):
            for line in lines.feed(stream[at : at + size]):
                data = parser.feed(line)
                if data is not None:
                    got.append((parser.last_id, data))
        assert got == want, f"chunks of {size}"
        assert parser.last_id == ""
