# gemini-pool: a multi-stage build. The build stage compiles the dependencies on their own, so a
# change to the sources rebuilds only the project's crates; the last stage is a slim runtime with
# CA certificates, running as an unprivileged user with its data in a volume.

# The skeleton: the workspace's manifests and lock file, with a stub at the path of each of its
# targets (every library, binary, benchmark, test, example and build script). It is derived from
# `cargo metadata` of the real workspace rather than listed by hand, because a hand-written list
# drifts: a member or target added to the workspace but not to the list breaks the dependency build
# ("failed to load manifest for workspace member"). Docker caches `COPY --from=skeleton` by
# content, so the dependency layer below is rebuilt only when a manifest, the lock file or the set
# of targets changes, not when a source file does.
FROM rust:1.95-slim-bookworm AS skeleton
SHELL ["/bin/bash", "-e", "-o", "pipefail", "-c"]
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates crates
# --no-deps reads only the workspace (no registry, no network). Each member's manifest is copied;
# a target named lib.rs gets an empty stub, any other target `fn main() {}` (valid for every kind).
RUN mkdir -p /skeleton \
    && cp Cargo.toml Cargo.lock /skeleton/ \
    && cargo metadata --no-deps --offline --format-version 1 \
    | grep -oE '"(manifest_path|src_path)":"[^"]*"' \
    | while IFS='"' read -r _ key _ path _; do \
        path="${path#"$PWD"/}"; \
        mkdir -p "/skeleton/$(dirname "$path")"; \
        case "$key:$path" in \
          manifest_path:*) cp "$path" "/skeleton/$path" ;; \
          src_path:lib.rs | src_path:*/lib.rs) : > "/skeleton/$path" ;; \
          *) echo 'fn main() {}' > "/skeleton/$path" ;; \
        esac; \
      done

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# The stubbed workspace: this layer holds the compiled dependencies.
COPY --from=skeleton /skeleton ./
RUN cargo build --release --locked -p gemini-pool
# The real sources. The server also compiles in the dashboard (web/, rust-embed) and the database
# migrations (migrations/, sqlx::migrate!). The copied files may be older than the stubs built
# above, so they are touched: cargo decides what to rebuild by modification time.
COPY crates crates
COPY migrations migrations
COPY web web
RUN find crates -name '*.rs' -exec touch {} + \
    && cargo build --release --locked -p gemini-pool \
    && strip target/release/gemini-pool

FROM debian:bookworm-slim
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tzdata \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin gemini \
    && mkdir -p /data && chown gemini /data
COPY --from=build /src/target/release/gemini-pool /usr/local/bin/gemini-pool
ENV LISTEN_ADDR=0.0.0.0:8080 \
    DATABASE_URL=sqlite:///data/gemini-pool.db?mode=rwc
VOLUME ["/data"]
WORKDIR /data
USER 10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["/usr/local/bin/gemini-pool", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/gemini-pool"]
