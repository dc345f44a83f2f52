"""run(): the few lines every job script would otherwise repeat."""

from __future__ import annotations

import sys
import time
import traceback
from typing import Any, Callable, NoReturn, Optional

from .client import JobClient
from .errors import BadPayload, HookError, JobClientError, NonRetryable, redact

JobFunction = Callable[[JobClient, Any], Any]

#: Hook answers of 4xx that another attempt may not get: 401 (a signature refused: this attempt's
#: secret or clock; the next attempt has a new secret and may run elsewhere), 408 Request
#: Timeout, 429 Too Many Requests.
TRANSIENT_4XX = (401, 408, 429)


def run(fn: Optional[JobFunction] = None, *, client: Optional[JobClient] = None):
    """Run ``fn(client, args)`` as this process's job, and return what it returned.

    Reports RUNNING, calls ``fn``, reports SUCCESS with its return value as ``results``. If anything
    raises, reports ERROR with ``errorMessage = str(exc)`` and exits with status 1 (2 when the
    process was not started by runyard). runyard retries an ERROR with backoff, once this process
    has ended, while the job has attempts left; a failure another attempt cannot fix
    (``permanent(exc)``: a ``NonRetryable`` exception, a result that cannot be sent, a hook
    answer of 4xx) is reported with ``"retry": false`` and ends the job at once. Usable as
    ``run(main)`` or as a decorator (``@run``, which runs the function right away, so put it in
    the script, not in an importable module).
    """
    if fn is None:
        return lambda f: run(f, client=client)
    try:
        job = client if client is not None else JobClient.from_env()
    except (JobClientError, ValueError) as exc:
        print(f"runyard_job: {exc}", file=sys.stderr)
        sys.exit(2)
    try:
        job.running()
        result = fn(job, job.args())
    except Exception as exc:  # the job failed: say why, then exit non-zero
        _failed(job, exc, str(exc) or type(exc).__name__)
    began = time.monotonic()
    try:
        job.result(result)
    except Exception as exc:  # the work is done but its result cannot be reported
        # The ERROR gets what is left of the result's window, not a second one: the process
        # lingers at most one window (docs/hooks.md, "When the hook is briefly down").
        left = max(0.0, job.report_window - (time.monotonic() - began))
        _failed(job, exc, f"could not report the result: {exc or type(exc).__name__}", window=left)
    return result


def permanent(exc: BaseException) -> bool:
    """Whether another attempt of the job could not fix ``exc``: a ``NonRetryable``, a body that
    cannot be sent as JSON (``BadPayload``: NaN, a set, nesting too deep), or a hook answer of
    4xx other than 401, 408 and 429 (the request itself is refused: too large, not JSON,
    invalid, a file that is not there)."""
    if isinstance(exc, (NonRetryable, BadPayload)):
        return True
    if isinstance(exc, HookError):
        return 400 <= exc.status_code < 500 and exc.status_code not in TRANSIENT_4XX
    return False


def _failed(job: JobClient, exc: Exception, message: str, window: Optional[float] = None) -> NoReturn:
    """Prints the traceback (the job's log), reports ERROR (retried unless ``permanent``), exits 1.
    Called in an ``except`` block. ``window``: the report window of the ERROR report (the
    client's own when None)."""
    secret = job._secret.reveal()
    # Its stderr is the job's log: the traceback is redacted as the reported message is.
    print(redact(traceback.format_exc(), secret), end="", file=sys.stderr)
    # A lone surrogate in a message would make the report itself unsendable (400 bad_json).
    message = redact(message, secret).encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(exc, HookError) and exc.status_code == 409:
        # The job already reported, or its time ran out: no report is taken any more.
        print(f"runyard_job: the job can no longer report, not reporting the error: {exc}", file=sys.stderr)
        sys.exit(1)
    kept = job.report_window
    if window is not None:
        job.report_window = window
    try:
        job.fail(message, retry=not permanent(exc))
    except Exception as report_error:
        print(f"runyard_job: could not report the error: {report_error}", file=sys.stderr)
    finally:
        job.report_window = kept  # a client passed to run() is the caller's
    sys.exit(1)
