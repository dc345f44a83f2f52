# runyard's image for users: `runyard serve` (the server) and `runyard launch` (the entrypoint of
# a job's container). Multi-stage: Rust builds the binary, a slim Debian runs it.
#
#   docker build -t runyard .
#   docker run -p 7070:7070 -v runyard-data:/var/lib/runyard \
#     -e RUNYARD_AUTH__TOKENS='[{name="ci", sha256="<runyard token new ...>", scopes=["admin"]}]' runyard
#
# `serve` listens on 0.0.0.0 here, which it refuses without [auth] (docs/auth.md): give it tokens
# as above (or a runyard.toml with [auth]), or RUNYARD_AUTH__INSECURE_NO_AUTH=true when a proxy in
# front authenticates.
#   docker run runyard launch -- /bin/sh -c 'echo hello'     # inside a docker/kube job
#
# A job image usually copies the binary next to the job's own tools:
#   COPY --from=runyard /usr/local/bin/runyard /usr/local/bin/runyard
#
# Building it needs the registry's rust and debian images. Where no image can be pulled (runyard's
# CI), scripts/docker-image.sh builds an equivalent `runyard:local` FROM scratch from a binary
# built on the host; see docs/docker.md.

ARG RUST_VERSION=1
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin runyard \
    && install -D -m 0755 target/release/runyard /out/runyard

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/runyard --create-home runyard
COPY --from=build /out/runyard /usr/local/bin/runyard
USER runyard
WORKDIR /var/lib/runyard
# No ENV for runyard settings: every RUNYARD_* variable overrides the config file, so an image ENV
# would silently win over a mounted runyard.toml (the Helm chart's). The defaults live in CMD,
# which a config-driven deployment replaces.
EXPOSE 7070
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/runyard"]
CMD ["serve", "--listen", "0.0.0.0:7070", "--data-dir", "/var/lib/runyard/data"]
