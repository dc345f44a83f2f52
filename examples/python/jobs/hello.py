#!/usr/bin/env python3
"""Example job "py.hello": prints a line, answers {"hello": args.name or "world"}."""

from runyard_job import run


def main(job, args):
    name = args.get("name", "world") if isinstance(args, dict) else "world"
    print(f"hello from job {job.job_id}", flush=True)
    return {"hello": name}


if __name__ == "__main__":
    run(main)
