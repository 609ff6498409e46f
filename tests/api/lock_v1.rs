//! The legacy lock service (v1) against the real server: JSON of each endpoint (127-bit token
//! ids as exact JSON numbers), READ/WRITE compatibility, reentrancy, group behaviours, blocking
//! modes, expiry, grants, tokens shared between `/lk/*` and `/{ns}/lock/*`, v1 apart from v2,
//! the blocking cut-off (429 `Retry-After: 0`, 503 for legacy clients), the request pool, and a
//! concurrent read/write exclusion checker.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use serde::Deserialize;
use serde_json::{json, Value};

const NEW_PROTOCOL: &str = "my-service/1.0 atlasdb-http-client/2.0";

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A v1 `LockRequest`.
fn request(locks: &[(&str, &str)], group: &str, blocking: &str, extra: Value) -> Value {
    let mut r = json!({
        "locks": locks.iter().map(|(d, m)| json!({"lockDescriptor": {"bytes": b64(d)}, "lockMode": m})).collect::<Vec<_>>(),
        "lockTimeout": {"time": 120, "unit": "SECONDS"},
        "lockGroupBehavior": group,
        "blockingMode": blocking,
        "versionId": null,
        "creatingThreadName": "test-thread",
    });
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            r[k] = v;
        }
    }
    r
}

fn try_now(locks: &[(&str, &str)]) -> Value {
    request(locks, "LOCK_ALL_OR_NONE", "DO_NOT_BLOCK", json!({}))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RefreshToken {
    token_id: u128,
    expiration_date_ms: i64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HeldToken {
    token_id: u128,
    creation_date_ms: i64,
    expiration_date_ms: i64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Grant {
    grant_id: u128,
}

async fn call(server: &TestServer, path: &str, body: &str) -> Reply {
    send(
        client()
            .post(server.url(path))
            .header("content-type", "application/json")
            .header("user-agent", NEW_PROTOCOL)
            .body(body.to_string()),
    )
    .await
}

/// `try-lock` for `client`: the held token, or None on 204.
async fn try_lock(server: &TestServer, ns: &str, client: &str, body: &Value) -> Option<HeldToken> {
    let r = call(
        server,
        &format!("/{ns}/lock/try-lock/{client}"),
        &body.to_string(),
    )
    .await;
    match r.status {
        200 => Some(serde_json::from_str(&r.body).expect("HeldLocksToken")),
        204 => {
            assert!(r.body.is_empty());
            None
        }
        _ => panic!("try-lock: {r:?}"),
    }
}

async fn unlock(server: &TestServer, ns: &str, token: u128) -> bool {
    let r = call(
        server,
        &format!("/{ns}/lock/unlock-simple"),
        &format!(r#"{{"tokenId":{token},"creationDateMs":0}}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    r.json().as_bool().expect("bare boolean")
}

#[tokio::test]
async fn endpoint_json_shapes() {
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[]);
    // lock/{client} -> LockRefreshToken with an exact 127-bit id.
    let r = call(
        &server,
        "/v1/lock/lock/alice",
        &try_now(&[("a", "WRITE")]).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
    let token: RefreshToken = serde_json::from_str(&r.body).unwrap();
    assert!(token.token_id < 1u128 << 127);
    // Written as a bare integer, never as a float or a string.
    assert!(
        r.body.contains(&format!("\"tokenId\":{}", token.token_id)),
        "{}",
        r.body
    );
    let now = json_now();
    assert!((token.expiration_date_ms - (now + 120_000)).abs() < 10_000);
    // A busy lock: 204, no body.
    let busy = call(
        &server,
        "/v1/lock/lock/bob",
        &try_now(&[("a", "WRITE")]).to_string(),
    )
    .await;
    assert_eq!(busy.status, 204);
    // try-lock -> HeldLocksToken with every field.
    let r = call(
        &server,
        "/v1/lock/try-lock/carol",
        &try_now(&[("b", "READ")]).to_string(),
    )
    .await;
    let v = r.json();
    assert_eq!(v["client"], json!({"clientId": "carol"}));
    assert_eq!(
        v["locks"],
        json!([{"lockDescriptor": {"bytes": b64("b")}, "lockMode": "READ"}])
    );
    assert_eq!(v["lockTimeout"], json!({"time": 120, "unit": "SECONDS"}));
    assert_eq!(v["versionId"], Value::Null);
    assert_eq!(v["requestingThread"], "test-thread");
    let held: HeldToken = serde_json::from_str(&r.body).unwrap();
    assert!(held.creation_date_ms <= held.expiration_date_ms);
    // lock-with-full-response -> LockResponse; failures name the holder.
    let r = call(
        &server,
        "/v1/lock/lock-with-full-response/dave",
        &try_now(&[("a", "WRITE")]).to_string(),
    )
    .await;
    let v = r.json();
    assert_eq!(v["token"], Value::Null, "{v}");
    assert_eq!(v["blockAndRelease"], false);
    assert_eq!(
        v["locks"],
        json!([{"lockDescriptor": {"bytes": b64("a")}, "lockClient": {"clientId": "alice"}}])
    );
    // get-tokens, refresh-lock-tokens, unlock.
    let tokens = call(&server, "/v1/lock/get-tokens/alice", "").await;
    assert_eq!(tokens.status, 200, "{tokens:?}");
    let tokens: Vec<HeldToken> = serde_json::from_str(&tokens.body).unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].token_id, token.token_id);
    let refreshed = call(
        &server,
        "/v1/lock/refresh-lock-tokens",
        &format!(
            r#"[{{"tokenId":{},"expirationDateMs":0}},{{"tokenId":12345,"expirationDateMs":0}}]"#,
            token.token_id
        ),
    )
    .await;
    let refreshed: Vec<RefreshToken> = serde_json::from_str(&refreshed.body).unwrap();
    assert_eq!(refreshed.len(), 1, "only the live token is refreshed");
    assert_eq!(refreshed[0].token_id, token.token_id);
    let r = call(
        &server,
        "/v1/lock/unlock",
        &format!(r#"{{"tokenId":{},"expirationDateMs":0}}"#, token.token_id),
    )
    .await;
    assert_eq!(r.body, "true");
    assert!(
        !unlock(&server, "v1", token.token_id).await,
        "second unlock is false"
    );
    // Odds and ends.
    let r = call(&server, "/v1/lock/current-time-millis", "").await;
    assert!((r.body.parse::<i64>().unwrap() - json_now()).abs() < 10_000);
    let r = call(&server, "/v1/lock/lock-server-options", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["maxAllowedClockDrift"],
        json!({"time": 5, "unit": "SECONDS"}),
        "TimeLock's default allowance: {r:?}"
    );
    assert_eq!(
        call(&server, "/v1/lock/log-current-state", "").await.status,
        204
    );
    // The `String` overload stays 400 (NonTransactionalLockService); the `LockClient` ones
    // answer 204 for a client holding nothing (see min_locked_in_version_id_per_client).
    for path in [
        "/v1/lock/min-locked-in-version/alice",
        "/v1/lock/min-locked-in-version",
    ] {
        call(&server, path, r#"{"clientId":"alice"}"#)
            .await
            .assert_conjure_error(400, "INVALID_ARGUMENT");
    }
    for path in [
        "/v1/lock/min-locked-in-version-id",
        "/v1/lock/min-locked-in-version-id-for-client/alice",
        "/v1/lock/min-locked-in-version-id-for-client",
    ] {
        let r = call(&server, path, "").await;
        assert_eq!(r.status, 204, "{path}: {r:?}");
    }
    // Prefixed copies exist too.
    let r = call(&server, "/timelock/api/v1/lock/current-time-millis", "").await;
    assert_eq!(r.status, 200);
}

fn json_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn read_write_compatibility_and_reentrancy() {
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[]);
    let read = try_now(&[("x", "READ")]);
    let write = try_now(&[("x", "WRITE")]);
    // Many readers.
    let r1 = try_lock(&server, "rw", "r1", &read)
        .await
        .expect("reader 1");
    let r2 = try_lock(&server, "rw", "r2", &read)
        .await
        .expect("reader 2");
    // No writer while they read.
    assert!(try_lock(&server, "rw", "w", &write).await.is_none());
    assert!(unlock(&server, "rw", r1.token_id).await);
    assert!(try_lock(&server, "rw", "w", &write).await.is_none());
    assert!(unlock(&server, "rw", r2.token_id).await);
    // One writer, and no reader beside it...
    let w = try_lock(&server, "rw", "w", &write).await.expect("writer");
    assert!(try_lock(&server, "rw", "r1", &read).await.is_none());
    assert!(try_lock(&server, "rw", "w2", &write).await.is_none());
    // ...but the writer itself may take it again, and read it too (reentrancy per client).
    let again = try_lock(&server, "rw", "w", &write)
        .await
        .expect("reentrant write");
    let also = try_lock(&server, "rw", "w", &read)
        .await
        .expect("reentrant read");
    assert!(unlock(&server, "rw", w.token_id).await);
    assert!(
        try_lock(&server, "rw", "r1", &read).await.is_none(),
        "still held by the reentrant tokens"
    );
    assert!(unlock(&server, "rw", again.token_id).await);
    assert!(unlock(&server, "rw", also.token_id).await);
    let r = try_lock(&server, "rw", "r1", &read)
        .await
        .expect("free again");
    assert!(unlock(&server, "rw", r.token_id).await);
    // The anonymous client is not reentrant.
    let anon = call(&server, "/rw/lock/try-lock", &write.to_string()).await;
    assert_eq!(anon.status, 200, "{anon:?}");
    let anon2 = call(&server, "/rw/lock/try-lock", &write.to_string()).await;
    assert_eq!(anon2.status, 204);
}

#[tokio::test]
async fn group_behaviours() {
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[]);
    let held = try_lock(&server, "grp", "holder", &try_now(&[("b", "WRITE")]))
        .await
        .unwrap();
    // All or none: nothing taken.
    assert!(try_lock(
        &server,
        "grp",
        "c",
        &try_now(&[("a", "WRITE"), ("b", "WRITE")])
    )
    .await
    .is_none());
    assert!(try_lock(&server, "grp", "d", &try_now(&[("a", "WRITE")]))
        .await
        .is_some());
    // As many as possible: the free ones, and the response names what failed.
    let body = request(
        &[("b", "WRITE"), ("c", "WRITE")],
        "LOCK_AS_MANY_AS_POSSIBLE",
        "DO_NOT_BLOCK",
        json!({}),
    );
    let r = call(
        &server,
        "/grp/lock/lock-with-full-response/e",
        &body.to_string(),
    )
    .await;
    let v = r.json();
    assert_eq!(
        v["token"]["locks"],
        json!([{"lockDescriptor": {"bytes": b64("c")}, "lockMode": "WRITE"}]),
        "{v}"
    );
    assert_eq!(
        v["locks"],
        json!([{"lockDescriptor": {"bytes": b64("b")}, "lockClient": {"clientId": "holder"}}])
    );
    // lock() refuses LOCK_AS_MANY_AS_POSSIBLE, as TimeLock.
    call(&server, "/grp/lock/lock/e", &body.to_string())
        .await
        .assert_conjure_error(400, "INVALID_ARGUMENT");
    assert!(unlock(&server, "grp", held.token_id).await);
}

/// `LockRequest.Builder` checks `!lockMap.isEmpty()`, so TimeLock refuses a request without
/// locks on every lock path, whatever its group and blocking behaviour: 400, the same
/// `INVALID_ARGUMENT` error as for a request naming a lock twice.
#[tokio::test]
async fn empty_lock_lists_are_invalid_arguments() {
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[]);
    let duplicate = call(
        &server,
        "/empty/lock/try-lock/a",
        &try_now(&[("x", "WRITE"), ("x", "READ")]).to_string(),
    )
    .await
    .assert_conjure_error(400, "INVALID_ARGUMENT");
    let bodies = [
        try_now(&[]),
        request(&[], "LOCK_ALL_OR_NONE", "BLOCK_INDEFINITELY", json!({})),
        request(
            &[],
            "LOCK_ALL_OR_NONE",
            "BLOCK_INDEFINITELY_THEN_RELEASE",
            json!({}),
        ),
        request(
            &[],
            "LOCK_AS_MANY_AS_POSSIBLE",
            "BLOCK_UNTIL_TIMEOUT",
            json!({"blockingDuration": {"time": 1, "unit": "SECONDS"}}),
        ),
        json!({"locks": []}),
    ];
    for body in &bodies {
        for path in [
            "/empty/lock/try-lock/a",
            "/empty/lock/try-lock",
            "/empty/lock/try-lock/",
            "/empty/lock/lock/a",
            "/empty/lock/lock",
            "/empty/lock/lock-with-full-response/a",
            "/empty/lock/lock-with-full-response",
        ] {
            let err = call(&server, path, &body.to_string())
                .await
                .assert_conjure_error(400, "INVALID_ARGUMENT");
            assert_eq!(err["errorName"], duplicate["errorName"], "{path} {body}");
        }
        let conjure = json!({"lockClient": "a", "lockRequest": body});
        let err = call(&server, "/lk/laghl/empty", &conjure.to_string())
            .await
            .assert_conjure_error(400, "INVALID_ARGUMENT");
        assert_eq!(err["errorName"], duplicate["errorName"], "/lk/laghl {body}");
    }
    // Nothing was locked on the way.
    let r = call(&server, "/empty/lock/get-tokens/a", "").await;
    assert_eq!((r.status, r.body.as_str()), (200, "[]"), "{r:?}");
}

#[tokio::test]
async fn blocking_modes() {
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[]);
    let held = try_lock(&server, "blk", "holder", &try_now(&[("k", "WRITE")]))
        .await
        .unwrap();
    // BLOCK_UNTIL_TIMEOUT: gives up after blockingDuration, holding nothing.
    let until = request(
        &[("k", "WRITE")],
        "LOCK_ALL_OR_NONE",
        "BLOCK_UNTIL_TIMEOUT",
        json!({"blockingDuration": {"time": 300, "unit": "MILLISECONDS"}}),
    );
    let started = Instant::now();
    assert!(try_lock(&server, "blk", "w1", &until).await.is_none());
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(290), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    // BLOCK_INDEFINITELY: granted when the holder lets go.
    let forever = request(
        &[("k", "WRITE")],
        "LOCK_ALL_OR_NONE",
        "BLOCK_INDEFINITELY",
        json!({}),
    );
    let waiter = {
        let url = server.url("/blk/lock/try-lock/w2");
        let body = forever.to_string();
        tokio::spawn(async move {
            let started = Instant::now();
            let r = send(
                client()
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body),
            )
            .await;
            (r, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(unlock(&server, "blk", held.token_id).await);
    let (r, waited) = waiter.await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(waited >= Duration::from_millis(250), "{waited:?}");
    let w2: HeldToken = serde_json::from_str(&r.body).unwrap();
    // BLOCK_INDEFINITELY_THEN_RELEASE: waits for the lock, then holds nothing.
    let release = request(
        &[("k", "WRITE")],
        "LOCK_ALL_OR_NONE",
        "BLOCK_INDEFINITELY_THEN_RELEASE",
        json!({}),
    );
    let waiter = {
        let url = server.url("/blk/lock/lock-with-full-response/w3");
        let body = release.to_string();
        tokio::spawn(async move {
            send(
                client()
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "did not wait for the holder");
    assert!(unlock(&server, "blk", w2.token_id).await);
    let r = waiter.await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["blockAndRelease"], true, "{r:?}");
    // Nothing is held afterwards.
    let free = try_lock(&server, "blk", "w4", &try_now(&[("k", "WRITE")])).await;
    assert!(
        free.is_some(),
        "BLOCK_INDEFINITELY_THEN_RELEASE kept the lock"
    );
}

#[tokio::test]
async fn expiry_and_grants() {
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[("TIMELOCK__LOCK_V1__MAX_CLOCK_DRIFT_MS", "300")]);
    // A 1 s lock timeout expires without refreshes, and the lock is free once the 300 ms drift
    // allowance has passed too (LockServiceImpl.reapLocks), not before.
    let sent = Instant::now();
    let short = request(
        &[("e", "WRITE")],
        "LOCK_ALL_OR_NONE",
        "DO_NOT_BLOCK",
        json!({"lockTimeout": {"time": 1, "unit": "SECONDS"}}),
    );
    let token = try_lock(&server, "exp", "a", &short).await.unwrap();
    assert!(try_lock(&server, "exp", "b", &try_now(&[("e", "WRITE")]))
        .await
        .is_none());
    let deadline = Instant::now() + Duration::from_secs(10);
    let b = loop {
        if let Some(t) = try_lock(&server, "exp", "b", &try_now(&[("e", "WRITE")])).await {
            break t;
        }
        assert!(Instant::now() < deadline, "lock never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        sent.elapsed() >= Duration::from_millis(1_300),
        "freed before expiry + drift: {:?}",
        sent.elapsed()
    );
    let refreshed = call(
        &server,
        "/exp/lock/refresh-lock-tokens",
        &format!(r#"[{{"tokenId":{},"expirationDateMs":0}}]"#, token.token_id),
    )
    .await;
    assert_eq!(refreshed.body, "[]", "an expired token is not refreshed");

    // Grants: a held token becomes a grant (held by nobody's client) and another client uses it.
    let grant = call(
        &server,
        "/exp/lock/convert-to-grant",
        &format!(r#"{{"tokenId":{}}}"#, b.token_id),
    )
    .await;
    assert_eq!(grant.status, 200, "{grant:?}");
    let g: Grant = serde_json::from_str(&grant.body).unwrap();
    assert!(grant.json()["locksWithMode"].is_array(), "{grant:?}");
    assert!(
        !unlock(&server, "exp", b.token_id).await,
        "the token became the grant"
    );
    assert!(try_lock(&server, "exp", "c", &try_now(&[("e", "WRITE")]))
        .await
        .is_none());
    let refreshed = call(
        &server,
        "/exp/lock/refresh-grant-id",
        &g.grant_id.to_string(),
    )
    .await;
    assert_eq!(refreshed.status, 200, "{refreshed:?}");
    let used = call(&server, "/exp/lock/use-grant/c", &grant.body).await;
    assert_eq!(used.status, 200, "{used:?}");
    assert_eq!(used.json()["client"]["clientId"], "c");
    let c: HeldToken = serde_json::from_str(&used.body).unwrap();
    // A grant is used once.
    let again = call(&server, "/exp/lock/use-grant-id/d", &g.grant_id.to_string()).await;
    assert!(again.status >= 400, "{again:?}");
    assert!(unlock(&server, "exp", c.token_id).await);
}

async fn refresh_lock_tokens(server: &TestServer, ns: &str, token: u128) -> Vec<RefreshToken> {
    let r = call(
        server,
        &format!("/{ns}/lock/refresh-lock-tokens"),
        &format!(r#"[{{"tokenId":{token},"expirationDateMs":0}}]"#),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    serde_json::from_str(&r.body).expect("LockRefreshTokens")
}

/// LockServiceImpl: the reaper frees a token only once
/// `expirationDateMs <= now - maxAllowedClockDrift`; `refreshToken` and `convertToGrant` only ask
/// whether it is still held. AtlasDB's own TimeLock tests lock with a 10 ms timeout and refresh
/// afterwards. The server runs with a 1.5 s allowance so that the test stays short.
#[tokio::test]
async fn short_timeout_tokens_stay_held_for_the_clock_drift_allowance() {
    const DRIFT_MS: u64 = 1_500;
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[("TIMELOCK__LOCK_V1__MAX_CLOCK_DRIFT_MS", "1500")]);
    let options = call(&server, "/drift/lock/lock-server-options", "").await;
    assert_eq!(
        options.json()["maxAllowedClockDrift"],
        json!({"time": 1500, "unit": "MILLISECONDS"}),
        "{options:?}"
    );
    let ten_ms = |locks: &[(&str, &str)], version: i64| {
        request(
            locks,
            "LOCK_ALL_OR_NONE",
            "DO_NOT_BLOCK",
            json!({"lockTimeout": {"time": 10, "unit": "MILLISECONDS"}, "versionId": version}),
        )
    };
    // Refreshed a few hundred ms after its 10 ms timeout passed.
    let refreshed = try_lock(&server, "drift", "a", &ten_ms(&[("r", "WRITE")], 7))
        .await
        .unwrap();
    // Converted to a grant after its timeout passed.
    let converted = try_lock(&server, "drift", "a", &ten_ms(&[("g", "WRITE")], 5))
        .await
        .unwrap();
    // Never refreshed: freed once expiry + drift has passed, not before.
    let sent = Instant::now();
    let abandoned = try_lock(&server, "drift", "a", &ten_ms(&[("f", "WRITE")], 9))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Expired tokens still count for the version query (LockServiceImpl keeps them in
    // versionIdMap until the reaper unlocks them).
    let min = || {
        call(
            &server,
            "/drift/lock/min-locked-in-version-id-for-client/a",
            "",
        )
    };
    assert_eq!(
        min().await.number(),
        5,
        "the 10 ms tokens are found 300 ms later"
    );

    let r = refresh_lock_tokens(&server, "drift", refreshed.token_id).await;
    assert_eq!(r.len(), 1, "a 10 ms token is refreshable 300 ms later");
    assert_eq!(r[0].token_id, refreshed.token_id);
    assert!(r[0].expiration_date_ms > refreshed.expiration_date_ms);
    let grant = call(
        &server,
        "/drift/lock/convert-to-grant",
        &format!(r#"{{"tokenId":{}}}"#, converted.token_id),
    )
    .await;
    assert_eq!(grant.status, 200, "{grant:?}");
    let converted_at = Instant::now();
    let g: Grant = serde_json::from_str(&grant.body).unwrap();
    assert_eq!(
        min().await.number(),
        7,
        "a converted token no longer counts for a"
    );
    // Still held just before expiry + drift.
    assert!(
        sent.elapsed() < Duration::from_millis(DRIFT_MS - 500),
        "the test itself ran too slowly to check the allowance"
    );
    assert!(
        try_lock(&server, "drift", "b", &try_now(&[("f", "WRITE")]))
            .await
            .is_none(),
        "freed before expiry + drift"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let b = loop {
        if let Some(t) = try_lock(&server, "drift", "b", &try_now(&[("f", "WRITE")])).await {
            break t;
        }
        assert!(Instant::now() < deadline, "never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        sent.elapsed() >= Duration::from_millis(10 + DRIFT_MS),
        "freed after {:?}, before expiry + drift",
        sent.elapsed()
    );
    assert!(refresh_lock_tokens(&server, "drift", abandoned.token_id)
        .await
        .is_empty());
    assert!(!unlock(&server, "drift", abandoned.token_id).await);
    assert!(unlock(&server, "drift", b.token_id).await);
    // The grant, unrefreshed since its conversion, went the same way.
    let grant_freed = converted_at + Duration::from_millis(10 + DRIFT_MS + 100);
    tokio::time::sleep_until(grant_freed.into()).await;
    let r = call(
        &server,
        "/drift/lock/use-grant-id/c",
        &g.grant_id.to_string(),
    )
    .await;
    r.assert_conjure_error(400, "INVALID_ARGUMENT");
    // So did the refreshed token (refreshed before the conversion, never again).
    assert_eq!(min().await.status, 204);
}

/// `NonTransactionalLockService` overrides only `getMinLockedInVersionId(String)` (400); the
/// `LockClient` overloads reach `LockServiceImpl`, which answers the smallest `versionId` in the
/// client's `versionIdMap` entries (a `TreeMultiset`), `null` (204) when there is none, and
/// `getMinLockedInVersionId()` asks for `LockClient.ANONYMOUS`.
#[tokio::test]
async fn min_locked_in_version_id_per_client() {
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[]);
    let with_version = |locks: &[(&str, &str)], version: i64| {
        request(
            locks,
            "LOCK_ALL_OR_NONE",
            "DO_NOT_BLOCK",
            json!({"versionId": version}),
        )
    };
    let min = |path: &'static str| call(&server, path, "");
    const VC: &str = "/ver/lock/min-locked-in-version-id-for-client/vc";
    // The example of issue 21: vc holds READ ver/a (50) and WRITE ver/b (30).
    let a = try_lock(
        &server,
        "ver",
        "vc",
        &with_version(&[("ver/a", "READ")], 50),
    )
    .await
    .unwrap();
    let b = try_lock(
        &server,
        "ver",
        "vc",
        &with_version(&[("ver/b", "WRITE")], 30),
    )
    .await
    .unwrap();
    assert_eq!(min(VC).await.number(), 30);
    // Another client's versions and a token without a version id do not count.
    try_lock(
        &server,
        "ver",
        "other",
        &with_version(&[("ver/c", "WRITE")], 10),
    )
    .await
    .unwrap();
    try_lock(&server, "ver", "vc", &try_now(&[("ver/d", "WRITE")]))
        .await
        .unwrap();
    assert_eq!(min(VC).await.number(), 30);
    assert_eq!(
        min("/ver/lock/min-locked-in-version-id-for-client/other")
            .await
            .number(),
        10
    );
    // Nor do vc's for the anonymous client.
    assert_eq!(min("/ver/lock/min-locked-in-version-id").await.status, 204);
    // The String overload stays 400 even for a client holding versions.
    min("/ver/lock/min-locked-in-version/vc")
        .await
        .assert_conjure_error(400, "INVALID_ARGUMENT");
    assert!(unlock(&server, "ver", b.token_id).await);
    assert_eq!(min(VC).await.number(), 50);
    assert!(unlock(&server, "ver", a.token_id).await);
    let r = min(VC).await;
    assert_eq!((r.status, r.body.as_str()), (204, ""), "{r:?}");

    // The anonymous client: paths without a client, and with an empty last segment.
    let r = call(
        &server,
        "/ver/lock/try-lock",
        &with_version(&[("ver/e", "WRITE")], 40).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let anon: HeldToken = serde_json::from_str(&r.body).unwrap();
    for path in [
        "/ver/lock/min-locked-in-version-id",
        "/ver/lock/min-locked-in-version-id/",
        "/ver/lock/min-locked-in-version-id-for-client",
        "/ver/lock/min-locked-in-version-id-for-client/",
    ] {
        assert_eq!(min(path).await.number(), 40, "{path}");
    }
    min("/ver/lock/min-locked-in-version")
        .await
        .assert_conjure_error(400, "INVALID_ARGUMENT");
    assert!(unlock(&server, "ver", anon.token_id).await);
    assert_eq!(min("/ver/lock/min-locked-in-version-id").await.status, 204);
}

#[tokio::test]
async fn tokens_cross_between_lk_and_legacy_paths_and_v1_is_apart_from_v2() {
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[]);
    let body = json!({"lockClient": "svc", "lockRequest": try_now(&[("shared", "WRITE")])});
    let r = call(&server, "/lk/laghl/x", &body.to_string()).await;
    assert_eq!(r.status, 200, "{r:?}");
    let held: HeldToken = serde_json::from_str(&r.body).unwrap();
    // The lock taken through /lk blocks the legacy path...
    assert!(
        try_lock(&server, "x", "other", &try_now(&[("shared", "WRITE")]))
            .await
            .is_none()
    );
    // ...and another client's /lk request for it is 204 (the same client would re-enter).
    let other = json!({"lockClient": "svc2", "lockRequest": try_now(&[("shared", "WRITE")])});
    assert_eq!(
        call(&server, "/lk/laghl/x", &other.to_string())
            .await
            .status,
        204
    );
    // Refreshed through the legacy path, unlocked through it.
    let refreshed = call(
        &server,
        "/x/lock/refresh-lock-tokens",
        &format!(r#"[{{"tokenId":{},"expirationDateMs":0}}]"#, held.token_id),
    )
    .await;
    let refreshed: Vec<RefreshToken> = serde_json::from_str(&refreshed.body).unwrap();
    assert_eq!(refreshed[0].token_id, held.token_id);
    assert!(unlock(&server, "x", held.token_id).await);
    // The other way round: lock on the legacy path, refresh and unlock through /lk.
    let r = call(
        &server,
        "/x/lock/lock/legacy",
        &try_now(&[("shared", "WRITE")]).to_string(),
    )
    .await;
    let token: RefreshToken = serde_json::from_str(&r.body).unwrap();
    let r = call(
        &server,
        "/lk/rlrt/x",
        &format!(r#"[{{"tokenId":{},"expirationDateMs":0}}]"#, token.token_id),
    )
    .await;
    let refreshed: Vec<RefreshToken> = serde_json::from_str(&r.body).unwrap();
    assert_eq!(refreshed.len(), 1);
    assert!(refreshed[0].expiration_date_ms >= token.expiration_date_ms);
    // A v2 lock on the same bytes does not conflict with the v1 lock.
    let v2 = call(
        &server,
        "/tl/l/x",
        &json!({"requestId": uuid::Uuid::new_v4(), "lockDescriptors": [b64("shared")], "acquireTimeoutMs": 0})
            .to_string(),
    )
    .await;
    assert_eq!(v2.json()["type"], "successful", "{v2:?}");
    let r = call(
        &server,
        "/lk/us/x",
        &format!(r#"{{"tokenId":{},"creationDateMs":0}}"#, token.token_id),
    )
    .await;
    assert_eq!(r.body, "true");
    // Namespaces have separate tables.
    assert!(
        try_lock(&server, "y", "z", &try_now(&[("shared", "WRITE")]))
            .await
            .is_some()
    );
}

#[tokio::test]
async fn blocking_requests_are_cut_off_with_429_retry_after_0_and_the_pool_is_bounded() {
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(
        &data,
        &[
            ("TIMELOCK__LOCK_V1__BLOCKING_TIMEOUT_MS", "500"),
            ("TIMELOCK__LOCK_V1__MAX_CONCURRENT_LOCK_REQUESTS", "1"),
        ],
    );
    let held = try_lock(&server, "cut", "holder", &try_now(&[("c", "WRITE")]))
        .await
        .unwrap();
    let forever = request(
        &[("c", "WRITE")],
        "LOCK_ALL_OR_NONE",
        "BLOCK_INDEFINITELY",
        json!({}),
    );
    // New-protocol client: 429 with Retry-After: 0 and no body after the cut-off.
    let started = Instant::now();
    let r = client()
        .post(server.url("/cut/lock/lock/w"))
        .header("content-type", "application/json")
        .header("user-agent", NEW_PROTOCOL)
        .body(forever.to_string())
        .send()
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "0");
    assert!(waited >= Duration::from_millis(450), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    assert_eq!(r.text().await.unwrap(), "");
    // The same through /lk.
    let body = json!({"lockClient": "w", "lockRequest": forever});
    let r = client()
        .post(server.url("/lk/laghl/cut"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "0");
    // A legacy client (no atlasdb-http-client/2.0) gets 503.
    let r = send(
        client()
            .post(server.url("/cut/lock/lock/w"))
            .header("content-type", "application/json")
            .header("user-agent", "curl/8")
            .body(forever.to_string()),
    )
    .await;
    assert_eq!(r.status, 503, "{r:?}");
    // The cut-off request held nothing.
    assert!(unlock(&server, "cut", held.token_id).await);
    let t = try_lock(&server, "cut", "after", &try_now(&[("c", "WRITE")]))
        .await
        .unwrap();

    // Pool of 1: while one request blocks, another gets 429 without Retry-After.
    let blocked = {
        let url = server.url("/cut/lock/lock/w");
        let body = forever.to_string();
        tokio::spawn(async move {
            send(
                client()
                    .post(url)
                    .header("content-type", "application/json")
                    .header("user-agent", NEW_PROTOCOL)
                    .body(body),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let r = client()
        .post(server.url("/cut/lock/try-lock/z"))
        .header("content-type", "application/json")
        .header("user-agent", NEW_PROTOCOL)
        .body(try_now(&[("other", "WRITE")]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_none());
    assert_eq!(blocked.await.unwrap().status, 429);
    assert!(unlock(&server, "cut", t.token_id).await);
}

/// One lock hold seen by a client: must have been held from the grant's answer until the unlock
/// was sent.
#[derive(Debug, Clone)]
struct Hold {
    lock: usize,
    write: bool,
    from: Instant,
    to: Instant,
}

/// Pairs of holds that the server must never have allowed at once: a writer overlapping any
/// other holder of the same lock.
fn exclusion_violations(holds: &[Hold]) -> Vec<(Hold, Hold)> {
    let mut found = Vec::new();
    for (i, a) in holds.iter().enumerate() {
        for b in &holds[i + 1..] {
            if a.lock == b.lock && (a.write || b.write) && a.from < b.to && b.from < a.to {
                found.push((a.clone(), b.clone()));
            }
        }
    }
    found
}

#[test]
fn the_exclusion_checker_catches_overlaps() {
    let t = Instant::now();
    let ms = |n| t + Duration::from_millis(n);
    let hold = |lock, write, a, b| Hold {
        lock,
        write,
        from: ms(a),
        to: ms(b),
    };
    // Two readers overlap: fine. Writer after them: fine.
    assert!(exclusion_violations(&[
        hold(0, false, 0, 10),
        hold(0, false, 5, 15),
        hold(0, true, 16, 20)
    ])
    .is_empty());
    // A writer overlapping a reader, or another writer: caught.
    assert_eq!(
        exclusion_violations(&[hold(0, false, 0, 10), hold(0, true, 5, 15)]).len(),
        1
    );
    assert_eq!(
        exclusion_violations(&[hold(1, true, 0, 10), hold(1, true, 9, 15)]).len(),
        1
    );
    // Different locks never conflict.
    assert!(exclusion_violations(&[hold(0, true, 0, 10), hold(1, true, 0, 10)]).is_empty());
}

#[tokio::test]
async fn concurrent_readers_and_writers_never_overlap_a_writer() {
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[]);
    let clients = 8;
    let locks = ["L0", "L1", "L2"];
    let run_for = Duration::from_secs(4);
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let base = server.url("/excl/lock");
            tokio::spawn(async move {
                let http = client();
                let mut holds = Vec::new();
                let mut seed = 0x9e37_79b9_u64.wrapping_mul(c as u64 + 1);
                let mut next = move || {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed
                };
                let stop = Instant::now() + run_for;
                while Instant::now() < stop {
                    let lock = (next() % 3) as usize;
                    let write = next() % 3 == 0;
                    let body = request(
                        &[(locks[lock], if write { "WRITE" } else { "READ" })],
                        "LOCK_ALL_OR_NONE",
                        "BLOCK_UNTIL_TIMEOUT",
                        json!({"blockingDuration": {"time": 200, "unit": "MILLISECONDS"}}),
                    );
                    let r = http
                        .post(format!("{base}/try-lock/client{c}"))
                        .header("content-type", "application/json")
                        .body(body.to_string())
                        .send()
                        .await
                        .unwrap();
                    if r.status() == 204 {
                        continue;
                    }
                    assert_eq!(r.status(), 200);
                    let token: HeldToken = serde_json::from_str(&r.text().await.unwrap()).unwrap();
                    let from = Instant::now();
                    tokio::time::sleep(Duration::from_millis(next() % 15)).await;
                    let to = Instant::now();
                    let r = http
                        .post(format!("{base}/unlock-simple"))
                        .header("content-type", "application/json")
                        .body(format!(
                            r#"{{"tokenId":{},"creationDateMs":0}}"#,
                            token.token_id
                        ))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.text().await.unwrap(), "true");
                    holds.push(Hold {
                        lock,
                        write,
                        from,
                        to,
                    });
                }
                holds
            })
        })
        .collect();
    let mut holds = Vec::new();
    for t in tasks {
        holds.extend(t.await.unwrap());
    }
    let writes = holds.iter().filter(|h| h.write).count();
    let violations = exclusion_violations(&holds);
    eprintln!(
        "v1 exclusion: {} holds ({writes} writes, {} reads) by {clients} clients on {} locks, {} violations",
        holds.len(),
        holds.len() - writes,
        locks.len(),
        violations.len()
    );
    assert!(
        writes > 10 && holds.len() - writes > 10,
        "too little contention to mean anything"
    );
    assert!(violations.is_empty(), "{violations:?}");
}
