"""runyard-job: the Python side of runyard's job hook API.

Layout:
- ``client.py``: JobClient (status, progress, logs, results, job args, download, upload).
- ``client_logs.py``: log lines in several reports, and what a failed one does (not raise: a note,
  a count, a ``LogLinesLost`` warning), as the Rust client does.
- ``signing.py``: v1/v2 hook signatures as pure functions.
- ``errors.py``: HookError, BadPayload and friends (never carrying the job's secret), NonRetryable,
  the LogLinesLost warning.
- ``entry.py``: ``run(fn)``, the RUNNING -> fn -> SUCCESS/ERROR boilerplate.
- ``webhook.py``: ``verify(key, header, body)`` for runyard's signed webhooks (receivers).
- ``api.py``: Client and AsyncClient, the submit side: submit jobs (one or a batch), wait for them,
  follow events; over one request layer (``api_core.py``, ``api_follow.py``, ``api_batch.py``:
  what to send and what answers mean, no I/O) and two thin transports (``api_transport.py``); the
  event stream read by the HTML standard's rules (``sse.py``).
- ``api_errors.py``: ApiError, JobFailed, WaitTimeout and friends, raised by the submit client.
"""

from .client import JobClient, hash_file, resolve_location
from .entry import run
from .errors import (
    BadPayload,
    HookError,
    IntegrityError,
    JobClientError,
    LogLinesLost,
    MissingEnvironment,
    NonRetryable,
)
from .api import AsyncClient, AsyncJob, BatchItem, BatchResult, Client, Job
from .api_errors import (
    ApiError,
    EventsMissing,
    Forbidden,
    JobCancelled,
    JobFailed,
    JobNotSuccessful,
    JobTimedOut,
    NotFound,
    ServerUnreachable,
    Unauthorized,
    WaitTimeout,
)

__all__ = [
    "JobClient",
    "Client",
    "AsyncClient",
    "Job",
    "AsyncJob",
    "BatchItem",
    "BatchResult",
    "ApiError",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "EventsMissing",
    "ServerUnreachable",
    "JobNotSuccessful",
    "JobFailed",
    "JobTimedOut",
    "JobCancelled",
    "WaitTimeout",
    "HookError",
    "BadPayload",
    "IntegrityError",
    "LogLinesLost",
    "JobClientError",
    "MissingEnvironment",
    "NonRetryable",
    "hash_file",
    "resolve_location",
    "run",
]

__version__ = "0.1.0"
