//! Bad input of every kind gets a Conjure 4xx, never a panic or a 500, and has no side effects:
//! no namespace is created and no timestamp moves.

use crate::common;

use common::*;

/// Fresh-timestamp of `ns` as a probe that the sequence did not move.
async fn next(server: &TestServer, ns: &str) -> i64 {
    post(server, &format!("/{ns}/timestamp/fresh-timestamp"))
        .await
        .number()
}

#[tokio::test]
async fn invalid_namespaces_are_rejected_and_never_created() {
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[]);
    // Percent-encoded so they reach the handler as a single path segment.
    let bad = [
        "leader",
        "a%20b",
        "ns!",
        "%C3%A9",
        "a.b",
        "a%2Fb",
        "semi%3Bcolon",
        "%00",
        "x%2500",
    ];
    for ns in bad {
        for (method, path) in [
            ("POST", format!("/{ns}/timestamp/fresh-timestamp")),
            ("GET", format!("/{ns}/timestamp/fresh-timestamp")),
            ("POST", format!("/{ns}/timestamp/fresh-timestamps?number=3")),
            ("POST", format!("/{ns}/timelock/fresh-timestamp")),
            ("POST", format!("/tl/ts1/{ns}")),
            (
                "POST",
                format!("/{ns}/timestamp-management/fast-forward?currentTimestamp=10"),
            ),
            ("POST", format!("/{ns}/timestamp-management/invalidate")),
            (
                "POST",
                format!("/{ns}/timestamp-management/revalidate?currentTimestamp=10"),
            ),
            ("GET", format!("/{ns}/timestamp-management/ping")),
            (
                "POST",
                format!("/tl/management/fastForward?namespace={ns}&currentTimestamp=10"),
            ),
        ] {
            let request = if method == "GET" {
                client().get(server.url(&path))
            } else {
                client().post(server.url(&path))
            };
            let r = send(request).await;
            let v = r.assert_conjure_error(400, "INVALID_ARGUMENT");
            assert!(
                v["parameters"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("namespace"),
                "{path}: {v}"
            );
        }
        let r = post_json(&server, &format!("/tl/ts/{ns}"), r#"{"numTimestamps":1}"#).await;
        r.assert_conjure_error(400, "INVALID_ARGUMENT");
        let r = post_json(&server, &format!("/tl/t2/{ns}"), "1").await;
        r.assert_conjure_error(400, "INVALID_ARGUMENT");
    }
    // `tl` and `lw` are route prefixes, never namespaces: both forms are refused, nothing made.
    for ns in ["tl", "lw"] {
        let r = post(&server, &format!("/{ns}/timestamp/fresh-timestamp")).await;
        assert!(r.status == 400 || r.status == 404, "{ns}: {r:?}");
        assert!(r.json()["errorCode"].is_string());
    }
    let r = post_json(
        &server,
        "/tl/management/achieveConsensus",
        r#"["ok1", "bad name"]"#,
    )
    .await;
    r.assert_conjure_error(400, "INVALID_ARGUMENT");
    assert_eq!(
        namespaces(&server).await,
        Vec::<String>::new(),
        "nothing was created"
    );
    let ready = get(&server, "/health/ready").await;
    assert_eq!(ready.status, 200, "server still healthy: {ready:?}");
}

#[tokio::test]
async fn bad_numbers_are_rejected_without_side_effects() {
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[]);
    assert_eq!(next(&server, "ns").await, 1);
    for query in [
        "",
        "?number=0",
        "?number=-1",
        "?number=-9223372036854775808",
        "?number=abc",
        "?number=1.5",
        "?number=9223372036854775808",
        "?number=",
        "?numbr=5",
    ] {
        let r = post(&server, &format!("/ns/timestamp/fresh-timestamps{query}")).await;
        r.assert_conjure_error(400, "INVALID_ARGUMENT");
        // Not even a new namespace gets created by a bad request.
        let r = post(
            &server,
            &format!("/fresh/timestamp/fresh-timestamps{query}"),
        )
        .await;
        r.assert_conjure_error(400, "INVALID_ARGUMENT");
    }
    for query in [
        "",
        "?currentTimestamp=-9223372036854775808", // Long.MIN_VALUE: the missing-value sentinel
        "?currentTimestamp=9223372036854775807",  // Long.MAX_VALUE
        "?currentTimestamp=9223372036854775806",
        "?currentTimestamp=9223372036853775808", // MAX - 999,999: no room for a reservation
        "?currentTimestamp=9223372036854775808", // overflows a long
        "?currentTimestamp=12abc",
        "?currentTimestamp=",
    ] {
        let r = post(
            &server,
            &format!("/ns/timestamp-management/fast-forward{query}"),
        )
        .await;
        r.assert_conjure_error(400, "INVALID_ARGUMENT");
        let r = post(
            &server,
            &format!("/fresh/timestamp-management/fast-forward{query}"),
        )
        .await;
        r.assert_conjure_error(400, "INVALID_ARGUMENT");
    }
    let r = post(&server, "/tl/management/fastForward?currentTimestamp=5").await;
    r.assert_conjure_error(400, "INVALID_ARGUMENT");
    // The largest accepted value works and leaves the namespace usable.
    let r = post(
        &server,
        "/big/timestamp-management/fast-forward?currentTimestamp=9223372036853775807",
    )
    .await;
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(next(&server, "big").await, 9223372036853775808);
    assert_eq!(
        next(&server, "ns").await,
        2,
        "refused requests moved nothing"
    );
    assert_eq!(namespaces(&server).await, vec!["big", "ns"]);
}

#[tokio::test]
async fn garbage_bodies_are_rejected() {
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[("TIMELOCK__SERVER__MAX_BODY_BYTES", "1000000")]);
    assert_eq!(next(&server, "ns").await, 1);
    for body in [
        "",
        "{",
        "null",
        "[]",
        r#"{"numTimestamps":"five"}"#,
        r#"{"numTimestamps":0}"#,
        r#"{"numTimestamps":-4}"#,
        r#"{"numTimestamps":1.5}"#,
        r#"{"numTimestamps":99999999999999999999999}"#,
        r#"{"other":1}"#,
        "\u{0}\u{1}binary",
    ] {
        let r = post_json(&server, "/tl/ts/ns", body).await;
        r.assert_conjure_error(400, "INVALID_ARGUMENT");
        let r = post_json(&server, "/tl/ts/fresh", body).await;
        r.assert_conjure_error(400, "INVALID_ARGUMENT");
    }
    for body in ["", "\"3\"", "0", "-1", "{}", "[1]", "1e3x"] {
        let r = post_json(&server, "/tl/t2/ns", body).await;
        r.assert_conjure_error(400, "INVALID_ARGUMENT");
    }
    for body in ["", "{}", r#"[1,2]"#, "[\"a\""] {
        let r = post_json(&server, "/tl/management/achieveConsensus", body).await;
        r.assert_conjure_error(400, "INVALID_ARGUMENT");
    }
    // Wrong content type with a valid body is still understood (lenient, like Jackson).
    let r = send(
        client()
            .post(server.url("/tl/ts/ns"))
            .header("content-type", "text/plain")
            .body(r#"{"numTimestamps":2}"#),
    )
    .await;
    assert_eq!(r.json()["inclusiveLower"], 2);
    // A body over the limit is refused with 413. Sent by hand: the server answers on the
    // declared length and closes, so a client still writing the rest of the body can see a
    // broken pipe before it reads the answer (reqwest did, once in CI).
    let huge = format!("[{}\"x\"]", "\"aaaaaaaaaa\",".repeat(200_000));
    let mut s = crate::http_abuse::connect(&server);
    let head = format!(
        "POST /tl/management/achieveConsensus HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        huge.len()
    );
    std::io::Write::write_all(&mut s, head.as_bytes()).unwrap();
    let _ = std::io::Write::write_all(&mut s, &huge.as_bytes()[..4096]);
    let reply = crate::http_abuse::read_reply(&mut s, std::time::Duration::from_secs(5));
    let (head, body) = reply.split_once("\r\n\r\n").expect("a whole answer");
    let content_type = head.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("content-type:")
            .map(|v| v.trim().to_string())
    });
    Reply {
        status: crate::http_abuse::status_of(&reply).expect("a status line"),
        content_type,
        body: body.to_string(),
    }
    .assert_conjure_error(413, "REQUEST_ENTITY_TOO_LARGE");
    assert_eq!(next(&server, "ns").await, 4, "nothing moved");
    assert_eq!(namespaces(&server).await, vec!["ns"]);
}

#[tokio::test]
async fn namespace_cap_refuses_cleanly() {
    let (_dir, data) = temp_data_dir();
    let mut server = TestServer::start(&data, &[("TIMELOCK__NAMESPACES__MAX", "3")]);
    for ns in ["a", "b", "c"] {
        assert_eq!(next(&server, ns).await, 1);
    }
    let r = post(&server, "/d/timestamp/fresh-timestamp").await;
    let v = r.assert_conjure_error(500, "INTERNAL");
    assert!(v["parameters"]["message"]
        .as_str()
        .unwrap()
        .contains("Maximum number of clients exceeded"));
    // Existing namespaces keep working; nothing was created; the cap holds across restarts.
    assert_eq!(next(&server, "a").await, 2);
    server.kill9();
    server.restart();
    assert_eq!(namespaces(&server).await, vec!["a", "b", "c"]);
    post(&server, "/e/timestamp/fresh-timestamp")
        .await
        .assert_conjure_error(500, "INTERNAL");
    assert!(next(&server, "c").await > 1);
}

#[tokio::test]
async fn oversized_chunked_bodies_get_413_too() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[("TIMELOCK__SERVER__MAX_BODY_BYTES", "1000")]);
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let chunk = format!("[{}\"x\"]", "\"aaaaaaaa\",".repeat(200));
    let request = format!(
        "POST /tl/management/achieveConsensus HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    let _ = tcp.read_to_string(&mut response).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("REQUEST_ENTITY_TOO_LARGE"), "{response}");
    assert_eq!(namespaces(&server).await, Vec::<String>::new());
}

/// Found by reading the admin handlers while writing the router fuzz target (fuzz/, whose checks
/// then flagged both on these inputs): path parameters that are not UTF-8 got axum's plain-text
/// 400 instead of a Conjure error, and `PUT /admin/migrations/{id}` wrote `<data>/../{id}.json`
/// for any id, `../` included, outside the migrations directory.
#[tokio::test]
async fn admin_path_parameters_are_checked() {
    let (dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[]);
    for path in ["/admin/backups/%FF", "/admin/migrations/%FF"] {
        let r = get(&server, path).await;
        r.assert_conjure_error(400, "INVALID_ARGUMENT");
    }
    let id = "../../escaped";
    let migration = serde_json::json!({
        "id": id, "state": "RUNNING", "reversible": true, "sourceIsOffline": false,
        "directionMapping": {
            "source": {"kind": "server", "url": "http://a:8421"},
            "destination": {"kind": "server", "url": "http://b:8421"},
            "sourceWritable": true, "destinationWritable": false,
        },
        "namespaces": [], "log": [], "reversals": 0,
    });
    let r = send(
        client()
            .put(server.url("/admin/migrations/..%2F..%2Fescaped"))
            .header("content-type", "application/json")
            .body(migration.to_string()),
    )
    .await;
    let v = r.assert_conjure_error(400, "INVALID_ARGUMENT");
    assert!(v["parameters"]["message"]
        .as_str()
        .unwrap()
        .contains("invalid migration id"));
    // The migrations dir is `var/migrations` in the server's working directory, `dir`.
    assert!(!dir.path().join("escaped.json").exists());
    assert!(!dir.path().join("var").join("escaped.json").exists());
    // A well-formed id is still stored and shown.
    let mut ok = migration;
    ok["id"] = "m-1".into();
    let r = send(
        client()
            .put(server.url("/admin/migrations/m-1"))
            .header("content-type", "application/json")
            .body(ok.to_string()),
    )
    .await;
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(
        get(&server, "/admin/migrations/m-1").await.json()["id"],
        "m-1"
    );
}
