#!/usr/bin/env python3
"""Example job "py.twins": several clients of one job report the same thing at once.

Two `JobClient.from_env()` objects report `progress(0.5)` and `log("tick")` signed in the same
millisecond (both clients' clocks set to it), then `args.processes` processes, each with its own
client, report `progress(0.5)` and `log("tick")` `args.rounds` times. None of these is taken for a
replay of another (each v2 request carries a random `X-Job-Nonce`): a refused progress fails the
job, a lost log line (warned, not raised) is counted in the answer, `{"lost": n}`.
"""

import os
import sys
import time
import traceback

from runyard_job import JobClient, run


def same_millisecond() -> int:
    one, two = JobClient.from_env(), JobClient.from_env()
    with one, two:
        # Both sign the millisecond after this one (a client's times strictly increase).
        one._last_ms = two._last_ms = int(time.time() * 1000) + 1000
        for client in (one, two):
            client.progress(0.5)
        for client in (one, two):
            client.log("tick")
        return one.lines_lost + two.lines_lost


def burst(rounds: int) -> int:
    with JobClient.from_env() as client:
        for _ in range(rounds):
            client.progress(0.5)
            client.log("tick")
        return client.lines_lost


def in_processes(processes: int, rounds: int) -> int:
    """`burst` in `processes` forked processes at once: the lines they lost (an error: raised).
    (os.fork, not multiprocessing: this directory's signal.py would shadow the standard one.)"""
    children = []
    for _ in range(processes):
        pid = os.fork()
        if pid == 0:
            code = 101
            try:
                code = min(burst(rounds), 100)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(code)
        children.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
    if any(code > 100 or code < 0 for code in codes):
        raise RuntimeError(f"a process failed: exit codes {codes}")
    return sum(codes)


def main(job, args):
    lost = same_millisecond()
    processes, rounds = int(args.get("processes", 0)), int(args.get("rounds", 0))
    return {"lost": lost + in_processes(processes, rounds)}


if __name__ == "__main__":
    run(main)
