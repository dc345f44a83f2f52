# Sourced by the benchmark scripts that start their own processes: a temporary directory `$dir`,
# the pids they start (`pids+=($!)`), stopped by pid at exit (TERM, then KILL a second later),
# and `free_port` for a free loopback port. KEEP=1 keeps `$dir`.
dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  sleep 1
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  if [ -n "${KEEP:-}" ]; then echo "kept $dir" >&2; else rm -rf "$dir"; fi
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
