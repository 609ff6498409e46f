//! Access control against the real server: the admin credential guards every admin and
//! management route, per-namespace bearer tokens guard their namespaces, unmodified AtlasDB
//! clients (dummy bearer token) keep working where nothing is configured, refusals are Conjure
//! 401/403 bodies with no side effects, and secrets never reach the log.

use crate::common;

use common::*;

const ADMIN: &str = "admin-7f3c9e1d5b2a4f60";
const ALPHA: &str = "alpha-1b2c3d4e5f607182";
const BETA: &str = "beta-99aa88bb77cc66dd";

async fn call(server: &TestServer, path: &str, token: Option<&str>, body: Option<&str>) -> Reply {
    let mut request = client().post(server.url(path));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    send(request).await
}

fn start(dir: &std::path::Path) -> TestServer {
    let tokens = dir.join("namespace-tokens");
    std::fs::write(
        &tokens,
        format!("# namespace token\nalpha {ALPHA}\nbeta {BETA}\ndelta {BETA}\n"),
    )
    .unwrap();
    let data = dir.join("data");
    TestServer::start(
        &data,
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
async fn admin_routes_need_the_admin_credential() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    // Make a namespace to invalidate.
    assert_eq!(
        call(
            &server,
            "/alpha/timestamp/fresh-timestamp",
            Some(ALPHA),
            None
        )
        .await
        .status,
        200
    );
    let admin_calls = [
        ("/tl/management/getNamespaces", None),
        ("/timelock/api/tl/management/getNamespaces", None),
        ("/tl/management/invalidateResources", Some(r#"["alpha"]"#)),
        (
            "/tl/management/fastForward?namespace=alpha&currentTimestamp=999999999999",
            None,
        ),
        (
            "/alpha/timestamp-management/invalidate?currentTimestamp=1",
            None,
        ),
        (
            "/timelock/api/alpha/timestamp-management/revalidate?currentTimestamp=1",
            None,
        ),
        ("/admin/backups", None),
    ];
    for (path, body) in admin_calls {
        for token in [None, Some("omitted"), Some("unused")] {
            let r = call(&server, path, token, body).await;
            r.assert_conjure_error(401, "UNAUTHORIZED");
        }
        // A client's own credential is known, and not enough.
        let r = call(&server, path, Some(ALPHA), body).await;
        let v = r.assert_conjure_error(403, "PERMISSION_DENIED");
        assert_eq!(v["errorName"], "Default:PermissionDenied");
    }
    // None of the refused calls had an effect: alpha was not invalidated, not fast-forwarded
    // and its lock services were not reset.
    let ts = call(
        &server,
        "/alpha/timestamp/fresh-timestamp",
        Some(ALPHA),
        None,
    )
    .await
    .number();
    assert!(ts < 999_999_999_999, "a refused fast-forward took effect");
    // GET on the admin prefix is guarded too.
    let r = send(client().get(server.url("/admin/backups"))).await;
    r.assert_conjure_error(401, "UNAUTHORIZED");

    // The admin credential opens every one of them.
    let names = call(&server, "/tl/management/getNamespaces", Some(ADMIN), None).await;
    assert_eq!(names.status, 200, "{names:?}");
    assert!(names.body.contains("alpha"));
    let ff = call(
        &server,
        "/tl/management/fastForward?namespace=alpha&currentTimestamp=999999999999",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(ff.status, 204, "{ff:?}");
    let after = call(
        &server,
        "/alpha/timestamp/fresh-timestamp",
        Some(ALPHA),
        None,
    )
    .await
    .number();
    assert!(after > 999_999_999_999);
    let backups = send(
        client()
            .get(server.url("/admin/backups"))
            .header("authorization", format!("Bearer {ADMIN}")),
    )
    .await;
    assert_eq!(backups.status, 200, "{backups:?}");

    // The operator CLI sends the admin token from the environment; without it, it is refused.
    let cli = |token: Option<&str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_timelock"));
        command.args([
            "timestamp",
            "invalidate",
            "--server",
            &server.base(),
            "--namespace",
            "alpha",
        ]);
        if let Some(token) = token {
            command.env("TIMELOCK_TOKEN", token);
        }
        command.output().unwrap()
    };
    let refused = cli(None);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"));
    let invalidated = cli(Some(ADMIN));
    assert!(
        invalidated.status.success(),
        "{}",
        String::from_utf8_lossy(&invalidated.stderr)
    );

    // Secrets never reach the log.
    let log = server.log();
    for secret in [ADMIN, ALPHA, BETA] {
        assert!(!log.contains(secret), "a secret was logged");
    }
}

#[tokio::test]
async fn namespace_tokens_guard_their_namespaces_and_leave_others_open() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let paths = |ns: &str| {
        [
            format!("/{ns}/timestamp/fresh-timestamp"),
            format!("/timelock/api/{ns}/timestamp/fresh-timestamp"),
            format!("/{ns}/timelock/fresh-timestamp"),
            format!("/tl/ts1/{ns}"),
        ]
    };
    for path in paths("alpha") {
        call(&server, &path, None, None)
            .await
            .assert_conjure_error(401, "UNAUTHORIZED");
        call(&server, &path, Some("omitted"), None)
            .await
            .assert_conjure_error(401, "UNAUTHORIZED");
        call(&server, &path, Some(BETA), None)
            .await
            .assert_conjure_error(403, "PERMISSION_DENIED");
        assert_eq!(call(&server, &path, Some(ALPHA), None).await.status, 200);
        assert_eq!(call(&server, &path, Some(ADMIN), None).await.status, 200);
    }
    // A percent-encoded name is the same namespace, not a way around its token.
    call(&server, "/tl/ts1/alph%61", None, None)
        .await
        .assert_conjure_error(401, "UNAUTHORIZED");
    // A token may open several namespaces.
    assert_eq!(
        call(
            &server,
            "/delta/timestamp/fresh-timestamp",
            Some(BETA),
            None
        )
        .await
        .status,
        200
    );
    // Unlisted namespaces stay open to unmodified AtlasDB clients and their dummy token.
    for token in [None, Some("omitted"), Some(ALPHA)] {
        for path in paths("gamma") {
            let r = call(&server, &path, token, None).await;
            assert_eq!(r.status, 200, "{path} {r:?}");
        }
    }
    // Lock routes too, and a refused lock request takes no lock.
    let lock = r#"{"requestId":"6c4b7a52-3a1e-4c5f-9d5e-0a8b2a1f0c11","lockDescriptors":["QQ=="],"acquireTimeoutMs":0}"#;
    call(&server, "/tl/l/alpha", Some(BETA), Some(lock))
        .await
        .assert_conjure_error(403, "PERMISSION_DENIED");
    let granted = call(&server, "/tl/l/alpha", Some(ALPHA), Some(lock)).await;
    assert_eq!(granted.json()["type"], "successful", "{granted:?}");

    // Multi-namespace routes check every namespace named in the body.
    let lts = r#"["alpha","gamma"]"#;
    call(&server, "/tl/multi/lts", Some("omitted"), Some(lts))
        .await
        .assert_conjure_error(401, "UNAUTHORIZED");
    call(&server, "/tl/multi/lts", Some(BETA), Some(lts))
        .await
        .assert_conjure_error(403, "PERMISSION_DENIED");
    let ok = call(&server, "/tl/multi/lts", Some(ALPHA), Some(lts)).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    let times = &ok.json()["leaderTimes"];
    assert!(
        times["alpha"].is_object() && times["gamma"].is_object(),
        "{ok:?}"
    );

    // A refused request creates nothing: "beta" is protected and was never used with its
    // token, so it must not exist after a refusal.
    call(
        &server,
        "/beta/timestamp/fresh-timestamp",
        Some("omitted"),
        None,
    )
    .await
    .assert_conjure_error(401, "UNAUTHORIZED");
    let names = call(&server, "/tl/management/getNamespaces", Some(ADMIN), None).await;
    assert!(!names.body.contains("\"beta\""), "{names:?}");

    // Observability stays open; refusals are counted.
    let metrics = send(client().get(server.url("/metrics"))).await;
    assert_eq!(metrics.status, 200);
    assert!(metrics
        .body
        .contains("timelock_auth_denied_total{status=\"401\"}"));
    assert!(metrics
        .body
        .contains("timelock_auth_denied_total{status=\"403\"}"));
}

#[test]
fn literal_or_missing_secrets_refuse_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let exe = env!("CARGO_BIN_EXE_timelock");
    let run = |key: &str, value: &str| {
        std::process::Command::new(exe)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .env(key, value)
            .output()
            .unwrap()
    };
    let literal = run("TIMELOCK__AUTH__ADMIN_TOKEN", ADMIN);
    assert!(!literal.status.success());
    let stderr = String::from_utf8_lossy(&literal.stderr);
    assert!(stderr.contains("file:PATH or env:NAME"), "{stderr}");
    assert!(!stderr.contains(ADMIN), "the secret was printed: {stderr}");
    let missing = run("TIMELOCK__AUTH__ADMIN_TOKEN", "file:/nonexistent/secret");
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read the secret file"));
}

#[tokio::test]
async fn force_kill_is_admin_only_when_an_admin_credential_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let kill = "/tl/management/forceKillTimeLockServer";
    let ts = |server: &TestServer| {
        let url = server.url("/alpha/timestamp/fresh-timestamp");
        async move {
            send(
                client()
                    .post(url)
                    .header("authorization", format!("Bearer {ALPHA}")),
            )
            .await
        }
    };
    assert_eq!(ts(&server).await.status, 200);
    // Without a credential, with a namespace token, with a wrong one: refused, nothing killed.
    let r = call(&server, kill, None, None).await;
    r.assert_conjure_error(401, "UNAUTHORIZED");
    let r = call(&server, kill, Some(ALPHA), None).await;
    assert!(r.status == 401 || r.status == 403, "{r:?}");
    let r = call(&server, &format!("/timelock/api{kill}"), Some("nope"), None).await;
    assert!(r.status == 401 || r.status == 403, "{r:?}");
    assert_eq!(
        ts(&server).await.status,
        200,
        "a refused kill changed nothing"
    );
    assert_eq!(get(&server, "/health/ready").await.status, 200);
    // The admin credential kills: the answer is the lifecycle id, then every client request
    // is refused and readiness is red.
    let id = call(
        &server,
        "/tl/management/getServerLifecycleId",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(id.status, 200, "{id:?}");
    let killed = call(&server, kill, Some(ADMIN), None).await;
    assert_eq!(killed.status, 200, "{killed:?}");
    assert_eq!(killed.json(), id.json());
    assert_eq!(ts(&server).await.status, 503);
    assert_eq!(get(&server, "/health/ready").await.status, 503);
}

/// The hot endpoints remember a connection's last token digest (`http::auth::TokenMemo`):
/// switching tokens on one keep-alive connection must be judged afresh every time — a token
/// that was good a request ago must not stand in for the one sent now.
#[tokio::test]
async fn tokens_switched_on_one_connection_are_each_checked() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let addr = server.base().trim_start_matches("http://").to_string();
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut status_of = async |ns: &str, token: &str| -> u16 {
        let request = format!(
            "POST /{ns}/timestamp/fresh-timestamp HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {token}\r\ncontent-length: 0\r\n\r\n"
        );
        write.write_all(request.as_bytes()).await.unwrap();
        let mut line = String::new();
        read.read_line(&mut line).await.unwrap();
        let status: u16 = line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            read.read_line(&mut header).await.unwrap();
            if header == "\r\n" {
                break;
            }
            if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        read.read_exact(&mut body).await.unwrap();
        status
    };
    // All on the one connection: good, wrong, good again, another namespace's token, unknown.
    assert_eq!(status_of("alpha", ALPHA).await, 200);
    assert_eq!(status_of("alpha", BETA).await, 403);
    assert_eq!(status_of("alpha", ALPHA).await, 200);
    assert_eq!(status_of("beta", ALPHA).await, 403);
    assert_eq!(status_of("beta", BETA).await, 200);
    assert_eq!(status_of("alpha", "not-a-token-at-all-000").await, 401);
    assert_eq!(status_of("beta", ALPHA).await, 403);
    assert_eq!(status_of("alpha", ALPHA).await, 200);
}
