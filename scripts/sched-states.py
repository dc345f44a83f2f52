#!/usr/bin/env python3
"""Where processes' time goes, from the scheduler's events: how long each given pid ran, waited
for a CPU (woken or preempted), slept (S) or waited uninterruptibly (D: a vfork parent waits
there for its child's exec), and how idle the machine's CPUs were over the window.

    perf record -e sched:sched_switch -e sched:sched_wakeup -a -o sched.data -- sleep 1
    perf script -i sched.data > sched.txt
    scripts/sched-states.py sched.txt PID [PID...]

Session 26 used it on the spawner of local jobs while `runyard bench --only local` ran
(docs/benchmarks.md, "Session 26: more than one spawner")."""
import collections
import re
import sys

EVENT = re.compile(r"^\s*(.+?)\s+(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+sched:(\w+):\s+(.*)$")
SWITCH = re.compile(r"prev_pid=(\d+) .*prev_state=(\S+) ==> next_comm=.*? next_pid=(\d+)")
WAKEUP = re.compile(r" pid=(\d+) ")


def main(path, pids):
    state = {}  # pid -> (state, since)
    spent = {p: collections.Counter() for p in pids}
    idle_since, idle, first, last = {}, 0.0, None, None
    cpus_seen, switched = set(), set()

    def move(pid, new, t):
        old, since = state.get(pid, (None, None))
        if old is not None:
            spent[pid][old] += t - since
        state[pid] = (new, t)

    with open(path) as f:
        for line in f:
            m = EVENT.match(line)
            if not m:
                continue
            _, _, cpu, t, kind, rest = m.groups()
            t, cpu = float(t), int(cpu)
            cpus_seen.add(cpu)
            first = t if first is None else first
            last = t
            if kind == "sched_wakeup":
                w = WAKEUP.search(rest)
                if w and w.group(1) in spent and state.get(w.group(1), ("",))[0] in ("S", "D"):
                    move(w.group(1), "waiting for a CPU (woken)", t)
                continue
            if kind != "sched_switch":
                continue
            s = SWITCH.search(rest)
            if not s:
                continue
            prev, prev_state, nxt = s.groups()
            switched.add(cpu)
            if prev in spent:
                move(prev, "waiting for a CPU (preempted)" if prev_state.startswith("R") else prev_state, t)
            if nxt in spent:
                move(nxt, "running", t)
            if nxt == "0":
                idle_since[cpu] = t
            elif prev == "0":
                # Idle since the window began when no switch to idle was seen on this CPU.
                idle += t - idle_since.pop(cpu, first)
    if first is None:
        raise SystemExit(f"no scheduler events in {path}")
    # What is still open at the window's end counts up to it: each pid's last state, and the
    # CPUs idle then. (A pid's time before its first event is not known, and not counted.)
    for pid, (st, since) in state.items():
        spent[pid][st] += last - since
    for since in idle_since.values():
        idle += last - since
    # The recorded machine's CPUs (the highest seen), not this one's.
    cpus = max(cpus_seen) + 1
    quiet = sorted(set(range(cpus)) - switched)
    if quiet:
        print(f"note: no switch on CPU {quiet} in the window (idle or busy throughout: not counted as idle)")
    window = last - first
    print(f"window {window:.3f} s; idle {idle:.3f} CPU-s, {100 * idle / (cpus * window):.1f}% of {cpus} CPUs")
    for p in pids:
        total = sum(spent[p].values())
        if total == 0:
            print(f"pid {p}: no events")
            continue
        shares = ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in spent[p].most_common())
        print(f"pid {p} ({total:.3f} s seen): {shares}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2:])
