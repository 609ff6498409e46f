#!/usr/bin/env bash
# Builds local stand-ins for the Dockerfile's two base images:
#
#   local/bookworm-slim   Debian bookworm (debootstrap --variant=minbase), for debian:bookworm-slim
#   local/rust-bookworm   that plus gcc/g++/make/pkg-config, this host's Rust toolchain and
#                         its locally added CA certificates, for rust:1-bookworm
#
# This script exists only because the workplace it was written in has a Docker engine with no
# container registry, so no image can be pulled. With access to a registry, ignore it and run
# `docker build -t timelock .`. Here:
#
#   docker/base-images.sh
#   docker build --build-arg BUILDER_IMAGE=local/rust-bookworm \
#                --build-arg RUNTIME_IMAGE=local/bookworm-slim -t timelock:dev .
#
# Needs root, debootstrap (apt-get install debootstrap), a Debian mirror and a rustup toolchain.
# Existing images are kept; FORCE=1 rebuilds them.
#
# Environment: WORK (scratch directory, default /var/tmp/timelock-base-images), MIRROR (default:
# the first Debian mirror in this host's apt sources), TOOLCHAIN (a Rust toolchain directory, default
# `rustc --print sysroot`), FORCE, SLIM_ONLY (1: make local/bookworm-slim only, as .ci/deb-smoke
# needs no Rust image).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WORK=${WORK:-/var/tmp/timelock-base-images}
host_mirror() {
    grep -hoE '^(URIs:|deb)[[:space:]]+[a-z]+://[^[:space:]]+' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list /etc/apt/sources.list 2>/dev/null \
        | awk '{print $2}' | grep -v -- '-security' | head -n 1 || true
    # (grep exits 2 when one of the globbed files is missing, e.g. no /etc/apt/sources.list on a
    # deb822-only host; with pipefail that would abort the script, so failures end up as "no mirror".)
}
MIRROR=${MIRROR:-$(host_mirror)}
[ -n "$MIRROR" ] || { echo "no Debian mirror found in apt sources; set MIRROR" >&2; exit 1; }
FORCE=${FORCE:-0}
SLIM_ONLY=${SLIM_ONLY:-0}
[ "$SLIM_ONLY" = 1 ] || TOOLCHAIN=${TOOLCHAIN:-$(rustc --print sysroot)}

have_image() { [ "$FORCE" != 1 ] && docker image inspect "$1" >/dev/null 2>&1; }

mkdir -p "$WORK"

if have_image local/bookworm-slim; then
    echo "local/bookworm-slim exists (FORCE=1 rebuilds it)"
else
    rootfs="$WORK/rootfs"
    rm -rf "$rootfs"
    echo "debootstrap bookworm from $MIRROR into $rootfs"
    nice -n 19 debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR"

    # Apt sources as in Debian's official images, security updates included.
    rm -f "$rootfs/etc/apt/sources.list"
    cat > "$rootfs/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${MIRROR%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
    # Keep images slim, as the official -slim images do: no docs or man pages, no package cache.
    cat > "$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
DPKG
    cat > "$rootfs/etc/apt/apt.conf.d/docker-clean" <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT
    echo 'APT::Install-Recommends "false";' > "$rootfs/etc/apt/apt.conf.d/docker-no-recommends"
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
        "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/log/*.log
    : > "$rootfs/etc/hostname"
    : > "$rootfs/etc/resolv.conf"

    tar --numeric-owner --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
        -C "$rootfs" -c . \
        | docker import --change 'CMD ["bash"]' - local/bookworm-slim
    rm -rf "$rootfs"
fi

if [ "$SLIM_ONLY" = 1 ]; then
    echo "local/rust-bookworm not made (SLIM_ONLY=1)"
elif have_image local/rust-bookworm; then
    echo "local/rust-bookworm exists (FORCE=1 rebuilds it)"
else
    ctx="$WORK/rust-context"
    rm -rf "$ctx"
    mkdir -p "$ctx/rust"
    echo "copying Rust toolchain $TOOLCHAIN (without its HTML docs)"
    tar -C "$TOOLCHAIN" --exclude=./share/doc -c . | tar -C "$ctx/rust" -x
    # CA certificates this host trusts beyond Debian's (e.g. a TLS-inspecting proxy's), so that
    # cargo inside the build reaches crates.io the way it does on the host.
    mkdir -p "$ctx/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$ctx/ca-certificates/" 2>/dev/null || true
    nice -n 19 docker build -f "$here/rust-bookworm.Dockerfile" -t local/rust-bookworm "$ctx"
    rm -rf "$ctx"
fi

docker image ls --filter reference='local/*'
