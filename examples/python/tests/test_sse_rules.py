"""The event stream read by the HTML standard's rules, as the CLI reads it (src/cli/sse.rs):
lines ended by CR, LF or CRLF, a leading byte order mark skipped, the last event id kept by the
standard's rules and sent back as ``Last-Event-ID`` (UTF-8 as it came; an id that could not go in
a header ignored). No runyard needed: a small local server sends hand-made streams, byte for byte
(probe s54b F11).
"""

import asyncio

import pytest

from runyard_job import AsyncClient, Client, sse
from scripted_stream import JOB_ID, ev


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


def test_a_status_that_is_no_string_is_no_status(servers):
    # A list in runyard_status (a proxy, another server) raised TypeError (unhashable) from the
    # follow: the event is passed on, and the job's status is not taken from it.
    odd = b'data: {"job_id": "' + JOB_ID.encode() + b'", "type": "status", "runyard_status": ["SUCCESS"]}\n\n'
    s = servers([odd + b"data: " + ev("SUCCESS") + b"\n\n"], hold=True)
    assert statuses(s.url, "sync") == [["SUCCESS"], "SUCCESS"]
