"""A report that changes the job's status (RUNNING, SUCCESS, ERROR) outlasts a restart of the API
node JOB_HOOK names: it is tried again for ``report_window`` seconds (runyard_job/client_retry.py),
against the stub hook. Refusals are final at once; log lines keep their ``retries``."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest
import requests

from conftest import JOBS_DIR, PACKAGE_ROOT
from runyard_job import HookError, JobClient, LogLinesLost, run
from runyard_job.client_retry import DEFAULT_REPORT_WINDOW, REPORT_WINDOW_ENV

RESTART = 3.0  # seconds the hook's node is down: longer than the client's own retries (1.5 s)


def test_a_result_reported_while_the_hook_restarts_lands(stub, monkeypatch):
    # The probe's case: the job's work is done, then its hook's node restarts for a few seconds.
    monkeypatch.setenv("JOB_ARGS", "{}")

    def work(job, args):
        stub.outage(RESTART)  # connections refused from now on, for 3 s
        return {"n": 1}

    with JobClient(stub.job_id, stub.secret, stub.hook, timeout=5) as c:  # the defaults
        assert run(work, client=c) == {"n": 1}  # no SystemExit: the result was reported
    assert stub.reports == [{"status": "RUNNING"}, {"status": "SUCCESS", "results": {"n": 1}}]


def test_a_job_process_reports_its_result_across_a_restart(stub):
    # A job process, as a runner starts it (from_env, run()): the hook goes down before RUNNING
    # and comes back 3 s later; the job ends with what it returned, and exits 0.
    stub.args = {"name": "restart"}
    env = dict(os.environ)
    env.update(stub.env())
    env["PYTHONPATH"] = PACKAGE_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.pop(REPORT_WINDOW_ENV, None)
    stub.outage(RESTART)
    done = subprocess.run(
        [sys.executable, os.path.join(JOBS_DIR, "hello.py")], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert stub.reports == [{"status": "RUNNING"}, {"status": "SUCCESS", "results": {"hello": "restart"}}]


def test_an_error_report_outlasts_a_restart_too(stub):
    with JobClient(stub.job_id, stub.secret, stub.hook, timeout=5) as c:
        stub.outage(RESTART)
        c.fail("boom", retry=False)
    assert stub.reports == [{"status": "ERROR", "errorMessage": "boom", "retry": False}]


@pytest.mark.parametrize("status", [408, 429, 500, 503])
def test_not_now_answers_are_tried_again_within_the_window(stub, status):
    stub.status_plan = [status, status]  # more than retries=0 allows
    with JobClient(stub.job_id, stub.secret, stub.hook, timeout=5, retries=0, report_window=20) as c:
        assert c.result({"n": 1})["status"] == "SUCCESS"
    assert stub.reports == [{"status": "SUCCESS", "results": {"n": 1}}]


@pytest.mark.parametrize("status", [400, 403, 404, 413, 422])
def test_a_refusal_is_final_at_once(stub, status):
    stub.status_plan = [status]
    with JobClient(stub.job_id, stub.secret, stub.hook, timeout=5, report_window=20) as c:
        with pytest.raises(HookError) as info:
            c.result({"n": 1})
    assert info.value.status_code == status
    assert len(stub.requests) == 1 and stub.reports == []


def test_a_terminal_job_is_not_retried(stub):
    stub.terminal = True  # 409: the job can no longer report
    with JobClient(stub.job_id, stub.secret, stub.hook, timeout=5, report_window=20) as c:
        with pytest.raises(HookError) as info:
            c.result({"n": 1})
    assert info.value.status_code == 409 and len(stub.requests) == 1


def test_the_window_is_bounded():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: connections are refused
    with JobClient("j", "k", f"http://127.0.0.1:{port}/async", retries=0, timeout=2, report_window=1.0) as c:
        began = time.monotonic()
        with pytest.raises(requests.ConnectionError):
            c.result({"n": 1})
        # The window, plus one try that starts at its end (refused at once here); generous bound.
        assert 1.0 <= time.monotonic() - began < 10


def test_log_lines_and_progress_keep_their_retries(stub):
    stub.status_plan = [503, 503]
    with JobClient(stub.job_id, stub.secret, stub.hook, timeout=5, retries=1, report_window=20) as c:
        with pytest.raises(HookError):
            c.progress(0.5)  # 2 tries (retries=1), not the window
    assert len(stub.requests) == 2 and stub.reports == []


def test_a_status_with_many_lines_gives_the_window_to_the_report_with_the_status(stub):
    stub.status_plan = [None, 503, 503]  # the first report (999 lines) taken, the last refused twice
    with JobClient(stub.job_id, stub.secret, stub.hook, timeout=5, retries=0, report_window=20) as c:
        c.status("SUCCESS", results={"n": 1}, logs=[f"row {i}" for i in range(1500)])
    assert stub.reports[-1]["status"] == "SUCCESS" and len(stub.reports) == 2
    assert sum(len(r["logs"]) for r in stub.reports) == 1500


def test_the_window_comes_from_the_environment(stub):
    env = stub.env()
    assert JobClient.from_env(environ=env).report_window == DEFAULT_REPORT_WINDOW
    env[REPORT_WINDOW_ENV] = "45.5"
    assert JobClient.from_env(environ=env).report_window == 45.5
    env[REPORT_WINDOW_ENV] = "0"
    assert JobClient.from_env(environ=env).report_window == 0
    assert JobClient.from_env(environ=env, report_window=7).report_window == 7


@pytest.mark.parametrize("value", ["soon", "-1", "nan", "inf"])
def test_a_bad_window_is_refused_naming_it(stub, value):
    env = dict(stub.env(), **{REPORT_WINDOW_ENV: value})
    with pytest.raises(ValueError, match=REPORT_WINDOW_ENV):
        JobClient.from_env(environ=env)
    with pytest.raises(ValueError, match="report_window"):
        JobClient(stub.job_id, stub.secret, stub.hook, report_window=value)


def test_run_exits_2_on_a_bad_window(stub, monkeypatch, capsys):
    for name, value in stub.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(REPORT_WINDOW_ENV, "soon")
    with pytest.raises(SystemExit) as info:
        run(lambda job, args: None)
    assert info.value.code == 2 and REPORT_WINDOW_ENV in capsys.readouterr().err
    assert stub.requests == []


def test_a_result_applied_before_the_servers_own_5xx_counts_as_taken(stub, monkeypatch):
    # The hook applied the SUCCESS, then answered its own 503 (a store op failed after the
    # apply): signed again, the report gets 409 saying the job reported SUCCESS, its own status.
    monkeypatch.setenv("JOB_ARGS", "{}")
    stub.status_plan = [None, "applied_then_503"]  # RUNNING taken; SUCCESS applied, then 503
    with JobClient(stub.job_id, stub.secret, stub.hook, timeout=5, retries=0, report_window=20) as c:
        assert run(lambda job, args: {"n": 1}, client=c) == {"n": 1}  # no SystemExit
    assert stub.reports == [{"status": "RUNNING"}, {"status": "SUCCESS", "results": {"n": 1}}]
    assert [r["body"] for r in stub.requests][-1] == stub.requests[-2]["body"]  # tried again


def test_a_409_saying_another_outcome_or_on_a_first_try_still_raises(stub):
    stub.status_plan = ["applied_then_503"]
    with JobClient(stub.job_id, stub.secret, stub.hook, timeout=5, retries=0, report_window=20) as c:
        c.fail("boom")  # ERROR applied, then 503; its retry gets 409 reported ERROR: taken
        stub.fail_after_auth = [503]  # the result's first try: runyard's own 503
        with pytest.raises(HookError) as info:
            c.result({"n": 1})  # its retry: 409 reported ERROR: not this report
        assert info.value.status_code == 409
        assert not stub.fail_after_auth  # the 409 came on the retry
        with pytest.raises(HookError) as info:
            c.fail("boom")  # 409 reported ERROR on the first try: a second report, refused
        assert info.value.status_code == 409
    assert stub.reports == [{"status": "ERROR", "errorMessage": "boom"}]


def test_a_status_goes_even_after_its_log_reports_failed(stub):
    # Four reports: the three with lines only are refused (an outage), which stops the lines;
    # the one with the status still goes (its window), saying where the lines went.
    stub.status_plan = [503, 503, 503]
    lines = [f"row {i}" for i in range(3 * 999 + 10)]
    with JobClient(stub.job_id, stub.secret, stub.hook, timeout=5, retries=0, report_window=20) as c:
        with pytest.warns(LogLinesLost):
            c.status("SUCCESS", results={"n": 1}, logs=lines)
        assert c.lines_lost == len(lines)
    assert len(stub.reports) == 1
    report = stub.reports[0]
    assert report["status"] == "SUCCESS" and report["results"] == {"n": 1}
    assert len(report["logs"]) == 1 and f"{len(lines)} line(s) lost here" in report["logs"][0]


def test_the_error_after_a_result_not_reported_gets_what_is_left_of_the_window(stub, monkeypatch):
    # result() gave up once its window passed: the ERROR report gets what is left of it (nothing:
    # one try), not a second window.
    monkeypatch.setenv("JOB_ARGS", "{}")
    stub.status_plan = [None] + [503] * 100
    with JobClient(stub.job_id, stub.secret, stub.hook, timeout=5, retries=0, report_window=1.0) as c:
        with pytest.raises(SystemExit) as info:
            run(lambda job, args: {"n": 1}, client=c)
    assert info.value.code == 1
    statuses = [json.loads(r["body"] or b"{}").get("status") for r in stub.requests]
    assert statuses.count("SUCCESS") >= 2  # the result was tried within its window
    assert statuses.count("ERROR") == 1, statuses


def test_an_answer_cut_short_is_no_answer(stub):
    # The node died while answering (taken, its answer cut short: ChunkedEncodingError): sent
    # again as it was, the replay says it was taken.
    stub.status_plan = ["cut_short"]
    with JobClient(stub.job_id, stub.secret, stub.hook, timeout=5, retries=0, report_window=20) as c:
        assert c.result({"n": 1}) == {}
    assert stub.reports == [{"status": "SUCCESS", "results": {"n": 1}}]
    assert len(stub.requests) == 2 and stub.requests[0]["headers"] == stub.requests[1]["headers"]


def test_a_window_passed_in_code_wins_over_the_environment(stub):
    env = dict(stub.env(), **{REPORT_WINDOW_ENV: "soon"})
    assert JobClient.from_env(environ=env, report_window=7).report_window == 7
    with pytest.raises(ValueError, match=REPORT_WINDOW_ENV):
        JobClient.from_env(environ=env)


@pytest.mark.parametrize("value", ["1_000", "1e300", "0x10", "１", "5 s", ".", "infinity"])
def test_what_the_rust_client_refuses_is_refused(stub, value):
    # The rule both clients apply: digits with an optional sign, fraction and exponent, 0 or
    # more and below 2**64 seconds (hooks/src/client/retry.rs refuses the same).
    env = dict(stub.env(), **{REPORT_WINDOW_ENV: value})
    with pytest.raises(ValueError, match=REPORT_WINDOW_ENV):
        JobClient.from_env(environ=env)


@pytest.mark.parametrize("value, seconds", [("1e3", 1000.0), (" 2.5 ", 2.5), (".5", 0.5), ("5.", 5.0), ("+3", 3.0), ("-0", 0.0)])
def test_what_the_rust_client_takes_is_taken(stub, value, seconds):
    env = dict(stub.env(), **{REPORT_WINDOW_ENV: value})
    assert JobClient.from_env(environ=env).report_window == seconds


def test_a_huge_window_in_code_is_refused(stub):
    with pytest.raises(ValueError, match="report_window"):
        JobClient(stub.job_id, stub.secret, stub.hook, report_window=1e300)


def test_an_upload_is_tried_again_whole_within_the_window(stub, tmp_path):
    # The upload request refused twice "not now", then its bytes refused once: each time the whole
    # upload goes again (a new URL), until the bytes are stored, once.
    path = tmp_path / "out.txt"
    path.write_bytes(b"hello")
    stub.fail_next = [503, 429]
    with JobClient(stub.job_id, stub.secret, stub.hook, timeout=5, retries=0, report_window=20) as c:
        send_bytes = c.session.request
        transfers = []

        def request(method, url, **kwargs):  # the bytes' transfer (the hook calls use send)
            transfers.append(url)
            if len(transfers) == 1:
                stub.fail_next = [502]  # this transfer's answer
            return send_bytes(method, url, **kwargs)

        c.session.request = request
        assert c.upload("outputs", str(path)) is True
    assert stub.files == {"outputs": [b"hello"]}
    assert len(transfers) == 2 and transfers[0] != transfers[1], transfers  # a new URL each time
    # The upload requests that got through (the 503 and 429 were answered before being read):
    # one before each transfer.
    asked = [r for r in stub.requests if r["target"].startswith("/async/upload/")]
    assert len(asked) == 2, stub.requests


def test_an_upload_outlasts_a_restart_and_a_refusal_is_final(stub, tmp_path):
    path = tmp_path / "out.txt"
    path.write_bytes(b"hello")
    with JobClient(stub.job_id, stub.secret, stub.hook, timeout=5, report_window=20) as c:
        stub.outage(RESTART)
        assert c.upload("outputs", str(path)) is True
        assert stub.files == {"outputs": [b"hello"]}
        stub.fail_next = [403]
        with pytest.raises(HookError) as info:
            c.upload("outputs", str(path))
        assert info.value.status_code == 403
    with JobClient(stub.job_id, stub.secret, stub.hook, timeout=5, retries=0, report_window=0) as c:
        stub.fail_next = [503]
        with pytest.raises(HookError):
            c.upload("outputs", str(path))  # a zero window: one try
    assert stub.files == {"outputs": [b"hello"]}
