//! I/O faults injected into the real server's RocksDB files with the preload library
//! (`tests/powercut/powercut.c`): `EIO` from `fsync`/`fdatasync`, and `EIO` from writes to the
//! write-ahead log, while clients fetch timestamps. The service must fail-stop: nothing above
//! the durable bound, 503 (or, since Debian's RocksDB is built with assertions, the process
//! aborting — equally a stop), readiness red; it must not retry into success once the fault
//! clears; a restart after the fault clears resumes above everything acknowledged.
//! (`ENOSPC` from a full tmpfs is in `tests/durability/fail_stop.rs`.)

use crate::common;

use std::time::{Duration, Instant};

use common::*;

async fn fault_run(kind: &str) {
    let (dir, data) = temp_data_dir();
    std::fs::create_dir_all(&data).unwrap();
    let lib = powercut_library();
    let trigger = dir.path().join(format!("fail-{kind}"));
    let journal = dir.path().join("journal");
    let env_key = if kind == "sync" {
        "POWERCUT_FAIL_SYNC"
    } else {
        "POWERCUT_FAIL_WRITE"
    };
    let (lib, data_s, trigger_s, journal_s) = (
        lib.to_str().unwrap().to_string(),
        data.to_str().unwrap().to_string(),
        trigger.to_str().unwrap().to_string(),
        journal.to_str().unwrap().to_string(),
    );
    let mut server = TestServer::start(
        &data,
        &[
            ("LD_PRELOAD", &lib),
            ("POWERCUT_DIR", &data_s),
            ("POWERCUT_JOURNAL", &journal_s),
            (env_key, &trigger_s),
            ("TIMELOCK__TIMESTAMP__RESERVATION", "25"),
        ],
    );
    let url = "/io/timestamp/fresh-timestamp";
    let mut acknowledged = 0i64;
    for _ in 0..100 {
        acknowledged = acknowledged.max(post(&server, url).await.number());
    }
    // Arm the fault and keep asking until the service stops.
    std::fs::write(&trigger, "").unwrap();
    let client = client();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut stopped_by = None;
    while Instant::now() < deadline {
        match client.post(server.url(url)).send().await {
            Ok(r) if r.status() == 200 => {
                let ts: i64 = r.text().await.unwrap().trim().parse().unwrap();
                assert!(ts > acknowledged, "{ts} after {acknowledged}");
                acknowledged = ts;
            }
            Ok(r) => {
                let status = r.status().as_u16();
                let body = r.text().await.unwrap_or_default();
                assert_eq!(status, 503, "{body}");
                assert!(body.contains("TimestampServiceStopped"), "{body}");
                stopped_by = Some("503");
                break;
            }
            Err(_) => {
                // The process went away: RocksDB's assertions abort on some I/O errors.
                tokio::time::sleep(Duration::from_millis(100)).await;
                assert!(!server.is_running(), "unreachable but running");
                stopped_by = Some("abort");
                break;
            }
        }
    }
    let faults = std::fs::read_to_string(&journal)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("F "))
        .count();
    let stopped_by = stopped_by.unwrap_or_else(|| {
        panic!(
            "{kind} faults ({faults} injected) never stopped the service:\n{}",
            server.log()
        )
    });
    assert!(faults > 0, "no fault was injected");
    // Clear the fault: a stopped service stays stopped (no retry into success).
    std::fs::remove_file(&trigger).unwrap();
    if stopped_by == "503" {
        let ready = get(&server, "/health/ready").await;
        assert_eq!(ready.status, 503, "{}", ready.body);
        assert!(ready.body.contains("\"io\""), "{}", ready.body);
        for _ in 0..20 {
            let r = post(&server, url).await;
            assert_eq!(
                r.status, 503,
                "served again after a failed bound write: {}",
                r.body
            );
        }
        assert!(server.log().contains("FAIL-STOP"));
        server.kill9();
    } else {
        server.reap();
    }
    println!("{kind}: {faults} faults injected; stopped by {stopped_by}; acknowledged up to {acknowledged}");
    // Restart with the fault cleared: above everything acknowledged.
    server.restart();
    let first = post(&server, url).await.number();
    assert!(
        first > acknowledged,
        "{first} after restart, {acknowledged} acknowledged before"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eio_from_fsync_fail_stops_and_a_restart_resumes() {
    fault_run("sync").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eio_from_wal_writes_fail_stops_and_a_restart_resumes() {
    fault_run("write").await;
}
