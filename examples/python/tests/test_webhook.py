"""The webhook verifier against the formula of docs/notifications.md (the Rust test
tests/webhooks.rs also runs it on a real delivery's header and body)."""

import hashlib
import hmac

from runyard_job.webhook import verify

KEY = "5f1c0e7d0d2b4c8a9e3f6a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f"
BODY = b'{"id":"7","job_id":"j","type":"status","status":"done"}'
T = 1700000000


def header(t=T, body=BODY, key=KEY):
    mac = hmac.new(key.encode(), str(t).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def test_a_good_signature_verifies():
    assert verify(KEY, header(), BODY, now=T)
    assert verify(KEY, header(), BODY.decode(), now=T + 299)


def test_tampering_and_staleness_are_refused():
    assert not verify(KEY, header(), BODY + b" ", now=T)
    assert not verify("other-key", header(), BODY, now=T)
    assert not verify(KEY, header(t=T - 301), BODY, now=T)
    assert not verify(KEY, header().replace(f"t={T}", f"t={T + 1}"), BODY, now=T)


def test_malformed_headers_are_refused():
    for bad in ["", "garbage", "t=x,v1=00", "v1=00", f"t={T}", None]:
        assert not verify(KEY, bad, BODY, now=T)


def test_one_of_several_v1_signatures_is_enough():
    assert verify(KEY, header() + ",v1=" + "0" * 64, BODY, now=T)
