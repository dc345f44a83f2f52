"""runyard-job: the Python side of runyard's job hook API.

Layout:
- ``client.py``: JobClient (status, progress, logs, results, job args, download, upload).
- ``signing.py``: v1/v2 hook signatures as pure functions.
- ``errors.py``: HookError and friends (never carrying the job's secret).
- ``entry.py``: ``run(fn)``, the RUNNING -> fn -> SUCCESS/ERROR boilerplate.
- ``api.py``: Client and AsyncClient, the submit side: submit jobs, wait for them, follow events.
- ``api_errors.py``: ApiError, JobFailed, WaitTimeout and friends, raised by the submit client.
"""

from .client import JobClient, hash_file, resolve_location
from .entry import run
from .errors import HookError, IntegrityError, JobClientError, MissingEnvironment
from .api import AsyncClient, AsyncJob, Client, Job
from .api_errors import (
    ApiError,
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
    "ApiError",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "ServerUnreachable",
    "JobNotSuccessful",
    "JobFailed",
    "JobTimedOut",
    "JobCancelled",
    "WaitTimeout",
    "HookError",
    "IntegrityError",
    "JobClientError",
    "MissingEnvironment",
    "hash_file",
    "resolve_location",
    "run",
]

__version__ = "0.1.0"
