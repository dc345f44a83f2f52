#!/usr/bin/env python3
"""Replays the client commands of a Redis MONITOR capture against fresh redis-servers of its own,
once with the scripts of directory A and once with those of directory B, interleaved REPS times,
and prints redis-server's CPU (utime + stime) and `EVALSHA`'s time for each run: redis-server's
cost of one workload under two versions of the Lua scripts, without the API and worker nodes'
noise (docs/benchmarks.md "Session 13: redis").

  redis-replay.py CAPTURE A_DIR B_DIR [--reps N] [--pipe N] [-v]

CAPTURE: `redis-cli -p PORT monitor > FILE` while a `runyard bench --server` runs against a
`runyard serve` on that redis-server, started after the server (its scripts must have been
loaded from A_DIR, e.g. src/store/redis/lua of the build that ran). Script calls are mapped from
A_DIR's SHA1 to the same file of B_DIR. Commands are sent one at a time (`--pipe N`: N at a time),
in the captured order; ids `*` and times differ from the capture's, so replies may too (a
blocking XREAD waits out its timeout). Uses free loopback ports; stops only its own servers.
"""
import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time


def unrepr(s):
    """A MONITOR argument (sdscatrepr escaping) back to bytes."""
    out, i = bytearray(), 0
    esc = {'n': b'\n', 'r': b'\r', 't': b'\t', 'a': b'\a', 'b': b'\b', '"': b'"', '\\': b'\\'}
    while i < len(s):
        if s[i] == '\\':
            n = s[i + 1]
            if n == 'x':
                out.append(int(s[i + 2:i + 4], 16))
                i += 4
                continue
            out += esc[n]
            i += 2
            continue
        out += s[i].encode('latin-1')
        i += 1
    return bytes(out)


SKIP = {b'MONITOR', b'PING', b'CLIENT', b'SUBSCRIBE', b'PSUBSCRIBE', b'INFO', b'HELLO',
        b'SELECT', b'SCRIPT'}


def commands(path):
    tok = re.compile(r'"((?:[^"\\]|\\.)*)"')
    out = []
    for line in open(path, encoding='latin-1'):
        if '[0 lua]' in line or '"' not in line:
            continue
        args = [unrepr(m) for m in tok.findall(line)]
        if args and args[0].upper() not in SKIP:
            out.append(args)
    return out


def enc(args):
    return b''.join([b'*%d\r\n' % len(args)] + [b'$%d\r\n%s\r\n' % (len(a), a) for a in args])


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    p = s.getsockname()[1]
    s.close()
    return p


def run(cmds, a_dir, b_dir, pipe, verbose):
    d = tempfile.mkdtemp()
    port = free_port()
    subprocess.run(['redis-server', '--port', str(port), '--bind', '127.0.0.1', '--save', '',
                    '--appendonly', 'no', '--daemonize', 'yes', '--pidfile', d + '/pid',
                    '--dir', d], check=True, stdout=subprocess.DEVNULL)
    for _ in range(100):
        if os.path.exists(d + '/pid'):
            break
        time.sleep(0.05)
    time.sleep(0.2)
    pid = int(open(d + '/pid').read())
    try:
        s = socket.create_connection(('127.0.0.1', port))
        f = s.makefile('rb')

        def read():
            line = f.readline()
            t = line[:1]
            if t == b'$':
                n = int(line[1:])
                body = f.read(n + 2)[:-2] if n >= 0 else None
                return line, body
            if t == b'*':
                for _ in range(max(int(line[1:]), 0)):
                    read()
            return line, None

        shas = {}
        for name in sorted(os.listdir(a_dir)):
            if name.endswith('.lua'):
                old = hashlib.sha1(open(os.path.join(a_dir, name), 'rb').read()).hexdigest()
                s.sendall(enc([b'SCRIPT', b'LOAD', open(os.path.join(b_dir, name), 'rb').read()]))
                shas[old.encode()] = read()[1]

        def cpu():
            st = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()
            return (int(st[11]) + int(st[12])) / os.sysconf('SC_CLK_TCK')

        errors = 0
        c0 = cpu()
        for i in range(0, len(cmds), pipe):
            chunk = cmds[i:i + pipe]
            out = []
            for a in chunk:
                if a[0].upper() == b'EVALSHA' and a[1] in shas:
                    a = [a[0], shas[a[1]]] + a[2:]
                out.append(enc(a))
            s.sendall(b''.join(out))
            for _ in chunk:
                if read()[0][:1] == b'-':
                    errors += 1
        c1 = cpu()
        s.sendall(enc([b'INFO', b'commandstats']))
        info = read()[1].decode()
        s.close()
    finally:
        os.kill(pid, 15)
        for _ in range(100):
            if not os.path.exists(d + '/pid'):
                break
            time.sleep(0.05)
        shutil.rmtree(d, ignore_errors=True)
    ev = re.search(r'cmdstat_evalsha:calls=(\d+),usec=(\d+)', info)
    if verbose:
        print('\n'.join(x for x in info.splitlines() if x.startswith('cmdstat')))
    return c1 - c0, int(ev.group(2)) if ev else 0, errors


def main():
    argv = sys.argv[1:]
    reps = int(argv[argv.index('--reps') + 1]) if '--reps' in argv else 3
    pipe = int(argv[argv.index('--pipe') + 1]) if '--pipe' in argv else 1
    cap, a_dir, b_dir = argv[0], argv[1], argv[2]
    cmds = commands(cap)
    print(f'{len(cmds)} commands from {cap}')
    res = {'A': [], 'B': []}
    for _ in range(reps):
        for tag, d in (('A', a_dir), ('B', b_dir)):
            cpu, ev, err = run(cmds, a_dir, d, pipe, '-v' in argv)
            res[tag].append((cpu, ev))
            print(f'{tag} redis-server cpu {cpu:.2f} s, EVALSHA {ev / 1e6:.3f} s, errors {err}')
    for tag in 'AB':
        cpus = sorted(x[0] for x in res[tag])
        print(f'{tag}: cpu median {cpus[len(cpus) // 2]:.2f} s')


if __name__ == '__main__':
    main()
