"""JobClient: what a running job uses to talk to runyard's hook.

The hook is ``JOB_HOOK`` (``{public_url}/async``); every call to it is signed (v2 by default,
v1 for servers that still speak webda's timestamp-only scheme). File bytes go to and come from
the short-lived URLs the hook hands out; those URLs carry their own authorization, so they are
fetched without the job's headers (and a signed request never follows a redirect, so the job's
headers never leave for another host).
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import os
import re
import sys
import tempfile
import threading
import time
import warnings
from typing import Any, Dict, Iterable, Optional, Tuple, Union
from urllib.parse import quote, urlsplit

import requests

from .api_requests import file_segment, signal_segment
from .client_logs import send_reports
from .client_retry import (
    DEFAULT_REPORT_WINDOW,
    NO_ANSWER,
    checked_window,
    pause,
    report_window_from_env,
    taken_before,
    worth_waiting_for,
)
from .errors import BadPayload, HookError, IntegrityError, JobClientError, LogLinesLost, MissingEnvironment, cut_error
from .signing import SIGNATURES, job_headers, new_nonce

REQUIRED_ENV = ("JOB_ID", "JOB_SECRET_KEY", "JOB_HOOK")
CHUNK_SIZE = 64 * 1024
#: (connect, read) seconds; applied to every request, including file transfers (per read).
DEFAULT_TIMEOUT = (10.0, 60.0)
#: Answers worth another try: the hook (or a proxy in front of it) was briefly unavailable.
RETRY_STATUSES = (502, 503, 504)
#: How long after signing a retry may send the very same signed request again (same
#: ``X-Job-Time``): the server accepts a time up to 5 minutes away from its clock; one minute of
#: that is left for clock skew. Later, a retry is signed afresh.
RESEND_WINDOW = 240.0
#: Most log lines the hook takes in one report (more is 413 ``too_large``); a report of this
#: client carries one fewer, room for the note of lines an earlier report lost (client_logs.py).
MAX_REPORT_LINES = 1000
#: A log line's longest piece, in UTF-8 bytes: a longer line is stored in pieces, as the server
#: stores a job's stdout (docs/architecture.md).
MAX_LINE_BYTES = 16 * 1024
#: Most bytes of log lines (as JSON) one report carries: well within the server's default body
#: limit (``api.max_body_bytes``, 1 MiB), also for lines escaped six-fold (control bytes).
MAX_REPORT_LOG_BYTES = 256 * 1024
# Map.hash becomes a file name: only plain hex-ish names, never a path.
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]{1,128}")

Timeout = Union[float, Tuple[float, float]]


class Secret:
    """Holds the job's secret; never shows it in repr/str (so logs and tracebacks stay clean)."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__


def _md5():
    # usedforsecurity=False: md5 is a content checksum here, and this keeps FIPS builds working.
    return hashlib.md5(usedforsecurity=False)


def hash_file(filepath: str) -> Tuple[str, str]:
    """(md5 hex of the content, md5 hex of b"WEBDA" + content), in one streaming pass."""
    file_hash = _md5()
    challenge = _md5()
    challenge.update(b"WEBDA")
    with open(filepath, "rb") as f:
        while True:
            chunk = f.read(CHUNK_SIZE)
            if not chunk:
                break
            file_hash.update(chunk)
            challenge.update(chunk)
    return file_hash.hexdigest(), challenge.hexdigest()


def md5_file(filepath: str) -> str:
    digest = _md5()
    with open(filepath, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_SIZE), b""):
            digest.update(chunk)
    return digest.hexdigest()


def origin_of(url: str) -> str:
    """``scheme://host:port`` of an absolute URL."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def resolve_location(hook: str, location: str) -> str:
    """A file URL from the hook: absolute as is, origin-relative (``/...``) against the hook's origin."""
    if not isinstance(location, str) or not location:
        raise JobClientError("the hook answered without a file URL")
    parts = urlsplit(location)
    if parts.scheme in ("http", "https") and parts.netloc:
        return location
    if location.startswith("/"):
        return origin_of(hook) + location
    raise JobClientError(
        f"cannot resolve file URL {location!r}: expected an absolute http(s) URL or a path starting with '/'"
    )


def _pieces(line: str) -> Iterable[str]:
    """A line of at most MAX_LINE_BYTES as is, a longer one in pieces of at most that many bytes,
    never cut inside a UTF-8 character (the server's rule for stdout). ``line`` has no lone
    surrogate (``split_log_lines`` escaped them)."""
    data = line.encode("utf-8")
    if len(data) <= MAX_LINE_BYTES:
        yield line
        return
    start = 0
    while len(data) - start > MAX_LINE_BYTES:
        end = start + MAX_LINE_BYTES
        # Never inside a character, nor right after a \r (the server would drop it: a line's end);
        # start is a character's start, so this stops at the latest after the first character.
        while data[end] & 0xC0 == 0x80 or (end > start + 1 and data[end - 1] == 0x0D):
            end -= 1
        yield data[start:end].decode("utf-8")
        start = end
    yield data[start:].decode("utf-8")


def split_log_lines(lines: Iterable[str]) -> Iterable[str]:
    """The lines the server stores for ``lines``, as it cuts a job's stdout: a line ends at
    ``\n`` (a trailing ``\r`` dropped), a line over MAX_LINE_BYTES goes in pieces. A lone
    surrogate (a file name from ``os.listdir`` on a disk that is not UTF-8...), which JSON in
    UTF-8 cannot carry (the hook would refuse the whole report: ``400 bad_json``), is sent
    escaped: ``"\\udcff"``."""
    for text in lines:
        text = str(text).encode("utf-8", "backslashreplace").decode("utf-8")
        parts = text.split("\n")
        if len(parts) > 1 and parts[-1] == "":
            parts.pop()  # "a\n" is one line, as on stdout
        for part in parts:
            yield from _pieces(part.rstrip("\r"))


def log_reports(lines: Iterable[str]) -> Iterable[list]:
    """``lines`` (split as the server stores them) grouped into reports the hook takes: at most
    MAX_REPORT_LINES - 1 lines (room for a lost note) and about MAX_REPORT_LOG_BYTES bytes of
    JSON each."""
    report: list = []
    size = 0
    for line in split_log_lines(lines):
        cost = len(encode_json(line)) + 1
        if report and (len(report) + 1 >= MAX_REPORT_LINES or size + cost > MAX_REPORT_LOG_BYTES):
            yield report
            report, size = [], 0
        report.append(line)
        size += cost
    if report:
        yield report


def _warn_from_caller(warning: Warning) -> None:
    """``warnings.warn`` naming the first caller outside this package (the job's own line)."""
    frame, level = sys._getframe(1), 3  # the caller of status() (1 is this function)
    while frame.f_back is not None and frame.f_back.f_globals.get("__name__", "").startswith("runyard_job."):
        frame, level = frame.f_back, level + 1
    warnings.warn(warning, stacklevel=level)


def _segment(value: Any) -> str:
    return quote(str(value), safe="")


def _file_path(store: str, uuid: str, property: str) -> str:
    """``store/uuid/property`` of a file path; names the server refuses raise ``ValueError``
    before anything is sent (``.`` or ``..`` would be resolved as a path: another route)."""
    uuid = str(uuid)
    if not uuid or any(c in uuid for c in "/\\."):
        raise ValueError(f"a file uuid must be a plain name without `/`, `\\` or `.` (got {uuid!r}); nothing sent")
    return f"{file_segment('store', store)}/{_segment(uuid)}/{file_segment('property', property)}"


def encode_json(payload: Any) -> bytes:
    """The exact bytes of a JSON body (compact, UTF-8, not ASCII-escaped). What JSON cannot carry
    (NaN or infinity, a type JSON has not, nesting deeper than Python encodes) raises
    ``BadPayload``: sending it again could never work."""
    try:
        text = json.dumps(payload, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    except (ValueError, TypeError, RecursionError) as exc:
        raise BadPayload(f"the request body cannot be sent as JSON: {exc}") from None
    # A lone surrogate is sent as is, and refused by the server (400 bad_json).
    return text.encode("utf-8", "surrogatepass")


def runyard_error_code(response: requests.Response) -> Optional[str]:
    """The ``code`` of runyard's own ``{"error": {"code", "message"}}`` answer, else None (an
    answer that is not runyard's, e.g. a proxy's 504 page)."""
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None


class JobClient:
    """Client for the job hook API of one job.

    >>> job = JobClient.from_env()
    >>> job.running()
    >>> job.progress(0.5, "half way")
    >>> job.result({"rows": 42})
    """

    def __init__(
        self,
        job_id: str,
        secret: str,
        hook: str,
        signature: str = "v2",
        *,
        timeout: Timeout = DEFAULT_TIMEOUT,
        retries: int = 2,
        session: Optional[requests.Session] = None,
        report_window: Optional[float] = None,
    ):
        if not job_id:
            raise ValueError("job_id is required")
        if not secret:
            raise ValueError("secret is required")
        if signature not in SIGNATURES:
            raise ValueError(f"unknown signature version {signature!r}: expected one of {', '.join(SIGNATURES)}")
        hook = (hook or "").rstrip("/")
        parts = urlsplit(hook)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"hook must be an absolute http(s) URL such as http://127.0.0.1:7070/async, got {hook!r}")
        self.job_id = str(job_id)
        self.hook = hook
        self.signature = signature
        self.timeout = timeout
        self.retries = max(0, int(retries))
        #: Seconds a report with a status (RUNNING, SUCCESS, ERROR) is tried again after its first
        #: try when no answer came or the answer was 408, 429 or 5xx (client_retry.py).
        self.report_window = DEFAULT_REPORT_WINDOW if report_window is None else checked_window(report_window)
        self.session = session if session is not None else requests.Session()
        self._secret = Secret(secret)
        self._last_ms = 0
        self._last_ms_lock = threading.Lock()
        #: Log lines this client could not store, in all (entries as sent: a long line's pieces
        #: count one each); each call that lost some also warns ``LogLinesLost`` (its ``total``).
        self.lines_lost = 0
        self._lost_lock = threading.Lock()

    @classmethod
    def from_env(cls, signature: str = "v2", environ: Optional[Dict[str, str]] = None, **kwargs) -> "JobClient":
        """Build from JOB_ID, JOB_SECRET_KEY and JOB_HOOK (as runyard's runners set them), and the
        report window from RUNYARD_JOB_REPORT_WINDOW when set and ``report_window`` is not passed
        (``ValueError`` when it is not a number of seconds, 0 or more: client_retry.py)."""
        env = os.environ if environ is None else environ
        missing = [name for name in REQUIRED_ENV if not env.get(name)]
        if missing:
            raise MissingEnvironment(missing)
        if kwargs.get("report_window") is None:  # the one passed wins over the environment
            kwargs["report_window"] = report_window_from_env(env)
        return cls(env["JOB_ID"], env["JOB_SECRET_KEY"], env["JOB_HOOK"], signature, **kwargs)

    def __repr__(self) -> str:
        return f"JobClient(job_id={self.job_id!r}, hook={self.hook!r}, signature={self.signature!r})"

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> "JobClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ----------------------------------------------------------------- status reports

    def status(
        self,
        status: Optional[str] = None,
        progress: Optional[float] = None,
        details: Any = None,
        results: Any = None,
        logs: Union[None, str, Iterable[str]] = None,
        error: Optional[str] = None,
        retry: Optional[bool] = None,
    ) -> Dict[str, Any]:
        """POST {hook}/status with the given fields (None fields are left out); returns the answer,
        or ``{}`` when a retry found that an earlier send was taken and only its answer was lost.
        ``BadPayload`` when a field cannot be sent as JSON (NaN, a set...). Many or long ``logs``
        go in several reports (``log_reports``), the other fields with the last of them.

        A log report that fails (after its retries) does not raise: the next reports of the call
        are still sent (client_logs.py: the first of them stored starts with ``[runyard] N
        line(s) lost here: ...``, so a call whose last reports failed leaves no note; nothing
        more after a refusal such as 401, 403, 409 or 413, nor after 3 failures in a row but the
        report with the status, its only line the note),
        ``lines_lost`` counts the lines not stored and every call that lost some warns once
        (``LogLinesLost``, its text with the running total: each call's is printed). A failure
        raises (``HookError``, a connection error) when it concerns the other fields (the report
        carrying them refused, not sent because the reports before it stopped (a status is sent
        all the same), or its answer not JSON), and when no line was lost (a report without lines refused, the last report's
        answer not JSON)."""
        if isinstance(logs, str):
            logs = [logs]
        fields = (
            ("status", status),
            ("progress", progress),
            ("statusDetails", details),
            ("results", results),
            ("errorMessage", None if error is None else cut_error(error)),
            ("retry", retry),
        )
        body = {key: value for key, value in fields if value is not None}
        # The other fields first: one JSON cannot carry (NaN...) raises before any log is sent.
        encode_json(body)
        # A status change (the job's result above all) outlasts a restart of the hook's API node.
        window = self.report_window if status is not None else 0.0
        if logs is None:
            return self._hook_call("POST", "/status", body, once=True, window=window)
        sent = send_reports(
            lambda report: self._hook_call(
                "POST", "/status", report, once=True, window=window if "status" in report else 0.0
            ),
            body,
            list(log_reports(logs)),
            self._secret.reveal(),
            "POST " + urlsplit(self.hook + "/status").path,  # as the Rust client names it
        )
        if sent.lost:
            with self._lost_lock:
                self.lines_lost += sent.lost
                total = self.lines_lost
            # The running total makes every call's text differ: Python's default filter shows a
            # warning whose text and line were already shown only once.
            _warn_from_caller(LogLinesLost(sent.lost, sent.why, sent.status_code, total))
        if sent.error is not None:
            raise sent.error
        return sent.answer

    def running(self) -> Dict[str, Any]:
        return self.status("RUNNING")

    def progress(self, value: float, details: Any = None) -> Dict[str, Any]:
        """Report progress, a fraction from 0.0 to 1.0, with optional statusDetails."""
        return self.status(progress=value, details=details)

    def log(self, *lines: str) -> Dict[str, Any]:
        """Append log lines (the ``job`` stream); as many and as long as needed: they are sent in
        as many reports as the hook's limits ask for. Returns the last stored report's answer
        (``{}`` if none was stored). Never raises because lines were lost: they are counted in
        ``lines_lost`` and warned (``LogLinesLost``); raises when no line was lost yet the call
        failed (``log()`` refused, the last answer not JSON), see ``status``."""
        return self.status(logs=[str(line) for line in lines])

    def result(self, value: Any) -> Dict[str, Any]:
        """Report the job's results and SUCCESS."""
        return self.status("SUCCESS", results=value)

    def fail(self, message: str, retry: bool = True) -> Dict[str, Any]:
        """Report ERROR with an error message.

        Once this process has ended, runyard retries the job with backoff while it has attempts
        left; ``retry=False`` (sent as ``"retry": false``) makes the failure final.
        """
        if retry:
            return self.status("ERROR", error=str(message))
        return self.status("ERROR", error=str(message), retry=False)

    def signal(self, key: str, payload: Any = None, id: Optional[str] = None) -> Dict[str, Any]:
        """POST {hook}/signal/{key} ``{payload?, id?}``: a readiness signal (an ``id`` makes it
        idempotent: the same id again returns the first record); returns ``{key, seq, at, id}``
        (``{}`` when, without an id, a retry found the signal written and its answer lost). An
        ``id`` of ``job:`` and a job id (reserved for the records a job's ``emits`` writes) is refused:
        ``HookError`` 422, nothing written. The keys ``.`` and ``..`` (which a URL resolves as a
        path; the server refuses them) raise ``ValueError`` before anything is sent."""
        path = "/signal/" + signal_segment(key)
        body: Dict[str, Any] = {}
        if payload is not None:
            body["payload"] = payload
        if id is not None:
            body["id"] = id
        # With an id, sending it again returns the first record; without one, it must go once.
        return self._hook_call("POST", path, body, once=id is None)

    # ----------------------------------------------------------------- the job itself

    def job(self) -> Dict[str, Any]:
        """GET {hook}/job: ``{id, type, args, attempt}``."""
        return self._hook_call("GET", "/job")

    def args(self) -> Any:
        """The job's args: JOB_ARGS (JSON) when set, else asked from the hook. ``{}`` when null.

        A runner set to ``large_args = "hook"`` leaves JOB_ARGS out when the args are larger than
        Linux takes in one environment string (it sets JOB_ARGS_SIZE instead): they are then read
        from the hook.
        """
        raw = os.environ.get("JOB_ARGS")
        if raw is not None and raw.strip():
            try:
                value = json.loads(raw)
            except ValueError as exc:
                raise JobClientError(f"JOB_ARGS is not valid JSON: {exc}") from None
        else:
            value = self.job().get("args")
        return {} if value is None else value

    # ----------------------------------------------------------------- files

    def resolve(self, location: str) -> str:
        return resolve_location(self.hook, location)

    def download(
        self,
        property: str,
        index: int = 0,
        dirpath: str = ".",
        store: str = "jobs",
        uuid: Optional[str] = None,
    ) -> str:
        """Fetch file ``index`` of ``property`` into ``dirpath/<md5>`` and return that path.

        A file already there with the right content is not fetched again. The bytes are checked
        against the announced md5 before the file appears under its final name.
        """
        # Only None means the job's own: `uuid or job_id` took "" for it too (probe s54b F1).
        path = f"/download/{_file_path(store, self.job_id if uuid is None else uuid, property)}/{int(index)}"
        answer = self._hook_call("GET", path)
        try:
            location = answer["Location"]
            expected = str(answer["Map"]["hash"])
        except (KeyError, TypeError):
            raise JobClientError("the download answer lacks Location or Map.hash") from None
        if not _SAFE_NAME.fullmatch(expected):
            raise IntegrityError(f"refusing to use {expected!r} as a file name")
        expected_md5 = expected.lower()

        os.makedirs(dirpath, exist_ok=True)
        target = os.path.join(dirpath, expected)
        if os.path.isfile(target) and md5_file(target) == expected_md5:
            return target

        url = self.resolve(location)
        fd, partial = tempfile.mkstemp(dir=dirpath, prefix=".download-")
        try:
            digest = _md5()
            with os.fdopen(fd, "wb") as out:
                with self.session.get(url, stream=True, timeout=self.timeout) as response:
                    if response.status_code >= 300:
                        raise HookError.from_response(response, self._secret.reveal())
                    for chunk in response.iter_content(CHUNK_SIZE):
                        digest.update(chunk)
                        out.write(chunk)
            if digest.hexdigest() != expected_md5:
                raise IntegrityError(
                    f"downloaded {property}[{index}] has md5 {digest.hexdigest()}, the hook announced {expected_md5}"
                )
            os.replace(partial, target)
        except BaseException:
            if os.path.exists(partial):
                os.remove(partial)
            raise
        return target

    def upload(
        self,
        property: str,
        filepath: str,
        metadata: Optional[Dict[str, Any]] = None,
        store: str = "jobs",
        uuid: Optional[str] = None,
    ) -> bool:
        """Store ``filepath`` as a new file of ``property``.

        Returns False when the server already had the content (proven by the challenge: the last
        try sent no bytes), True when the bytes were sent. ``metadata`` defaults to the file's name and mimetype.

        Tried again, whole (the upload request signed afresh, then the bytes to the new URL), within
        ``report_window`` like a status report when a step got no answer or 408, 429 or a 5xx:
        the server attaches the same file from the same attempt once, so a try whose answer was
        lost does not attach it twice.
        """
        # Only None means the job's own: an empty uuid is refused (probe s54b F1).
        path = f"/upload/{_file_path(store, self.job_id if uuid is None else uuid, property)}"
        file_hash, challenge = hash_file(filepath)
        if metadata is None:
            name = os.path.basename(filepath)
            metadata = {"name": name}
            mimetype = mimetypes.guess_type(name)[0]
            if mimetype:
                metadata["mimetype"] = mimetype
        request = {"hash": file_hash, "challenge": challenge, "metadata": metadata}
        deadline, attempt = time.monotonic() + self.report_window, 0
        while True:
            try:
                return self._upload_once(path, request, filepath)
            except NO_ANSWER:
                if time.monotonic() >= deadline:
                    raise
            except HookError as e:
                if not worth_waiting_for(e.status_code) or time.monotonic() >= deadline:
                    raise
            attempt += 1
            time.sleep(pause(attempt, deadline - time.monotonic()))

    def _upload_once(self, path: str, request: Dict[str, Any], filepath: str) -> bool:
        """One try of ``upload``: the upload request, then the bytes if the server asks for them."""
        answer = self._hook_call("PUT", path, request)
        if answer.get("done"):
            return False
        url = self.resolve(answer.get("url"))
        method = str(answer.get("method") or "PUT").upper()
        with open(filepath, "rb") as f:
            response = self.session.request(
                method,
                url,
                data=f,
                headers={"Content-Type": "application/octet-stream"},
                timeout=self.timeout,
            )
        if response.status_code >= 300:
            raise HookError.from_response(response, self._secret.reveal())
        return True

    # ----------------------------------------------------------------- signed transport

    def _timestamp(self) -> str:
        # Strictly increasing per client: two reports in the same millisecond would otherwise
        # look like a replay to the server (always for v1, whose hash covers only the time).
        # Under a lock: threads of one job share the client (read, then write, could repeat).
        # Other clients of the job (another JobClient, another process) may sign the same
        # millisecond: v2 requests carry a random X-Job-Nonce for that (_sign).
        with self._last_ms_lock:
            now = int(time.time() * 1000)
            self._last_ms = max(now, self._last_ms + 1)
            return str(self._last_ms)

    def _sign(
        self, method: str, url: str, headers: Dict[str, str], body: Optional[bytes], nonce: bool = True
    ) -> requests.PreparedRequest:
        prepared = self.session.prepare_request(requests.Request(method, url, data=body, headers=headers))
        # path_url is the request target exactly as it goes on the wire (path + "?query").
        prepared.headers.update(
            job_headers(
                self.job_id,
                self._secret.reveal(),
                self._timestamp(),
                self.signature,
                prepared.method,
                prepared.path_url,
                body or b"",
                # A fresh one per signing; a re-send of this prepared request keeps it.
                new_nonce() if nonce and self.signature == "v2" else None,
            )
        )
        return prepared

    def _hook_call(
        self, method: str, path: str, payload: Any = None, once: bool = False, window: float = 0.0
    ) -> Dict[str, Any]:
        """One signed call to the hook; JSON in, JSON out.

        Tried again (``retries`` times, after a short pause) when no answer came or the answer was
        502, 503 or 504; with a ``window`` (a status report: ``report_window``), also for as long
        as ``window`` seconds after the first try, and also after a 408, 429 or other 5xx
        (client_retry.py). A call that acts (``once``: a status report, a signal without an id) must
        not act twice when only its answer was lost (a proxy's 504, a read timeout after the server
        took it): its retry sends the very same signed request again, which the server either
        takes (the first send never reached it) or refuses as a replay (``401 replay``: it did,
        and took it), and the call then returns ``{}``; so does a final report (SUCCESS, ERROR)
        refused ``409`` on a later try with ``error.reported`` its own status (an earlier try was
        applied, its answer the server's 5xx). It is signed afresh when the server itself
        answered (its own 503 took nothing, and spent the signature; but a re-send answered
        ``503 replay_unavailable`` is sent again as it was: the hook could not tell whether it saw
        the first send) and when ``RESEND_WINDOW`` has passed since it was signed. A ``401 bad_signature`` to a request with an
        ``X-Job-Nonce`` (a node of an earlier build) is signed again without one, at once, only
        on its first send: a re-send refused so may follow a first send a newer node took, so it
        is sent again as it was while tries are left (within ``RESEND_WINDOW``), and the call
        then fails, never signed again. Other calls (reads, the upload request) are signed
        afresh for every try.
        """
        url = self.hook + path
        headers = {"Accept": "application/json"}
        body = None
        if payload is not None:
            # Serialized here, sent as is: the v2 signature covers exactly these bytes.
            body = encode_json(payload)
            headers["Content-Type"] = "application/json"

        prepared, signed_at, sent = self._sign(method, url, headers, body), time.monotonic(), False
        deadline, attempt, nonce = signed_at + window, 0, True
        doubt: Optional[HookError] = None  # a re-send's refusal by a node that does not know nonces
        while True:
            settings = self.session.merge_environment_settings(prepared.url, {}, None, None, None)
            try:
                response = self.session.send(prepared, timeout=self.timeout, allow_redirects=False, **settings)
            except NO_ANSWER:
                if not self._may_retry(attempt, deadline):
                    raise
                unknown = True  # it may have reached the server and been taken
            else:
                code = runyard_error_code(response) if response.status_code >= 300 else None
                nonce_refused = response.status_code == 401 and code == "bad_signature" and "X-Job-Nonce" in prepared.headers
                if nonce_refused and not sent:
                    # A hook that does not know X-Job-Nonce (an API node of an earlier build)
                    # refused its signature, taking nothing: signed again without one, at once.
                    nonce = False
                    prepared, signed_at, sent = self._sign(method, url, headers, body, nonce), time.monotonic(), False
                    continue
                if nonce_refused:
                    # A re-send, refused so by a node of an earlier build (it checks the
                    # signature first): the first send may have been taken by a newer node.
                    # Signed again (without a nonce), that node could take it twice: the same
                    # request is sent again while tries are left, never signed again.
                    doubt = HookError.from_response(response, self._secret.reveal())
                    if not self._may_retry(attempt, deadline):
                        break
                    unknown = True
                else:
                    if once and sent and response.status_code == 401 and code == "replay":
                        return {}  # an earlier send of this very request was taken; its answer was lost
                    # A re-sent request past the server's window: sign it again.
                    expired = sent and response.status_code == 401 and code == "expired"
                    again = response.status_code in RETRY_STATUSES or expired
                    again = again or (window > 0 and worth_waiting_for(response.status_code))
                    if not again or not self._may_retry(attempt, deadline):
                        break
                    # runyard's own refusal took nothing; a proxy's says nothing. A re-send the
                    # replay memory could not check leaves the first send's fate unknown: as it was.
                    unknown = code is None or (sent and code == "replay_unavailable")
                    if code == "replay_unapplied":
                        doubt = None  # the first send was not applied: a fresh request is safe
            attempt += 1
            if attempt <= self.retries:
                time.sleep(0.5 * 2 ** (attempt - 1))
            else:  # within the window: backoff, at most MAX_PAUSE, never past the window's end
                time.sleep(pause(attempt, deadline - time.monotonic()))
            if once and (unknown or doubt is not None) and time.monotonic() - signed_at < RESEND_WINDOW:
                sent = True
            elif doubt is not None:
                raise doubt  # past RESEND_WINDOW: whether the first send was taken stays unknown
            else:
                prepared, signed_at, sent = self._sign(method, url, headers, body, nonce), time.monotonic(), False

        if once and taken_before(response, payload, attempt):
            return {}  # an earlier try was applied, its answer the server's 5xx (or lost)
        if response.status_code >= 300:
            raise HookError.from_response(response, self._secret.reveal())
        if not response.content:
            return {}
        try:
            answer = response.json()
        except ValueError:
            raise HookError(response.status_code, "bad_response", f"{method} {path}: the hook did not answer JSON") from None
        return answer if isinstance(answer, dict) else {"result": answer}

    def _may_retry(self, attempt: int, deadline: float) -> bool:
        """Whether a call that failed on try ``attempt + 1`` is tried again: ``retries`` tries
        are left, or its window (``deadline``, on ``time.monotonic()``) has not ended."""
        return attempt < self.retries or time.monotonic() < deadline
