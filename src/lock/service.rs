//! The v2 (async / Conjure) lock service of one namespace for one leadership term.
//!
//! Semantics follow TimeLock's `AsyncLockService` (spec section 5.1):
//! * exclusive locks on opaque byte strings; a request's descriptors are de-duplicated and sorted
//!   and acquired one after another (a global order, so no deadlocks);
//! * a FIFO queue per lock: a request finding a lock held or queued waits behind the others, and
//!   a release hands the lock straight to the queue head;
//! * `acquireTimeoutMs` bounds the whole acquisition; on timeout every lock taken so far is
//!   released and the answer is "unsuccessful";
//! * idempotency by `requestId`: a retry while the acquisition runs joins it, a retry after
//!   success gets the same token, a retry shortly after a timeout times out again;
//! * wait-for-locks queues like a lock request but passes each lock as soon as it reaches the head;
//! * leases: a token not refreshed for `server_lease` is reaped (unlocked), and clients are told
//!   `client_lease` (shorter) as the validity of what they hold;
//! * lock watches: an acquisition is logged (and listed in snapshots) once it completes, an
//!   unlock when its token is released; timestamps issued with an update are taken under the
//!   same mutex as the update ([`LockService::issue_with_update`], see the `transactions` module).
//!
//! All state sits behind one mutex per namespace; critical sections are short and never await.
//! Waiting happens outside it on a oneshot channel per waiter. An acquisition that has to wait
//! runs in its own task, so a client that disconnects does not leave waiters behind; what it was
//! granted is reaped with its lease. Closing the service (leadership change, restart,
//! `invalidateResources`) fails every waiter and drops every lock; clients notice through the
//! new leadership id.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

use super::clock::{nanos_at, now_nanos, IsoDuration, LeaderTime, Lease};
use super::min_tracker::MinTracker;
use super::watch::{IdentifiedVersion, LockWatchLog, LockWatchReference, LockWatchStateUpdate};
use crate::error::{Result, TimelockError};
use crate::metrics::Metrics;

/// How long a timed-out request id keeps answering "timed out" to retries.
const TIMED_OUT_MEMORY: Duration = Duration::from_secs(10);

/// Stands in for timeouts too large to represent as a deadline (about 30 years).
const FOREVER: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// Tuning and limits of the lock service.
#[derive(Debug, Clone, Copy)]
pub struct LockLimits {
    /// A token not refreshed for this long is unlocked by the reaper (TimeLock: 20 s).
    pub server_lease: Duration,
    /// The validity told to clients (TimeLock: 8 s); must be shorter than `server_lease`.
    pub client_lease: Duration,
    pub max_descriptors_per_request: usize,
    pub max_descriptor_bytes: usize,
    pub max_waiters: usize,
    /// The legacy (v1) table's allowance past a token's expiry (`lock_v1.max_clock_drift_ms`);
    /// here because a namespace builds both of its lock tables from these limits.
    pub v1_clock_drift: Duration,
}

impl Default for LockLimits {
    fn default() -> Self {
        Self {
            server_lease: Duration::from_secs(20),
            client_lease: Duration::from_secs(8),
            max_descriptors_per_request: 100_000,
            max_descriptor_bytes: 64 * 1024,
            max_waiters: 10_000,
            v1_clock_drift: crate::lock::v1::DEFAULT_CLOCK_DRIFT,
        }
    }
}

/// From `[lock]`, plus `lock_v1.max_clock_drift_ms` for the v1 table.
impl From<&crate::config::Settings> for LockLimits {
    fn from(settings: &crate::config::Settings) -> Self {
        let s = &settings.lock;
        Self {
            server_lease: Duration::from_millis(s.server_lease_ms),
            client_lease: Duration::from_millis(s.client_lease_ms),
            max_descriptors_per_request: s.max_descriptors_per_request,
            max_descriptor_bytes: s.max_descriptor_bytes,
            max_waiters: s.max_waiters_per_namespace,
            v1_clock_drift: Duration::from_millis(settings.lock_v1.max_clock_drift_ms),
        }
    }
}

/// The answer to a lock or wait-for-locks request. The token id of a lock is its request id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockOutcome {
    Acquired(Lease),
    TimedOut,
}

type Shared = Option<Result<LockOutcome>>;

struct Waiter {
    id: u64,
    request: Uuid,
    wait_only: bool,
    wake: oneshot::Sender<()>,
}

#[derive(Default)]
struct LockEntry {
    holder: Option<Uuid>,
    queue: VecDeque<Waiter>,
}

/// What a token holds. The descriptors live in the `Locks` variant rather than beside it: every
/// `/tl/st` adds an immutable-timestamp token and a `/tl/ul2` removes them 64 at a time, so the
/// token table of a busy namespace holds thousands of those: 16 bytes less per entry (72 instead
/// of 88 with its key, the old layout checked with `size_of` on the same types) is less memory
/// to miss in per insert and removal.
enum TokenKind {
    Locks(Vec<Bytes>),
    ImmutableTimestamp(i64),
    TimestampLeases(Vec<(String, i64)>),
}

struct Token {
    kind: TokenKind,
    last_refresh: Instant,
    acquired_at: i64,
}

struct State {
    closed: bool,
    locks: crate::FastHashMap<Bytes, LockEntry>,
    tokens: crate::FastHashMap<Uuid, Token>,
    pending: crate::FastHashMap<Uuid, watch::Receiver<Shared>>,
    timed_out: crate::FastHashMap<Uuid, Instant>,
    waiters: usize,
    next_waiter: u64,
    immutable: MinTracker,
    timestamp_leases: HashMap<String, MinTracker>,
    watches: LockWatchLog,
}

/// One namespace's lock service for one leadership term.
pub struct LockService {
    leadership_id: Uuid,
    limits: LockLimits,
    state: Mutex<State>,
    /// Set (for good) when the first lock watch is registered. Until then the lock-watch log is
    /// empty (version -1, no events: locks and unlocks log nothing without watches), so
    /// [`Self::watch_update`] answers without taking the state mutex: that is every
    /// start-transactions and commit-timestamps call of a namespace nobody watches.
    watching: AtomicBool,
    metrics: Metrics,
    /// `lock_acquisitions{result="acquired"}`, resolved once (no label hashing per lock).
    acquired: prometheus::IntCounter,
}

impl LockService {
    pub fn new(limits: LockLimits, metrics: Metrics) -> Arc<Self> {
        let leadership_id = Uuid::new_v4();
        Arc::new(Self {
            leadership_id,
            limits,
            state: Mutex::new(State {
                closed: false,
                locks: Default::default(),
                tokens: Default::default(),
                pending: Default::default(),
                timed_out: Default::default(),
                waiters: 0,
                next_waiter: 0,
                immutable: MinTracker::default(),
                timestamp_leases: HashMap::new(),
                watches: LockWatchLog::new(leadership_id),
            }),
            watching: AtomicBool::new(false),
            acquired: metrics.lock_acquisitions.with_label_values(&["acquired"]),
            metrics,
        })
    }

    /// The leadership id: random per (re)creation of the namespace's services.
    pub fn leadership_id(&self) -> Uuid {
        self.leadership_id
    }

    pub fn leader_time(&self) -> LeaderTime {
        LeaderTime {
            id: self.leadership_id,
            current_time: now_nanos(),
        }
    }

    fn lease_at(&self, current_time: i64) -> Lease {
        Lease {
            leader_time: LeaderTime {
                id: self.leadership_id,
                current_time,
            },
            validity: IsoDuration(self.limits.client_lease),
        }
    }

    /// A lease starting now.
    pub fn lease(&self) -> Lease {
        self.lease_at(now_nanos())
    }

    /// Checks request-level limits on descriptors.
    pub fn validate_descriptors(&self, descriptors: &[Bytes]) -> Result<()> {
        if descriptors.len() > self.limits.max_descriptors_per_request {
            return Err(TimelockError::InvalidArgument(format!(
                "too many lock descriptors in one request: {} (limit {})",
                descriptors.len(),
                self.limits.max_descriptors_per_request
            )));
        }
        if let Some(d) = descriptors
            .iter()
            .find(|d| d.len() > self.limits.max_descriptor_bytes)
        {
            return Err(TimelockError::InvalidArgument(format!(
                "lock descriptor of {} bytes exceeds the limit of {} bytes",
                d.len(),
                self.limits.max_descriptor_bytes
            )));
        }
        Ok(())
    }

    /// Locks `descriptors` under token `request_id`, waiting at most `timeout`.
    pub async fn lock(
        self: &Arc<Self>,
        request_id: Uuid,
        descriptors: Vec<Bytes>,
        timeout: Duration,
    ) -> Result<LockOutcome> {
        self.acquire(request_id, descriptors, timeout, false).await
    }

    /// Waits until each of `descriptors` is free in turn (FIFO with lock requests), holding none.
    /// `Acquired` means "was successful".
    pub async fn wait_for_locks(
        self: &Arc<Self>,
        request_id: Uuid,
        descriptors: Vec<Bytes>,
        timeout: Duration,
    ) -> Result<LockOutcome> {
        self.acquire(request_id, descriptors, timeout, true).await
    }

    async fn acquire(
        self: &Arc<Self>,
        request_id: Uuid,
        mut descriptors: Vec<Bytes>,
        timeout: Duration,
        wait_only: bool,
    ) -> Result<LockOutcome> {
        self.validate_descriptors(&descriptors)?;
        descriptors.sort_unstable();
        descriptors.dedup();
        let started = Instant::now();
        let mut done = {
            let mut st = self.state.lock();
            st.check_open()?;
            if let Some(token) = st.tokens.get(&request_id) {
                return Ok(LockOutcome::Acquired(self.lease_at(token.acquired_at)));
            }
            if st.timed_out.contains_key(&request_id) {
                return Ok(LockOutcome::TimedOut);
            }
            if let Some(pending) = st.pending.get(&request_id) {
                pending.clone()
            } else if descriptors.iter().all(|d| st.is_free(d)) {
                // Uncontended: take everything at once, no task, no channel.
                let outcome = if wait_only {
                    LockOutcome::Acquired(self.lease())
                } else {
                    self.grant_token(&mut st, request_id, descriptors)
                };
                self.acquired.inc();
                return Ok(outcome);
            } else {
                if st.waiters >= self.limits.max_waiters {
                    return Err(TimelockError::TooManyRequests(format!(
                        "too many lock requests waiting in this namespace (limit {})",
                        self.limits.max_waiters
                    )));
                }
                let (tx, rx) = watch::channel(None);
                st.pending.insert(request_id, rx.clone());
                // `acquireTimeoutMs` may be anything up to Long.MAX_VALUE: cap it instead of overflowing.
                let now = tokio::time::Instant::now();
                let deadline = now.checked_add(timeout).unwrap_or_else(|| now + FOREVER);
                let this = self.clone();
                tokio::spawn(async move {
                    let outcome = this
                        .acquire_in_order(request_id, descriptors, deadline, wait_only)
                        .await;
                    this.metrics
                        .lock_wait_latency
                        .observe(started.elapsed().as_secs_f64());
                    let _ = tx.send(Some(outcome));
                });
                rx
            }
        };
        loop {
            if let Some(result) = done.borrow_and_update().clone() {
                return result;
            }
            if done.changed().await.is_err() {
                return Err(TimelockError::NotCurrentLeader);
            }
        }
    }

    /// The slow path: one descriptor after another, queueing where needed.
    async fn acquire_in_order(
        &self,
        request_id: Uuid,
        descriptors: Vec<Bytes>,
        deadline: tokio::time::Instant,
        wait_only: bool,
    ) -> Result<LockOutcome> {
        let mut held: Vec<Bytes> = Vec::new();
        let mut failure: Option<Result<LockOutcome>> = None;
        for descriptor in &descriptors {
            let (id, wake) = {
                let mut st = self.state.lock();
                if st.closed {
                    failure = Some(Err(TimelockError::NotCurrentLeader));
                    break;
                }
                if st.is_free(descriptor) {
                    if !wait_only {
                        st.take(descriptor, request_id, &self.metrics);
                        held.push(descriptor.clone());
                    }
                    continue;
                }
                let (tx, rx) = oneshot::channel();
                let id = st.next_waiter;
                st.next_waiter += 1;
                st.waiters += 1;
                self.metrics.lock_waiters.inc();
                let entry = st.locks.entry(descriptor.clone()).or_default();
                entry.queue.push_back(Waiter {
                    id,
                    request: request_id,
                    wait_only,
                    wake: tx,
                });
                (id, rx)
            };
            match tokio::time::timeout_at(deadline, wake).await {
                Ok(Ok(())) => {
                    if !wait_only {
                        held.push(descriptor.clone());
                    }
                }
                Ok(Err(_)) => {
                    failure = Some(Err(TimelockError::NotCurrentLeader));
                    break;
                }
                Err(_elapsed) => {
                    let mut st = self.state.lock();
                    if st.remove_waiter(descriptor, id, &self.metrics) {
                        // Still queued: a plain timeout.
                    } else if !wait_only && st.holder_of(descriptor) == Some(request_id) {
                        // Granted in the same instant as the timeout fired: count it, release below.
                        held.push(descriptor.clone());
                    }
                    failure = Some(Ok(LockOutcome::TimedOut));
                    break;
                }
            }
        }
        let mut st = self.state.lock();
        st.pending.remove(&request_id);
        match failure {
            None if st.closed => Err(TimelockError::NotCurrentLeader),
            None => {
                self.acquired.inc();
                if wait_only {
                    Ok(LockOutcome::Acquired(self.lease()))
                } else {
                    for d in &held {
                        // `take` already ran for fast grants; queued grants were set by the releaser.
                        debug_assert_eq!(st.holder_of(d), Some(request_id));
                    }
                    Ok(self.grant_token_held(&mut st, request_id, held))
                }
            }
            Some(result) => {
                if !st.closed {
                    for d in &held {
                        st.release(d, request_id, &self.metrics);
                    }
                }
                if matches!(result, Ok(LockOutcome::TimedOut)) {
                    st.timed_out.insert(request_id, Instant::now());
                    self.metrics
                        .lock_acquisitions
                        .with_label_values(&["timed_out"])
                        .inc();
                }
                result
            }
        }
    }

    /// Marks every descriptor held by `request_id` and records the token (fast path).
    fn grant_token(
        &self,
        st: &mut State,
        request_id: Uuid,
        descriptors: Vec<Bytes>,
    ) -> LockOutcome {
        for d in &descriptors {
            st.take(d, request_id, &self.metrics);
        }
        self.grant_token_held(st, request_id, descriptors)
    }

    /// Records the token for descriptors already marked held.
    fn grant_token_held(
        &self,
        st: &mut State,
        request_id: Uuid,
        descriptors: Vec<Bytes>,
    ) -> LockOutcome {
        let now = now_nanos();
        if st.watches.has_watches() {
            st.watches.log_lock(&descriptors, request_id);
        }
        st.tokens.insert(
            request_id,
            Token {
                kind: TokenKind::Locks(descriptors),
                last_refresh: Instant::now(),
                acquired_at: now,
            },
        );
        LockOutcome::Acquired(self.lease_at(now))
    }

    /// Refreshes the tokens that are still held; returns exactly those.
    pub fn refresh(&self, tokens: &[Uuid]) -> Result<Vec<Uuid>> {
        let mut st = self.state.lock();
        st.check_open()?;
        let now = Instant::now();
        Ok(tokens
            .iter()
            .filter(|id| match st.tokens.get_mut(id) {
                Some(token) => {
                    token.last_refresh = now;
                    true
                }
                None => false,
            })
            .copied()
            .collect())
    }

    /// Unlocks the tokens that are still held; returns exactly those.
    ///
    /// A few tokens per hold of the state mutex: committing clients release 64 or more
    /// immutable-timestamp tokens in one call, and removing that many (hash-map removals and
    /// searches, mostly cache misses) held the mutex long enough that the other worker, starting
    /// a transaction meanwhile, gave up spinning and slept in the kernel (under `/tl/st` load
    /// that was a futex call per 30 requests). Unlocking is per token anyway (TimeLock's too): no
    /// caller can tell the batch was split.
    pub fn unlock(&self, tokens: &[Uuid]) -> Result<Vec<Uuid>> {
        const PER_HOLD: usize = 8;
        let mut unlocked = Vec::with_capacity(tokens.len());
        for chunk in tokens.chunks(PER_HOLD) {
            let mut st = self.state.lock();
            st.check_open()?;
            unlocked.extend(
                chunk
                    .iter()
                    .filter(|id| st.unlock_token(id, &self.metrics))
                    .copied(),
            );
        }
        Ok(unlocked)
    }

    /// Unlocks every token not refreshed within the server lease, and forgets old timeouts.
    /// Returns how many tokens were reaped.
    pub fn reap(&self) -> usize {
        let mut st = self.state.lock();
        let now = Instant::now();
        let expired: Vec<Uuid> = st
            .tokens
            .iter()
            .filter(|(_, t)| now.duration_since(t.last_refresh) > self.limits.server_lease)
            .map(|(id, _)| *id)
            .collect();
        for id in &expired {
            st.unlock_token(id, &self.metrics);
        }
        st.timed_out
            .retain(|_, at| now.duration_since(*at) < TIMED_OUT_MEMORY);
        if !expired.is_empty() {
            self.metrics.lock_expiries.inc_by(expired.len() as u64);
            tracing::debug!(count = expired.len(), "reaped expired lock tokens");
        }
        expired.len()
    }

    /// Ends this term: every waiter fails, every lock and lease is dropped.
    pub fn close(&self) {
        let mut st = self.state.lock();
        if st.closed {
            return;
        }
        st.closed = true;
        let held = st.locks.values().filter(|e| e.holder.is_some()).count();
        self.metrics.locks_held.sub(held as i64);
        self.metrics.lock_waiters.sub(st.waiters as i64);
        st.waiters = 0;
        st.locks.clear(); // drops the waiters' senders: they fail with NotCurrentLeader
        st.tokens.clear();
        st.immutable = MinTracker::default();
        st.timestamp_leases.clear();
    }

    /// Locks timestamp `ts` in the immutable-timestamp tracker under `request_id` and returns the
    /// immutable timestamp (the minimum held, which is at most `ts`).
    pub fn lock_immutable_timestamp(&self, request_id: Uuid, ts: i64) -> Result<(i64, Lease)> {
        self.lock_immutable_timestamp_at(request_id, ts, Instant::now())
    }

    /// [`Self::lock_immutable_timestamp`] as of `at` (read by the caller, which uses the same
    /// reading for other things: one clock read instead of several). `at` must be recent: it
    /// starts the token's lease.
    pub fn lock_immutable_timestamp_at(
        &self,
        request_id: Uuid,
        ts: i64,
        at: Instant,
    ) -> Result<(i64, Lease)> {
        let now = nanos_at(at);
        let mut st = self.state.lock();
        st.check_open()?;
        if !st.tokens.contains_key(&request_id) {
            st.immutable.add(ts);
            st.tokens.insert(
                request_id,
                Token {
                    kind: TokenKind::ImmutableTimestamp(ts),
                    last_refresh: at,
                    acquired_at: now,
                },
            );
        }
        let min = st.immutable.min().unwrap_or(ts);
        Ok((min, self.lease_at(now)))
    }

    /// The lowest timestamp held by an immutable-timestamp lock, if any.
    pub fn immutable_timestamp(&self) -> Option<i64> {
        self.state.lock().immutable.min()
    }

    /// Locks `ts` in each named timestamp-lease collection under `request_id`; returns, per name,
    /// the minimum leased timestamp in that collection (at most `ts`).
    pub fn acquire_timestamp_leases(
        &self,
        request_id: Uuid,
        names: &[String],
        ts: i64,
    ) -> Result<(Vec<i64>, Lease)> {
        let mut st = self.state.lock();
        st.check_open()?;
        let now = now_nanos();
        if !st.tokens.contains_key(&request_id) {
            for name in names {
                st.timestamp_leases.entry(name.clone()).or_default().add(ts);
            }
            st.tokens.insert(
                request_id,
                Token {
                    kind: TokenKind::TimestampLeases(
                        names.iter().map(|n| (n.clone(), ts)).collect(),
                    ),
                    last_refresh: Instant::now(),
                    acquired_at: now,
                },
            );
        }
        let mins = names
            .iter()
            .map(|n| {
                st.timestamp_leases
                    .get(n)
                    .and_then(MinTracker::min)
                    .unwrap_or(ts)
            })
            .collect();
        Ok((mins, self.lease_at(now)))
    }

    /// The minimum timestamp leased under `name`, if any.
    pub fn min_leased_timestamp(&self, name: &str) -> Option<i64> {
        self.state
            .lock()
            .timestamp_leases
            .get(name)
            .and_then(MinTracker::min)
    }

    /// Adds lock watches.
    pub fn start_watching(&self, references: Vec<LockWatchReference>) -> Result<()> {
        let mut st = self.state.lock();
        st.check_open()?;
        let State {
            locks,
            tokens,
            watches,
            ..
        } = &mut *st;
        watches.start_watching(references, acquired(locks, tokens));
        if watches.has_watches() {
            // Inside the critical section that logged the `created` event: a reader that still
            // sees `false` is ordered before this registration, which has not returned yet.
            self.watching.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    /// The lock-watch update for a client that last saw `last_known`.
    pub fn watch_update(&self, last_known: Option<&IdentifiedVersion>) -> LockWatchStateUpdate {
        if !self.watching.load(Ordering::SeqCst) {
            return self.unwatched_update(last_known);
        }
        let st = self.state.lock();
        st.watches
            .update(last_known, acquired(&st.locks, &st.tokens))
    }

    /// Runs `issue` (which takes timestamps and must not block: `None` means "could not without
    /// waiting") and reads the lock-watch update for `last_known` in one hold of the mutex under
    /// which every lock and unlock is logged, as TimeLock's `LockEventLogImpl.runTask` does. So
    /// every event at or below the update's version was logged before the timestamps were
    /// taken, and every later one after (see the `transactions` module for why clients need
    /// that).
    ///
    /// While nothing was ever watched in this term, no event exists and the update is version
    /// -1 with no events whatever the order, so `issue` runs without the mutex.
    pub fn issue_with_update<T>(
        &self,
        last_known: Option<&IdentifiedVersion>,
        issue: impl FnOnce() -> Result<Option<T>>,
    ) -> Result<Option<(T, LockWatchStateUpdate)>> {
        if !self.watching.load(Ordering::SeqCst) {
            return Ok(issue()?.map(|value| (value, self.unwatched_update(last_known))));
        }
        let st = self.state.lock();
        let Some(value) = issue()? else {
            return Ok(None);
        };
        Ok(Some((
            value,
            st.watches
                .update(last_known, acquired(&st.locks, &st.tokens)),
        )))
    }

    /// [`Self::watch_update`] while nothing was ever watched in this term: the log then holds no
    /// watch and no event, so it answers as a new empty log of the same id does, which is built
    /// here without the state mutex (and without allocating: its collections are empty).
    fn unwatched_update(&self, last_known: Option<&IdentifiedVersion>) -> LockWatchStateUpdate {
        LockWatchLog::new(self.leadership_id).update(last_known, std::iter::empty())
    }

    /// Number of requests queued on locks (for tests, benches and diagnostics).
    pub fn waiting_count(&self) -> usize {
        self.state.lock().waiters
    }

    /// Number of descriptors currently held (for tests and diagnostics).
    pub fn held_descriptor_count(&self) -> usize {
        self.state
            .lock()
            .locks
            .values()
            .filter(|e| e.holder.is_some())
            .count()
    }
}

/// The descriptors of every completed lock acquisition: what snapshots and `created` events list.
/// A descriptor's holder may be a request still acquiring (holding some of its locks, or just
/// handed one by a release) that may yet time out and release them without an unlock event:
/// it has no lock token until it completes, so only holders with one count. AtlasDB likewise
/// counts only completed acquisitions (`HeldLocksCollection.locksHeld`). The lock table is
/// walked rather than the tokens, which are mostly immutable-timestamp locks; read only when an
/// update is a snapshot or a watch is created.
fn acquired<'a>(
    locks: &'a crate::FastHashMap<Bytes, LockEntry>,
    tokens: &'a crate::FastHashMap<Uuid, Token>,
) -> impl Iterator<Item = &'a Bytes> {
    locks
        .iter()
        .filter(|(_, entry)| {
            entry.holder.is_some_and(|holder| {
                matches!(
                    tokens.get(&holder),
                    Some(Token {
                        kind: TokenKind::Locks(_),
                        ..
                    })
                )
            })
        })
        .map(|(descriptor, _)| descriptor)
}

impl Drop for LockService {
    fn drop(&mut self) {
        self.close();
    }
}

impl State {
    fn check_open(&self) -> Result<()> {
        if self.closed {
            Err(TimelockError::NotCurrentLeader)
        } else {
            Ok(())
        }
    }

    fn is_free(&self, descriptor: &Bytes) -> bool {
        self.locks
            .get(descriptor)
            .is_none_or(|e| e.holder.is_none() && e.queue.is_empty())
    }

    fn holder_of(&self, descriptor: &Bytes) -> Option<Uuid> {
        self.locks.get(descriptor).and_then(|e| e.holder)
    }

    fn take(&mut self, descriptor: &Bytes, owner: Uuid, metrics: &Metrics) {
        self.locks.entry(descriptor.clone()).or_default().holder = Some(owner);
        metrics.locks_held.inc();
    }

    /// Releases `descriptor` if `owner` holds it, handing it to the queue head.
    fn release(&mut self, descriptor: &Bytes, owner: Uuid, metrics: &Metrics) {
        let Some(entry) = self.locks.get_mut(descriptor) else {
            return;
        };
        if entry.holder != Some(owner) {
            return;
        }
        entry.holder = None;
        metrics.locks_held.dec();
        while let Some(waiter) = entry.queue.pop_front() {
            self.waiters -= 1;
            metrics.lock_waiters.dec();
            if waiter.wait_only {
                let _ = waiter.wake.send(());
                continue;
            }
            entry.holder = Some(waiter.request);
            metrics.locks_held.inc();
            let _ = waiter.wake.send(());
            break;
        }
        if entry.holder.is_none() && entry.queue.is_empty() {
            self.locks.remove(descriptor);
        }
    }

    /// Removes waiter `id` from `descriptor`'s queue; false if it is no longer queued.
    fn remove_waiter(&mut self, descriptor: &Bytes, id: u64, metrics: &Metrics) -> bool {
        let Some(entry) = self.locks.get_mut(descriptor) else {
            return false;
        };
        let Some(pos) = entry.queue.iter().position(|w| w.id == id) else {
            return false;
        };
        entry.queue.remove(pos);
        self.waiters -= 1;
        metrics.lock_waiters.dec();
        if entry.holder.is_none() {
            // The head may now be a wait-only waiter or a lock waiter behind a free lock.
            Self::advance_free_queue(entry, &mut self.waiters, metrics);
        }
        if entry.holder.is_none() && entry.queue.is_empty() {
            self.locks.remove(descriptor);
        }
        true
    }

    /// Grants a free lock to its queue head (wait-only heads pass straight through).
    fn advance_free_queue(entry: &mut LockEntry, waiters: &mut usize, metrics: &Metrics) {
        while entry.holder.is_none() {
            let Some(waiter) = entry.queue.pop_front() else {
                break;
            };
            *waiters -= 1;
            metrics.lock_waiters.dec();
            if !waiter.wait_only {
                entry.holder = Some(waiter.request);
                metrics.locks_held.inc();
            }
            let _ = waiter.wake.send(());
        }
    }

    fn unlock_token(&mut self, id: &Uuid, metrics: &Metrics) -> bool {
        let Some(token) = self.tokens.remove(id) else {
            return false;
        };
        match token.kind {
            TokenKind::Locks(descriptors) => {
                for d in &descriptors {
                    self.release(d, *id, metrics);
                }
                if self.watches.has_watches() && !descriptors.is_empty() {
                    self.watches.log_unlock(&descriptors);
                }
            }
            TokenKind::ImmutableTimestamp(ts) => self.immutable.remove(ts),
            TokenKind::TimestampLeases(leases) => {
                for (name, ts) in leases {
                    if let Some(tracker) = self.timestamp_leases.get_mut(&name) {
                        tracker.remove(ts);
                        if tracker.min().is_none() {
                            self.timestamp_leases.remove(&name);
                        }
                    }
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests;

// The entry size the `TokenKind` docs promise (key and token; hashbrown adds a control byte).
const _: () = assert!(std::mem::size_of::<(Uuid, Token)>() == 72);
