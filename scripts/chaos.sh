#!/usr/bin/env bash
# Chaos suite (issue 9): a real deployment under a steady load of short jobs while processes are
# killed with SIGKILL, a worker is partitioned from Redis longer than its lease and a worker's
# wall clock is stepped; then every accepted job must be terminal exactly once, none lost, no two
# runs of a job may have overlapped, and memory must be back to its level. Prints a Jepsen-style
# summary; exits 1 when an invariant fails (2 when the run could not be made).
#
#   scripts/chaos.sh [SECONDS] [chaos.py flags...]     (default 60: the CI form)
#   scripts/chaos.sh 600                               the long form
#   scripts/chaos.sh 60 --seed 42 --keep               replay a seed, keep logs and runs files
#
# Env: RUNYARD (binary, default target/debug/runyard, then target/release/runyard), CHAOS_SEED,
# CHAOS_RATE (submits/s, default 50), CHAOS_CLOCK_STEP (largest clock step in s, default 10).
# Needs redis-server, a C compiler, python3 with requests, and libfaketime (apt-get install
# faketime). Every process it starts is killed when it ends (PR_SET_PDEATHSIG).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
if [ -z "${RUNYARD:-}" ]; then
  RUNYARD=target/debug/runyard
  [ -x "$RUNYARD" ] || RUNYARD=target/release/runyard
fi
[ -x "$RUNYARD" ] || { echo "no runyard binary at $RUNYARD: cargo build first" >&2; exit 2; }
exec python3 scripts/chaos/chaos.py "$secs" --bin "$RUNYARD" "$@"
