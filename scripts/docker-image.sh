#!/usr/bin/env bash
# Builds runyard's local Docker images FROM scratch, without pulling anything:
#
#   runyard:local               the runyard binary (stripped) with the shared libraries it links
#                               (from ldd), the dynamic loader, busybox as /bin/sh (for
#                               `runyard launch -- sh -c ...`), /tmp, /etc/passwd.
#                               ENTRYPOINT ["runyard"], CMD ["serve", "--listen", "0.0.0.0:7070"].
#   runyard-test-busybox:local  busybox-static and its applets in /bin; CMD ["/bin/sh"].
#
# Usage: scripts/docker-image.sh [debug|release|PATH/TO/runyard]
#   default: target/release/runyard when it exists, else target/debug/runyard.
# Environment: DOCKER_HOST (the engine), RUNYARD_IMAGE (default runyard:local),
#   RUNYARD_BUSYBOX_IMAGE (default runyard-test-busybox:local), BUSYBOX (default /bin/busybox,
#   must be statically linked: Debian's busybox-static), RUNYARD_IMAGE_SHELL=0 to leave busybox
#   out of runyard:local.
#
# Both images are `docker import`s of a tar of a directory tree: no base image, no Dockerfile
# builder, no network. An image is rebuilt only when its content changed (a content hash is kept
# in its `runyard.content` label), so the tests can call this before every run.
# For a production image built from source, see the Dockerfile at the top of the repository.
set -euo pipefail
cd "$(dirname "$0")/.."

runyard_tag="${RUNYARD_IMAGE:-runyard:local}"
busybox_tag="${RUNYARD_BUSYBOX_IMAGE:-runyard-test-busybox:local}"
busybox="${BUSYBOX:-/bin/busybox}"
with_shell="${RUNYARD_IMAGE_SHELL:-1}"

case "${1:-}" in
    "") if [ -x target/release/runyard ]; then bin=target/release/runyard; else bin=target/debug/runyard; fi ;;
    debug | release) bin="target/$1/runyard" ;;
    *) bin="$1" ;;
esac

die() { echo "docker-image: $*" >&2; exit 1; }
command -v docker >/dev/null || die "docker (the CLI) is not installed"
docker info >/dev/null 2>&1 || die "no docker engine answers (DOCKER_HOST=${DOCKER_HOST:-unset}); see scripts/start-dockerd.sh"
[ -x "$busybox" ] || die "$busybox not found (apt-get install busybox-static)"
if ldd "$busybox" >/dev/null 2>&1; then
    die "$busybox is dynamically linked: use busybox-static"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Copies a dynamically linked program's libraries and loader into a root tree, at the paths the
# program asks for (symlinks resolved).
copy_libs() {
    local prog=$1 root=$2 lib
    { ldd "$prog" 2>/dev/null || true; } | awk '
        $2 == "=>" && $3 ~ /^\// { print $3 }
        $1 ~ /^\// { print $1 }' | sort -u | while read -r lib; do
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
}

# Minimal /etc and /tmp.
base_tree() {
    local root=$1
    mkdir -p "$root/etc" "$root/tmp" "$root/bin"
    chmod 1777 "$root/tmp"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
    printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
}

# Puts busybox and symlinks for its applets into $root/bin.
add_busybox() {
    local root=$1 applet
    cp "$busybox" "$root/bin/busybox"
    for applet in $("$busybox" --list); do
        [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
    done
}

# import TAG ROOT CHANGE... : imports the tree as TAG unless TAG already has this content.
import_tree() {
    local tag=$1 root=$2
    shift 2
    local tarball="$work/$(echo "$tag" | tr '/:' '__').tar" sum current
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$root" -cf "$tarball" .
    sum=$({ sha256sum <"$tarball"; printf '%s\n' "$@"; } | sha256sum | cut -c1-32)
    current=$(docker image inspect -f '{{ index .Config.Labels "runyard.content" }}' "$tag" 2>/dev/null || true)
    if [ "$current" = "$sum" ]; then
        echo "docker-image: $tag is up to date"
        return
    fi
    local args=()
    for c in "$@"; do args+=(--change "$c"); done
    docker import "${args[@]}" --change "LABEL runyard.content=$sum" "$tarball" "$tag" >/dev/null
    echo "docker-image: built $tag"
}

# --- runyard-test-busybox:local
bb="$work/busybox-root"
base_tree "$bb"
add_busybox "$bb"
import_tree "$busybox_tag" "$bb" \
    'ENV PATH=/bin' \
    'CMD ["/bin/sh"]'

# --- runyard:local
[ -x "$bin" ] || die "$bin not found: build runyard first (cargo build --bin runyard [--release])"
ry="$work/runyard-root"
base_tree "$ry"
mkdir -p "$ry/usr/local/bin" "$ry/var/lib/runyard"
if command -v strip >/dev/null; then
    strip --strip-debug -o "$ry/usr/local/bin/runyard" "$bin"
else
    cp "$bin" "$ry/usr/local/bin/runyard"
fi
copy_libs "$bin" "$ry"
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    mkdir -p "$ry/etc/ssl/certs"
    cp /etc/ssl/certs/ca-certificates.crt "$ry/etc/ssl/certs/"
fi
if [ "$with_shell" != 0 ]; then
    add_busybox "$ry"
fi
import_tree "$runyard_tag" "$ry" \
    'ENV PATH=/usr/local/bin:/bin' \
    'WORKDIR /var/lib/runyard' \
    'EXPOSE 7070' \
    'ENTRYPOINT ["/usr/local/bin/runyard"]' \
    'CMD ["serve", "--listen", "0.0.0.0:7070"]'
