"""Log lines in several reports, and what a failed one does (``JobClient.status`` and ``log``).

The counterpart of the Rust client's ``JobClient::report_with_logs`` (hooks/src/client/chunks.rs),
with the same rules: a report that failed for a passing reason (no answer, 5xx, 429), once the
call's own retries are spent, does not stop the others, and the next report sent starts with a
``lost_note`` for its lines; after ``MAX_FAILURES_IN_A_ROW`` such failures in a row, or after any
other refusal (401, 403, 404, 409, 413...: the same for every report), nothing more is sent. A
report the hook took (2xx) counts as stored whatever its answer's body. The other fields of the
call (a status, progress...) go with the last report, after every line.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

import requests

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
    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return True
    return isinstance(exc, HookError) and (exc.status_code == 429 or exc.status_code >= 500)


def reason(exc: BaseException, secret: str) -> str:
    """A short description of a failed report, never with the secret (nor a signature: requests'
    errors name the URL, not the headers)."""
    if isinstance(exc, HookError):
        text = str(exc)
    elif isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        text = f"POST /status: no answer ({type(exc).__name__})"
    else:
        text = f"POST /status: {type(exc).__name__}: {exc}"
    text = " ".join(redact(text, secret).split())
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 3] + "..."


class Sent:
    """What ``send_reports`` did: ``answer`` of the last report taken (``{}`` if none or not
    JSON), ``lost`` lines not stored, ``why`` the last failure, ``fields_error`` the exception
    to raise when the call's other fields were not taken (None when taken or when there were none)."""

    def __init__(self) -> None:
        self.answer: Dict[str, Any] = {}
        self.lost = 0
        self.why = ""
        self.fields_error: Optional[BaseException] = None


def send_reports(
    send: Callable[[Dict[str, Any]], Dict[str, Any]],
    fields: Dict[str, Any],
    reports: List[list],
    secret: str,
) -> Sent:
    """Sends ``reports`` (lists of log lines, each leaving room for a note) one by one with
    ``send``, ``fields`` with the last one. Raises only what is not a failed request (a bug)."""
    reports = reports or [[]]
    sent, left = Sent(), sum(len(r) for r in reports)
    unnoted = in_a_row = 0
    failure: Optional[BaseException] = None
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
                if last and fields:
                    sent.fields_error = exc  # as before: the caller asked for that answer
                continue
            sent.lost, unnoted, in_a_row = sent.lost + n, unnoted + n, in_a_row + 1
            failure, sent.why = exc, reason(exc, secret)
            if not is_transient(exc) or in_a_row >= MAX_FAILURES_IN_A_ROW:
                sent.lost += left
                break
        else:
            in_a_row = 0
            if n:
                unnoted = 0
    else:
        if failure is not None and fields and in_a_row:
            sent.fields_error = failure  # the last report, with the fields, failed
        return sent
    if fields:
        sent.fields_error = failure  # stopped early: the fields were not sent
    return sent
