"""Following a job, written once for both flavours: the event stream (Server-Sent Events,
reconnecting from the last event id), and ``wait()`` on top of it (or reading the job every half
second when the server refuses the stream to this token). Operations of the request layer
(``api_core.py``): they yield commands and do no I/O.
"""

from __future__ import annotations

import json
import time
from typing import Any, Dict, Optional, Union

import httpx

from . import api_core as core
from .api_core import CLOSE, NEXT_LINE, Call, Emit, Op, Open, Sleep, check, outcome
from .api_errors import ApiError, EventsMissing, NotFound, ServerUnreachable, WaitTimeout
from . import api_requests, sse
from .api_requests import POLL_INTERVAL, RECONNECT_DELAYS, RECONNECT_GIVE_UP, STREAM_REFUSED, TERMINAL

#: Stream answers worth reconnecting for, like a dropped connection.
RETRY_STATUSES = (502, 503, 504)


class _Retryable(Exception):
    """The event stream answered 502/503/504: worth reconnecting, like a dropped connection."""


class _Pacing:
    """The pauses between the tries of one kind of request (the event stream, or the job's
    reads), and since when they fail. Each kind has its own: a job read that went through reset
    the stream's count too, so a stream answering 502 for ever never raised ``ServerUnreachable``
    (review of session 54, finding 6)."""

    def __init__(self, url: str):
        self.url = url
        self.delay = RECONNECT_DELAYS[0]
        self.failing_since: Optional[float] = None

    def answered(self) -> None:
        """The server answered: the next failure starts a new count."""
        self.failing_since = None

    def went_through(self) -> None:
        """A request did what it was for: the next pause starts again from the least."""
        self.delay = RECONNECT_DELAYS[0]
        self.failing_since = None

    def pause(self) -> float:
        """The next pause (doubling up to its bound), with no count of failures."""
        pause = self.delay
        self.delay = min(self.delay * 2, RECONNECT_DELAYS[1])
        return pause

    def failed(self, error: BaseException) -> float:
        """A failure: the next pause, or raise when failures have lasted too long."""
        now = time.monotonic()
        if self.failing_since is None:
            self.failing_since = now
        elif now - self.failing_since > RECONNECT_GIVE_UP:
            raise ServerUnreachable(self.url, error)
        return self.pause()


class _Follow:
    """The state of following one job's events: cursor, deadline, reconnect pacing."""

    def __init__(self, url: str, job_id: str, last_id: Optional[str], timeout: Optional[float]):
        self.url = url
        self.job_id = job_id
        self.last_id = last_id
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.stream = _Pacing(url)
        self.reads = _Pacing(url)
        #: A read of the job that finds it ended ends the follow (``wait()``); ``events()``
        #: reads on to the job's final event.
        self.read_ends = False
        #: When a read found the job ended while ``events()`` had not yet had its final event.
        self.ended_at: Optional[float] = None
        #: The connection being read delivered a message (else the reconnect waits a pause).
        self.delivered = False
        #: The job was read during this follow (its ``data`` is not older than the follow).
        self.read = False
        #: When the job was last read or an event of it came (or the follow began):
        #: ``_still_there`` reads it again ``REREAD_INTERVAL`` later.
        self.heard_at = time.monotonic()

    def remaining(self) -> Optional[float]:
        if self.deadline is None:
            return None
        return self.deadline - time.monotonic()

    def expired(self) -> bool:
        left = self.remaining()
        return left is not None and left <= 0

    def read_timeout(self) -> float:
        idle = api_requests.STREAM_IDLE
        left = self.remaining()
        if self.ended_at is not None:
            end_left = self.ended_at + idle - time.monotonic()
            left = end_left if left is None else min(left, end_left)
        return idle if left is None else max(0.01, min(idle, left))

    def end_missing(self, job: Any) -> None:
        """Raises ``EventsMissing`` when the job was read ended ``STREAM_IDLE`` ago and its final
        event has not come since: ``events()`` says so rather than end as if it had."""
        if self.ended_at is not None and time.monotonic() - self.ended_at >= api_requests.STREAM_IDLE:
            raise EventsMissing(dict(job.data), self.last_id)

    def headers(self) -> Dict[str, Union[str, bytes]]:
        headers: Dict[str, Union[str, bytes]] = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        last_id = sse.last_event_id(self.last_id)
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        return headers

    def bounded(self, pause: float) -> float:
        """A pause cut to what is left of the deadline."""
        left = self.remaining()
        return pause if left is None else max(0.0, min(pause, left))

    def event(self, data: str) -> Optional[Dict[str, Any]]:
        """One SSE message's data -> the event when it concerns this job (or is a resync), else None."""
        try:
            event = json.loads(data)
        except ValueError:
            return None
        if not isinstance(event, dict):
            return None
        if event.get("type") == "resync" or event.get("job_id") == self.job_id:
            return event
        return None


def apply(data: Dict[str, Any], event: Dict[str, Any]) -> bool:
    """Updates a job dict from one of its events; True when the event says the job ended. A
    ``runyard_status`` that is no string is no status (a list raised TypeError: unhashable)."""
    status = event.get("runyard_status")
    status = status if isinstance(status, str) and status else None
    if event.get("type") == "status" and status is not None:
        data["status"] = status
    if event.get("progress") is not None:
        data["progress"] = event["progress"]
    if event.get("attempt") is not None:
        data["attempt"] = event["attempt"]
    return event.get("type") == "status" and status in TERMINAL


# ---------------------------------------------------------------------------------------------
# Operations (``job`` is a ``Job`` or ``AsyncJob``)


def follower(job: Any, last_id: Optional[str], timeout: Optional[float]) -> _Follow:
    return _Follow(job._client.url, job.id, last_id, timeout)


def _stream(command: Any) -> Op[Any]:
    """One stream command; a connection that failed is answered (not raised) as ``ServerUnreachable``."""
    try:
        return (yield command)
    except ServerUnreachable as e:
        return e


def _pause(state: _Follow, error: ServerUnreachable) -> Op[None]:
    """After a dropped connection: the reconnect pause (none after mere silence)."""
    if not isinstance(error.cause, httpx.ReadTimeout):
        # Silence past the bound (or the caller's deadline) is no failure: the loop checks it.
        yield Sleep(state.bounded(state.stream.failed(error.cause)))


def follow(job: Any, state: _Follow) -> Op[None]:
    """Emits the job's events, oldest first, until its terminal status, or (``wait()``) until a
    read of the job while following finds it ended (``WaitTimeout`` at the deadline); reconnects
    from the last event id when the connection drops or the server closes it (e.g. shutting
    down). A refusal of the stream raises its ``ApiError``."""
    while True:
        if state.expired():
            raise WaitTimeout(dict(job.data), state.timeout)
        if (yield from _still_there(job, state)):
            return
        state.end_missing(job)
        call = Call("GET", "/async/events/sse", params={"channel": job.channel_id})
        response = yield from _stream(Open(call, state.headers(), state.read_timeout()))
        if isinstance(response, ServerUnreachable):
            yield CLOSE
            yield from _pause(state, response)
            continue
        if response.status_code >= 400:
            yield CLOSE
            if response.status_code in RETRY_STATUSES:
                yield Sleep(state.bounded(state.stream.failed(_Retryable(response.status_code))))
                continue
            check(response)
        state.stream.answered()
        ended = yield from _read(job, state)
        yield CLOSE
        if isinstance(ended, ServerUnreachable):
            yield from _pause(state, ended)
        elif ended:
            return
        elif not state.delivered:
            # Closed without a message (a proxy that answers 200 and closes, a server draining):
            # reconnecting at once made a loop as fast as the network (review of session 54,
            # finding 5). The pause doubles up to its bound, as the CLI's does.
            yield Sleep(state.bounded(state.stream.pause()))


def _read(job: Any, state: _Follow) -> Op[Any]:
    """One connection's events: True when the job ended (its event said so, or a read of it),
    False when the server closed the stream first, the ``ServerUnreachable`` when the
    connection dropped."""
    parser = sse.Parser(state.last_id)
    state.delivered = False
    while True:
        line = yield from _stream(NEXT_LINE)
        if line is None or isinstance(line, ServerUnreachable):
            return False if line is None else line
        message = parser.feed(line)
        # The stream's last id, by the standard's rules (an empty one clears it: none is sent).
        state.last_id = parser.last_id or None
        if message is not None:
            state.delivered = True
            state.stream.went_through()
            event = state.event(message)
            if event is not None:
                state.heard_at = time.monotonic()
                ended = apply(job.data, event)
                yield Emit(event)
                if event.get("type") == "resync":
                    yield from _refresh(job, state)
                    ended = job.done
                elif ended:
                    ended = yield from _is_end(job, state, event)
                if ended:
                    return True
        if state.expired():
            raise WaitTimeout(dict(job.data), state.timeout)
        if (yield from _still_there(job, state)):
            return True
        state.end_missing(job)


def _still_there(job: Any, state: _Follow) -> Op[bool]:
    """Reads the job again once ``REREAD_INTERVAL`` has passed without a read of it or an event
    of it: raises ``NotFound`` when it is gone (the stream would stay silent about it for ever).
    A job that has ended ends ``wait()`` (True: a stream held silent by a proxy, headers and
    then nothing, never says so: ``wait()`` stored SUCCESS and went on waiting, probe s54b F12);
    ``events()`` goes on (reconnecting from the last event id) to read the events it has not had
    yet, its final one among them: ended there, it lost those of a gap in the stream (a server
    restart, a network drop) in which the job ended (review of session 54, finding 4). A server
    error is no answer: the job is read again at the next interval."""
    if state.ended_at is not None:
        return False
    if time.monotonic() - state.heard_at < api_requests.REREAD_INTERVAL:
        return False
    try:
        yield from _refresh(job, state)
    except ApiError as e:
        if e.status < 500:
            raise
        state.heard_at = time.monotonic()
        return False
    if job.done and not state.read_ends:
        state.ended_at = time.monotonic()
        return False
    return bool(job.done)


def _is_end(job: Any, state: _Follow, event: Dict[str, Any]) -> Op[bool]:
    """Whether a terminal status event is the job's end, not an earlier attempt's replayed from
    history (the job was retried since: ``retry()`` then ``events()``). The job's ``finished_at``
    is the time of the write that ended it, and its terminal event carries that same time: equal
    to the job as read during this follow, it is the end; else the job is read again. Without
    the times (another server), the job read says. A job deleted meanwhile has ended."""
    ts = event.get("ts")
    if ts is not None and state.read and job.data.get("finished_at") == ts:
        return True
    try:
        yield from _refresh(job, state)
    except NotFound:
        return True
    finished = job.data.get("finished_at")
    return job.done and (ts is None or finished is None or finished == ts)


def _poll(job: Any, state: _Follow) -> Op[None]:
    while True:
        yield from _refresh(job, state)
        if job.done:
            return
        if state.expired():
            raise WaitTimeout(dict(job.data), state.timeout)
        left = state.remaining()
        yield Sleep(POLL_INTERVAL if left is None else max(0.0, min(POLL_INTERVAL, left)))


#: The shortest bound of a wait's first read of the job: ``wait(timeout=0)`` still reads it once.
FIRST_READ_MIN = 1.0


def _refresh(job: Any, state: _Follow, first: bool = False) -> Op[None]:
    """Reads the job for ``wait()``: each read bounded by what is left of the wait (the first by
    ``FIRST_READ_MIN`` at least), ``WaitTimeout`` at its deadline, a server that does not answer
    read again with the reconnect pacing (``ServerUnreachable`` once it has failed for
    ``RECONNECT_GIVE_UP``), as the event stream is. Once the job is known to have ended, only the
    client's timeout bounds the read of its final state."""
    while True:
        left = None if job.done else state.remaining()
        if left is not None and left <= 0 and not first:
            raise WaitTimeout(dict(job.data), state.timeout)
        bound = None if left is None else max(left, FIRST_READ_MIN) if first else max(0.01, left)
        try:
            job.data = yield from core.call_json("GET", core.job_path(job.id), timeout=bound)
        except ServerUnreachable as e:
            first = False
            yield Sleep(state.bounded(state.reads.failed(e.cause)))
            continue
        state.reads.went_through()
        state.read = True
        state.heard_at = time.monotonic()
        return


def wait(job: Any, timeout: Optional[float]) -> Op[None]:
    """Follows the job until it ends, then raises its outcome unless ``SUCCESS``."""
    state = follower(job, None, timeout)
    state.read_ends = True
    yield from _refresh(job, state, first=True)
    while not job.done:
        try:
            # Ends at the job's own end, which it has read (``_is_end``).
            yield from follow(job, state)
        except ApiError as e:
            # A job gone (``_still_there``) is a 404 too: the read of ``_poll`` raises it.
            if e.status not in STREAM_REFUSED:
                raise
            yield from _poll(job, state)
    outcome(job.data)


def result(job: Any, timeout: Optional[float]) -> Op[Any]:
    """The job's result, waiting for it to end first."""
    if not job.done or "result" not in job.data:
        yield from wait(job, timeout)
    outcome(job.data)
    return job.data.get("result")
