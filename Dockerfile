# syntax=docker/dockerfile:1
#
# hotfeed container image.
#
#   docker build -t hotfeed:0.1.0 .            the runtime image (last stage): hotfeed, datagen and
#                                              loadgen, non-root, HEALTHCHECK; tag = the version in
#                                              Cargo.toml, the tag deploy/k8s/deployment.yaml runs
#   docker build --target dev -t hotfeed:dev .  toolchain + cargo-watch + gdb, for compose.dev.yml
# (compose builds the same stages as hotfeed:local and hotfeed:dev itself.)
#
# Dependencies are compiled in their own layer (cargo-chef): editing src/ rebuilds only the
# workspace's crates, not the ~300 dependencies.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# ---- chef: the toolchain and cargo-chef, shared by the stages below --------------------------
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS chef
# The release binaries keep their symbols (readable panics) but not the debug info of std.
ENV CARGO_PROFILE_RELEASE_STRIP=debuginfo \
    CARGO_TERM_COLOR=never
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /app

# ---- planner: the workspace reduced to what decides the dependencies (recipe.json) -----------
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# ---- builder: dependencies (cached while recipe.json is unchanged), then the workspace --------
FROM chef AS builder
COPY --from=planner /app/recipe.json recipe.json
RUN cargo chef cook --release --locked --workspace --bins --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --workspace --bins \
    && mkdir -p /out \
    && cp target/release/hotfeed target/release/datagen target/release/loadgen /out/

# ---- dev: live reload and debugging (compose.dev.yml mounts the source on /app) ---------------
FROM chef AS dev
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gdb gdbserver procps \
    && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-watch --locked --version 8.5.3
# Build output lives in a volume, not in the bind-mounted checkout (different glibc, root-owned).
ENV CARGO_TARGET_DIR=/target
# The same entrypoint as the runtime image: it drops empty options, builds DATABASE_URL from the
# PG* parts compose passes, handles SIGTERM while starting, then execs the command (cargo watch).
COPY --chmod=0755 scripts/entrypoint.sh /usr/local/bin/entrypoint.sh
EXPOSE 8080 2345
ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
CMD ["cargo", "watch", "--why", "-w", "Cargo.toml", "-w", "Cargo.lock", "-w", "src", "-w", "migrations", "-w", "db", "-x", "run --bin hotfeed -- serve"]

# ---- runtime: the binaries on a slim Debian (same glibc as the builder), as a non-root user ----
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
ARG APP_UID=10001
# CA certificates for TLS to managed PostgreSQL / Redis (sslmode=verify-full, rediss://).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid "${APP_UID}" hotfeed \
    && useradd --system --uid "${APP_UID}" --gid hotfeed --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin hotfeed
COPY --from=builder /out/ /usr/local/bin/
COPY --chmod=0755 scripts/entrypoint.sh /usr/local/bin/entrypoint.sh
ENV APP_HOST=0.0.0.0 \
    APP_PORT=8080
USER ${APP_UID}:${APP_UID}
EXPOSE 8080
# /ping answers as soon as the server listens; the entrypoint speaks HTTP through bash, no curl.
HEALTHCHECK --interval=10s --timeout=5s --start-period=90s --retries=3 \
    CMD ["/usr/local/bin/entrypoint.sh", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
CMD ["serve"]
