"""Exceptions raised by the job client. None of them ever carries the job's secret."""

from __future__ import annotations

import json
from typing import Optional, Tuple


class JobClientError(Exception):
    """Base class of every error this package raises on purpose."""


class MissingEnvironment(JobClientError):
    """JOB_ID, JOB_SECRET_KEY or JOB_HOOK is not set (the process was not started by runyard)."""

    def __init__(self, missing):
        self.missing = list(missing)
        names = ", ".join(self.missing)
        super().__init__(
            f"missing environment variable(s): {names} "
            "(runyard sets JOB_ID, JOB_SECRET_KEY and JOB_HOOK for a running job)"
        )


class NonRetryable(Exception):
    """Raise it (or a subclass) from a job function to fail the job without another attempt.

    ``run()`` reports ERROR with ``"retry": false``: the job ends ERROR at once, whatever its
    ``max_attempts``. Any other exception is retried with backoff while attempts are left, like a
    crash. Use it for failures another attempt cannot fix (bad arguments, a missing input).
    """


class BadPayload(JobClientError, ValueError):
    """A request body that cannot be sent as JSON (NaN or infinity, a type JSON has not, nesting
    deeper than Python encodes): nothing was sent, and sending it again could never work."""


class IntegrityError(JobClientError):
    """Downloaded bytes do not match the hash the server announced."""


class HookError(JobClientError):
    """The hook (or a file URL it handed out) answered with an error status.

    ``status_code`` is the HTTP status, ``code`` and ``message`` come from runyard's
    ``{"error": {"code", "message"}}`` body (or are derived from the status when the body is not that).
    """

    def __init__(self, status_code: int, code: str, message: str):
        self.status_code = status_code
        self.code = code
        self.message = message
        super().__init__(status_code, code, message)

    def __str__(self) -> str:
        return f"hook answered {self.status_code} {self.code}: {self.message}"

    @classmethod
    def from_response(cls, response, secret: Optional[str] = None) -> "HookError":
        """Build from a ``requests.Response``; ``secret`` is scrubbed from the text if echoed."""
        code, message = error_fields(response.status_code, response.reason, response.text or "")
        return cls(response.status_code, redact(code, secret), redact(message, secret))


class LogLinesLost(UserWarning):
    """Warned (``warnings.warn``) by ``JobClient.log`` and ``status(logs=...)`` when log lines
    were not stored: a report failed for a passing reason (no answer, 5xx, 429) after its retries,
    or the hook refused one for good (401, 403, 409, 413...), after which the rest was not sent.
    A failed log report never raises: the job goes on. ``lost`` is how many lines (entries as
    sent: a long line's pieces count one each), ``reason`` the last failure (never the secret),
    ``status_code`` its HTTP status, None when it got no answer (``409``: the job is already
    terminal, no report will be taken; ``503``: the hook was unavailable, a later one may be),
    ``total`` the client's ``lines_lost`` after this call. Every call that lost lines warns, and
    its text carries that running total (``(N in all)``), so Python's default filter, which shows
    a text already shown from the same line only once, shows each.
    ``warnings.simplefilter("error", LogLinesLost)`` turns it into an exception."""

    def __init__(self, lost: int, reason: str, status_code: Optional[int] = None, total: Optional[int] = None):
        self.lost = lost
        self.reason = reason
        self.status_code = status_code
        self.total = total
        in_all = "" if total is None else f" ({total} in all)"
        super().__init__(f"{lost} log line(s) not stored{in_all}: {reason}")


def error_fields(status: int, reason: Optional[str], text: str) -> Tuple[str, str]:
    """``(code, message)`` of an error answer: from runyard's ``{"error": {"code", "message"}}``
    body, else derived from the status, the reason phrase or the body's text (at most 500
    characters). Shared by the hook client (``HookError``) and the submit client (``ApiError``)."""
    code = f"http_{status}"
    message = (reason or "").strip() or "request failed"
    try:
        body = json.loads(text) if text else None
    except ValueError:
        if text.strip():
            message = text.strip()[:500]
    else:
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            code = str(error.get("code") or code)
            message = str(error.get("message") or message)
        elif isinstance(error, str):
            message = error
        elif body is not None:
            message = json.dumps(body)[:500]
    return code, message


def redact(text: str, secret: Optional[str]) -> str:
    """Remove the secret from text that is about to be shown (a server should never echo it)."""
    if secret and text:
        return text.replace(secret, "***")
    return text


#: The most bytes of a job's stored error, the note of the cut included (the server's
#: ``MAX_ERROR_BYTES``): a longer ``errorMessage`` is sent cut as the server would store it.
MAX_ERROR_BYTES = 16 * 1024


def cut_error(text: str) -> str:
    """``text`` if it holds at most ``MAX_ERROR_BYTES`` bytes (UTF-8), else its beginning, cut at a
    character boundary, and ``… [runyard: cut, N bytes in all]``, as the server stores it. Sent
    whole, a message over the hook's body limit is refused (413) and the job's error lost."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= MAX_ERROR_BYTES:
        return text
    note = f"… [runyard: cut, {len(data)} bytes in all]"
    keep = data[: MAX_ERROR_BYTES - len(note.encode("utf-8"))]
    return keep.decode("utf-8", "ignore") + note

