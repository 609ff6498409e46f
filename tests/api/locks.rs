//! The v2 lock service and transaction API over HTTP, against the real server: JSON shapes,
//! FIFO hand-off, all-or-nothing with timeouts, idempotency, refresh/unlock subsets, lease
//! expiry, leadership ids, start-transactions partitioning and the immutable timestamp, lock
//! watches, and the multi-client endpoints.

use crate::common;

use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use serde_json::{json, Value};
use uuid::Uuid;

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

fn b64_bytes(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn lock_body(id: Uuid, descriptors: &[&str], timeout_ms: i64) -> String {
    let descriptors: Vec<String> = descriptors.iter().map(|d| b64(d)).collect();
    json!({"requestId": id, "lockDescriptors": descriptors, "acquireTimeoutMs": timeout_ms, "clientDescription": "test"})
        .to_string()
}

async fn lock(
    server: &TestServer,
    ns: &str,
    id: Uuid,
    descriptors: &[&str],
    timeout_ms: i64,
) -> Value {
    let r = post_json(
        server,
        &format!("/tl/l/{ns}"),
        &lock_body(id, descriptors, timeout_ms),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    r.json()
}

fn succeeded(v: &Value) -> bool {
    v["type"] == "successful"
}

async fn unlock(server: &TestServer, ns: &str, ids: &[Uuid]) -> Vec<Uuid> {
    let r = post_json(server, &format!("/tl/ul2/{ns}"), &json!(ids).to_string()).await;
    assert_eq!(r.status, 200, "{r:?}");
    serde_json::from_value(r.json()).unwrap()
}

async fn refresh(server: &TestServer, ns: &str, ids: &[Uuid]) -> Vec<Uuid> {
    let r = post_json(server, &format!("/tl/rl2/{ns}"), &json!(ids).to_string()).await;
    assert_eq!(r.status, 200, "{r:?}");
    serde_json::from_value(r.json()["refreshedTokens"].clone()).unwrap()
}

fn assert_lease(lease: &Value, leader: &str) {
    assert_eq!(lease["validity"], "PT8S", "{lease}");
    assert_eq!(lease["leaderTime"]["id"], leader, "{lease}");
    assert!(lease["leaderTime"]["currentTime"].is_i64(), "{lease}");
    assert_eq!(lease.as_object().unwrap().len(), 2);
}

async fn leader_id(server: &TestServer, ns: &str) -> String {
    let v = post(server, &format!("/tl/lt/{ns}")).await.json();
    assert!(v["currentTime"].is_i64());
    v["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn conjure_lock_shapes() {
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[]);
    let leader = leader_id(&server, "ns").await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());

    let v = lock(&server, "ns", a, &["row1", "row2"], 1000).await;
    assert_eq!(v["type"], "successful", "{v}");
    assert_eq!(v["successful"]["lockToken"], json!({"requestId": a}));
    assert_lease(&v["successful"]["lease"], &leader);
    assert_eq!(v.as_object().unwrap().len(), 2);

    let v = lock(&server, "ns", b, &["row2"], 0).await;
    assert_eq!(v, json!({"type": "unsuccessful", "unsuccessful": {}}));

    let r = post_json(
        &server,
        "/tl/wl/ns",
        &lock_body(Uuid::new_v4(), &["row1"], 10),
    )
    .await;
    assert_eq!(r.body, r#"{"wasSuccessful":false}"#);
    let r = post_json(
        &server,
        "/tl/wl/ns",
        &lock_body(Uuid::new_v4(), &["free"], 10),
    )
    .await;
    assert_eq!(r.body, r#"{"wasSuccessful":true}"#);

    let r = post_json(
        &server,
        "/tl/rl/ns",
        &json!({"tokens": [{"requestId": a}, {"requestId": b}]}).to_string(),
    )
    .await;
    let v = r.json();
    assert_eq!(v["refreshedTokens"], json!([{"requestId": a}]));
    assert_lease(&v["lease"], &leader);
    let v = post_json(&server, "/tl/rl2/ns", &json!([a, b]).to_string())
        .await
        .json();
    assert_eq!(v["refreshedTokens"], json!([a]));

    let r = post_json(
        &server,
        "/tl/ul/ns",
        &json!({"tokens": [{"requestId": a}, {"requestId": b}]}).to_string(),
    )
    .await;
    assert_eq!(r.json(), json!({"tokens": [{"requestId": a}]}));
    assert_eq!(
        unlock(&server, "ns", &[a]).await,
        Vec::<Uuid>::new(),
        "unlock after unlock"
    );
    assert_eq!(
        refresh(&server, "ns", &[a]).await,
        Vec::<Uuid>::new(),
        "refresh after unlock"
    );

    // Tokens are per namespace.
    let c = Uuid::new_v4();
    assert!(succeeded(&lock(&server, "ns", c, &["x"], 0).await));
    assert_eq!(refresh(&server, "other", &[c]).await, Vec::<Uuid>::new());
    assert_eq!(unlock(&server, "other", &[c]).await, Vec::<Uuid>::new());
    assert!(
        succeeded(&lock(&server, "other", Uuid::new_v4(), &["x"], 0).await),
        "namespaces are independent"
    );
    assert_eq!(unlock(&server, "ns", &[c]).await, vec![c]);
}

#[tokio::test]
async fn fifo_hand_off_and_all_or_nothing() {
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[]);
    let holder = Uuid::new_v4();
    assert!(succeeded(&lock(&server, "ns", holder, &["a"], 0).await));
    // Three waiters queue in order; each is granted only after the previous one unlocks.
    let base = server.base();
    let mut waiters = Vec::new();
    for i in 0..3 {
        let id = Uuid::new_v4();
        let base = base.clone();
        waiters.push((
            id,
            tokio::spawn(async move {
                let r = client()
                    .post(format!("{base}/tl/l/ns"))
                    .header("content-type", "application/json")
                    .body(lock_body(id, &["a"], 20_000))
                    .send()
                    .await
                    .unwrap();
                let v: Value = r.json().await.unwrap();
                (i, Instant::now(), v)
            }),
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        waiters.iter().all(|(_, w)| !w.is_finished()),
        "all wait while a is held"
    );
    unlock(&server, "ns", &[holder]).await;
    let mut granted = Vec::new();
    for (id, w) in waiters {
        let (i, at, v) = w.await.unwrap();
        assert!(succeeded(&v), "{v}");
        granted.push((at, i));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(unlock(&server, "ns", &[id]).await, vec![id]);
    }
    granted.sort();
    assert_eq!(
        granted.iter().map(|g| g.1).collect::<Vec<_>>(),
        vec![0, 1, 2],
        "FIFO"
    );

    // All or nothing: wanting a (free) and b (held) times out and leaves a free.
    let blocker = Uuid::new_v4();
    assert!(succeeded(&lock(&server, "ns", blocker, &["b"], 0).await));
    let v = lock(&server, "ns", Uuid::new_v4(), &["a", "b", "c"], 200).await;
    assert_eq!(v["type"], "unsuccessful");
    assert!(
        succeeded(&lock(&server, "ns", Uuid::new_v4(), &["a"], 0).await),
        "partial hold released"
    );
    assert!(succeeded(
        &lock(&server, "ns", Uuid::new_v4(), &["c"], 0).await
    ));
}

#[tokio::test]
async fn idempotent_retries() {
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[]);
    let holder = Uuid::new_v4();
    lock(&server, "ns", holder, &["x"], 0).await;
    let req = Uuid::new_v4();
    let base = server.base();
    let attempt = |delay_ms: u64| {
        let base = base.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            let r = client()
                .post(format!("{base}/tl/l/ns"))
                .header("content-type", "application/json")
                .body(lock_body(req, &["x"], 20_000))
                .send()
                .await
                .unwrap();
            r.json::<Value>().await.unwrap()
        })
    };
    // During acquisition: two requests with the same id wait together.
    let (first, second) = (attempt(0), attempt(100));
    tokio::time::sleep(Duration::from_millis(250)).await;
    unlock(&server, "ns", &[holder]).await;
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    assert!(succeeded(&first));
    assert_eq!(first, second, "same token and lease");
    // After acquisition: the same token again, immediately.
    assert_eq!(lock(&server, "ns", req, &["x"], 0).await, first);
    // Across timeout: a timed-out id keeps timing out on retry, even once the lock is free.
    let late = Uuid::new_v4();
    assert_eq!(
        lock(&server, "ns", late, &["x"], 50).await["type"],
        "unsuccessful"
    );
    unlock(&server, "ns", &[req]).await;
    assert_eq!(
        lock(&server, "ns", late, &["x"], 50).await["type"],
        "unsuccessful"
    );
    // Wait-for-locks is idempotent too.
    let w = Uuid::new_v4();
    let r1 = post_json(&server, "/tl/wl/ns", &lock_body(w, &["x"], 100)).await;
    let r2 = post_json(&server, "/tl/wl/ns", &lock_body(w, &["x"], 100)).await;
    assert_eq!(r1.body, r2.body);
}

#[tokio::test]
async fn lease_expiry_frees_the_lock_for_the_next_waiter() {
    let (_dir, data) = temp_data_dir();
    // A 2 s server lease refreshed every 250 ms: 1.75 s of slack for a refresh that a loaded
    // two-core machine delays (with a 1 s lease this test failed once under the full suite).
    let env = [
        ("TIMELOCK__LOCK__SERVER_LEASE_MS", "2000"),
        ("TIMELOCK__LOCK__CLIENT_LEASE_MS", "400"),
        ("TIMELOCK__LOCK__REAPER_INTERVAL_MS", "100"),
    ];
    let server = TestServer::start(&data, &env);
    let (kept, abandoned) = (Uuid::new_v4(), Uuid::new_v4());
    let v = lock(&server, "ns", kept, &["k"], 0).await;
    assert_eq!(v["successful"]["lease"]["validity"], "PT0.4S");
    lock(&server, "ns", abandoned, &["z"], 0).await;
    let started = Instant::now();
    // Timed where the waiter's answer arrives (the keep-alive goes on past the lease).
    let waiter = async {
        let v = lock(&server, "ns", Uuid::new_v4(), &["z"], 10_000).await;
        (v, started.elapsed())
    };
    let keep_alive = async {
        for round in 0..14 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            assert_eq!(
                refresh(&server, "ns", &[kept]).await,
                vec![kept],
                "refresh {round} of the kept token, {:?} after the start",
                started.elapsed()
            );
        }
    };
    let ((v, waited), ()) = tokio::join!(waiter, keep_alive);
    assert!(succeeded(&v), "waiter got the abandoned lock: {v}");
    assert!(
        waited >= Duration::from_millis(1_900),
        "not before the server lease: {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(5_000),
        "soon after it: {waited:?}"
    );
    assert_eq!(refresh(&server, "ns", &[kept, abandoned]).await, vec![kept]);
    let metrics = get(&server, "/metrics").await.body;
    assert!(
        metrics.contains("timelock_lock_expiries_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn leadership_id_changes_on_restart_and_invalidate_resources() {
    let (_dir, data) = temp_data_dir();
    let mut server = TestServer::start(&data, &[]);
    let first = leader_id(&server, "ns").await;
    assert_eq!(
        leader_id(&server, "ns").await,
        first,
        "stable within a term"
    );
    assert_ne!(leader_id(&server, "other").await, first, "per namespace");
    let token = Uuid::new_v4();
    lock(&server, "ns", token, &["x"], 0).await;
    let other_token = Uuid::new_v4();
    lock(&server, "other", other_token, &["x"], 0).await;

    let r = post_json(&server, "/tl/management/invalidateResources", r#"["ns"]"#).await;
    assert_eq!(r.status, 204);
    let second = leader_id(&server, "ns").await;
    assert_ne!(second, first);
    assert_eq!(
        refresh(&server, "ns", &[token]).await,
        Vec::<Uuid>::new(),
        "old tokens are invalid"
    );
    assert!(
        succeeded(&lock(&server, "ns", Uuid::new_v4(), &["x"], 0).await),
        "locks were dropped"
    );
    assert_eq!(
        refresh(&server, "other", &[other_token]).await,
        vec![other_token],
        "only that namespace"
    );
    let ts_before = post(&server, "/ns/timestamp/fresh-timestamp")
        .await
        .number();

    server.kill9();
    server.restart();
    let third = leader_id(&server, "ns").await;
    assert!(third != first && third != second, "new id after restart");
    assert_eq!(
        refresh(&server, "other", &[other_token]).await,
        Vec::<Uuid>::new()
    );
    assert!(
        post(&server, "/ns/timestamp/fresh-timestamp")
            .await
            .number()
            > ts_before
    );
}

fn st_body(request_id: Uuid, requestor: Uuid, n: i64, last_known: Option<Value>) -> String {
    let mut v = json!({"requestId": request_id, "requestorId": requestor, "numTransactions": n});
    if let Some(lk) = last_known {
        v["lastKnownVersion"] = lk;
    }
    v.to_string()
}

#[tokio::test]
async fn start_transactions_partitions_and_immutable_timestamp() {
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[]);
    let leader = leader_id(&server, "ns").await;
    let requestors: Vec<Uuid> = (0..20).map(|_| Uuid::new_v4()).collect();
    let mut residues = std::collections::HashMap::new();
    let mut held = Vec::new();
    for round in 0..3 {
        for (i, requestor) in requestors.iter().enumerate() {
            let request_id = Uuid::new_v4();
            let n = 1 + (i as i64 % 4);
            let v = post_json(
                &server,
                "/tl/st/ns",
                &st_body(request_id, *requestor, n, None),
            )
            .await
            .json();
            let ts = &v["timestamps"];
            assert_eq!(ts["interval"], 16, "{v}");
            assert_eq!(ts["count"], n, "{v}");
            let start = ts["start"].as_i64().unwrap();
            let residue = start % 16;
            assert_eq!(
                *residues.entry(*requestor).or_insert(residue),
                residue,
                "partition is stable per requestor"
            );
            let immutable = v["immutableTimestamp"]["immutableTimestamp"]
                .as_i64()
                .unwrap();
            assert!(immutable <= start, "{v}");
            assert_eq!(
                v["immutableTimestamp"]["lock"],
                json!({"requestId": request_id})
            );
            assert_lease(&v["lease"], &leader);
            assert_eq!(v["lockWatchUpdate"]["type"], "snapshot");
            assert_eq!(v["lockWatchUpdate"]["logId"], leader);
            assert_eq!(v.as_object().unwrap().len(), 4);
            if round == 0 && i == 0 {
                held.push((request_id, immutable));
            } else {
                unlock(&server, "ns", &[request_id]).await;
            }
        }
    }
    // 20 requestors spread over the 16 residues.
    let distinct: std::collections::HashSet<i64> = residues.values().copied().collect();
    assert_eq!(distinct.len(), 16);
    // The immutable timestamp stays at the oldest held lock, then rises once it is released.
    let (oldest, oldest_ts) = held[0];
    let imm = post(&server, "/ns/timelock/immutable-timestamp")
        .await
        .number();
    assert_eq!(imm, oldest_ts);
    assert_eq!(unlock(&server, "ns", &[oldest]).await, vec![oldest]);
    let after = post(&server, "/ns/timelock/immutable-timestamp")
        .await
        .number();
    assert!(after > oldest_ts, "rises: {after} > {oldest_ts}");
    // Bad requests: 400 with nothing changed.
    post_json(
        &server,
        "/tl/st/ns",
        &st_body(Uuid::new_v4(), Uuid::new_v4(), 0, None),
    )
    .await
    .assert_conjure_error(400, "INVALID_ARGUMENT");
    post_json(&server, "/tl/st/ns", r#"{"requestId":"nope"}"#)
        .await
        .assert_conjure_error(400, "INVALID_ARGUMENT");
    // 625 transactions fill a 10,000-timestamp batch; more are clamped to that.
    let v = post_json(
        &server,
        "/tl/st/ns",
        &st_body(Uuid::new_v4(), Uuid::new_v4(), 5000, None),
    )
    .await
    .json();
    assert_eq!(v["timestamps"]["count"], 625, "{v}");
}

#[tokio::test]
async fn commit_timestamps_and_legacy_transaction_paths() {
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[]);
    let leader = leader_id(&server, "ns").await;
    let v = post_json(&server, "/tl/gct/ns", r#"{"numTimestamps":3}"#)
        .await
        .json();
    assert_eq!(
        v["inclusiveUpper"].as_i64().unwrap() - v["inclusiveLower"].as_i64().unwrap(),
        2
    );
    assert_eq!(v["lockWatchUpdate"]["type"], "snapshot");
    assert_eq!(v["lockWatchUpdate"]["lastKnownVersion"], -1);
    let last = v["inclusiveUpper"].as_i64().unwrap();
    let v = post_json(&server, "/tl/g1ct/ns", "{}").await.json();
    assert_eq!(v["timestamp"], last + 1);
    assert!(v["lockWatchUpdate"].is_object());
    post_json(&server, "/tl/gct/ns", r#"{"numTimestamps":0}"#)
        .await
        .assert_conjure_error(400, "INVALID_ARGUMENT");

    let id = Uuid::new_v4();
    let requestor = Uuid::new_v4();
    let v = post_json(
        &server,
        "/ns/timelock/lock-immutable-timestamp",
        &json!({"requestId": id}).to_string(),
    )
    .await
    .json();
    assert!(v["immutableTimestamp"].is_i64());
    assert_eq!(v["lock"], json!({"requestId": id}));
    let v = post_json(
        &server,
        "/ns/timelock/start-atlasdb-transaction",
        &json!({"requestId": Uuid::new_v4()}).to_string(),
    )
    .await
    .json();
    assert!(
        v["freshTimestamp"].as_i64().unwrap()
            > v["immutableTimestamp"]["immutableTimestamp"]
                .as_i64()
                .unwrap()
    );
    let body = json!({"requestId": Uuid::new_v4(), "requestorId": requestor}).to_string();
    let v = post_json(
        &server,
        "/ns/timelock/start-identified-atlasdb-transaction",
        &body,
    )
    .await
    .json();
    let sp = &v["startTimestampAndPartition"];
    assert_eq!(
        sp["timestamp"].as_i64().unwrap() % 16,
        sp["partition"].as_i64().unwrap()
    );
    assert!(v.get("lease").is_none());
    let body = json!({"requestId": Uuid::new_v4(), "requestorId": requestor}).to_string();
    let v = post_json(&server, "/ns/timelock/start-atlasdb-transaction-v3", &body)
        .await
        .json();
    assert_lease(&v["lease"], &leader);
    assert_eq!(
        v["startTimestampAndPartition"]["partition"],
        sp["partition"]
    );
    let body = json!({"requestId": Uuid::new_v4(), "requestorId": requestor, "numTransactions": 2})
        .to_string();
    let v = post_json(&server, "/ns/timelock/start-atlasdb-transaction-v4", &body)
        .await
        .json();
    assert_eq!(v["timestamps"]["count"], 2);
    assert_eq!(v["timestamps"]["interval"], 16);
    assert_lease(&v["lease"], &leader);

    let r = get(&server, "/ns/timelock/leader-time").await;
    assert_eq!(r.json()["id"], leader);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let millis = post(&server, "/ns/timelock/current-time-millis")
        .await
        .number();
    assert!((millis - now_ms).abs() < 60_000);
    let r = post_json(
        &server,
        "/ns/timelock/do-not-use-without-explicit-atlasdb-authorisation/lock-diagnostic-config",
        &json!([id]).to_string(),
    )
    .await;
    assert_eq!(r.status, 204);
}

#[tokio::test]
async fn legacy_lock_paths() {
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[]);
    let leader = leader_id(&server, "ns").await;
    let legacy = |id: Uuid, d: &str, timeout: i64| {
        json!({"requestId": id, "lockDescriptors": [{"bytes": b64(d)}], "acquireTimeoutMs": timeout}).to_string()
    };
    let a = Uuid::new_v4();
    let v = post_json(&server, "/ns/timelock/lock", &legacy(a, "x", 0))
        .await
        .json();
    assert_eq!(v, json!({"tokenOrEmpty": {"requestId": a}}));
    let v = post_json(
        &server,
        "/ns/timelock/lock",
        &legacy(Uuid::new_v4(), "x", 0),
    )
    .await
    .json();
    assert_eq!(v, json!({"tokenOrEmpty": null}));
    let b = Uuid::new_v4();
    let v = post_json(&server, "/ns/timelock/lock-v2", &legacy(b, "y", 0))
        .await
        .json();
    assert_eq!(v["type"], "success");
    assert_eq!(v["token"], json!({"requestId": b}));
    assert_lease(&v["lease"], &leader);
    let v = post_json(
        &server,
        "/ns/timelock/lock-v2",
        &legacy(Uuid::new_v4(), "y", 0),
    )
    .await
    .json();
    assert_eq!(v, json!({"type": "failure"}));
    let r = post_json(
        &server,
        "/ns/timelock/await-locks",
        &legacy(Uuid::new_v4(), "y", 10),
    )
    .await;
    assert_eq!(r.body, r#"{"wasSuccessful":false}"#);
    let tokens = json!([{"requestId": a}, {"requestId": Uuid::new_v4()}]).to_string();
    assert_eq!(
        post_json(&server, "/ns/timelock/refresh-locks", &tokens)
            .await
            .json(),
        json!([{"requestId": a}])
    );
    let v = post_json(&server, "/ns/timelock/refresh-locks-v2", &tokens)
        .await
        .json();
    assert_eq!(v["refreshedTokens"], json!([{"requestId": a}]));
    assert_lease(&v["lease"], &leader);
    assert_eq!(
        post_json(&server, "/ns/timelock/unlock", &tokens)
            .await
            .json(),
        json!([{"requestId": a}])
    );
    // A token from the legacy API unlocks through Conjure (same table).
    assert_eq!(unlock(&server, "ns", &[b]).await, vec![b]);
    // Bad descriptors are 400.
    let bad = json!({"requestId": Uuid::new_v4(), "lockDescriptors": [{"bytes": "!!"}], "acquireTimeoutMs": 0}).to_string();
    post_json(&server, "/ns/timelock/lock", &bad)
        .await
        .assert_conjure_error(400, "INVALID_ARGUMENT");
    let negative =
        json!({"requestId": Uuid::new_v4(), "lockDescriptors": [], "acquireTimeoutMs": -1})
            .to_string();
    post_json(&server, "/tl/l/ns", &negative)
        .await
        .assert_conjure_error(400, "INVALID_ARGUMENT");
}

#[tokio::test]
async fn request_limits() {
    let (_dir, data) = temp_data_dir();
    let env = [
        ("TIMELOCK__LOCK__MAX_DESCRIPTORS_PER_REQUEST", "10"),
        ("TIMELOCK__LOCK__MAX_DESCRIPTOR_BYTES", "8"),
        ("TIMELOCK__LOCK__MAX_WAITERS_PER_NAMESPACE", "2"),
    ];
    let server = TestServer::start(&data, &env);
    let many: Vec<String> = (0..11).map(|i| format!("d{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let r = post_json(&server, "/tl/l/ns", &lock_body(Uuid::new_v4(), &many, 0)).await;
    r.assert_conjure_error(400, "INVALID_ARGUMENT");
    let r = post_json(
        &server,
        "/tl/l/ns",
        &lock_body(Uuid::new_v4(), &["123456789"], 0),
    )
    .await;
    r.assert_conjure_error(400, "INVALID_ARGUMENT");
    lock(&server, "ns", Uuid::new_v4(), &["x"], 0).await;
    let base = server.base();
    let mut waiting = Vec::new();
    for _ in 0..2 {
        let base = base.clone();
        waiting.push(tokio::spawn(async move {
            client()
                .post(format!("{base}/tl/l/ns"))
                .header("content-type", "application/json")
                .body(lock_body(Uuid::new_v4(), &["x"], 1_000))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = post_json(
        &server,
        "/tl/l/ns",
        &lock_body(Uuid::new_v4(), &["x"], 1_000),
    )
    .await;
    assert_eq!(r.status, 429, "{r:?}");
    for w in waiting {
        assert_eq!(w.await.unwrap(), 200);
    }
}

fn row(table: &str, row: &str) -> Vec<u8> {
    let mut v = table.as_bytes().to_vec();
    v.push(0);
    v.extend_from_slice(row.as_bytes());
    v
}

async fn lock_raw(server: &TestServer, id: Uuid, descriptors: &[Vec<u8>]) {
    let d: Vec<String> = descriptors.iter().map(|d| b64_bytes(d)).collect();
    let body = json!({"requestId": id, "lockDescriptors": d, "acquireTimeoutMs": 0}).to_string();
    assert_eq!(
        post_json(server, "/tl/l/ns", &body).await.json()["type"],
        "successful"
    );
}

#[tokio::test]
async fn lock_watches_snapshot_and_events() {
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[]);
    let leader = leader_id(&server, "ns").await;
    let held = Uuid::new_v4();
    lock_raw(&server, held, &[row("ns.watched", "r1")]).await;
    let r = post_json(
        &server,
        "/lw/sw/ns",
        &json!({"references": [{"type": "fullTable", "qualifiedTableRef": "ns.watched"}]})
            .to_string(),
    )
    .await;
    assert_eq!(r.status, 204, "{r:?}");
    // No lastKnownVersion: a snapshot with what is locked inside the watches.
    let v = post_json(&server, "/tl/gct/ns", r#"{"numTimestamps":1}"#)
        .await
        .json();
    let update = &v["lockWatchUpdate"];
    assert_eq!(update["type"], "snapshot", "{update}");
    assert_eq!(update["logId"], leader);
    assert_eq!(
        update["locked"],
        json!([{"bytes": b64_bytes(&row("ns.watched", "r1"))}])
    );
    assert_eq!(
        update["lockWatches"],
        json!([{"type": "fullTable", "qualifiedTableRef": "ns.watched"}])
    );
    let version = update["lastKnownVersion"].as_i64().unwrap();

    // Lock and unlock inside and outside the watched table; only watched ones become events.
    let t2 = Uuid::new_v4();
    lock_raw(
        &server,
        t2,
        &[row("ns.watched", "r2"), row("ns.other", "r2")],
    )
    .await;
    unlock(&server, "ns", &[held]).await;
    lock_raw(&server, Uuid::new_v4(), &[row("ns.other", "zz")]).await;
    let last_known = json!({"id": leader, "version": version});
    let body = json!({"numTimestamps": 1, "lastKnownVersion": last_known}).to_string();
    let update = post_json(&server, "/tl/gct/ns", &body).await.json()["lockWatchUpdate"].clone();
    assert_eq!(update["type"], "success", "{update}");
    assert_eq!(update["lastKnownVersion"], version + 2);
    let events = update["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{update}");
    assert_eq!(events[0]["type"], "lock");
    assert_eq!(events[0]["sequence"], version + 1);
    assert_eq!(
        events[0]["lockDescriptors"],
        json!([{"bytes": b64_bytes(&row("ns.watched", "r2"))}])
    );
    assert_eq!(events[0]["lockToken"], json!({"requestId": t2}));
    assert_eq!(events[1]["type"], "unlock");
    assert_eq!(
        events[1]["lockDescriptors"],
        json!([{"bytes": b64_bytes(&row("ns.watched", "r1"))}])
    );
    // Up to date: success with no events. Wrong log id: snapshot.
    let body = json!({"lastKnownVersion": {"id": leader, "version": version + 2}}).to_string();
    let update = post_json(&server, "/tl/g1ct/ns", &body).await.json()["lockWatchUpdate"].clone();
    assert_eq!(
        update,
        json!({"type": "success", "logId": leader, "lastKnownVersion": version + 2, "events": []})
    );
    let body =
        json!({"requestId": Uuid::new_v4(), "requestorId": Uuid::new_v4(), "numTransactions": 1,
        "lastKnownVersion": {"id": Uuid::new_v4(), "version": version + 2}})
        .to_string();
    let update = post_json(&server, "/tl/st/ns", &body).await.json()["lockWatchUpdate"].clone();
    assert_eq!(update["type"], "snapshot");
    assert_eq!(
        post(&server, "/lw/diagnostics/logState/ns").await.status,
        204
    );
    post_json(
        &server,
        "/lw/sw/ns",
        r#"{"references":[{"type":"nonsense"}]}"#,
    )
    .await
    .assert_conjure_error(400, "INVALID_ARGUMENT");
}

#[tokio::test]
async fn multi_client_endpoints() {
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[]);
    let a_leader = leader_id(&server, "a").await;
    let v = post_json(&server, "/tl/multi/lts", r#"["a","b"]"#)
        .await
        .json();
    assert_eq!(v["leaderTimes"]["a"]["id"], a_leader);
    assert!(v["leaderTimes"]["b"]["currentTime"].is_i64());

    let (ra, rb) = (Uuid::new_v4(), Uuid::new_v4());
    for path in ["/tl/multi/sts", "/tl/multi/stsfc"] {
        let body = json!({
            "a": {"requestId": ra, "requestorId": Uuid::new_v4(), "numTransactions": 2},
            "b": {"requestId": rb, "requestorId": Uuid::new_v4(), "numTransactions": 1},
        });
        let v = post_json(&server, path, &body.to_string()).await.json();
        assert_eq!(v["a"]["timestamps"]["count"], 2, "{v}");
        assert_eq!(v["b"]["timestamps"]["count"], 1);
        assert_eq!(v["a"]["lease"]["leaderTime"]["id"], a_leader);
    }
    for path in ["/tl/multi/gcts", "/tl/multi/gctsfc"] {
        let v = post_json(
            &server,
            path,
            r#"{"a":{"numTimestamps":4},"b":{"numTimestamps":1}}"#,
        )
        .await
        .json();
        assert_eq!(
            v["a"]["inclusiveUpper"].as_i64().unwrap() - v["a"]["inclusiveLower"].as_i64().unwrap(),
            3
        );
        assert!(v["b"]["lockWatchUpdate"].is_object());
    }
    let v = post_json(
        &server,
        "/tl/multi/ul",
        &json!({"a": [ra, Uuid::new_v4()], "b": [rb]}).to_string(),
    )
    .await
    .json();
    assert_eq!(v, json!({"a": [ra], "b": [rb]}));

    let lease_req = Uuid::new_v4();
    let body =
        json!({"a": [{"requestId": lease_req, "numFreshTimestamps": {"sweep": 3}}]}).to_string();
    let v = post_json(&server, "/tl/multi/atl", &body).await.json();
    let response = &v["a"]["alias"][0];
    assert_eq!(response["leaseGuarantee"]["identifier"], json!(lease_req));
    assert_lease(&response["leaseGuarantee"]["lease"], &a_leader);
    let sweep = &response["timestampLeaseResponses"]["sweep"];
    let min_leased = sweep["minLeased"].as_i64().unwrap();
    assert_eq!(sweep["freshTimestamps"]["count"], 3);
    assert!(
        sweep["freshTimestamps"]["start"].as_i64().unwrap() > min_leased,
        "fresh timestamps after the leased one"
    );
    let v = post_json(&server, "/tl/multi/gmlt", r#"{"a":["sweep"]}"#)
        .await
        .json();
    assert_eq!(v["a"]["sweep"], min_leased);
    assert_eq!(
        unlock(&server, "a", &[lease_req]).await,
        vec![lease_req],
        "a lease is an ordinary token"
    );
    let v = post_json(&server, "/tl/multi/gmlt", r#"{"a":["sweep"]}"#)
        .await
        .json();
    assert!(
        v["a"]["sweep"].as_i64().unwrap() > min_leased,
        "no lease held: a fresh timestamp"
    );
    let bad = json!({"a": [{"requestId": Uuid::new_v4(), "numFreshTimestamps": {"ImmutableTimestampX": 1}}]}).to_string();
    post_json(&server, "/tl/multi/atl", &bad)
        .await
        .assert_conjure_error(400, "INVALID_ARGUMENT");
    post_json(&server, "/tl/multi/lts", r#"["ok","bad name"]"#)
        .await
        .assert_conjure_error(400, "INVALID_ARGUMENT");
}

#[tokio::test]
async fn lock_waits_are_bounded_by_their_own_timeout_not_the_request_timeout() {
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[("TIMELOCK__SERVER__REQUEST_TIMEOUT_MS", "300")]);
    lock(&server, "ns", Uuid::new_v4(), &["x"], 0).await;
    let started = Instant::now();
    let v = lock(&server, "ns", Uuid::new_v4(), &["x"], 900).await;
    assert_eq!(v["type"], "unsuccessful", "{v}");
    assert!(
        started.elapsed() >= Duration::from_millis(850),
        "waited its full acquireTimeoutMs"
    );
    let r = post_json(
        &server,
        "/tl/wl/ns",
        &lock_body(Uuid::new_v4(), &["x"], 600),
    )
    .await;
    assert_eq!(r.body, r#"{"wasSuccessful":false}"#);
}

#[tokio::test]
async fn shutdown_ends_long_lock_waits_with_503() {
    let (_dir, data) = temp_data_dir();
    let mut server = TestServer::start(&data, &[]);
    lock(&server, "ns", Uuid::new_v4(), &["x"], 0).await;
    let base = server.base();
    let waiter = tokio::spawn(async move {
        let r = client()
            .post(format!("{base}/tl/l/ns"))
            .header("content-type", "application/json")
            .body(lock_body(Uuid::new_v4(), &["x"], 600_000))
            .send()
            .await
            .unwrap();
        r.status().as_u16()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown was not held up: {:?}",
        started.elapsed()
    );
    assert_eq!(
        waiter.await.unwrap(),
        503,
        "the waiter is told to retry elsewhere"
    );
}
