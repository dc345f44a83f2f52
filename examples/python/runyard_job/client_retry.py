"""How long a report that changes the job's status is tried again (``JobClient.report_window``).

A report with a ``status`` (RUNNING, and above all the final SUCCESS or ERROR with the job's
result) that gets no answer, or an answer that says "not now" (408, 429, 5xx), is tried again with
backoff (0.5 s, 1 s, 2 s, then every 4 s) for up to ``report_window`` seconds after its first try:
long enough for the API node ``JOB_HOOK`` names to restart (a rolling update). Any other refusal
(4xx: 400, 401, 403, 404, 409, 413, 422...) is final at once. Other calls (log lines, progress,
signals, files) keep their ``retries``.
"""

from __future__ import annotations

import os
from typing import Mapping

#: Seconds a status report is tried again after its first try, by default.
DEFAULT_REPORT_WINDOW = 30.0
#: Environment variable that sets the window for ``JobClient.from_env`` (and so for ``run()``).
REPORT_WINDOW_ENV = "RUNYARD_JOB_REPORT_WINDOW"
#: Longest pause between two tries within the window.
MAX_PAUSE = 4.0
#: Answers of 4xx that say "not now" rather than "no".
TRANSIENT_4XX = (408, 429)


def report_window_from_env(env: Mapping[str, str]) -> float:
    """The window ``REPORT_WINDOW_ENV`` sets (seconds, 0 or more), else the default; a value that
    is not such a number raises ``ValueError`` naming the variable."""
    raw = env.get(REPORT_WINDOW_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_REPORT_WINDOW
    return checked_window(raw, REPORT_WINDOW_ENV)


def checked_window(value, name: str = "report_window") -> float:
    """``value`` as a number of seconds, finite and 0 or more; else ``ValueError`` naming ``name``."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if not 0.0 <= seconds < float("inf"):
        raise ValueError(f"{name} must be a number of seconds, 0 or more, got {value!r}")
    return seconds


def worth_waiting_for(status_code: int) -> bool:
    """Whether an answer with ``status_code`` may go better later: 408, 429 or 5xx."""
    return status_code in TRANSIENT_4XX or status_code >= 500


def pause(attempt: int, left: float) -> float:
    """The pause before try ``attempt + 1`` (``attempt`` from 1): 0.5 s, doubling, at most
    ``MAX_PAUSE`` and at most ``left`` seconds (what is left of the window; 0 if none)."""
    return max(0.0, min(0.5 * 2 ** (attempt - 1), MAX_PAUSE, left))
