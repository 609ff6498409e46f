//! Durability across restarts: clean (SIGTERM) restarts and a `kill -9` loop in which the server
//! is killed while clients are mid-flight. After every restart the first timestamp must exceed
//! every timestamp acknowledged before, in every namespace. The high-water mark is kept here, in
//! the test, outside the server's data dir.

use crate::common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use parking_lot::Mutex;

#[tokio::test]
async fn state_persists_across_clean_restarts() {
    let (_dir, data) = temp_data_dir();
    let mut server = TestServer::start(&data, &[]);
    let mut high: BTreeMap<&str, i64> = BTreeMap::new();
    for round in 0..5 {
        for ns in ["alpha", "beta", "gamma"] {
            let first = post(&server, &format!("/{ns}/timestamp/fresh-timestamp"))
                .await
                .number();
            if round == 0 {
                assert_eq!(first, 1, "{ns}");
            } else {
                assert!(
                    first > high[ns],
                    "{ns}: {first} after restart, {} before",
                    high[ns]
                );
            }
            let v = post(
                &server,
                &format!("/{ns}/timestamp/fresh-timestamps?number=100"),
            )
            .await
            .json();
            high.insert(ns, v["upperBound"].as_i64().unwrap());
        }
        // A fast-forward is durable too.
        let target = 10_000_000 * (round + 1);
        post(
            &server,
            &format!("/beta/timestamp-management/fast-forward?currentTimestamp={target}"),
        )
        .await;
        high.insert("beta", target);
        assert_eq!(server.terminate().code(), Some(0));
        server.restart();
        assert_eq!(namespaces(&server).await, vec!["alpha", "beta", "gamma"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_loop_never_goes_backwards() {
    let cycles: usize = std::env::var("TIMELOCK_KILL_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let (_dir, data) = temp_data_dir();
    // A small reservation means bound writes are in flight at most moments we kill.
    let mut server = TestServer::start(&data, &[("TIMELOCK__TIMESTAMP__RESERVATION", "25")]);
    let namespaces = ["one", "two"];
    let acknowledged: Arc<Mutex<BTreeMap<&str, Vec<i64>>>> = Arc::default();
    let mut high: BTreeMap<&str, i64> = BTreeMap::new();
    let mut all_seen: HashSet<(&str, i64)> = HashSet::new();
    for cycle in 0..cycles {
        // First timestamp after the restart, per namespace, must beat everything acknowledged.
        for ns in namespaces {
            let first = post(&server, &format!("/{ns}/timestamp/fresh-timestamp"))
                .await
                .number();
            let before = high.get(ns).copied().unwrap_or(0);
            assert!(first > before, "cycle {cycle}, {ns}: first timestamp {first} <= {before} acknowledged before the kill");
            acknowledged.lock().entry(ns).or_default().push(first);
        }
        // Clients hammer the server; it is killed while they run.
        let base = server.base();
        let mut tasks = Vec::new();
        for c in 0..4usize {
            let base = base.clone();
            let acknowledged = acknowledged.clone();
            let ns = namespaces[c % 2];
            tasks.push(tokio::spawn(async move {
                let http = client();
                for i in 0..10_000 {
                    let path = if i % 3 == 0 {
                        format!("{base}/{ns}/timestamp/fresh-timestamps?number=7")
                    } else {
                        format!("{base}/{ns}/timestamp/fresh-timestamp")
                    };
                    let Ok(response) = http.post(path).send().await else {
                        return;
                    };
                    let Ok(body) = response.text().await else {
                        return;
                    };
                    // Only a complete response is an acknowledged timestamp.
                    let value = if let Ok(v) = body.parse::<i64>() {
                        v
                    } else if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) {
                        v["upperBound"].as_i64().expect("range")
                    } else {
                        panic!("unexpected body {body:?}");
                    };
                    acknowledged.lock().entry(ns).or_default().push(value);
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(20 + (cycle as u64 * 37) % 80)).await;
        server.kill9();
        for t in tasks {
            t.await.unwrap();
        }
        for (ns, values) in acknowledged.lock().iter_mut() {
            for v in values.drain(..) {
                assert!(all_seen.insert((*ns, v)), "{ns}: {v} acknowledged twice");
                let h = high.entry(*ns).or_insert(0);
                *h = (*h).max(v);
            }
        }
        server.restart();
    }
    assert!(
        all_seen.len() > cycles * 10,
        "too little traffic to mean anything: {}",
        all_seen.len()
    );
    eprintln!(
        "kill -9 loop: {cycles} cycles, {} acknowledged timestamps, 0 violations",
        all_seen.len()
    );
}

/// Only RocksDB's LOCK failure is "in use": other open errors quote the data dir's path, and the
/// Debian package's (/var/lib/timelock/data) contains "lock", which was once enough to misreport
/// any of them, a permission problem included, as a second server.
#[tokio::test]
async fn an_open_error_under_a_path_with_lock_in_it_is_not_called_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("var/lib/timelock/data");
    let mut server = TestServer::start(&data, &[]);
    let first = post(&server, "/ns/timestamp/fresh-timestamp")
        .await
        .number();
    assert!(server.terminate().success());
    // A CURRENT naming a manifest that does not exist: RocksDB cannot open the data dir.
    std::fs::write(data.join("CURRENT"), "MANIFEST-999999\n").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot open RocksDB at") && stderr.contains("MANIFEST-999999"),
        "{stderr}"
    );
    assert!(!stderr.contains("in use by another"), "{stderr}");
    assert_eq!(first, 1);
}

#[tokio::test]
async fn a_second_server_on_the_same_data_dir_is_refused() {
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[]);
    let out = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("in use by another timelock process"),
        "{stderr}"
    );
    assert_eq!(
        post(&server, "/ns/timestamp/fresh-timestamp")
            .await
            .number(),
        1,
        "the first is unaffected"
    );
}
