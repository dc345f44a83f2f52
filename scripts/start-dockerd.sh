#!/usr/bin/env bash
# Starts a private Docker engine for runyard's docker tests, unless one already answers.
#
#   scripts/start-dockerd.sh            # prints DOCKER_HOST=unix:///tmp/rd/docker.sock
#   eval "$(scripts/start-dockerd.sh)"  # exports it
#
# The engine keeps everything under $RUNYARD_DOCKERD_DIR (default /tmp/rd): its own data root,
# exec root, socket and pid file, so it never touches a system engine. It runs without a bridge
# network and without iptables (containers use `--network host` or `none`), which works in
# unprivileged CI containers where bridge/NAT setup is impossible. Idempotent: when the socket
# already answers `docker info`, nothing is started. Needs `dockerd` and `docker` (Debian:
# `apt-get install docker.io`) and root.
set -euo pipefail

dir="${RUNYARD_DOCKERD_DIR:-/tmp/rd}"
sock="$dir/docker.sock"
host="unix://$sock"
wait_secs="${RUNYARD_DOCKERD_WAIT:-60}"

answers() { DOCKER_HOST="$host" docker info >/dev/null 2>&1; }

if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null; then
    echo "start-dockerd: dockerd/docker not found (apt-get install docker.io)" >&2
    exit 1
fi

if ! answers; then
    mkdir -p "$dir"
    # A stale pid file of a dead engine would make dockerd refuse to start.
    if [ -f "$dir/docker.pid" ] && ! kill -0 "$(cat "$dir/docker.pid")" 2>/dev/null; then
        rm -f "$dir/docker.pid"
    fi
    if [ ! -f "$dir/docker.pid" ]; then
        rm -f "$sock"
        nohup dockerd \
            --data-root "$dir/root" \
            --exec-root "$dir/exec" \
            -H "$host" \
            --pidfile "$dir/docker.pid" \
            --bridge=none \
            --iptables=false \
            --ip6tables=false \
            --ip-masq=false \
            >"$dir/dockerd.log" 2>&1 </dev/null &
    fi
    for _ in $(seq 1 $((wait_secs * 4))); do
        answers && break
        sleep 0.25
    done
    if ! answers; then
        echo "start-dockerd: the engine did not answer on $host within ${wait_secs}s; last log lines:" >&2
        tail -n 30 "$dir/dockerd.log" >&2 || true
        exit 1
    fi
fi
echo "DOCKER_HOST=$host"
