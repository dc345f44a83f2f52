"""A tiny in-process stand-in for runyard's job hook, for tests that need no real server.

It verifies v1 and v2 signatures the way the contract says the server must (from the raw request
target and the raw body bytes), enforces "a job touches only its own files", hands out
short-lived file URLs (absolute or origin-relative) and records every report.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class StubHook:
    def __init__(self, job_id="0190b8c6-7f1e-7000-8000-000000000001", secret="s3cr3t-0123456789abcdef"):
        self.job_id = job_id
        self.secret = secret
        self.job_type = "py.test"
        self.args = {"name": "stub"}
        self.files: Dict[str, List[bytes]] = {}
        self.known_content: Dict[str, bytes] = {}  # md5 -> content the store already holds
        self.location_mode = "absolute"  # or "relative"
        self.corrupt_downloads = False
        self.fail_next: List[int] = []  # statuses to answer (once each) before handling
        # A proxy in front of the hook that answers 504 (its own page, not runyard's JSON):
        self.drop_next = 0  # ... instead of forwarding the next N hook calls (they never arrive)
        self.lose_answers = 0  # ... after forwarding the next N hook calls (they were handled)
        # The hook's own refusal after authenticating (the signature is spent, nothing applied),
        # like runyard's 503 `unavailable` when its store fails: statuses, once each.
        self.fail_after_auth: List[int] = []
        self.max_body_bytes = 1024 * 1024  # larger: 413 too_large, as the server's api.max_body_bytes
        self.echo_secret_in_errors = False
        # What the next status reports get, once each, after their signature: None (handled as
        # always), a status (refused with it, nothing stored), "not_json" (stored, answered 200
        # with a body that is not JSON, as a proxy's page), "applied_then_503" (stored, then
        # runyard's own 503, as when a store op fails after the apply), "cut_short" (stored, its
        # answer cut short: the node died while answering).
        self.status_plan: List[Optional[object]] = []
        self.reported: Optional[str] = None  # the final status taken: a later report's 409 says it
        self.require_v2 = False
        # Indices in `requests` answered 503 replay_unavailable after their signature checked out
        # (the hook's replay memory is down: it cannot tell whether it saw the request).
        self.replay_unavailable: set = set()
        self.knows_nonce = True  # False: verifies v2 without X-Job-Nonce, as a hook of an earlier build
        # True: once the next status report is stored, knows_nonce turns False (the calls after it
        # reach an API node of an earlier build, as a re-send may during a rolling upgrade).
        self.older_node_next = False
        self.reports: List[dict] = []
        self.requests: List[dict] = []  # every request: method, target, headers, body, signature
        self._tokens: Dict[str, tuple] = {}
        self._seen = set()
        self._lock = threading.Lock()
        self.terminal = False
        self._conns: set = set()  # the open connections, closed by an outage
        self._reopen: Optional[threading.Timer] = None
        self._listen(0)

    def _listen(self, port: int) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    # -- lifecycle
    @property
    def origin(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def hook(self) -> str:
        return self.origin + "/async"

    def env(self) -> Dict[str, str]:
        return {
            "JOB_ID": self.job_id,
            "JOB_SECRET_KEY": self.secret,
            "JOB_HOOK": self.hook,
            "JOB_TYPE": self.job_type,
            "JOB_ARGS": json.dumps(self.args),
        }

    def start(self) -> "StubHook":
        self.thread.start()
        return self

    def stop(self) -> None:
        if self._reopen is not None:
            self._reopen.cancel()
            self._reopen.join()
        self.server.shutdown()
        self.server.server_close()

    def outage(self, seconds: float) -> None:
        """The hook's node goes down for ``seconds`` (a restart): the listener and every open
        connection are closed, so connections are refused, then it listens again on the same port
        with the same state (reports, replay protection)."""
        port = self.server.server_address[1]
        self.server.shutdown()
        self.server.server_close()
        with self._lock:
            for conn in list(self._conns):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        def back() -> None:
            self._listen(port)
            self.thread.start()

        self._reopen = threading.Timer(seconds, back)
        self._reopen.daemon = True
        self._reopen.start()

    # -- helpers for tests
    def add_input(self, prop: str, data: bytes) -> None:
        self.files.setdefault(prop, []).append(data)
        self.known_content[md5(data)] = data

    def statuses(self) -> List[Optional[str]]:
        return [r.get("status") for r in self.reports if r.get("status")]

    def _handler(self):
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def setup(self):
                super().setup()
                with stub._lock:
                    stub._conns.add(self.connection)

            def finish(self):
                with stub._lock:
                    stub._conns.discard(self.connection)
                try:
                    super().finish()
                except OSError:
                    pass  # closed by an outage

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _send(self, code: int, payload=None, raw: Optional[bytes] = None):
                data = raw if raw is not None else (b"" if payload is None else json.dumps(payload).encode())
                if self.path.startswith("/async/") and stub.lose_answers:
                    stub.lose_answers -= 1
                    return self._proxy_timeout()
                self.send_response(code)
                self.send_header("Content-Type", "application/json" if raw is None else "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _proxy_timeout(self):
                data = b"<html><body><h1>504 Gateway Time-out</h1></body></html>"
                self.send_response(504)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, code: int, err: str, message: str):
                if stub.echo_secret_in_errors:
                    message = f"{message} (secret was {stub.secret})"
                self._send(code, {"error": {"code": err, "message": message}})

            def _verify(self, body: bytes) -> Optional[str]:
                """None when the signature is good, else the error already sent."""
                h = self.headers
                job, ts, given = h.get("X-Job-Id"), h.get("X-Job-Time"), h.get("X-Job-Hash")
                version = h.get("X-Job-Signature") or "v1"
                stub.requests.append(
                    {"method": self.command, "target": self.path, "headers": dict(h), "body": body, "signature": version}
                )
                if not (job and ts and given):
                    self._error(401, "unauthorized", "missing signature")
                    return "401"
                if job != stub.job_id:
                    self._error(404, "not_found", "unknown job")
                    return "404"
                if abs(int(time.time() * 1000) - int(ts)) > 5 * 60 * 1000:
                    self._error(401, "unauthorized", "stale time")
                    return "401"
                key = stub.secret.encode()
                if version == "v2":
                    digest = hashlib.sha256(body).hexdigest()
                    msg = f"{ts}\n{self.command}\n{self.path}\n{digest}"
                    nonce = h.get("X-Job-Nonce") if stub.knows_nonce else None
                    msg = (msg + "\n" + nonce if nonce else msg).encode()
                elif version == "v1" and not stub.require_v2:
                    msg = ts.encode()
                else:
                    self._error(401, "unauthorized", f"signature {version} refused")
                    return "401"
                expected = hmac.new(key, msg, hashlib.sha256).hexdigest()
                if not hmac.compare_digest(expected, given.lower()):
                    self._error(401, "bad_signature", "bad signature")
                    return "401"
                if len(stub.requests) - 1 in stub.replay_unavailable:
                    self._error(503, "replay_unavailable", "the store cannot write")
                    return "503"
                with stub._lock:
                    if (job, ts, given) in stub._seen:
                        self._error(401, "replay", "replayed request")
                        return "401"
                    stub._seen.add((job, ts, given))
                return None

            def _own(self, store: str, uuid: str) -> bool:
                if store != "jobs" or uuid != stub.job_id:
                    self._error(403, "forbidden", "a job may only touch its own files")
                    return False
                return True

            def _handle(self):
                body = self._body()
                if stub.fail_next:
                    self._error(stub.fail_next.pop(0), "unavailable", "try again")
                    return
                if self.path.startswith("/async/") and stub.drop_next:
                    stub.drop_next -= 1
                    return self._proxy_timeout()
                parts = self.path.split("?", 1)[0].strip("/").split("/")
                # unsigned, token-authorized file URLs
                if parts[0] == "files" and self.command == "GET":
                    entry = stub._tokens.pop(parts[1], None)
                    if entry is None:
                        return self._error(404, "not_found", "no such file url")
                    data = entry[1]
                    if stub.corrupt_downloads:
                        data = data + b"!"
                    return self._send(200, raw=data)
                if parts[0] == "bytes" and self.command == "PUT":
                    entry = stub._tokens.pop(parts[1], None)
                    if entry is None:
                        return self._error(404, "not_found", "no such upload url")
                    prop, expected = entry
                    if md5(body) != expected:
                        return self._error(400, "bad_hash", "content does not match the announced hash")
                    stub.files.setdefault(prop, []).append(body)
                    stub.known_content[expected] = body
                    return self._send(200, {})
                if parts[0] != "async":
                    return self._error(404, "not_found", "no route")
                if len(body) > stub.max_body_bytes:
                    return self._error(413, "too_large", f"the body is over {stub.max_body_bytes} bytes")
                if self._verify(body):
                    return
                if stub.fail_after_auth:
                    return self._error(stub.fail_after_auth.pop(0), "unavailable", "the store did not answer")
                try:
                    json.loads((body or b"{}").decode("utf-8"))  # strict, as serde_json is
                except ValueError as exc:  # UnicodeDecodeError too: a lone surrogate
                    return self._error(400, "bad_json", f"the body is not JSON: {exc}")
                route = parts[1:]
                if self.command == "POST" and route == ["status"]:
                    if stub.terminal and stub.reported:
                        error = {"code": "illegal_transition", "message": "job reported already", "reported": stub.reported}
                        return self._send(409, {"error": error})
                    if stub.terminal:
                        return self._error(409, "conflict", "job is terminal")
                    plan = stub.status_plan.pop(0) if stub.status_plan else None
                    if isinstance(plan, int):
                        return self._error(plan, "unavailable", "try again")
                    report = json.loads(body or b"{}")
                    stub.reports.append(report)
                    if stub.older_node_next:
                        stub.older_node_next, stub.knows_nonce = False, False
                    if report.get("status") in ("SUCCESS", "ERROR"):
                        stub.terminal, stub.reported = True, report["status"]
                    if plan == "applied_then_503":
                        return self._error(503, "unavailable", "the store did not answer")
                    if plan == "cut_short":
                        self.send_response(200)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", "1000")
                        self.end_headers()
                        self.wfile.write(b'{"id": "')
                        self.wfile.flush()
                        self.close_connection = True
                        return None
                    if plan == "not_json":
                        return self._send(200, raw=b"<html>OK</html>")
                    return self._send(200, {"id": stub.job_id, "status": report.get("status", "RUNNING")})
                if self.command == "GET" and route == ["job"]:
                    return self._send(200, {"id": stub.job_id, "type": stub.job_type, "args": stub.args, "attempt": 1})
                if self.command == "GET" and len(route) == 5 and route[0] == "download":
                    _, store, uuid, prop, index = route
                    if not self._own(store, uuid):
                        return
                    items = stub.files.get(prop, [])
                    if int(index) >= len(items):
                        return self._error(404, "not_found", f"no file {prop}[{index}]")
                    data = items[int(index)]
                    token = secrets.token_hex(8)
                    stub._tokens[token] = (prop, data)
                    location = f"/files/{token}"
                    if stub.location_mode == "absolute":
                        location = stub.origin + location
                    meta = {"hash": md5(data), "size": len(data), "mimetype": "text/plain", "name": "input.txt"}
                    return self._send(200, {"Location": location, "Map": meta})
                if self.command == "PUT" and len(route) == 4 and route[0] == "upload":
                    _, store, uuid, prop = route
                    if not self._own(store, uuid):
                        return
                    req = json.loads(body)
                    known = stub.known_content.get(req["hash"])
                    if known is not None:
                        if md5(b"WEBDA" + known) != req["challenge"]:
                            return self._error(400, "bad_challenge", "challenge does not prove the content")
                        stub.files.setdefault(prop, []).append(known)
                        return self._send(200, {"done": True})
                    token = secrets.token_hex(8)
                    stub._tokens[token] = (prop, req["hash"])
                    url = f"/bytes/{token}"
                    if stub.location_mode == "absolute":
                        url = stub.origin + url
                    return self._send(200, {"done": False, "method": "PUT", "url": url})
                return self._error(404, "not_found", "no route")

            do_GET = do_POST = do_PUT = _handle

        return Handler
