"""run(): the few lines every job script would otherwise repeat."""

from __future__ import annotations

import sys
import traceback
from typing import Any, Callable, Optional

from .client import JobClient
from .errors import JobClientError, NonRetryable, redact

JobFunction = Callable[[JobClient, Any], Any]


def run(fn: Optional[JobFunction] = None, *, client: Optional[JobClient] = None):
    """Run ``fn(client, args)`` as this process's job, and return what it returned.

    Reports RUNNING, calls ``fn``, reports SUCCESS with its return value as ``results``. If anything
    raises, reports ERROR with ``errorMessage = str(exc)`` and exits with status 1 (2 when the
    process was not started by runyard). runyard retries an ERROR with backoff, once this process
    has ended, while the job has attempts left; a ``NonRetryable`` exception is reported with
    ``"retry": false`` and ends the job at once. Usable as ``run(main)`` or as a decorator (``@run``, which
    runs the function right away, so put it in the script, not in an importable module).
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
        job.result(result)
        return result
    except Exception as exc:  # the job failed: say why, then exit non-zero
        # Its stderr is the job's log: the traceback is redacted as the reported message is.
        print(redact(traceback.format_exc(), job._secret.reveal()), end="", file=sys.stderr)
        message = redact(str(exc) or type(exc).__name__, job._secret.reveal())
        try:
            job.fail(message, retry=not isinstance(exc, NonRetryable))
        except Exception as report_error:
            print(f"runyard_job: could not report the error: {report_error}", file=sys.stderr)
        sys.exit(1)
