//! Migration between two servers on loopback, as one command: forward, reverse, reverse again;
//! a crash of the tool between steps and a resume; invalidated sides refuse; a client following
//! the migration never sees a timestamp go backwards; from-file and to-file; rename.

use crate::common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;
use serde_json::Value;

fn migrate(state_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command
        .arg("migrate")
        .args(args)
        .arg("--state-dir")
        .arg(state_dir)
        .stdin(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("run timelock migrate")
}

fn state(o: &Output) -> Value {
    assert!(
        o.status.success(),
        "migrate failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("state JSON")
}

async fn fresh(server: &TestServer, ns: &str) -> i64 {
    post(server, &format!("/{ns}/timestamp/fresh-timestamp"))
        .await
        .number()
}

fn assert_refuses_invalidated(r: Reply) {
    let v = r.assert_conjure_error(500, "FAILED_PRECONDITION");
    assert_eq!(v["errorName"], "TimeLock:NamespaceInvalidated");
}

#[tokio::test]
async fn forward_reverse_and_reverse_again() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestServer::start(&dir.path().join("a").join("data"), &[]);
    let b = TestServer::start(&dir.path().join("b").join("data"), &[]);
    let states = dir.path().join("migrations");
    // A client's view: every timestamp it sees must exceed the previous one, whichever side.
    let mut seen = 0;
    let mut observe = |ts: i64| {
        assert!(ts > seen, "went backwards: {ts} after {seen}");
        seen = ts;
    };
    post(
        &a,
        "/app/timestamp-management/fast-forward?currentTimestamp=7000000",
    )
    .await;
    for _ in 0..5 {
        observe(fresh(&a, "app").await);
    }
    post(&b, "/app/timestamp/fresh-timestamps?number=100").await; // B has its own, lower history

    let m = state(&migrate(
        &states,
        &[
            "start",
            "--from",
            &a.base(),
            "--to",
            &b.base(),
            "--namespace",
            "app",
            "--reversible",
        ],
        &[],
    ));
    assert_eq!(m["state"], "COMMITTED");
    assert_eq!(m["directionMapping"]["source"]["url"], a.base());
    assert_eq!(m["directionMapping"]["destinationWritable"], true);
    assert_eq!(m["namespaces"][0]["step"], "verified");
    let id = m["id"].as_str().unwrap().to_string();
    // Both servers show where the migration stands on their admin API.
    for server in [&a, &b] {
        let view = get(server, &format!("/admin/migrations/{id}")).await.json();
        assert_eq!(view, m, "admin view matches the tool's state");
        assert_eq!(
            get(server, "/admin/migrations").await.json()[0]["id"],
            id.as_str()
        );
    }
    assert_refuses_invalidated(post(&a, "/app/timestamp/fresh-timestamp").await);
    for _ in 0..5 {
        observe(fresh(&b, "app").await);
    }

    let m = state(&migrate(&states, &["reverse", &id], &[]));
    assert_eq!(m["state"], "COMMITTED");
    assert_eq!(m["reversals"], 1);
    assert_eq!(
        m["directionMapping"]["destination"]["url"],
        a.base(),
        "swapped"
    );
    assert_refuses_invalidated(post(&b, "/app/timestamp/fresh-timestamp").await);
    for _ in 0..5 {
        observe(fresh(&a, "app").await);
    }

    let m = state(&migrate(&states, &["reverse", &id], &[]));
    assert_eq!(m["reversals"], 2);
    assert_eq!(
        m["directionMapping"]["destination"]["url"],
        b.base(),
        "back where it started"
    );
    assert_refuses_invalidated(post(&a, "/app/timestamp/fresh-timestamp").await);
    observe(fresh(&b, "app").await);
    let status = state(&migrate(&states, &["status", &id], &[]));
    assert_eq!(status, m);
    assert!(
        status["log"].as_array().unwrap().len() > 10,
        "every step recorded"
    );
}

#[tokio::test]
async fn a_crashed_migration_resumes_without_repeating_steps() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestServer::start(&dir.path().join("a").join("data"), &[]);
    let b = TestServer::start(&dir.path().join("b").join("data"), &[]);
    let states = dir.path().join("migrations");
    let high = post(&a, "/app/timestamp/fresh-timestamps?number=50")
        .await
        .json()["upperBound"]
        .as_i64()
        .unwrap();
    let crashed = migrate(
        &states,
        &[
            "start",
            "--from",
            &a.base(),
            "--to",
            &b.base(),
            "--namespace",
            "app",
            "--namespace",
            "other",
        ],
        &[("TIMELOCK_MIGRATE_CRASH_AFTER", "source-blocked")],
    );
    assert_eq!(
        crashed.status.code(),
        Some(70),
        "{}",
        String::from_utf8_lossy(&crashed.stderr)
    );
    let id = std::fs::read_dir(&states)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .to_string();
    let m = state(&migrate(&states, &["status", &id], &[]));
    assert_eq!(m["state"], "RUNNING");
    assert_eq!(m["namespaces"][0]["step"], "source-blocked");
    let bound = m["namespaces"][0]["sourceBound"].as_i64().unwrap();
    assert!(bound >= high);
    assert_refuses_invalidated(post(&a, "/app/timestamp/fresh-timestamp").await);

    let m = state(&migrate(&states, &["resume", &id], &[]));
    assert_eq!(m["state"], "COMMITTED");
    assert_eq!(
        m["namespaces"][0]["sourceBound"], bound,
        "the recorded bound is reused, not re-taken"
    );
    assert_eq!(m["namespaces"][1]["step"], "verified");
    assert!(fresh(&b, "app").await > bound);
    assert!(fresh(&b, "other").await > 0);
    let log = m["log"].as_array().unwrap();
    let blocked = log
        .iter()
        .filter(|l| l.as_str().unwrap().starts_with("app: source blocked"))
        .count();
    assert_eq!(blocked, 1, "the source was blocked once: {log:?}");
    // Not reversible: reverse is refused.
    let o = migrate(&states, &["reverse", &id], &[]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--reversible"));
}

#[tokio::test]
async fn file_sides_and_rename() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestServer::start(&dir.path().join("a").join("data"), &[]);
    let states = dir.path().join("migrations");
    // From the embedded service's side: the operator wrote the KVS bound to a file.
    let kvs = dir.path().join("kvs-bound");
    std::fs::write(&kvs, "123456789\n").unwrap();
    let from_file = format!("file:{}", kvs.display());
    let o = migrate(
        &states,
        &[
            "start",
            "--from",
            &from_file,
            "--to",
            &a.base(),
            "--namespace",
            "svc",
        ],
        &[],
    );
    assert!(
        !o.status.success(),
        "a file source needs --source-is-offline"
    );
    let m = state(&migrate(
        &states,
        &[
            "start",
            "--from",
            &from_file,
            "--to",
            &a.base(),
            "--namespace",
            "svc",
            "--source-is-offline",
        ],
        &[],
    ));
    assert_eq!(m["state"], "COMMITTED");
    assert!(fresh(&a, "svc").await > 123456789);

    // To a file: the reverse-migration seed's restore timestamp, as one command.
    let issued = fresh(&a, "svc").await;
    let out = dir.path().join("restore.timestamp");
    let to_file = format!("file:{}", out.display());
    state(&migrate(
        &states,
        &[
            "start",
            "--from",
            &a.base(),
            "--to",
            &to_file,
            "--namespace",
            "svc",
        ],
        &[],
    ));
    let written: i64 = std::fs::read_to_string(&out)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(written >= issued, "{written} must cover {issued}");
    assert_refuses_invalidated(post(&a, "/svc/timestamp/fresh-timestamp").await);

    // Rename within one server.
    let old = fresh(&a, "old").await;
    state(&migrate(
        &states,
        &[
            "start",
            "--from",
            &a.base(),
            "--to",
            &a.base(),
            "--namespace",
            "old",
            "--to-namespace",
            "new",
        ],
        &[],
    ));
    assert!(fresh(&a, "new").await > old);
    assert_refuses_invalidated(post(&a, "/old/timestamp/fresh-timestamp").await);
    // Bad input: invalid names, unreachable servers.
    let o = migrate(
        &states,
        &[
            "start",
            "--from",
            &a.base(),
            "--to",
            "http://127.0.0.1:1",
            "--namespace",
            "x",
        ],
        &[],
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cannot reach"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = migrate(
        &states,
        &[
            "start",
            "--from",
            &a.base(),
            "--to",
            &a.base(),
            "--namespace",
            "bad name",
        ],
        &[],
    );
    assert!(!o.status.success());
}

/// Issue 20, point 4: one namespace of one service as both ends (however the URL is spelled) is
/// refused before the first side effect: the namespace keeps serving, nothing is recorded.
#[tokio::test]
async fn the_same_service_as_both_ends_is_refused_before_anything() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestServer::start(&dir.path().join("a").join("data"), &[]);
    let states = dir.path().join("migrations");
    let mut last = fresh(&a, "keep").await;
    let base = a.base();
    let spellings = [
        (base.clone(), base.clone()),
        (base.clone(), format!("{base}/")),
        (base.clone(), format!("{base}/timelock/api")),
        (
            format!("{base}/timelock/api"),
            format!("{base}/timelock/api/"),
        ),
    ];
    for (from, to) in &spellings {
        for extra in [&[][..], &["--reversible"][..]] {
            let mut args = vec!["start", "--from", from, "--to", to, "--namespace", "keep"];
            args.extend_from_slice(extra);
            let o = migrate(&states, &args, &[]);
            assert!(!o.status.success(), "{args:?}");
            let e = String::from_utf8_lossy(&o.stderr);
            assert!(
                e.contains("same service") && e.contains("--to-namespace"),
                "{e}"
            );
            let next = fresh(&a, "keep").await;
            assert_eq!(next, last + 1, "keep still serves, unmoved");
            last = next;
        }
    }
    // The same file on both sides.
    let file = dir.path().join("ts");
    std::fs::write(&file, "77\n").unwrap();
    let side = format!("file:{}", file.display());
    let o = migrate(
        &states,
        &[
            "start",
            "--from",
            &side,
            "--to",
            &side,
            "--namespace",
            "keep",
            "--source-is-offline",
        ],
        &[],
    );
    assert!(!o.status.success());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "77\n");
    assert!(!states.exists(), "no migration was recorded");
    // Renaming within one server is a real migration and is allowed.
    let m = state(&migrate(
        &states,
        &[
            "start",
            "--from",
            &base,
            "--to",
            &base,
            "--namespace",
            "keep",
            "--to-namespace",
            "kept",
        ],
        &[],
    ));
    assert_eq!(m["state"], "COMMITTED");
    assert!(fresh(&a, "kept").await > last);
}

/// Issue 20, point 9: after a crash in the middle of `reverse`, `migrate status` says the
/// blocked source is not writable.
#[tokio::test]
async fn a_crash_mid_reverse_shows_the_blocked_source_as_not_writable() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestServer::start(&dir.path().join("a").join("data"), &[]);
    let b = TestServer::start(&dir.path().join("b").join("data"), &[]);
    let states = dir.path().join("migrations");
    fresh(&a, "app").await;
    let m = state(&migrate(
        &states,
        &[
            "start",
            "--from",
            &a.base(),
            "--to",
            &b.base(),
            "--namespace",
            "app",
            "--reversible",
        ],
        &[],
    ));
    let id = m["id"].as_str().unwrap().to_string();
    let crashed = migrate(
        &states,
        &["reverse", &id],
        &[("TIMELOCK_MIGRATE_CRASH_AFTER", "source-blocked")],
    );
    assert_eq!(crashed.status.code(), Some(70));
    let m = state(&migrate(&states, &["status", &id], &[]));
    assert_eq!(m["state"], "REVERSING");
    assert_eq!(m["namespaces"][0]["step"], "source-blocked");
    assert_eq!(m["directionMapping"]["source"]["url"], b.base());
    assert_refuses_invalidated(post(&b, "/app/timestamp/fresh-timestamp").await);
    assert_eq!(
        m["directionMapping"]["sourceWritable"], false,
        "the source is blocked: {m}"
    );
    assert_eq!(m["directionMapping"]["destinationWritable"], false);
    let m = state(&migrate(&states, &["resume", &id], &[]));
    assert_eq!(m["state"], "COMMITTED");
    assert_eq!(m["directionMapping"]["destinationWritable"], true);
    assert!(fresh(&a, "app").await > 0);
}
