#!/usr/bin/env python3
"""CPU time (user + system, seconds) for scripts/compare's CPU-per-job table.

    cpu.py run FILE CMD [ARGS...]   runs CMD (stdin/stdout/stderr passed through), then writes the
                                    CPU time of CMD and of every descendant it waited for (the
                                    kernel's rusage of the child, as `wait4` gives it) to FILE;
                                    exits with CMD's status
    cpu.py tree PID...              prints the CPU time the processes PID... and all their live
                                    descendants have used so far, with their children that have
                                    already been waited for (utime + stime + cutime + cstime)

A process that was killed but never waited for (a shell script's background server, left to
init) is not in `run`'s figure: read it with `tree` before it stops.
"""

import os
import sys

TCK = os.sysconf("SC_CLK_TCK")


def run(path, cmd):
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(cmd[0], cmd)
        finally:
            os._exit(127)
    _, status, ru = os.wait4(pid, 0)
    with open(path, "w") as f:
        f.write(f"{ru.ru_utime + ru.ru_stime:.3f}\n")
    return os.waitstatus_to_exitcode(status)


def children(pid):
    out = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out  # the process has ended
    for t in tasks:
        try:
            with open(f"/proc/{pid}/task/{t}/children") as f:
                out += [int(c) for c in f.read().split()]
        except FileNotFoundError:
            if not os.path.exists(f"/proc/{pid}/task/{t}"):
                continue  # the thread has ended
            # A kernel without CONFIG_PROC_CHILDREN: the children cannot be found, and a figure
            # without them would be wrong rather than missing.
            raise SystemExit(f"cpu.py: /proc/{pid}/task/{t}/children is missing")
    return out


def own(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the command's closing parenthesis: state is field 0, utime 11, stime 12, cutime 13,
    # cstime 14 (proc(5) numbers them 14-17 from the pid).
    return sum(int(x) for x in fields[11:15]) / TCK


def tree(pids):
    seen, todo, total = set(), list(pids), 0.0
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        total += own(p)
        todo += children(p)
    return total


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "run":
        sys.exit(run(sys.argv[2], sys.argv[3:]))
    elif len(sys.argv) >= 3 and sys.argv[1] == "tree":
        print(f"{tree([int(p) for p in sys.argv[2:]]):.3f}")
    else:
        raise SystemExit(__doc__)
