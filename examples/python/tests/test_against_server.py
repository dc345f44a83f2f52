"""End-to-end: the example jobs run by a real runyard server.

Skipped unless RUNYARD_TEST_SERVER is the base URL of a running server (e.g. http://127.0.0.1:7070)
started from the repository root with the runners of examples/python/runyard-test.toml, by a
python3 that has `requests` installed. RUNYARD_TEST_TOKEN, if set, is sent as a bearer token.
"""

import json
import os
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

SERVER = os.environ.get("RUNYARD_TEST_SERVER", "").rstrip("/")
TOKEN = os.environ.get("RUNYARD_TEST_TOKEN")
TERMINAL = {"SUCCESS", "ERROR", "TIMEOUT", "CANCELLED"}
TIMEOUT = 10  # seconds, per HTTP call
TEXT = "the quick brown fox\njumps over\n\nthe lazy dog\n"

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(not SERVER, reason="set RUNYARD_TEST_SERVER=http://127.0.0.1:7070 to run against a server"),
]


@pytest.fixture(scope="module")
def http():
    with requests.Session() as session:
        if TOKEN:
            session.headers["Authorization"] = f"Bearer {TOKEN}"
        yield session


def submit(http, job, inputs=None):
    """POST /async/jobs: JSON, or multipart with a `job` part and `inputs` file parts."""
    if inputs is None:
        response = http.post(f"{SERVER}/async/jobs", json=job, timeout=TIMEOUT)
    else:
        parts = [("job", (None, json.dumps(job), "application/json"))]
        parts += [("inputs", (f"input{i}.txt", data, "text/plain")) for i, data in enumerate(inputs)]
        response = http.post(f"{SERVER}/async/jobs", files=parts, timeout=TIMEOUT)
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["job_id"] and answer["status"], answer
    return answer["job_id"]


def wait(http, job_id, bound=60.0):
    """Poll GET /async/jobs/{id} until a terminal status."""
    deadline = time.monotonic() + bound
    job = None
    while time.monotonic() < deadline:
        response = http.get(f"{SERVER}/async/jobs/{job_id}", timeout=TIMEOUT)
        assert response.status_code == 200, response.text
        job = response.json()
        if job.get("status") in TERMINAL:
            return job
        time.sleep(0.2)
    pytest.fail(f"job {job_id} not terminal after {bound}s: {job}")


def results_of(http, job_id, job):
    for key in ("results", "result"):
        if job.get(key) is not None:
            return job[key]
    response = http.get(f"{SERVER}/async/jobs/{job_id}/result", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return response.json()


def output(http, job_id, index=0):
    response = http.get(f"{SERVER}/async/jobs/{job_id}/files/outputs/{index}", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return response.content


def events_for(http, job_id):
    """This job's events from the global stream, oldest first (pages until nothing new)."""
    found, last_id = [], "0"
    for _ in range(1000):
        response = http.get(f"{SERVER}/api/v1/async_event/", params={"last_id": last_id}, timeout=TIMEOUT)
        assert response.status_code == 200, response.text
        page = response.json()["result"]
        if not page or str(page[-1].get("id")) == last_id:
            break
        found += [e for e in page if e.get("job_id") == job_id]
        last_id = str(page[-1]["id"])
    return found


def test_wordcount(http):
    job_id = submit(http, {"type": "py.wordcount"}, inputs=[TEXT.encode()])
    job = wait(http, job_id)
    assert job["status"] == "SUCCESS", job
    assert results_of(http, job_id, job) == {"lines": 4, "words": 9}
    assert json.loads(output(http, job_id)) == {"lines": 4, "words": 9}

    events = events_for(http, job_id)
    statuses = [e["runyard_status"] for e in events]
    assert "RUNNING" in statuses and "SUCCESS" in statuses, events
    running, success = statuses.index("RUNNING"), statuses.index("SUCCESS")
    between = events[running + 1 : success]
    assert any((e.get("progress") or 0) > 0 for e in between), events
    assert events[success]["status"] == "done"
    assert all(e["status"] == "running" for e in between)


def test_seed_v1_client(http):
    job_id = submit(http, {"type": "py.seed_v1"}, inputs=[TEXT.encode()])
    job = wait(http, job_id)
    assert job["status"] == "SUCCESS", job
    assert results_of(http, job_id, job) == {"seed": True}
    assert output(http, job_id) == TEXT.encode()
    statuses = [e["runyard_status"] for e in events_for(http, job_id)]
    assert statuses.index("RUNNING") < statuses.index("SUCCESS")


def test_hello(http):
    job_id = submit(http, {"type": "py.hello", "args": {"name": "runyard"}})
    job = wait(http, job_id)
    assert job["status"] == "SUCCESS", job
    assert results_of(http, job_id, job) == {"hello": "runyard"}
    statuses = [e["runyard_status"] for e in events_for(http, job_id)]
    assert statuses.index("RUNNING") < statuses.index("SUCCESS")


def test_fail(http):
    job_id = submit(http, {"type": "py.fail"})
    job = wait(http, job_id)
    assert job["status"] == "ERROR", job
    assert "ERROR" in [e["runyard_status"] for e in events_for(http, job_id)]


def test_unsigned_hook_call_is_refused(http):
    response = requests.post(
        f"{SERVER}/async/status", json={"status": "RUNNING"}, headers={"X-Job-Id": str(uuid.uuid4())}, timeout=TIMEOUT
    )
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert error["code"] and error["message"]


def test_signal(http):
    key = f"py.ready.{uuid.uuid4().hex[:8]}"
    job_id = submit(http, {"type": "py.signal", "args": {"key": key, "payload": {"rows": 3}}})
    job = wait(http, job_id)
    assert job["status"] == "SUCCESS", job
    assert job["result"]["key"] == key and job["result"]["seq"] == 1, job
    response = http.get(f"{SERVER}/async/signals/{key}", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    records = response.json()["signals"]
    assert [(r["seq"], r["payload"]) for r in records] == [(1, {"rows": 3})], records


def test_flaky_is_retried_with_backoff_until_it_succeeds(http):
    # runyard-test.toml: max_attempts 3, backoff 300 ms then 600 ms, no jitter.
    job_id = submit(http, {"type": "py.flaky"})
    job = wait(http, job_id)
    assert job["status"] == "SUCCESS", job
    assert job["attempt"] == 3 and job["result"] == {"attempt": 3}, job
    assert job["exit_code"] == 0, job
    assert [run["outcome"] for run in job["runs"]] == ["ERROR", "ERROR", "SUCCESS"], job


def test_non_retryable_ends_the_job_at_once(http):
    job_id = submit(http, {"type": "py.flaky", "args": {"fatal": True}})
    job = wait(http, job_id)
    assert job["status"] == "ERROR", job
    assert job["attempt"] == 1, job
    assert "no retry can fix it" in job["error"], job
    assert job["exit_code"] == 1, job


class LossyProxy(ThreadingHTTPServer):
    """A reverse proxy in front of the hook that forwards every request, and answers 504 (its own
    page) instead of the hook's answer to the first status report matching each of ``lose``; a
    status report matching ``refuse`` is not forwarded at all, every time it comes: the proxy
    answers ``refuse_status`` (its own page) instead. The first status report matching
    ``restart_on`` is not forwarded either: the proxy goes down (the hook's node restarts), its
    connection and listener closed, so connections are refused for ``restart_seconds``, then it
    listens again on the same port."""

    daemon_threads = True

    def __init__(self, lose, refuse=None, refuse_status=503, restart_on=None, restart_seconds=3.0):
        super().__init__(("127.0.0.1", 0), LossyHandler)
        self.lose = list(lose)  # predicates on the report's JSON
        self.lost = []  # (report, the hook's answer the job never saw)
        self.refuse, self.refuse_status = refuse, refuse_status
        self.refused = []  # reports never forwarded
        self.restart_on, self.restart_seconds = restart_on, restart_seconds
        self.back = threading.Event()  # set once listening again after a restart

    def restart(self, connection):
        """Down now (``connection`` dropped unanswered, new ones refused), back after
        ``restart_seconds``. Called from a handler's thread."""
        self.shutdown()
        self.server_close()
        connection.shutdown(socket.SHUT_RDWR)
        time.sleep(self.restart_seconds)
        self.socket = socket.socket(self.address_family, self.socket_type)
        self.server_bind()  # the same port: server_address
        self.server_activate()
        threading.Thread(target=self.serve_forever, daemon=True).start()
        self.back.set()

    @property
    def hook(self):
        return f"http://127.0.0.1:{self.server_address[1]}/async"


class LossyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _forward(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        report = json.loads(body) if self.path == "/async/status" and body else {}
        if report and self.server.restart_on is not None and self.server.restart_on(report):
            self.server.restart_on = None
            self.close_connection = True
            return self.server.restart(self.connection)
        if report and self.server.refuse is not None and self.server.refuse(report):
            self.server.refused.append(report)
            return self._answer(f"<html>{self.server.refuse_status}</html>".encode(), self.server.refuse_status, "text/html")
        headers = {k: v for k, v in self.headers.items() if k.lower().startswith("x-job-") or k.lower() == "content-type"}
        answer = requests.request(self.command, SERVER + self.path, data=body, headers=headers, timeout=TIMEOUT)
        lose = next((p for p in self.server.lose if p(report)), None)
        if lose is not None:
            self.server.lose.remove(lose)
            self.server.lost.append((report, answer.status_code))
            data, status, kind = b"<html>504 Gateway Time-out</html>", 504, "text/html"
        else:
            data, status, kind = answer.content, answer.status_code, answer.headers.get("Content-Type", "")
        self._answer(data, status, kind)

    def _answer(self, data, status, kind):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = _forward


@pytest.fixture
def lossy():
    def start(*lose, **refusing):
        proxy = LossyProxy(lose, **refusing)
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        started.append(proxy)
        return proxy

    started = []
    yield start
    for proxy in started:
        proxy.shutdown()
        proxy.server_close()


def job_log(http, job_id):
    response = http.get(f"{SERVER}/async/jobs/{job_id}/logs", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return [line["line"] for line in response.json()["lines"]]


def job_log_all(http, job_id):
    """Every stored line of the job, following `next`."""
    lines, after = [], 0
    while True:
        response = http.get(
            f"{SERVER}/async/jobs/{job_id}/logs", params={"after": after, "limit": 10000}, timeout=TIMEOUT
        )
        assert response.status_code == 200, response.text
        page = response.json()
        lines += page["lines"]
        if not page["lines"] or page.get("next") is None:
            return lines
        after = page["next"]


def test_many_and_long_log_lines_are_all_stored(http):
    # 2,500 lines (the hook takes 1,000 a report) and a 2 MiB line (over its 1 MiB body limit):
    # the client sends them in several reports, the long line in 16 KiB pieces, and the job
    # succeeds with every line stored, in order.
    lines = [f"row {i}" for i in range(2500)]
    job_id = submit(http, {"type": "py.report", "args": {"lines": lines, "long_line": 1024 * 1024}})
    job = wait(http, job_id)
    assert job["status"] == "SUCCESS" and job["result"] == {"lines": 2500}, job
    logged = [line["line"] for line in job_log_all(http, job_id) if line["stream"] == "job"]
    assert logged[:2500] == lines
    assert "".join(logged[2500:]) == "é" * (1024 * 1024)
    assert all(len(piece.encode()) <= 16 * 1024 for piece in logged[2500:])


def test_reports_whose_answers_were_lost_are_taken_once(http, lossy):
    # The proxy forwards the log report and the SUCCESS report and loses both answers: the job's
    # retries send the same signed requests again, refused as replays (401 replay): each report
    # is taken once, and the job ends as it reported, exit code 0, no traceback.
    proxy = lossy(lambda r: "logs" in r, lambda r: r.get("status") == "SUCCESS")
    lines = ["L0", "L1", "L2"]
    job_id = submit(http, {"type": "py.report", "args": {"hook": proxy.hook, "lines": lines}})
    job = wait(http, job_id)
    assert [status for _, status in proxy.lost] == [200, 200], proxy.lost
    assert job["status"] == "SUCCESS" and job["result"] == {"lines": 3}, job
    assert job["exit_code"] == 0 and job["attempt"] == 1, job
    logged = job_log(http, job_id)
    assert [line for line in logged if line in lines] == lines, logged
    assert not any("Traceback" in line or "could not report" in line for line in logged), logged


@pytest.mark.parametrize(
    "args,why",
    [({"result_bytes": 2_000_000}, "413 too_large"), ({"nan": True}, "Out of range float")],
    ids=["too-large", "nan"],
)
def test_a_result_that_cannot_be_reported_is_not_retried(http, args, why):
    job_id = submit(http, {"type": "py.report", "args": args, "max_attempts": 3})
    job = wait(http, job_id)
    assert job["status"] == "ERROR" and job["attempt"] == 1, job  # the work ran once
    assert job["error"].startswith("could not report the result: ") and why in job["error"], job


def logs_with(line):
    return lambda report: line in (report.get("logs") or [])


def stored(http, job_id, stream):
    return [line["line"] for line in job_log_all(http, job_id) if line["stream"] == stream]


def test_a_result_reported_while_the_hook_restarts_lands(http, lossy):
    # The job's work is done when its hook's node restarts (the proxy goes down as the SUCCESS
    # report comes, connections refused for 3 s): the client tries the report again until the
    # node is back, and the job ends as it returned, on its first attempt, exit code 0.
    proxy = lossy(restart_on=lambda r: r.get("status") == "SUCCESS", restart_seconds=3.0)
    job_id = submit(http, {"type": "py.report", "args": {"hook": proxy.hook, "lines": ["L0"]}, "max_attempts": 1})
    job = wait(http, job_id)
    assert proxy.back.is_set()
    assert job["status"] == "SUCCESS" and job["result"] == {"lines": 1}, job
    assert job["exit_code"] == 0 and job["attempt"] == 1, job
    assert not any("could not report" in line for line in stored(http, job_id, "stderr"))


def test_a_log_report_that_fails_does_not_stop_the_job_nor_the_later_reports(http, lossy):
    # 2,500 lines go in reports of 999, 999 and 502; the proxy answers 503 to every try of the
    # second (the hook unreachable behind it): the job does not crash on it, the third report is
    # still sent and stored, starting with the note of the lines lost, and the client says how
    # many lines were not stored (its `lines_lost`, which py.report returns, and a warning on the
    # job's stderr).
    proxy = lossy(refuse=logs_with("row 1500"))
    lines = [f"row {i}" for i in range(2500)]
    job_id = submit(http, {"type": "py.report", "args": {"hook": proxy.hook, "lines": lines}})
    job = wait(http, job_id)
    assert job["status"] == "SUCCESS" and job["exit_code"] == 0 and job["attempt"] == 1, job
    assert len(proxy.refused) == 3, [len(r["logs"]) for r in proxy.refused]  # the first try and 2 retries
    assert job["result"] == {"lines": 2500, "lines_lost": 999}, job
    logged = stored(http, job_id, "job")
    assert logged[:999] == lines[:999]
    # In the Rust client's words (a proxy's page: no runyard error code).
    why = "POST /async/status: HTTP 503: <html>503</html>"
    assert logged[999] == f"[runyard] 999 line(s) lost here: the hook refused or did not answer ({why})"
    assert logged[1000:] == lines[1998:]
    stderr = stored(http, job_id, "stderr")
    assert any(f"LogLinesLost: 999 log line(s) not stored (999 in all): {why}" in line for line in stderr), stderr
    assert not any("Traceback" in line for line in stderr), stderr


def test_a_log_report_refused_for_good_is_not_retried_and_ends_the_logging(http, lossy):
    # A 403 (a definite refusal, the same for every report): not retried, no later report sent,
    # said once; the job still ends as it reported.
    proxy = lossy(refuse=lambda report: "logs" in report, refuse_status=403)
    lines = [f"row {i}" for i in range(2500)]
    job_id = submit(http, {"type": "py.report", "args": {"hook": proxy.hook, "lines": lines}})
    job = wait(http, job_id)
    assert job["status"] == "SUCCESS" and job["result"] == {"lines": 2500, "lines_lost": 2500}, job
    assert [len(r["logs"]) for r in proxy.refused] == [999], len(proxy.refused)
    stderr = stored(http, job_id, "stderr")
    warned = [line for line in stderr if "log line(s) not stored" in line]
    assert len(warned) == 1 and "2500 log line(s) not stored (2500 in all): POST /async/status: HTTP 403:" in warned[0], stderr


def test_clients_of_one_job_reporting_alike_at_once_are_never_taken_for_replays(http):
    # Two clients of the job sign the same progress and the same log line in the same
    # millisecond, then 4 processes with a client each report progress(0.5) and log("tick") 50
    # times: the hook's replay key was (job, time, hash), alike for them, and the second of a pair
    # was refused `401 replay` (the probe: 60-69 of 900 progress calls raised, as many log lines
    # lost). Each v2 request now carries a random X-Job-Nonce its signature covers.
    job_id = submit(http, {"type": "py.twins", "args": {"processes": 4, "rounds": 50}})
    job = wait(http, job_id, bound=120.0)
    assert job["status"] == "SUCCESS" and job["attempt"] == 1, job
    assert job["result"] == {"lost": 0}, job
    assert stored(http, job_id, "job").count("tick") == 2 + 4 * 50
