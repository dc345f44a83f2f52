#!/usr/bin/env bash
# Event delivery benchmark (docs/benchmarks.md "Event streams"): starts `runyard serve` on a
# free loopback port with a fresh data dir, connects CLIENTS WebSocket (then SSE) clients across
# CHANNELS channels (examples/bench_events.rs), submits jobs making RATE events/s for SECONDS,
# and prints latency (commit -> client) and the server's RSS per idle connection. Bounded: every
# phase has a timeout; the server is stopped by its pid.
#
#   scripts/bench-events.sh [CLIENTS=10000] [CHANNELS=1000] [RATE=500] [SECONDS=20] [PROFILE=release]
set -euo pipefail
CLIENTS=${1:-10000}
CHANNELS=${2:-1000}
RATE=${3:-500}
SECONDS_=${4:-20}
PROFILE=${5:-release}
cd "$(dirname "$0")/.."
flag=""; [ "$PROFILE" = release ] && flag="--release"
cargo build $flag --bin runyard --example bench_events
T=${CARGO_TARGET_DIR:-target}/$PROFILE
ulimit -n "$(ulimit -Hn)"
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$dir/runyard.toml" <<TOML
listen = "127.0.0.1:$port"
data_dir = "$dir/data"
[api]
# Streams may take all but an eighth of the API's connections (docs/configuration.md).
max_connections = $((CLIENTS * 2 + 500))
[events]
max_connections = $((CLIENTS + 100))
[[runners]]
name = "bench"
kind = "service"
types = ["bench.*"]
operation = "runyard.noop"
concurrency = 256
max_attempts = 1
TOML
"$T/runyard" serve --config "$dir/runyard.toml" >"$dir/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.1; done
# (Prewarm the VM once per boot first: docs/benchmarks.md "Running it".)
for mode in ws sse; do
  timeout 600 "$T/examples/bench_events" "http://127.0.0.1:$port" "$pid" "$CLIENTS" "$CHANNELS" "$RATE" "$SECONDS_" "$mode"
done
