"""A log report that fails does not crash the job (runyard_job/client_logs.py), against the stub
hook; test_against_server.py has the same against a real server."""

import os
import socket
import subprocess
import sys
import warnings

import pytest

from conftest import PACKAGE_ROOT
from runyard_job import HookError, JobClient, LogLinesLost

# The Rust client's words (hooks/src/client/error.rs, ClientError::Http), so logs read the same.
WHY_503 = "POST /async/status: HTTP 503 (unavailable): try again"
LOST_NOTE = f"[runyard] 999 line(s) lost here: the hook refused or did not answer ({WHY_503})"


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
    assert str(warned[0].message) == f"999 log line(s) not stored (999 in all): {WHY_503}"
    assert warned[0].message.status_code == 503
    stored = logged(stub)
    assert stored[0] == LOST_NOTE, stored[0]
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
    assert len(warned) == 1 and "POST /async/status: HTTP 409 (conflict): job is terminal" in str(warned[0].message)
    assert warned[0].message.status_code == 409  # the job is terminal: no later report is taken
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
    expected = "2 log line(s) not stored (2 in all): POST /async/status: no answer (ConnectionError)"
    assert str(warned[0].message) == expected
    assert warned[0].message.status_code is None


def test_a_status_goes_with_the_last_report_after_a_lost_one(stub, client):
    stub.fail_next = [503]
    with pytest.warns(LogLinesLost):
        answer = client.status("SUCCESS", results={"n": 1}, logs=rows(1500))
    assert answer["status"] == "SUCCESS"
    assert stub.reports[-1]["status"] == "SUCCESS" and stub.reports[-1]["logs"][0] == LOST_NOTE
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


def test_a_proxys_answer_is_described_without_a_code_as_the_rust_client_does(stub, client):
    stub.drop_next = 1  # a proxy's 504 page, not runyard's JSON: no "(code)"
    with pytest.warns(LogLinesLost):
        client.log(*rows(1000))
    why = "POST /async/status: HTTP 504: <html><body><h1>504 Gateway Time-out</h1></body></html>"
    assert logged(stub)[0] == f"[runyard] 999 line(s) lost here: the hook refused or did not answer ({why})"


SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from runyard_job import JobClient
job = JobClient({job!r}, {secret!r}, {hook!r}, retries=0, timeout=5)
for i in range(3):
    job.log("line %d" % i)  # the same line every time, each call losing its one report
print("lines_lost", job.lines_lost)
"""


def test_every_call_that_loses_lines_prints_its_warning(stub):
    # Python's default warning filter prints a text it already printed from the same line only
    # once: a job logging in a loop would see its first loss only. Run as a job runs (a child
    # process, default filters, stderr its log).
    stub.fail_next = [503, 503, 503]
    script = SCRIPT.format(root=PACKAGE_ROOT, job=stub.job_id, secret=stub.secret, hook=stub.hook)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS",)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert "lines_lost 3" in done.stdout
    warned = [line for line in done.stderr.splitlines() if "LogLinesLost" in line]
    assert len(warned) == 3, done.stderr
    assert [w.split("LogLinesLost: ")[1] for w in warned] == [
        f"1 log line(s) not stored ({n} in all): {WHY_503}" for n in (1, 2, 3)
    ]
    assert stub.secret not in done.stderr


@pytest.mark.parametrize("status", [409, 503])
def test_the_warning_carries_the_status_so_a_job_can_tell_a_terminal_job(stub, client, status):
    if status == 409:
        stub.terminal = True
    else:
        stub.fail_next = [503]
    with pytest.warns(LogLinesLost) as warned:
        client.log("a")
    assert warned[0].message.status_code == status and warned[0].message.total == 1


def test_log_without_a_lost_line_raises_the_failure(stub, client):
    # No line lost, yet the call failed: it raises, as before and as the Rust client.
    stub.terminal = True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(HookError) as info:
            client.log()  # a report without lines, refused
    assert info.value.status_code == 409 and client.lines_lost == 0


def test_a_last_report_taken_whose_answer_is_not_json_raises_when_no_line_was_lost(stub, client):
    stub.status_plan = [None, "not_json"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(HookError) as info:
            client.log(*rows(1500))
    assert info.value.code == "bad_response" and client.lines_lost == 0
    assert logged(stub) == rows(1500)  # both reports stored


def test_a_report_taken_whose_answer_is_not_json_counts_as_stored(stub, client):
    stub.status_plan = ["not_json", 503, None]  # the first taken, the second lost, the third
    with pytest.warns(LogLinesLost) as warned:
        answer = client.log(*rows(2500))
    assert answer["status"] == "RUNNING" and client.lines_lost == 999
    assert [w.message.lost for w in warned] == [999]
    stored = logged(stub)
    assert stored[:999] == rows(999) and stored[999] == LOST_NOTE and stored[1000:] == rows(2500)[1998:]
    # The same when the last report's answer is not JSON but lines were lost: a warning, no raise.
    stub.reports.clear()
    stub.status_plan = [503, "not_json"]
    with pytest.warns(LogLinesLost):
        assert client.log(*rows(1500)) == {}
    assert logged(stub) == [LOST_NOTE] + rows(1500)[999:]


def test_a_status_whose_last_report_failed_for_a_passing_reason_raises(stub, client):
    stub.status_plan = [None, 503]  # the lines' report stored, the last (lines and status) not
    with pytest.warns(LogLinesLost) as warned:
        with pytest.raises(HookError) as info:
            client.status("SUCCESS", results={"n": 1}, logs=rows(1500))
    assert info.value.status_code == 503 and warned[0].message.lost == 501
    assert logged(stub) == rows(999) and stub.statuses() == []


def test_a_success_resets_the_failures_in_a_row(stub, client):
    # fail, ok, fail, ok...: never 3 in a row, every other report stored after its note.
    stub.status_plan = [503, None] * 4
    with pytest.warns(LogLinesLost) as warned:
        client.log(*rows(999 * 8))
    assert len(stub.requests) == 8 and client.lines_lost == 4 * 999
    assert [w.message.lost for w in warned] == [4 * 999]
    notes = [r["logs"][0] for r in stub.reports]
    assert len(stub.reports) == 4 and all(note == LOST_NOTE for note in notes)


@pytest.mark.parametrize("status", [429, 500])
def test_429_and_500_are_passing_failures(stub, client, status):
    stub.status_plan = [status]
    with pytest.warns(LogLinesLost) as warned:
        client.log(*rows(2500))
    assert warned[0].message.lost == 999 and warned[0].message.status_code == status
    assert len(stub.reports) == 2 and logged(stub)[0].startswith("[runyard] 999 line(s) lost here: the hook")
    assert f"HTTP {status} (unavailable)" in logged(stub)[0]
