//! The metrics that the shipped alerts (deploy/prometheus/timelock-rules.yml) depend on:
//! the newest backup's time and the schedule, failed backups, and fenced namespaces.

use crate::common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;

/// The value of the metric line starting with `line_prefix` (name and labels), if present.
async fn metric(server: &TestServer, line_prefix: &str) -> Option<f64> {
    let text = get(server, "/metrics").await.body;
    text.lines()
        .find(|l| l.starts_with(line_prefix) && l[line_prefix.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test]
async fn backup_gauges_follow_backups_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let backups = dir.path().join("backups");
    let env = [
        ("TIMELOCK__BACKUP__DIR", s(&backups)),
        ("TIMELOCK__BACKUP__SCHEDULE", "6h"),
    ];
    let mut server = TestServer::start(&data, &env);
    let last = "timelock_last_backup_timestamp_seconds";
    assert_eq!(metric(&server, last).await, Some(0.0), "no backup yet");
    assert_eq!(
        metric(&server, "timelock_backup_schedule_seconds").await,
        Some(21_600.0)
    );
    post(&server, "/ns/timestamp/fresh-timestamp").await;

    // A refused name is not a failed backup.
    let refused = send(client().post(server.url("/admin/backups?name=../x"))).await;
    assert_eq!(refused.status, 400, "{refused:?}");
    let failures = r#"timelock_backup_failures_total{type="on_demand"}"#;
    assert_eq!(metric(&server, failures).await, Some(0.0));

    let before = now();
    let made = send(client().post(server.url("/admin/backups?name=b"))).await;
    assert_eq!(made.status, 200, "{made:?}");
    let created = made.json()["createdAtUnixMs"].as_u64().unwrap() as f64 / 1000.0;
    let gauge = metric(&server, last).await.unwrap();
    assert_eq!(gauge, created);
    assert!(gauge >= before - 1.0 && gauge <= now() + 1.0, "{gauge}");

    // A restart starts from the newest backup on disk, not from 0.
    server.terminate();
    server.restart();
    assert_eq!(metric(&server, last).await, Some(created));
}

#[tokio::test]
async fn a_backup_that_fails_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The backups "dir" is a file: every backup fails with an I/O error.
    let backups = dir.path().join("not-a-dir");
    std::fs::write(&backups, b"").unwrap();
    let server = TestServer::start(&data, &[("TIMELOCK__BACKUP__DIR", s(&backups))]);
    assert_eq!(
        metric(&server, "timelock_backup_schedule_seconds").await,
        Some(0.0),
        "no schedule"
    );
    let failed = send(client().post(server.url("/admin/backups"))).await;
    assert_eq!(failed.status, 503, "{failed:?}");
    assert_eq!(
        metric(
            &server,
            r#"timelock_backup_failures_total{type="on_demand"}"#
        )
        .await,
        Some(1.0)
    );
    assert_eq!(
        metric(&server, "timelock_last_backup_timestamp_seconds").await,
        Some(0.0)
    );
}

#[tokio::test]
async fn fenced_namespaces_are_counted_with_the_oldest_fence_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let backups = dir.path().join("backups");
    let mut server = TestServer::start(&data, &[("TIMELOCK__BACKUP__DIR", s(&backups))]);
    let issued = post(&server, "/ns/timestamp/fresh-timestamp")
        .await
        .number();
    assert_eq!(
        metric(&server, "timelock_fenced_namespaces").await,
        Some(0.0)
    );
    let made = send(client().post(server.url("/admin/backups?name=b"))).await;
    assert_eq!(made.status, 200, "{made:?}");
    server.terminate();

    let restored = dir.path().join("restored");
    let out = Command::new(BIN)
        .args(["backup", "restore", "b", "--data-dir", s(&restored)])
        .args(["--backup-dir", s(&backups), "--yes"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let before = now();
    let server = TestServer::start(&restored, &[]);
    assert_eq!(
        metric(&server, "timelock_fenced_namespaces").await,
        Some(1.0)
    );
    let since = metric(&server, "timelock_oldest_fence_start_timestamp_seconds")
        .await
        .unwrap();
    assert!(since >= before - 1.0 && since <= now() + 1.0, "{since}");

    let lifted = post(
        &server,
        &format!("/ns/timestamp-management/fast-forward?currentTimestamp={issued}"),
    )
    .await;
    assert_eq!(lifted.status, 204, "{lifted:?}");
    assert_eq!(
        metric(&server, "timelock_fenced_namespaces").await,
        Some(0.0)
    );
    assert_eq!(
        metric(&server, "timelock_oldest_fence_start_timestamp_seconds").await,
        Some(0.0)
    );
}
