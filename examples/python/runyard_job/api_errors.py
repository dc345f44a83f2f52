"""Exceptions of the submit client (``Client`` / ``AsyncClient``).

Two families:

- the server refused or failed a request: ``ApiError`` (``status``, ``code``, ``message`` from
  runyard's ``{"error": {"code", "message"}}`` body), with ``Unauthorized`` (401), ``Forbidden``
  (403) and ``NotFound`` (404) as subclasses; ``ServerUnreachable`` when no answer came at all;
- a job you waited for did not succeed: ``JobFailed`` (``ERROR``), ``JobTimedOut`` (the job's own
  ``TIMEOUT``), ``JobCancelled`` (``CANCELLED``), all ``JobNotSuccessful`` and carrying the final
  job; ``WaitTimeout`` when *your* wait ran out before the job ended (the job goes on).

Every one of them is a ``JobClientError``. None carries the client's token.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from .errors import JobClientError, error_fields


class ApiError(JobClientError):
    """The server answered with a 4xx or 5xx status."""

    def __init__(self, status: int, code: str, message: str):
        self.status = status
        self.code = code
        self.message = message
        super().__init__(status, code, message)

    def __str__(self) -> str:
        return f"runyard answered {self.status} {self.code}: {self.message}"

    @classmethod
    def from_response(cls, status: int, reason: str, text: str) -> "ApiError":
        """Builds the error (of the subclass matching ``status``) from an answer's parts."""
        code, message = error_fields(status, reason, text)
        kind = {401: Unauthorized, 403: Forbidden, 404: NotFound}.get(status, cls)
        return kind(status, code, message)


class Unauthorized(ApiError):
    """401: no token, or a token the server does not accept."""


class Forbidden(ApiError):
    """403: the token is valid but does not allow this (scope, job type or channel)."""


class NotFound(ApiError):
    """404: no such job (or file, schedule, route)."""


class ServerUnreachable(JobClientError):
    """No answer from the server: refused connection, DNS failure, timeout, broken stream."""

    def __init__(self, url: str, cause: BaseException):
        self.url = url
        self.cause = cause
        super().__init__(f"cannot reach runyard at {url}: {cause}")


class WaitTimeout(JobClientError, TimeoutError):
    """``wait(timeout)`` (or ``events(timeout)``) ran out before the job ended.

    The job itself goes on; ``job`` is what was last known of it.
    """

    def __init__(self, job: Dict[str, Any], timeout: Optional[float]):
        self.job = job
        self.timeout = timeout
        super().__init__(f"job {job.get('id')} still {job.get('status')} after waiting {timeout} s")


class EventsMissing(JobClientError):
    """``events()`` read the job ended, but the event stream did not bring the events it had
    not had yet, its final status among them, within ``STREAM_IDLE`` (30 s) after that read: a
    proxy that holds the stream silent, a stream that keeps failing, events no longer kept.

    ``job`` is the job as read (ended); ``last_id`` the last event id had, to follow again from.
    """

    def __init__(self, job: Dict[str, Any], last_id: Optional[str]):
        self.job = job
        self.last_id = last_id
        super().__init__(
            f"job {job.get('id')} ended {job.get('status')}, but its final events did not come on "
            f"the event stream (after event id {last_id!r})"
        )


class JobNotSuccessful(JobClientError):
    """The job ended, and not with ``SUCCESS``. ``job`` is the final job (a dict)."""

    status = ""

    def __init__(self, job: Dict[str, Any]):
        self.job = job
        error = job.get("error")
        if isinstance(error, dict):
            detail = error.get("message") or error.get("code") or ""
        else:
            detail = error or ""
        self.error = error
        self.exit_code = job.get("exit_code")
        text = f"job {job.get('id')} ({job.get('type')}) ended {job.get('status')}"
        if detail:
            text += f": {detail}"
        super().__init__(text)


class JobFailed(JobNotSuccessful):
    """The job ended ``ERROR`` (it raised, exited non-zero, or reported an error)."""

    status = "ERROR"


class JobTimedOut(JobNotSuccessful):
    """The job ended ``TIMEOUT``: it ran past its own ``timeout``."""

    status = "TIMEOUT"


class JobCancelled(JobNotSuccessful):
    """The job ended ``CANCELLED`` (cancelled, or skipped at its deadline)."""

    status = "CANCELLED"


OUTCOME_ERRORS = {"ERROR": JobFailed, "TIMEOUT": JobTimedOut, "CANCELLED": JobCancelled}
