//! Backup and restore, as an operator runs them: online backup while clients issue timestamps,
//! restore into a fresh data dir (fenced until fast-forwarded; never at or below anything issued
//! before, with the high-water mark kept here, outside the server), the restore's refusals, and
//! the pre-upgrade backup of a format upgrade.

use crate::common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use parking_lot::Mutex;

fn cli(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run timelock")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn err(o: &Output) -> String {
    assert!(
        !o.status.success(),
        "should fail: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_under_load_then_restore_never_reissues() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let backups = dir.path().join("backups");
    let env = [
        ("TIMELOCK__BACKUP__DIR", s(&backups)),
        ("TIMELOCK__TIMESTAMP__RESERVATION", "50"),
    ];
    let mut server = TestServer::start(&data, &env);
    let high = Arc::new(Mutex::new(0i64));
    let base = server.base();
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (base, high) = (base.clone(), high.clone());
        clients.push(tokio::spawn(async move {
            let http = client();
            for _ in 0..300 {
                let ts: i64 = http
                    .post(format!("{base}/ns/timestamp/fresh-timestamp"))
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap()
                    .parse()
                    .unwrap();
                let mut h = high.lock();
                *h = (*h).max(ts);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    let created = tokio::task::spawn_blocking({
        let base = base.clone();
        move || {
            cli(&[
                "backup",
                "create",
                "--server",
                &base,
                "--name",
                "under-load",
            ])
        }
    })
    .await
    .unwrap();
    let out = ok(&created);
    assert!(
        out.contains("id: under-load") && out.contains("type: on-demand"),
        "{out}"
    );
    for c in clients {
        c.await.unwrap();
    }
    let high_water = *high.lock();
    server.kill9();

    let out = ok(&cli(&["backup", "list", "--backup-dir", s(&backups)]));
    assert!(out.lines().next().unwrap().starts_with("NAME"), "{out}");
    assert!(
        out.contains("under-load") && out.contains("on-demand") && out.contains(timelock::VERSION),
        "{out}"
    );
    let meta: serde_json::Value = serde_json::from_str(&ok(&cli(&[
        "backup",
        "show",
        "under-load",
        "--backup-dir",
        s(&backups),
        "--json",
    ])))
    .unwrap();
    assert_eq!(meta["type"], "on-demand");
    assert_eq!(meta["formatVersion"], 1);
    assert_eq!(meta["namespaces"][0]["name"], "ns");
    assert!(meta["files"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["sha256"].as_str().unwrap().len() == 64));
    assert!(ok(&cli(&[
        "backup",
        "verify",
        "under-load",
        "--backup-dir",
        s(&backups)
    ]))
    .contains("intact"));

    // Restore into a fresh data dir: fenced until fast-forwarded.
    let restored = dir.path().join("restored");
    let out = ok(&cli(&[
        "backup",
        "restore",
        "under-load",
        "--data-dir",
        s(&restored),
        "--backup-dir",
        s(&backups),
        "--yes",
    ]));
    assert!(out.contains("FENCED"), "{out}");
    let mut server = TestServer::start(&restored, &[]);
    let r = post(&server, "/ns/timestamp/fresh-timestamp").await;
    let v = r.assert_conjure_error(500, "FAILED_PRECONDITION");
    assert_eq!(v["errorName"], "TimeLock:NamespaceFenced");
    assert_eq!(
        get(&server, "/health/ready").await.json()["fencedNamespaces"],
        serde_json::json!(["ns"])
    );
    let r = post(
        &server,
        &format!("/ns/timestamp-management/fast-forward?currentTimestamp={high_water}"),
    )
    .await;
    assert_eq!(r.status, 204);
    let first = post(&server, "/ns/timestamp/fresh-timestamp")
        .await
        .number();
    assert!(
        first > high_water,
        "{first} must exceed {high_water} issued before the restore"
    );
    server.kill9();
    server.restart();
    assert!(
        post(&server, "/ns/timestamp/fresh-timestamp")
            .await
            .number()
            > first,
        "the fence stays lifted"
    );

    // --fast-forward-file at restore time: no fence at all.
    let ff = dir.path().join("ff.timestamp");
    std::fs::write(&ff, format!("{high_water}\n")).unwrap();
    let again = dir.path().join("again");
    ok(&cli(&[
        "backup",
        "restore",
        "under-load",
        "--data-dir",
        s(&again),
        "--backup-dir",
        s(&backups),
        "--yes",
        "--fast-forward-file",
        s(&ff),
    ]));
    let server = TestServer::start(&again, &[]);
    assert!(
        post(&server, "/ns/timestamp/fresh-timestamp")
            .await
            .number()
            > high_water
    );
}

/// `timelock backup create` of a stopped server's data dir, which must succeed; its output.
fn offline_backup(data: &Path, backups: &Path, name: &str) -> String {
    ok(&cli(&[
        "backup",
        "create",
        "--data-dir",
        s(data),
        "--backup-dir",
        s(backups),
        "--name",
        name,
    ]))
}

#[tokio::test]
async fn restore_refuses_what_it_must_and_keeps_old_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let backups = dir.path().join("backups");
    let mut server = TestServer::start(&data, &[]);
    post(&server, "/ns/timestamp/fresh-timestamps?number=100").await;
    server.terminate();
    // Offline backup of a stopped server's data dir.
    offline_backup(&data, &backups, "b1");
    server.restart();
    post(&server, "/newer/timestamp/fresh-timestamp").await;

    // Refuses a data dir a server holds.
    let e = err(&cli(&[
        "backup",
        "restore",
        "b1",
        "--data-dir",
        s(&data),
        "--backup-dir",
        s(&backups),
        "--yes",
    ]));
    assert!(
        e.contains("in use by another timelock process") && e.contains("stop the server"),
        "{e}"
    );
    server.terminate();
    // Refuses without confirmation (no terminal, no --yes); nothing changed.
    let e = err(&cli(&[
        "backup",
        "restore",
        "b1",
        "--data-dir",
        s(&data),
        "--backup-dir",
        s(&backups),
    ]));
    assert!(e.contains("Destructive") && e.contains("--yes"), "{e}");
    // Refuses a backup in a newer format.
    let meta_path = backups.join("b1").join("metadata.json");
    let original = std::fs::read_to_string(&meta_path).unwrap();
    std::fs::write(
        &meta_path,
        original.replace("\"formatVersion\": 1", "\"formatVersion\": 99"),
    )
    .unwrap();
    let e = err(&cli(&[
        "backup",
        "restore",
        "b1",
        "--data-dir",
        s(&data),
        "--backup-dir",
        s(&backups),
        "--yes",
    ]));
    assert!(e.contains("newer than this binary"), "{e}");
    std::fs::write(&meta_path, &original).unwrap();
    server.restart();
    assert_eq!(
        namespaces(&server).await,
        vec!["newer", "ns"],
        "refusals changed nothing"
    );
    server.terminate();

    // A real restore moves the current data aside.
    let out = ok(&cli(&[
        "backup",
        "restore",
        "b1",
        "--data-dir",
        s(&data),
        "--backup-dir",
        s(&backups),
        "--yes",
    ]));
    let aside = out
        .lines()
        .find_map(|l| l.strip_prefix("the previous data was moved to "))
        .expect(&out)
        .to_string();
    assert!(
        Path::new(&aside).join("CURRENT").exists(),
        "old data kept at {aside}"
    );
    assert!(
        out.contains("the bounds of its 2 namespaces were kept as floors"),
        "{out}"
    );
    server.restart();
    assert_eq!(
        namespaces(&server).await,
        vec!["newer", "ns"],
        "restored state, and the replaced data's namespace kept (fenced) as a floor"
    );
    server.terminate();

    // A corrupted file is detected by verify and refused by restore.
    let victim = std::fs::read_dir(backups.join("b1").join("data"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("MANIFEST")
        })
        .unwrap();
    let mut bytes = std::fs::read(&victim).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&victim, bytes).unwrap();
    let e = err(&cli(&[
        "backup",
        "verify",
        "b1",
        "--backup-dir",
        s(&backups),
    ]));
    assert!(e.contains("corrupted") && e.contains("checksum"), "{e}");
    let e = err(&cli(&[
        "backup",
        "restore",
        "b1",
        "--data-dir",
        s(&data),
        "--backup-dir",
        s(&backups),
        "--yes",
    ]));
    assert!(e.contains("corrupted"), "{e}");
    let e = err(&cli(&[
        "backup",
        "show",
        "nope",
        "--backup-dir",
        s(&backups),
    ]));
    assert!(e.contains("no backup named"), "{e}");
}

#[tokio::test]
async fn format_upgrade_takes_a_pre_upgrade_backup_and_a_newer_format_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let backups = dir.path().join("backups");
    let env = [("TIMELOCK__BACKUP__DIR", s(&backups))];
    let mut server = TestServer::start(&data, &env);
    let before = post(&server, "/ns/timestamp/fresh-timestamp")
        .await
        .number();
    server.terminate();
    // Simulate a data dir written by an older release (format 0).
    {
        let db = timelock::storage::rocks::open_existing(&data).unwrap();
        timelock::storage::rocks::write_format_version(&db, 0).unwrap();
    }
    server.restart();
    assert!(
        post(&server, "/ns/timestamp/fresh-timestamp")
            .await
            .number()
            > before
    );
    server.terminate();
    let out = ok(&cli(&["backup", "list", "--backup-dir", s(&backups)]));
    assert!(out.contains("pre-upgrade"), "{out}");
    let pre =
        timelock::operations::backup::latest_pre_upgrade(&backups).expect("pre-upgrade backup");
    assert_eq!(pre.namespaces[0].name, "ns");
    {
        let db = timelock::storage::rocks::open_existing(&data).unwrap();
        assert_eq!(
            timelock::storage::rocks::read_format_version(&db).unwrap(),
            Some(1),
            "upgraded"
        );
        // Now pretend a newer release wrote it: this binary must refuse and name the backup.
        timelock::storage::rocks::write_format_version(&db, 2).unwrap();
    }
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", s(&data)])
        .env("TIMELOCK__BACKUP__DIR", s(&backups))
        .output()
        .unwrap();
    let e = err(&out);
    assert!(
        e.contains("newer than this binary")
            && e.contains(&pre.name)
            && e.contains("timelock backup restore"),
        "{e}"
    );
}

#[tokio::test]
async fn scheduled_backups_are_taken_and_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let backups = dir.path().join("backups");
    let env = [
        ("TIMELOCK__BACKUP__DIR", s(&backups)),
        ("TIMELOCK__BACKUP__SCHEDULE", "1s"),
        ("TIMELOCK__BACKUP__KEEP", "2"),
    ];
    let server = TestServer::start(&data, &env);
    post(&server, "/ns/timestamp/fresh-timestamp").await;
    let on_demand = get(&server, "/admin/backups").await;
    assert_eq!(on_demand.json(), serde_json::json!([]));
    let r = send(client().post(server.url("/admin/backups?name=manual"))).await;
    assert_eq!(r.status, 200, "{r:?}");
    tokio::time::sleep(Duration::from_millis(4_300)).await;
    let all = timelock::operations::backup::list(&backups).unwrap();
    let scheduled: Vec<_> = all
        .iter()
        .filter(|b| b.backup_type == timelock::operations::backup::BackupType::Scheduled)
        .collect();
    assert_eq!(
        scheduled.len(),
        2,
        "keep = 2: {:?}",
        all.iter().map(|b| &b.name).collect::<Vec<_>>()
    );
    assert!(
        all.iter().any(|b| b.name == "manual"),
        "on-demand backups are never pruned"
    );
    assert_eq!(
        get(&server, "/admin/backups/manual").await.json()["type"],
        "on-demand"
    );
    assert!(server.log().contains("scheduled backup taken"));
    // The backup-age alert's gauge follows scheduled backups too.
    let newest = all.iter().map(|b| b.created_at_unix_ms).max().unwrap() as f64 / 1000.0;
    let metrics = get(&server, "/metrics").await.body;
    let gauge: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("timelock_last_backup_timestamp_seconds "))
        .expect("gauge exported")
        .parse()
        .unwrap();
    assert!(gauge >= newest, "{gauge} < newest backup {newest}");
    assert!(metrics.contains("timelock_backup_schedule_seconds 1\n"));
}

fn restore(backups: &Path, name: &str, data: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "backup",
        "restore",
        name,
        "--data-dir",
        s(data),
        "--backup-dir",
        s(backups),
        "--yes",
    ];
    args.extend_from_slice(extra);
    cli(&args)
}

/// Issue 20, point 1: a namespace created after the backup (`late`, up to 130) must not start
/// again at 1 after a restore: fenced on first use (after restarts too) when no timestamp is
/// given, past the floor when one is, and past the replaced data dir's bound when it can be read.
#[tokio::test]
async fn restore_never_lets_a_namespace_absent_from_the_backup_go_back() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let backups = dir.path().join("backups");
    let env = [("TIMELOCK__BACKUP__DIR", s(&backups))];
    let mut server = TestServer::start(&data, &env);
    post(&server, "/early/timestamp/fresh-timestamp").await;
    let r = send(client().post(server.url("/admin/backups?name=before-late"))).await;
    assert_eq!(r.status, 200, "{r:?}");
    let late = post(&server, "/late/timestamp/fresh-timestamps?number=130")
        .await
        .json();
    assert_eq!(late["upperBound"], 130, "{late}");
    server.terminate();

    // The disk is lost: restore into an empty data dir, fenced.
    let lost = dir.path().join("lost");
    let out = ok(&restore(&backups, "before-late", &lost, &[]));
    assert!(out.contains("first used after the restore"), "{out}");
    let mut restored = TestServer::start(&lost, &[]);
    for _ in 0..2 {
        let r = post(&restored, "/late/timestamp/fresh-timestamp").await;
        assert_eq!(
            r.assert_conjure_error(500, "FAILED_PRECONDITION")["errorName"],
            "TimeLock:NamespaceFenced",
            "late must be fenced, not start again at 1"
        );
        restored.kill9();
        restored.restart();
    }
    let r = post(
        &restored,
        "/late/timestamp-management/fast-forward?currentTimestamp=130",
    )
    .await;
    assert_eq!(r.status, 204);
    assert!(
        post(&restored, "/late/timestamp/fresh-timestamp")
            .await
            .number()
            > 130
    );
    restored.terminate();

    // With --fast-forward-to T: every namespace, including ones first used later, starts past T.
    let floored = dir.path().join("floored");
    ok(&restore(
        &backups,
        "before-late",
        &floored,
        &["--fast-forward-to", "500"],
    ));
    let mut restored = TestServer::start(&floored, &[]);
    assert!(
        post(&restored, "/late/timestamp/fresh-timestamp")
            .await
            .number()
            > 500
    );
    restored.kill9();
    restored.restart();
    assert!(
        post(&restored, "/later/timestamp/fresh-timestamp")
            .await
            .number()
            > 500
    );
    restored.terminate();

    // In place, with a floor below what the replaced data knew: its bound is kept.
    let out = ok(&restore(
        &backups,
        "before-late",
        &data,
        &["--fast-forward-to", "5"],
    ));
    assert!(out.contains("kept as floors"), "{out}");
    server.restart();
    assert!(
        post(&server, "/late/timestamp/fresh-timestamp")
            .await
            .number()
            > 130
    );
}

/// Issue 20, point 2: `--fast-forward-to` 0 or negative (or a file holding one) is refused, and
/// nothing is moved: the data dir, its namespaces and its bounds are as they were.
#[tokio::test]
async fn restore_refuses_a_floor_that_is_not_a_positive_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let backups = dir.path().join("backups");
    let env = [("TIMELOCK__BACKUP__DIR", s(&backups))];
    let mut server = TestServer::start(&data, &env);
    post(&server, "/ns/timestamp/fresh-timestamp").await;
    let r = send(client().post(server.url("/admin/backups?name=b"))).await;
    assert_eq!(r.status, 200, "{r:?}");
    let last = post(&server, "/ns/timestamp/fresh-timestamps?number=1000")
        .await
        .json()["upperBound"]
        .as_i64()
        .unwrap();
    server.terminate();
    let before = records(&data);
    let file = dir.path().join("ff");
    let mut refusals: Vec<Vec<String>> = ["0", "-5", "-9223372036854775808", "9223372036854775807"]
        .iter()
        .map(|t| vec!["--fast-forward-to".to_string(), t.to_string()])
        .collect();
    for contents in ["-5\n", "0\n", "5 apples\n", ""] {
        let f = dir.path().join(format!("ff{}", refusals.len()));
        std::fs::write(&f, contents).unwrap();
        refusals.push(vec![
            "--fast-forward-file".into(),
            f.to_str().unwrap().into(),
        ]);
    }
    refusals.push(vec![
        "--fast-forward-file".into(),
        s(&file).to_string(), // missing
    ]);
    for extra in &refusals {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let e = err(&restore(&backups, "b", &data, &extra));
        assert!(
            e.contains("not a timestamp")
                || e.contains("not positive")
                || e.contains("too close")
                || e.contains("cannot read timestamp file")
                || e.contains("does not hold"),
            "{extra:?}: {e}"
        );
    }
    let entries: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("before-restore") || n.contains("restoring"))
        .collect();
    assert!(entries.is_empty(), "nothing moved aside: {entries:?}");
    assert_eq!(records(&data), before, "the bounds are untouched");
    server.restart();
    assert!(
        post(&server, "/ns/timestamp/fresh-timestamp")
            .await
            .number()
            > last
    );
}

/// Every namespace record of a stopped server's data dir.
fn records(data: &Path) -> Vec<(String, timelock::storage::NamespaceRecord)> {
    let db = timelock::storage::rocks::open_read_only(data).unwrap();
    timelock::storage::rocks::read_records(&db).unwrap()
}

/// Issue 20, point 9: two restores within one second both succeed, each moving the data aside
/// under its own name, and an error is printed once.
#[tokio::test]
async fn two_restores_within_a_second_both_keep_the_old_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let backups = dir.path().join("backups");
    let mut server = TestServer::start(&data, &[]);
    post(&server, "/ns/timestamp/fresh-timestamp").await;
    server.terminate();
    offline_backup(&data, &backups, "b");
    let mut asides = Vec::new();
    for _ in 0..3 {
        let out = ok(&restore(&backups, "b", &data, &["--fast-forward-to", "10"]));
        asides.push(
            out.lines()
                .find_map(|l| l.strip_prefix("the previous data was moved to "))
                .expect(&out)
                .to_string(),
        );
    }
    asides.dedup();
    assert_eq!(asides.len(), 3, "{asides:?}");
    for aside in &asides {
        assert!(Path::new(aside).join("CURRENT").exists(), "{aside}");
    }
    // An I/O error is printed once, with what to do.
    let file_in_the_way = dir.path().join("not-a-dir");
    std::fs::write(&file_in_the_way, "x").unwrap();
    let e = err(&restore(
        &backups,
        "b",
        &file_in_the_way.join("data"),
        &["--fast-forward-to", "10"],
    ));
    let first = e.lines().last().unwrap_or_default();
    let words: Vec<&str> = first.split(": ").collect();
    let mut deduped = words.clone();
    deduped.dedup();
    assert_eq!(words, deduped, "a cause printed twice: {e}");
}

/// Issue 20, point 5: a pre-upgrade backup describes the data it holds (the old format, and
/// `unknown` for a server version the data does not record), and the refusal to start on a
/// newer format names both formats, the restore command and the fence.
#[tokio::test]
async fn pre_upgrade_backup_metadata_describes_the_old_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let backups = dir.path().join("backups");
    let env = [("TIMELOCK__BACKUP__DIR", s(&backups))];
    let mut server = TestServer::start(&data, &env);
    post(&server, "/ns/timestamp/fresh-timestamp").await;
    server.terminate();
    // Data as an older release left it: format 0, no server version recorded.
    {
        let db = rocksdb::DB::open_default(&data).unwrap();
        db.put(b"meta/format_version", 0u32.to_be_bytes()).unwrap();
        db.delete(b"meta/server_version").unwrap();
    }
    server.restart();
    post(&server, "/ns/timestamp/fresh-timestamp").await;
    server.terminate();
    let pre =
        timelock::operations::backup::latest_pre_upgrade(&backups).expect("pre-upgrade backup");
    assert_eq!(pre.format_version, 0, "{pre:?}");
    assert_eq!(pre.server_version, "unknown", "{pre:?}");
    let shown = ok(&cli(&[
        "backup",
        "show",
        &pre.name,
        "--backup-dir",
        s(&backups),
    ]));
    assert!(
        shown.contains("formatVersion: 0") && shown.contains("serverVersion: unknown"),
        "{shown}"
    );
    // An on-demand backup of current data names this server and format 1.
    let out = offline_backup(&data, &backups, "now");
    assert!(
        out.contains("formatVersion: 1")
            && out.contains(&format!("serverVersion: {}", timelock::VERSION)),
        "{out}"
    );
    {
        let db = rocksdb::DB::open_default(&data).unwrap();
        db.put(b"meta/format_version", 2u32.to_be_bytes()).unwrap();
    }
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", s(&data)])
        .env("TIMELOCK__BACKUP__DIR", s(&backups))
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stdout).to_string() + &err(&out);
    let command = format!(
        "timelock backup restore {} --backup-dir {} --data-dir {}",
        pre.name,
        s(&backups),
        s(&data)
    );
    assert!(
        e.contains("format 2")
            && e.contains("this binary's 1")
            && e.contains("format 0")
            && e.contains(&command)
            && e.contains("FENCED"),
        "{e}"
    );
}
