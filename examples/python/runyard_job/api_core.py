"""The submit client's one request layer, written once for both flavours (the sans-IO pattern).

Every operation of ``Client`` and ``AsyncClient`` is a generator here that *yields commands*
(``Call`` a request, ``Open`` the event stream, read its ``NEXT_LINE``, ``CLOSE`` it, ``Sleep``,
``Emit`` an event to the caller) and is *sent the answers*. It builds each request, interprets
each answer (status -> the typed errors of ``api_errors.py``) and decides what comes next
(paging, reconnecting, polling); it does no I/O. The transports in ``api.py`` are thin: the
synchronous one performs a command with ``httpx.Client`` and ``time.sleep``, the asyncio one
with ``httpx.AsyncClient`` and ``asyncio.sleep``; both send the same ``Authorization`` header on
every request and turn a request that got no answer into ``ServerUnreachable`` (thrown into the
operation, which may catch it: the event stream reconnects).
"""

from __future__ import annotations

import enum
import json
from typing import IO, Any, Dict, Generator, List, Optional, Tuple, TypeVar, Union

import httpx

from .api_errors import OUTCOME_ERRORS, ApiError
from .api_requests import _jobs_query, _segment, file_parts, file_segment, Files, signal_segment

T = TypeVar("T")


class Call:
    """One ordinary request; answered with the ``httpx.Response``, its body read."""

    __slots__ = ("method", "path", "params", "json", "files", "timeout")

    def __init__(
        self,
        method: str,
        path: str,
        *,
        params: Optional[Dict[str, Any]] = None,
        json: Any = None,
        files: Optional[List[Tuple[str, Tuple[Any, ...]]]] = None,
        timeout: Optional[float] = None,
    ):
        self.method = method
        self.path = path
        self.params = params
        self.json = json
        self.files = files
        #: Seconds this request may take, when shorter than the client's ``timeout``.
        self.timeout = timeout

    def kwargs(self) -> Dict[str, Any]:
        """httpx's keyword arguments for this request (those set)."""
        return {k: getattr(self, k) for k in ("params", "json", "files", "timeout") if getattr(self, k) is not None}


class Open:
    """Opens a stream (closing one still open); answered with the ``httpx.Response``, whose body
    is read when the status is 400 or more. ``read_timeout``: the longest silence accepted."""

    __slots__ = ("call", "headers", "read_timeout")

    def __init__(self, call: Call, headers: Dict[str, Union[str, bytes]], read_timeout: float):
        self.call = call
        self.headers = headers
        self.read_timeout = read_timeout


class StreamStep(enum.Enum):
    """Commands on the open stream: ``NEXT_LINE`` is answered with the next line, or ``None`` when
    the server closed the stream; ``CLOSE`` closes it (nothing when none is open), answered ``None``."""

    NEXT_LINE = "next line"
    CLOSE = "close"


NEXT_LINE = StreamStep.NEXT_LINE
CLOSE = StreamStep.CLOSE


class Sleep:
    """Pauses ``seconds``; answered with ``None``."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float):
        self.seconds = seconds


class Emit:
    """Hands ``event`` to whoever iterates over the operation (``events()``); answered with ``None``."""

    __slots__ = ("event",)

    def __init__(self, event: Dict[str, Any]):
        self.event = event


#: An operation: yields commands, is sent their answers, returns its value.
Op = Generator[Any, Any, T]


# ---------------------------------------------------------------------------------------------
# Answers


def check(response: httpx.Response) -> None:
    """Raises the typed ``ApiError`` of a 4xx/5xx answer (its body read)."""
    if response.status_code >= 400:
        raise ApiError.from_response(response.status_code, response.reason_phrase, response.text)


def call(method: str, path: str, **kwargs: Any) -> Op[httpx.Response]:
    """One request; returns its answer when it is a success, else raises its ``ApiError``."""
    response = yield Call(method, path, **kwargs)
    check(response)
    return response


def call_json(method: str, path: str, **kwargs: Any) -> Op[Any]:
    """One request; returns its JSON answer."""
    response = yield from call(method, path, **kwargs)
    return response.json()


def job_from_submit(answer: Dict[str, Any]) -> Dict[str, Any]:
    """``202 {job_id, channel_id, status, result_url}`` -> the start of a job dict."""
    data = dict(answer)
    data["id"] = answer.get("job_id") or answer.get("id")
    return data


def outcome(job: Dict[str, Any]) -> None:
    """Raises ``JobFailed`` / ``JobTimedOut`` / ``JobCancelled`` for a job that ended so."""
    kind = OUTCOME_ERRORS.get(str(job.get("status")))
    if kind is not None:
        raise kind(job)


def job_path(job_id: str, *rest: str) -> str:
    return "/".join([f"/async/jobs/{_segment(job_id)}", *(_segment(r) for r in rest)])


# ---------------------------------------------------------------------------------------------
# Operations (``job`` is a ``Job`` or ``AsyncJob``: its ``data`` is replaced by what is read)


def submit(body: Dict[str, Any], files: Optional[Files]) -> Op[Dict[str, Any]]:
    """``POST /async/jobs``: JSON, or multipart (a ``job`` part, then the files) with ``files``."""
    if not files:
        return job_from_submit((yield from call_json("POST", "/async/jobs", json=body)))
    opened: List[IO[bytes]] = []
    try:
        parts: List[Tuple[str, Tuple[Any, ...]]] = [("job", (None, json.dumps(body), "application/json"))]
        parts += file_parts(files, opened)
        return job_from_submit((yield from call_json("POST", "/async/jobs", files=parts)))
    finally:
        for f in opened:
            f.close()


def get_job(job_id: str) -> Op[Dict[str, Any]]:
    return (yield from call_json("GET", job_path(job_id)))


def refresh(job: Any) -> Op[None]:
    job.data = yield from get_job(job.id)


def act(job: Any, action: str) -> Op[None]:
    """``POST /async/jobs/{id}/cancel`` or ``/retry``."""
    job.data = yield from call_json("POST", job_path(job.id, action), json={})


def list_jobs(status: Optional[str], type: Optional[str], limit: int) -> Op[List[Dict[str, Any]]]:
    """Up to ``limit`` jobs, newest first, following ``next_cursor`` while the server gives one: a
    filtered page may be short, even empty, with matching jobs after it (docs/api.md)."""
    found: List[Dict[str, Any]] = []
    cursor = None
    while len(found) < limit:
        page = yield from call_json("GET", "/async/jobs", params=_jobs_query(status, type, limit - len(found), cursor))
        found += page.get("jobs") or []
        following = page.get("next_cursor")
        if not following or following == cursor:
            break
        cursor = following
    return found[:limit]


def logs(job_id: str, after: int) -> Op[List[Dict[str, Any]]]:
    """Every log line after ``after``, page by page."""
    lines: List[Dict[str, Any]] = []
    while True:
        page = yield from call_json("GET", job_path(job_id, "logs"), params={"after": after, "limit": 1000})
        batch = page.get("lines") or []
        lines.extend(batch)
        if not batch:
            return lines
        after = int(page.get("next") or after)


def file(job_id: str, property: str, index: int) -> Op[bytes]:
    response = yield from call("GET", job_path(job_id, "files", file_segment("property", property), str(int(index))))
    return response.content


def signal(key: str, payload: Any, id: Optional[str]) -> Op[Dict[str, Any]]:
    path = f"/async/signals/{signal_segment(key)}"  # `.` and `..`: ValueError, nothing sent
    body: Dict[str, Any] = {}
    if payload is not None:
        body["payload"] = payload
    if id is not None:
        body["id"] = id
    return (yield from call_json("POST", path, json=body))
