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
    for (method, path, body) in &requests {
        let mut answers = Vec::new();
        for server in [&direct, &routed] {
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let mut request = client().request(method, server.url(path));
            if let Some(body) = body {
                request = request
                    .header("content-type", "application/json")
                    .body(body.clone());
            }
            let reply = send(request).await;
            answers.push((reply.status, reply.content_type, masked(&reply.body)));
        }
        assert_eq!(answers[0], answers[1], "{method} {path} {body:?}");
    }
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
