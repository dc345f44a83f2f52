#!/usr/bin/env bash
# Runs every test of runyard on a fresh Debian machine (as root, or with the tools already there):
# installs what the tests need (redis-server, Docker's engine, busybox-static, Python packages),
# starts a private Docker engine, then runs the Rust tests (unit, integration, conformance on the
# embedded store and Redis, docker, fake-kube, chart), the Python client's tests against a real
# server, the dashboard's browser tests (headless Chromium) and the Helm chart tests.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

log() { printf '\n==> %s\n' "$*"; }

# A run from a clean clone writes about 13 GB under target/ (and keeps the fuzz build, about 5 GB,
# in a cache); a disk that fills fails it deep inside a compile ("No space left on device"). Say it
# at the start, where it reads as the cause.
free_gb=$(df -Pk . | awk 'NR == 2 { print int($4 / 1048576) }')
if [ "${free_gb:-0}" -lt 20 ]; then
  printf 'warning: %s GB free on the disk of %s; a full run needs about 20 GB\n' "$free_gb" "$ROOT" >&2
fi

need_apt=()
command -v redis-server >/dev/null || need_apt+=(redis-server)
# libfaketime: clock steps in tests/clock_step.rs, clock offsets in tests/clock_skew.rs and
# scripts/chaos.sh.
ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1 || need_apt+=(faketime)
command -v dockerd >/dev/null || need_apt+=(docker.io)
[ -x /bin/busybox ] || need_apt+=(busybox-static)
# Chromium for the dashboard's browser tests (tests/browser, driven by Playwright for Python).
command -v chromium >/dev/null || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing ${need_apt[*]}"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "missing ${need_apt[*]}: install them (apt-get install ${need_apt[*]}) or run as root" >&2
    exit 1
  fi
fi

log "python packages"
# `[test]`: PyJWT and websockets for examples/python/tests/test_superset_events.py, prometheus-client
# for test_metrics_two_nodes.py.
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
  -e "examples/python[test]" -r charts/runyard/tests/requirements.txt -r tests/browser/requirements.txt \
  schemathesis openapi-spec-validator

if [ -x scripts/start-dockerd.sh ]; then
  log "docker engine"
  eval "$(scripts/start-dockerd.sh)"
  export DOCKER_HOST
fi

log "build"
cargo build --workspace --all-targets

if [ -x scripts/docker-image.sh ] && [ -n "${DOCKER_HOST:-}" ]; then
  log "test images"
  scripts/docker-image.sh debug
fi

failed=0
log "cargo test"
cargo test --workspace --no-fail-fast -- --test-threads="${RUNYARD_TEST_THREADS:-2}" || failed=1
# The Redis channel index and channel events once more on compact records (`store.records =
# "compact"`: events in their compact form, which the index's rebuild parses in Lua); the
# conformance suites run on them already (their `redis_compact` modules). About a minute.
log "cargo test: Redis channel index and events on compact records"
RUNYARD_TEST_RECORDS=compact cargo test --test redis_channel_index --test redis_channel_events \
  -- --test-threads="${RUNYARD_TEST_THREADS:-2}" || failed=1

# The Redis crash drills once more with the hand-over at submit on (`RUNYARD_REDIS_HANDOVER=on`,
# experimental, docs/redis.md): a worker node killed with jobs handed over to it, and Redis
# restarted, lose no job. About 40 s.
log "cargo test: Redis crash drills with the hand-over at submit"
RUNYARD_REDIS_HANDOVER=on cargo test --test redis_scale -- scale_out_survives_a_killed_worker \
  redis_restart_loses_no_accepted_job --test-threads="${RUNYARD_TEST_THREADS:-2}" || failed=1

# Fuzzing (issue 9): every cargo-fuzz target of fuzz/ runs from its committed corpus for
# RUNYARD_FUZZ_SECONDS (20 s) each, and any crash fails CI. scripts/fuzz.sh installs the nightly
# toolchain and cargo-fuzz when missing and builds the targets into fuzz/target (no sanitizer,
# debug assertions on). `scripts/fuzz.sh 600` is the long form. Timings: docs/reliability.md.
# The fuzz build (release, every dependency with coverage instrumentation) is kept in a cache
# outside the clone, so a later run on the same machine rebuilds only runyard's own crates; cargo
# rebuilds whatever is stale, so the cache is never trusted blindly.
log "fuzzing (short form)"
CARGO_TARGET_DIR="${RUNYARD_FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/runyard/fuzz-target}" \
  scripts/fuzz.sh "${RUNYARD_FUZZ_SECONDS:-20}" || failed=1

# Chaos suite, short form (issue 9; docs/reliability.md): ~60 s of load with kill -9 of the API,
# a worker, Redis and the embedded server, a worker partitioned from Redis and a worker's clock
# stepped, then: every accepted job terminal exactly once, none lost, no overlapping runs, RSS
# back to its level. About 2 minutes with set-up and drain. CHAOS_SECONDS=0 skips it.
if [ "${CHAOS_SECONDS:-60}" != 0 ]; then
  log "chaos suite (${CHAOS_SECONDS:-60} s)"
  RUNYARD=target/debug/runyard scripts/chaos.sh "${CHAOS_SECONDS:-60}" || failed=1
fi

# The OpenAPI document (issue 11; docs/api.md): validated with openapi-spec-validator, then
# schemathesis against a real server (15 cases per operation, about a minute): no 5xx, no answer
# outside the document. `scripts/openapi-check.sh 300` is the long form.
log "OpenAPI document: validator and schemathesis"
RUNYARD=target/debug/runyard scripts/openapi-check.sh "${RUNYARD_OPENAPI_EXAMPLES:-15}" || failed=1

log "python job client against a real server"
PYDATA=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
./target/debug/runyard serve --config examples/python/runyard-test.toml --data-dir "$PYDATA" \
  --listen "127.0.0.1:$PORT" >"$PYDATA/server.log" 2>&1 &
SERVER_PID=$!
trap 'kill $SERVER_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
  sleep 0.1
done
RUNYARD_TEST_SERVER="http://127.0.0.1:$PORT" python3 -m pytest -q examples/python/tests || failed=1
kill $SERVER_PID 2>/dev/null || true

# The dashboard in headless Chromium against its own server (tests/browser/conftest.py).
# CI's short form of the first-paint test stores 4,000 jobs (about 45 s on a debug build); the
# long form is the default of `pytest tests/browser/test_first_paint.py` (20,000).
log "dashboard in a browser"
RUNYARD_BROWSER_JOBS=${RUNYARD_BROWSER_JOBS:-4000} RUNYARD_BIN=target/debug/runyard \
  python3 -m pytest -q -rs tests/browser || failed=1

# The README's first command (issue 12), on this clean clone's debug build (no second build):
# `serve --demo` must run its demo jobs, then a job submitted with the CLI must succeed.
log "README first command: serve --demo, then a CLI submit"
DEMO=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
./target/debug/runyard serve --demo --listen "127.0.0.1:$PORT" >"$DEMO/out" 2>"$DEMO/err" &
DEMO_PID=$!
for _ in $(seq 1 600); do
  grep -q "Try, from another terminal" "$DEMO/out" && break
  sleep 0.1
done
if grep -q "^demo job demo.python .*: SUCCESS" "$DEMO/out" \
  && RUNYARD_SERVER="http://127.0.0.1:$PORT" ./target/debug/runyard submit demo.greet \
       --args '{"name":"ci"}' --wait >"$DEMO/submit" \
  && grep -q 'hello, ci!' "$DEMO/submit"; then
  echo "serve --demo and a CLI submit: ok"
else
  echo "serve --demo failed:"; cat "$DEMO/out" "$DEMO/err" "$DEMO/submit" 2>/dev/null | tail -40
  failed=1
fi
kill $DEMO_PID 2>/dev/null || true

if [ -d charts/runyard/tests ]; then
  log "helm chart"
  python3 -m pytest -q charts/runyard/tests || failed=1
fi

if [ $failed -ne 0 ]; then
  log "SOME TESTS FAILED"
  exit 1
fi
log "all tests passed"
