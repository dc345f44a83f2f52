"""What the submit client's tests against a real server share (test_submit_client.py,
test_submit_batch.py): the server's URL and token from the environment, and the skip mark.

RUNYARD_TEST_SERVER is a server started from the repository root with
examples/python/runyard-test.toml (see test_against_server.py); RUNYARD_TEST_TOKEN, if set, is the
client's token.
"""

import os

import pytest

SERVER = os.environ.get("RUNYARD_TEST_SERVER", "").rstrip("/")
TOKEN = os.environ.get("RUNYARD_TEST_TOKEN")
BOUND = 60  # seconds: the longest any wait may take on a loaded CI machine

server = pytest.mark.skipif(not SERVER, reason="set RUNYARD_TEST_SERVER=http://127.0.0.1:7070 to run against a server")
