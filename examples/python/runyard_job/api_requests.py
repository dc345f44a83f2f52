"""What the submit client sends, as plain data: submit bodies, multipart parts, query strings.

No I/O here and nothing that depends on the flavour (``Client`` or ``AsyncClient``); the
request layer (``api_core.py``) builds its requests from these.
"""

from __future__ import annotations

import datetime as _dt
import mimetypes
import os
import re
from typing import IO, Any, Dict, List, Literal, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import quote

#: Statuses a job never leaves (except through an explicit retry).
TERMINAL = frozenset({"SUCCESS", "ERROR", "TIMEOUT", "CANCELLED"})
#: Seconds per ordinary request.
DEFAULT_TIMEOUT = 30.0
#: Longest silence accepted on the event stream before reconnecting (the server sends a
#: keep-alive comment every 15 s). The job is read again then (``REREAD_INTERVAL`` has passed): a
#: stream that sends nothing at all (a proxy that buffers it, or never answers it) holds up that
#: read no longer than this, as the CLI reads the job after 30 s without an event.
STREAM_IDLE = 30.0
#: Pause between reconnects of the event stream: doubles from the first to the last value.
RECONNECT_DELAYS = (0.1, 2.0)
#: How long the event stream may stay unreachable before ``ServerUnreachable`` is raised.
RECONNECT_GIVE_UP = 60.0
#: Stream answers that mean "not for this token / not here": ``wait()`` then reads the job instead.
STREAM_REFUSED = (403, 404, 405)
POLL_INTERVAL = 0.5
#: While following a job's events, the job is read again when neither a read of it nor an event of
#: it came for this long (checked on every line of the stream, keep-alives included, and on every
#: reconnect), so that a job that is gone (removed by retention, a Redis that lost its data) raises
#: ``NotFound`` instead of a wait without end: a stream has nothing to say about a job that no
#: longer exists. A read that finds the job ended ends ``wait()``: a stream held silent by a proxy
#: would never say so (``events()`` reads on to the job's final event: ``EventsMissing`` when it
#: does not come within ``STREAM_IDLE``).
REREAD_INTERVAL = 15.0

#: A file for ``submit(files=...)``: a path, bytes, an open binary file, or
#: ``(name, content)`` / ``(name, content, mimetype)`` with content bytes or an open file.
FileSpec = Union[str, "os.PathLike[str]", bytes, IO[bytes], Tuple[Any, ...]]
Files = Mapping[str, Union[FileSpec, Sequence[FileSpec]]]
Seconds = Union[int, float, _dt.timedelta]
#: ``submit(notify=...)``: the webhook ``{"url", "events"}``; ``None`` (left out) takes the job
#: type's ``[[notify.defaults]]`` one, if any; ``False`` sends ``"notify": null``, no webhook at all.
Notify = Union[Mapping[str, Any], Literal[False], None]
When = Union[str, _dt.datetime]


# ---------------------------------------------------------------------------------------------
# Pure helpers shared by both flavours


def _rfc3339(value: When) -> str:
    if isinstance(value, str):
        return value
    # A naive datetime is local time, as Python's own astimezone() takes it.
    return value.astimezone(_dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _seconds(value: Seconds) -> float:
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    return float(value)


def _wait_item(item: Union[str, Mapping[str, Any]]) -> Dict[str, Any]:
    """``"key"`` or ``"key:3"`` -> ``{"key", "count"}``; a mapping passes as it is."""
    if isinstance(item, str):
        key, sep, count = item.rpartition(":")
        if sep and count.isdigit() and key:
            return {"key": key, "count": int(count)}
        return {"key": item}
    return dict(item)


def submit_body(
    type: str,
    args: Any = None,
    *,
    wait_for: Optional[Sequence[Union[str, Mapping[str, Any]]]] = None,
    deadline: Optional[When] = None,
    on_deadline: Optional[str] = None,
    idempotency_key: Optional[str] = None,
    channel: Optional[str] = None,
    notify: Notify = None,
    delay: Optional[Seconds] = None,
    run_at: Optional[When] = None,
    timeout: Optional[Union[Seconds, str]] = None,
    max_attempts: Optional[int] = None,
    backoff: Optional[Mapping[str, Any]] = None,
    runner: Optional[str] = None,
    emits: Optional[Sequence[str]] = None,
    extra: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """The JSON body of ``POST /async/jobs`` (fields left ``None`` are not sent; ``notify=False``
    is sent as ``null``: see ``Notify``)."""
    if delay is not None and run_at is not None:
        raise ValueError("give `delay` or `run_at`, not both")
    body: Dict[str, Any] = {"type": type}
    # None cannot say "no webhook": it is every keyword's "not sent", and a job type's default
    # webhook is then attached. False is the one spelling of null (True is no webhook to send).
    if notify is False:
        body["notify"] = None
    elif notify is True:
        raise TypeError("notify: give the webhook as {'url': ..., 'events': [...]}, or False for none")
    if args is not None:
        body["args"] = args
    if delay is not None:
        run_at = _dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(seconds=_seconds(delay))
    if run_at is not None:
        body["run_at"] = _rfc3339(run_at)
    if timeout is not None:
        body["timeout"] = timeout if isinstance(timeout, str) else _seconds(timeout)
    if wait_for is not None:
        body["wait_for"] = [_wait_item(i) for i in wait_for]
    if deadline is not None:
        body["deadline"] = _rfc3339(deadline)
    for key, value in (
        ("on_deadline", on_deadline),
        ("idempotency_key", idempotency_key),
        ("channel", channel),
        ("notify", None if notify is None or notify is False else dict(notify)),  # False: set above
        ("max_attempts", max_attempts),
        ("backoff", dict(backoff) if backoff is not None else None),
        ("runner", runner),
        ("emits", list(emits) if emits is not None else None),
    ):
        if value is not None:
            body[key] = value
    if extra:
        body.update(extra)
    return body


def _file_part(prop: str, spec: FileSpec, opened: List[IO[bytes]]) -> Tuple[str, Tuple[Any, ...]]:
    if isinstance(spec, tuple):
        if len(spec) == 2:
            name, content = spec
            mimetype = mimetypes.guess_type(str(name))[0] or "application/octet-stream"
        elif len(spec) == 3:
            name, content, mimetype = spec
        else:
            raise ValueError(f"files[{prop!r}]: a tuple is (name, content) or (name, content, mimetype)")
        return prop, (str(name), content, mimetype)
    if isinstance(spec, (bytes, bytearray)):
        return prop, ("", bytes(spec), "application/octet-stream")
    if isinstance(spec, (str, os.PathLike)):
        path = os.fspath(spec)
        f = open(path, "rb")
        opened.append(f)
        mimetype = mimetypes.guess_type(path)[0] or "application/octet-stream"
        return prop, (os.path.basename(path), f, mimetype)
    if hasattr(spec, "read"):
        name = os.path.basename(str(getattr(spec, "name", "") or ""))
        mimetype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return prop, (name, spec, mimetype)
    raise TypeError(f"files[{prop!r}]: expected a path, bytes, a binary file or a tuple, got {type(spec).__name__}")


def file_parts(files: Files, opened: List[IO[bytes]]) -> List[Tuple[str, Tuple[Any, ...]]]:
    """httpx ``files=`` parts: one per file, named by property, in order (a list under a property
    is several files). Files opened here are appended to ``opened`` (the caller closes them)."""
    parts = []
    for prop, value in files.items():
        specs: List[Any] = value if isinstance(value, list) else [value]
        for spec in specs:
            parts.append(_file_part(prop, spec, opened))
    return parts


def _headers(token: Optional[str]) -> Dict[str, str]:
    headers = {"Accept": "application/json", "User-Agent": "runyard-job-python"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _jobs_query(status: Optional[str], type: Optional[str], limit: int, cursor: Optional[str]) -> Dict[str, Any]:
    params: Dict[str, Any] = {"limit": min(max(1, limit), 100)}
    if status:
        params["status"] = status
    if type:
        params["type"] = type
    if cursor:
        params["cursor"] = cursor
    return params


def _segment(value: str) -> str:
    return quote(str(value), safe="")


_FILE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def file_segment(what: str, name: str) -> str:
    """A file ``property`` (or a file path's ``store``) as one path segment: 1-64 ASCII letters,
    digits, ``_`` or ``-``, the names the server takes; any other raises ``ValueError`` before
    anything is sent (``.`` and ``..`` would be resolved as a path and reach another route)."""
    name = str(name)
    if not _FILE_NAME.fullmatch(name):
        raise ValueError(f"a file {what} must be 1-64 letters, digits, `_` or `-` (got {name!r}); nothing sent")
    return name


def signal_segment(key: str) -> str:
    """A signal key as one path segment. ``.`` and ``..`` raise ``ValueError`` before anything is
    sent: a URL resolves such a segment (also written ``%2E``) as a path, and the server refuses
    these keys (as it refuses them as schedule names)."""
    if str(key) in (".", ".."):
        raise ValueError(
            f"a signal key may not be `.` or `..` (got `{key}`): a URL would resolve it as a path; the server refuses it"
        )
    return _segment(key)
