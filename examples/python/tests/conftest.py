import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE_ROOT = os.path.dirname(HERE)  # examples/python
JOBS_DIR = os.path.join(PACKAGE_ROOT, "jobs")

sys.path.insert(0, HERE)  # stub_hook
sys.path.insert(0, PACKAGE_ROOT)  # runyard_job without installing

from scripted_stream import scripted  # noqa: E402
from stub_hook import StubHook  # noqa: E402

from runyard_job import JobClient  # noqa: E402


@pytest.fixture
def stub():
    hook = StubHook().start()
    yield hook
    hook.stop()


@pytest.fixture
def client(stub):
    # No retries, no report window: each test sees a failed call fail (test_report_window.py
    # tests the window).
    with JobClient(stub.job_id, stub.secret, stub.hook, timeout=5, retries=0, report_window=0) as c:
        yield c


@pytest.fixture
def servers():
    started = []
    yield lambda *a, **k: started.append(scripted(*a, **k)) or started[-1]
    for s in started:
        s.closing.set()
        s.shutdown()
        s.server_close()
