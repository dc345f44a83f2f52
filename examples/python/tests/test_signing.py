"""Known answers for the hook signatures. The literal vectors were computed with openssl, so the
Rust verifier (hooks crate) can reuse them:

    printf '1700000000000\nPOST\n/async/status?x=1\n<sha256 hex of body>' | openssl dgst -sha256 -hmac SECRET
"""

import hashlib
import hmac
import importlib.util
import os

import pytest
import requests

from conftest import JOBS_DIR
from runyard_job.signing import (
    EMPTY_BODY_SHA256,
    NONCE_RE,
    job_headers,
    new_nonce,
    path_and_query,
    sign_v1,
    sign_v2,
)

SECRET = "test-secret-0123456789"
TS = "1700000000000"
BODY = b'{"status":"RUNNING"}'


def test_v2_known_answer_from_the_formula():
    digest = hashlib.sha256(BODY).hexdigest()
    message = f"{TS}\nPOST\n/async/status?x=1\n{digest}".encode()
    expected = hmac.new(SECRET.encode(), message, hashlib.sha256).hexdigest()
    assert sign_v2(SECRET, TS, "POST", "/async/status?x=1", BODY) == expected


def test_v2_literal_vectors():
    assert hashlib.sha256(BODY).hexdigest() == "8a320f75d49b24da756707eb933391ebbd38a94fbad259c43663a4626c585475"
    assert (
        sign_v2(SECRET, TS, "POST", "/async/status?x=1", BODY)
        == "9c9de1ff005baff58cd813348dd499a5408434bf66d4b3bce8bced001f90c293"
    )
    # a GET has no body: the digest is sha256(b"")
    assert EMPTY_BODY_SHA256 == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert (
        sign_v2(SECRET, TS, "GET", "/async/download/jobs/0190-abc/inputs/0", b"")
        == "f48bef4a94e403e100658dbf3998a7a64674d6f83193b38dc7ff84f13adaab77"
    )
    assert sign_v1(SECRET, TS) == "5027c09fcde9edc2677466b9d518e5a166c7877c541a6decdf631a1d20cf5b41"


def test_v2_method_is_uppercased_and_everything_is_covered():
    base = sign_v2(SECRET, TS, "POST", "/async/status", BODY)
    assert sign_v2(SECRET, TS, "post", "/async/status", BODY) == base
    assert sign_v2(SECRET, TS, "PUT", "/async/status", BODY) != base
    assert sign_v2(SECRET, TS, "POST", "/async/status?x=1", BODY) != base
    assert sign_v2(SECRET, TS, "POST", "/async/status", BODY + b" ") != base
    assert sign_v2(SECRET, "1700000000001", "POST", "/async/status", BODY) != base
    assert sign_v2(SECRET + "x", TS, "POST", "/async/status", BODY) != base


def test_v2_headers():
    headers = job_headers("job-1", SECRET, TS, "v2", "POST", "/async/status", BODY)
    assert headers == {
        "X-Job-Id": "job-1",
        "X-Job-Time": TS,
        "X-Job-Signature": "v2",
        "X-Job-Hash": sign_v2(SECRET, TS, "POST", "/async/status", BODY),
    }


def test_v2_with_a_nonce():
    # The nonce is the signed message's last line; the Rust crate's known answer
    # (hooks/src/sign.rs, v2_with_a_nonce_known_answer) with its secret.
    nonce = "0123456789abcdef0123456789abcdef"
    digest = hashlib.sha256(BODY).hexdigest()
    message = f"{TS}\nPOST\n/async/status\n{digest}\n{nonce}".encode()
    expected = hmac.new(SECRET.encode(), message, hashlib.sha256).hexdigest()
    assert sign_v2(SECRET, TS, "POST", "/async/status", BODY, nonce) == expected
    assert sign_v2(SECRET, TS, "POST", "/async/status", BODY, "other") != expected
    assert sign_v2(SECRET, TS, "POST", "/async/status", BODY) != expected
    rust_secret = "f61b0c92cd4100fe87c7d02bb64aedf228570ebb5bafd1ff015e63e3447b1cbd"
    assert (
        sign_v2(rust_secret, TS, "POST", "/async/status", BODY, nonce)
        == "605d75829e8af137532e5016e552301819c58ece9bbc0dd3a87fb14b346ca19c"
    )
    headers = job_headers("job-1", SECRET, TS, "v2", "POST", "/async/status", BODY, nonce)
    assert headers == {
        "X-Job-Id": "job-1",
        "X-Job-Time": TS,
        "X-Job-Signature": "v2",
        "X-Job-Hash": expected,
        "X-Job-Nonce": nonce,
    }
    # A nonce is 1-64 letters, digits, "-" or "_", and goes with v2 only.
    for bad in ("", "a b", "a\nb", "n" * 65):
        with pytest.raises(ValueError):
            sign_v2(SECRET, TS, "POST", "/async/status", BODY, bad)
    with pytest.raises(ValueError):
        job_headers("job-1", SECRET, TS, "v1", nonce=nonce)
    a, b = new_nonce(), new_nonce()
    assert a != b and len(a) == 32 and NONCE_RE.fullmatch(a)


def _load_seed():
    spec = importlib.util.spec_from_file_location("seed_v1_client", os.path.join(JOBS_DIR, "seed_v1_client.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_v1_equals_the_seed_job_headers(monkeypatch):
    seed = _load_seed()
    monkeypatch.setenv("JOB_ID", "job-1")
    monkeypatch.setenv("JOB_SECRET_KEY", SECRET)
    monkeypatch.setattr(seed.time, "time", lambda: 1700000000.0)
    seed_headers = seed.job_headers()
    ours = job_headers("job-1", SECRET, TS, "v1")
    assert ours == seed_headers
    assert "X-Job-Signature" not in ours


def test_path_and_query_includes_the_query():
    assert path_and_query("http://127.0.0.1:7070/async/status") == "/async/status"
    assert path_and_query("http://127.0.0.1:7070/async/job?x=1&y=a%20b") == "/async/job?x=1&y=a%20b"
    assert path_and_query("http://127.0.0.1:7070/async/job?x=1#frag") == "/async/job?x=1"
    assert path_and_query("http://127.0.0.1:7070") == "/"


def test_path_and_query_is_what_requests_puts_on_the_wire():
    for url in (
        "http://127.0.0.1:7070/async/status",
        "http://127.0.0.1:7070/async/job?x=1&y=a%20b",
        "http://127.0.0.1:7070/async/download/jobs/id/in%2Fputs/0",
    ):
        prepared = requests.Request("GET", url).prepare()
        assert prepared.path_url == path_and_query(url)
