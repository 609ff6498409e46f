//! Transaction endpoints: Conjure `/tl/st/{ns}`, `/tl/gct/{ns}`, `/tl/g1ct/{ns}`, the
//! multi-client batch endpoints `/tl/multi/*`, and the legacy `/{ns}/timelock/` transaction paths
//! (`lock-immutable-timestamp`, `start-atlasdb-transaction(-v3/-v4)`,
//! `start-identified-atlasdb-transaction`, `immutable-timestamp`).
//!
//! Multi-client calls run the single-namespace operation per namespace and fail as a whole if any
//! fails, as TimeLock's `MultiClientConjureTimelockResource` does.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use uuid::Uuid;

use super::extract::{JsonBody, NsName};
use super::wire::transactions::{
    start_response, CommitTimestampRequest, CommitTimestampsRequest, ConjureTimestampRange,
    IdentifiedRequest, LeaseGuarantee, StartTransactionsRequest, TimestampLeaseRequest,
    TimestampLeaseResponse, TimestampLeaseResponses,
};
use super::{json, json_number, AppState};
use crate::error::TimelockError;
use crate::lock::{LeaderTime, Lease};
use crate::namespaces::validate_names;
use crate::timestamp::validate_count;
use crate::transactions::{self, PartitionedTimestamps, StartTransactionsResponse};

/// Lease names reserved for the immutable timestamp (TimeLock's `TimestampLeaseName`).
const RESERVED_LEASE_PREFIX: &str = "ImmutableTimestamp";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/tl/g1ct/{ns}", post(commit_timestamp))
        .route("/tl/multi/lts", post(multi_leader_times))
        .route("/tl/multi/sts", post(multi_start_transactions))
        .route("/tl/multi/stsfc", post(multi_start_transactions))
        .route("/tl/multi/gcts", post(multi_commit_timestamps))
        .route("/tl/multi/gctsfc", post(multi_commit_timestamps))
        .route("/tl/multi/ul", post(multi_unlock))
        .route("/tl/multi/atl", post(multi_acquire_timestamp_leases))
        .route("/tl/multi/gmlt", post(multi_min_leased_timestamps))
        .route(
            "/{ns}/timelock/lock-immutable-timestamp",
            post(legacy_lock_immutable_timestamp),
        )
        .route(
            "/{ns}/timelock/immutable-timestamp",
            post(legacy_immutable_timestamp),
        )
        .route(
            "/{ns}/timelock/start-atlasdb-transaction",
            post(legacy_start_transaction),
        )
        .route(
            "/{ns}/timelock/start-identified-atlasdb-transaction",
            post(legacy_start_identified),
        )
        .route(
            "/{ns}/timelock/start-atlasdb-transaction-v3",
            post(legacy_start_v3),
        )
        .route(
            "/{ns}/timelock/start-atlasdb-transaction-v4",
            post(legacy_start_v4),
        )
}

async fn do_start(
    state: &AppState,
    ns: &str,
    r: &StartTransactionsRequest,
) -> Result<StartTransactionsResponse, TimelockError> {
    validate_count(r.num_transactions)?;
    let namespace = state.namespace(ns).await?;
    transactions::start_transactions(
        &namespace,
        r.request_id,
        r.requestor_id,
        r.num_transactions,
        r.last_known_version.as_ref(),
    )
    .await
}

pub(super) async fn start_transactions(
    State(state): State<AppState>,
    NsName(ns): NsName,
    JsonBody(request): JsonBody<StartTransactionsRequest>,
) -> Result<Response, TimelockError> {
    let r = do_start(&state, &ns, &request).await?;
    Ok(start_response(&r).into_response())
}

async fn do_commit_timestamps(
    state: &AppState,
    ns: &str,
    r: &CommitTimestampsRequest,
) -> Result<transactions::CommitTimestampsResponse, TimelockError> {
    validate_count(r.num_timestamps)?;
    let namespace = state.namespace(ns).await?;
    transactions::commit_timestamps(&namespace, r.num_timestamps, r.last_known_version.as_ref())
        .await
}

pub(super) async fn commit_timestamps(
    State(state): State<AppState>,
    NsName(ns): NsName,
    JsonBody(request): JsonBody<CommitTimestampsRequest>,
) -> Result<Response, TimelockError> {
    Ok(json(&do_commit_timestamps(&state, &ns, &request).await?))
}

async fn commit_timestamp(
    State(state): State<AppState>,
    NsName(ns): NsName,
    JsonBody(request): JsonBody<CommitTimestampRequest>,
) -> Result<Response, TimelockError> {
    let namespace = state.namespace(&ns).await?;
    let r =
        transactions::commit_timestamps(&namespace, 1, request.last_known_version.as_ref()).await?;
    Ok(json(
        &serde_json::json!({"timestamp": r.inclusive_lower, "lockWatchUpdate": r.lock_watch_update}),
    ))
}

async fn multi_leader_times(
    State(state): State<AppState>,
    JsonBody(names): JsonBody<Vec<String>>,
) -> Result<Response, TimelockError> {
    validate_names(&names)?;
    state
        .leadership
        .check_leads_all(names.iter().map(String::as_str))?;
    let mut leader_times: BTreeMap<String, LeaderTime> = BTreeMap::new();
    for name in names {
        let namespace = state.namespace(&name).await?;
        leader_times.insert(name, namespace.locks().leader_time());
    }
    Ok(json(&serde_json::json!({"leaderTimes": leader_times})))
}

async fn multi_start_transactions(
    State(state): State<AppState>,
    JsonBody(requests): JsonBody<BTreeMap<String, StartTransactionsRequest>>,
) -> Result<Response, TimelockError> {
    validate_names(requests.keys())?;
    state
        .leadership
        .check_leads_all(requests.keys().map(String::as_str))?;
    let mut out = BTreeMap::new();
    for (name, request) in &requests {
        out.insert(name.clone(), do_start(&state, name, request).await?);
    }
    Ok(json(&out))
}

async fn multi_commit_timestamps(
    State(state): State<AppState>,
    JsonBody(requests): JsonBody<BTreeMap<String, CommitTimestampsRequest>>,
) -> Result<Response, TimelockError> {
    validate_names(requests.keys())?;
    state
        .leadership
        .check_leads_all(requests.keys().map(String::as_str))?;
    let mut out = BTreeMap::new();
    for (name, request) in &requests {
        out.insert(
            name.clone(),
            do_commit_timestamps(&state, name, request).await?,
        );
    }
    Ok(json(&out))
}

async fn multi_unlock(
    State(state): State<AppState>,
    JsonBody(requests): JsonBody<BTreeMap<String, Vec<Uuid>>>,
) -> Result<Response, TimelockError> {
    validate_names(requests.keys())?;
    state
        .leadership
        .check_leads_all(requests.keys().map(String::as_str))?;
    let mut out = BTreeMap::new();
    for (name, tokens) in &requests {
        let namespace = state.namespace(name).await?;
        out.insert(name.clone(), namespace.locks().unlock(tokens)?);
    }
    Ok(json(&out))
}

fn validate_lease_name(name: &str) -> Result<(), TimelockError> {
    if name.starts_with(RESERVED_LEASE_PREFIX) {
        return Err(TimelockError::InvalidArgument(format!(
            "timestamp lease name {name:?} must not start with {RESERVED_LEASE_PREFIX}"
        )));
    }
    Ok(())
}

/// `acquireTimestampLease`: take fresh timestamp T, lease T under each name (token = request
/// id), report each name's minimum leased timestamp, then hand out fresh timestamps above T.
async fn multi_acquire_timestamp_leases(
    State(state): State<AppState>,
    JsonBody(requests): JsonBody<BTreeMap<String, Vec<TimestampLeaseRequest>>>,
) -> Result<Response, TimelockError> {
    validate_names(requests.keys())?;
    state
        .leadership
        .check_leads_all(requests.keys().map(String::as_str))?;
    for request in requests.values().flatten() {
        for (name, count) in &request.num_fresh_timestamps {
            validate_lease_name(name)?;
            validate_count(*count)?;
        }
    }
    let mut out = BTreeMap::new();
    for (ns, batch) in &requests {
        let namespace = state.namespace(ns).await?;
        let mut responses = Vec::new();
        for request in batch {
            let names: Vec<String> = request.num_fresh_timestamps.keys().cloned().collect();
            let leased = namespace.timestamps.fresh_timestamp().await?;
            let (mins, lease) =
                namespace
                    .locks()
                    .acquire_timestamp_leases(request.request_id, &names, leased)?;
            let mut per_name = BTreeMap::new();
            for (name, min_leased) in names.into_iter().zip(mins) {
                let range = namespace
                    .timestamps
                    .fresh_timestamps(request.num_fresh_timestamps[&name])
                    .await?;
                per_name.insert(
                    name,
                    TimestampLeaseResponse {
                        min_leased,
                        fresh_timestamps: ConjureTimestampRange {
                            start: range.lower,
                            count: range.count(),
                        },
                    },
                );
            }
            responses.push(TimestampLeaseResponses {
                lease_guarantee: LeaseGuarantee {
                    identifier: request.request_id,
                    lease,
                },
                timestamp_lease_responses: per_name,
            });
        }
        // The response object's one field is really called "alias" (spec section 1.2).
        out.insert(ns.clone(), serde_json::json!({ "alias": responses }));
    }
    Ok(json(&out))
}

async fn multi_min_leased_timestamps(
    State(state): State<AppState>,
    JsonBody(requests): JsonBody<BTreeMap<String, Vec<String>>>,
) -> Result<Response, TimelockError> {
    validate_names(requests.keys())?;
    state
        .leadership
        .check_leads_all(requests.keys().map(String::as_str))?;
    for name in requests.values().flatten() {
        validate_lease_name(name)?;
    }
    let mut out = BTreeMap::new();
    for (ns, names) in &requests {
        let namespace = state.namespace(ns).await?;
        let per_name: BTreeMap<&String, i64> =
            transactions::min_leased_timestamps(&namespace, names)
                .await?
                .into_iter()
                .collect();
        out.insert(ns.clone(), per_name);
    }
    Ok(json(&out))
}

async fn legacy_lock_immutable_timestamp(
    State(state): State<AppState>,
    NsName(ns): NsName,
    JsonBody(request): JsonBody<IdentifiedRequest>,
) -> Result<Response, TimelockError> {
    let namespace = state.namespace(&ns).await?;
    let (immutable, _lease) =
        transactions::lock_immutable_timestamp(&namespace, request.request_id).await?;
    Ok(json(&immutable))
}

async fn legacy_immutable_timestamp(
    State(state): State<AppState>,
    NsName(ns): NsName,
) -> Result<Response, TimelockError> {
    let namespace = state.namespace(&ns).await?;
    Ok(json_number(
        transactions::immutable_timestamp(&namespace).await?,
    ))
}

async fn legacy_start_transaction(
    State(state): State<AppState>,
    NsName(ns): NsName,
    JsonBody(request): JsonBody<IdentifiedRequest>,
) -> Result<Response, TimelockError> {
    let namespace = state.namespace(&ns).await?;
    let (immutable, _lease) =
        transactions::lock_immutable_timestamp(&namespace, request.request_id).await?;
    let fresh = namespace.timestamps.fresh_timestamp().await?;
    Ok(json(
        &serde_json::json!({"immutableTimestamp": immutable, "freshTimestamp": fresh}),
    ))
}

fn requestor(request: &IdentifiedRequest) -> Result<Uuid, TimelockError> {
    request
        .requestor_id
        .ok_or_else(|| TimelockError::InvalidArgument("requestorId is required".into()))
}

/// Immutable timestamp lock plus one partitioned start timestamp.
async fn start_identified(
    state: &AppState,
    ns: &str,
    request: &IdentifiedRequest,
    num_transactions: i64,
) -> Result<(LockTokenResponse, PartitionedTimestamps, Lease), TimelockError> {
    let requestor_id = requestor(request)?;
    validate_count(num_transactions)?;
    let namespace = state.namespace(ns).await?;
    let (immutable, lease) =
        transactions::lock_immutable_timestamp(&namespace, request.request_id).await?;
    let timestamps =
        transactions::partitioned_timestamps(&namespace, requestor_id, num_transactions).await?;
    Ok((immutable, timestamps, lease))
}

type LockTokenResponse = transactions::LockImmutableTimestampResponse;

fn start_and_partition(t: &PartitionedTimestamps) -> serde_json::Value {
    serde_json::json!({"timestamp": t.start, "partition": t.start.rem_euclid(t.interval)})
}

async fn legacy_start_identified(
    State(state): State<AppState>,
    NsName(ns): NsName,
    JsonBody(request): JsonBody<IdentifiedRequest>,
) -> Result<Response, TimelockError> {
    let (immutable, timestamps, _lease) = start_identified(&state, &ns, &request, 1).await?;
    Ok(json(&serde_json::json!({
        "immutableTimestamp": immutable,
        "startTimestampAndPartition": start_and_partition(&timestamps),
    })))
}

async fn legacy_start_v3(
    State(state): State<AppState>,
    NsName(ns): NsName,
    JsonBody(request): JsonBody<IdentifiedRequest>,
) -> Result<Response, TimelockError> {
    let (immutable, timestamps, lease) = start_identified(&state, &ns, &request, 1).await?;
    Ok(json(&serde_json::json!({
        "immutableTimestamp": immutable,
        "startTimestampAndPartition": start_and_partition(&timestamps),
        "lease": lease,
    })))
}

async fn legacy_start_v4(
    State(state): State<AppState>,
    NsName(ns): NsName,
    JsonBody(request): JsonBody<IdentifiedRequest>,
) -> Result<Response, TimelockError> {
    let num = request
        .num_transactions
        .ok_or_else(|| TimelockError::InvalidArgument("numTransactions is required".into()))?;
    let (immutable, timestamps, lease) = start_identified(&state, &ns, &request, num).await?;
    Ok(json(
        &serde_json::json!({"immutableTimestamp": immutable, "timestamps": timestamps, "lease": lease}),
    ))
}
