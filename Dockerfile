# gemini-pool: a multi-stage build. The first stage compiles the dependencies on their own, so a
# change to the sources rebuilds only the project's crates; the second is a slim runtime with CA
# certificates, running as an unprivileged user with its data in a volume.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates/translate/Cargo.toml crates/translate/Cargo.toml
COPY crates/pool/Cargo.toml crates/pool/Cargo.toml
COPY crates/server/Cargo.toml crates/server/Cargo.toml
COPY crates/mock-gemini/Cargo.toml crates/mock-gemini/Cargo.toml
# Empty crates with the real manifests: this layer holds the compiled dependencies.
RUN mkdir -p crates/translate/src crates/pool/src crates/pool/benches crates/server/src crates/mock-gemini/src \
    && touch crates/translate/src/lib.rs crates/pool/src/lib.rs crates/server/src/lib.rs crates/mock-gemini/src/lib.rs \
    && echo 'fn main() {}' > crates/server/src/main.rs \
    && echo 'fn main() {}' > crates/mock-gemini/src/main.rs \
    && echo 'fn main() {}' > crates/pool/benches/pick.rs \
    && cargo build --release --locked -p gemini-pool
COPY crates crates
COPY migrations migrations
COPY web web
RUN touch crates/*/src/lib.rs crates/server/src/main.rs \
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
