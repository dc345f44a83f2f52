#!/usr/bin/env bash
# The dashboard's first paint with 100,000 jobs in the embedded store of a release build
# (issue 13: under 300 ms). Seeds the jobs through the HTTP API (tests/browser/test_first_paint.py:
# most SCHEDULED a day ahead, 300 run) and prints, for the overview and the jobs table, the time
# until the page's data is on screen and Chromium's first contentful paint.
#
#   scripts/first-paint.sh                 # 100,000 jobs; RUNYARD_BROWSER_JOBS=N for another size
#   SKIP_BUILD=1 scripts/first-paint.sh    # use the release binary already built
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --release --bin runyard
fi
RUNYARD_BIN="$target/release/runyard" RUNYARD_BROWSER_JOBS=${RUNYARD_BROWSER_JOBS:-100000} \
  timeout 1200 python3 -m pytest -q -s tests/browser/test_first_paint.py
