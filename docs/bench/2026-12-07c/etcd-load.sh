#!/bin/bash
# etcd load of a per-namespace cluster: 3 nodes, 64 shards, 500 namespaces.
set -u
D=/tmp/eload; rm -rf $D/etcd $D/d* $D/*.log
BIN=/work/main/target/release/timelock
etcd --data-dir $D/etcd --listen-client-urls http://127.0.0.1:23791 --advertise-client-urls http://127.0.0.1:23791 --listen-peer-urls http://127.0.0.1:23801 --listen-metrics-urls http://127.0.0.1:23802 > $D/etcd.log 2>&1 &
EPID=$!
sleep 2
snap() { curl -s http://127.0.0.1:23802/metrics | awk '/^grpc_server_handled_total/ { match($0,/grpc_method="[^"]*"/); m=substr($0,RSTART+13,RLENGTH-14); c[m]+=$NF } END { for (m in c) print m, c[m] }' | sort; }
diffsnap() { join -a2 -e0 -o 0,1.2,2.2 <(echo "$1") <(echo "$2") | awk -v secs=$3 '{ d=$3-$2; if (d>0) printf "  %-16s %7d  (%.1f/s)\n", $1, d, d/secs }'; }
start_node() { i=$1
cat > $D/n$i.toml <<EOT
[server]
listen = "127.0.0.1:1850$i"
[storage]
data_dir = "$D/d$i"
[cluster]
mode = "etcd"
leader_mode = "per-namespace"
etcd_endpoints = "http://127.0.0.1:23791"
node_id = "n$i"
advertise_url = "http://127.0.0.1:1850$i"
EOT
$BIN serve --config $D/n$i.toml > $D/n$i.log 2>&1 &
eval "P$i=\$!"
}
S0=$(snap); T0=$(date +%s.%N)
start_node 1; start_node 2; start_node 3
sleep 5
S1=$(snap); T1=$(date +%s.%N)
echo "cluster start (3 nodes join, 64 shards taken and balanced), over $(echo "$T1-$T0"|bc) s:"; diffsnap "$S0" "$S1" 1
ok=0
for n in $(seq 0 499); do
  # A 308's Location is the leader's base URL: re-send the same path there, as AtlasDB does.
  loc=$(curl -s -o /dev/null -w '%{redirect_url}' -X POST http://127.0.0.1:18501/ns$n/timestamp/fresh-timestamp -H 'User-Agent: x atlasdb-http-client/2.0')
  base=${loc:-http://127.0.0.1:18501/}
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST ${base%/}/ns$n/timestamp/fresh-timestamp -H 'User-Agent: x atlasdb-http-client/2.0')
  [ "$code" = 200 ] && ok=$((ok+1))
done
echo "namespaces created: $ok of 500"
sleep 1
S2=$(snap)
echo "creating 500 namespaces (one timestamp each):"; diffsnap "$S1" "$S2" 1
sleep 2; S3=$(snap); sleep 60; S4=$(snap)
echo "idle, 60 s, 500 namespaces:"; diffsnap "$S3" "$S4" 60
kill -9 $P2; sleep 6; S5=$(snap)
echo "kill -9 of n2, and the 6 s after:"; diffsnap "$S4" "$S5" 1
start_node 2; sleep 6; S6=$(snap)
echo "n2 restarted (waits for its old id, rejoins, takes back its shards), 6 s:"; diffsnap "$S5" "$S6" 1
kill -TERM $P3; sleep 3; S7=$(snap)
echo "SIGTERM of n3 (hand-off), 3 s:"; diffsnap "$S6" "$S7" 1
curl -s http://127.0.0.1:18501/health/ready | python3 -c "import json,sys; l=json.load(sys.stdin)['leadership']; print('after: leaders', [(x['node'],len(x['shards'])) for x in l['leaders']], 'unled', l['unledShards'])"
kill $P1 $P2 $EPID 2>/dev/null; wait 2>/dev/null
