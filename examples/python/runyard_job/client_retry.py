"""How long a report that changes the job's status is tried again (``JobClient.report_window``).

A report with a ``status`` (RUNNING, and above all the final SUCCESS or ERROR with the job's
result) that gets no answer, or an answer that says "not now" (408, 429, 5xx), is tried again with
backoff (0.5 s, 1 s, 2 s, then every 4 s) for up to ``report_window`` seconds after its first try:
long enough for the API node ``JOB_HOOK`` names to restart (a rolling update). Any other refusal
(4xx: 400, 401, 403, 404, 409, 413, 422...) is final at once. An upload is tried again the same
way within the window, whole and signed afresh (``JobClient.upload``: the server attaches the same
file from the same attempt once). Other calls (log lines, progress, signals, downloads, reads)
keep their ``retries``.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Optional

import requests

#: Seconds a status report is tried again after its first try, by default.
DEFAULT_REPORT_WINDOW = 30.0
#: Environment variable that sets the window for ``JobClient.from_env`` (and so for ``run()``).
REPORT_WINDOW_ENV = "RUNYARD_JOB_REPORT_WINDOW"
#: Longest pause between two tries within the window.
MAX_PAUSE = 4.0
#: Answers of 4xx that say "not now" rather than "no".
TRANSIENT_4XX = (408, 429)
#: A window must be below this many seconds (2**64, about 585 billion years): the Rust client's
#: bound (``Duration``), so that both clients take and refuse the same values.
MAX_WINDOW = 2.0**64
#: A window as text: a decimal number, optionally signed, with a fraction and an exponent (what
#: Rust's ``f64`` parsing takes, without its ``inf`` and ``nan``; no ``_`` between digits).
WINDOW_TEXT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", re.ASCII)
#: What a request that got no answer raises: refused, reset, timed out, or cut short mid-answer
#: (the node died while answering: ``ChunkedEncodingError``).
NO_ANSWER = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
#: The final statuses a report may carry.
FINAL_STATUSES = ("SUCCESS", "ERROR")


def report_window_from_env(env: Mapping[str, str]) -> float:
    """The window ``REPORT_WINDOW_ENV`` sets (seconds, 0 or more), else the default; a value that
    is not such a number raises ``ValueError`` naming the variable."""
    raw = env.get(REPORT_WINDOW_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_REPORT_WINDOW
    return checked_window(raw, REPORT_WINDOW_ENV)


def checked_window(value, name: str = "report_window") -> float:
    """``value`` as a number of seconds, 0 or more and below ``MAX_WINDOW`` (a number, or text
    that ``WINDOW_TEXT`` matches once trimmed); else ``ValueError`` naming ``name``. The Rust
    client (hooks/src/client/retry.rs) takes and refuses the same."""
    seconds = -1.0
    if isinstance(value, str):
        if WINDOW_TEXT.fullmatch(value.strip()):
            seconds = float(value.strip())
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    if not 0.0 <= seconds < MAX_WINDOW:
        raise ValueError(
            f"{name} must be a number of seconds, 0 or more (below 2**64; digits, '.', an exponent), got {value!r}"
        )
    return seconds + 0.0  # -0.0 is 0


def reported_status(response: Any) -> Optional[str]:
    """What the job reported, as a ``409`` refusing a report says (``error.reported``), or None."""
    try:
        answer = response.json()
    except ValueError:
        return None
    error = answer.get("error") if isinstance(answer, dict) else None
    reported = error.get("reported") if isinstance(error, dict) else None
    return reported if isinstance(reported, str) else None


def taken_before(response: Any, payload: Any, attempt: int) -> bool:
    """Whether ``response`` to try ``attempt + 1`` of report ``payload`` says that an earlier try
    was taken: a ``409`` whose ``error.reported`` is the final status the report carries, after
    an earlier try (the server may have applied it and answered its own ``5xx`` after)."""
    status = payload.get("status") if isinstance(payload, dict) else None
    return (
        attempt > 0
        and response.status_code == 409
        and status in FINAL_STATUSES
        and reported_status(response) == status
    )


def worth_waiting_for(status_code: int) -> bool:
    """Whether an answer with ``status_code`` may go better later: 408, 429 or 5xx."""
    return status_code in TRANSIENT_4XX or status_code >= 500


def pause(attempt: int, left: float) -> float:
    """The pause before try ``attempt + 1`` (``attempt`` from 1): 0.5 s, doubling, at most
    ``MAX_PAUSE`` and at most ``left`` seconds (what is left of the window; 0 if none)."""
    return max(0.0, min(0.5 * 2 ** (attempt - 1), MAX_PAUSE, left))
