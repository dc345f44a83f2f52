#!/usr/bin/env python3
"""Usage: scripts/cpu-per-job.py BIN [bench args]. Runs `BIN bench ARGS...`, finds its
`runyard serve` child and reports the server's CPU seconds
(utime+stime, polled every 50 ms until it exits) per job. Optional env PERF=outfile: perf record
the server (dwarf call graphs; PERF_ARGS replaces perf record's options) while the bench runs. Prints one JSON line."""
import json, os, subprocess, sys, time
binp = sys.argv[1]; args = sys.argv[2:]
tck = os.sysconf('SC_CLK_TCK')
p = subprocess.Popen([binp, 'bench'] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
child = None; last = None; perf = None
t0 = time.time()
while p.poll() is None:
    if child is None:
        try:
            for t in os.listdir(f'/proc/{p.pid}/task'):
                c = open(f'/proc/{p.pid}/task/{t}/children').read().split()
                if c: child = int(c[0]); break
        except OSError: pass
        if child and os.environ.get('PERF'):
            time.sleep(0.3)
            popts = os.environ.get('PERF_ARGS', '-F 499 --call-graph dwarf,32768').split()
            perf = subprocess.Popen(['perf', 'record'] + popts + ['-p', str(child), '-o', os.environ['PERF']], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if child:
        try:
            f = open(f'/proc/{child}/stat').read().rsplit(')', 1)[1].split()
            last = (int(f[11]) + int(f[12])) / tck
        except OSError: pass
    time.sleep(0.05)
out, err = p.communicate()
if perf: perf.wait()
jobs = 0
def arg(n, d):
    return int(args[args.index(n) + 1]) if n in args else d
if 'local' in args[args.index('--only') + 1:args.index('--only') + 2] if '--only' in args else False:
    # `--only local`: the local jobs, their trickle (at most as many) and the warm-up.
    n = arg('--local-jobs', 2000)
    jobs = n + min(arg('--trickle-jobs', 2000), n) + arg('--warmup', 200)
else:
    jobs = arg('--jobs', 10000) + arg('--trickle-jobs', 2000) + arg('--warmup', 200)
res = {'server_cpu_s': last, 'jobs': jobs, 'cpu_ms_per_job': round(last * 1000 / jobs, 4) if last else None, 'wall_s': round(time.time() - t0, 1)}
try:
    d = json.JSONDecoder().raw_decode(out.decode().lstrip())[0]
    res['rates'] = {r['scenario']: round(r['e2e_rate']) for r in d['results']}
except Exception as e:
    res['err'] = err.decode()[-500:]
print(json.dumps(res))
