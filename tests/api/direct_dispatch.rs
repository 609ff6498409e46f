//! The hot endpoints answer the same whether dispatched directly (the default) or through the
//! router (`server.direct_dispatch = false`): two servers get the same requests in the same
//! order — valid, invalid, oversized, at the root and under the prefix, with odd namespaces and
//! methods — and must give the same status, content type and body (request-specific ids and
//! clock readings masked), and count the same requests under the same route labels.

use crate::common;

use common::*;

/// Masks what legitimately differs between two servers: UUIDs (error instance, leader and lock
/// watch log ids), the leader's clock and long numbers.
fn masked(body: &str) -> String {
    let mut out = String::with_capacity(body.len());
    let bytes = body.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &body[i..];
        if rest.len() >= 36 && uuid::Uuid::parse_str(&rest[..36]).is_ok() {
            out.push_str("<uuid>");
            i += 36;
            continue;
        }
        if bytes[i].is_ascii_digit() {
            let run = rest.bytes().take_while(u8::is_ascii_digit).count();
            if run >= 10 || out.ends_with("\"currentTime\":") {
                out.push_str("<long>");
            } else {
                out.push_str(&rest[..run]);
            }
            i += run;
            continue;
        }
        let c = rest.chars().next().unwrap();
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// The request counters of `/metrics` (not latencies, which differ).
async fn request_counts(server: &TestServer) -> Vec<String> {
    let text = get(server, "/metrics").await.body;
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("timelock_http_requests_total{") && !l.contains("/metrics"))
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

fn id(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

#[tokio::test]
async fn direct_and_routed_dispatch_answer_alike() {
    let (_d1, data1) = temp_data_dir();
    let (_d2, data2) = temp_data_dir();
    let env = [("TIMELOCK__SERVER__MAX_BODY_BYTES", "4096")];
    let direct = TestServer::start(&data1, &env);
    let routed = TestServer::start(
        &data2,
        &[env[0], ("TIMELOCK__SERVER__DIRECT_DISPATCH", "false")],
    );
    let descriptor = "bG9jay1h"; // base64 "lock-a"
    let st = |rid: u32| {
        format!(
            r#"{{"requestId":"{}","requestorId":"{}","numTransactions":1}}"#,
            id(rid),
            id(999)
        )
    };
    let lock = |rid: u32, timeout: i64| {
        format!(
            r#"{{"requestId":"{}","lockDescriptors":["{descriptor}"],"acquireTimeoutMs":{timeout}}}"#,
            id(rid)
        )
    };
    let big = format!(r#"{{"numTimestamps":1,"pad":"{}"}}"#, "x".repeat(5000));
    // (method, path, body)
    let mut requests: Vec<(&str, String, Option<String>)> = Vec::new();
    for prefix in ["", "/timelock/api"] {
        let p = |path: &str| format!("{prefix}{path}");
        requests.extend([
            ("POST", p("/ns/timestamp/fresh-timestamp"), None),
            ("POST", p("/ns/timestamp/fresh-timestamp?x=1"), None),
            ("GET", p("/ns/timestamp/fresh-timestamp"), None),
            ("PUT", p("/ns/timestamp/fresh-timestamp"), None),
            ("POST", p("/ns/timestamp/fresh-timestamps?number=10"), None),
            ("POST", p("/ns/timestamp/fresh-timestamps?number=0"), None),
            ("POST", p("/ns/timestamp/fresh-timestamps?number=abc"), None),
            ("POST", p("/ns/timestamp/fresh-timestamps"), None),
            ("POST", p("/ns/timestamp/fresh-timestamps?number=5&number=7"), None),
            ("POST", p("/leader/timestamp/fresh-timestamp"), None),
            ("POST", p("/a.b/timestamp/fresh-timestamp"), None),
            ("POST", p("/-x_/timestamp/fresh-timestamp"), None),
            ("POST", p(&format!("/{}/timestamp/fresh-timestamp", "n".repeat(300))), None),
            ("POST", p("/tl/timestamp/fresh-timestamp"), None),
            ("POST", p("/timelock/timestamp/fresh-timestamp"), None),
            ("POST", p("/tl/ts/ns"), Some(r#"{"numTimestamps":3}"#.into())),
            ("POST", p("/tl/ts/ns"), Some(r#"{"numTimestamps":0}"#.into())),
            ("POST", p("/tl/ts/ns"), Some(r#"{"numTimestamps":"3"}"#.into())),
            ("POST", p("/tl/ts/ns"), Some("{".into())),
            ("POST", p("/tl/ts/ns"), None),
            ("POST", p("/tl/ts/ns"), Some(big.clone())),
            ("GET", p("/tl/ts/ns"), None),
            ("POST", p("/tl/ts/ns/"), Some(r#"{"numTimestamps":3}"#.into())),
            ("POST", p("/tl/ts/"), Some(r#"{"numTimestamps":3}"#.into())),
            ("POST", p("/tl/st/ns"), Some(st(1))),
            ("POST", p("/tl/st/ns"), Some(st(2))),
            ("POST", p("/tl/st/ns"), Some(r#"{"requestId":"nope"}"#.into())),
            (
                "POST",
                p("/tl/st/ns"),
                Some(format!(
                    r#"{{"requestId":"{}","requestorId":"{}","numTransactions":2,"lastKnownVersion":{{"id":"{}","version":0}}}}"#,
                    id(3),
                    id(999),
                    id(4)
                )),
            ),
            (
                "POST",
                p("/tl/gct/ns"),
                Some(r#"{"numTimestamps":2}"#.into()),
            ),
            ("POST", p("/tl/gct/ns"), Some(r#"{"numTimestamps":-1}"#.into())),
            ("POST", p("/tl/l/ns"), Some(lock(10, 100))),
            ("POST", p("/tl/l/ns"), Some(lock(11, 50))),
            ("POST", p("/tl/l/ns"), Some(lock(12, -5))),
            ("POST", p("/tl/l/ns"), Some(r#"{"requestId":"x"}"#.into())),
            (
                "POST",
                p("/tl/rl2/ns"),
                Some(format!(r#"["{}","{}"]"#, id(10), id(77))),
            ),
            ("POST", p("/tl/rl2/ns"), Some("[1]".into())),
            (
                "POST",
                p("/tl/ul2/ns"),
                Some(format!(r#"["{}","{}"]"#, id(10), id(78))),
            ),
            ("POST", p("/tl/ul2/ns"), Some(format!(r#"["{}"]"#, id(1)))),
            ("POST", p("/tl/ul2/ns"), Some("{}".into())),
            ("POST", p("/tl/ul2/ns%41"), Some("[]".into())),
            ("POST", p("/tl/ul2/leader"), Some("[]".into())),
        ]);
    }
    compare(&direct, &routed, &requests, None).await;
    // Both dispatches answered and counted; the direct one did serve hot paths.
    let (direct_counts, routed_counts) =
        (request_counts(&direct).await, request_counts(&routed).await);
    assert_eq!(direct_counts, routed_counts);
    for route in [
        r#"route="/{ns}/timestamp/fresh-timestamp""#,
        r#"route="/timelock/api/tl/st/{ns}""#,
        r#"route="/tl/l/{ns}""#,
    ] {
        assert!(
            direct_counts.iter().any(|l| l.contains(route)),
            "{route} not counted: {direct_counts:#?}"
        );
    }
}

/// Sends every request to both servers in the same order (with `token` as a bearer token, if
/// given) and asserts the same status, content type and masked body.
async fn compare(
    direct: &TestServer,
    routed: &TestServer,
    requests: &[(&str, String, Option<String>)],
    token: Option<&str>,
) {
    for (method, path, body) in requests {
        let mut answers = Vec::new();
        for server in [direct, routed] {
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let mut request = client().request(method, server.url(path));
            if let Some(token) = token {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            if let Some(body) = body {
                request = request
                    .header("content-type", "application/json")
                    .body(body.clone());
            }
            let reply = send(request).await;
            answers.push((reply.status, reply.content_type, masked(&reply.body)));
        }
        assert_eq!(
            answers[0], answers[1],
            "{method} {path} {body:?} token {token:?}"
        );
    }
}

/// With access control on, the hot endpoints are still dispatched directly, and the direct
/// path refuses and admits exactly as the router's middleware does: no credential (401), a
/// wrong one (401), another namespace's (403), the right one and the admin credential (200),
/// and an unlisted namespace open to AtlasDB's dummy token — with the same refusals counted.
#[tokio::test]
async fn access_control_answers_alike_on_both_paths() {
    let (_d1, data1) = temp_data_dir();
    let (_d2, data2) = temp_data_dir();
    let secrets = tempfile::tempdir().unwrap();
    let tokens = secrets.path().join("namespace-tokens");
    std::fs::write(
        &tokens,
        "guarded guarded-token-0123456789\nother other-token-0123456789\n",
    )
    .unwrap();
    let tokens = tokens.to_str().unwrap().to_string();
    let env = [
        ("TIMELOCK__AUTH__NAMESPACE_TOKENS_FILE", tokens.as_str()),
        ("TIMELOCK__AUTH__ADMIN_TOKEN", "env:DIRECT_TEST_ADMIN"),
        ("DIRECT_TEST_ADMIN", "admin-token-0123456789"),
    ];
    let direct = TestServer::start(&data1, &env);
    let routed = TestServer::start(
        &data2,
        &[
            env[0],
            env[1],
            env[2],
            ("TIMELOCK__SERVER__DIRECT_DISPATCH", "false"),
        ],
    );
    let mut requests: Vec<(&str, String, Option<String>)> = Vec::new();
    for prefix in ["", "/timelock/api"] {
        for ns in ["guarded", "open"] {
            let p = |path: &str| format!("{prefix}{path}");
            requests.extend([
                ("POST", p(&format!("/{ns}/timestamp/fresh-timestamp")), None),
                (
                    "POST",
                    p(&format!("/{ns}/timestamp/fresh-timestamps?number=3")),
                    None,
                ),
                (
                    "POST",
                    p(&format!("/tl/ts/{ns}")),
                    Some(r#"{"numTimestamps":2}"#.into()),
                ),
                (
                    "POST",
                    p(&format!("/tl/st/{ns}")),
                    Some(format!(
                        r#"{{"requestId":"{}","requestorId":"{}","numTransactions":1}}"#,
                        id(1),
                        id(2)
                    )),
                ),
                (
                    "POST",
                    p(&format!("/tl/gct/{ns}")),
                    Some(r#"{"numTimestamps":1}"#.into()),
                ),
                (
                    "POST",
                    p(&format!("/tl/ul2/{ns}")),
                    Some(format!(r#"["{}"]"#, id(1))),
                ),
            ]);
        }
    }
    for token in [
        None,
        Some("omitted"),
        Some("wrong-token-0123456789"),
        Some("other-token-0123456789"),
        Some("guarded-token-0123456789"),
        Some("admin-token-0123456789"),
    ] {
        compare(&direct, &routed, &requests, token).await;
    }
    let denied = |text: String| {
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with("timelock_auth_denied_total{"))
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    };
    let (d, r) = (
        denied(get(&direct, "/metrics").await.body),
        denied(get(&routed, "/metrics").await.body),
    );
    assert_eq!(d, r);
    assert!(
        d.iter()
            .any(|l| l.contains(r#"status="401""#) && !l.ends_with(" 0")),
        "{d:?}"
    );
    assert!(
        d.iter()
            .any(|l| l.contains(r#"status="403""#) && !l.ends_with(" 0")),
        "{d:?}"
    );
    assert_eq!(request_counts(&direct).await, request_counts(&routed).await);
}
