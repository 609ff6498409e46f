//! Lock endpoints: Conjure `/tl/{l,wl,rl,rl2,ul,ul2,lt}/{ns}`, lock watches `/lw/...`,
//! `/tl/management/invalidateResources`, and the legacy async v2 lock paths under
//! `/{ns}/timelock/` (`lock`, `lock-v2`, `await-locks`, `refresh-locks(-v2)`, `unlock`,
//! `leader-time`, `current-time-millis`, `lock-diagnostic-config`).
//!
//! Conjure carries lock descriptors as base64 strings; the legacy paths as `{"bytes":"<b64>"}`.

use std::time::Duration;

use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use uuid::Uuid;

use super::extract::{JsonBody, NsName};
use super::wire::lock::{
    conjure_lock_response, ConjureLockRequest, LegacyLockRequest, RefreshResponse,
    StartWatchingRequest, TokensRequest,
};
use super::wire::write::JsonWriter;
use super::{json, json_number, no_content, AppState};
use crate::error::TimelockError;
use crate::lock::{Lease, LockOutcome};
use crate::namespaces::{validate_name, validate_names, Namespace};
use crate::transactions::LockToken;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/tl/wl/{ns}", post(conjure_wait_for_locks))
        .route("/tl/rl/{ns}", post(conjure_refresh))
        .route("/tl/ul/{ns}", post(conjure_unlock))
        .route("/tl/lt/{ns}", post(leader_time))
        .route("/lw/sw/{ns}", post(start_watching))
        .route("/lw/diagnostics/logState/{ns}", post(log_state))
        .route("/tl/management/invalidateResources", post(invalidate_resources))
        .route("/{ns}/timelock/lock", post(legacy_lock))
        .route("/{ns}/timelock/lock-v2", post(legacy_lock_v2))
        .route("/{ns}/timelock/await-locks", post(legacy_await_locks))
        .route("/{ns}/timelock/refresh-locks", post(legacy_refresh))
        .route("/{ns}/timelock/refresh-locks-v2", post(legacy_refresh_v2))
        .route("/{ns}/timelock/unlock", post(legacy_unlock))
        .route("/{ns}/timelock/leader-time", get(leader_time).post(leader_time))
        .route("/{ns}/timelock/current-time-millis", post(current_time_millis))
        .route(
            "/{ns}/timelock/do-not-use-without-explicit-atlasdb-authorisation/lock-diagnostic-config",
            post(lock_diagnostic_config),
        )
}

fn timeout(ms: i64) -> Result<Duration, TimelockError> {
    u64::try_from(ms).map(Duration::from_millis).map_err(|_| {
        TimelockError::InvalidArgument(format!("acquireTimeoutMs must not be negative, got {ms}"))
    })
}

/// Validates the namespace name and request, then finds or creates the namespace.
async fn namespace(state: &AppState, ns: &str) -> Result<std::sync::Arc<Namespace>, TimelockError> {
    state.namespace(ns).await
}

/// A lock or wait-for-locks request, whichever API it came through.
struct LockCall {
    request_id: Uuid,
    descriptors: Vec<Bytes>,
    timeout_ms: i64,
}

impl From<ConjureLockRequest> for LockCall {
    fn from(r: ConjureLockRequest) -> Self {
        let descriptors = r.lock_descriptors.into_iter().map(|d| d.0).collect();
        Self {
            request_id: r.request_id,
            descriptors,
            timeout_ms: r.acquire_timeout_ms,
        }
    }
}

impl From<LegacyLockRequest> for LockCall {
    fn from(r: LegacyLockRequest) -> Self {
        let descriptors = r.lock_descriptors.into_iter().map(|d| d.bytes.0).collect();
        Self {
            request_id: r.request_id,
            descriptors,
            timeout_ms: r.acquire_timeout_ms,
        }
    }
}

async fn do_lock(
    state: &AppState,
    ns: &str,
    call: LockCall,
    wait_only: bool,
) -> Result<LockOutcome, TimelockError> {
    let timeout = timeout(call.timeout_ms)?;
    let namespace = namespace(state, ns).await?;
    let locks = namespace.locks();
    locks.validate_descriptors(&call.descriptors)?;
    if wait_only {
        locks
            .wait_for_locks(call.request_id, call.descriptors, timeout)
            .await
    } else {
        locks.lock(call.request_id, call.descriptors, timeout).await
    }
}

pub(super) async fn conjure_lock(
    State(state): State<AppState>,
    NsName(ns): NsName,
    JsonBody(request): JsonBody<ConjureLockRequest>,
) -> Result<Response, TimelockError> {
    let request_id = request.request_id;
    let outcome = do_lock(&state, &ns, request.into(), false).await?;
    Ok(conjure_lock_response(request_id, &outcome))
}

async fn conjure_wait_for_locks(
    State(state): State<AppState>,
    NsName(ns): NsName,
    JsonBody(request): JsonBody<ConjureLockRequest>,
) -> Result<Response, TimelockError> {
    let outcome = do_lock(&state, &ns, request.into(), true).await?;
    Ok(json(
        &serde_json::json!({"wasSuccessful": matches!(outcome, LockOutcome::Acquired(_))}),
    ))
}

fn ids(tokens: &[LockToken]) -> Vec<Uuid> {
    tokens.iter().map(|t| t.request_id).collect()
}

fn tokens(ids: Vec<Uuid>) -> Vec<LockToken> {
    ids.into_iter()
        .map(|request_id| LockToken { request_id })
        .collect()
}

/// Refreshes and returns the still-valid subset with a lease that starts before the refresh.
async fn do_refresh(
    state: &AppState,
    ns: &str,
    requested: &[Uuid],
) -> Result<(Vec<Uuid>, Lease), TimelockError> {
    let namespace = namespace(state, ns).await?;
    let locks = namespace.locks();
    let lease = locks.lease();
    Ok((locks.refresh(requested)?, lease))
}

async fn do_unlock(
    state: &AppState,
    ns: &str,
    requested: &[Uuid],
) -> Result<Vec<Uuid>, TimelockError> {
    namespace(state, ns).await?.locks().unlock(requested)
}

async fn conjure_refresh(
    State(state): State<AppState>,
    NsName(ns): NsName,
    JsonBody(request): JsonBody<TokensRequest>,
) -> Result<Response, TimelockError> {
    let (refreshed, lease) = do_refresh(&state, &ns, &ids(&request.tokens)).await?;
    Ok(json(&RefreshResponse {
        refreshed_tokens: tokens(refreshed),
        lease,
    }))
}

pub(super) async fn conjure_refresh_v2(
    State(state): State<AppState>,
    NsName(ns): NsName,
    JsonBody(request): JsonBody<Vec<Uuid>>,
) -> Result<Response, TimelockError> {
    let (refreshed, lease) = do_refresh(&state, &ns, &request).await?;
    Ok(json(&RefreshResponse {
        refreshed_tokens: refreshed,
        lease,
    }))
}

async fn conjure_unlock(
    State(state): State<AppState>,
    NsName(ns): NsName,
    JsonBody(request): JsonBody<TokensRequest>,
) -> Result<Response, TimelockError> {
    let unlocked = do_unlock(&state, &ns, &ids(&request.tokens)).await?;
    Ok(json(&serde_json::json!({"tokens": tokens(unlocked)})))
}

pub(super) async fn conjure_unlock_v2(
    State(state): State<AppState>,
    NsName(ns): NsName,
    JsonBody(request): JsonBody<Vec<Uuid>>,
) -> Result<Response, TimelockError> {
    let unlocked = do_unlock(&state, &ns, &request).await?;
    let mut w = JsonWriter::with_capacity(unlocked.len() * 39 + 2);
    w.uuids(&unlocked);
    Ok(w.into_response())
}

async fn leader_time(
    State(state): State<AppState>,
    NsName(ns): NsName,
) -> Result<Response, TimelockError> {
    Ok(json(&namespace(&state, &ns).await?.locks().leader_time()))
}

async fn start_watching(
    State(state): State<AppState>,
    NsName(ns): NsName,
    JsonBody(request): JsonBody<StartWatchingRequest>,
) -> Result<Response, TimelockError> {
    for reference in &request.references {
        reference.validate().map_err(|e| {
            TimelockError::InvalidArgument(format!("invalid lock watch reference: {e}"))
        })?;
    }
    namespace(&state, &ns)
        .await?
        .locks()
        .start_watching(request.references)?;
    Ok(no_content())
}

async fn log_state(
    State(state): State<AppState>,
    NsName(ns): NsName,
) -> Result<Response, TimelockError> {
    let namespace = namespace(&state, &ns).await?;
    let update = namespace.locks().watch_update(None);
    tracing::info!(namespace = %ns, state = %serde_json::to_string(&update).unwrap_or_default(), "lock watch log state");
    Ok(no_content())
}

async fn invalidate_resources(
    State(state): State<AppState>,
    JsonBody(names): JsonBody<Vec<String>>,
) -> Result<Response, TimelockError> {
    validate_names(&names)?;
    state
        .leadership
        .check_leads_all(names.iter().map(String::as_str))?;
    for name in &names {
        if let Some(namespace) = state.registry(name)?.get(name) {
            namespace.invalidate_resources();
            tracing::info!(namespace = %name, "resources invalidated: new leadership id, locks dropped");
        }
    }
    Ok(no_content())
}

async fn legacy_lock(
    State(state): State<AppState>,
    NsName(ns): NsName,
    JsonBody(request): JsonBody<LegacyLockRequest>,
) -> Result<Response, TimelockError> {
    let request_id = request.request_id;
    let outcome = do_lock(&state, &ns, request.into(), false).await?;
    let token = matches!(outcome, LockOutcome::Acquired(_)).then_some(LockToken { request_id });
    Ok(json(&serde_json::json!({"tokenOrEmpty": token})))
}

async fn legacy_lock_v2(
    State(state): State<AppState>,
    NsName(ns): NsName,
    JsonBody(request): JsonBody<LegacyLockRequest>,
) -> Result<Response, TimelockError> {
    let request_id = request.request_id;
    let outcome = do_lock(&state, &ns, request.into(), false).await?;
    Ok(match outcome {
        LockOutcome::Acquired(lease) => json(&serde_json::json!({
            "type": "success",
            "token": LockToken { request_id },
            "lease": lease,
        })),
        LockOutcome::TimedOut => json(&serde_json::json!({"type": "failure"})),
    })
}

async fn legacy_await_locks(
    State(state): State<AppState>,
    NsName(ns): NsName,
    JsonBody(request): JsonBody<LegacyLockRequest>,
) -> Result<Response, TimelockError> {
    let outcome = do_lock(&state, &ns, request.into(), true).await?;
    Ok(json(
        &serde_json::json!({"wasSuccessful": matches!(outcome, LockOutcome::Acquired(_))}),
    ))
}

async fn legacy_refresh(
    State(state): State<AppState>,
    NsName(ns): NsName,
    JsonBody(request): JsonBody<Vec<LockToken>>,
) -> Result<Response, TimelockError> {
    let (refreshed, _) = do_refresh(&state, &ns, &ids(&request)).await?;
    Ok(json(&tokens(refreshed)))
}

async fn legacy_refresh_v2(
    State(state): State<AppState>,
    NsName(ns): NsName,
    JsonBody(request): JsonBody<Vec<LockToken>>,
) -> Result<Response, TimelockError> {
    let (refreshed, lease) = do_refresh(&state, &ns, &ids(&request)).await?;
    Ok(json(&RefreshResponse {
        refreshed_tokens: tokens(refreshed),
        lease,
    }))
}

async fn legacy_unlock(
    State(state): State<AppState>,
    NsName(ns): NsName,
    JsonBody(request): JsonBody<Vec<LockToken>>,
) -> Result<Response, TimelockError> {
    Ok(json(&tokens(do_unlock(&state, &ns, &ids(&request)).await?)))
}

async fn current_time_millis(NsName(ns): NsName) -> Result<Response, TimelockError> {
    validate_name(&ns)?;
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    Ok(json_number(millis))
}

async fn lock_diagnostic_config(NsName(ns): NsName) -> Result<Response, TimelockError> {
    validate_name(&ns)?;
    Ok(no_content())
}
