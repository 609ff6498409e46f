# A stand-in for Docker Hub's rust:1-bookworm, built by docker/base-images.sh from
# local/bookworm-slim, the host's Rust toolchain (the build context holds it as rust/) and the
# host's locally added CA certificates (ca-certificates/, possibly empty: a TLS-inspecting proxy
# between this machine and crates.io needs its CA trusted inside the build too).
# Only for machines that cannot pull images; see base-images.sh.
FROM local/bookworm-slim

# What the official image (buildpack-deps:bookworm) provides that Rust builds rely on: a C/C++
# toolchain for -sys crates, pkg-config, and CA certificates so cargo can reach crates.io.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates gcc g++ libc6-dev make pkg-config \
    && rm -rf /var/lib/apt/lists/*

COPY ca-certificates/ /usr/local/share/ca-certificates/
RUN update-ca-certificates

COPY rust /usr/local/rust

ENV CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

RUN mkdir -p "$CARGO_HOME/bin" && rustc --version && cargo --version
