# timelock container image.
#
#   docker build -t timelock .
#   docker run -d --name timelock -p 8421:8421 -v timelock-data:/var/lib/timelock timelock
#
# The base images are build arguments so that a mirror or a locally built image can stand in
# for Docker Hub's (see docker/base-images.sh).
ARG BUILDER_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------------------------------------
# Build stage
# ---------------------------------------------------------------------------------------------
FROM ${BUILDER_IMAGE} AS build

# rust-rocksdb links against Debian's librocksdb (7.8.3) rather than compiling RocksDB's C++
# from source: .cargo/config.toml points ROCKSDB_LIB_DIR/ROCKSDB_INCLUDE_DIR at it. bindgen
# needs libclang to generate the bindings; protoc builds the etcd client.
RUN apt-get update \
    && apt-get install -y --no-install-recommends librocksdb-dev libclang-dev clang protobuf-compiler libprotobuf-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src

# Dependencies first, against placeholder sources, so that editing the code does not rebuild
# every crate. The placeholders are removed again before the real build. The workspace's other
# members (the comparison harness, the leadership model) are copied whole: cargo reads every
# member's manifest, though only the server is built here.
COPY Cargo.toml Cargo.lock ./
COPY .cargo ./.cargo
COPY bench ./bench
COPY model ./model
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked --bin timelock \
    && rm -rf src

COPY . .
# COPY keeps the files' modification times, which can be older than the placeholder build;
# touch the crate roots so cargo rebuilds the timelock crate itself.
RUN touch src/lib.rs src/main.rs \
    && cargo build --release --locked --bin timelock \
    && cp target/release/timelock /usr/local/bin/timelock

# ---------------------------------------------------------------------------------------------
# Runtime stage
# ---------------------------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE}

RUN apt-get update \
    && apt-get install -y --no-install-recommends librocksdb7.8 ca-certificates \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --gid 10001 timelock \
    && useradd --uid 10001 --gid timelock --home-dir /var/lib/timelock --no-create-home \
        --shell /usr/sbin/nologin timelock \
    && install -d -o timelock -g timelock -m 0750 /var/lib/timelock

COPY --from=build /usr/local/bin/timelock /usr/local/bin/timelock
COPY config/timelock.toml /etc/timelock/timelock.toml

# Read by `timelock serve`; the file sets only defaults, and the flags in CMD override its
# listen address and data directory. Mount your own file here to change settings.
ENV TIMELOCK_CONFIG=/etc/timelock/timelock.toml

# The RocksDB data directory: keep it on a volume, it holds every namespace's timestamp bound.
VOLUME ["/var/lib/timelock"]
WORKDIR /var/lib/timelock
EXPOSE 8421
USER timelock

# Ready means the store is open and the server is not shutting down. If you change the listen
# port in CMD, change it here too.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["timelock", "health", "--server", "http://127.0.0.1:8421"]

ENTRYPOINT ["timelock"]
CMD ["serve", "--listen", "0.0.0.0:8421", "--data-dir", "/var/lib/timelock"]
