"""The submit client's request layer without any I/O: an operation is driven by hand, command by
command, with answers made up here (what ``SyncTransport`` / ``AsyncTransport`` would send it).
This is the code both flavours run; the tests against servers (test_submit_client.py) run it
through the real transports.
"""

import httpx
import pytest

from runyard_job import Client, Forbidden, Job, ServerUnreachable
from runyard_job import api_core as core
from runyard_job import api_follow as follow
from runyard_job.api_core import CLOSE, NEXT_LINE, Call, Emit, Open, Sleep

JOB_ID = "0190a0a0-0000-7000-8000-000000000002"


def answer(status, body):
    return httpx.Response(status, json=body, request=httpx.Request("GET", "http://runyard.invalid/"))


def job_answer(status, finished_at=None):
    body = {"id": JOB_ID, "status": status, "channel_id": JOB_ID, "result": {"n": 1}}
    if finished_at is not None:
        body["finished_at"] = finished_at
    return answer(200, body)


def status_line(status, ts=None, attempt=1):
    """A status event's `data:` line; without `ts`, as a server that sends no times."""
    times = "" if ts is None else f', "attempt": {attempt}, "ts": "{ts}"'
    return f'data: {{"job_id": "{JOB_ID}", "type": "status", "runyard_status": "{status}"{times}}}'


def event(d, line, check=lambda c: True):
    """The stream sends one event (`line`, then the blank line): the operation emits it."""
    d.expect(NEXT_LINE, line)
    d.expect(NEXT_LINE, "")
    d.expect(Emit, None, check)


class Driver:
    """Steps an operation, checking each command against what the test expects next."""

    def __init__(self, op):
        self.op = op
        self.next = op.send(None)

    def expect(self, kind, reply=None, check=lambda c: True):
        command = self.next
        assert command is kind if isinstance(kind, core.StreamStep) else isinstance(command, kind), command
        assert check(command), command
        try:
            self.next = self.op.throw(reply) if isinstance(reply, BaseException) else self.op.send(reply)
        except StopIteration as done:
            self.next = None
            return done.value
        return None


@pytest.fixture
def job():
    with Client("http://runyard.invalid", token="t") as c:
        yield Job(c, {"id": JOB_ID, "status": "QUEUED"})


def test_list_jobs_follows_the_cursor_until_the_limit():
    d = Driver(core.list_jobs("QUEUED", "report.*", 3))
    page1 = answer(200, {"jobs": [{"id": "a"}, {"id": "b"}], "next_cursor": "c1"})
    d.expect(Call, page1, lambda c: c.path == "/async/jobs" and c.params == {"limit": 3, "status": "QUEUED", "type": "report.*"})
    page2 = answer(200, {"jobs": [{"id": "c"}, {"id": "d"}], "next_cursor": "c2"})
    found = d.expect(Call, page2, lambda c: c.params == {"limit": 1, "status": "QUEUED", "type": "report.*", "cursor": "c1"})
    assert [j["id"] for j in found] == ["a", "b", "c"]


def test_list_jobs_follows_the_cursor_past_an_empty_filtered_page():
    d = Driver(core.list_jobs(None, "never.a", 10))
    empty = answer(200, {"jobs": [], "next_cursor": "c1"})
    d.expect(Call, empty, lambda c: "cursor" not in c.params)
    last = answer(200, {"jobs": [{"id": "a"}], "next_cursor": None})
    found = d.expect(Call, last, lambda c: c.params.get("cursor") == "c1")
    assert [j["id"] for j in found] == ["a"]


def test_an_error_answer_is_raised_typed_and_a_lost_request_passes_through():
    d = Driver(core.get_job(JOB_ID))
    with pytest.raises(Forbidden) as e:
        d.expect(Call, answer(403, {"error": {"code": "forbidden", "message": "not yours"}}))
    assert (e.value.code, e.value.message) == ("forbidden", "not yours")
    lost = ServerUnreachable("http://runyard.invalid", httpx.ConnectError("refused"))
    with pytest.raises(ServerUnreachable):
        Driver(core.get_job(JOB_ID)).expect(Call, lost)


def test_wait_reads_the_job_when_the_stream_is_refused(job):
    d = Driver(follow.wait(job, timeout=30))
    d.expect(Call, job_answer("RUNNING"), lambda c: c.method == "GET" and c.path == f"/async/jobs/{JOB_ID}")
    d.expect(Open, answer(403, {"error": {"code": "forbidden", "message": "no events"}}),
             lambda c: c.call.path == "/async/events/sse" and c.call.params == {"channel": JOB_ID})  # fmt: skip
    d.expect(CLOSE)
    d.expect(Call, job_answer("RUNNING"))
    d.expect(Sleep, None, lambda c: c.seconds == follow.POLL_INTERVAL)
    d.expect(Call, job_answer("SUCCESS"))  # the final job: not read again
    assert d.next is None and job.status == "SUCCESS"


def test_events_reconnect_after_a_drop_from_the_last_event_id(job):
    d = Driver(follow.follow(job, follow.follower(job, None, 30)))
    d.expect(Open, answer(200, {}), lambda c: "Last-Event-ID" not in c.headers)
    d.expect(NEXT_LINE, "id: 7")
    event(d, status_line("RUNNING"), lambda c: c.event["runyard_status"] == "RUNNING")
    d.expect(NEXT_LINE, ServerUnreachable("u", httpx.ReadError("reset")))
    d.expect(CLOSE)
    d.expect(Sleep, None, lambda c: c.seconds == follow.RECONNECT_DELAYS[0])
    # The id goes back as its UTF-8 bytes (httpx would encode a str as ASCII: probe s54b F11).
    d.expect(Open, answer(200, {}), lambda c: c.headers["Last-Event-ID"] == b"7")
    event(d, status_line("SUCCESS", "T2"), lambda c: c.event["runyard_status"] == "SUCCESS")
    # The job is read: it ended with the write this event tells (same time).
    d.expect(Call, job_answer("SUCCESS", "T2"))
    d.expect(CLOSE)
    assert d.next is None and job.status == "SUCCESS"


def test_events_of_a_retried_job_go_on_past_the_ends_of_its_earlier_attempts(job):
    d = Driver(follow.follow(job, follow.follower(job, None, 30)))
    d.expect(Open, answer(200, {}))
    # Attempt 1's end, from history: the job read now was retried and ended again since.
    event(d, status_line("ERROR", "T1", 1), lambda c: c.event["attempt"] == 1)
    d.expect(Call, job_answer("SUCCESS", "T3"))
    # Attempt 2 (the retry's QUEUED, then its end): its end is the job's (no second read).
    event(d, status_line("QUEUED", "T2", 1), lambda c: c.event["runyard_status"] == "QUEUED")
    event(d, status_line("SUCCESS", "T3", 2), lambda c: c.event["attempt"] == 2)
    d.expect(CLOSE)
    assert d.next is None and job.status == "SUCCESS"
    # A job read as not ended: the stream goes on after an earlier attempt's end.
    job.data = {"id": JOB_ID, "status": "QUEUED", "channel_id": JOB_ID}
    d = Driver(follow.follow(job, follow.follower(job, None, 30)))
    d.expect(Open, answer(200, {}))
    event(d, status_line("CANCELLED", "T1", 0))
    d.expect(Call, job_answer("RUNNING"))
    event(d, status_line("CANCELLED", "T4", 1))
    d.expect(Call, job_answer("CANCELLED", "T4"))
    d.expect(CLOSE)
    assert d.next is None and job.status == "CANCELLED"


def test_a_job_read_before_events_is_read_again_at_a_replayed_end(job):
    # Read when attempt 1 had ended (T1); retried by someone else since.
    job.data = {"id": JOB_ID, "status": "ERROR", "channel_id": JOB_ID, "finished_at": "T1"}
    d = Driver(follow.follow(job, follow.follower(job, None, 30)))
    d.expect(Open, answer(200, {}))
    event(d, status_line("ERROR", "T1", 1))
    d.expect(Call, job_answer("RUNNING"))  # not taken from the old read: read again
    event(d, status_line("SUCCESS", "T2", 2))
    d.expect(Call, job_answer("SUCCESS", "T2"))
    d.expect(CLOSE)
    assert d.next is None and job.status == "SUCCESS"


def test_events_end_when_the_job_is_deleted_after_its_end_or_the_server_sends_no_times(job):
    d = Driver(follow.follow(job, follow.follower(job, None, 30)))
    d.expect(Open, answer(200, {}))
    event(d, status_line("SUCCESS"))
    d.expect(Call, answer(404, {"error": {"code": "not_found", "message": "no such job"}}))
    d.expect(CLOSE)
    assert d.next is None
    # No times: the job read says (here: retried, so the stream goes on).
    job.data = {"id": JOB_ID, "status": "QUEUED", "channel_id": JOB_ID}
    d = Driver(follow.follow(job, follow.follower(job, None, 30)))
    d.expect(Open, answer(200, {}))
    event(d, status_line("ERROR"))
    d.expect(Call, job_answer("RUNNING"))
    event(d, status_line("SUCCESS"))
    d.expect(Call, job_answer("SUCCESS"))
    d.expect(CLOSE)
    assert d.next is None and job.status == "SUCCESS"


def test_wait_reads_the_job_within_its_timeout_and_again_after_a_failed_read(job):
    d = Driver(follow.wait(job, timeout=2))
    lost = ServerUnreachable("http://runyard.invalid", httpx.ConnectError("refused"))
    # Each read is bounded by what is left of the wait, not by the client's timeout (30 s).
    d.expect(Call, lost, lambda c: c.path == f"/async/jobs/{JOB_ID}" and 0 < c.timeout <= 2)
    d.expect(Sleep, None, lambda c: 0 <= c.seconds <= 2)
    d.expect(Call, job_answer("SUCCESS"), lambda c: c.timeout <= 2)
    assert d.next is None and job.status == "SUCCESS"


def test_wait_with_no_time_left_still_reads_the_job_once(job):
    d = Driver(follow.wait(job, timeout=0))
    d.expect(Call, job_answer("SUCCESS"), lambda c: c.timeout >= follow.FIRST_READ_MIN)
    assert d.next is None and job.status == "SUCCESS"
