//! Fresh timestamps, in every shape AtlasDB clients ask for them:
//! * legacy `/{ns}/timestamp/fresh-timestamp(s)` and `/{ns}/timelock/fresh-timestamp(s)`
//!   (bare number; `{"lowerBound","upperBound"}`), POST, and GET so a plain `curl` works;
//! * Conjure `/tl/ts/{ns}` (`{"inclusiveLower","inclusiveUpper"}`), `/tl/t2/{ns}`
//!   (`{"start","count"}`) and `/tl/ts1/{ns}` (bare number).
//!
//! Requests are validated before the namespace is looked up or created.

use axum::extract::{RawQuery, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use super::extract::{required_i64, JsonBody, NsName};
use super::wire::timestamp::GetFreshTimestampsRequest;
use super::wire::write::two_numbers;
use super::{json_number, AppState};
use crate::error::TimelockError;
use crate::timestamp::validate_count;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/{ns}/timelock/fresh-timestamp",
            get(fresh_timestamp).post(fresh_timestamp),
        )
        .route(
            "/{ns}/timelock/fresh-timestamps",
            get(fresh_timestamps).post(fresh_timestamps),
        )
        .route("/tl/t2/{ns}", post(conjure_fresh_timestamps_v2))
        .route("/tl/ts1/{ns}", post(fresh_timestamp))
}

pub(super) async fn fresh_timestamp(
    State(state): State<AppState>,
    NsName(ns): NsName,
) -> Result<Response, TimelockError> {
    let namespace = state.namespace(&ns).await?;
    Ok(json_number(namespace.timestamps.fresh_timestamp().await?))
}

pub(super) async fn fresh_timestamps(
    State(state): State<AppState>,
    NsName(ns): NsName,
    RawQuery(query): RawQuery,
) -> Result<Response, TimelockError> {
    let number = required_i64(query.as_deref(), "number")?;
    validate_count(number)?;
    let namespace = state.namespace(&ns).await?;
    let range = namespace.timestamps.fresh_timestamps(number).await?;
    // `TimestampRange` of the legacy API: both ends inclusive.
    Ok(two_numbers(
        "lowerBound",
        range.lower,
        "upperBound",
        range.upper,
    ))
}

pub(super) async fn conjure_fresh_timestamps(
    State(state): State<AppState>,
    NsName(ns): NsName,
    JsonBody(request): JsonBody<GetFreshTimestampsRequest>,
) -> Result<Response, TimelockError> {
    validate_count(request.num_timestamps)?;
    let namespace = state.namespace(&ns).await?;
    let range = namespace
        .timestamps
        .fresh_timestamps(request.num_timestamps)
        .await?;
    Ok(two_numbers(
        "inclusiveLower",
        range.lower,
        "inclusiveUpper",
        range.upper,
    ))
}

async fn conjure_fresh_timestamps_v2(
    State(state): State<AppState>,
    NsName(ns): NsName,
    JsonBody(requested): JsonBody<i64>,
) -> Result<Response, TimelockError> {
    validate_count(requested)?;
    let namespace = state.namespace(&ns).await?;
    let range = namespace.timestamps.fresh_timestamps(requested).await?;
    // `[start, start + count)`.
    Ok(two_numbers("start", range.lower, "count", range.count()))
}
