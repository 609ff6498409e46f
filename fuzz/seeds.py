#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target (fuzz/corpus/<target>/seed-*): real requests and
bodies from the wire contract (spec sections 1.1-1.6). Run from fuzz/: ./seeds.py
Seeds are named by content hash, as libFuzzer names what it adds."""
import hashlib, json, os, struct

U1 = "0b7d1f4e-9a56-4c1a-8c3e-1f2a3b4c5d6e"
U2 = "5c1e2a9b-7d3f-4e6a-9b8c-0d1e2f3a4b5c"
U3 = "9f8e7d6c-5b4a-4321-8fed-cba987654321"
LEASE = {"leaderTime": {"id": U3, "currentTime": 123456789012}, "validity": "PT8S"}

def write(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join("corpus", target)
    os.makedirs(d, exist_ok=True)
    name = "seed-" + hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

j = lambda v: json.dumps(v, separators=(",", ":"))

# Conjure and legacy request bodies (sections 1.1, 1.2, 1.3, 1.5, 1.6, admin).
start = {"requestId": U1, "requestorId": U2, "numTransactions": 1, "lastKnownVersion": {"id": U3, "version": 12}}
lock_c = {"requestId": U1, "lockDescriptors": ["dGFibGUxAHJvdzE=", "AAECAw=="], "acquireTimeoutMs": 10000,
          "clientDescription": "c", "metadata": {"indexToChangeMetadata": {"0": {"type": "updated", "updated": {"oldValue": "AA==", "newValue": "AQ=="}}}}}
lock_l = {"requestId": U1, "lockDescriptors": [{"bytes": "dGFibGUxAHJvdzE="}], "acquireTimeoutMs": 0, "clientDescription": "x"}
migration = {"id": "m1", "state": "RUNNING", "reversible": True, "sourceIsOffline": False,
             "directionMapping": {"source": {"kind": "server", "url": "http://a:8421"}, "destination": {"kind": "file", "path": "/tmp/ts"},
                                  "sourceWritable": True, "destinationWritable": False},
             "namespaces": [{"sourceNamespace": "ns1", "destinationNamespace": "ns1", "step": "source-blocked", "sourceBound": 100, "verifiedTimestamp": None}],
             "log": ["started"], "reversals": 0}
BODIES = {
    "ts": {"numTimestamps": 5}, "t2": 5, "st": start, "gct": {"numTimestamps": 3, "lastKnownVersion": {"id": U3, "version": 0}},
    "g1ct": {"lastKnownVersion": None}, "lock": lock_c, "tokens": {"tokens": [{"requestId": U1}]}, "uuids": [U1, U2],
    "multi_lts": ["ns1", "ns2"], "multi_st": {"ns1": start}, "multi_gct": {"ns1": {"numTimestamps": 2}},
    "multi_ul": {"ns1": [U1]}, "multi_atl": {"ns1": [{"requestId": U1, "numFreshTimestamps": {"leaseName": 3}}]},
    "multi_gmlt": {"ns1": ["leaseName"]},
    "sw": {"references": [{"type": "fullTable", "qualifiedTableRef": "ns.table"},
                          {"type": "rowPrefix", "qualifiedTableRef": "ns.t", "row": "cm93"},
                          {"type": "rowRange", "qualifiedTableRef": "ns.t", "startInclusive": "YQ==", "endExclusive": "Yg=="},
                          {"type": "exactRow", "qualifiedTableRef": "ns.t", "row": "cm93"},
                          {"type": "exactCell", "qualifiedTableRef": "ns.t", "row": "cm93", "col": "Y29s"}]},
    "legacy_id": {"requestId": U1}, "legacy_ident": {"requestId": U1, "requestorId": U2},
    "legacy_v4": {"requestId": U1, "requestorId": U2, "numTransactions": 3}, "legacy_lock": lock_l,
    "legacy_tokens": [{"requestId": U1}], "feedback": {"atlasVersion": "0.1175.0", "serviceName": "s", "nodeId": "n",
                                                        "startTransaction": {"p99": 1.5, "oneMin": 2.0, "errorRate": 0.0}},
    "migration": migration, "version": {"id": U3, "version": 7},
}
for body in BODIES.values():
    write("conjure_json", j(body))
for extra in ['"dGFibGU="', '{"bytes":"AAE="}', '[]', '{}', '-9223372036854775808', '{"numTimestamps":1e3}', '{"tokens":[{"requestId":"not-a-uuid"}]}']:
    write("conjure_json", extra)

# Lock descriptors and lock request bodies.
for v in ['"dGFibGUxAHJvdzE="', '"AAECAw=="', '""', '"YQ"', '"YQ=="', '{"bytes":"YWJj"}', j(lock_c), j(lock_l),
          j({"requestId": U2, "lockDescriptors": ["YQ==", "YQ==", "Yg=="], "acquireTimeoutMs": 9223372036854775807}),
          j({"requestId": U2, "lockDescriptors": [{"bytes": "YQ=="}, {"bytes": "YQ=="}], "acquireTimeoutMs": 5}),
          j({"requestId": U2, "lockDescriptors": [], "acquireTimeoutMs": 1})]:
    write("lock_descriptors", v)
write("lock_descriptors", b"table1\x00row1")

# Namespace names.
for n in ["ns1", "client", "tl", "lw", "leader", "tlsuffix", "learner", "A_b-9", "a%20b", "%C3%A9", "a.b", "a%2Fb", "%00", "x%2500", "..", "admin", "timelock", "metrics", "health", "", "ns%31"]:
    write("namespaces", n)

# Query strings: selector byte (key index: 0 number, 1 currentTimestamp, 2 namespace, 3 name), then the query.
for sel, q in [(0, "number=5"), (1, "currentTimestamp=-9223372036854775808"), (0, "a=1&number=-3&number=9"), (0, "numb%65r=%2B7"),
               (0, "&&number=4&"), (0, "number"), (0, "number=9223372036854775808"), (0, "number=+5"), (0, "number=%20%2012"),
               (1, "currentTimestamp=-9223372036854775807"), (2, "namespace=ns1&currentTimestamp=10"), (3, "name=b%2E1"), (0, "number=1%ZZ")]:
    write("query_numbers", bytes([sel]) + q.encode())
write("query_numbers", bytes([200]) + b"number\x00number=" + struct.pack("<q", 5))

# End-to-end requests (router target): every route of the spec, with realistic headers.
H = "Content-Type: application/json\nUser-Agent: atlasdb-http-client/2.0\nAuthorization: Bearer omitted"
def req(method, path, body=None, headers=H):
    text = f"{method} {path}\n{headers}\n\n"
    if body is not None:
        text += body if isinstance(body, str) else j(body)
    return text
B = BODIES
singles = [
    req("POST", "/tl/ts/ns1", B["ts"]), req("POST", "/timelock/api/tl/ts/ns1", B["ts"]), req("POST", "/tl/t2/ns1", "5"),
    req("POST", "/tl/ts1/ns1"), req("POST", "/tl/lt/ns1"), req("POST", "/tl/st/ns1", B["st"]), req("POST", "/tl/gct/ns1", B["gct"]),
    req("POST", "/tl/g1ct/ns1", B["g1ct"]), req("POST", "/tl/l/ns1", B["lock"]), req("POST", "/tl/wl/ns1", B["lock"]),
    req("POST", "/tl/rl/ns1", B["tokens"]), req("POST", "/tl/rl2/ns1", B["uuids"]), req("POST", "/tl/ul/ns1", B["tokens"]),
    req("POST", "/tl/ul2/ns1", B["uuids"]), req("POST", "/tl/multi/lts", B["multi_lts"]), req("POST", "/tl/multi/stsfc", B["multi_st"]),
    req("POST", "/tl/multi/sts", B["multi_st"]), req("POST", "/tl/multi/gctsfc", B["multi_gct"]), req("POST", "/tl/multi/gcts", B["multi_gct"]),
    req("POST", "/tl/multi/ul", B["multi_ul"]), req("POST", "/tl/multi/atl", B["multi_atl"]), req("POST", "/tl/multi/gmlt", B["multi_gmlt"]),
    req("POST", "/lw/sw/ns1", B["sw"]), req("POST", "/lw/diagnostics/logState/ns1"),
    req("POST", "/tl/management/getNamespaces"), req("POST", "/tl/management/getActiveNamespaces"),
    req("POST", "/tl/management/achieveConsensus", ["ns1"]), req("POST", "/tl/management/invalidateResources", ["ns1"]),
    req("POST", "/tl/management/getServerLifecycleId"), req("POST", "/tl/management/fastForward?namespace=ns1&currentTimestamp=123"),
    req("POST", "/tl/feedback/reportFeedback", B["feedback"]), req("POST", "/tl/feedback/reportLeaderMetrics", B["feedback"]),
    req("POST", "/ns1/timestamp/fresh-timestamp"), req("GET", "/ns1/timestamp/fresh-timestamp", headers="User-Agent: curl/7.88.1"),
    req("POST", "/ns1/timestamp/fresh-timestamps?number=5"), req("POST", "/ns1/timelock/fresh-timestamp"),
    req("GET", "/timelock/api/ns1/timelock/fresh-timestamps?number=3"),
    req("POST", "/ns1/timestamp-management/fast-forward?currentTimestamp=1000"),
    req("POST", "/ns1/timestamp-management/fast-forward?currentTimestamp=-9223372036854775807"),
    req("GET", "/ns1/timestamp-management/ping"), req("POST", "/ns1/timestamp-management/invalidate"),
    req("POST", "/ns1/timestamp-management/revalidate?currentTimestamp=5000"),
    req("POST", "/ns1/timelock/lock-immutable-timestamp", B["legacy_id"]), req("POST", "/ns1/timelock/immutable-timestamp"),
    req("POST", "/ns1/timelock/start-atlasdb-transaction", B["legacy_id"]),
    req("POST", "/ns1/timelock/start-identified-atlasdb-transaction", B["legacy_ident"]),
    req("POST", "/ns1/timelock/start-atlasdb-transaction-v3", B["legacy_ident"]),
    req("POST", "/ns1/timelock/start-atlasdb-transaction-v4", B["legacy_v4"]),
    req("POST", "/ns1/timelock/lock", B["legacy_lock"]), req("POST", "/ns1/timelock/lock-v2", B["legacy_lock"]),
    req("POST", "/ns1/timelock/await-locks", B["legacy_lock"]), req("POST", "/ns1/timelock/refresh-locks", B["legacy_tokens"]),
    req("POST", "/ns1/timelock/refresh-locks-v2", B["legacy_tokens"]), req("POST", "/ns1/timelock/unlock", B["legacy_tokens"]),
    req("GET", "/ns1/timelock/leader-time"), req("POST", "/ns1/timelock/current-time-millis"),
    req("POST", "/ns1/timelock/do-not-use-without-explicit-atlasdb-authorisation/lock-diagnostic-config", [U1]),
    req("GET", "/metrics"), req("GET", "/health/ready"), req("GET", "/health/live"),
    req("GET", "/admin/backups"), req("POST", "/admin/backups?name=b1"), req("GET", "/admin/backups/b1"),
    req("GET", "/admin/migrations"), req("PUT", "/admin/migrations/m1", B["migration"]), req("GET", "/admin/migrations/m1"),
    # bad input
    req("POST", "/tl/ts/ns1", "{\"numTimestamps\":", headers="Content-Type: application/json\nContent-Length: 99999999"),
    req("POST", "/tl/ts/a%20b", B["ts"]), req("DELETE", "/tl/ts/ns1"), req("POST", "/ns1/timestamp/fresh-timestamps?number=0"),
    req("POST", "/tl/t2/ns1", "9223372036854775807", headers="Content-Type: text/plain"),
]
for s in singles:
    write("router", s)
seqs = [
    [req("POST", "/tl/l/ns1", B["lock"]), req("POST", "/tl/l/ns1", {**B["lock"], "requestId": U2, "acquireTimeoutMs": 100}),
     req("POST", "/tl/rl2/ns1", [U1]), req("POST", "/tl/ul2/ns1", [U1]), req("POST", "/tl/wl/ns1", {**B["lock"], "requestId": U2})],
    [req("POST", "/lw/sw/ns1", B["sw"]), req("POST", "/tl/l/ns1", B["lock"]), req("POST", "/tl/st/ns1", B["st"]), req("POST", "/tl/gct/ns1", {"numTimestamps": 2, "lastKnownVersion": {"id": U3, "version": 0}})],
    [req("POST", "/ns1/timestamp-management/invalidate"), req("POST", "/ns1/timestamp/fresh-timestamp"),
     req("POST", "/ns1/timestamp-management/revalidate?currentTimestamp=100000"), req("POST", "/tl/ts1/ns1")],
    [req("POST", "/tl/ts1/a"), req("POST", "/tl/ts1/b"), req("POST", "/tl/ts1/c"), req("POST", "/tl/ts1/d"), req("POST", "/tl/management/getNamespaces")],
    [req("POST", "/ns1/timestamp-management/fast-forward?currentTimestamp=9223372036854775806"), req("POST", "/tl/ts/ns1", B["ts"])],
    [req("POST", "/tl/multi/atl", B["multi_atl"]), req("POST", "/tl/multi/gmlt", B["multi_gmlt"]), req("POST", "/tl/ul2/ns1", [U1])],
    [req("POST", "/tl/l/ns1", B["lock"]), req("POST", "/tl/management/invalidateResources", ["ns1"]), req("POST", "/tl/rl/ns1", B["tokens"])],
    [req("PUT", "/admin/migrations/m1", B["migration"]), req("GET", "/admin/migrations/m1"), req("GET", "/admin/migrations")],
]
for s in seqs:
    write("router", "\n~~~\n".join(x.rstrip("\n") for x in s))

# Dictionaries: route segments, JSON keys and values from the spec (libFuzzer -dict format).
import re, glob
words = set()
for f in glob.glob("../src/http/*.rs"):
    for m in re.finditer(r'\.route\(\s*"([^"]+)"', open(f).read()):
        for part in m.group(1).split("/"):
            if part and not part.startswith("{"):
                words.add("/" + part)
for k in ["numTimestamps", "numTransactions", "requestId", "requestorId", "lastKnownVersion", "lockDescriptors",
          "acquireTimeoutMs", "tokens", "references", "qualifiedTableRef", "row", "col", "startInclusive", "endExclusive",
          "type", "fullTable", "rowPrefix", "rowRange", "exactRow", "exactCell", "bytes", "numFreshTimestamps", "version", "id",
          "number", "currentTimestamp", "namespace", "name", "Content-Type", "Content-Length", "User-Agent",
          "application/json", "atlasdb-http-client/2.0", "/timelock/api", "/admin", U1, "ImmutableTimestamp", "%2F", "..",
          "9223372036854775807", "-9223372036854775808", "\n~~~\n", "\n\n", "POST ", "GET ", "PUT "]:
    words.add(k)
os.makedirs("dict", exist_ok=True)
with open("dict/router.dict", "w") as f:
    for w in sorted(words):
        f.write('"%s"\n' % w.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\x0A"))
