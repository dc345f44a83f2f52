"""The pace of the event stream's reconnects. No runyard needed: a small local server answers the
stream (scripted_stream.py), the job reads answer RUNNING.

- A stream answered 200 and closed at once, without a message (a proxy's empty page, a server
  draining), was opened again at once, in a loop as fast as the network (review of session 54,
  finding 5): it is opened again after the reconnect pause, doubling up to its bound.
- A stream answered 502 while the job's reads go through raises ``ServerUnreachable`` once it has
  failed for ``RECONNECT_GIVE_UP``: each read of the job began its count again, and the follow
  went on until the caller's timeout (finding 6).
"""

import time

import pytest

from runyard_job import Client, ServerUnreachable, WaitTimeout, api_follow, api_requests
from scripted_stream import JOB_ID


def test_a_stream_closed_without_a_message_is_opened_again_after_a_pause(servers):
    s = servers([b""], job_status="RUNNING")
    with Client(s.url, timeout=5) as c:
        with pytest.raises(WaitTimeout):
            list(c.job(JOB_ID).events(timeout=1.0))
    # Pauses of 0.1, 0.2, 0.4 s...: 4 or 5 connections in the second (hundreds without them).
    assert 2 <= len(s.last_ids) <= 8, f"{len(s.last_ids)} connections in a second"


def test_a_stream_refused_502_raises_server_unreachable_though_reads_go_through(servers, monkeypatch):
    # Given up after 0.5 s of failures (not 60 s); the job read every 0.1 s meanwhile.
    monkeypatch.setattr(api_follow, "RECONNECT_GIVE_UP", 0.5)
    monkeypatch.setattr(api_requests, "REREAD_INTERVAL", 0.1)
    s = servers([b""], job_status="RUNNING", stream_status=502)
    started = time.monotonic()
    with Client(s.url, timeout=5) as c:
        with pytest.raises(ServerUnreachable):
            list(c.job(JOB_ID).events(timeout=10))
    assert time.monotonic() - started < 8, "given up, not timed out"
