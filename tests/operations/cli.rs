//! The operator CLI against a real server: the backup/restore seed's `timestamp fetch --file` and
//! `timestamp fast-forward --file`, invalidate/revalidate, and clear failures with non-zero exit.

use crate::common;

use std::process::{Command, Output};

use common::*;

fn cli(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run timelock")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[tokio::test]
async fn backup_and_restore_procedure_with_files() {
    let (dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[]);
    let base = server.base();
    post(
        &server,
        "/atlas/timestamp-management/fast-forward?currentTimestamp=1000",
    )
    .await;

    // Backup timestamp and fast-forward timestamp, written to files.
    let backup_file = dir.path().join("backup.timestamp");
    let o = cli(&[
        "timestamp",
        "fetch",
        "--server",
        &base,
        "--namespace",
        "atlas",
        "--file",
        backup_file.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let backup_ts: i64 = std::fs::read_to_string(&backup_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(backup_ts, 1001);
    let o = cli(&[
        "timestamp",
        "fetch",
        "--server",
        &base,
        "--namespace",
        "atlas",
    ]);
    assert!(o.status.success());
    let printed: i64 = stdout(&o).parse().unwrap();
    assert_eq!(printed, 1002);

    // Restore onto a fresh server: fast-forward from the file; the next timestamp is above it.
    let (_dir2, data2) = temp_data_dir();
    let restored = TestServer::start(&data2, &[]);
    let ff_file = dir.path().join("fast-forward.timestamp");
    std::fs::write(&ff_file, "5000000\n").unwrap();
    let o = cli(&[
        "timestamp",
        "fast-forward",
        "--server",
        &restored.base(),
        "--namespace",
        "atlas",
        "--file",
        ff_file.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        post(&restored, "/atlas/timestamp/fresh-timestamp")
            .await
            .number(),
        5_000_001
    );
    let o = cli(&[
        "timestamp",
        "fast-forward",
        "--server",
        &restored.base(),
        "--namespace",
        "atlas",
        "--timestamp",
        "6000000",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        post(&restored, "/atlas/timestamp/fresh-timestamp")
            .await
            .number(),
        6_000_001
    );
    // The /timelock/api prefix works as a server URL too.
    let o = cli(&[
        "timestamp",
        "fetch",
        "--server",
        &format!("{}/timelock/api", restored.base()),
        "--namespace",
        "atlas",
    ]);
    assert_eq!(stdout(&o), "6000002");
}

#[tokio::test]
async fn invalidate_and_revalidate_commands() {
    let (dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[]);
    let base = server.base();
    let issued = post(&server, "/old/timestamp/fresh-timestamps?number=50")
        .await
        .json()["upperBound"]
        .as_i64()
        .unwrap();
    let bound_file = dir.path().join("bound");
    let o = cli(&[
        "timestamp",
        "invalidate",
        "--server",
        &base,
        "--namespace",
        "old",
        "--file",
        bound_file.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let bound: i64 = std::fs::read_to_string(&bound_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(bound >= issued);
    assert!(stderr(&o).contains("invalidated"));

    // Fetching from an invalidated namespace fails clearly, with a non-zero exit.
    let o = cli(&[
        "timestamp",
        "fetch",
        "--server",
        &base,
        "--namespace",
        "old",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("invalidated"), "{}", stderr(&o));
    assert!(stderr(&o).contains("\"old\""), "{}", stderr(&o));
    let o = cli(&[
        "timestamp",
        "fast-forward",
        "--server",
        &base,
        "--namespace",
        "old",
        "--timestamp",
        "5",
    ]);
    assert!(!o.status.success());

    // Migrate "old" into "new" on the same server (a rename): fast-forward new past the bound.
    let o = cli(&[
        "timestamp",
        "fast-forward",
        "--server",
        &base,
        "--namespace",
        "new",
        "--file",
        bound_file.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        post(&server, "/new/timestamp/fresh-timestamp")
            .await
            .number(),
        bound + 1
    );

    let o = cli(&[
        "timestamp",
        "revalidate",
        "--server",
        &base,
        "--namespace",
        "old",
        "--timestamp",
        &(bound + 10).to_string(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        post(&server, "/old/timestamp/fresh-timestamp")
            .await
            .number(),
        bound + 11
    );
}

#[tokio::test]
async fn failures_are_explained_with_non_zero_exit() {
    let (dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[]);
    // Unreachable server.
    let o = cli(&[
        "timestamp",
        "fetch",
        "--server",
        "http://127.0.0.1:1",
        "--namespace",
        "x",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("cannot reach timelock server at http://127.0.0.1:1"),
        "{}",
        stderr(&o)
    );
    // Invalid namespace: refused by the server's rule before anything is sent.
    let o = cli(&[
        "timestamp",
        "fetch",
        "--server",
        &server.base(),
        "--namespace",
        "leader",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("invalid namespace \"leader\"") && stderr(&o).contains("reserved"),
        "{}",
        stderr(&o)
    );
    // A bad timestamp file.
    let bad = dir.path().join("bad");
    std::fs::write(&bad, "not a number").unwrap();
    let o = cli(&[
        "timestamp",
        "fast-forward",
        "--server",
        &server.base(),
        "--namespace",
        "x",
        "--file",
        bad.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("does not hold one positive decimal timestamp"),
        "{}",
        stderr(&o)
    );
    // --timestamp and --file are mutually exclusive, and one is required.
    let o = cli(&[
        "timestamp",
        "fast-forward",
        "--server",
        &server.base(),
        "--namespace",
        "x",
    ]);
    assert!(!o.status.success());
    assert_eq!(
        namespaces(&server).await,
        Vec::<String>::new(),
        "no failed command created anything"
    );
    // Health command.
    let o = cli(&["health", "--server", &server.base()]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// A minimal non-leader: answers 503 without a body, as a TimeLock follower does for legacy
/// clients, or 308 with the leader's URL.
async fn fake_follower(status: u16, location: Option<String>) -> String {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    let app = axum::Router::new().fallback(move || {
        let location = location.clone();
        async move {
            let mut r = StatusCode::from_u16(status).unwrap().into_response();
            if let Some(l) = location {
                r.headers_mut().insert(header::LOCATION, l.parse().unwrap());
            }
            r
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_leaders_are_explained_and_redirects_followed() {
    let (_dir, data) = temp_data_dir();
    let leader = TestServer::start(&data, &[]);
    let unavailable = fake_follower(503, None).await;
    let o = tokio::task::spawn_blocking(move || {
        cli(&[
            "timestamp",
            "fetch",
            "--server",
            &unavailable,
            "--namespace",
            "x",
        ])
    })
    .await
    .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not the leader"), "{}", stderr(&o));
    let redirecting = fake_follower(308, Some(leader.base())).await;
    let o = tokio::task::spawn_blocking(move || {
        cli(&[
            "timestamp",
            "fetch",
            "--server",
            &redirecting,
            "--namespace",
            "x",
        ])
    })
    .await
    .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "1");
    assert!(stderr(&o).contains("following redirect"));
}

/// Runs the CLI with owned arguments.
fn cli_owned(args: &[String]) -> Output {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cli(&args)
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// Asserts that `victim` is untouched: still served, not moved, continuing right after `last`.
async fn assert_untouched(server: &TestServer, last: i64) -> i64 {
    let r = post(server, "/victim/timestamp/fresh-timestamp").await;
    assert_eq!(r.status, 200, "victim must still serve: {r:?}");
    let next = r.number();
    assert_eq!(next, last + 1, "victim was neither moved nor blocked");
    next
}

/// Issue 20, point 3 (and the adversarial checklist's names): every command that takes a
/// namespace refuses hostile ones with the server's own rule, before anything is sent; nothing
/// changes on the server (the victim continues right after its last timestamp, no namespace is
/// created, no backup is taken).
#[tokio::test]
async fn hostile_namespaces_are_refused_before_anything_is_sent() {
    let (dir, data) = temp_data_dir();
    let backups = dir.path().join("backups");
    let server = TestServer::start(
        &data,
        &[("TIMELOCK__BACKUP__DIR", backups.to_str().unwrap())],
    );
    let base = server.base();
    let mut last = post(&server, "/victim/timestamp/fresh-timestamp")
        .await
        .number();
    let state_dir = dir.path().join("migrations");
    let state = state_dir.to_str().unwrap().to_string();
    let ten_kb = "a".repeat(10 * 1024);
    let hostile = [
        "..",
        ".",
        "/",
        "#",
        "?",
        "%2f",
        "%2e%2e",
        "%00",
        "",
        " ",
        "victim\n",
        "vïctim",
        "leader",
        "tl",
        "lw",
        ten_kb.as_str(),
        "x/../victim",
        "y/../victim",
        "victim/timestamp-management/invalidate#",
        "victim/timestamp-management/fast-forward?currentTimestamp=5000000#",
        "victim?x=1",
        "victim#",
        "a/b",
    ];
    for ns in hostile {
        let commands: Vec<Vec<String>> = vec![
            strings(&["timestamp", "fetch", "--server", &base, "--namespace", ns]),
            strings(&[
                "timestamp",
                "invalidate",
                "--server",
                &base,
                "--namespace",
                ns,
            ]),
            strings(&[
                "timestamp",
                "fast-forward",
                "--server",
                &base,
                "--namespace",
                ns,
                "--timestamp",
                "5000000",
            ]),
            strings(&[
                "timestamp",
                "revalidate",
                "--server",
                &base,
                "--namespace",
                ns,
                "--timestamp",
                "5000000",
            ]),
            strings(&[
                "migrate",
                "start",
                "--from",
                &base,
                "--to",
                &base,
                "--namespace",
                ns,
                "--to-namespace",
                "elsewhere",
                "--state-dir",
                &state,
            ]),
            strings(&[
                "migrate",
                "start",
                "--from",
                &base,
                "--to",
                &base,
                "--namespace",
                "victim",
                "--to-namespace",
                ns,
                "--state-dir",
                &state,
            ]),
        ];
        for args in commands {
            let o = cli_owned(&args);
            let e = stderr(&o);
            assert!(!o.status.success(), "{args:?} must fail");
            assert!(
                e.contains("invalid namespace") || e.contains("a value is required"),
                "{:?}: {e}",
                &args[..2]
            );
        }
        last = assert_untouched(&server, last).await;
    }
    // Backup names are checked too, before the request.
    for name in ["../x", "a&b", "x?y=1", "a/b", ".hidden", "x#"] {
        let o = cli(&["backup", "create", "--server", &base, "--name", name]);
        assert!(!o.status.success(), "{name}");
        assert!(stderr(&o).contains("invalid backup name"), "{}", stderr(&o));
    }
    // Backup names name directories in the backup dir: refused by show, verify and restore.
    let restore_target = dir.path().join("restore-target");
    for name in ["../x", "..", "a/b", ".hidden", ""] {
        for args in [
            vec!["backup", "show", name],
            vec!["backup", "verify", name],
            vec![
                "backup",
                "restore",
                name,
                "--yes",
                "--data-dir",
                restore_target.to_str().unwrap(),
            ],
        ] {
            let mut args = args;
            args.extend(["--backup-dir", backups.to_str().unwrap()]);
            let o = cli(&args);
            assert!(!o.status.success(), "{args:?}");
            assert!(stderr(&o).contains("invalid backup name"), "{}", stderr(&o));
        }
    }
    assert!(!restore_target.exists(), "nothing restored");
    // Migration ids name files in the state dir: hostile ones, and a state file holding
    // garbage, are refused.
    std::fs::create_dir_all(&state_dir).unwrap();
    std::fs::write(state_dir.join("garbage.json"), "{not json").unwrap();
    for verb in ["status", "resume", "reverse"] {
        for id in ["../x", "a/b", "", "x.json", "%2e%2e", "garbage"] {
            let o = cli(&["migrate", verb, id, "--state-dir", &state]);
            assert!(!o.status.success(), "{verb} {id:?}");
            let e = stderr(&o);
            assert!(
                e.contains("invalid migration id") || e.contains("unreadable"),
                "{verb} {id:?}: {e}"
            );
        }
    }
    std::fs::remove_dir_all(&state_dir).unwrap();
    assert_eq!(namespaces(&server).await, vec!["victim"]);
    assert!(!backups.exists() || std::fs::read_dir(&backups).unwrap().next().is_none());
    assert!(!state_dir.exists(), "no migration was recorded");
    assert_untouched(&server, last).await;
}

/// Issue 20, point 6 (and the checklist's numbers): zero, negative, overflowing and garbage
/// timestamps, given directly or in files, are refused before anything is sent.
#[tokio::test]
async fn non_positive_and_garbage_timestamps_are_refused() {
    let (dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[]);
    let base = server.base();
    let mut last = post(&server, "/victim/timestamp/fresh-timestamp")
        .await
        .number();
    let mut sources: Vec<Vec<String>> = [
        "0",
        "-1",
        "-5",
        "-9223372036854775808",
        "-9223372036854775807",
        "99999999999999999999",
        "1e3",
        "0x10",
        " 5",
        "",
    ]
    .iter()
    .map(|t| strings(&["--timestamp", t]))
    .collect();
    for (i, contents) in [
        "-5\n",
        "0\n",
        "5 apples\n",
        "",
        "abc",
        "99999999999999999999",
        "1\n2\n",
    ]
    .iter()
    .enumerate()
    {
        let f = dir.path().join(format!("ts{i}"));
        std::fs::write(&f, contents).unwrap();
        sources.push(strings(&["--file", f.to_str().unwrap()]));
    }
    sources.push(strings(&[
        "--file",
        dir.path().join("missing").to_str().unwrap(),
    ]));
    sources.push(strings(&["--file", dir.path().to_str().unwrap()]));
    for verb in ["fast-forward", "revalidate"] {
        for source in &sources {
            let mut args = strings(&[
                "timestamp",
                verb,
                "--server",
                &base,
                "--namespace",
                "victim",
            ]);
            args.extend(source.iter().cloned());
            let o = cli_owned(&args);
            assert!(!o.status.success(), "{args:?} must fail: {}", stdout(&o));
            let e = stderr(&o);
            assert!(
                e.contains("not positive")
                    || e.contains("does not hold one positive decimal timestamp")
                    || e.contains("cannot read timestamp file")
                    || e.contains("invalid value"),
                "{args:?}: {e}"
            );
        }
        last = assert_untouched(&server, last).await;
    }
    // An output file that cannot be written is refused before the request (an invalidation
    // whose bound could not be written down).
    let nowhere = dir.path().join("no-such-dir").join("bound");
    for verb in ["fetch", "invalidate"] {
        for file in [nowhere.to_str().unwrap(), dir.path().to_str().unwrap()] {
            let o = cli(&[
                "timestamp",
                verb,
                "--server",
                &base,
                "--namespace",
                "victim",
                "--file",
                file,
            ]);
            assert!(!o.status.success(), "{verb} --file {file}");
            assert!(stderr(&o).contains("nothing was sent"), "{}", stderr(&o));
        }
    }
    last = assert_untouched(&server, last).await;
    // A migration from a file holding garbage or a negative bound moves nothing either.
    for contents in ["-5\n", "garbage\n"] {
        let f = dir.path().join("source");
        std::fs::write(&f, contents).unwrap();
        let o = cli(&[
            "migrate",
            "start",
            "--from",
            &format!("file:{}", f.display()),
            "--to",
            &base,
            "--namespace",
            "victim",
            "--source-is-offline",
            "--state-dir",
            dir.path().join("migrations").to_str().unwrap(),
        ]);
        assert!(!o.status.success(), "{contents:?}");
        assert!(
            stderr(&o).contains("does not hold one positive decimal timestamp"),
            "{}",
            stderr(&o)
        );
        assert!(
            !dir.path().join("migrations").exists(),
            "refused before anything was recorded"
        );
        last = assert_untouched(&server, last).await;
    }
}

/// Issue 20, point 9 (and the checklist's URLs): malformed and unreachable server URLs make
/// every command fail with a message that says what is wrong ("not a server URL", "cannot
/// reach"), never "builder error", and change nothing on the real server.
#[tokio::test]
async fn malformed_and_unreachable_servers_are_explained() {
    let (dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[]);
    let base = server.base();
    let mut last = post(&server, "/victim/timestamp/fresh-timestamp")
        .await
        .number();
    let state = dir.path().join("migrations");
    let state = state.to_str().unwrap();
    for bad in [
        "not a url",
        "ftp://127.0.0.1:1",
        "http://",
        "127.0.0.1:8421",
        "http://127.0.0.1:1",
        "http://127.0.0.1:1/timelock/api",
        "http://127.0.0.1:99999",
        "http://u@127.0.0.1:1",
        "",
        ",",
    ] {
        let commands = vec![
            strings(&[
                "timestamp",
                "fetch",
                "--server",
                bad,
                "--namespace",
                "victim",
            ]),
            strings(&[
                "timestamp",
                "invalidate",
                "--server",
                bad,
                "--namespace",
                "victim",
            ]),
            strings(&[
                "timestamp",
                "fast-forward",
                "--server",
                bad,
                "--namespace",
                "victim",
                "--timestamp",
                "5000000",
            ]),
            strings(&[
                "timestamp",
                "revalidate",
                "--server",
                bad,
                "--namespace",
                "victim",
                "--timestamp",
                "5000000",
            ]),
            strings(&["health", "--server", bad]),
            strings(&["backup", "create", "--server", bad]),
            strings(&[
                "migrate",
                "start",
                "--from",
                bad,
                "--to",
                &base,
                "--namespace",
                "victim",
                "--state-dir",
                state,
            ]),
            strings(&[
                "migrate",
                "start",
                "--from",
                &base,
                "--to",
                bad,
                "--namespace",
                "victim",
                "--state-dir",
                state,
            ]),
        ];
        for args in commands {
            let o = cli_owned(&args);
            let e = stderr(&o);
            assert!(!o.status.success(), "{args:?} must fail");
            assert!(!e.contains("builder error"), "{args:?}: {e}");
            assert!(
                e.contains("not a server URL")
                    || e.contains("not a base URL")
                    || e.contains("cannot reach")
                    || e.contains("--server is empty")
                    || e.contains("neither a server URL"),
                "{args:?}: {e}"
            );
        }
        last = assert_untouched(&server, last).await;
    }
    assert_eq!(namespaces(&server).await, vec!["victim"]);
}

/// Issue 20, point 9: a `--server` with the client prefix (`/timelock/api`) works for the admin
/// routes too: `backup create` and the migration progress a `migrate` reports.
#[tokio::test]
async fn a_timelock_api_base_reaches_the_admin_routes() {
    let (dir, data) = temp_data_dir();
    let backups = dir.path().join("backups");
    let server = TestServer::start(
        &data,
        &[("TIMELOCK__BACKUP__DIR", backups.to_str().unwrap())],
    );
    let (_dir2, data2) = temp_data_dir();
    let other = TestServer::start(&data2, &[]);
    let prefixed = format!("{}/timelock/api", server.base());
    post(&server, "/m/timestamp/fresh-timestamp").await;
    let o = cli(&[
        "backup",
        "create",
        "--server",
        &prefixed,
        "--name",
        "via-prefix",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(backups.join("via-prefix").join("metadata.json").exists());
    let o = cli(&[
        "migrate",
        "start",
        "--from",
        &prefixed,
        "--to",
        &format!("{}/timelock/api/", other.base()),
        "--namespace",
        "m",
        "--state-dir",
        dir.path().join("migrations").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let id = serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    for s in [&server, &other] {
        let listed = get(s, "/admin/migrations").await.json();
        assert!(
            listed.to_string().contains(&id),
            "progress reported to {}: {listed}",
            s.base()
        );
    }
}

/// Issue 20, point 9: `backup create` without a source names both ways to give one.
#[test]
fn backup_create_without_a_source_names_both() {
    let o = cli(&["backup", "create"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("--server") && e.contains("--data-dir"), "{e}");
}
