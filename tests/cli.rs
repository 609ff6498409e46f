//! The operator CLI against a real server: the backup/restore seed's `timestamp fetch --file` and
//! `timestamp fast-forward --file`, invalidate/revalidate, and clear failures with non-zero exit.

mod common;

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
