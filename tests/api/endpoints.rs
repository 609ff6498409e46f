//! Every timestamp and management endpoint, with its exact status, content type and JSON shape,
//! at the root and under `/timelock/api`.

use crate::common;

use common::*;

#[tokio::test]
async fn fresh_timestamp_legacy_paths_get_and_post() {
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[]);
    // The reverse-migration seed: a plain `curl` (GET) of a brand-new namespace.
    let first = get(&server, "/client/timestamp/fresh-timestamp").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.content_type.as_deref(), Some("application/json"));
    assert_eq!(first.body, "1", "first timestamp of a new namespace is 1");
    assert_eq!(
        post(&server, "/client/timestamp/fresh-timestamp")
            .await
            .number(),
        2
    );
    assert_eq!(
        post(&server, "/client/timelock/fresh-timestamp")
            .await
            .number(),
        3
    );
    assert_eq!(
        get(&server, "/timelock/api/client/timestamp/fresh-timestamp")
            .await
            .number(),
        4
    );
    assert_eq!(
        post(&server, "/timelock/api/client/timelock/fresh-timestamp")
            .await
            .number(),
        5
    );
}

#[tokio::test]
async fn fresh_timestamps_ranges_and_clamping() {
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[]);
    let r = post(&server, "/ns/timestamp/fresh-timestamps?number=5").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
    assert_eq!(r.body, r#"{"lowerBound":1,"upperBound":5}"#);
    let r = post(&server, "/ns/timelock/fresh-timestamps?number=1").await;
    assert_eq!(r.body, r#"{"lowerBound":6,"upperBound":6}"#);
    let r = get(
        &server,
        "/timelock/api/ns/timestamp/fresh-timestamps?number=2",
    )
    .await;
    assert_eq!(r.body, r#"{"lowerBound":7,"upperBound":8}"#);
    // Above the per-request cap the range is clamped to 10,000, as TimeLock does.
    let v = post(&server, "/ns/timestamp/fresh-timestamps?number=250000")
        .await
        .json();
    assert_eq!(v["lowerBound"], 9);
    assert_eq!(v["upperBound"], 9 + 10_000 - 1);
}

#[tokio::test]
async fn conjure_timestamp_endpoints() {
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[]);
    let r = post_json(&server, "/tl/ts/tom", r#"{"numTimestamps": 5}"#).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
    assert_eq!(r.body, r#"{"inclusiveLower":1,"inclusiveUpper":5}"#);
    let r = post_json(&server, "/tl/t2/tom", "3").await;
    assert_eq!(r.body, r#"{"start":6,"count":3}"#);
    let r = post(&server, "/tl/ts1/tom").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "9");
    // The manual-migration doc's curl, under the context path, with a dummy bearer token.
    let r = send(
        client()
            .post(server.url("/timelock/api/tl/ts/tom"))
            .header("Authorization", "Bearer q")
            .header("Content-Type", "application/json")
            .body(r#"{"numTimestamps": 1}"#),
    )
    .await;
    assert_eq!(r.body, r#"{"inclusiveLower":10,"inclusiveUpper":10}"#);
    let v = post_json(&server, "/tl/ts/tom", r#"{"numTimestamps": 100000}"#)
        .await
        .json();
    assert_eq!(
        v["inclusiveUpper"].as_i64().unwrap() - v["inclusiveLower"].as_i64().unwrap(),
        9_999
    );
    let v = post_json(&server, "/tl/t2/tom", "100000").await.json();
    assert_eq!(v["count"], 10_000);
}

#[tokio::test]
async fn fast_forward_ping_and_management() {
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[]);
    let r = post(
        &server,
        "/ns/timestamp-management/fast-forward?currentTimestamp=314159265",
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(r.body, "");
    // As the manual-migration doc says: the next timestamp is TS + 1.
    let r = post_json(&server, "/timelock/api/tl/ts/ns", r#"{"numTimestamps":1}"#).await;
    assert_eq!(
        r.body,
        r#"{"inclusiveLower":314159266,"inclusiveUpper":314159266}"#
    );
    // Fast-forward to the past is a silent no-op; repeating it is idempotent.
    for _ in 0..2 {
        let r = post(
            &server,
            "/ns/timestamp-management/fast-forward?currentTimestamp=100",
        )
        .await;
        assert_eq!(r.status, 204);
    }
    assert_eq!(
        post(&server, "/ns/timestamp/fresh-timestamp")
            .await
            .number(),
        314159267
    );
    // Long.MIN_VALUE + 1 is what AtlasDB clients send on every start-up: a no-op.
    let r = post(
        &server,
        "/ns/timestamp-management/fast-forward?currentTimestamp=-9223372036854775807",
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        post(&server, "/ns/timestamp/fresh-timestamp")
            .await
            .number(),
        314159268
    );

    let r = get(&server, "/ns/timestamp-management/ping").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type.as_deref(), Some("text/plain"));
    assert_eq!(r.body, "pong");
    assert_eq!(
        get(&server, "/timelock/api/ns/timestamp-management/ping")
            .await
            .body,
        "pong"
    );

    let r = post(
        &server,
        "/tl/management/fastForward?namespace=other&currentTimestamp=5000",
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        post(&server, "/other/timestamp/fresh-timestamp")
            .await
            .number(),
        5001
    );

    let r = post(&server, "/tl/management/getNamespaces").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), serde_json::json!(["ns", "other"]));
    let r = post(&server, "/tl/management/getActiveNamespaces").await;
    assert_eq!(r.json(), serde_json::json!(["ns", "other"]));
    let id = post(&server, "/tl/management/getServerLifecycleId")
        .await
        .json();
    assert!(uuid::Uuid::parse_str(id.as_str().unwrap()).is_ok());

    let r = post_json(&server, "/tl/management/achieveConsensus", r#"["ns"]"#).await;
    assert_eq!(r.status, 204);
    assert!(
        post(&server, "/ns/timestamp/fresh-timestamp")
            .await
            .number()
            > 314159268 + 1_000_000
    );

    for path in [
        "/tl/feedback/reportFeedback",
        "/tl/feedback/reportLeaderMetrics",
    ] {
        let body = r#"{"atlasVersion":"0.1175.0","serviceName":"svc","nodeId":"n1","startTransaction":{"p99":1.0,"oneMin":2.0,"errorRate":0.0}}"#;
        let r = post_json(&server, path, body).await;
        assert_eq!(r.status, 204, "{path}");
    }
}

#[tokio::test]
async fn namespaces_are_independent() {
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[]);
    post(
        &server,
        "/a/timestamp-management/fast-forward?currentTimestamp=1000000000",
    )
    .await;
    assert_eq!(
        post(&server, "/b/timestamp/fresh-timestamp").await.number(),
        1
    );
    assert_eq!(
        post(&server, "/a/timestamp/fresh-timestamp").await.number(),
        1_000_000_001
    );
    assert_eq!(
        post(&server, "/b/timestamp/fresh-timestamp").await.number(),
        2
    );
    // Names that look like Paxos roles or start with "tl" are ordinary namespaces.
    for ns in ["learner", "acceptor", "tlsuffix", "lwx"] {
        assert_eq!(
            post(&server, &format!("/{ns}/timestamp/fresh-timestamp"))
                .await
                .number(),
            1,
            "{ns}"
        );
    }
}

#[tokio::test]
async fn invalidate_and_revalidate() {
    let (_dir, data) = temp_data_dir();
    let mut server = TestServer::start(&data, &[("TIMELOCK__TIMESTAMP__RESERVATION", "1000")]);
    let last = post(&server, "/old/timestamp/fresh-timestamps?number=10")
        .await
        .json()["upperBound"]
        .as_i64()
        .unwrap();
    let r = post(&server, "/old/timestamp-management/invalidate").await;
    assert_eq!(r.status, 200);
    let bound = r.number();
    assert!(bound >= last, "bound {bound} below issued {last}");
    // Idempotent: same bound again.
    assert_eq!(
        post(&server, "/old/timestamp-management/invalidate")
            .await
            .number(),
        bound
    );

    let check_refused = |r: Reply| {
        assert!(
            ![503, 429, 308].contains(&r.status),
            "must not be retryable: {r:?}"
        );
        let v = r.assert_conjure_error(500, "FAILED_PRECONDITION");
        assert_eq!(v["errorName"], "TimeLock:NamespaceInvalidated");
        assert_eq!(v["parameters"]["namespace"], "old");
        assert!(v["parameters"]["message"].as_str().unwrap().contains("old"));
    };
    check_refused(post(&server, "/old/timestamp/fresh-timestamp").await);
    check_refused(post(&server, "/old/timestamp/fresh-timestamps?number=3").await);
    check_refused(post_json(&server, "/tl/ts/old", r#"{"numTimestamps":1}"#).await);
    check_refused(post_json(&server, "/tl/t2/old", "1").await);
    check_refused(post(&server, "/tl/ts1/old").await);
    check_refused(
        post(
            &server,
            "/old/timestamp-management/fast-forward?currentTimestamp=99999999",
        )
        .await,
    );
    check_refused(
        post(
            &server,
            "/tl/management/fastForward?namespace=old&currentTimestamp=99999999",
        )
        .await,
    );
    // Other namespaces are unaffected.
    assert_eq!(
        post(&server, "/new/timestamp/fresh-timestamp")
            .await
            .number(),
        1
    );

    // Invalidation survives a restart (clean or not).
    server.kill9();
    server.restart();
    check_refused(post(&server, "/old/timestamp/fresh-timestamp").await);
    assert_eq!(
        post(&server, "/old/timestamp-management/invalidate")
            .await
            .number(),
        bound
    );

    // Revalidate lifts it and fast-forwards past T in one step.
    let r = post(&server, "/old/timestamp-management/revalidate").await;
    r.assert_conjure_error(400, "INVALID_ARGUMENT");
    let r = post(
        &server,
        &format!(
            "/old/timestamp-management/revalidate?currentTimestamp={}",
            bound + 500
        ),
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        post(&server, "/old/timestamp/fresh-timestamp")
            .await
            .number(),
        bound + 501
    );
    assert_eq!(server.terminate().code(), Some(0));
    server.restart();
    assert!(
        post(&server, "/old/timestamp/fresh-timestamp")
            .await
            .number()
            > bound + 501
    );
}

#[tokio::test]
async fn operations_endpoints() {
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[]);
    post(&server, "/ns/timestamp/fresh-timestamp").await;
    post(&server, "/ns/timestamp/fresh-timestamps?number=0").await;
    let live = get(&server, "/health/live").await;
    assert_eq!(live.status, 200);
    assert_eq!(live.json()["status"], "UP");
    let ready = get(&server, "/health/ready").await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["status"], "READY");
    let metrics = get(&server, "/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.content_type.unwrap().starts_with("text/plain"));
    for needle in [
        r#"timelock_http_requests_total{method="POST",route="/{ns}/timestamp/fresh-timestamp",status="200"} 1"#,
        r#"timelock_http_requests_total{method="POST",route="/{ns}/timestamp/fresh-timestamps",status="400"} 1"#,
        "timelock_http_request_duration_seconds_bucket",
        "timelock_timestamps_issued_total 1",
        r#"timelock_bound_writes_total{result="ok"}"#,
        "timelock_bound_write_duration_seconds_count",
        "timelock_namespaces 1",
        "timelock_fail_stopped_services 0",
    ] {
        assert!(
            metrics.body.contains(needle),
            "missing {needle:?} in\n{}",
            metrics.body
        );
    }
    // Unknown paths get a Conjure 404.
    get(&server, "/no/such/endpoint/here")
        .await
        .assert_conjure_error(404, "NOT_FOUND");
}

#[tokio::test]
async fn graceful_shutdown_on_sigterm_and_log_line() {
    let (_dir, data) = temp_data_dir();
    let mut server = TestServer::start(&data, &[]);
    assert_eq!(
        post(&server, "/ns/timestamp/fresh-timestamp")
            .await
            .number(),
        1
    );
    let log = server.log();
    assert!(
        log.contains(&format!("listening on http://127.0.0.1:{}", server.port)),
        "{log}"
    );
    assert!(log.contains("data"), "{log}");
    let status = server.terminate();
    assert_eq!(
        status.code(),
        Some(0),
        "graceful exit; log:\n{}",
        server.log()
    );
    assert!(server.log().contains("stopped"));
}
