"""Log lines in several reports, and what a failed one does (``JobClient.status`` and ``log``).

The counterpart of the Rust client's ``JobClient::report_with_logs`` (hooks/src/client/chunks.rs),
with the same rules: a report that failed for a passing reason (no answer, 5xx, 429), once the
call's own retries are spent, does not stop the others, and the next report of the same call
that carries lines starts with a ``lost_note`` for them (none when the failed reports were the
call's last; the failure in the Rust client's words: ``reason``); after
``MAX_FAILURES_IN_A_ROW`` such failures in a row, or after any other refusal (401, 403, 404, 409,
413...: the same for every report), no more lines are sent; after the failures, a status the call
carries still goes (with its report window: the job's result above all), its only line the note
of the lines lost.
A report the hook took (2xx) counts as stored whatever its answer's body. The other fields of the
call (a status, progress...) go with the last report, after every line.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

import requests

from .client_retry import NO_ANSWER
from .errors import HookError, redact

#: Failed log reports in a row after which the rest is not tried: the hook is down or overloaded.
MAX_FAILURES_IN_A_ROW = 3
#: Most characters of a failure's description in a lost note or a warning.
MAX_REASON_CHARS = 200


def lost_note(n: int, why: str) -> str:
    """The line that stands where ``n`` lines could not be sent (``why``): the Rust client's."""
    return f"[runyard] {n} line(s) lost here: the hook refused or did not answer ({why})"


def is_transient(exc: BaseException) -> bool:
    """Whether a report that failed with ``exc`` may go better for the next one: the request got
    no answer, or the server could not take it now (5xx, 429)."""
    if isinstance(exc, NO_ANSWER):
        return True
    return isinstance(exc, HookError) and (exc.status_code == 429 or exc.status_code >= 500)


def reason(exc: BaseException, secret: str, context: str = "POST /async/status") -> str:
    """A short description of a failed report, in the Rust client's words (``POST /async/status:
    HTTP 503 (unavailable): ...``, the code only when the answer is runyard's own), never with the
    secret (nor a signature: requests' errors name the URL, not the headers). ``context`` is the
    request, its path as sent."""
    if isinstance(exc, HookError):
        own = exc.code != f"http_{exc.status_code}"  # else derived from the status: not runyard's
        code = f" ({exc.code})" if own else ""
        text = f"{context}: HTTP {exc.status_code}{code}: {exc.message}"
    elif isinstance(exc, NO_ANSWER):
        text = f"{context}: no answer ({type(exc).__name__})"
    else:
        text = f"{context}: {type(exc).__name__}: {exc}"
    text = " ".join(redact(text, secret).split())
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 3] + "..."


class Sent:
    """What ``send_reports`` did: ``answer`` of the last report taken (``{}`` if none or not
    JSON), ``lost`` lines not stored, ``why`` the last failure and ``status_code`` its HTTP status
    (None when it got no answer), ``error`` the exception the call raises, or None: when its other
    fields were not taken (refused, not sent, or their answer not JSON), or when no line was lost
    yet a report failed (one without lines) or the last one's answer was not JSON (as before, and
    as the Rust client: only lost lines do not raise)."""

    def __init__(self) -> None:
        self.answer: Dict[str, Any] = {}
        self.lost = 0
        self.why = ""
        self.status_code: Optional[int] = None
        self.error: Optional[BaseException] = None


def send_reports(
    send: Callable[[Dict[str, Any]], Dict[str, Any]],
    fields: Dict[str, Any],
    reports: List[list],
    secret: str,
    context: str = "POST /async/status",
) -> Sent:
    """Sends ``reports`` (lists of log lines, each leaving room for a note) one by one with
    ``send``, ``fields`` with the last one. Raises only what is not a failed request (a bug)."""
    reports = reports or [[]]
    sent, left = Sent(), sum(len(r) for r in reports)
    unnoted = in_a_row = 0
    failure: Optional[BaseException] = None
    unreadable: Optional[BaseException] = None  # the last report's answer, taken but not JSON
    for i, lines in enumerate(reports):
        last, n = i + 1 == len(reports), len(lines)
        left -= n
        if unnoted and lines:
            lines = [lost_note(unnoted, sent.why)] + lines
        body = dict(fields, logs=lines) if last else {"logs": lines}
        try:
            sent.answer = send(body)
        except (HookError, requests.RequestException) as exc:
            if isinstance(exc, HookError) and exc.status_code < 300:
                # Taken (2xx), only its answer is not JSON: its lines are stored.
                sent.answer, in_a_row, unnoted = {}, 0, 0 if n else unnoted
                unreadable = exc if last else None
                continue
            sent.lost, unnoted, in_a_row = sent.lost + n, unnoted + n, in_a_row + 1
            failure, sent.why = exc, reason(exc, secret, context)
            sent.status_code = exc.status_code if isinstance(exc, HookError) else None
            if not is_transient(exc) or in_a_row >= MAX_FAILURES_IN_A_ROW:
                sent.lost += left
                if not last and "status" in fields and is_transient(exc):
                    # The status (the job's result above all) goes all the same, with its window,
                    # saying where the lines went (not after a refusal: it would get it too).
                    note = [lost_note(unnoted + left, sent.why)]
                    in_a_row, unreadable = _send_fields(send, dict(fields, logs=note), sent, in_a_row, secret, context)
                    failure = sent.error or failure
                    sent.error = None
                break
        else:
            in_a_row = 0
            if n:
                unnoted = 0
    if fields and in_a_row:
        sent.error = failure  # the last report, with the fields, failed or was not sent
    elif fields:
        sent.error = unreadable  # the caller asked for that answer
    elif not sent.lost:
        sent.error = failure or unreadable  # no line lost: the failure is the call's, as before
    return sent


def _send_fields(send, body: Dict[str, Any], sent: Sent, in_a_row: int, secret: str, context: str):
    """Sends ``body``, the call's fields after its log reports stopped; returns ``in_a_row`` and
    the answer that was taken but not JSON (or None) as the loop of ``send_reports`` keeps them,
    its failure (if any) in ``sent.error`` for the caller to take."""
    try:
        sent.answer = send(body)
    except (HookError, requests.RequestException) as exc:
        if isinstance(exc, HookError) and exc.status_code < 300:
            sent.answer = {}
            return 0, exc
        sent.why = reason(exc, secret, context)
        sent.status_code = exc.status_code if isinstance(exc, HookError) else None
        sent.error = exc
        return in_a_row + 1, None
    return 0, None
