//! The status view end to end: `GET /admin/status` after real traffic (every namespace state,
//! last timestamp, bound, locks, backups, migrations), the page at `/`, the admin credential in
//! front of both, and `timelock status` (table, `--json`, several servers, `--watch`).

use crate::common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use serde_json::{json, Value};

fn cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("TIMELOCK_TOKEN")
        .env_remove("TIMELOCK_TOKEN_FILE");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("run timelock")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn namespace<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["namespaces"]
        .as_array()
        .expect("namespaces listed")
        .iter()
        .find(|n| n["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {status:#}"))
}

fn migration(id: &str, state: &str) -> String {
    json!({
        "id": id,
        "state": state,
        "reversible": true,
        "sourceIsOffline": false,
        "directionMapping": {
            "source": {"kind": "server", "url": "http://old.example:8421"},
            "destination": {"kind": "server", "url": "http://new.example:8421"},
            "sourceWritable": false,
            "destinationWritable": false
        },
        "namespaces": [{
            "sourceNamespace": "alpha",
            "destinationNamespace": "alpha2",
            "step": "source-blocked",
            "sourceBound": 5,
            "verifiedTimestamp": null
        }],
        "log": [],
        "reversals": 0
    })
    .to_string()
}

async fn put_json(server: &TestServer, path: &str, body: String) -> Reply {
    send(
        client()
            .put(server.url(path))
            .header("content-type", "application/json")
            .body(body),
    )
    .await
}

#[tokio::test]
async fn admin_status_and_page_show_every_state_after_traffic() {
    let (_dir, data) = temp_data_dir();
    // Five bound-store writes succeed (alpha: created + reserved; beta: created + invalidated;
    // doomed: created), the sixth (doomed's first reservation) fails: doomed fail-stops.
    let server = TestServer::start(&data, &[("TIMELOCK__FAULTS__FAIL_BOUND_WRITES_AFTER", "5")]);
    let r = post(&server, "/alpha/timestamp/fresh-timestamps?number=3").await;
    assert_eq!(r.status, 200, "{r:?}");
    let upper = r.json()["upperBound"].as_i64().unwrap();
    let lock = post_json(
        &server,
        "/tl/l/alpha",
        &json!({
            "requestId": uuid::Uuid::new_v4(),
            "lockDescriptors": [
                base64::engine::general_purpose::STANDARD.encode("row-1"),
                base64::engine::general_purpose::STANDARD.encode("row-2"),
            ],
            "acquireTimeoutMs": 1000,
            "clientDescription": "status test"
        })
        .to_string(),
    )
    .await;
    assert_eq!(lock.status, 200, "{lock:?}");
    assert_eq!(
        post(&server, "/beta/timestamp-management/invalidate")
            .await
            .status,
        200
    );
    let failed = post(&server, "/doomed/timestamp/fresh-timestamp").await;
    assert_eq!(failed.status, 503, "{failed:?}");
    for (id, state) in [("m-running", "RUNNING"), ("m-done", "COMMITTED")] {
        let r = put_json(
            &server,
            &format!("/admin/migrations/{id}"),
            migration(id, state),
        )
        .await;
        assert_eq!(r.status, 204, "{r:?}");
    }

    let r = get(&server, "/admin/status").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
    let s = r.json();
    assert_eq!(s["node"]["role"], "single");
    assert_eq!(s["node"]["serves"], true);
    assert_eq!(s["node"]["leaderUrl"], Value::Null);
    let names: Vec<&str> = s["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "beta", "doomed"]);
    let alpha = namespace(&s, "alpha");
    assert_eq!(alpha["state"], "serving");
    assert_eq!(alpha["lastIssued"], upper);
    assert!(alpha["durableBound"].as_i64().unwrap() >= upper, "{alpha}");
    assert_eq!(alpha["locksHeld"], 2);
    assert_eq!(alpha["lockWaiters"], 0);
    assert_eq!(namespace(&s, "beta")["state"], "invalidated");
    let doomed = namespace(&s, "doomed");
    assert_eq!(doomed["state"], "fail-stopped");
    assert!(
        doomed["failure"]
            .as_str()
            .is_some_and(|f| f.contains("injected I/O error")),
        "{doomed}"
    );
    assert_eq!(doomed["lastIssued"], 0);
    assert_eq!(s["lastBackup"], Value::Null);
    let migrations = s["migrationsInFlight"].as_array().unwrap();
    assert_eq!(migrations.len(), 1, "only the running one: {s:#}");
    assert_eq!(migrations[0]["id"], "m-running");
    assert_eq!(migrations[0]["source"], "http://old.example:8421");
    assert_eq!(migrations[0]["destination"], "http://new.example:8421");

    // An online backup appears as the last backup, with its age.
    let b = post(&server, "/admin/backups?name=first").await;
    assert_eq!(b.status, 200, "{b:?}");
    let s = get(&server, "/admin/status").await.json();
    assert_eq!(s["lastBackup"]["name"], "first");
    assert_eq!(s["lastBackup"]["type"], "on-demand");
    assert_eq!(s["lastBackup"]["count"], 1);
    assert!(
        s["lastBackup"]["ageSeconds"].as_u64().unwrap() < 60,
        "{s:#}"
    );

    // The page shows the same, as HTML; HEAD answers too; nothing else moved.
    let page = get(&server, "/").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.content_type.as_deref(),
        Some("text/html; charset=utf-8")
    );
    for text in [
        "<td class=\"name\">alpha</td><td class=\"state serving\">serving</td>",
        "<td class=\"name\">beta</td><td class=\"state invalidated\">invalidated</td>",
        "<td class=\"name\">doomed</td><td class=\"state fail-stopped\">fail-stopped: injected I/O error",
        "http-equiv=\"refresh\"",
        "last backup <b>first</b>",
        "m-running",
    ] {
        assert!(page.body.contains(text), "{text:?} missing:\n{}", page.body);
    }
    assert!(!page.body.contains("<script"), "{}", page.body);
    let head = send(client().head(server.url("/"))).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(post(&server, "/").await.status, 405);
    assert_eq!(get(&server, "/timelock/api/").await.status, 404);
    assert_eq!(get(&server, "/timelock/api/admin/status").await.status, 404);
}

const ADMIN: &str = "admin-4a1f9c2e7b3d5e68";
const ALPHA: &str = "alpha-0c9d8e7f6a5b4c3d";

fn start_guarded(dir: &Path) -> TestServer {
    let tokens = dir.join("namespace-tokens");
    std::fs::write(&tokens, format!("alpha {ALPHA}\n")).unwrap();
    TestServer::start(
        &dir.join("data"),
        &[
            ("TIMELOCK__AUTH__ADMIN_TOKEN", "env:TEST_TIMELOCK_ADMIN"),
            ("TEST_TIMELOCK_ADMIN", ADMIN),
            (
                "TIMELOCK__AUTH__NAMESPACE_TOKENS_FILE",
                tokens.to_str().unwrap(),
            ),
        ],
    )
}

#[tokio::test]
async fn status_needs_the_admin_credential_when_one_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_guarded(dir.path());
    let alpha = send(
        client()
            .post(server.url("/alpha/timestamp/fresh-timestamp"))
            .bearer_auth(ALPHA),
    )
    .await;
    assert_eq!(alpha.status, 200, "{alpha:?}");
    for path in ["/admin/status", "/"] {
        send(client().get(server.url(path)))
            .await
            .assert_conjure_error(401, "UNAUTHORIZED");
        send(client().get(server.url(path)).bearer_auth("wrong"))
            .await
            .assert_conjure_error(401, "UNAUTHORIZED");
        // A namespace's token is known but is not the admin credential.
        send(client().get(server.url(path)).bearer_auth(ALPHA))
            .await
            .assert_conjure_error(403, "PERMISSION_DENIED");
        let ok = send(client().get(server.url(path)).bearer_auth(ADMIN)).await;
        assert_eq!(ok.status, 200, "{path}: {ok:?}");
        assert!(ok.body.contains("alpha"), "{path}: {ok:?}");
    }

    // The CLI says what is missing, and exits non-zero; with the admin token it shows the table.
    let base = server.base();
    let o = cli(&["status", "--server", &base], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("HTTP 401"), "{}", stderr(&o));
    assert!(stderr(&o).contains("TIMELOCK_TOKEN"), "{}", stderr(&o));
    assert!(stdout(&o).is_empty());
    let o = cli(&["status", "--server", &base], &[("TIMELOCK_TOKEN", ALPHA)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("HTTP 403"), "{}", stderr(&o));
    let o = cli(&["status", "--server", &base], &[("TIMELOCK_TOKEN", ADMIN)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("alpha"), "{}", stdout(&o));
}

/// A loopback port nothing listens on (bound, then released).
fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

#[tokio::test]
async fn cli_table_json_several_servers_and_watch() {
    // A server restored from a backup: its namespaces are fenced until fast-forwarded.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let backups = dir.path().join("var/backups");
    let mut first = TestServer::start(&data, &[]);
    post(&first, "/fenced-ns/timestamp/fresh-timestamps?number=7")
        .await
        .json();
    first.terminate();
    let b = |args: &[&str]| {
        let o = cli(args, &[]);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    };
    let backup_dir = backups.to_str().unwrap();
    b(&[
        "backup",
        "create",
        "--data-dir",
        data.to_str().unwrap(),
        "--backup-dir",
        backup_dir,
        "--name",
        "before",
    ]);
    let restored = dir.path().join("restored");
    b(&[
        "backup",
        "restore",
        "before",
        "--data-dir",
        restored.to_str().unwrap(),
        "--backup-dir",
        backup_dir,
        "--yes",
    ]);
    // Same work dir: its var/backups holds the backup.
    let server = TestServer::start(&restored, &[]);
    assert_eq!(
        post(
            &server,
            "/served/timestamp-management/fast-forward?currentTimestamp=41"
        )
        .await
        .status,
        204
    );
    post(&server, "/served/timestamp/fresh-timestamp")
        .await
        .number();
    let base = server.base();

    let o = cli(&["status", "--server", &base], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = stdout(&o);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("SERVER") && lines[0].contains("ROLE"),
        "{table}"
    );
    assert!(
        lines[1].starts_with(&base) && lines[1].contains("single"),
        "{table}"
    );
    assert!(
        table.contains(&format!("namespaces (from {base}):")),
        "{table}"
    );
    let row = |name: &str| -> Vec<String> {
        lines
            .iter()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row for {name}:\n{table}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    // NAMESPACE STATE LAST-ISSUED DURABLE-BOUND LOCKS WAITERS V1
    let fenced = row("fenced-ns");
    assert_eq!(fenced[1], "fenced", "{table}");
    let served = row("served");
    assert_eq!(served[1], "serving", "{table}");
    assert_eq!(served[2], "42", "{table}");
    assert!(table.contains("last backup: before (on-demand)"), "{table}");
    assert!(table.contains("migrations in flight: none"), "{table}");

    // --json: the same, with stable keys; the node's whole snapshot.
    let o = cli(&["status", "--server", &base, "--json"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(report["namespacesFrom"], base);
    let node = &report["nodes"][0];
    assert_eq!(node["server"], base);
    assert_eq!(node["error"], Value::Null);
    assert_eq!(namespace(&node["status"], "fenced-ns")["state"], "fenced");
    assert_eq!(namespace(&node["status"], "served")["lastIssued"], 42);
    assert_eq!(node["status"]["lastBackup"]["name"], "before");

    // With the client prefix, the admin route is found at the root; the same URL twice is one
    // node.
    let o = cli(
        &[
            "status",
            "--server",
            &format!("{base}/timelock/api"),
            "--server",
            &format!("{base}/timelock/api/"),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o).lines().filter(|l| l.starts_with(&base)).count(),
        1,
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("fenced-ns"), "{}", stdout(&o));

    // Several servers, one unreachable: the table still shows what answered, names the node
    // that did not and why, and the exit code says something is wrong.
    let down = closed_port_url();
    let o = cli(&["status", "--server", &base, "--server", &down], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let table = stdout(&o);
    let down_row = table
        .lines()
        .find(|l| l.starts_with(&down))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(down_row.contains("ERROR"), "{table}");
    assert!(down_row.contains("cannot reach"), "{table}");
    assert!(table.contains("fenced-ns"), "{table}");
    assert!(stderr(&o).contains("1 of 2 servers"), "{}", stderr(&o));
    // Only unreachable servers: an error, no table.
    let o = cli(&["status", "--server", &down], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).is_empty());
    assert!(stderr(&o).contains("cannot reach"), "{}", stderr(&o));
    // Bad URLs are refused before anything is sent.
    for bad in ["localhost:8421", "ftp://h", "http://h:1?x=1", ""] {
        let o = cli(&["status", "--server", bad], &[]);
        assert_eq!(o.status.code(), Some(1), "{bad:?}");
        assert!(
            stderr(&o).contains("URL") || stderr(&o).contains("empty"),
            "{bad:?}: {}",
            stderr(&o)
        );
    }
    let o = cli(&["status", "--server", &base, "--watch", "0"], &[]);
    assert_eq!(o.status.code(), Some(2), "clap's usage error");

    // --watch redraws until stopped: two refreshes, then it is killed.
    let out_path = dir.path().join("watch.out");
    let mut child = Command::new(BIN)
        .args(["status", "--server", &base, "--watch", "1"])
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = std::fs::read_to_string(&out_path).unwrap_or_default();
        if text.matches("timelock status at ").count() >= 2 || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(text.matches("timelock status at ").count() >= 2, "{text}");
    assert!(text.matches("fenced-ns").count() >= 2, "{text}");
    assert!(
        !text.contains('\x1b'),
        "no screen control codes into a file"
    );
}
