import hashlib
import json
import os
import time

import pytest

from runyard_job import BadPayload, HookError, IntegrityError, JobClient, LogLinesLost, MissingEnvironment, hash_file, resolve_location, run
from runyard_job.errors import JobClientError

# ---------------------------------------------------------------- construction and environment


def test_from_env_names_the_missing_variable():
    with pytest.raises(MissingEnvironment) as info:
        JobClient.from_env(environ={"JOB_ID": "j", "JOB_HOOK": "http://127.0.0.1:7070/async"})
    text = str(info.value)
    assert "JOB_SECRET_KEY" in text
    assert "JOB_ID," not in text.split("(")[0] and "JOB_HOOK" not in text.split("(")[0]
    assert info.value.missing == ["JOB_SECRET_KEY"]


def test_from_env_names_every_missing_variable():
    with pytest.raises(MissingEnvironment) as info:
        JobClient.from_env(environ={"JOB_SECRET_KEY": ""})
    assert info.value.missing == ["JOB_ID", "JOB_SECRET_KEY", "JOB_HOOK"]


def test_from_env_reads_the_three_variables():
    c = JobClient.from_env(environ={"JOB_ID": "j1", "JOB_SECRET_KEY": "k", "JOB_HOOK": "http://h:1/async/"})
    assert (c.job_id, c.hook, c.signature) == ("j1", "http://h:1/async", "v2")


def test_rejects_bad_hook_and_signature():
    with pytest.raises(ValueError):
        JobClient("j", "k", "127.0.0.1:7070/async")
    with pytest.raises(ValueError):
        JobClient("j", "k", "http://127.0.0.1:7070/async", signature="v3")


def test_secret_is_not_in_repr():
    c = JobClient("j", "very-secret-value", "http://127.0.0.1:7070/async")
    assert "very-secret-value" not in repr(c)
    assert "very-secret-value" not in repr(vars(c))


def test_the_signal_keys_dot_and_dot_dot_are_refused_before_sending(stub, client):
    # `{hook}/signal/..` resolves to `{hook}`: the server refuses these keys; the client says so.
    for key in (".", ".."):
        with pytest.raises(ValueError, match=r"`\.` or `\.\.`"):
            client.signal(key)
    assert stub.requests == []


def test_file_names_the_server_refuses_are_refused_before_sending(stub, client, tmp_path):
    # `{hook}/upload/jobs/{id}/..` resolves to `{hook}/upload/jobs`: another route. The server
    # takes 1-64 letters, digits, `_` or `-` as a property or store; the client says so first.
    f = tmp_path / "f.txt"
    f.write_bytes(b"x")
    for bad in (".", "..", "", "a/b", "a.b", "é", "p" * 65):
        with pytest.raises(ValueError, match="nothing sent"):
            client.upload(bad, str(f))
        with pytest.raises(ValueError, match="nothing sent"):
            client.download(bad, dirpath=str(tmp_path))
        with pytest.raises(ValueError, match="nothing sent"):
            client.download("out", dirpath=str(tmp_path), store=bad)
    # An empty uuid is refused too (it became the job's own id: `uuid or job_id`, probe s54b F1;
    # the Rust client refuses it); only `uuid=None` means the job's own.
    for uuid in (".", "..", "a/b", "a\\b", ""):
        with pytest.raises(ValueError, match="nothing sent"):
            client.download("out", dirpath=str(tmp_path), uuid=uuid)
        with pytest.raises(ValueError, match="nothing sent"):
            client.upload("out", str(f), uuid=uuid)
    assert stub.requests == []


def test_timestamps_strictly_increase():
    c = JobClient("j", "k", "http://127.0.0.1:7070/async")
    stamps = [int(c._timestamp()) for _ in range(50)]
    assert stamps == sorted(set(stamps))


# ---------------------------------------------------------------- status reports (signed, v2 and v1)


def test_status_sends_only_the_given_fields_signed_v2(stub, client):
    client.status("RUNNING", progress=0.5, details="half", results={"a": 1}, logs=["l1"], error=None)
    client.progress(0.75)
    client.log("one", "two")
    assert stub.reports == [
        {"status": "RUNNING", "progress": 0.5, "statusDetails": "half", "results": {"a": 1}, "logs": ["l1"]},
        {"progress": 0.75},
        {"logs": ["one", "two"]},
    ]
    assert all(r["signature"] == "v2" for r in stub.requests)
    assert all(r["headers"]["Content-Type"] == "application/json" for r in stub.requests)


def test_many_and_long_log_lines_go_in_reports_the_hook_takes(stub, client):
    # 2,500 lines: three reports of at most 999 (1,000 is the hook's most, more is its 413; one
    # left for the note of lines an earlier report lost); a 2 MiB line: pieces of at most 16 KiB
    # (as the server stores stdout), in reports within its body limit; the other fields ride with
    # the last report.
    lines = [f"row {i}" for i in range(2500)]
    client.log(*lines)
    assert [len(r["logs"]) for r in stub.reports] == [999, 999, 502]
    assert [line for r in stub.reports for line in r["logs"]] == lines
    stub.reports.clear()
    big = "é" * (1024 * 1024)  # 2 MiB of UTF-8, 2-byte characters
    client.status("ERROR", logs=[big, "last"], error="boom")
    pieces = [line for r in stub.reports for line in r["logs"]]
    assert "".join(pieces[:-1]) == big and pieces[-1] == "last"
    assert all(len(p.encode()) <= 16 * 1024 for p in pieces)
    assert all("status" not in r for r in stub.reports[:-1])
    assert stub.reports[-1]["status"] == "ERROR" and stub.reports[-1]["errorMessage"] == "boom"
    assert all(len(r["logs"]) <= 1000 for r in stub.reports)
    assert all(len(req["body"]) <= stub.max_body_bytes for req in stub.requests)


def test_a_bad_field_raises_before_any_log_report_is_sent(stub, client):
    # Review: the earlier log reports went out before the last body was checked.
    with pytest.raises(BadPayload):
        client.status("SUCCESS", results={"x": float("nan")}, logs=[f"l{i}" for i in range(2500)])
    assert stub.requests == []


def test_a_carriage_return_at_a_piece_boundary_is_kept(stub, client):
    # The server drops a trailing \r of each entry: no piece but a line's own end ends with one.
    line = "a" * (16 * 1024 - 1) + "\rbc"
    client.log(line)
    pieces = [p for r in stub.reports for p in r["logs"]]
    assert "".join(pieces) == line
    assert not any(p.endswith("\r") for p in pieces)


def test_carriage_returns_at_a_piece_boundary_are_all_kept(stub, client):
    # Several \r (and a multi-byte character) at the 16 KiB cut: moving back one byte still left
    # a piece ending in \r, which the server dropped.
    for tail in ["\r\r", "\r\r\r", "\r\r\r\r\r"]:
        for head in ["a" * (16 * 1024 - 2), "é" * (8 * 1024 - 2) + "a"]:
            stub.reports.clear()
            line = head + tail + "bc"
            client.log(line)
            pieces = [p for r in stub.reports for p in r["logs"]]
            assert "".join(pieces) == line
            assert not any(p.endswith("\r") for p in pieces), [p[-3:] for p in pieces]
            for p in pieces:
                assert len(p.encode()) <= 16 * 1024


def test_log_lines_are_split_on_newlines_like_stdout(stub, client):
    client.log("a\nb\r\nc", "d\n", "", "e\r")
    assert stub.reports == [{"logs": ["a", "b", "c", "d", "", "e"]}]


def test_result_and_fail(stub, client):
    client.result({"n": 1})
    assert stub.reports[-1] == {"status": "SUCCESS", "results": {"n": 1}}
    assert stub.statuses() == ["SUCCESS"]


def test_a_result_is_sent_as_utf_8_not_escaped(stub, client):
    # Escaped (`\u00e9`, 6 bytes for 2), a large non-ASCII result would pass the size limit 3x sooner.
    client.result({"name": "café"})
    assert stub.reports[-1] == {"status": "SUCCESS", "results": {"name": "café"}}
    assert "café".encode() in stub.requests[-1]["body"]


def test_fail_reports_error_message(stub, client):
    client.fail("boom")
    assert stub.reports[-1] == {"status": "ERROR", "errorMessage": "boom"}


def test_v1_signature_is_accepted_and_has_no_signature_header(stub):
    with JobClient(stub.job_id, stub.secret, stub.hook, signature="v1", retries=0) as c:
        c.running()
        c.running()  # same millisecond would be a replay for v1 without strictly increasing times
    assert [r["signature"] for r in stub.requests] == ["v1", "v1"]
    assert "X-Job-Signature" not in stub.requests[0]["headers"]


def test_two_clients_of_one_job_reporting_alike_in_one_millisecond_are_both_taken(stub):
    # Two client objects (or processes) of one job: each client's times strictly increase, but
    # two clients may sign the same millisecond. A v2 hash covered time, method, path and body
    # only, so the same report from both was the same (job, time, hash) and the second was
    # refused `401 replay` (HookError; a log line lost). Each request now carries a random
    # X-Job-Nonce its signature covers.
    with JobClient(stub.job_id, stub.secret, stub.hook, retries=0, report_window=0) as one, JobClient(
        stub.job_id, stub.secret, stub.hook, retries=0, report_window=0
    ) as two:
        one._last_ms = two._last_ms = int(time.time() * 1000) + 1000  # both sign the next one
        one.progress(0.5)
        two.progress(0.5)
        one.log("tick")
        two.log("tick")
        assert one.lines_lost == two.lines_lost == 0
    assert stub.reports == [{"progress": 0.5}] * 2 + [{"logs": ["tick"]}] * 2
    times = [r["headers"]["X-Job-Time"] for r in stub.requests]
    assert times[0] == times[1] and times[2] == times[3]  # the same millisecond, pairwise
    nonces = [r["headers"]["X-Job-Nonce"] for r in stub.requests]
    assert len(set(nonces)) == 4


def test_a_hook_that_does_not_know_nonces_gets_the_call_without_one(stub):
    # An API node of a build before X-Job-Nonce (during a rolling upgrade) verifies the signature
    # without it and refuses it (401 bad_signature, nothing taken): the call is signed again
    # without a nonce, at once, and taken; a status report in its window too.
    stub.knows_nonce = False
    with JobClient(stub.job_id, stub.secret, stub.hook, retries=0, report_window=5) as c:
        c.progress(0.5)
        c.running()
        assert c.job()["id"] == stub.job_id
    assert stub.reports == [{"progress": 0.5}, {"status": "RUNNING"}]
    assert ["X-Job-Nonce" in r["headers"] for r in stub.requests] == [True, False] * 3


def test_query_is_part_of_the_signed_target(stub, client):
    answer = client._hook_call("GET", "/job?attempt=1&x=a%20b")
    assert answer["id"] == stub.job_id
    assert stub.requests[-1]["target"] == "/async/job?attempt=1&x=a%20b"


def test_wrong_secret_is_refused_with_hook_error(stub):
    with JobClient(stub.job_id, "wrong-secret", stub.hook, retries=0) as c:
        with pytest.raises(HookError) as info:
            c.running()
    assert info.value.status_code == 401
    assert info.value.code == "bad_signature"
    assert info.value.message == "bad signature"
    # Signed again without a nonce (a hook that does not know them says the same), refused again.
    assert ["X-Job-Nonce" in r["headers"] for r in stub.requests] == [True, False]


def test_hook_error_never_contains_the_secret(stub, client):
    stub.echo_secret_in_errors = True
    stub.terminal = True
    with pytest.raises(HookError) as info:
        client.running()
    err = info.value
    assert err.status_code == 409 and err.code == "conflict"
    for text in (str(err), repr(err), err.message, err.code, str(err.args)):
        assert stub.secret not in text
    assert "***" in err.message


def test_hook_error_from_a_non_json_body():
    class Response:
        status_code = 502
        reason = "Bad Gateway"
        text = "<html>upstream down, key=abc</html>"

        def json(self):
            raise ValueError("no json")

    err = HookError.from_response(Response(), secret="abc")
    assert (err.status_code, err.code) == (502, "http_502")
    assert "abc" not in str(err)


def test_retries_when_the_hook_is_briefly_unavailable(stub):
    stub.fail_next = [503]
    with JobClient(stub.job_id, stub.secret, stub.hook, retries=1, timeout=5) as c:
        c.running()
    assert stub.statuses() == ["RUNNING"]


def test_gives_up_after_the_retries(stub, client):
    stub.fail_next = [503]
    with pytest.raises(HookError) as info:
        client.running()
    assert info.value.status_code == 503


# ---------------------------------------------------------------- retries that must not act twice


def signed(request):
    return request["headers"]["X-Job-Time"], request["headers"]["X-Job-Hash"]


def test_a_report_whose_answer_was_lost_is_not_taken_twice(stub):
    # A proxy forwards the report, then answers 504: the retry re-sends the same signed request,
    # the hook refuses it as a replay, and the client knows the report was taken.
    stub.lose_answers = 1
    with JobClient(stub.job_id, stub.secret, stub.hook, retries=2, timeout=5) as c:
        assert c.log("L0", "L1", "L2") == {}
    assert stub.reports == [{"logs": ["L0", "L1", "L2"]}]
    assert len(stub.requests) == 2 and signed(stub.requests[0]) == signed(stub.requests[1])
    # The re-send is the same request: its nonce too.
    nonces = [r["headers"]["X-Job-Nonce"] for r in stub.requests]
    assert nonces[0] == nonces[1]


def test_a_resend_an_older_node_refuses_is_not_signed_again_without_a_nonce(stub):
    # The first send was taken (by a node that knows X-Job-Nonce), its answer lost; the re-send
    # reaches a node of an earlier build, which refuses its signature (401 bad_signature) before
    # it could know the request. Signed again without a nonce, that node would take it: the lines
    # twice. The same request is sent again while retries are left, then the call fails (log
    # counts the line lost: whether it was stored, the client cannot know).
    stub.lose_answers = 1
    stub.older_node_next = True
    with JobClient(stub.job_id, stub.secret, stub.hook, retries=2, timeout=5) as c:
        with pytest.warns(LogLinesLost, match="bad_signature"):
            assert c.log("L0") == {}
        assert c.lines_lost == 1
    assert stub.reports == [{"logs": ["L0"]}]
    assert len(stub.requests) == 3 and len({signed(r) for r in stub.requests}) == 1
    assert all("X-Job-Nonce" in r["headers"] for r in stub.requests)


def test_a_resend_refused_replay_unavailable_is_sent_again_as_it_was(stub):
    # The first send was taken, its answer lost; the re-send reached a hook whose replay memory
    # was down (503 replay_unavailable: it cannot tell whether it saw the request). Signed again,
    # the lines would be stored twice once the store is back: the same request is sent again,
    # and the hook's 401 replay says it was taken.
    stub.lose_answers = 1
    stub.replay_unavailable = {1}
    with JobClient(stub.job_id, stub.secret, stub.hook, retries=3, timeout=5) as c:
        assert c.log("L0") == {}
    assert stub.reports == [{"logs": ["L0"]}]
    assert len(stub.requests) == 3 and len({signed(r) for r in stub.requests}) == 1


def test_a_report_that_never_arrived_is_taken_on_the_retry(stub):
    stub.drop_next = 1  # the proxy answered 504 without forwarding it
    with JobClient(stub.job_id, stub.secret, stub.hook, retries=2, timeout=5) as c:
        assert c.log("L0")["status"] == "RUNNING"
    assert stub.reports == [{"logs": ["L0"]}]


def test_a_refusal_by_the_hook_itself_is_signed_again(stub):
    # The hook's own 503 after checking the signature: nothing taken, the signature spent. The
    # same request again would be a replay, and the report would be lost.
    stub.fail_after_auth = [503]
    with JobClient(stub.job_id, stub.secret, stub.hook, retries=1, timeout=5) as c:
        assert c.log("L0")["status"] == "RUNNING"
    assert stub.reports == [{"logs": ["L0"]}]
    assert signed(stub.requests[0]) != signed(stub.requests[1])


def test_a_retry_past_the_resend_window_is_signed_again(stub, monkeypatch):
    import runyard_job.client

    monkeypatch.setattr(runyard_job.client, "RESEND_WINDOW", 0.0)
    stub.lose_answers = 1
    with JobClient(stub.job_id, stub.secret, stub.hook, retries=1, timeout=5) as c:
        c.log("L0")
    assert signed(stub.requests[0]) != signed(stub.requests[1])


def test_reads_are_signed_again_on_a_retry(stub):
    stub.lose_answers = 1  # a read acts on nothing: its retry asks again and gets the answer
    with JobClient(stub.job_id, stub.secret, stub.hook, retries=1, timeout=5) as c:
        assert c.job()["id"] == stub.job_id
    assert signed(stub.requests[0]) != signed(stub.requests[1])


def test_run_whose_success_answer_was_lost_ends_cleanly(stub, monkeypatch, capsys):
    # The SUCCESS report was taken, its answer lost: run() neither fails nor reports ERROR.
    monkeypatch.setenv("JOB_ARGS", "{}")
    with JobClient(stub.job_id, stub.secret, stub.hook, retries=2, timeout=5) as c:
        real_result = c.result

        def lossy_result(value):
            stub.lose_answers = 1
            return real_result(value)

        c.result = lossy_result
        assert run(lambda job, args: {"n": 1}, client=c) == {"n": 1}
    assert stub.reports == [{"status": "RUNNING"}, {"status": "SUCCESS", "results": {"n": 1}}]
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------- failures no retry can fix


def deep(n):
    value = {}
    for _ in range(n):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    "result,why",
    [
        ({"x": float("nan")}, "Out of range float"),
        ({"x": {1, 2}}, "not JSON serializable"),
        (deep(2000), "recursion"),
        ({"x": "\ud800"}, "400 bad_json"),
        ({"x": "y" * (2 * 1024 * 1024)}, "413 too_large"),
    ],
    ids=["nan", "set", "deep", "lone-surrogate", "too-large"],
)
def test_run_does_not_retry_a_result_that_cannot_be_sent(stub, client, monkeypatch, capsys, result, why):
    monkeypatch.setenv("JOB_ARGS", "{}")
    calls = []

    def work(job, args):
        calls.append(1)
        return result

    with pytest.raises(SystemExit) as info:
        run(work, client=client)
    assert info.value.code == 1 and calls == [1]
    assert len(stub.reports) == 2 and stub.reports[0] == {"status": "RUNNING"}
    error = stub.reports[1]
    assert error["status"] == "ERROR" and error["retry"] is False, error
    assert error["errorMessage"].startswith("could not report the result: "), error
    assert why in error["errorMessage"], error
    assert "could not report the error" not in capsys.readouterr().err


def test_run_still_retries_a_result_the_hook_could_not_take_for_now(stub, client, monkeypatch):
    monkeypatch.setenv("JOB_ARGS", "{}")
    stub.fail_after_auth = [503]  # the client has retries=0: the report fails, another attempt may not
    with pytest.raises(SystemExit):
        run(lambda job, args: {"n": 1}, client=client)
    assert stub.reports[-1]["status"] == "ERROR" and "retry" not in stub.reports[-1]


def test_run_reports_an_unsendable_error_message_readably(stub, client, monkeypatch):
    monkeypatch.setenv("JOB_ARGS", "{}")

    def broken(job, args):
        raise RuntimeError("bad byte \ud800 here")

    with pytest.raises(SystemExit):
        run(broken, client=client)
    assert stub.reports[-1] == {"status": "ERROR", "errorMessage": "bad byte \\ud800 here"}


def test_a_body_json_cannot_carry_raises_bad_payload_and_sends_nothing(stub, client):
    with pytest.raises(BadPayload) as info:
        client.progress(float("nan"))
    assert isinstance(info.value, ValueError)
    assert stub.requests == []


def test_job_and_args(stub, client, monkeypatch):
    assert client.job() == {"id": stub.job_id, "type": "py.test", "args": {"name": "stub"}, "attempt": 1}
    monkeypatch.setenv("JOB_ARGS", '{"name": "env"}')
    assert client.args() == {"name": "env"}
    monkeypatch.delenv("JOB_ARGS")
    assert client.args() == {"name": "stub"}
    monkeypatch.setenv("JOB_ARGS", "{not json")
    with pytest.raises(JobClientError, match="JOB_ARGS"):
        client.args()


# ---------------------------------------------------------------- file URLs


def test_location_resolution():
    hook = "https://runyard.example:8443/async"
    assert resolve_location(hook, "http://files.example/x?sig=1") == "http://files.example/x?sig=1"
    assert resolve_location(hook, "/async/files/abc?sig=1") == "https://runyard.example:8443/async/files/abc?sig=1"
    assert resolve_location("http://127.0.0.1:7070/async", "/f/1") == "http://127.0.0.1:7070/f/1"
    with pytest.raises(JobClientError):
        resolve_location(hook, "files/abc")
    with pytest.raises(JobClientError):
        resolve_location(hook, "")


@pytest.mark.parametrize("mode", ["absolute", "relative"])
def test_download(stub, client, tmp_path, mode):
    stub.location_mode = mode
    data = b"hello\nworld\n"
    stub.add_input("inputs", data)
    path = client.download("inputs", 0, dirpath=str(tmp_path))
    assert path == os.path.join(str(tmp_path), hashlib.md5(data).hexdigest())
    assert open(path, "rb").read() == data
    assert stub.requests[0]["target"] == f"/async/download/jobs/{stub.job_id}/inputs/0"
    # present with the right content: no second fetch of the bytes
    before = len(stub._tokens)
    assert client.download("inputs", 0, dirpath=str(tmp_path)) == path
    assert len(stub._tokens) == before + 1  # a URL was handed out but never used
    assert os.listdir(str(tmp_path)) == [os.path.basename(path)]


def test_download_checks_the_md5(stub, client, tmp_path):
    stub.add_input("inputs", b"abc")
    stub.corrupt_downloads = True
    with pytest.raises(IntegrityError):
        client.download("inputs", 0, dirpath=str(tmp_path))
    assert os.listdir(str(tmp_path)) == []  # no partial file left behind


def test_download_of_another_job_is_forbidden(stub, client, tmp_path):
    with pytest.raises(HookError) as info:
        client.download("inputs", 0, dirpath=str(tmp_path), uuid="someone-else")
    assert info.value.status_code == 403


def test_challenge_is_md5_of_webda_plus_content(tmp_path):
    content = os.urandom(200_000)  # several read chunks
    path = tmp_path / "f.bin"
    path.write_bytes(content)
    file_hash, challenge = hash_file(str(path))
    assert file_hash == hashlib.md5(content).hexdigest()
    assert challenge == hashlib.md5(b"WEBDA" + content).hexdigest()


@pytest.mark.parametrize("mode", ["absolute", "relative"])
def test_upload_then_dedup(stub, client, tmp_path, mode):
    stub.location_mode = mode
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"lines": 2}))
    assert client.upload("outputs", str(path)) is True
    assert stub.files["outputs"] == [path.read_bytes()]
    sent = json.loads(stub.requests[-1]["body"])
    assert sent["hash"] == hashlib.md5(path.read_bytes()).hexdigest()
    assert sent["challenge"] == hashlib.md5(b"WEBDA" + path.read_bytes()).hexdigest()
    assert sent["metadata"] == {"name": "report.json", "mimetype": "application/json"}
    # the same content again: the server already has it, nothing is sent
    assert client.upload("outputs", str(path), metadata={}) is False
    assert len(stub.files["outputs"]) == 2


# ---------------------------------------------------------------- run()


def test_run_reports_running_then_success(stub, client, monkeypatch):
    monkeypatch.setenv("JOB_ARGS", '{"x": 2}')
    assert run(lambda job, args: {"double": args["x"] * 2}, client=client) == {"double": 4}
    assert stub.reports == [{"status": "RUNNING"}, {"status": "SUCCESS", "results": {"double": 4}}]


def test_run_reports_the_error_and_exits_non_zero(stub, client, monkeypatch):
    monkeypatch.setenv("JOB_ARGS", "{}")

    def broken(job, args):
        raise RuntimeError("no such table")

    with pytest.raises(SystemExit) as info:
        run(broken, client=client)
    assert info.value.code == 1
    assert stub.reports == [{"status": "RUNNING"}, {"status": "ERROR", "errorMessage": "no such table"}]


def test_run_never_prints_the_secret_in_its_traceback(stub, client, monkeypatch, capsys):
    monkeypatch.setenv("JOB_ARGS", "{}")

    def leaky(job, args):
        raise RuntimeError("the secret is " + stub.secret)

    with pytest.raises(SystemExit):
        run(leaky, client=client)
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: the secret is ***" in err, err
    assert stub.secret not in err
    assert stub.reports[-1]["errorMessage"] == "the secret is ***"


def test_run_outside_runyard_exits_2(monkeypatch, capsys):
    for name in ("JOB_ID", "JOB_SECRET_KEY", "JOB_HOOK"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit) as info:
        run(lambda job, args: None)
    assert info.value.code == 2
    assert "JOB_ID" in capsys.readouterr().err


def test_timestamps_never_repeat_across_threads(client):
    import sys
    import threading

    seen = []
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: the race shows at once
    try:
        def take():
            seen.extend(client._timestamp() for _ in range(2000))

        threads = [threading.Thread(target=take) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(switch)
    assert len(seen) == 16000 and len(set(seen)) == 16000


def test_a_long_error_is_sent_cut_as_the_server_stores_it(stub):
    # Probe s50 F7: fail() with 1.2 MB of text was refused 413 whole and the job's error lost.
    with JobClient(stub.job_id, stub.secret, stub.hook, retries=1, timeout=5) as c:
        c.fail("€" * 400000)
    sent = stub.reports[-1]["errorMessage"]
    assert len(sent.encode()) <= 16 * 1024
    assert sent.endswith("… [runyard: cut, 1200000 bytes in all]")
    assert sent.startswith("€" * 5000)

