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
use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

use super::decode::{decoded_by_serde, once, Decode, Scanner};
use super::extract::{JsonBody, NsName};
use super::write::JsonWriter;
use super::{json, json_number, no_content, AppState};
use crate::error::TimelockError;
use crate::lock::watch::LockWatchReference;
use crate::lock::{Lease, LockOutcome};
use crate::namespaces::{validate_name, validate_names, Namespace};
use crate::transactions::LockToken;

// Request bodies decoded by serde alone (see `JsonBody`).
decoded_by_serde!(TokensRequest, StartWatchingRequest, LegacyLockRequest);

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

/// A base64-encoded byte string (Conjure `binary`).
#[derive(Debug, Clone)]
pub struct B64(pub Bytes);

impl<'de> Deserialize<'de> for B64 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map(|v| B64(Bytes::from(v)))
            .map_err(|e| serde::de::Error::custom(format!("invalid base64 lock descriptor: {e}")))
    }
}

/// A legacy JSON lock descriptor, `{"bytes":"<b64>"}`.
#[derive(Debug, Clone, Deserialize)]
pub struct LegacyDescriptor {
    pub bytes: B64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConjureLockRequest {
    pub(crate) request_id: Uuid,
    pub(crate) lock_descriptors: Vec<B64>,
    pub(crate) acquire_timeout_ms: i64,
}

/// The strict decoder (see [`super::decode`]): the three fields, each once, descriptors as
/// base64 strings without escapes. Anything else, an unknown field or a descriptor that is not
/// valid base64 among them, goes to serde, which decides (and words every error).
impl Decode for ConjureLockRequest {
    fn decode_fast(body: &[u8]) -> Option<Self> {
        let mut s = Scanner::new(body);
        let (mut request_id, mut descriptors, mut timeout) = (None, None, None);
        s.object(|s, key| match key {
            b"requestId" => once(&mut request_id, s.uuid()),
            b"lockDescriptors" => {
                let mut list = Vec::new();
                let parsed = s.array(|s| {
                    let text = s.plain_string()?;
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(text)
                        .ok()?;
                    list.push(B64(Bytes::from(bytes)));
                    Some(())
                });
                once(&mut descriptors, parsed.map(|()| list))
            }
            b"acquireTimeoutMs" => once(&mut timeout, s.i64()),
            _ => None,
        })?;
        s.end()?;
        Some(Self {
            request_id: request_id?,
            lock_descriptors: descriptors?,
            acquire_timeout_ms: timeout?,
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LegacyLockRequest {
    pub(crate) request_id: Uuid,
    pub(crate) lock_descriptors: Vec<LegacyDescriptor>,
    pub(crate) acquire_timeout_ms: i64,
}

fn timeout(ms: i64) -> Result<Duration, TimelockError> {
    u64::try_from(ms).map(Duration::from_millis).map_err(|_| {
        TimelockError::InvalidArgument(format!("acquireTimeoutMs must not be negative, got {ms}"))
    })
}

/// Validates the namespace name and request, then finds or creates the namespace.
async fn namespace(state: &AppState, ns: &str) -> Result<std::sync::Arc<Namespace>, TimelockError> {
    state.namespaces()?.get_or_create(ns).await
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

/// `{"type":"successful","successful":{"lockToken":{"requestId":..},"lease":..}}` or
/// `{"type":"unsuccessful","unsuccessful":{}}`.
fn conjure_lock_response(request_id: Uuid, outcome: &LockOutcome) -> Response {
    let mut w = JsonWriter::with_capacity(256); // typically 216 bytes: no regrowth
    match outcome {
        LockOutcome::Acquired(lease) => {
            w.raw(r#"{"successful":{"lease":"#)
                .lease(lease)
                .raw(r#","lockToken":{"requestId":"#)
                .uuid(&request_id)
                .raw(r#"}},"type":"successful"}"#);
        }
        LockOutcome::TimedOut => {
            w.raw(r#"{"type":"unsuccessful","unsuccessful":{}}"#);
        }
    }
    w.into_response()
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

#[derive(Deserialize)]
pub(crate) struct TokensRequest {
    tokens: Vec<LockToken>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RefreshResponse<T> {
    refreshed_tokens: Vec<T>,
    lease: Lease,
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

#[derive(Deserialize)]
pub(crate) struct StartWatchingRequest {
    references: Vec<LockWatchReference>,
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
    for name in &names {
        if let Some(namespace) = state.namespaces()?.get(name) {
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    type Fields = (Uuid, Vec<Bytes>, i64);

    fn fields(r: ConjureLockRequest) -> Fields {
        let descriptors = r.lock_descriptors.into_iter().map(|d| d.0).collect();
        (r.request_id, descriptors, r.acquire_timeout_ms)
    }

    /// Lock descriptors: valid base64 mostly, and what serde and base64 refuse or see differently.
    fn descriptor() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => prop::collection::vec(any::<u8>(), 0..12)
                .prop_map(|b| base64::engine::general_purpose::STANDARD.encode(b)),
            1 => Just("cm93".to_string()),
            1 => Just("cm93=".to_string()),
            1 => Just("c m93".to_string()),
            1 => Just("cm\\u0039".to_string()),
            1 => Just("cm93\\/".to_string()),
            1 => Just("é".to_string()),
            1 => Just("ab-_".to_string()),
            1 => Just("ab+/".to_string()),
        ]
    }

    fn body() -> impl Strategy<Value = String> {
        let id = prop_oneof![
            6 => Just("6f1c2a4e-5b7d-4e0f-8a9b-0c1d2e3f4a5b"),
            1 => Just("6F1C2A4E5B7D4E0F8A9B0C1D2E3F4A5B"),
            1 => Just("nope"),
        ];
        let timeout = prop_oneof![
            6 => (-2i64..5000).prop_map(|n| n.to_string()),
            1 => Just("1.5".to_string()),
            1 => Just("null".to_string()),
            1 => Just("\"10\"".to_string()),
        ];
        let descriptors = prop_oneof![
            8 => prop::collection::vec(descriptor(), 0..4).prop_map(|d| {
                let quoted: Vec<String> = d.iter().map(|d| format!("\"{d}\"")).collect();
                format!("[{}]", quoted.join(","))
            }),
            1 => Just("null".to_string()),
            1 => Just("[1]".to_string()),
        ];
        (id, descriptors, timeout, 0usize..8)
            .prop_map(|(id, d, t, variant)| {
                let mut members = vec![
                    format!("\"requestId\":\"{id}\""),
                    format!("\"lockDescriptors\":{d}"),
                    format!("\"acquireTimeoutMs\":{t}"),
                ];
                match variant {
                    0 => members.push("\"clientDescription\":\"x\"".to_string()),
                    1 => {
                        members.remove(2);
                    }
                    2 => members.push(format!("\"acquireTimeoutMs\":{t}")),
                    _ => {}
                }
                members
            })
            .prop_shuffle()
            .prop_map(|m| format!("{{{}}}", m.join(",")))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        /// Whatever the fast decoder accepts, serde decodes to the same request.
        #[test]
        fn lock_requests_decode_as_serde_does(body in body()) {
            if let Some(fast) = ConjureLockRequest::decode_fast(body.as_bytes()) {
                let serde = serde_json::from_str::<ConjureLockRequest>(&body).map(fields).ok();
                prop_assert_eq!(Some(fields(fast)), serde, "{}", body);
            }
        }
    }

    #[test]
    fn clients_lock_requests_take_the_fast_path() {
        let body = r#"{"requestId":"6f1c2a4e-5b7d-4e0f-8a9b-0c1d2e3f4a5b","lockDescriptors":["cm93LTE=","cm93LTI="],"acquireTimeoutMs":1000}"#;
        let fast = ConjureLockRequest::decode_fast(body.as_bytes()).expect("fast path");
        let (id, descriptors, timeout) = fields(fast);
        assert_eq!(id.to_string(), "6f1c2a4e-5b7d-4e0f-8a9b-0c1d2e3f4a5b");
        assert_eq!(descriptors, [Bytes::from("row-1"), Bytes::from("row-2")]);
        assert_eq!(timeout, 1000);
        let unknown = body.replace(
            "\"acquireTimeoutMs\"",
            "\"clientDescription\":\"c\",\"acquireTimeoutMs\"",
        );
        assert!(ConjureLockRequest::decode_fast(unknown.as_bytes()).is_none());
    }
}
