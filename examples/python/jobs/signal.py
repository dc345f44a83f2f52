#!/usr/bin/env python3
"""Example job "py.signal": writes the readiness signal args.key (payload args.payload) through
its hook, twice with the same id (one record), and answers the server's {key, seq, at, id}."""

from runyard_job import run


def main(job, args):
    first = job.signal(args["key"], args.get("payload"), id=f"{job.job_id}:ready")
    again = job.signal(args["key"], args.get("payload"), id=f"{job.job_id}:ready")
    assert again["seq"] == first["seq"], (first, again)
    return first


if __name__ == "__main__":
    run(main)
