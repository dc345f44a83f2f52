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

One request layer serves both flavours: the operations in ``api_core.py`` (requests, answers,
typed errors, paging), ``api_follow.py`` (events, reconnects, ``wait``) and ``api_batch.py``
(``submit_batch``) yield commands and do no I/O; ``api_transport.py`` performs them, with httpx's
sync or async client. ``sse.py`` reads the event stream by the HTML standard's rules (lines, ids). The classes here only hand each call to its operation.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import httpx

from . import api_core as core
from . import api_follow as follow
from .api_batch import MAX_BATCH, BatchItem, BatchResult, submit_batch
from .api_errors import ApiError, ServerUnreachable, WaitTimeout
# Re-exported: what api.py held before the request layer moved out of it.
from .api_requests import DEFAULT_TIMEOUT, POLL_INTERVAL, RECONNECT_DELAYS, RECONNECT_GIVE_UP
from .api_requests import STREAM_IDLE, STREAM_REFUSED, TERMINAL, FileSpec, Files, Notify, Seconds, When
from .api_requests import file_parts, submit_body
from .api_transport import AsyncTransport, SyncTransport

#: One item of ``submit_batch(jobs)``: ``submit()``'s keywords but ``files``, ``type`` required.
BatchJob = Mapping[str, Any]


class _JobView:
    """What both job flavours show of ``data``, the job as last read (``GET /async/jobs/{id}``)."""

    def __init__(self, client: Any, data: Dict[str, Any]):
        self._client = client
        self.data = dict(data)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, status={self.status!r})"

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


# ---------------------------------------------------------------------------------------------
# Synchronous flavour


class Job(_JobView):
    """A submitted job. ``data`` is the job as last read (``GET /async/jobs/{id}``'s JSON)."""

    _client: "Client"

    def refresh(self) -> "Job":
        """Reads the job again; returns itself."""
        self._client._run(core.refresh(self))
        return self

    def wait(self, timeout: Optional[float] = None) -> "Job":
        """Follows the job's events until it ends; returns itself, refreshed.

        Raises ``JobFailed``, ``JobTimedOut`` or ``JobCancelled`` when it ends otherwise than
        ``SUCCESS``, ``NotFound`` when the job is gone (it is read again every
        ``REREAD_INTERVAL`` while its events are followed), and ``WaitTimeout`` when ``timeout``
        seconds pass first.
        """
        self._client._run(follow.wait(self, timeout))
        return self

    def result(self, timeout: Optional[float] = None) -> Any:
        """The job's result, waiting for it to end first (``wait(timeout)``'s errors apply)."""
        return self._client._run(follow.result(self, timeout))

    def logs(self, after: int = 0) -> List[Dict[str, Any]]:
        """Every log line after ``after``: ``[{seq, stream, ts, line}]``."""
        return self._client._run(core.logs(self.id, after))

    def cancel(self) -> "Job":
        """Cancels the job; returns itself. ``ApiError`` 409 when it already ended, or when its
        running attempt reported an outcome that ends it (SUCCESS, or an ERROR with
        ``retry: false`` or no attempts left): the job then ends as it reported."""
        self._client._run(core.act(self, "cancel"))
        return self

    def retry(self) -> "Job":
        """Runs a job that ended ERROR, TIMEOUT or CANCELLED again (a new attempt)."""
        self._client._run(core.act(self, "retry"))
        return self

    def file(self, property: str, index: int = 0) -> bytes:
        """The bytes of one of the job's files (an input or an output)."""
        return self._client._run(core.file(self.id, property, index))

    def events(self, last_id: Optional[str] = None, timeout: Optional[float] = None) -> Iterator[Dict[str, Any]]:
        """Yields the job's events (``{"id", "type", "status", "runyard_status", "progress",
        "attempt", "ts", ...}``) from the event stream, oldest first, until its terminal status:
        that of its last attempt (after a ``retry()``, the earlier attempts' ends are yielded
        as history and the iteration goes on).

        Starts after ``last_id`` (default: the oldest event kept for the job's channel) and
        reconnects from the last event seen when the connection drops. A ``{"type": "resync"}``
        event means events were trimmed by retention. ``WaitTimeout`` after ``timeout`` seconds;
        ``NotFound`` when the job is gone (read again every ``REREAD_INTERVAL`` meanwhile);
        ``EventsMissing`` when a read found the job ended and the stream did not bring its final
        events ``STREAM_IDLE`` after that read (a proxy holding the stream silent).
        """
        return self._client._transport.iterate(follow.follow(self, follow.follower(self, last_id, timeout)))


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
        self._transport = SyncTransport(self.url, token, self.timeout, transport)
        self._http = self._transport.http

    def __repr__(self) -> str:
        return f"Client({self.url!r})"  # never the token

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _run(self, op: core.Op[Any]) -> Any:
        return self._transport.run(op)

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
        notify: Notify = None,
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
        attached before the job can start. Returns the ``Job`` (status as submitted).
        ``notify=False`` asks for no webhook at all, not even the type's default (``None``)."""
        body = submit_body(
            type, args, wait_for=wait_for, deadline=deadline, on_deadline=on_deadline,
            idempotency_key=idempotency_key, channel=channel, notify=notify, delay=delay,
            run_at=run_at, timeout=timeout, max_attempts=max_attempts, backoff=backoff,
            runner=runner, emits=emits, extra=extra,
        )  # fmt: skip
        return Job(self, self._run(core.submit(body, files)))

    def submit_batch(self, jobs: Sequence[BatchJob]) -> BatchResult[Job]:
        """Submits up to 1,000 jobs in one request (``POST /async/jobs/batch``): each item a dict
        of ``submit()``'s keywords but ``files`` (``type`` required; its own ``idempotency_key``).

        All or nothing per job: returns one ``BatchItem`` per job, in order, with its ``job``
        (``status_code`` 202, or 200 and ``replayed`` for a key already taken with the same body)
        or its ``error`` (the ``ApiError`` the single submit would raise). A batch the server
        refuses whole (none, or more than 1,000 jobs) raises ``ApiError`` 422, nothing stored.
        """
        return self._run(submit_batch(jobs, lambda data: Job(self, data)))

    def job(self, id: str) -> Job:
        """The job with this id (``NotFound`` when there is none)."""
        return Job(self, self._run(core.get_job(id)))

    def jobs(self, status: Optional[str] = None, type: Optional[str] = None, limit: int = 50) -> List[Job]:
        """Up to ``limit`` jobs, newest first; ``type`` is a glob (``report.*``)."""
        return [Job(self, j) for j in self._run(core.list_jobs(status, type, limit))]

    def signal(self, key: str, payload: Any = None, id: Optional[str] = None) -> Dict[str, Any]:
        """Writes a readiness signal: ``{key, seq, at}`` (the same ``id`` again: no second record).

        An ``id`` of ``job:`` and a job id (the records a job's ``emits`` writes) is refused by
        the server: ``ApiError`` 422, nothing written. The keys ``.`` and ``..`` (which a URL
        resolves as a path; the server refuses them) raise ``ValueError`` before anything is sent."""
        return self._run(core.signal(key, payload, id))


# ---------------------------------------------------------------------------------------------
# asyncio flavour


class AsyncJob(_JobView):
    """A submitted job, asyncio flavour: the methods of ``Job``, awaited."""

    _client: "AsyncClient"

    async def refresh(self) -> "AsyncJob":
        await self._client._run(core.refresh(self))
        return self

    async def wait(self, timeout: Optional[float] = None) -> "AsyncJob":
        """As ``Job.wait``."""
        await self._client._run(follow.wait(self, timeout))
        return self

    async def result(self, timeout: Optional[float] = None) -> Any:
        return await self._client._run(follow.result(self, timeout))

    async def logs(self, after: int = 0) -> List[Dict[str, Any]]:
        return await self._client._run(core.logs(self.id, after))

    async def cancel(self) -> "AsyncJob":
        await self._client._run(core.act(self, "cancel"))
        return self

    async def retry(self) -> "AsyncJob":
        await self._client._run(core.act(self, "retry"))
        return self

    async def file(self, property: str, index: int = 0) -> bytes:
        return await self._client._run(core.file(self.id, property, index))

    def events(self, last_id: Optional[str] = None, timeout: Optional[float] = None) -> AsyncIterator[Dict[str, Any]]:
        """As ``Job.events``: ``async for event in job.events(): ...``."""
        return self._client._transport.iterate(follow.follow(self, follow.follower(self, last_id, timeout)))


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
        self._transport = AsyncTransport(self.url, token, self.timeout, transport)
        self._http = self._transport.http

    def __repr__(self) -> str:
        return f"AsyncClient({self.url!r})"

    async def aclose(self) -> None:
        await self._http.aclose()

    close = aclose

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def _run(self, op: core.Op[Any]) -> Any:
        return await self._transport.run(op)

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
        notify: Notify = None,
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
        return AsyncJob(self, await self._run(core.submit(body, files)))

    async def submit_batch(self, jobs: Sequence[BatchJob]) -> BatchResult[AsyncJob]:
        """As ``Client.submit_batch``."""
        return await self._run(submit_batch(jobs, lambda data: AsyncJob(self, data)))

    async def job(self, id: str) -> AsyncJob:
        return AsyncJob(self, await self._run(core.get_job(id)))

    async def jobs(self, status: Optional[str] = None, type: Optional[str] = None, limit: int = 50) -> List[AsyncJob]:
        return [AsyncJob(self, j) for j in await self._run(core.list_jobs(status, type, limit))]

    async def signal(self, key: str, payload: Any = None, id: Optional[str] = None) -> Dict[str, Any]:
        return await self._run(core.signal(key, payload, id))
