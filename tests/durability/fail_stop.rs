//! Fail-stop: when a bound cannot be made durable the namespace's timestamp service stops for
//! good — 503 with a Conjure body, readiness red, a metric and a log line — and no timestamp
//! above the durable bound is ever issued. A restart on healthy storage resumes above everything
//! acknowledged. Two ways to break the disk: an injected store error, and a real tmpfs that fills.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// Hammers `ns` until the first failure; returns the highest timestamp acknowledged and the
/// failing reply.
async fn issue_until_failure(server: &TestServer, ns: &str, limit: usize) -> (i64, Reply) {
    let mut highest = 0;
    for i in 0..limit {
        let r = if i % 2 == 0 {
            post(server, &format!("/{ns}/timestamp/fresh-timestamp")).await
        } else {
            post(
                server,
                &format!("/{ns}/timestamp/fresh-timestamps?number=3"),
            )
            .await
        };
        if r.status != 200 {
            return (highest, r);
        }
        let v = r.json();
        let ts = v
            .as_i64()
            .unwrap_or_else(|| v["upperBound"].as_i64().unwrap());
        assert!(ts > highest);
        highest = ts;
    }
    panic!("no failure within {limit} requests");
}

async fn assert_fail_stopped(server: &TestServer, ns: &str, failure: Reply) {
    let v = failure.assert_conjure_error(503, "INTERNAL");
    assert_eq!(v["errorName"], "TimeLock:TimestampServiceStopped");
    assert_eq!(v["parameters"]["namespace"], ns);
    // Stopped for good: every later call on that namespace is refused, even below the bound.
    for _ in 0..5 {
        post(server, &format!("/{ns}/timestamp/fresh-timestamp"))
            .await
            .assert_conjure_error(503, "INTERNAL");
    }
    post_json(server, &format!("/tl/ts/{ns}"), r#"{"numTimestamps":1}"#)
        .await
        .assert_conjure_error(503, "INTERNAL");
    let ready = get(server, "/health/ready").await;
    assert_eq!(ready.status, 503, "{ready:?}");
    assert_eq!(
        ready.json()["failStoppedNamespaces"],
        serde_json::json!([ns])
    );
    assert_eq!(get(server, "/health/live").await.status, 200);
    let metrics = get(server, "/metrics").await.body;
    assert!(
        metrics.contains("timelock_fail_stopped_services 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("timelock_bound_writes_total{result=\"error\"}"),
        "{metrics}"
    );
    assert!(
        server.log().contains("FAIL-STOP"),
        "log says why:\n{}",
        server.log()
    );
}

#[tokio::test]
async fn injected_store_error_fail_stops_and_restart_recovers() {
    let (_dir, data) = temp_data_dir();
    let faulty = [
        ("TIMELOCK__TIMESTAMP__RESERVATION", "10"),
        ("TIMELOCK__FAULTS__FAIL_BOUND_WRITES_AFTER", "6"),
    ];
    let mut server = TestServer::start(&data, &faulty);
    let (highest, failure) = issue_until_failure(&server, "ns", 1_000).await;
    assert!(highest > 10, "some bound extensions succeeded first");
    assert_fail_stopped(&server, "ns", failure).await;

    // Recovery is a restart (here without the fault) that re-reads the durable bound: the first
    // timestamp is above everything acknowledged, proving none was issued above the bound.
    server.kill9();
    let mut healthy = TestServer::start(&data, &[("TIMELOCK__TIMESTAMP__RESERVATION", "10")]);
    let first = post(&healthy, "/ns/timestamp/fresh-timestamp")
        .await
        .number();
    assert!(
        first > highest,
        "first {first} after restart must exceed {highest}"
    );
    assert_eq!(get(&healthy, "/health/ready").await.status, 200);
    healthy.kill9();
}

struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(at).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .ok()?;
        status.success().then(|| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system at `dir` until `ENOSPC`.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
    path
}

#[tokio::test]
async fn full_tmpfs_fail_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mount_point = dir.path().join("mnt");
    let Some(tmpfs) = Tmpfs::mount(&mount_point, "8m") else {
        eprintln!("SKIPPED full_tmpfs_fail_stops_cleanly: cannot mount tmpfs here (needs root)");
        return;
    };
    let data = tmpfs.0.join("data");
    let mut server = TestServer::start_in(
        &data,
        dir.path(),
        &[("TIMELOCK__TIMESTAMP__RESERVATION", "1")],
    );
    // Healthy at first: every timestamp is its own synced bound write.
    let mut highest = 0;
    for _ in 0..20 {
        highest = post(&server, "/ns/timestamp/fresh-timestamp")
            .await
            .number();
    }
    let filler = fill(&tmpfs.0);
    let (more, failure) = issue_until_failure(&server, "ns", 100).await;
    highest = highest.max(more);
    assert_fail_stopped(&server, "ns", failure).await;
    assert!(server.log().contains("bytes available"), "{}", server.log());

    // Free the space and restart: the namespace resumes above everything acknowledged.
    server.kill9();
    std::fs::remove_file(filler).unwrap();
    server.restart();
    let first = post(&server, "/ns/timestamp/fresh-timestamp")
        .await
        .number();
    assert!(
        first > highest,
        "first {first} after restart must exceed {highest}"
    );
    server.kill9();
    drop(server);
    drop(tmpfs);
}

/// Runs `timelock serve` on `data` until it exits by itself (at most 20 s): its exit status and
/// everything it printed.
fn serve_until_exit(data: &Path, work: &Path) -> (std::process::ExitStatus, String) {
    let log = work.join("refused-start.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .current_dir(work)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the server started (or hung) on a full disk:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    (status, std::fs::read_to_string(&log).unwrap_or_default())
}

fn assert_clean_refusal(status: std::process::ExitStatus, output: &str, data: &Path) {
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        None,
        "killed by a signal (a RocksDB abort?): {output}"
    );
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(output.contains("storage.min_free_bytes"), "{output}");
    assert!(output.contains("bytes available"), "{output}");
    assert!(
        output.contains(&data.display().to_string()),
        "the message names the data dir: {output}"
    );
}

#[tokio::test]
async fn starting_on_a_full_disk_is_a_clean_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let mount_point = dir.path().join("mnt");
    let Some(tmpfs) = Tmpfs::mount(&mount_point, "8m") else {
        eprintln!(
            "SKIPPED starting_on_a_full_disk_is_a_clean_refusal: cannot mount tmpfs here (needs root)"
        );
        return;
    };
    let data = tmpfs.0.join("data");
    let mut server = TestServer::start_in(&data, dir.path(), &[]);
    let mut highest = 0;
    for _ in 0..5 {
        highest = post(&server, "/ns/timestamp/fresh-timestamp")
            .await
            .number();
    }
    server.kill9();
    // The disk fills while the server is down: it refuses to start, with a reason, and does
    // not abort, on its existing data dir and on a new one.
    let filler = fill(&tmpfs.0);
    let (status, output) = serve_until_exit(&data, dir.path());
    assert_clean_refusal(status, &output, &data);
    let fresh = tmpfs.0.join("fresh");
    let (status, output) = serve_until_exit(&fresh, dir.path());
    if output.contains("cannot create data dir") {
        assert_eq!(status.code(), Some(1), "{output}");
    } else {
        assert_clean_refusal(status, &output, &fresh);
    }
    // Space freed: it starts, above everything acknowledged before.
    std::fs::remove_file(filler).unwrap();
    server.restart();
    let first = post(&server, "/ns/timestamp/fresh-timestamp")
        .await
        .number();
    assert!(first > highest, "{first} after {highest}");
    server.kill9();
    drop(server);
    drop(tmpfs);
}

fn lock_body(descriptor: &str, timeout_ms: i64) -> String {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD.encode(descriptor);
    serde_json::json!({"requestId": uuid::Uuid::new_v4(), "lockDescriptors": [bytes], "acquireTimeoutMs": timeout_ms, "clientDescription": "kill"})
        .to_string()
}

#[tokio::test]
async fn force_kill_refuses_every_client_request_until_restarted_by_hand() {
    let (_dir, data) = temp_data_dir();
    let mut server = TestServer::start(&data, &[]);
    let before = post(&server, "/ns/timestamp/fresh-timestamp")
        .await
        .number();
    let id = post(&server, "/tl/management/getServerLifecycleId").await;
    assert_eq!(id.status, 200, "{id:?}");
    assert!(id.json().is_string(), "{id:?}");
    // A lock held, and a request waiting for it.
    let held = post_json(&server, "/tl/l/ns", &lock_body("L", 0)).await;
    assert_eq!(held.json()["type"], "successful", "{held:?}");
    let waiter = {
        let url = server.url("/tl/l/ns");
        tokio::spawn(async move {
            send(
                client()
                    .post(url)
                    .header("content-type", "application/json")
                    .body(lock_body("L", 30_000)),
            )
            .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let killed = post(
        &server,
        "/timelock/api/tl/management/forceKillTimeLockServer",
    )
    .await;
    assert_eq!(killed.status, 200, "{killed:?}");
    assert_eq!(killed.json(), id.json(), "answers the lifecycle id");
    // The waiting lock request ends now, without the lock.
    let waited = tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
        .await
        .expect("the waiting lock request was ended by the kill")
        .unwrap();
    assert!(
        !(waited.status == 200 && waited.body.contains("successful")),
        "{waited:?}"
    );
    // Every client route refuses, at the root and under the prefix, direct or routed, now and
    // later.
    for _ in 0..2 {
        for (path, body) in [
            ("/ns/timestamp/fresh-timestamp", None),
            ("/timelock/api/ns/timestamp/fresh-timestamps?number=3", None),
            ("/tl/ts/ns", Some(r#"{"numTimestamps":1}"#.to_string())),
            ("/tl/st/ns", Some("{}".to_string())),
            ("/tl/l/ns", Some(lock_body("M", 0))),
            ("/ns/timelock/fresh-timestamp", None),
            (
                "/ns/timestamp-management/fast-forward?currentTimestamp=99999999",
                None,
            ),
            ("/tl/management/getServerLifecycleId", None),
            ("/tl/management/forceKillTimeLockServer", None),
            ("/ns/lock/current-time-millis", None),
            ("/n%73/timestamp/fresh-timestamp", None),
        ] {
            let r = match body {
                Some(body) => post_json(&server, path, &body).await,
                None => post(&server, path).await,
            };
            assert_eq!(r.status, 503, "{path}: {r:?}");
        }
        let ready = get(&server, "/health/ready").await;
        assert_eq!(ready.status, 503, "{ready:?}");
        assert_eq!(ready.json()["forceKilled"], true, "{ready:?}");
        assert_eq!(get(&server, "/health/live").await.status, 200);
        assert_eq!(get(&server, "/metrics").await.status, 200);
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert!(
        server.log().contains("forceKillTimeLockServer"),
        "{}",
        server.log()
    );
    // Restarted by hand: serving again, a new lifecycle id, timestamps still going up.
    server.terminate();
    server.restart();
    let after = post(&server, "/ns/timestamp/fresh-timestamp")
        .await
        .number();
    assert!(after > before, "{after} after {before}");
    let new_id = post(&server, "/tl/management/getServerLifecycleId").await;
    assert_ne!(new_id.json(), id.json());
    assert_eq!(get(&server, "/health/ready").await.status, 200);
}
