#!/usr/bin/env python3
"""Example job "py.report": logs `args.lines`, answers {"lines": n}; for the tests of failures.

- `args.hook`: report through this URL instead of JOB_HOOK (a proxy in front of the hook, which
  the tests make lose answers or refuse reports);
- the answer has `lines_lost` too when log lines were not stored (`JobClient.lines_lost`);
- `args.result_bytes`: answer a string of that many bytes instead (over the server's body limit:
  the result cannot be reported);
- `args.nan`: answer NaN instead (JSON cannot carry it);
- `args.long_line`: also log one line of that many characters ("é", 2 bytes each).
"""

import json
import os

from runyard_job import JobClient, run


def main(job, args):
    print(f"report.py: attempt {os.environ.get('JOB_ATTEMPT')}", flush=True)
    lines = [str(line) for line in args.get("lines", [])]
    if lines:
        job.log(*lines)
    if args.get("long_line"):
        job.log("é" * int(args["long_line"]))
    if args.get("result_bytes"):
        return {"text": "x" * int(args["result_bytes"])}
    if args.get("nan"):
        return {"value": float("nan")}
    if job.lines_lost:
        return {"lines": len(lines), "lines_lost": job.lines_lost}
    return {"lines": len(lines)}


if __name__ == "__main__":
    env = dict(os.environ)
    hook = (json.loads(env.get("JOB_ARGS") or "{}") or {}).get("hook")
    if hook:
        env["JOB_HOOK"] = hook
    run(main, client=JobClient.from_env(environ=env))
