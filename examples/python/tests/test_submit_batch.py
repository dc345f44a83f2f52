"""``submit_batch`` (``POST /async/jobs/batch``) of ``Client`` and ``AsyncClient`` against a real
runyard server (RUNYARD_TEST_SERVER, as in test_submit_client.py: a server started from the
repository root with examples/python/runyard-test.toml). The last tests need no server: items the
client refuses before sending anything.
"""

import asyncio
import datetime as dt
import uuid

import pytest

from runyard_job import ApiError, AsyncClient, AsyncJob, BatchResult, Client, Job, JobFailed

from submit_support import BOUND, SERVER, TOKEN, server


@pytest.fixture
def client():
    with Client(SERVER, token=TOKEN, timeout=30) as c:
        yield c


def key(name):
    """An idempotency key no other run of these tests has used."""
    return f"py.batch.{name}.{uuid.uuid4().hex}"


@server
def test_a_mixed_batch_stores_the_good_jobs_and_refuses_the_bad_one_in_its_slot(client):
    k = key("mixed")
    result = client.submit_batch(
        [
            {"type": "py.hello", "args": {"name": "first"}},
            {"type": "py.no_such_type", "args": {"name": "refused"}},
            {"type": "py.hello", "args": {"name": "third"}, "idempotency_key": k},
            {"type": "py.fail", "max_attempts": 1},
            {"type": "py.hello", "delay": dt.timedelta(hours=1)},  # submit()'s keywords, as submit() takes them
        ]
    )
    assert isinstance(result, BatchResult)
    assert (len(result), result.accepted, result.failed) == (5, 4, 1)
    assert [i.index for i in result] == [0, 1, 2, 3, 4]
    assert [i.status_code for i in result] == [202, 422, 202, 202, 202]
    assert [i.ok for i in result] == [True, False, True, True, True]

    refused = result[1]
    assert refused.job is None and not refused.replayed
    assert isinstance(refused.error, ApiError)
    assert (refused.error.status, refused.error.code) == (422, "unknown_type")
    assert "py.no_such_type" in refused.error.message
    assert result.errors == [refused]

    first, third, failing = result[0].job, result[2].job, result[3].job
    assert all(isinstance(j, Job) for j in (first, third, failing))
    assert result.jobs == [first, third, failing, result[4].job]
    assert len({first.id, third.id, failing.id}) == 3
    assert result[2].idempotency_key == k and result[0].idempotency_key is None
    # The accepted jobs are real jobs: they run, each with its own arguments.
    assert first.result(timeout=BOUND) == {"hello": "first"}
    assert third.result(timeout=BOUND) == {"hello": "third"}
    assert client.job(third.id).data["idempotency_key"] == k
    with pytest.raises(JobFailed):
        failing.wait(timeout=BOUND)
    later = result[4].job.refresh()
    assert later.status == "SCHEDULED", later.data
    run_at = dt.datetime.fromisoformat(later.data["run_at"].replace("Z", "+00:00"))
    assert run_at - dt.datetime.now(dt.timezone.utc) > dt.timedelta(minutes=50)
    later.cancel()


@server
def test_replayed_keys_answer_the_earlier_job_and_a_changed_body_conflicts(client):
    k1, k2, single = key("one"), key("two"), key("single")
    earlier = client.submit("py.hello", {"name": "single"}, idempotency_key=single)
    jobs = [
        {"type": "py.hello", "args": {"name": "one"}, "idempotency_key": k1},
        {"type": "py.hello", "args": {"name": "two"}, "idempotency_key": k2},
        {"type": "py.hello", "args": {"name": "one"}, "idempotency_key": k1},  # again, in the same batch
        {"type": "py.hello", "args": {"name": "single"}, "idempotency_key": single},  # a single submit's key
    ]
    first = client.submit_batch(jobs)
    assert [i.status_code for i in first] == [202, 202, 200, 200]
    assert [i.replayed for i in first] == [False, False, True, True]
    assert first[2].job.id == first[0].job.id
    assert first[3].job.id == earlier.id
    assert first.accepted == 4 and first.failed == 0

    # The same batch sent again (a client retrying after a lost answer): nothing new is stored.
    again = client.submit_batch(jobs)
    assert [i.status_code for i in again] == [200, 200, 200, 200]
    assert all(i.replayed for i in again)
    assert [i.job.id for i in again] == [i.job.id for i in first]
    assert [i.idempotency_key for i in again] == [k1, k2, k1, single]

    # A taken key with another body: that item alone is refused.
    changed = client.submit_batch(
        [
            {"type": "py.hello", "args": {"name": "changed"}, "idempotency_key": k1},
            {"type": "py.hello", "args": {"name": "fresh"}, "idempotency_key": key("fresh")},
        ]
    )
    assert [i.status_code for i in changed] == [409, 202]
    assert changed[0].error.code == "idempotency_conflict" and changed[0].job is None
    assert changed[1].job.result(timeout=BOUND) == {"hello": "fresh"}
    assert first[0].job.result(timeout=BOUND) == {"hello": "one"}


@server
def test_a_batch_over_1000_jobs_is_refused_whole_and_stores_nothing(client):
    prefix = key("big")
    jobs = [{"type": "py.hello", "args": {"name": str(i)}, "idempotency_key": f"{prefix}.{i}"} for i in range(1001)]
    with pytest.raises(ApiError) as e:
        client.submit_batch(jobs)
    assert (e.value.status, e.value.code) == (422, "invalid_request")
    assert "jobs" in e.value.message and "1001" in e.value.message
    with pytest.raises(ApiError) as e:
        client.submit_batch([])
    assert (e.value.status, e.value.code) == (422, "invalid_request")
    # None of the 1,001 keys was taken: the first and the last are new jobs now, not replays.
    now = client.submit_batch([jobs[0], jobs[1000]])
    assert [i.status_code for i in now] == [202, 202], now.items
    assert now[1].job.result(timeout=BOUND) == {"hello": "1000"}


@server
def test_async_submit_batch():
    k = key("async")

    async def main():
        async with AsyncClient(SERVER, token=TOKEN, timeout=30) as c:
            jobs = [
                {"type": "py.hello", "args": {"name": "async"}, "idempotency_key": k},
                {"type": "py.hello", "max_attempts": 0},
            ]
            result = await c.submit_batch(jobs)
            assert [i.status_code for i in result] == [202, 422]
            assert (result.accepted, result.failed) == (1, 1)
            assert result[1].error.code == "invalid_request" and "max_attempts" in result[1].error.message
            job = result[0].job
            assert isinstance(job, AsyncJob)
            assert await job.result(timeout=BOUND) == {"hello": "async"}
            again = await c.submit_batch(jobs[:1])
            assert again[0].replayed and again[0].job.id == job.id
            with pytest.raises(ApiError) as e:
                await c.submit_batch([jobs[0]] * 1001)
            assert (e.value.status, e.value.code) == (422, "invalid_request")

    asyncio.run(main())


# ---------------------------------------------------------------------------------------------
# No server needed: items the client refuses before sending anything.


def test_items_are_checked_before_anything_is_sent():
    with Client("http://127.0.0.1:9", timeout=1) as c:  # nothing listens: a request would fail
        with pytest.raises(ValueError, match=r"jobs\[1\].*files"):
            c.submit_batch([{"type": "a"}, {"type": "b", "files": {"inputs": b"x"}}])
        with pytest.raises(ValueError, match=r"jobs\[0\].*type"):
            c.submit_batch([{"args": {}}])
        with pytest.raises(TypeError, match=r"jobs\[0\]"):
            c.submit_batch([{"type": "a", "no_such_option": 1}])
        with pytest.raises(TypeError, match=r"jobs\[0\]"):
            c.submit_batch(["a"])
