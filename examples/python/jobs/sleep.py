#!/usr/bin/env python3
"""Example job "py.sleep": reports RUNNING, logs, sleeps args.seconds (default 30), answers
{"slept": seconds}. The submit client's tests time it out and cancel it."""

import time

from runyard_job import run


def main(job, args):
    seconds = float(args.get("seconds", 30)) if isinstance(args, dict) else 30.0
    job.log(f"sleeping {seconds} s")
    time.sleep(seconds)
    return {"slept": seconds}


if __name__ == "__main__":
    run(main)
