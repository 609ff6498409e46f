//! Timestamp management and TimeLock's management/feedback services:
//! * `/{ns}/timestamp-management/fast-forward?currentTimestamp=T` (204) and `GET .../ping`
//!   (`text/plain` `pong`), which AtlasDB clients call on every start-up;
//! * ours: `/{ns}/timestamp-management/invalidate` (returns the durable bound) and
//!   `/{ns}/timestamp-management/revalidate?currentTimestamp=T` (204), the old service's side of
//!   a migration;
//! * `/tl/management/{fastForward,getNamespaces,getActiveNamespaces,getServerLifecycleId,
//!   achieveConsensus,forceKillTimeLockServer}` and `/tl/feedback/*` (accepted and ignored,
//!   204).

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use super::extract::{query_str, required_i64, JsonBody, NsName};
use super::{json, json_number, no_content, AppState};
use crate::error::TimelockError;
use crate::namespaces::{validate_name, validate_names};
use crate::timestamp::validate_fast_forward;

/// How far `achieveConsensus` moves a namespace ahead (TimeLock's `NamespacedConsensus`).
const CONSENSUS_JUMP: i64 = 1_000_000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/{ns}/timestamp-management/fast-forward",
            post(fast_forward),
        )
        .route("/{ns}/timestamp-management/ping", get(ping))
        .route("/{ns}/timestamp-management/invalidate", post(invalidate))
        .route("/{ns}/timestamp-management/revalidate", post(revalidate))
        .route("/tl/management/fastForward", post(management_fast_forward))
        .route("/tl/management/getNamespaces", post(get_namespaces))
        .route(
            "/tl/management/getActiveNamespaces",
            post(get_active_namespaces),
        )
        .route(
            "/tl/management/getServerLifecycleId",
            post(get_server_lifecycle_id),
        )
        .route("/tl/management/achieveConsensus", post(achieve_consensus))
        .route("/tl/paxos/takeover/{ns}", post(take_over))
        .route("/tl/paxos/takeoverNamespaces", post(take_over_namespaces))
        .route(
            "/tl/management/forceKillTimeLockServer",
            post(force_kill_time_lock_server),
        )
        .route(
            "/tl/feedback/reportFeedback",
            post(no_content_ignoring_body),
        )
        .route(
            "/tl/feedback/reportLeaderMetrics",
            post(no_content_ignoring_body),
        )
}

async fn do_fast_forward(
    state: &AppState,
    ns: &str,
    timestamp: i64,
) -> Result<Response, TimelockError> {
    let registry = state.registry(ns)?;
    validate_fast_forward(registry.limits(), timestamp)?;
    let namespace = registry.get_or_create(ns).await?;
    namespace.timestamps.fast_forward(timestamp).await?;
    Ok(no_content())
}

async fn fast_forward(
    State(state): State<AppState>,
    NsName(ns): NsName,
    RawQuery(query): RawQuery,
) -> Result<Response, TimelockError> {
    // A missing parameter is TimeLock's Long.MIN_VALUE sentinel, rejected with 400.
    let timestamp = required_i64(query.as_deref(), "currentTimestamp")?;
    do_fast_forward(&state, &ns, timestamp).await
}

async fn management_fast_forward(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, TimelockError> {
    let ns = query_str(query.as_deref(), "namespace")?.ok_or_else(|| {
        TimelockError::InvalidArgument("query parameter namespace is required".into())
    })?;
    let timestamp = required_i64(query.as_deref(), "currentTimestamp")?;
    do_fast_forward(&state, &ns, timestamp).await
}

async fn ping(NsName(ns): NsName) -> Result<Response, TimelockError> {
    validate_name(&ns)?;
    let mut response = "pong".into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(response)
}

async fn invalidate(
    State(state): State<AppState>,
    NsName(ns): NsName,
) -> Result<Response, TimelockError> {
    let namespace = state.namespace(&ns).await?;
    Ok(json_number(namespace.timestamps.invalidate().await?))
}

async fn revalidate(
    State(state): State<AppState>,
    NsName(ns): NsName,
    RawQuery(query): RawQuery,
) -> Result<Response, TimelockError> {
    let timestamp = required_i64(query.as_deref(), "currentTimestamp")?;
    let registry = state.registry(&ns)?;
    validate_fast_forward(registry.limits(), timestamp)?;
    let namespace = registry.get_or_create(&ns).await?;
    namespace.timestamps.revalidate(timestamp).await?;
    Ok(no_content())
}

async fn get_namespaces(State(state): State<AppState>) -> Result<Response, TimelockError> {
    Ok(json(&state.leadership.names(false)?))
}

async fn get_active_namespaces(State(state): State<AppState>) -> Result<Response, TimelockError> {
    Ok(json(&state.leadership.names(true)?))
}

async fn get_server_lifecycle_id(State(state): State<AppState>) -> Response {
    json(&state.lifecycle_id)
}

async fn achieve_consensus(
    State(state): State<AppState>,
    JsonBody(names): JsonBody<Vec<String>>,
) -> Result<Response, TimelockError> {
    validate_names(&names)?;
    state
        .leadership
        .check_leads_all(names.iter().map(String::as_str))?;
    for name in &names {
        let namespace = state.namespace(name).await?;
        let fresh = namespace.timestamps.fresh_timestamp().await?;
        let target = fresh.saturating_add(CONSENSUS_JUMP);
        validate_fast_forward(state.registry(name)?.limits(), target)?;
        namespace.timestamps.fast_forward(target).await?;
    }
    Ok(no_content())
}

/// How long a takeover waits for the current leaders to hand off (or, for a dead leader, for
/// its lease to expire) before it answers with what this node leads by then.
const TAKEOVER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// TimeLock's `NamespaceLeadershipTakeoverService.takeover`: asks this node to lead `ns` (with a
/// leader per namespace, its whole shard, handed off safely by its current leader). `true` once
/// this node leads it. A single node leads everything; with one leader, only the leader does
/// (a follower answers `false`: moving the single leadership is a restart of the leader).
async fn take_over(
    State(state): State<AppState>,
    NsName(ns): NsName,
) -> Result<Response, TimelockError> {
    validate_name(&ns)?;
    Ok(json(&!do_take_over(&state, vec![ns]).await.is_empty()))
}

/// `takeoverNamespaces`: the same for a set of names; answers the set this node leads.
async fn take_over_namespaces(
    State(state): State<AppState>,
    JsonBody(names): JsonBody<Vec<String>>,
) -> Result<Response, TimelockError> {
    validate_names(&names)?;
    Ok(json(&do_take_over(&state, names).await))
}

async fn do_take_over(state: &AppState, mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names.dedup();
    if state.killed.is_killed()
        || state
            .shutting_down
            .load(std::sync::atomic::Ordering::Acquire)
    {
        // Out of service: leads nothing, takes nothing.
        return Vec::new();
    }
    state.leadership.take_over(&names, TAKEOVER_WAIT).await
}

/// TimeLock's `forceKillTimeLockServer`: takes this server out of service until an operator
/// restarts it — every client request is refused from now on (503, so clients go to another
/// node), readiness turns red, and lock requests waiting here are ended (their lock services
/// closed, as at shutdown). Answers the lifecycle id of the process it killed, as TimeLock does,
/// so an operator can tell a restarted server from the killed one.
async fn force_kill_time_lock_server(State(state): State<AppState>) -> Response {
    state.killed.kill();
    state.leadership.close();
    tracing::error!(
        lifecycle_id = %state.lifecycle_id,
        "forceKillTimeLockServer: this server now refuses every client request and reports not ready; restart it to serve again"
    );
    json(&state.lifecycle_id)
}

async fn no_content_ignoring_body() -> Response {
    no_content()
}
