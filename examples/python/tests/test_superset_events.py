"""Superset drop-in: a runyard server with ``[auth]`` accepts the ``async-token`` cookie that
Superset's ``AsyncQueryManager`` mints (PyJWT, HS256, claims ``channel``, ``sub`` and ``exp``)
on the polling endpoint ``/api/v1/async_event/`` and the WebSocket, and serves that channel only.

The test starts its own server (the debug binary, ``target/debug/runyard`` or ``$RUNYARD_BIN``)
on a free port, because the shared test server runs without ``[auth]``. Skipped when the binary
or PyJWT is missing.
"""

import json
import os
import socket
import subprocess
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import requests

jwt = pytest.importorskip("jwt")  # PyJWT

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
BIN = os.environ.get("RUNYARD_BIN") or os.path.join(REPO, "target", "debug", "runyard")
SECRET = "superset-test-secret-" + uuid.uuid4().hex  # 53 bytes
COOKIE = "async-token"  # GLOBAL_ASYNC_QUERIES_JWT_COOKIE_NAME

pytestmark = pytest.mark.skipif(not os.access(BIN, os.X_OK), reason=f"no runyard binary at {BIN}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(tmp_path, require_exp=True):
    port = free_port()
    cfg = tmp_path / "runyard.toml"
    cfg.write_text(
        f'listen = "127.0.0.1:{port}"\n'
        f'data_dir = "{tmp_path / "data"}"\n'
        "[auth]\n"
        f'jwt_secret = "{SECRET}"\n'
        f"require_exp = {'true' if require_exp else 'false'}\n"
        "[[runners]]\n"
        'kind = "service"\n'
        'types = ["runyard.*"]\n'
    )
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen([BIN, "serve", "--config", str(cfg)], stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if requests.get(base + "/health", timeout=1).status_code == 200:
                return proc, base
        except requests.RequestException:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("runyard did not start: " + (tmp_path / "server.log").read_text())


@pytest.fixture
def server(tmp_path):
    proc, base = start_server(tmp_path)
    yield base
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def superset_token(channel, user_id, exp=True):
    """What AsyncQueryManager.validate_session sets as the cookie (plus an ``exp``)."""
    sub = str(user_id) if user_id else None
    claims = {"channel": channel, "sub": sub}
    if exp:
        claims["exp"] = datetime.now(tz=timezone.utc) + timedelta(minutes=10)
    return jwt.encode(claims, SECRET, algorithm="HS256")


def service_token():
    """With ``[auth]`` the client API needs a bearer: a JWT with a ``scope`` claim, as the
    Superset backend (or any service that submits) mints for itself."""
    claims = {"scope": "jobs:submit", "sub": "superset", "exp": datetime.now(tz=timezone.utc) + timedelta(minutes=10)}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def submit(base, channel):
    r = requests.post(
        base + "/async/jobs",
        json={"type": "runyard.noop", "channel": channel},
        headers={"Authorization": "Bearer " + service_token()},
        timeout=10,
    )
    assert r.status_code == 202, r.text
    return r.json()["job_id"]


def poll_until_done(base, token, job_ids, bound=30.0):
    """Polls like Superset's frontend (cookie, ``last_id``) until every job is done."""
    s = requests.Session()
    s.cookies.set(COOKIE, token)
    events, last_id = [], None
    deadline = time.time() + bound
    while time.time() < deadline:
        params = {"last_id": last_id} if last_id else {}
        r = s.get(base + "/api/v1/async_event/", params=params, timeout=10)
        assert r.status_code == 200, r.text
        page = r.json()["result"]
        events += page
        if page:
            last_id = page[-1]["id"]
        done = {e["job_id"] for e in events if e["status"] == "done"}
        if set(job_ids) <= done:
            return events
        time.sleep(0.1)
    raise AssertionError(f"jobs {job_ids} not done in {bound}s: {events}")


def test_superset_cookie_reads_its_channel_only(server):
    mine, theirs = str(uuid.uuid4()), str(uuid.uuid4())
    token = superset_token(mine, 1)
    my_jobs = [submit(server, mine), submit(server, mine)]
    other_jobs = [submit(server, theirs)]
    events = poll_until_done(server, token, my_jobs)
    assert events, events
    assert all(e["channel_id"] == mine for e in events), events
    assert not {e["job_id"] for e in events} & set(other_jobs)
    # A guest (sub None) on the other channel reads that one.
    guest = poll_until_done(server, superset_token(theirs, None), other_jobs)
    assert all(e["channel_id"] == theirs for e in guest), guest

    # Another channel, no token, a forged signature, an expired token: refused.
    r = requests.get(server + "/api/v1/async_event/", params={"channel": theirs}, cookies={COOKIE: token}, timeout=10)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", r.text
    r = requests.get(server + "/api/v1/async_event/", timeout=10)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", r.text
    forged = jwt.encode({"channel": mine, "sub": "1", "exp": int(time.time()) + 600}, "x" * 40, algorithm="HS256")
    r = requests.get(server + "/api/v1/async_event/", cookies={COOKIE: forged}, timeout=10)
    assert r.status_code == 401, r.text
    expired = jwt.encode({"channel": mine, "sub": "1", "exp": int(time.time()) - 600}, SECRET, algorithm="HS256")
    r = requests.get(server + "/api/v1/async_event/", cookies={COOKIE: expired}, timeout=10)
    assert r.status_code == 401 and "expired" in r.json()["error"]["message"], r.text
    # By default a token without exp (stock Superset) is refused, naming the claim.
    r = requests.get(server + "/api/v1/async_event/", cookies={COOKIE: superset_token(mine, 1, exp=False)}, timeout=10)
    assert r.status_code == 401 and "exp" in r.json()["error"]["message"], r.text


def test_websocket_with_the_cookie_replays_the_same_events(server):
    websockets = pytest.importorskip("websockets.sync.client")
    channel = str(uuid.uuid4())
    token = superset_token(channel, 7)
    jobs = [submit(server, channel), submit(server, channel)]
    polled = poll_until_done(server, token, jobs)
    url = server.replace("http://", "ws://") + "/async/events/ws?last_id=0"
    with websockets.connect(url, additional_headers={"Cookie": f"{COOKIE}={token}"}, open_timeout=10) as ws:
        got = [json.loads(ws.recv(timeout=20)) for _ in polled]
    assert [e["id"] for e in got] == [e["id"] for e in polled]
    # Without the cookie the upgrade is refused with a plain HTTP 401.
    with pytest.raises(Exception) as refused:
        websockets.connect(url, open_timeout=10)
    assert "401" in str(refused.value)


def test_stock_superset_token_without_exp_when_allowed(tmp_path):
    proc, base = start_server(tmp_path, require_exp=False)
    try:
        channel = str(uuid.uuid4())
        job = submit(base, channel)
        events = poll_until_done(base, superset_token(channel, 3, exp=False), [job])
        assert all(e["channel_id"] == channel for e in events), events
    finally:
        proc.terminate()
        proc.wait(timeout=20)
