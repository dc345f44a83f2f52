"""``events()`` across a gap in which the job ended: the connection to the server drops (a server
restart, a network drop) for longer than ``REREAD_INTERVAL``, and the job ends meanwhile. The
follow reads the job again before it reconnects; that read found the job done and ended
``events()`` there, so the events sent during the gap, its final status among them, were never
yielded (review of session 54, finding 4). ``events()`` reconnects from the last event id and
reads through to the job's end.

Needs RUNYARD_TEST_SERVER, as test_submit_client.py; the relay runs in the test.
"""

import asyncio
import socket
import threading
import time
from urllib.parse import urlparse

import pytest

from runyard_job import AsyncClient, Client, api_follow, api_requests
from submit_support import BOUND, SERVER, TOKEN, server


class Relay:
    """A TCP relay to the server that can be cut: ``cut()`` drops every connection through it and
    closes each new one at once (``refused`` counts them) until ``restore()``."""

    def __init__(self):
        target = urlparse(SERVER)
        self.target = (target.hostname, target.port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.down = False
        self.refused = 0
        self.live = []
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                if self.down:
                    self.refused += 1
                    client.close()
                    continue
                upstream = socket.create_connection(self.target)
                self.live += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self.pump, args=(a, b), daemon=True).start()

    @staticmethod
    def pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        with self.lock:
            self.down = True
            for s in self.live:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.live = []

    def restore(self):
        with self.lock:
            self.down = False

    def close(self):
        self.listener.close()
        self.cut()


@pytest.fixture
def relay(monkeypatch):
    # The job read again 0.3 s after the last event (not 15 s), reconnects paced from 50 ms to
    # 0.2 s: the gap below outlasts the interval within a second or two.
    monkeypatch.setattr(api_requests, "REREAD_INTERVAL", 0.3)
    monkeypatch.setattr(api_follow, "RECONNECT_DELAYS", (0.05, 0.2))
    r = Relay()
    yield r
    r.close()


def gap_until_the_job_ended(relay, job_id):
    """Cuts the relay, waits for the job's end (read directly), and for the client to have tried
    again since (its read of the job then finds the job done), then restores the relay."""
    relay.cut()
    with Client(SERVER, token=TOKEN, timeout=10) as direct:
        direct.job(job_id).wait(timeout=BOUND)
        refused = relay.refused
        deadline = time.monotonic() + BOUND
        while relay.refused == refused and time.monotonic() < deadline:
            time.sleep(0.02)
    relay.restore()


def all_events(job_id):
    with Client(SERVER, token=TOKEN, timeout=10) as direct:
        return list(direct.job(job_id).events(timeout=BOUND))


@server
@pytest.mark.parametrize("flavour", ["sync", "asyncio"])
def test_events_yields_what_came_during_a_gap_in_which_the_job_ended(relay, flavour):
    with Client(SERVER, token=TOKEN, timeout=10) as direct:
        job_id = direct.submit("py.sleep", {"seconds": 1}, max_attempts=1).id
    seen = []

    def follow():
        if flavour == "sync":
            with Client(relay.url, token=TOKEN, timeout=10) as c:
                for event in c.job(job_id).events(timeout=BOUND):
                    seen.append(event)
            return

        async def main():
            async with AsyncClient(relay.url, token=TOKEN, timeout=10) as c:
                async for event in (await c.job(job_id)).events(timeout=BOUND):
                    seen.append(event)

        asyncio.run(main())

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    deadline = time.monotonic() + BOUND
    while not seen and time.monotonic() < deadline:
        time.sleep(0.02)
    assert seen, "the first event came through the relay"
    gap_until_the_job_ended(relay, job_id)
    follower.join(BOUND)
    assert not follower.is_alive()
    assert seen[-1]["runyard_status"] == "SUCCESS", "the job's final status event was yielded"
    assert [e["id"] for e in seen] == [e["id"] for e in all_events(job_id)], "none lost or repeated"
