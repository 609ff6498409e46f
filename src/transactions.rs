//! Starting transactions and handing out commit timestamps, as TimeLock does for AtlasDB
//! (spec section 3): the immutable timestamp, 16-way partitioned start timestamps, and the
//! lock-watch update that rides along with both.
//!
//! Partitioning ([`crate::partitions`]): each `requestorId` (one AtlasDB client instance) is given a residue mod 16, the
//! least used one, remembered for 5 minutes after its last use. A start-transactions call takes
//! `16 × n` fresh timestamps and returns those congruent to the residue, so one client's start
//! timestamps fall in one partition of AtlasDB's transactions table.
//!
//! # Orderings clients depend on (AtlasDB's `AsyncTimelockServiceImpl`)
//!
//! **The immutable timestamp and the minimum leased timestamp.** Sweep deletes old versions below
//! the immutable timestamp (read through the legacy `immutable-timestamp` endpoint), so every
//! value reported must be below the start timestamp of every transaction still open when it was
//! answered; a minimum leased timestamp likewise below the fresh timestamps of every lease still
//! held. Two orders together guarantee it:
//! * a start locks its immutable timestamp (a fresh timestamp `L`, added to the held minimum)
//!   *before* taking its start timestamps, so they are above `L` and taken after the lock is
//!   visible; a timestamp lease likewise (`/tl/multi/atl`: lease a fresh timestamp, then the fresh
//!   timestamps it protects);
//! * a reader takes a fresh timestamp `F` *first*, then reads the minimum held, falling back to
//!   `F`. A transaction whose lock the read saw has a start above its `L >=` the minimum; one whose
//!   lock the read missed registered after the read, which came after `F` was issued, so its start
//!   is above `F`. Reading the minimum first (as this server once did) lets a transaction lock,
//!   start below `F` and answer between the read and `F`: the answer is then above an open
//!   start. The window is widest while timestamps wait for a bound write (first use, restart, a
//!   small reservation).
//!
//! Every place combining a timestamp with a lock-table read follows this: [`immutable_timestamp`],
//! [`min_leased_timestamps`], the `immutableTimestamp` of start answers and
//! `lock-immutable-timestamp` (fresh `L`, then the minimum including `L`), the `minLeased` of
//! `/tl/multi/atl` (fresh timestamp, lease it, read the minimum including it, then the fresh
//! timestamps), and the legacy starts (lock, then start timestamps). The v1 lock service's
//! `getMinLockedInVersionId` answers 400, as TimeLock's does, so it combines nothing. A new term
//! (restart, `invalidateResources`) drops every lock, so the minimum then restarts from fresh
//! timestamps: transactions of the old term cannot commit, because AtlasDB checks before
//! committing that its immutable-timestamp lock is still held, and the old term's tokens are gone.
//!
//! **Timestamps and lock-watch updates.** Start transactions and commit timestamps (`/tl/st`,
//! `/tl/gct`, `/tl/g1ct` and their `/tl/multi/*` forms) take their timestamps and read their
//! lock-watch update in one step that no lock or unlock event can fall into: both happen in one
//! hold of the mutex under which the lock table logs every lock and unlock
//! ([`LockService::issue_with_update`]), as TimeLock's `LockEventLogImpl.runTask` holds the
//! monitor that `logLock`/`logUnlock` take. So every event at or below the update's version was
//! logged before the timestamps were issued. AtlasDB's client relies on it: its value cache keeps
//! a snapshot per version and lets committed transactions publish values into it, so if a start
//! at `T` received version `V` containing the unlock of a writer that committed at `C > T`, the
//! transaction could read from the cache a value committed after it started (a snapshot
//! isolation violation).
//!
//! The allocator normally answers from its reservation with one compare-and-swap, no I/O and no
//! allocation ([`crate::timestamp::TimestampService::try_fresh_timestamps`]); only that runs
//! under the mutex, next to the update that was always built there. When the reservation is
//! exhausted the step gives up the mutex, waits for the bound write outside it, and tries again,
//! so a disk write never blocks lock and unlock. Starting the background extension and counting
//! the timestamps happen after the mutex is released. While nothing was ever watched in the
//! namespace's term the update has no events whatever the order, and no mutex is taken.

use std::time::Instant;

use serde::Serialize;
use uuid::Uuid;

use crate::error::{Result, TimelockError};
use crate::lock::watch::{IdentifiedVersion, LockWatchStateUpdate};
use crate::lock::{Lease, LockService};
use crate::namespaces::Namespace;
use crate::partitions::NUM_PARTITIONS;
use crate::timestamp::TimestampRange;

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
    let residue = partition_residue(ns, requestor_id, num_transactions, now)?;
    let wanted = num_transactions.saturating_mul(NUM_PARTITIONS);
    loop {
        let range = ns.timestamps.fresh_timestamps(wanted).await?;
        if let Some(timestamps) = in_partition(range, residue) {
            return Ok(timestamps);
        }
    }
}

/// The requestor's residue, after checking `num_transactions`.
fn partition_residue(
    ns: &Namespace,
    requestor_id: Uuid,
    num_transactions: i64,
    now: Instant,
) -> Result<i64> {
    if num_transactions <= 0 {
        return Err(TimelockError::InvalidArgument(format!(
            "numTransactions must be positive, got {num_transactions}"
        )));
    }
    Ok(ns.partitions.lock().residue_at(requestor_id, now))
}

/// The timestamps of `range` congruent to `residue`; `None` if there are none (a range shorter
/// than 16, only with a tiny batch cap: the caller tries again).
fn in_partition(range: TimestampRange, residue: i64) -> Option<PartitionedTimestamps> {
    let offset = (residue - range.lower).rem_euclid(NUM_PARTITIONS);
    let start = range.lower + offset;
    (start <= range.upper).then(|| PartitionedTimestamps {
        start,
        interval: NUM_PARTITIONS,
        count: (range.upper - start) / NUM_PARTITIONS + 1,
    })
}

/// `count` fresh timestamps and the lock-watch update for `last_known`, taken in one step no
/// lock or unlock event falls into (see the module docs). The step holds the lock-watch log's
/// mutex only while the allocator can answer at once; when the reservation is exhausted it
/// waits for the bound write outside the mutex and tries again.
async fn timestamps_with_update(
    ns: &Namespace,
    locks: &LockService,
    count: i64,
    last_known: Option<&IdentifiedVersion>,
) -> Result<(TimestampRange, LockWatchStateUpdate)> {
    loop {
        let step =
            locks.issue_with_update(last_known, || ns.timestamps.try_fresh_timestamps(count))?;
        match step {
            Some((issued, update)) => return Ok((ns.timestamps.finish(issued), update)),
            None => ns.timestamps.wait_for_reservation(count).await?,
        }
    }
}

/// `startTransactions`: immutable timestamp lock, then partitioned start timestamps with the
/// lock-watch update (one step, see the module docs), and the lease.
pub async fn start_transactions(
    ns: &Namespace,
    request_id: Uuid,
    requestor_id: Uuid,
    num_transactions: i64,
    last_known: Option<&IdentifiedVersion>,
) -> Result<StartTransactionsResponse> {
    // The current term's lock service, looked up once (each lookup is a read lock and a
    // reference count on lines both workers write).
    let locks = ns.locks();
    // One clock reading for the lease, the token and the requestor's last use, where there
    // were three (clock reads showed in profiles of `/tl/st` load).
    let now = Instant::now();
    let residue = partition_residue(ns, requestor_id, num_transactions, now)?;
    // The immutable timestamp lock first: the start timestamps must be above it, and taken
    // after it is visible to readers of the immutable timestamp (see the module docs).
    let (immutable_timestamp, lease) =
        lock_immutable_timestamp_in(ns, &locks, request_id, now).await?;
    let wanted = num_transactions.saturating_mul(NUM_PARTITIONS);
    loop {
        let (range, lock_watch_update) =
            timestamps_with_update(ns, &locks, wanted, last_known).await?;
        if let Some(timestamps) = in_partition(range, residue) {
            return Ok(StartTransactionsResponse {
                immutable_timestamp,
                timestamps,
                lease,
                lock_watch_update,
            });
        }
    }
}

/// `getCommitTimestamps`: `{"inclusiveLower","inclusiveUpper","lockWatchUpdate"}`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CommitTimestampsResponse {
    pub inclusive_lower: i64,
    pub inclusive_upper: i64,
    pub lock_watch_update: LockWatchStateUpdate,
}

/// `getCommitTimestamps`: the timestamps and the lock-watch update in one step (see the module
/// docs).
pub async fn commit_timestamps(
    ns: &Namespace,
    num_timestamps: i64,
    last_known: Option<&IdentifiedVersion>,
) -> Result<CommitTimestampsResponse> {
    let (range, lock_watch_update) =
        timestamps_with_update(ns, &ns.locks(), num_timestamps, last_known).await?;
    Ok(CommitTimestampsResponse {
        inclusive_lower: range.lower,
        inclusive_upper: range.upper,
        lock_watch_update,
    })
}

/// The immutable timestamp: a fresh timestamp is taken FIRST, then the lowest held
/// immutable-timestamp lock is read, falling back to that fresh timestamp (see the module docs
/// for why the order matters).
pub async fn immutable_timestamp(ns: &Namespace) -> Result<i64> {
    let fresh = ns.timestamps.fresh_timestamp().await?;
    Ok(ns.locks().immutable_timestamp().unwrap_or(fresh))
}

/// The minimum leased timestamp of each of `names`, in the same order as
/// [`immutable_timestamp`]: one fresh timestamp first, then each collection's minimum, falling
/// back to that fresh timestamp.
pub async fn min_leased_timestamps<'a>(
    ns: &Namespace,
    names: impl IntoIterator<Item = &'a String>,
) -> Result<Vec<(&'a String, i64)>> {
    let fresh = ns.timestamps.fresh_timestamp().await?;
    let locks = ns.locks();
    Ok(names
        .into_iter()
        .map(|name| (name, locks.min_leased_timestamp(name).unwrap_or(fresh)))
        .collect())
}
