"""runyard-job: the Python side of runyard's job hook API.

Layout:
- ``client.py``: JobClient (status, progress, logs, results, job args, download, upload).
- ``signing.py``: v1/v2 hook signatures as pure functions.
- ``errors.py``: HookError and friends (never carrying the job's secret).
- ``entry.py``: ``run(fn)``, the RUNNING -> fn -> SUCCESS/ERROR boilerplate.
- ``webhook.py``: ``verify(key, header, body)`` for runyard's signed webhooks (receivers).
"""

from .client import JobClient, hash_file, resolve_location
from .entry import run
from .errors import HookError, IntegrityError, JobClientError, MissingEnvironment

__all__ = [
    "JobClient",
    "HookError",
    "IntegrityError",
    "JobClientError",
    "MissingEnvironment",
    "hash_file",
    "resolve_location",
    "run",
]

__version__ = "0.1.0"
