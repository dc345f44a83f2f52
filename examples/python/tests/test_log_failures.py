"""A log report that fails does not crash the job (runyard_job/client_logs.py), against the stub
hook; test_against_server.py has the same against a real server."""

import os
import socket
import warnings

import pytest

from runyard_job import HookError, JobClient, LogLinesLost

LOST_NOTE = "[runyard] 999 line(s) lost here: the hook refused or did not answer (hook answered 503 unavailable"


def rows(n):
    return [f"row {i}" for i in range(n)]


def logged(stub):
    return [line for report in stub.reports for line in report.get("logs", [])]


def test_a_failed_log_report_is_noted_and_the_next_ones_are_sent(stub, client):
    stub.fail_next = [503]  # the first report, 999 lines, its only try (retries=0)
    with pytest.warns(LogLinesLost) as warned:
        answer = client.log(*rows(2500))
    assert answer["status"] == "RUNNING"  # the last report's answer
    assert client.lines_lost == 999
    assert len(warned) == 1 and warned[0].message.lost == 999
    assert str(warned[0].message).startswith("999 log line(s) not stored: hook answered 503 unavailable")
    stored = logged(stub)
    assert stored[0].startswith(LOST_NOTE), stored[0]
    assert stored[1:] == rows(2500)[999:]


def test_three_failures_in_a_row_stop_the_rest(stub, client):
    stub.fail_next = [503, 503, 503]
    with pytest.warns(LogLinesLost) as warned:
        assert client.log(*rows(5000)) == {}  # 6 reports: 3 tried, the rest not
    assert stub.fail_next == [] and stub.reports == []  # 3 tries refused, no 4th sent
    assert client.lines_lost == 5000 and [w.message.lost for w in warned] == [5000]


def test_a_refusal_for_good_is_not_retried_and_stops_the_rest(stub):
    stub.terminal = True  # 409: the job can no longer report
    stub.echo_secret_in_errors = True
    with JobClient(stub.job_id, stub.secret, stub.hook, retries=2, timeout=5) as c:
        with pytest.warns(LogLinesLost) as warned:
            assert c.log(*rows(2500)) == {}
        assert c.lines_lost == 2500
    assert len(stub.requests) == 1  # no retry, no later report
    assert len(warned) == 1 and "hook answered 409 conflict" in str(warned[0].message)
    assert stub.secret not in str(warned[0].message)


def test_the_note_never_carries_the_secret(stub, client):
    stub.fail_next = [503]
    stub.echo_secret_in_errors = True
    with pytest.warns(LogLinesLost) as warned:
        client.log(*rows(1500))
    note = logged(stub)[0]
    assert note.startswith("[runyard] 999 line(s) lost here") and "***" in note
    assert stub.secret not in note and stub.secret not in str(warned[0].message)


def test_no_answer_at_all_is_a_warning_not_an_exception():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: connections are refused
    with JobClient("j", "k", f"http://127.0.0.1:{port}/async", retries=0, timeout=2) as c:
        with pytest.warns(LogLinesLost) as warned:
            assert c.log("a", "b") == {}
        assert c.lines_lost == 2
    assert "2 log line(s) not stored: POST /status: no answer (ConnectionError)" == str(warned[0].message)


def test_a_status_goes_with_the_last_report_after_a_lost_one(stub, client):
    stub.fail_next = [503]
    with pytest.warns(LogLinesLost):
        answer = client.status("SUCCESS", results={"n": 1}, logs=rows(1500))
    assert answer["status"] == "SUCCESS"
    assert stub.reports[-1]["status"] == "SUCCESS" and stub.reports[-1]["logs"][0].startswith(LOST_NOTE)
    assert client.lines_lost == 999


def test_a_status_that_could_not_be_sent_still_raises(stub, client):
    # The other fields are not log lines: their report refused, or not sent, is the caller's error.
    stub.terminal = True
    with pytest.warns(LogLinesLost):
        with pytest.raises(HookError) as info:
            client.status("ERROR", error="boom", logs=rows(1500))
    assert info.value.status_code == 409 and len(stub.requests) == 1
    assert client.lines_lost == 1500
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no log lines: no warning, the refusal raises as always
        with pytest.raises(HookError):
            client.result({"n": 1})


def test_the_warning_names_the_jobs_own_line(stub, client):
    stub.fail_next = [503]
    with pytest.warns(LogLinesLost) as warned:
        client.log("a")
    assert warned[0].filename == __file__


def test_a_line_json_cannot_carry_is_stored_escaped_and_loses_nothing(stub, client):
    # A file name from os.listdir on a disk that is not UTF-8: a lone surrogate, which the hook
    # refuses (400 bad_json) for the whole report, and that refusal stops every later report.
    name = os.fsdecode(b"caf\xe9.txt")
    assert name == "caf\udce9.txt"
    lines = rows(10) + [f"found {name}"] + rows(3000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing lost: no warning
        answer = client.log(*lines)
    assert answer["status"] == "RUNNING" and client.lines_lost == 0
    stored = logged(stub)
    assert len(stored) == 3011
    assert stored[10] == "found caf\\udce9.txt"
    assert stored[:10] + stored[11:] == rows(10) + rows(3000)
