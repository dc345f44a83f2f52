#!/usr/bin/env python3
"""Usage: scripts/commits-per-job.py BIN [bench args]. Runs `BIN bench ARGS...` and counts, with
`perf stat` on tracepoints (counted in the kernel: the run is not slowed, unlike strace), the
`pwrite64` calls of the server's SQLite writer thread: one per committed write transaction (the
WAL shim writes a transaction's frames in one call; only one over 96 KiB takes more, which one
connection never makes). Prints one JSON line: commits per job and the bench's rates. Pass `--warmup 0`: every
job the server sees is counted.
(docs/benchmarks.md "Session 10: seq")"""
import json, os, re, signal, subprocess, sys, time
binp = sys.argv[1]; args = sys.argv[2:]
p = subprocess.Popen([binp, 'bench'] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
child = None; perf = None; out_file = f'/tmp/commits-per-job-{os.getpid()}.txt'
deadline = time.time() + 600
while p.poll() is None and time.time() < deadline:
    if child is None:
        try:
            for t in os.listdir(f'/proc/{p.pid}/task'):
                c = open(f'/proc/{p.pid}/task/{t}/children').read().split()
                if c: child = int(c[0]); break
        except OSError: pass
        if child:
            # Once the store's threads exist (perf counts only threads alive when it attaches),
            # before the first job: the server opens the store before it listens.
            def sqlite_threads():
                n = 0
                for t in os.listdir(f'/proc/{child}/task'):
                    try: n += open(f'/proc/{child}/task/{t}/comm').read().startswith('runyard-sqlite')
                    except OSError: pass
                return n
            while sqlite_threads() < 2 and p.poll() is None: time.sleep(0.001)
            perf = subprocess.Popen(['perf', 'stat', '-e', 'syscalls:sys_enter_pwrite64', '--per-thread', '-x', ',', '-o', out_file, '-p', str(child)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.01)
out, err = p.communicate()
if perf:
    try: perf.send_signal(signal.SIGINT)
    except OSError: pass
    perf.wait()
def arg(n, d):
    return int(args[args.index(n) + 1]) if n in args else d
jobs = arg('--jobs', 10000) + arg('--trickle-jobs', 2000) + arg('--warmup', 200)
if arg('--warmup', 200):
    sys.exit('pass --warmup 0')
# `runyard-sqlite-TID,count,...`: the writer is the later of the two `runyard-sqlite-` threads.
threads = []
for line in open(out_file):
    m = re.match(r'\s*runyard-sqlite--(\d+),(\d+),', line)
    if m: threads.append((int(m.group(1)), int(m.group(2))))
os.unlink(out_file)
res = {'jobs': jobs}
if threads:
    writer = max(threads)[1]
    res['writer_pwrite64'] = writer
    res['commits_per_job'] = round(writer / jobs, 3)
try:
    d = json.JSONDecoder().raw_decode(out.decode().lstrip())[0]
    res['rates'] = {r['scenario']: round(r['e2e_rate']) for r in d['results']}
except Exception:
    res['err'] = err.decode()[-500:]
print(json.dumps(res))
