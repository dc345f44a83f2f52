"""Client and AsyncClient: submit jobs to runyard and follow them, from any Python service.

``Client`` is synchronous, ``AsyncClient`` the asyncio flavour with the same methods (awaited).
Both speak runyard's client API (``POST /async/jobs`` and friends, docs/api.md) over httpx, send
``Authorization: Bearer <token>`` when a token is given, and follow a job through the Server-Sent
Events stream (``GET /async/events/sse``), reconnecting from the last event id, never by polling
(unless the server refuses the stream to this token: then ``wait()`` reads the job every half
second).

    from runyard_job import Client

    with Client("http://127.0.0.1:7070", token="...") as runyard:
        job = runyard.submit("report.daily", {"day": "2026-11-30"}, files={"inputs": "data.csv"})
        job.wait(timeout=600)          # raises JobFailed / JobTimedOut / JobCancelled / WaitTimeout
        print(job.result())
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import mimetypes
import os
import time
from typing import (
    IO,
    Any,
    AsyncIterator,
    Dict,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)
from urllib.parse import quote

import httpx

from .api_errors import (
    OUTCOME_ERRORS,
    ApiError,
    ServerUnreachable,
    WaitTimeout,
)

#: Statuses a job never leaves (except through an explicit retry).
TERMINAL = frozenset({"SUCCESS", "ERROR", "TIMEOUT", "CANCELLED"})
#: Seconds per ordinary request.
DEFAULT_TIMEOUT = 30.0
#: Longest silence accepted on the event stream before reconnecting (the server sends a
#: keep-alive comment every 15 s).
STREAM_IDLE = 45.0
#: Pause between reconnects of the event stream: doubles from the first to the last value.
RECONNECT_DELAYS = (0.1, 2.0)
#: How long the event stream may stay unreachable before ``ServerUnreachable`` is raised.
RECONNECT_GIVE_UP = 60.0
#: Stream answers that mean "not for this token / not here": ``wait()`` then reads the job instead.
STREAM_REFUSED = (403, 404, 405)
POLL_INTERVAL = 0.5

#: A file for ``submit(files=...)``: a path, bytes, an open binary file, or
#: ``(name, content)`` / ``(name, content, mimetype)`` with content bytes or an open file.
FileSpec = Union[str, "os.PathLike[str]", bytes, IO[bytes], Tuple[Any, ...]]
Files = Mapping[str, Union[FileSpec, Sequence[FileSpec]]]
Seconds = Union[int, float, _dt.timedelta]
When = Union[str, _dt.datetime]


# ---------------------------------------------------------------------------------------------
# Pure helpers shared by both flavours


def _rfc3339(value: When) -> str:
    if isinstance(value, str):
        return value
    # A naive datetime is local time, as Python's own astimezone() takes it.
    return value.astimezone(_dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _seconds(value: Seconds) -> float:
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    return float(value)


def _wait_item(item: Union[str, Mapping[str, Any]]) -> Dict[str, Any]:
    """``"key"`` or ``"key:3"`` -> ``{"key", "count"}``; a mapping passes as it is."""
    if isinstance(item, str):
        key, sep, count = item.rpartition(":")
        if sep and count.isdigit() and key:
            return {"key": key, "count": int(count)}
        return {"key": item}
    return dict(item)


def submit_body(
    type: str,
    args: Any = None,
    *,
    wait_for: Optional[Sequence[Union[str, Mapping[str, Any]]]] = None,
    deadline: Optional[When] = None,
    on_deadline: Optional[str] = None,
    idempotency_key: Optional[str] = None,
    channel: Optional[str] = None,
    notify: Optional[Mapping[str, Any]] = None,
    delay: Optional[Seconds] = None,
    run_at: Optional[When] = None,
    timeout: Optional[Union[Seconds, str]] = None,
    max_attempts: Optional[int] = None,
    backoff: Optional[Mapping[str, Any]] = None,
    runner: Optional[str] = None,
    emits: Optional[Sequence[str]] = None,
    extra: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """The JSON body of ``POST /async/jobs`` (fields left ``None`` are not sent)."""
    if delay is not None and run_at is not None:
        raise ValueError("give `delay` or `run_at`, not both")
    body: Dict[str, Any] = {"type": type}
    if args is not None:
        body["args"] = args
    if delay is not None:
        run_at = _dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(seconds=_seconds(delay))
    if run_at is not None:
        body["run_at"] = _rfc3339(run_at)
    if timeout is not None:
        body["timeout"] = timeout if isinstance(timeout, str) else _seconds(timeout)
    if wait_for is not None:
        body["wait_for"] = [_wait_item(i) for i in wait_for]
    if deadline is not None:
        body["deadline"] = _rfc3339(deadline)
    for key, value in (
        ("on_deadline", on_deadline),
        ("idempotency_key", idempotency_key),
        ("channel", channel),
        ("notify", dict(notify) if notify is not None else None),
        ("max_attempts", max_attempts),
        ("backoff", dict(backoff) if backoff is not None else None),
        ("runner", runner),
        ("emits", list(emits) if emits is not None else None),
    ):
        if value is not None:
            body[key] = value
    if extra:
        body.update(extra)
    return body


def _file_part(prop: str, spec: FileSpec, opened: List[IO[bytes]]) -> Tuple[str, Tuple[Any, ...]]:
    if isinstance(spec, tuple):
        if len(spec) == 2:
            name, content = spec
            mimetype = mimetypes.guess_type(str(name))[0] or "application/octet-stream"
        elif len(spec) == 3:
            name, content, mimetype = spec
        else:
            raise ValueError(f"files[{prop!r}]: a tuple is (name, content) or (name, content, mimetype)")
        return prop, (str(name), content, mimetype)
    if isinstance(spec, (bytes, bytearray)):
        return prop, ("", bytes(spec), "application/octet-stream")
    if isinstance(spec, (str, os.PathLike)):
        path = os.fspath(spec)
        f = open(path, "rb")
        opened.append(f)
        mimetype = mimetypes.guess_type(path)[0] or "application/octet-stream"
        return prop, (os.path.basename(path), f, mimetype)
    if hasattr(spec, "read"):
        name = os.path.basename(str(getattr(spec, "name", "") or ""))
        mimetype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return prop, (name, spec, mimetype)
    raise TypeError(f"files[{prop!r}]: expected a path, bytes, a binary file or a tuple, got {type(spec).__name__}")


def file_parts(files: Files, opened: List[IO[bytes]]) -> List[Tuple[str, Tuple[Any, ...]]]:
    """httpx ``files=`` parts: one per file, named by property, in order (a list under a property
    is several files). Files opened here are appended to ``opened`` (the caller closes them)."""
    parts = []
    for prop, value in files.items():
        specs: List[Any] = value if isinstance(value, list) else [value]
        for spec in specs:
            parts.append(_file_part(prop, spec, opened))
    return parts


class _Retryable(Exception):
    """The event stream answered 502/503/504: worth reconnecting, like a dropped connection."""


def _check(response: httpx.Response) -> None:
    if response.status_code >= 400:
        raise ApiError.from_response(response.status_code, response.reason_phrase, response.text)


def _job_from_submit(answer: Dict[str, Any]) -> Dict[str, Any]:
    """``202 {job_id, channel_id, status, result_url}`` -> the start of a job dict."""
    data = dict(answer)
    data["id"] = answer.get("job_id") or answer.get("id")
    return data


def _outcome(job: Dict[str, Any]) -> None:
    kind = OUTCOME_ERRORS.get(str(job.get("status")))
    if kind is not None:
        raise kind(job)


def _headers(token: Optional[str]) -> Dict[str, str]:
    headers = {"Accept": "application/json", "User-Agent": "runyard-job-python"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


class _Sse:
    """A Server-Sent Events parser fed one line at a time (the WHATWG rules runyard needs:
    ``id``, ``data`` (joined by newlines), comments, dispatch on a blank line)."""

    def __init__(self) -> None:
        self.id: Optional[str] = None
        self.data: List[str] = []

    def feed(self, line: str) -> Optional[Tuple[Optional[str], str]]:
        if line == "":
            if not self.data:
                return None
            event = (self.id, "\n".join(self.data))
            self.data = []
            return event
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "data":
            self.data.append(value)
        elif field == "id" and "\0" not in value:
            self.id = value
        return None


class _Follow:
    """The state of following one job's events: cursor, deadline, reconnect pacing."""

    def __init__(self, job_id: str, last_id: Optional[str], timeout: Optional[float]):
        self.job_id = job_id
        self.last_id = last_id
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.delay = RECONNECT_DELAYS[0]
        self.failing_since: Optional[float] = None

    def remaining(self) -> Optional[float]:
        if self.deadline is None:
            return None
        return self.deadline - time.monotonic()

    def expired(self) -> bool:
        left = self.remaining()
        return left is not None and left <= 0

    def read_timeout(self) -> float:
        left = self.remaining()
        return STREAM_IDLE if left is None else max(0.01, min(STREAM_IDLE, left))

    def headers(self) -> Dict[str, str]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.last_id:
            headers["Last-Event-ID"] = self.last_id
        return headers

    def connected(self) -> None:
        self.delay = RECONNECT_DELAYS[0]
        self.failing_since = None

    def failed(self, url: str, error: BaseException) -> float:
        """A transport failure: how long to pause, or raise when it has lasted too long."""
        now = time.monotonic()
        if self.failing_since is None:
            self.failing_since = now
        elif now - self.failing_since > RECONNECT_GIVE_UP:
            raise ServerUnreachable(url, error)
        pause = self.delay
        self.delay = min(self.delay * 2, RECONNECT_DELAYS[1])
        left = self.remaining()
        return pause if left is None else max(0.0, min(pause, left))

    def event(self, sse: Tuple[Optional[str], str]) -> Optional[Dict[str, Any]]:
        """One SSE message -> the event when it concerns this job (or is a resync), else None."""
        ev_id, data = sse
        if ev_id:
            self.last_id = ev_id
        try:
            event = json.loads(data)
        except ValueError:
            return None
        if not isinstance(event, dict):
            return None
        if event.get("type") == "resync" or event.get("job_id") == self.job_id:
            return event
        return None


def _apply(data: Dict[str, Any], event: Dict[str, Any]) -> bool:
    """Updates a job dict from one of its events; True when the event says the job ended."""
    if event.get("type") == "status" and event.get("runyard_status"):
        data["status"] = event["runyard_status"]
    if event.get("progress") is not None:
        data["progress"] = event["progress"]
    if event.get("attempt") is not None:
        data["attempt"] = event["attempt"]
    return event.get("type") == "status" and event.get("runyard_status") in TERMINAL


def _jobs_query(status: Optional[str], type: Optional[str], limit: int, cursor: Optional[str]) -> Dict[str, Any]:
    params: Dict[str, Any] = {"limit": min(max(1, limit), 100)}
    if status:
        params["status"] = status
    if type:
        params["type"] = type
    if cursor:
        params["cursor"] = cursor
    return params


def _segment(value: str) -> str:
    return quote(str(value), safe="")


# ---------------------------------------------------------------------------------------------
# Synchronous flavour


class _JobView:
    """What both job flavours show of ``data``, the job as last read (``GET /async/jobs/{id}``)."""

    data: Dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def status(self) -> str:
        """The status as last known (``refresh()`` reads it again; ``wait()`` follows it)."""
        return str(self.data.get("status", ""))

    @property
    def channel_id(self) -> str:
        return str(self.data.get("channel_id") or self.id)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


class Job(_JobView):
    """A submitted job. ``data`` is the job as last read (``GET /async/jobs/{id}``'s JSON)."""

    def __init__(self, client: "Client", data: Dict[str, Any]):
        self._client = client
        self.data = dict(data)

    def __repr__(self) -> str:
        return f"Job(id={self.id!r}, status={self.status!r})"

    def refresh(self) -> "Job":
        """Reads the job again; returns itself."""
        self.data = self._client._json("GET", f"/async/jobs/{_segment(self.id)}")
        return self

    def wait(self, timeout: Optional[float] = None) -> "Job":
        """Follows the job's events until it ends; returns itself, refreshed.

        Raises ``JobFailed``, ``JobTimedOut`` or ``JobCancelled`` when it ends otherwise than
        ``SUCCESS``, and ``WaitTimeout`` when ``timeout`` seconds pass first.
        """
        follow = _Follow(self.id, None, timeout)
        self.refresh()
        while not self.done:
            try:
                for _ in self._follow(follow):
                    pass
            except ApiError as e:
                if e.status not in STREAM_REFUSED:
                    raise
                self._poll(follow)
            self.refresh()
        _outcome(self.data)
        return self

    def result(self, timeout: Optional[float] = None) -> Any:
        """The job's result, waiting for it to end first (``wait(timeout)``'s errors apply)."""
        if not self.done or "result" not in self.data:
            self.wait(timeout)
        _outcome(self.data)
        return self.data.get("result")

    def logs(self, after: int = 0) -> List[Dict[str, Any]]:
        """Every log line after ``after``: ``[{seq, stream, ts, line}]``."""
        lines: List[Dict[str, Any]] = []
        while True:
            page = self._client._json(
                "GET", f"/async/jobs/{_segment(self.id)}/logs", params={"after": after, "limit": 1000}
            )
            batch = page.get("lines") or []
            lines.extend(batch)
            if not batch:
                return lines
            after = int(page.get("next") or after)

    def cancel(self) -> "Job":
        """Cancels the job (``ApiError`` 409 when it already ended); returns itself."""
        self.data = self._client._json("POST", f"/async/jobs/{_segment(self.id)}/cancel", json={})
        return self

    def retry(self) -> "Job":
        """Runs a job that ended ERROR, TIMEOUT or CANCELLED again (a new attempt)."""
        self.data = self._client._json("POST", f"/async/jobs/{_segment(self.id)}/retry", json={})
        return self

    def file(self, property: str, index: int = 0) -> bytes:
        """The bytes of one of the job's files (an input or an output)."""
        response = self._client._send(
            "GET", f"/async/jobs/{_segment(self.id)}/files/{_segment(property)}/{int(index)}"
        )
        return response.content

    def events(self, last_id: Optional[str] = None, timeout: Optional[float] = None) -> Iterator[Dict[str, Any]]:
        """Yields the job's events (``{"id", "type", "status", "runyard_status", "progress",
        "attempt", "ts", ...}``) from the event stream, oldest first, until its terminal status.

        Starts after ``last_id`` (default: the oldest event kept for the job's channel) and
        reconnects from the last event seen when the connection drops. A ``{"type": "resync"}``
        event means events were trimmed by retention. ``WaitTimeout`` after ``timeout`` seconds.
        """
        return self._follow(_Follow(self.id, last_id, timeout))

    def _follow(self, follow: _Follow) -> Iterator[Dict[str, Any]]:
        client = self._client
        url = "/async/events/sse"
        while True:
            if follow.expired():
                raise WaitTimeout(dict(self.data), follow.timeout)
            try:
                with client._http.stream(
                    "GET",
                    url,
                    params={"channel": self.channel_id},
                    headers=follow.headers(),
                    timeout=httpx.Timeout(client.timeout, read=follow.read_timeout()),
                ) as response:
                    if response.status_code in (502, 503, 504):
                        raise _Retryable(response.status_code)
                    if response.status_code >= 400:
                        response.read()
                        _check(response)
                    follow.connected()
                    parser = _Sse()
                    for line in response.iter_lines():
                        message = parser.feed(line)
                        if message is not None:
                            event = follow.event(message)
                            if event is not None:
                                ended = _apply(self.data, event)
                                yield event
                                if event.get("type") == "resync":
                                    self.refresh()
                                    ended = self.done
                                if ended:
                                    return
                        if follow.expired():
                            raise WaitTimeout(dict(self.data), follow.timeout)
                    # The server closed the stream (e.g. shutting down): reconnect.
            except httpx.ReadTimeout:
                continue  # silence past the bound (or the caller's deadline): the loop checks it
            except (httpx.TransportError, _Retryable) as e:
                time.sleep(follow.failed(client.url, e))

    def _poll(self, follow: _Follow) -> None:
        while True:
            self.refresh()
            if self.done:
                return
            if follow.expired():
                raise WaitTimeout(dict(self.data), follow.timeout)
            left = follow.remaining()
            time.sleep(POLL_INTERVAL if left is None else max(0.0, min(POLL_INTERVAL, left)))


class Client:
    """runyard's client API, synchronous. ``url`` is the server's base URL."""

    def __init__(
        self,
        url: str,
        token: Optional[str] = None,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        transport: Optional[httpx.BaseTransport] = None,
    ):
        self.url = url.rstrip("/")
        self.timeout = float(timeout)
        self._http = httpx.Client(
            base_url=self.url, headers=_headers(token), timeout=self.timeout, transport=transport
        )

    def __repr__(self) -> str:
        return f"Client({self.url!r})"  # never the token

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as e:
            raise ServerUnreachable(self.url, e) from e
        _check(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._send(method, path, **kwargs).json()

    def submit(
        self,
        type: str,
        args: Any = None,
        files: Optional[Files] = None,
        wait_for: Optional[Sequence[Union[str, Mapping[str, Any]]]] = None,
        deadline: Optional[When] = None,
        on_deadline: Optional[str] = None,
        idempotency_key: Optional[str] = None,
        channel: Optional[str] = None,
        notify: Optional[Mapping[str, Any]] = None,
        delay: Optional[Seconds] = None,
        *,
        run_at: Optional[When] = None,
        timeout: Optional[Union[Seconds, str]] = None,
        max_attempts: Optional[int] = None,
        backoff: Optional[Mapping[str, Any]] = None,
        runner: Optional[str] = None,
        emits: Optional[Sequence[str]] = None,
        extra: Optional[Mapping[str, Any]] = None,
    ) -> Job:
        """Submits a job (``POST /async/jobs``); with ``files``, as multipart so the files are
        attached before the job can start. Returns the ``Job`` (status as submitted)."""
        body = submit_body(
            type, args, wait_for=wait_for, deadline=deadline, on_deadline=on_deadline,
            idempotency_key=idempotency_key, channel=channel, notify=notify, delay=delay,
            run_at=run_at, timeout=timeout, max_attempts=max_attempts, backoff=backoff,
            runner=runner, emits=emits, extra=extra,
        )  # fmt: skip
        if not files:
            return Job(self, _job_from_submit(self._json("POST", "/async/jobs", json=body)))
        opened: List[IO[bytes]] = []
        try:
            parts: List[Tuple[str, Tuple[Any, ...]]] = [("job", (None, json.dumps(body), "application/json"))]
            parts += file_parts(files, opened)
            return Job(self, _job_from_submit(self._json("POST", "/async/jobs", files=parts)))
        finally:
            for f in opened:
                f.close()

    def job(self, id: str) -> Job:
        """The job with this id (``NotFound`` when there is none)."""
        return Job(self, self._json("GET", f"/async/jobs/{_segment(id)}"))

    def jobs(self, status: Optional[str] = None, type: Optional[str] = None, limit: int = 50) -> List[Job]:
        """Up to ``limit`` jobs, newest first; ``type`` is a glob (``report.*``)."""
        found: List[Job] = []
        cursor = None
        while len(found) < limit:
            page = self._json("GET", "/async/jobs", params=_jobs_query(status, type, limit - len(found), cursor))
            found += [Job(self, j) for j in page.get("jobs") or []]
            cursor = page.get("next_cursor")
            if not cursor or not page.get("jobs"):
                break
        return found[:limit]

    def signal(self, key: str, payload: Any = None, id: Optional[str] = None) -> Dict[str, Any]:
        """Writes a readiness signal: ``{key, seq, at}`` (the same ``id`` again: no second record)."""
        body: Dict[str, Any] = {}
        if payload is not None:
            body["payload"] = payload
        if id is not None:
            body["id"] = id
        return self._json("POST", f"/async/signals/{_segment(key)}", json=body)


# ---------------------------------------------------------------------------------------------
# asyncio flavour


class AsyncJob(_JobView):
    """A submitted job, asyncio flavour: the methods of ``Job``, awaited."""

    def __init__(self, client: "AsyncClient", data: Dict[str, Any]):
        self._client = client
        self.data = dict(data)

    def __repr__(self) -> str:
        return f"AsyncJob(id={self.id!r}, status={self.status!r})"

    async def refresh(self) -> "AsyncJob":
        self.data = await self._client._json("GET", f"/async/jobs/{_segment(self.id)}")
        return self

    async def wait(self, timeout: Optional[float] = None) -> "AsyncJob":
        """As ``Job.wait``."""
        follow = _Follow(self.id, None, timeout)
        await self.refresh()
        while not self.done:
            try:
                async for _ in self._follow(follow):
                    pass
            except ApiError as e:
                if e.status not in STREAM_REFUSED:
                    raise
                await self._poll(follow)
            await self.refresh()
        _outcome(self.data)
        return self

    async def result(self, timeout: Optional[float] = None) -> Any:
        if not self.done or "result" not in self.data:
            await self.wait(timeout)
        _outcome(self.data)
        return self.data.get("result")

    async def logs(self, after: int = 0) -> List[Dict[str, Any]]:
        lines: List[Dict[str, Any]] = []
        while True:
            page = await self._client._json(
                "GET", f"/async/jobs/{_segment(self.id)}/logs", params={"after": after, "limit": 1000}
            )
            batch = page.get("lines") or []
            lines.extend(batch)
            if not batch:
                return lines
            after = int(page.get("next") or after)

    async def cancel(self) -> "AsyncJob":
        self.data = await self._client._json("POST", f"/async/jobs/{_segment(self.id)}/cancel", json={})
        return self

    async def retry(self) -> "AsyncJob":
        self.data = await self._client._json("POST", f"/async/jobs/{_segment(self.id)}/retry", json={})
        return self

    async def file(self, property: str, index: int = 0) -> bytes:
        response = await self._client._send(
            "GET", f"/async/jobs/{_segment(self.id)}/files/{_segment(property)}/{int(index)}"
        )
        return response.content

    def events(self, last_id: Optional[str] = None, timeout: Optional[float] = None) -> AsyncIterator[Dict[str, Any]]:
        """As ``Job.events``: ``async for event in job.events(): ...``."""
        return self._follow(_Follow(self.id, last_id, timeout))

    async def _follow(self, follow: _Follow) -> AsyncIterator[Dict[str, Any]]:
        client = self._client
        while True:
            if follow.expired():
                raise WaitTimeout(dict(self.data), follow.timeout)
            try:
                async with client._http.stream(
                    "GET",
                    "/async/events/sse",
                    params={"channel": self.channel_id},
                    headers=follow.headers(),
                    timeout=httpx.Timeout(client.timeout, read=follow.read_timeout()),
                ) as response:
                    if response.status_code in (502, 503, 504):
                        raise _Retryable(response.status_code)
                    if response.status_code >= 400:
                        await response.aread()
                        _check(response)
                    follow.connected()
                    parser = _Sse()
                    async for line in response.aiter_lines():
                        message = parser.feed(line)
                        if message is not None:
                            event = follow.event(message)
                            if event is not None:
                                ended = _apply(self.data, event)
                                yield event
                                if event.get("type") == "resync":
                                    await self.refresh()
                                    ended = self.done
                                if ended:
                                    return
                        if follow.expired():
                            raise WaitTimeout(dict(self.data), follow.timeout)
            except httpx.ReadTimeout:
                continue
            except (httpx.TransportError, _Retryable) as e:
                await asyncio.sleep(follow.failed(client.url, e))

    async def _poll(self, follow: _Follow) -> None:
        while True:
            await self.refresh()
            if self.done:
                return
            if follow.expired():
                raise WaitTimeout(dict(self.data), follow.timeout)
            left = follow.remaining()
            await asyncio.sleep(POLL_INTERVAL if left is None else max(0.0, min(POLL_INTERVAL, left)))


class AsyncClient:
    """runyard's client API, asyncio flavour: the methods of ``Client``, awaited."""

    def __init__(
        self,
        url: str,
        token: Optional[str] = None,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        transport: Optional[httpx.AsyncBaseTransport] = None,
    ):
        self.url = url.rstrip("/")
        self.timeout = float(timeout)
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=_headers(token), timeout=self.timeout, transport=transport
        )

    def __repr__(self) -> str:
        return f"AsyncClient({self.url!r})"

    async def aclose(self) -> None:
        await self._http.aclose()

    close = aclose

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as e:
            raise ServerUnreachable(self.url, e) from e
        _check(response)
        return response

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return (await self._send(method, path, **kwargs)).json()

    async def submit(
        self,
        type: str,
        args: Any = None,
        files: Optional[Files] = None,
        wait_for: Optional[Sequence[Union[str, Mapping[str, Any]]]] = None,
        deadline: Optional[When] = None,
        on_deadline: Optional[str] = None,
        idempotency_key: Optional[str] = None,
        channel: Optional[str] = None,
        notify: Optional[Mapping[str, Any]] = None,
        delay: Optional[Seconds] = None,
        *,
        run_at: Optional[When] = None,
        timeout: Optional[Union[Seconds, str]] = None,
        max_attempts: Optional[int] = None,
        backoff: Optional[Mapping[str, Any]] = None,
        runner: Optional[str] = None,
        emits: Optional[Sequence[str]] = None,
        extra: Optional[Mapping[str, Any]] = None,
    ) -> AsyncJob:
        """As ``Client.submit``."""
        body = submit_body(
            type, args, wait_for=wait_for, deadline=deadline, on_deadline=on_deadline,
            idempotency_key=idempotency_key, channel=channel, notify=notify, delay=delay,
            run_at=run_at, timeout=timeout, max_attempts=max_attempts, backoff=backoff,
            runner=runner, emits=emits, extra=extra,
        )  # fmt: skip
        if not files:
            return AsyncJob(self, _job_from_submit(await self._json("POST", "/async/jobs", json=body)))
        opened: List[IO[bytes]] = []
        try:
            parts: List[Tuple[str, Tuple[Any, ...]]] = [("job", (None, json.dumps(body), "application/json"))]
            # httpx's async multipart cannot read sync files: read them here.
            for prop, (name, content, mimetype) in file_parts(files, opened):
                data = content.read() if hasattr(content, "read") else content
                parts.append((prop, (name, data, mimetype)))
            return AsyncJob(self, _job_from_submit(await self._json("POST", "/async/jobs", files=parts)))
        finally:
            for f in opened:
                f.close()

    async def job(self, id: str) -> AsyncJob:
        return AsyncJob(self, await self._json("GET", f"/async/jobs/{_segment(id)}"))

    async def jobs(self, status: Optional[str] = None, type: Optional[str] = None, limit: int = 50) -> List[AsyncJob]:
        found: List[AsyncJob] = []
        cursor = None
        while len(found) < limit:
            page = await self._json(
                "GET", "/async/jobs", params=_jobs_query(status, type, limit - len(found), cursor)
            )
            found += [AsyncJob(self, j) for j in page.get("jobs") or []]
            cursor = page.get("next_cursor")
            if not cursor or not page.get("jobs"):
                break
        return found[:limit]

    async def signal(self, key: str, payload: Any = None, id: Optional[str] = None) -> Dict[str, Any]:
        body: Dict[str, Any] = {}
        if payload is not None:
            body["payload"] = payload
        if id is not None:
            body["id"] = id
        return await self._json("POST", f"/async/signals/{_segment(key)}", json=body)
