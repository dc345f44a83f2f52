#!/usr/bin/env python3
"""Example job "py.flaky": raises until attempt `args.succeed_on` (default 3), then succeeds.

Shows runyard's retry rule: an exception in the job function is reported as ERROR and retried
with backoff, once this process has ended, while the job has attempts left. With
`args.fatal` it raises `NonRetryable` instead: the job ends ERROR at once.
"""

import os

from runyard_job import NonRetryable, run


def main(job, args):
    args = args if isinstance(args, dict) else {}
    attempt = int(os.environ.get("JOB_ATTEMPT") or job.job()["attempt"])
    print(f"flaky.py: attempt {attempt}", flush=True)
    if args.get("fatal"):
        raise NonRetryable(f"bad input on attempt {attempt}: no retry can fix it")
    if attempt < int(args.get("succeed_on", 3)):
        raise ValueError(f"transient failure on attempt {attempt}")
    print(f"flaky.py: last line of attempt {attempt}", flush=True)
    return {"attempt": attempt}


if __name__ == "__main__":
    run(main)
