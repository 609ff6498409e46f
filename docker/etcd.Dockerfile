# etcd 3.4 (Debian bookworm's etcd-server and etcd-client, 3.4.23) for the compose cluster in
# docker-compose.yml, and for trying cluster mode locally.
#
#   docker build -f docker/etcd.Dockerfile -t timelock-etcd:3.4.23 docker
#   docker build -f docker/etcd.Dockerfile --build-arg BASE_IMAGE=local/bookworm-slim \
#       -t timelock-etcd:3.4.23 docker                      # no registry: see base-images.sh
#
# Runs a single-member cluster as is; docker-compose.yml sets the ETCD_* variables of a
# three-member one. Every etcd flag has an ETCD_* environment variable (--initial-cluster is
# ETCD_INITIAL_CLUSTER, ...). Configure it with those (docker run -e): etcd 3.4 exits when a flag
# is given whose variable is set as well, and the image sets the three ENV variables below.
# The same holds for etcdctl and its ETCDCTL_* variables, which the image leaves unset
# (etcdctl's default endpoint is this member: 127.0.0.1:2379).
# The build context is not used (docker/ is the smallest one at hand).
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

# A fixed uid/gid (10002; timelock is 10001) so that volumes keep their owner across rebuilds.
# The package's postinst creates the etcd user only if it is missing, and would start the
# service: policy-rc.d forbids that while the image is built.
RUN groupadd --system --gid 10002 etcd \
    && useradd --system --uid 10002 --gid etcd --home-dir /var/lib/etcd --no-create-home \
        --shell /usr/sbin/nologin etcd \
    && printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d \
    && chmod 0755 /usr/sbin/policy-rc.d \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends etcd-server etcd-client \
    && rm -f /usr/sbin/policy-rc.d \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o etcd -g etcd -m 0700 /var/lib/etcd \
    && etcd --version && etcdctl version

# etcd's data directory (the member's WAL and snapshots) lives in a subdirectory of the volume
# so that etcd creates it with the 0700 permissions it insists on.
# Peers: etcd's defaults (localhost:2380, a cluster of one); a real cluster sets
# ETCD_LISTEN_PEER_URLS, ETCD_INITIAL_ADVERTISE_PEER_URLS and ETCD_INITIAL_CLUSTER.
ENV ETCD_DATA_DIR=/var/lib/etcd/data \
    ETCD_LISTEN_CLIENT_URLS=http://0.0.0.0:2379 \
    ETCD_ADVERTISE_CLIENT_URLS=http://127.0.0.1:2379

VOLUME ["/var/lib/etcd"]
WORKDIR /var/lib/etcd
EXPOSE 2379 2380
USER etcd

# Healthy once this member answers with a committed read, which needs the cluster's quorum.
HEALTHCHECK --interval=5s --timeout=5s --start-period=10s --retries=5 \
    CMD ["etcdctl", "--command-timeout=3s", "endpoint", "health"]

ENTRYPOINT ["etcd"]
