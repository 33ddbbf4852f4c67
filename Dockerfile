# lakectl: a multi-stage build. The first stage compiles the release binary; the
# runtime image is Debian slim with the binary, CA certificates (https catalogs and
# S3), git (`watch --git-pull`, the git commit in snapshot annotations) and tini.
#   docker build -t lakectl .
#   docker run --rm -v "$PWD/manifests:/manifests" lakectl plan /manifests

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so a source change does not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && echo 'fn main() {}' > benches/ingest.rs && cp benches/ingest.rs benches/mutate.rs \
 && cargo build --release --locked --bin lakectl \
 && rm -rf src benches
COPY src ./src
COPY benches ./benches
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin lakectl \
 && strip target/release/lakectl

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates git tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --create-home --home-dir /var/lib/lakectl lakectl \
 && git config --system --add safe.directory '*'
COPY --from=build /src/target/release/lakectl /usr/local/bin/lakectl
USER lakectl
WORKDIR /var/lib/lakectl
# 8080: `lakectl serve`; 9090: `lakectl watch --addr` (/status, /healthz, /metrics).
EXPOSE 8080 9090
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/lakectl"]
CMD ["--help"]
