"""The example jobs, run as runyard's local runner would run them, against the stub hook."""

import hashlib
import json
import os
import subprocess
import sys

import pytest

from conftest import JOBS_DIR, PACKAGE_ROOT


def run_job(stub, script, **extra_env):
    env = dict(os.environ)
    env.update(stub.env())
    env["PYTHONPATH"] = PACKAGE_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra_env)
    return subprocess.run(
        [sys.executable, os.path.join(JOBS_DIR, script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


TEXT = b"the quick brown fox\njumps over\n\nthe lazy dog"


def test_wordcount(stub):
    stub.add_input("inputs", TEXT)
    done = run_job(stub, "wordcount.py")
    assert done.returncode == 0, done.stderr
    assert stub.reports[0] == {"status": "RUNNING"}
    assert stub.reports[-1] == {"status": "SUCCESS", "results": {"lines": 4, "words": 9}}
    progress = [r["progress"] for r in stub.reports if "progress" in r]
    assert len(progress) >= 3 and progress == sorted(progress) and progress[-1] == 1.0
    assert all("statusDetails" in r for r in stub.reports if "progress" in r)
    assert any(r.get("logs") for r in stub.reports)
    assert json.loads(stub.files["outputs"][0]) == {"lines": 4, "words": 9}
    assert all(r["signature"] == "v2" for r in stub.requests)


def test_wordcount_fails_cleanly_without_input(stub):
    done = run_job(stub, "wordcount.py")
    assert done.returncode == 1
    assert stub.reports[-1]["status"] == "ERROR"
    assert "inputs[0]" in stub.reports[-1]["errorMessage"]
    assert stub.reports[-1]["retry"] is False  # no other attempt can make the input appear
    assert stub.secret not in done.stderr + done.stdout


def test_hello(stub):
    stub.args = {"name": "runyard"}
    done = run_job(stub, "hello.py")
    assert done.returncode == 0, done.stderr
    assert "hello" in done.stdout
    assert stub.reports == [{"status": "RUNNING"}, {"status": "SUCCESS", "results": {"hello": "runyard"}}]


def test_hello_without_args_asks_the_hook(stub):
    stub.args = None
    done = run_job(stub, "hello.py", JOB_ARGS="")
    assert done.returncode == 0, done.stderr
    assert stub.reports[-1] == {"status": "SUCCESS", "results": {"hello": "world"}}


def test_flaky_reports_a_retryable_error(stub):
    done = run_job(stub, "flaky.py", JOB_ATTEMPT="1")
    assert done.returncode == 1
    assert stub.reports[-1] == {"status": "ERROR", "errorMessage": "transient failure on attempt 1"}
    assert "ValueError" in done.stderr


def test_flaky_succeeds_on_its_third_attempt(stub):
    done = run_job(stub, "flaky.py", JOB_ATTEMPT="3")
    assert done.returncode == 0, done.stderr
    assert stub.reports[-1] == {"status": "SUCCESS", "results": {"attempt": 3}}


def test_non_retryable_is_reported_with_retry_false(stub):
    stub.args = {"fatal": True}
    done = run_job(stub, "flaky.py", JOB_ATTEMPT="1", JOB_ARGS='{"fatal": true}')
    assert done.returncode == 1
    last = stub.reports[-1]
    assert last["status"] == "ERROR" and last["retry"] is False, last
    assert "no retry can fix it" in last["errorMessage"]


def test_fail(stub):
    done = run_job(stub, "fail.py")
    assert done.returncode == 3
    assert done.stderr.strip()
    assert stub.requests == []


@pytest.mark.parametrize("mode", ["absolute"])  # the seed client cannot resolve relative URLs
def test_seed_v1_client(stub, mode):
    stub.location_mode = mode
    stub.add_input("inputs", TEXT)
    done = run_job(stub, "seed_v1_client.py")
    assert done.returncode == 0, done.stderr
    assert stub.reports == [{"status": "RUNNING"}, {"status": "SUCCESS", "results": {"seed": True}}]
    assert stub.files["outputs"] == [TEXT]
    assert {r["signature"] for r in stub.requests} == {"v1"}
    assert all("X-Job-Signature" not in r["headers"] for r in stub.requests)


def test_seed_v1_client_uploads_new_content(stub):
    # input content unknown to the store's dedup index: the bytes must go to the upload URL
    stub.add_input("inputs", TEXT)
    stub.known_content.clear()
    done = run_job(stub, "seed_v1_client.py")
    assert done.returncode == 0, done.stderr
    assert stub.files["outputs"] == [TEXT]
    assert hashlib.md5(stub.files["outputs"][0]).hexdigest() == hashlib.md5(TEXT).hexdigest()
