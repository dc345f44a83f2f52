#!/usr/bin/env python3
"""Usage: scripts/batch-submit-cpu.py BIN_A BIN_B REPS BATCHES

The server's CPU per job of `POST /async/jobs/batch` alone (docs/benchmarks.md "Session 10:
tput"): the jobs are scheduled for 2099, so nothing runs them. REPS x (A, B) interleaved; each
run starts `BIN serve` on a fresh data dir and a free port, sends 3 warm-up batches, then BATCHES
batches of 1,000 jobs on one keep-alive connection, and reads the server's utime+stime before the
first and after the last. Optional env PERF=outfile: perf record the server during the measured
batches. Prints each run and the medians' ratios B/A."""
import http.client, json, os, socket, subprocess, sys, tempfile, time, statistics, shutil
A, B, R, NB = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
tck = os.sysconf('SC_CLK_TCK')
item = '{"type":"bench.noop","args":{"i":1},"run_at":"2099-01-01T00:00:00Z"}'
body = ('{"jobs":[' + ','.join([item] * 1000) + ']}').encode()
def cpu(pid):
    f = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()
    return (int(f[11]) + int(f[12])) / tck
def run(binp):
    d = tempfile.mkdtemp(prefix='tput10-sub-')
    s = socket.socket(); s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]; s.close()
    cfg = f'{d}/runyard.toml'
    open(cfg, 'w').write(f'data_dir = "{d}/data"\nlisten = "127.0.0.1:{port}"\n[store]\nsynchronous = "normal"\n[[runners]]\nname = "s"\nkind = "service"\ntypes = ["bench.noop"]\noperation = "runyard.noop"\nconcurrency = 256\n')
    p = subprocess.Popen([binp, 'serve', '--config', cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, RUNYARD_LOG='warn'))
    try:
        for _ in range(200):
            try:
                c = http.client.HTTPConnection('127.0.0.1', port, timeout=30); c.request('GET', '/health'); c.getresponse().read(); break
            except OSError: time.sleep(0.05)
        def post():
            c.request('POST', '/async/jobs/batch', body, {'content-type': 'application/json'})
            r = c.getresponse(); out = r.read(); assert r.status == 200, out[:300]
            assert json.loads(out)['accepted'] == 1000
        for _ in range(3): post()  # warm-up
        c0 = cpu(p.pid); t0 = time.time()
        perf = None
        if os.environ.get('PERF'):
            perf = subprocess.Popen(['perf', 'record', '-F', '999', '--call-graph', 'dwarf,32768', '-p', str(p.pid), '-o', os.environ['PERF']], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); time.sleep(0.5)
        for _ in range(NB): post()
        if perf: perf.send_signal(2); perf.wait()
        return (cpu(p.pid) - c0) * 1000 / (NB * 1000), NB * 1000 / (time.time() - t0)
    finally:
        p.terminate(); p.wait(); shutil.rmtree(d, ignore_errors=True)
res = {'A': [], 'B': []}
for _ in range(R):
    for t, b in (('A', A), ('B', B)):
        load = os.getloadavg()[0]
        ms, rate = run(b); res[t].append((ms, rate)); print(t, f'cpu ms/job {ms:.4f} submit jobs/s {rate:.0f} load {load:.1f}', flush=True)
ma = statistics.median(x[0] for x in res['A']); mb = statistics.median(x[0] for x in res['B'])
ra = statistics.median(x[1] for x in res['A']); rb = statistics.median(x[1] for x in res['B'])
print(f'median A {ma:.4f} ms/job {ra:.0f}/s | B {mb:.4f} ms/job {rb:.0f}/s | B/A cpu {mb/ma:.2f} rate {rb/ra:.2f}')
