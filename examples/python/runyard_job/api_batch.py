"""``submit_batch``: up to 1,000 jobs in one request (``POST /async/jobs/batch``, docs/api.md).

All or nothing per job: each item is stored or refused on its own, with its own idempotency key
and its own answer; a body the server cannot take whole (no jobs, more than 1,000) raises one
``ApiError`` (``422 invalid_request``) and nothing is stored. The operation is written once, for
both flavours, in the request layer's style (``api_core.py``).
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, Generic, Iterator, List, Mapping, Optional, Sequence, TypeVar

from .api_core import Op, call_json, job_from_submit
from .api_errors import ApiError
from .api_requests import submit_body

J = TypeVar("J")

#: Most jobs the server takes in one batch.
MAX_BATCH = 1000


class BatchItem(Generic[J]):
    """One job of a batch, in the order given: accepted (``job``) or refused (``error``).

    ``status_code`` is the item's own: 202 (stored), 200 (its ``idempotency_key`` was taken with
    the same body: ``job`` is the earlier job, ``replayed`` is True) or the 4xx of the refusal
    (``error``: the ``ApiError`` the single submit would raise, ``Forbidden`` for a 403).
    """

    __slots__ = ("index", "idempotency_key", "status_code", "job", "error")

    def __init__(
        self, index: int, idempotency_key: Optional[str], status_code: int, job: Optional[J], error: Optional[ApiError]
    ):
        self.index = index
        self.idempotency_key = idempotency_key
        self.status_code = status_code
        self.job = job
        self.error = error

    @property
    def ok(self) -> bool:
        """The job is stored (now, or by an earlier submit with the same key)."""
        return self.job is not None

    @property
    def replayed(self) -> bool:
        return self.ok and self.status_code == 200

    def __repr__(self) -> str:
        what = f"job={self.job!r}" if self.ok else f"error={self.error}"
        return f"BatchItem(index={self.index}, status_code={self.status_code}, {what})"


class BatchResult(Generic[J]):
    """What ``submit_batch`` returns: one ``BatchItem`` per job given, in order (iterate, index,
    ``len``), and the server's counts ``accepted`` (stored or replayed) and ``failed``."""

    def __init__(self, items: List[BatchItem[J]], accepted: int, failed: int):
        self.items = items
        self.accepted = accepted
        self.failed = failed

    @property
    def jobs(self) -> List[J]:
        """The accepted jobs, in order."""
        return [i.job for i in self.items if i.job is not None]

    @property
    def errors(self) -> List[BatchItem[J]]:
        """The refused items, in order."""
        return [i for i in self.items if not i.ok]

    def __iter__(self) -> Iterator[BatchItem[J]]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> BatchItem[J]:
        return self.items[index]

    def __repr__(self) -> str:
        return f"BatchResult(accepted={self.accepted}, failed={self.failed})"


def batch_body(index: int, item: Mapping[str, Any]) -> Dict[str, Any]:
    """One item: ``submit()``'s keywords but ``files`` (``type`` required), as its JSON body."""
    if not isinstance(item, Mapping):
        raise TypeError(f"jobs[{index}]: expected a mapping of submit() keywords, got {type(item).__name__}")
    if "files" in item:
        raise ValueError(f"jobs[{index}]: a batch takes no files (submit() the job on its own)")
    if "type" not in item:
        raise ValueError(f"jobs[{index}]: `type` is required")
    try:
        return submit_body(**item)
    except TypeError as e:
        raise TypeError(f"jobs[{index}]: {e}") from None


def _item(index: int, body: Dict[str, Any], answer: Any, wrap: Callable[[Dict[str, Any]], J]) -> BatchItem[J]:
    if not isinstance(answer, dict):
        raise ApiError(200, "bad_answer", f"batch result {index} is not an object")
    status = int(answer.get("status_code") or 0)
    key = body.get("idempotency_key")
    if "error" in answer or status >= 400:
        error = ApiError.from_response(status, "", json.dumps({"error": answer.get("error")}))
        return BatchItem(index, key, status, None, error)
    return BatchItem(index, key, status, wrap(job_from_submit(answer)), None)


def submit_batch(jobs: Sequence[Mapping[str, Any]], wrap: Callable[[Dict[str, Any]], J]) -> Op[BatchResult[J]]:
    """``POST /async/jobs/batch`` with ``jobs`` (each its submit keywords); ``wrap`` makes the
    flavour's job object of an accepted item."""
    bodies = [batch_body(i, item) for i, item in enumerate(jobs)]
    answer = yield from call_json("POST", "/async/jobs/batch", json={"jobs": bodies})
    results = answer.get("results") if isinstance(answer, dict) else None
    if not isinstance(results, list) or len(results) != len(bodies):
        got = len(results) if isinstance(results, list) else "no"
        raise ApiError(200, "bad_answer", f"the server answered {got} results for {len(bodies)} jobs")
    items = [_item(i, body, r, wrap) for i, (body, r) in enumerate(zip(bodies, results))]
    accepted = sum(1 for i in items if i.ok)
    return BatchResult(items, int(answer.get("accepted", accepted)), int(answer.get("failed", len(items) - accepted)))
