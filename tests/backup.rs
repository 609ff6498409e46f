//! Backup and restore, as an operator runs them: online backup while clients issue timestamps,
//! restore into a fresh data dir (fenced until fast-forwarded; never at or below anything issued
//! before, with the high-water mark kept here, outside the server), the restore's refusals, and
//! the pre-upgrade backup of a format upgrade.

mod common;

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

#[tokio::test]
async fn restore_refuses_what_it_must_and_keeps_old_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let backups = dir.path().join("backups");
    let mut server = TestServer::start(&data, &[]);
    post(&server, "/ns/timestamp/fresh-timestamps?number=100").await;
    server.terminate();
    // Offline backup of a stopped server's data dir.
    ok(&cli(&[
        "backup",
        "create",
        "--data-dir",
        s(&data),
        "--backup-dir",
        s(&backups),
        "--name",
        "b1",
    ]));
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
    let pre = timelock::backup::latest_pre_upgrade(&backups).expect("pre-upgrade backup");
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
    let all = timelock::backup::list(&backups).unwrap();
    let scheduled: Vec<_> = all
        .iter()
        .filter(|b| b.backup_type == timelock::backup::BackupType::Scheduled)
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
}
