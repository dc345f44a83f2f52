#!/usr/bin/env python3
"""Example job "py.fail": never calls the hook, writes to stderr and exits with code 3.

The runner, not the job, must turn this into ERROR (with the exit code in errorMessage).
"""

import sys

print("fail.py: failing on purpose with exit code 3", file=sys.stderr, flush=True)
sys.exit(3)
