//! The legacy lock service (v1) over HTTP: the Conjure shim `/lk/{laghl,rlrt,us}/{ns}` and
//! every `/{ns}/lock/...` path of TimeLock's `LockV1Resource` (spec sections 1.4, 1.6), both on
//! the namespace's one v1 table ([`crate::lock::v1`]), so a token from one API refreshes and
//! unlocks through the other.
//!
//! JSON follows AtlasDB's `lock-api-objects`: token and grant ids are 127-bit integers written
//! and read as exact JSON numbers (`u128`, never floats); a `LockClient` is
//! `{"clientId":"name"}`; descriptors are `{"bytes":"<b64>"}`; timeouts
//! `{"time":120,"unit":"SECONDS"}`; absent results are 204; booleans are bare `true`/`false`.
//!
//! Lock requests take a permit from a server-wide pool (`lock_v1.max_concurrent_lock_requests`,
//! 429 when none is left, as TimeLock's `ThreadPooledLockService`) and are cut off after
//! `lock_v1.blocking_timeout_ms` (TimeLock's `BlockingTimeLimitedLockService`): 429 with
//! `Retry-After: 0`, except that legacy `/{ns}/lock/*` clients without the
//! `atlasdb-http-client/2.0` agent get 503 (spec section 2).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;

use tokio::sync::Semaphore;

use super::extract::{JsonBody, NsName};
use super::routing::speaks_new_protocol;
use super::wire::lock::LegacyDescriptor;
use super::wire::lock_v1::{
    boolean, grant, held_locks_token, lock_response, lock_state, refresh_token,
    ConjureLockV1Request, GrantRef, LockServerOptionsOut, TokenRef, WireLockRequest,
};
use super::{json, json_number, no_content, AppState};
use crate::config::LockV1Settings;
use crate::error::TimelockError;
use crate::lock::v1::{
    wall_clock_ms, GrantView, LockGroupBehavior, LockRequest, LockResult, LockServiceV1,
    TimeDuration, TimeUnit, MAX_LOCK_TIMEOUT, RANDOM_BIT_COUNT,
};

/// The blocking cut-off, the server-wide pool of lock-request permits, and the clock-drift
/// allowance the tables apply (reported by `lock-server-options`).
#[derive(Clone)]
pub struct V1Limits {
    pub blocking_timeout: Duration,
    permits: Arc<Semaphore>,
    clock_drift_ms: u64,
}

impl From<&LockV1Settings> for V1Limits {
    fn from(s: &LockV1Settings) -> Self {
        Self {
            blocking_timeout: Duration::from_millis(s.blocking_timeout_ms),
            permits: Arc::new(Semaphore::new(s.max_concurrent_lock_requests)),
            clock_drift_ms: s.max_clock_drift_ms,
        }
    }
}

pub fn routes() -> Router<AppState> {
    let mut router = Router::new()
        .route("/lk/laghl/{ns}", post(conjure_lock_and_get_held_locks))
        .route("/lk/rlrt/{ns}", post(refresh_lock_tokens))
        .route("/lk/us/{ns}", post(unlock));
    // Each `{client}` path also without the client (the anonymous client `""`), and with an
    // empty last segment, which is how a client path template renders the anonymous client.
    let with_client: [(&str, axum::routing::MethodRouter<AppState>); 9] = [
        ("lock-with-full-response", post(lock_with_full_response)),
        ("lock", post(lock)),
        ("try-lock", post(try_lock)),
        ("get-tokens", post(get_tokens)),
        ("use-grant", post(use_grant)),
        ("use-grant-id", post(use_grant_id)),
        (
            "min-locked-in-version-id-for-client",
            post(min_locked_in_version_id),
        ),
        ("min-locked-in-version", post(min_locked_in_version)),
        ("min-locked-in-version-id", post(min_locked_in_version_id)),
    ];
    for (name, handler) in with_client {
        router = router
            .route(&format!("/{{ns}}/lock/{name}"), handler.clone())
            .route(&format!("/{{ns}}/lock/{name}/"), handler.clone());
        if name != "min-locked-in-version-id" {
            router = router.route(&format!("/{{ns}}/lock/{name}/{{client}}"), handler);
        }
    }
    router
        .route("/{ns}/lock/unlock", post(unlock))
        .route("/{ns}/lock/unlock-simple", post(unlock))
        .route("/{ns}/lock/unlock-deprecated", post(unlock))
        .route("/{ns}/lock/unlock-and-freeze", post(unlock_and_freeze))
        .route("/{ns}/lock/refresh-tokens", post(refresh_tokens))
        .route("/{ns}/lock/refresh-lock-tokens", post(refresh_lock_tokens))
        .route("/{ns}/lock/refresh-grant", post(refresh_grant))
        .route("/{ns}/lock/refresh-grant-id", post(refresh_grant_id))
        .route("/{ns}/lock/convert-to-grant", post(convert_to_grant))
        .route("/{ns}/lock/lock-server-options", post(lock_server_options))
        .route("/{ns}/lock/current-time-millis", post(current_time_millis))
        .route("/{ns}/lock/log-current-state", post(log_current_state))
        .route(
            "/{ns}/lock/get-debugging-lock-state",
            post(debugging_lock_state),
        )
}

/// `{ns}` and the optional `{client}` path segments (absent or empty: anonymous).
struct NsClient {
    ns: String,
    client: String,
}

impl<S: Send + Sync> FromRequestParts<S> for NsClient {
    type Rejection = TimelockError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(mut params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| TimelockError::InvalidArgument(format!("invalid path: {e}")))?;
        let ns = params
            .remove("ns")
            .ok_or_else(|| TimelockError::InvalidArgument("namespace missing in path".into()))?;
        let client = params.remove("client").unwrap_or_default();
        Ok(Self { ns, client })
    }
}

// ---------------------------------------------------------------------------------------------
// Shared steps

async fn table(state: &AppState, ns: &str) -> Result<Arc<LockServiceV1>, TimelockError> {
    Ok(state.namespace(ns).await?.locks_v1())
}

/// Runs a lock request with a permit from the pool and the blocking cut-off.
async fn run_lock(
    state: &AppState,
    ns: &str,
    client: &str,
    request: LockRequest,
) -> Result<LockResult, TimelockError> {
    let table = table(state, ns).await?;
    let _permit = state
        .lock_v1
        .permits
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            TimelockError::TooManyRequests(
                "no permit left for another v1 lock request (lock_v1.max_concurrent_lock_requests)"
                    .into(),
            )
        })?;
    let cutoff = Instant::now() + state.lock_v1.blocking_timeout;
    table.lock(client, &request, Some(cutoff)).await
}

/// Legacy endpoints: a blocking cut-off is 503 for clients that do not speak the new protocol.
fn legacy(headers: &HeaderMap, result: Result<Response, TimelockError>) -> Response {
    match result {
        Ok(response) => response,
        Err(TimelockError::BlockingTimeout(reason)) if !speaks_new_protocol(headers) => {
            tracing::info!(%reason, "blocking limit reached: 503 for a legacy client");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
        Err(e) => e.into_response(),
    }
}

fn parse_id(body: &[u8], what: &str) -> Result<u128, TimelockError> {
    serde_json::from_slice::<u128>(body).map_err(|e| {
        TimelockError::InvalidArgument(format!("the body must be a {what} (a JSON integer): {e}"))
    })
}

// ---------------------------------------------------------------------------------------------
// Conjure `/lk`

async fn conjure_lock_and_get_held_locks(
    State(state): State<AppState>,
    NsName(ns): NsName,
    JsonBody(body): JsonBody<ConjureLockV1Request>,
) -> Result<Response, TimelockError> {
    let request = body.lock_request.into_request()?;
    let result = run_lock(&state, &ns, &body.lock_client, request).await?;
    Ok(match &result.token {
        Some(t) => json(&held_locks_token(t)),
        None => no_content(),
    })
}

// ---------------------------------------------------------------------------------------------
// Legacy `/{ns}/lock/...`

async fn lock_with_full_response(
    State(state): State<AppState>,
    path: NsClient,
    headers: HeaderMap,
    JsonBody(body): JsonBody<WireLockRequest>,
) -> Response {
    let result = async {
        let request = body.into_request()?;
        let result = run_lock(&state, &path.ns, &path.client, request).await?;
        Ok(json(&lock_response(&result)))
    }
    .await;
    legacy(&headers, result)
}

async fn lock(
    State(state): State<AppState>,
    path: NsClient,
    headers: HeaderMap,
    JsonBody(body): JsonBody<WireLockRequest>,
) -> Response {
    let result = async {
        let request = body.into_request()?;
        if request.group != LockGroupBehavior::LockAllOrNone {
            return Err(TimelockError::InvalidArgument(
                "lock() only supports LockGroupBehavior.LOCK_ALL_OR_NONE. Consider using lockAndGetHeldLocks()."
                    .into(),
            ));
        }
        let result = run_lock(&state, &path.ns, &path.client, request).await?;
        Ok(match (&result.token, result.success()) {
            (Some(t), true) => json(&refresh_token(t)),
            _ => no_content(),
        })
    }
    .await;
    legacy(&headers, result)
}

async fn try_lock(
    State(state): State<AppState>,
    path: NsClient,
    headers: HeaderMap,
    JsonBody(body): JsonBody<WireLockRequest>,
) -> Response {
    let result = async {
        let request = body.into_request()?;
        let result = run_lock(&state, &path.ns, &path.client, request).await?;
        Ok(match &result.token {
            Some(t) => json(&held_locks_token(t)),
            None => no_content(),
        })
    }
    .await;
    legacy(&headers, result)
}

/// `/lk/us`, `unlock`, `unlock-simple` and `unlock-deprecated`: each body names its token by `tokenId`
/// (a `LockRefreshToken`, `SimpleHeldLocksToken` or `HeldLocksToken`), so one handler serves all.
async fn unlock(
    State(state): State<AppState>,
    NsName(ns): NsName,
    JsonBody(token): JsonBody<TokenRef>,
) -> Result<Response, TimelockError> {
    Ok(boolean(table(&state, &ns).await?.unlock(token.token_id)))
}

async fn unlock_and_freeze(
    State(state): State<AppState>,
    NsName(ns): NsName,
    JsonBody(token): JsonBody<TokenRef>,
) -> Result<Response, TimelockError> {
    Ok(boolean(
        table(&state, &ns)
            .await?
            .unlock_and_freeze(token.token_id)?,
    ))
}

async fn get_tokens(
    State(state): State<AppState>,
    path: NsClient,
) -> Result<Response, TimelockError> {
    let tokens = table(&state, &path.ns).await?.tokens_of(&path.client)?;
    Ok(json(
        &tokens.iter().map(held_locks_token).collect::<Vec<_>>(),
    ))
}

async fn refresh_tokens(
    State(state): State<AppState>,
    NsName(ns): NsName,
    JsonBody(tokens): JsonBody<Vec<TokenRef>>,
) -> Result<Response, TimelockError> {
    let refreshed = table(&state, &ns)
        .await?
        .refresh(tokens.iter().map(|t| t.token_id));
    Ok(json(
        &refreshed.iter().map(held_locks_token).collect::<Vec<_>>(),
    ))
}

/// `refresh-lock-tokens` and `/lk/rlrt`: the still-valid tokens, as `LockRefreshToken`s.
async fn refresh_lock_tokens(
    State(state): State<AppState>,
    NsName(ns): NsName,
    JsonBody(tokens): JsonBody<Vec<TokenRef>>,
) -> Result<Response, TimelockError> {
    let refreshed = table(&state, &ns)
        .await?
        .refresh(tokens.iter().map(|t| t.token_id));
    Ok(json(
        &refreshed.iter().map(refresh_token).collect::<Vec<_>>(),
    ))
}

fn optional_grant(g: Option<GrantView>) -> Response {
    match g {
        Some(g) => json(&grant(&g)),
        None => no_content(),
    }
}

async fn refresh_grant(
    State(state): State<AppState>,
    NsName(ns): NsName,
    JsonBody(g): JsonBody<GrantRef>,
) -> Result<Response, TimelockError> {
    Ok(optional_grant(
        table(&state, &ns).await?.refresh_grant(g.grant_id),
    ))
}

async fn refresh_grant_id(
    State(state): State<AppState>,
    NsName(ns): NsName,
    body: Bytes,
) -> Result<Response, TimelockError> {
    let id = parse_id(&body, "grant id")?;
    Ok(optional_grant(table(&state, &ns).await?.refresh_grant(id)))
}

async fn convert_to_grant(
    State(state): State<AppState>,
    NsName(ns): NsName,
    JsonBody(token): JsonBody<TokenRef>,
) -> Result<Response, TimelockError> {
    let g = table(&state, &ns).await?.convert_to_grant(token.token_id)?;
    Ok(json(&grant(&g)))
}

async fn use_grant(
    State(state): State<AppState>,
    path: NsClient,
    JsonBody(g): JsonBody<GrantRef>,
) -> Result<Response, TimelockError> {
    let t = table(&state, &path.ns)
        .await?
        .use_grant(&path.client, g.grant_id)?;
    Ok(json(&held_locks_token(&t)))
}

async fn use_grant_id(
    State(state): State<AppState>,
    path: NsClient,
    body: Bytes,
) -> Result<Response, TimelockError> {
    let id = parse_id(&body, "grant id")?;
    let t = table(&state, &path.ns).await?.use_grant(&path.client, id)?;
    Ok(json(&held_locks_token(&t)))
}

/// `min-locked-in-version-id-for-client[/{client}]` and `min-locked-in-version-id` (the
/// anonymous client): TimeLock's `NonTransactionalLockService` overrides only the `String`
/// overload, so these `LockClient` ones reach `LockServiceImpl` and answer the client's smallest
/// held `versionId`, or 204 when it holds none.
async fn min_locked_in_version_id(
    State(state): State<AppState>,
    path: NsClient,
) -> Result<Response, TimelockError> {
    let min = table(&state, &path.ns)
        .await?
        .min_locked_in_version_id(&path.client);
    Ok(match min {
        Some(v) => json_number(v),
        None => no_content(),
    })
}

/// `min-locked-in-version[/{client}]` (the `String` overload): TimeLock's v1 service is
/// non-transactional (`NonTransactionalLockService`), so this is a 400.
async fn min_locked_in_version(
    State(state): State<AppState>,
    path: NsClient,
) -> Result<Response, TimelockError> {
    table(&state, &path.ns).await?;
    Err(TimelockError::InvalidArgument(
        "getMinLockedInVersionId() not supported on non-transactional lock service. Please consult the server logs for more detail."
            .into(),
    ))
}

/// `LockServerOptions` as TimeLock's `LockServiceImpl.getLockServerOptions` builds it.
async fn lock_server_options(
    State(state): State<AppState>,
    NsName(ns): NsName,
) -> Result<Response, TimelockError> {
    table(&state, &ns).await?;
    Ok(json(&LockServerOptionsOut {
        is_standalone_server: true,
        max_allowed_lock_timeout: MAX_LOCK_TIMEOUT,
        max_allowed_clock_drift: whole_seconds_or_millis(state.lock_v1.clock_drift_ms),
        max_allowed_blocking_duration: TimeDuration::new(60, TimeUnit::Seconds),
        max_normal_lock_age: TimeDuration::new(1, TimeUnit::Hours),
        random_bit_count: RANDOM_BIT_COUNT,
        stuck_transaction_timeout: TimeDuration::new(1, TimeUnit::Days),
        slow_log_trigger_millis: 10_000,
    }))
}

/// As TimeLock spells its 5 s default (`{"time":5,"unit":"SECONDS"}`) when it can.
fn whole_seconds_or_millis(ms: u64) -> TimeDuration {
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    if ms % 1000 == 0 {
        TimeDuration::new(ms / 1000, TimeUnit::Seconds)
    } else {
        TimeDuration::new(ms, TimeUnit::Milliseconds)
    }
}

async fn current_time_millis(
    State(state): State<AppState>,
    NsName(ns): NsName,
) -> Result<Response, TimelockError> {
    table(&state, &ns).await?;
    Ok(json_number(wall_clock_ms()))
}

async fn log_current_state(
    State(state): State<AppState>,
    NsName(ns): NsName,
) -> Result<Response, TimelockError> {
    let tokens = table(&state, &ns).await?.token_count();
    tracing::info!(namespace = %ns, tokens, "v1 lock service state (log-current-state)");
    Ok(no_content())
}

async fn debugging_lock_state(
    State(state): State<AppState>,
    NsName(ns): NsName,
    JsonBody(d): JsonBody<LegacyDescriptor>,
) -> Result<Response, TimelockError> {
    let view = table(&state, &ns).await?.lock_state(&d.bytes.0);
    Ok(json(&lock_state(&view)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::wire::lock_v1::LockRefreshTokenOut;
    use crate::lock::v1::LockMode;

    #[test]
    fn token_ids_are_exact_json_integers() {
        let big: u128 = (1u128 << 127) - 1;
        let text = format!(r#"{{"tokenId":{big},"expirationDateMs":5}}"#);
        let parsed: TokenRef = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed.token_id, big);
        let out = serde_json::to_string(&LockRefreshTokenOut {
            token_id: big,
            expiration_date_ms: 5,
        })
        .unwrap();
        assert_eq!(out, text);
        assert_eq!(parse_id(big.to_string().as_bytes(), "id").unwrap(), big);
        assert!(parse_id(b"1.5", "id").is_err());
        assert!(parse_id(b"-1", "id").is_err());
    }

    #[test]
    fn requests_decode_with_defaults() {
        let r: WireLockRequest = serde_json::from_str(
            r#"{"locks":[{"lockDescriptor":{"bytes":"YQ=="},"lockMode":"READ"}],"versionId":null,"creatingThreadName":"t"}"#,
        )
        .unwrap();
        let r = r.into_request().unwrap();
        assert_eq!(r.locks, vec![(Bytes::from_static(b"a"), LockMode::Read)]);
        assert_eq!(r.lock_timeout, TimeDuration::new(120, TimeUnit::Seconds));
        assert_eq!(&*r.creating_thread, "t");
    }
}
