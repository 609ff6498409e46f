//! Starting transactions and handing out commit timestamps, as TimeLock does for AtlasDB
//! (spec section 3): the immutable timestamp, 16-way partitioned start timestamps, and the
//! lock-watch update that rides along with both.
//!
//! Partitioning ([`crate::partitions`]): each `requestorId` (one AtlasDB client instance) is given a residue mod 16, the
//! least used one, remembered for 5 minutes after its last use. A start-transactions call takes
//! `16 × n` fresh timestamps and returns those congruent to the residue, so one client's start
//! timestamps fall in one partition of AtlasDB's transactions table.

use std::time::Instant;

use serde::Serialize;
use uuid::Uuid;

use crate::error::{Result, TimelockError};
use crate::lock::watch::{IdentifiedVersion, LockWatchStateUpdate};
use crate::lock::{Lease, LockService};
use crate::namespaces::Namespace;
use crate::partitions::NUM_PARTITIONS;

/// `{"requestId":..}`: a lock token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LockToken {
    pub request_id: Uuid,
}

/// `{"immutableTimestamp":90,"lock":{"requestId":..}}`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LockImmutableTimestampResponse {
    pub immutable_timestamp: i64,
    pub lock: LockToken,
}

/// `{"start":113,"interval":16,"count":1}`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PartitionedTimestamps {
    pub start: i64,
    pub interval: i64,
    pub count: i64,
}

/// Everything `startTransactions` returns.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StartTransactionsResponse {
    pub immutable_timestamp: LockImmutableTimestampResponse,
    pub timestamps: PartitionedTimestamps,
    pub lease: Lease,
    pub lock_watch_update: LockWatchStateUpdate,
}

/// Takes a fresh timestamp and locks it as an immutable timestamp under `request_id`.
pub async fn lock_immutable_timestamp(
    ns: &Namespace,
    request_id: Uuid,
) -> Result<(LockImmutableTimestampResponse, Lease)> {
    lock_immutable_timestamp_in(ns, &ns.locks(), request_id, Instant::now()).await
}

/// [`lock_immutable_timestamp`] in the lock service `locks` (the namespace's current one, looked
/// up once by a caller that needs it again), the lease starting at `now`.
async fn lock_immutable_timestamp_in(
    ns: &Namespace,
    locks: &LockService,
    request_id: Uuid,
    now: Instant,
) -> Result<(LockImmutableTimestampResponse, Lease)> {
    let fresh = ns.timestamps.fresh_timestamp().await?;
    let (immutable, lease) = locks.lock_immutable_timestamp_at(request_id, fresh, now)?;
    Ok((
        LockImmutableTimestampResponse {
            immutable_timestamp: immutable,
            lock: LockToken { request_id },
        },
        lease,
    ))
}

/// `numTransactions` start timestamps in the requestor's partition (at most 625 per call, as
/// 16 × 625 = 10,000 is the batch cap).
pub async fn partitioned_timestamps(
    ns: &Namespace,
    requestor_id: Uuid,
    num_transactions: i64,
) -> Result<PartitionedTimestamps> {
    partitioned_timestamps_at(ns, requestor_id, num_transactions, Instant::now()).await
}

/// [`partitioned_timestamps`], the requestor seen at `now`.
async fn partitioned_timestamps_at(
    ns: &Namespace,
    requestor_id: Uuid,
    num_transactions: i64,
    now: Instant,
) -> Result<PartitionedTimestamps> {
    if num_transactions <= 0 {
        return Err(TimelockError::InvalidArgument(format!(
            "numTransactions must be positive, got {num_transactions}"
        )));
    }
    let residue = ns.partitions.lock().residue_at(requestor_id, now);
    let wanted = num_transactions.saturating_mul(NUM_PARTITIONS);
    loop {
        let range = ns.timestamps.fresh_timestamps(wanted).await?;
        let offset = (residue - range.lower).rem_euclid(NUM_PARTITIONS);
        let start = range.lower + offset;
        if start <= range.upper {
            let count = (range.upper - start) / NUM_PARTITIONS + 1;
            return Ok(PartitionedTimestamps {
                start,
                interval: NUM_PARTITIONS,
                count,
            });
        }
        // A range shorter than 16 may miss the residue (only with a tiny batch cap): try again.
    }
}

/// `startTransactions`: immutable timestamp lock, partitioned start timestamps, lease, and the
/// lock-watch update computed after the timestamps were issued.
pub async fn start_transactions(
    ns: &Namespace,
    request_id: Uuid,
    requestor_id: Uuid,
    num_transactions: i64,
    last_known: Option<&IdentifiedVersion>,
) -> Result<StartTransactionsResponse> {
    if num_transactions <= 0 {
        return Err(TimelockError::InvalidArgument(format!(
            "numTransactions must be positive, got {num_transactions}"
        )));
    }
    // The current term's lock service, looked up once (each lookup is a read lock and a
    // reference count on lines both workers write).
    let locks = ns.locks();
    // One clock reading for the lease, the token and the requestor's last use, where there
    // were three (under `/tl/st` load the vDSO's clock reads were 1.7% of the server's
    // samples).
    let now = Instant::now();
    let (immutable_timestamp, lease) =
        lock_immutable_timestamp_in(ns, &locks, request_id, now).await?;
    let timestamps = partitioned_timestamps_at(ns, requestor_id, num_transactions, now).await?;
    let lock_watch_update = locks.watch_update(last_known);
    Ok(StartTransactionsResponse {
        immutable_timestamp,
        timestamps,
        lease,
        lock_watch_update,
    })
}

/// `getCommitTimestamps`: `{"inclusiveLower","inclusiveUpper","lockWatchUpdate"}`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CommitTimestampsResponse {
    pub inclusive_lower: i64,
    pub inclusive_upper: i64,
    pub lock_watch_update: LockWatchStateUpdate,
}

pub async fn commit_timestamps(
    ns: &Namespace,
    num_timestamps: i64,
    last_known: Option<&IdentifiedVersion>,
) -> Result<CommitTimestampsResponse> {
    let range = ns.timestamps.fresh_timestamps(num_timestamps).await?;
    let lock_watch_update = ns.locks().watch_update(last_known);
    Ok(CommitTimestampsResponse {
        inclusive_lower: range.lower,
        inclusive_upper: range.upper,
        lock_watch_update,
    })
}

/// The immutable timestamp: the lowest held immutable-timestamp lock, or a fresh timestamp if
/// none is held.
pub async fn immutable_timestamp(ns: &Namespace) -> Result<i64> {
    match ns.locks().immutable_timestamp() {
        Some(ts) => Ok(ts),
        None => ns.timestamps.fresh_timestamp().await,
    }
}
