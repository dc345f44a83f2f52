"""The submit client (``Client`` / ``AsyncClient``) against a real runyard server.

Needs RUNYARD_TEST_SERVER (see test_against_server.py: a server started from the repository root
with examples/python/runyard-test.toml); RUNYARD_TEST_TOKEN, if set, is the client's token. The
tests at the end (reconnect, headers, unreachable) run without a server, against small local HTTP
servers that misbehave on purpose.
"""

import asyncio
import http.server
import json
import socket
import threading
import time
import uuid

import pytest

from runyard_job import (
    ApiError,
    AsyncClient,
    AsyncJob,
    Client,
    Forbidden,
    Job,
    JobCancelled,
    JobFailed,
    JobTimedOut,
    NotFound,
    ServerUnreachable,
    Unauthorized,
    WaitTimeout,
)

from runyard_job import api_requests
from submit_support import BOUND, SERVER, TOKEN, server

TEXT = "the quick brown fox\njumps over\n\nthe lazy dog\n"


@pytest.fixture
def client():
    with Client(SERVER, token=TOKEN, timeout=10) as c:
        yield c


def run(coro):
    return asyncio.run(coro)


def eventually(check, bound=10.0):
    deadline = time.monotonic() + bound
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def in_order(statuses, expected):
    """``expected`` appears in ``statuses`` as a subsequence (other statuses may come between)."""
    it = iter(statuses)
    return all(any(s == e for s in it) for e in expected)


# ---------------------------------------------------------------------------------------------
# Synchronous flavour, real server


@server
def test_submit_wait_result(client):
    job = client.submit("py.hello", {"name": "client"})
    assert job.id and job.status in {"QUEUED", "SCHEDULED", "STARTING", "RUNNING", "SUCCESS"}
    assert job.wait(timeout=BOUND) is job
    assert job.status == "SUCCESS"
    assert job.result() == {"hello": "client"}
    assert job.data["result"] == {"hello": "client"}
    # A process's output is stored as it is read, which may be just after the job reported SUCCESS.
    assert eventually(lambda: any(f"hello from job {job.id}" in line["line"] for line in job.logs()))
    again = client.job(job.id)
    assert again.status == "SUCCESS" and again.data["type"] == "py.hello"
    assert job.id in [j.id for j in client.jobs(type="py.hello", limit=100)]


@server
def test_wait_on_a_failed_job_raises_job_failed(client):
    job = client.submit("py.fail", max_attempts=1)
    with pytest.raises(JobFailed) as e:
        job.wait(timeout=BOUND)
    assert e.value.job["status"] == "ERROR"
    assert e.value.job["id"] == job.id
    assert e.value.exit_code == 3
    with pytest.raises(JobFailed):
        job.result()


@server
def test_wait_on_a_timed_out_job_raises_job_timed_out(client):
    job = client.submit("py.sleep", {"seconds": 30}, timeout="1s", max_attempts=1)
    started = time.monotonic()
    with pytest.raises(JobTimedOut) as e:
        job.wait(timeout=BOUND)
    assert e.value.job["status"] == "TIMEOUT"
    assert time.monotonic() - started < 25, "the job's own 1 s timeout, not the 30 s sleep"


@server
def test_wait_on_a_cancelled_job_raises_job_cancelled(client):
    job = client.submit("py.sleep", {"seconds": 30}, max_attempts=1)
    for event in job.events(timeout=BOUND):
        if event.get("runyard_status") == "RUNNING":
            break
    assert job.cancel().status == "CANCELLED"
    with pytest.raises(JobCancelled) as e:
        job.wait(timeout=BOUND)
    assert e.value.job["status"] == "CANCELLED"
    with pytest.raises(ApiError) as again:
        job.cancel()
    assert again.value.status == 409


@server
def test_wait_timeout_is_the_callers_and_leaves_the_job_running(client):
    job = client.submit("py.sleep", {"seconds": 30}, max_attempts=1)
    started = time.monotonic()
    with pytest.raises(WaitTimeout) as e:
        job.wait(timeout=1.0)
    waited = time.monotonic() - started
    assert 0.9 <= waited < 10, waited
    assert isinstance(e.value, TimeoutError)
    assert e.value.job["id"] == job.id
    assert job.refresh().status not in {"SUCCESS", "ERROR", "TIMEOUT", "CANCELLED"}
    job.cancel()


@server
def test_submit_with_files(client, tmp_path):
    path = tmp_path / "words.txt"
    path.write_text(TEXT)
    job = client.submit("py.wordcount", files={"inputs": str(path)})
    assert job.wait(timeout=BOUND).result() == {"lines": 4, "words": 9}
    assert job.data["files"]["inputs"][0]["name"] == "words.txt"
    assert job.file("inputs", 0) == TEXT.encode()
    assert json.loads(job.file("outputs", 0)) == {"lines": 4, "words": 9}
    # bytes and (name, content) tuples too
    other = client.submit("py.wordcount", files={"inputs": [("a.txt", b"one two\nthree\n")]})
    assert other.wait(timeout=BOUND).result() == {"lines": 2, "words": 3}


@server
def test_events_yield_the_jobs_statuses_in_order(client):
    job = client.submit("py.wordcount", files={"inputs": TEXT.encode()})
    events = list(job.events(timeout=BOUND))
    statuses = [e["runyard_status"] for e in events if e["type"] == "status"]
    assert statuses[-1] == "SUCCESS", events
    assert in_order(statuses, ["QUEUED", "RUNNING", "SUCCESS"]), statuses
    assert all(e["job_id"] == job.id for e in events)
    # An event id is an opaque cursor (docs/api.md): increasing integers on the embedded store,
    # stream ids such as "1796497418608-0" on Redis. Its order is what the cursor gives back.
    ids = [e["id"] for e in events]
    assert all(isinstance(i, str) and i for i in ids) and len(set(ids)) == len(ids), ids
    assert any(e["type"] == "progress" and e["progress"] > 0 for e in events), events
    assert job.status == "SUCCESS"
    # From a cursor: only what came after it, in the same order.
    for start in sorted({0, len(events) // 2, len(events) - 2}):
        later = list(job.events(last_id=ids[start], timeout=BOUND))
        assert [e["id"] for e in later] == ids[start + 1 :], (start, ids)


@server
def test_events_after_a_retry_go_on_to_the_new_attempts_end(client):
    job = client.submit("py.fail", max_attempts=1)
    with pytest.raises(JobFailed):
        job.wait(timeout=BOUND)
    job.retry()
    # From the oldest event: attempt 1's ERROR is history, the iteration ends at attempt 2's.
    events = list(job.events(timeout=BOUND))
    ends = [(e["runyard_status"], e["attempt"]) for e in events if e["type"] == "status" and e["runyard_status"] == "ERROR"]
    assert ends == [("ERROR", 1), ("ERROR", 2)], events
    assert events[-1]["runyard_status"] == "ERROR" and events[-1]["attempt"] == 2, events
    assert job.status == "ERROR" and job.data["attempt"] == 2, job.data

    async def again():
        async with AsyncClient(SERVER, token=TOKEN, timeout=10) as c:
            j = await c.job(job.id)
            await j.retry()
            return [(e["runyard_status"], e["attempt"]) async for e in j.events(timeout=BOUND) if e["type"] == "status"]

    statuses = run(again())
    assert [s for s in statuses if s[0] == "ERROR"] == [("ERROR", 1), ("ERROR", 2), ("ERROR", 3)], statuses
    assert statuses[-1] == ("ERROR", 3), statuses


@server
def test_a_bad_submit_raises_api_error(client):
    with pytest.raises(ApiError) as e:
        client.submit("py.no_such_type")
    assert e.value.status == 422 and e.value.code == "unknown_type"
    assert "py.no_such_type" in e.value.message
    with pytest.raises(ApiError) as e:
        client.submit("py.hello", max_attempts=0)
    assert e.value.status == 422 and "max_attempts" in e.value.message
    with pytest.raises(NotFound) as e:
        client.job(str(uuid.uuid4()))
    assert e.value.status == 404


@server
def test_signal(client):
    key = f"py.client.{uuid.uuid4().hex[:8]}"
    first = client.signal(key, {"rows": 3}, id="load-1")
    again = client.signal(key, {"rows": 3}, id="load-1")
    assert first["key"] == key and first["seq"] == again["seq"] == 1
    # Ids `job:` + a job id are the records a job's `emits` writes: refused, nothing written.
    with pytest.raises(ApiError) as e:
        client.signal(key, {"rows": 4}, id="job:" + str(uuid.uuid4()))
    assert e.value.status == 422 and "`job:`" in e.value.message
    # So is a key of white space only.
    with pytest.raises(ApiError) as e:
        client.signal(" ")
    assert e.value.status == 422 and "white space" in e.value.message


@server
def test_notify_false_leaves_out_the_types_default_webhook(client):
    # py.notified has a `[[notify.defaults]]` webhook (runyard-test.toml). notify=None (left out)
    # keeps it; notify=False is `"notify": null`, no webhook at all. None was the only value the
    # client sent as "leave it out", so a Python user could not opt out but through `extra`
    # (probe s53c F3).
    default = client.submit("py.notified")
    quiet = client.submit("py.notified", notify=False)
    batched = client.submit_batch([{"type": "py.notified", "notify": False}]).jobs[0]
    assert default.refresh().data["notify"]["url"] == "https://hooks.example.invalid/runyard"
    for job in (quiet, batched):
        data = job.refresh().data
        assert "notify" in data and data["notify"] is None, data


# ---------------------------------------------------------------------------------------------
# asyncio flavour, real server


@server
def test_async_flavour():
    async def main():
        async with AsyncClient(SERVER, token=TOKEN, timeout=10) as c:
            ok = await c.submit("py.hello", {"name": "async"})
            assert await ok.result(timeout=BOUND) == {"hello": "async"}
            assert ok.status == "SUCCESS"

            failed = await c.submit("py.fail", max_attempts=1)
            with pytest.raises(JobFailed):
                await failed.wait(timeout=BOUND)

            slow = await c.submit("py.sleep", {"seconds": 30}, timeout=1, max_attempts=1)
            with pytest.raises(JobTimedOut):
                await slow.wait(timeout=BOUND)

            cancelled = await c.submit("py.sleep", {"seconds": 30}, max_attempts=1)
            with pytest.raises(WaitTimeout):
                await cancelled.wait(timeout=0.5)
            await cancelled.cancel()
            with pytest.raises(JobCancelled):
                await cancelled.wait(timeout=BOUND)

            counted = await c.submit("py.wordcount", files={"inputs": ("t.txt", TEXT.encode(), "text/plain")})
            statuses = [e["runyard_status"] async for e in counted.events(timeout=BOUND) if e["type"] == "status"]
            assert in_order(statuses, ["QUEUED", "RUNNING", "SUCCESS"]) and statuses[-1] == "SUCCESS", statuses
            assert await counted.result() == {"lines": 4, "words": 9}
            assert await counted.file("inputs") == TEXT.encode()

            with pytest.raises(ApiError) as e:
                await c.submit("py.no_such_type")
            assert e.value.status == 422
            assert ok.id in [j.id for j in await c.jobs(type="py.hello", limit=100)]
            assert (await c.job(ok.id)).status == "SUCCESS"
            assert (await c.signal(f"py.async.{uuid.uuid4().hex[:8]}"))["seq"] == 1

    run(main())


# ---------------------------------------------------------------------------------------------
# No runyard needed: small local servers that drop the stream, check headers, refuse.

JOB_ID = "0190a0a0-0000-7000-8000-000000000001"


class Fake(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), FakeHandler)
        self.seen = []  # (path, headers)
        self.status = "RUNNING"
        self.refuse = None  # (status, body) answered to everything
        self.job_reads = None  # how many reads of the job find it (None: all); then 404, it is gone
        self.silent = False  # the event stream sends keep-alives only, as for a job that is gone

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


def event(i, status):
    return {"id": str(i), "job_id": JOB_ID, "type": "status", "runyard_status": status, "status": "x"}


class FakeHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        fake = self.server
        fake.seen.append((self.path, dict(self.headers)))
        if fake.refuse:
            return self.answer(*fake.refuse)
        if self.path.startswith("/async/jobs/"):
            if fake.job_reads is not None:
                if fake.job_reads <= 0:
                    return self.answer(404, {"error": {"code": "not_found", "message": "job not found"}})
                fake.job_reads -= 1
            return self.answer(200, {"id": JOB_ID, "status": fake.status, "channel_id": JOB_ID, "result": 7})
        if self.path.startswith("/async/events/sse") and fake.silent:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                for _ in range(300):  # 30 s at most; the client hangs up before
                    self.wfile.write(b": keep-alive\n\n")
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                pass
            return
        if self.path.startswith("/async/events/sse"):
            # First connection: one event, then the connection drops mid-stream. Later ones:
            # the rest, from Last-Event-ID.
            last = self.headers.get("Last-Event-ID")
            events = [event(1, "QUEUED"), event(2, "RUNNING"), event(3, "SUCCESS")]
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            if last is None:
                self.wfile.write(f"id: 1\ndata: {json.dumps(events[0])}\n\n: keep-alive\n\n".encode())
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            fake.status = "SUCCESS"
            for ev in events[int(last) :]:
                self.wfile.write(f"id: {ev['id']}\ndata: {json.dumps(ev)}\n\n".encode())
            self.wfile.flush()
            return
        self.answer(404, {"error": {"code": "not_found", "message": "no route"}})


@pytest.fixture
def fake():
    f = Fake()
    threading.Thread(target=f.serve_forever, daemon=True).start()
    yield f
    f.shutdown()
    f.server_close()


def test_events_reconnect_from_the_last_event_id(fake):
    with Client(fake.url, token="s3cret-token", timeout=5) as c:
        job = c.job(JOB_ID)
        ids = [e["id"] for e in job.events(timeout=20)]
        assert ids == ["1", "2", "3"]  # no gap, no duplicate across the dropped connection
        assert job.status == "SUCCESS"
    streams = [h for p, h in fake.seen if p.startswith("/async/events/sse")]
    assert len(streams) == 2, fake.seen
    assert "Last-Event-ID" not in streams[0] and streams[1]["Last-Event-ID"] == "1"
    assert all(h["Authorization"] == "Bearer s3cret-token" for _, h in fake.seen)
    assert all("s3cret" not in p for p, _ in fake.seen), "the token never goes in a URL"


def test_async_events_reconnect_from_the_last_event_id(fake):
    async def main():
        async with AsyncClient(fake.url, timeout=5) as c:
            job = await c.job(JOB_ID)
            return [e["id"] async for e in job.events(timeout=20)], await job.result()

    assert run(main()) == (["1", "2", "3"], 7)
    streams = [h for p, h in fake.seen if p.startswith("/async/events/sse")]
    assert [h.get("Last-Event-ID") for h in streams] == [None, "1"]
    assert all("Authorization" not in h for _, h in fake.seen), "no token, no header"


@pytest.mark.parametrize("flavour", ["sync", "asyncio"])
def test_waiting_for_a_job_that_is_gone_raises_not_found(fake, monkeypatch, flavour):
    # The job is found, then gone (retention, a Redis that lost its data) while its events are
    # followed: the stream only keeps alive. The job is read again while following: NotFound,
    # not a wait without end (nor a WaitTimeout saying it is still RUNNING).
    monkeypatch.setattr(api_requests, "REREAD_INTERVAL", 0.3)
    fake.silent = True
    fake.job_reads = 2  # job() and wait()'s first read find it

    if flavour == "sync":
        with Client(fake.url, timeout=5) as c:
            job = c.job(JOB_ID)
            with pytest.raises(NotFound) as e:
                job.wait(timeout=20)
    else:

        async def main():
            async with AsyncClient(fake.url, timeout=5) as c:
                job = await c.job(JOB_ID)
                await job.wait(timeout=20)

        with pytest.raises(NotFound) as e:
            run(main())
    assert e.value.status == 404 and e.value.message == "job not found"


def test_following_the_events_of_a_job_that_is_gone_raises_not_found(fake, monkeypatch):
    monkeypatch.setattr(api_requests, "REREAD_INTERVAL", 0.3)
    fake.silent = True
    fake.job_reads = 1
    with Client(fake.url, timeout=5) as c:
        job = c.job(JOB_ID)
        with pytest.raises(NotFound):
            for _ in job.events(timeout=20):
                pass


@pytest.mark.parametrize("status,kind", [(401, Unauthorized), (403, Forbidden), (404, NotFound), (500, ApiError)])
def test_error_answers_are_typed(fake, status, kind):
    fake.refuse = (status, {"error": {"code": f"c{status}", "message": f"m{status}"}})
    with Client(fake.url, token="tok-XYZ") as c:
        with pytest.raises(kind) as e:
            c.job(JOB_ID)
    assert (e.value.status, e.value.code, e.value.message) == (status, f"c{status}", f"m{status}")
    assert "tok-XYZ" not in repr(c) and "tok-XYZ" not in str(e.value)


def test_the_keys_dot_and_dot_dot_are_refused_before_sending(fake):
    # A URL resolves a `.` or `..` path segment (also `%2E`): `signal("..")` was `POST /async`,
    # a 404. The server refuses these keys (422); the client says so without asking.
    async def main(key):
        async with AsyncClient(fake.url, timeout=5) as c:
            await c.signal(key)

    for key in (".", ".."):
        with Client(fake.url, timeout=5) as c:
            with pytest.raises(ValueError, match=r"`\.` or `\.\.`"):
                c.signal(key)
        with pytest.raises(ValueError, match=r"`\.` or `\.\.`"):
            run(main(key))
    assert fake.seen == []


def test_file_properties_the_server_refuses_are_refused_before_sending(fake):
    # `GET /async/jobs/{id}/files/../0` resolves to `/async/jobs/{id}/0`: another route.
    async def main(prop):
        async with AsyncClient(fake.url, timeout=5) as c:
            await AsyncJob(c, {"id": JOB_ID}).file(prop)

    for prop in (".", "..", "", "a/b", "p" * 65):
        with Client(fake.url, timeout=5) as c:
            with pytest.raises(ValueError, match="nothing sent"):
                Job(c, {"id": JOB_ID}).file(prop)
        with pytest.raises(ValueError, match="nothing sent"):
            run(main(prop))
    assert fake.seen == []


def test_an_unreachable_server_raises_server_unreachable():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with Client(f"http://127.0.0.1:{port}", timeout=2) as c:
        with pytest.raises(ServerUnreachable):
            c.submit("py.hello")


def test_submit_body_fields():
    import datetime as dt

    from runyard_job.api import submit_body

    body = submit_body(
        "report.daily",
        {"day": 1},
        wait_for=["src.orders:3", "src.stock", {"key": "k", "since": "18:00"}],
        deadline=dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.timezone.utc),
        on_deadline="skip",
        timeout=dt.timedelta(minutes=2),
        notify={"url": "https://example.invalid/hook", "events": ["terminal"]},
    )
    assert body == {
        "type": "report.daily",
        "args": {"day": 1},
        "wait_for": [{"key": "src.orders", "count": 3}, {"key": "src.stock"}, {"key": "k", "since": "18:00"}],
        "deadline": "2030-01-01T12:00:00Z",
        "on_deadline": "skip",
        "timeout": 120.0,
        "notify": {"url": "https://example.invalid/hook", "events": ["terminal"]},
    }
    before = dt.datetime.now(dt.timezone.utc)
    run_at = dt.datetime.fromisoformat(submit_body("t", delay=60)["run_at"].replace("Z", "+00:00"))
    assert dt.timedelta(seconds=59) <= run_at - before <= dt.timedelta(seconds=70)
    assert "args" not in submit_body("t") and submit_body("t", timeout="10m")["timeout"] == "10m"
    with pytest.raises(ValueError):
        submit_body("t", delay=1, run_at="2030-01-01T00:00:00Z")
    # notify: None leaves it out (the type's default), False sends null (no webhook at all).
    assert "notify" not in submit_body("t") and submit_body("t", notify=False) == {"type": "t", "notify": None}
    with pytest.raises(TypeError, match="notify"):
        submit_body("t", notify=True)
