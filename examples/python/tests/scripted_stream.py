"""A small local server that sends hand-made event streams, byte for byte, for the tests of
following a job without runyard (test_sse_rules.py, test_follow_pacing.py); the ``servers``
fixture (conftest.py) starts them.
"""

import http.server
import json
import threading

JOB_ID = "0190a0a0-0000-7000-8000-00000000f011"


def ev(status):
    return json.dumps({"job_id": JOB_ID, "type": "status", "runyard_status": status}).encode()


class Scripted(http.server.ThreadingHTTPServer):
    """Answers connection ``i`` of the event stream with ``streams[i]`` (the last one for any
    later), then holds it open (``hold``) or closes it; records each one's ``Last-Event-ID`` as
    the bytes that came. The job reads answer ``job_status`` (SUCCESS); with ``stream_status``
    (502, ...) every connection of the stream is answered that status instead."""

    daemon_threads = True

    def __init__(self, streams, hold, job_status="SUCCESS", stream_status=None):
        super().__init__(("127.0.0.1", 0), ScriptedHandler)
        self.streams = streams
        self.hold = hold
        self.job_status = job_status
        self.stream_status = stream_status
        self.last_ids = []
        self.closing = threading.Event()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class ScriptedHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        s = self.server
        if self.path.startswith("/async/jobs/"):
            body = json.dumps({"id": JOB_ID, "status": s.job_status, "channel_id": JOB_ID}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        last = self.headers.get("Last-Event-ID")
        # http.server reads header bytes as latin-1: back to the bytes sent.
        s.last_ids.append(None if last is None else last.encode("latin-1"))
        if s.stream_status is not None:
            self.send_response(s.stream_status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        stream = s.streams[min(len(s.last_ids), len(s.streams)) - 1]
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(stream)
        self.wfile.flush()
        if s.hold:
            s.closing.wait(30)


def scripted(streams, hold=False, **kwargs):
    s = Scripted(streams, hold, **kwargs)
    threading.Thread(target=s.serve_forever, daemon=True).start()
    return s
