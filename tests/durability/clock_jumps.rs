//! Wall-clock jumps (an NTP step, an operator's `date -s`) under libfaketime (Debian `faketime`):
//! the real server runs with the wall clock moved +1 hour, −1 hour, +1 day and −1 day while a
//! client holds locks and refreshes them and timestamps flow. Leases run on the monotonic clock,
//! so no lease may expire early (a lock refreshed within its lease stays valid through every
//! jump) or late (an abandoned lock is reaped within the server lease plus one reaper period),
//! and no timestamp may go back.
//!
//! The monotonic clock itself is left alone (`DONT_FAKE_MONOTONIC=1`): that is what an NTP step
//! or `date -s` changes on a real machine.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

fn lock_body(id: &uuid::Uuid, descriptor: &str) -> String {
    json!({"requestId": id, "lockDescriptors": [descriptor], "acquireTimeoutMs": 100}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wall_clock_jumps_change_no_lease_and_no_timestamp() {
    if !std::path::Path::new(LIBFAKETIME).exists() {
        // ./dev installs `faketime`; say so loudly rather than pass silently.
        panic!("{LIBFAKETIME} missing: apt-get install faketime (./dev test installs it)");
    }
    let (dir, data) = temp_data_dir();
    let offset_file = dir.path().join("faketime");
    std::fs::write(&offset_file, "+0\n").unwrap();
    let offset = offset_file.to_str().unwrap().to_string();
    // A short lease so that expiry is observable: server 3 s, client 2 s, reaper 100 ms.
    let server = TestServer::start(
        &data,
        &[
            ("LD_PRELOAD", LIBFAKETIME),
            ("FAKETIME_TIMESTAMP_FILE", &offset),
            ("FAKETIME_NO_CACHE", "1"),
            ("DONT_FAKE_MONOTONIC", "1"),
            ("TIMELOCK__LOCK__SERVER_LEASE_MS", "3000"),
            ("TIMELOCK__LOCK__CLIENT_LEASE_MS", "2000"),
            ("TIMELOCK__LOCK__REAPER_INTERVAL_MS", "100"),
        ],
    );
    let held = uuid::Uuid::new_v4();
    let r = post_json(&server, "/tl/l/clock", &lock_body(&held, "aGVsZA==")).await;
    assert_eq!(r.json()["type"], "successful", "{}", r.body);

    let mut last_ts = 0i64;
    for (i, jump) in ["+1h", "-1h", "+1d", "-1d", "+0"].into_iter().enumerate() {
        std::fs::write(&offset_file, format!("{jump}\n")).unwrap();
        // The server really sees the jump: the log line of a namespace created now carries the
        // moved wall clock, to the hour. (Not the Date header: hyper caches it and does not
        // move it back when the clock goes backwards.)
        let probe_ns = format!("clockprobe{i}");
        post(&server, &format!("/{probe_ns}/timestamp/fresh-timestamp")).await;
        let log = server.log();
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains("namespace created") && l.contains(&probe_ns))
            .unwrap_or_else(|| panic!("no log line for {probe_ns}:\n{log}"))
            .to_string();
        let expected = std::process::Command::new("date")
            .args(["-u", "-d", human(jump), "+%Y-%m-%dT%H"])
            .output()
            .unwrap();
        let expected = String::from_utf8_lossy(&expected.stdout).trim().to_string();
        assert!(
            line.contains(&expected),
            "the server's wall clock did not move by {jump}: {line:?}, expected {expected}"
        );
        let date = line;
        // Refresh every 500 ms for 4 s (longer than the server lease): never lost.
        let until = Instant::now() + Duration::from_secs(4);
        while Instant::now() < until {
            let r = post_json(&server, "/tl/rl2/clock", &json!([held]).to_string()).await;
            assert_eq!(
                r.json()["refreshedTokens"],
                json!([held]),
                "lock lost after a {jump} jump (server Date: {date})"
            );
            for _ in 0..20 {
                let ts = post(&server, "/clock/timestamp/fresh-timestamp")
                    .await
                    .number();
                assert!(ts > last_ts, "{ts} after {last_ts} across a {jump} jump");
                last_ts = ts;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // An abandoned lock expires on time: not before the server lease, and within it plus
        // a reaper period and some slack for a loaded machine.
        let abandoned = uuid::Uuid::new_v4();
        let r = post_json(&server, "/tl/l/clock", &lock_body(&abandoned, "Z29uZQ==")).await;
        assert_eq!(r.json()["type"], "successful", "{}", r.body);
        let taken = Instant::now();
        std::fs::write(&offset_file, format!("{}\n", flip(jump))).unwrap();
        let mut freed_after = None;
        while taken.elapsed() < Duration::from_secs(10) {
            // The held lock is kept refreshed meanwhile (and must stay valid).
            let r = post_json(&server, "/tl/rl2/clock", &json!([held]).to_string()).await;
            assert_eq!(r.json()["refreshedTokens"], json!([held]), "held lock lost");
            let probe = uuid::Uuid::new_v4();
            let r = post_json(&server, "/tl/l/clock", &lock_body(&probe, "Z29uZQ==")).await;
            if r.json()["type"] == "successful" {
                freed_after = Some(taken.elapsed());
                post_json(&server, "/tl/ul2/clock", &json!([probe]).to_string()).await;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let freed_after = freed_after.expect("abandoned lock never expired");
        println!("{jump}: abandoned lock freed after {freed_after:?} (server lease 3 s)");
        assert!(
            freed_after >= Duration::from_millis(2900),
            "expired early after a {jump} jump: {freed_after:?}"
        );
        assert!(
            freed_after <= Duration::from_millis(4500),
            "expired late after a {jump} jump: {freed_after:?}"
        );
    }
}

fn human(jump: &str) -> &'static str {
    match jump {
        "+1h" => "+1 hour",
        "-1h" => "-1 hour",
        "+1d" => "+1 day",
        "-1d" => "-1 day",
        _ => "now",
    }
}

/// The opposite jump, applied while the abandoned lock's lease runs.
fn flip(jump: &str) -> &'static str {
    match jump {
        "+1h" => "-1d",
        "-1h" => "+1d",
        "+1d" => "-1h",
        "-1d" => "+1h",
        _ => "+0",
    }
}
