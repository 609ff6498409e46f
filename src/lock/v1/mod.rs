//! The legacy lock service (v1) of one namespace for one leadership term: AtlasDB's original
//! `LockServiceImpl` (spec section 5.2), which some AtlasDB clients still call for user-level
//! locks through `/lk/*` and `/{ns}/lock/*`.
//!
//! Why a second lock table: v1 locks have READ/WRITE modes, reentrancy per lock client, grants
//! and wall-clock lock timeouts, none of which the v2 service ([`crate::lock::service`]) has;
//! and TimeLock keeps the two tables apart, so a v1 lock never conflicts with a v2 lock.
//!
//! Semantics, following `LockServerSync` / `LockServiceImpl`:
//! * a lock is held either by one writer (with a reentrancy count) or by readers (a count per
//!   client). A client holding the write lock may take it again, and may also take the read
//!   lock; a client holding only the read lock cannot take the write lock (an error, as
//!   `IllegalMonitorStateException` there). The anonymous client `""` is never reentrant;
//! * every lock has a FIFO queue: a newcomer waits behind queued requests (except a reentrant
//!   one), and a release grants the queue head, then the next while compatible, so readers
//!   behind a waiting writer wait too;
//! * a request takes its locks one after another in descriptor order, keeping what it got
//!   while it waits for the next (`LOCK_ALL_OR_NONE` gives everything back if one lock is not
//!   granted; `LOCK_AS_MANY_AS_POSSIBLE` keeps what it got);
//! * tokens expire `lockTimeout` after creation or their last refresh, but are only freed once
//!   the clock-drift allowance (`lock_v1.max_clock_drift_ms`, TimeLock's 5 s) has passed too,
//!   as `LockServiceImpl`'s reaper does (`expirationDateMs <= now - maxAllowedClockDrift`).
//!   Until then the token is held: it can be refreshed, unlocked and converted to a grant, and
//!   the version queries count it (AtlasDB clients lock with timeouts as short as 10 ms and
//!   refresh afterwards). Once freed (by the reaper, or the next call that looks) it is gone;
//! * grants: a token's locks can be handed over to a grant (owned by no client) and taken up
//!   by another client with the grant id.
//!
//! All state sits behind one mutex per namespace; critical sections never await. A waiting
//! request waits on a oneshot channel; if it is dropped (client gone, blocking cut-off) a guard
//! leaves the queue and gives back every lock it took. Expiry uses the monotonic clock; the
//! wall-clock milliseconds in tokens are only reported. Closing the table (`invalidateResources`,
//! leadership change, shutdown) fails waiters with `NotCurrentLeader` and drops every lock.

mod types;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::oneshot;

pub use types::*;

use crate::error::{Result, TimelockError};

/// TimeLock's allowance past a token's expiry before the reaper frees it
/// (`LockServerOptions.maxAllowedClockDrift`); the default of `lock_v1.max_clock_drift_ms`.
pub const DEFAULT_CLOCK_DRIFT: Duration = Duration::from_secs(5);

/// Wall-clock milliseconds since the epoch (what tokens report).
pub fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A random id of [`RANDOM_BIT_COUNT`] bits from the OS random source (via v4 UUIDs, whose
/// 122 random bits per UUID are more than enough from two of them).
fn random_id() -> u128 {
    let a = uuid::Uuid::new_v4().as_u128();
    let b = uuid::Uuid::new_v4().as_u128();
    // Random in a v4 UUID: bits 0..62 and 80..128.
    let low = a & ((1u128 << 62) - 1);
    let mid = b & ((1u128 << 62) - 1);
    let high = (a >> 80) & 0x7;
    (low | (mid << 62) | (high << 124)) & ((1u128 << RANDOM_BIT_COUNT) - 1)
}

/// Who holds a lock: a lock client (`""` = anonymous) or a grant waiting to be used.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owner {
    Client(Arc<str>),
    Grant,
}

impl Owner {
    fn is_anonymous(&self) -> bool {
        matches!(self, Owner::Client(c) if c.is_empty())
    }

    /// Whether a lock held by `self` counts as held by `other` for reentrancy.
    fn same_as(&self, other: &Owner) -> bool {
        self == other && !self.is_anonymous()
    }

    fn name(&self) -> Arc<str> {
        match self {
            Owner::Client(c) => c.clone(),
            Owner::Grant => Arc::from(GRANT_CLIENT_ID),
        }
    }
}

struct Waiter {
    id: u64,
    owner: Owner,
    mode: LockMode,
    wake: oneshot::Sender<()>,
    info: Arc<Requester>,
}

/// One lock: its holders, whether it is frozen, and its queue.
#[derive(Default)]
struct Entry {
    /// The writer and its reentrancy count.
    write: Option<(Owner, u32)>,
    /// Readers and their counts (anonymous readers share one count).
    readers: Vec<(Owner, u32)>,
    /// Set by `unlock-and-freeze` while the lock is still held; nobody may take it until it is
    /// completely free.
    frozen: bool,
    queue: VecDeque<Waiter>,
}

impl Entry {
    fn holds_read(&self, owner: &Owner) -> bool {
        !owner.is_anonymous() && self.readers.iter().any(|(o, n)| o == owner && *n > 0)
    }

    fn holds_write(&self, owner: &Owner) -> bool {
        self.write.as_ref().is_some_and(|(o, _)| o.same_as(owner))
    }

    /// `tryAcquire` / `tryAcquireShared`. `behind_queue`: whether a non-empty queue makes a
    /// newcomer wait (false for the queue head itself).
    fn try_take(
        &mut self,
        owner: &Owner,
        mode: LockMode,
        behind_queue: bool,
    ) -> std::result::Result<bool, String> {
        if self.frozen {
            return Ok(false);
        }
        let queued = behind_queue && !self.queue.is_empty();
        match mode {
            LockMode::Write => {
                if let Some((o, n)) = &mut self.write {
                    if o.same_as(owner) {
                        *n += 1;
                        return Ok(true);
                    }
                }
                if queued {
                    return Ok(false);
                }
                if self.write.is_none() && self.readers.is_empty() {
                    self.write = Some((owner.clone(), 1));
                    return Ok(true);
                }
                if self.holds_read(owner) {
                    return Err(format!(
                        "{:?} currently holds the read lock and cannot also take the write lock",
                        owner.name()
                    ));
                }
                Ok(false)
            }
            LockMode::Read => {
                if self.write.is_none() && queued && !self.holds_read(owner) {
                    return Ok(false);
                }
                if self.write.is_some() && !self.holds_write(owner) {
                    return Ok(false);
                }
                match self.readers.iter_mut().find(|(o, _)| o == owner) {
                    Some((_, n)) => *n += 1,
                    None => self.readers.push((owner.clone(), 1)),
                }
                Ok(true)
            }
        }
    }

    fn release(&mut self, owner: &Owner, mode: LockMode) {
        match mode {
            LockMode::Write => {
                if let Some((o, n)) = &mut self.write {
                    debug_assert!(o == owner, "release by a non-holder");
                    *n -= 1;
                    if *n == 0 {
                        self.write = None;
                    }
                }
            }
            LockMode::Read => {
                if let Some(i) = self.readers.iter().position(|(o, _)| o == owner) {
                    self.readers[i].1 -= 1;
                    if self.readers[i].1 == 0 {
                        self.readers.swap_remove(i);
                    }
                }
            }
        }
        if self.write.is_none() && self.readers.is_empty() {
            self.frozen = false;
        }
    }

    /// A client holding the lock (the writer, else a reader), as reported for failed locks.
    fn holder(&self) -> Arc<str> {
        if let Some((o, _)) = &self.write {
            return o.name();
        }
        self.readers
            .first()
            .map(|(o, _)| o.name())
            .unwrap_or_else(|| Arc::from(""))
    }

    fn is_idle(&self) -> bool {
        self.write.is_none() && self.readers.is_empty() && self.queue.is_empty()
    }
}

struct TokenRecord {
    view: TokenView,
    expires_at: Instant,
}

struct GrantRecord {
    view: GrantView,
    expires_at: Instant,
}

#[derive(Default)]
struct State {
    locks: HashMap<Bytes, Entry>,
    tokens: HashMap<u128, TokenRecord>,
    grants: HashMap<u128, GrantRecord>,
    /// Expiry index: (deadline, id, is_grant). Refreshes add an entry; stale ones are skipped.
    expiry: BTreeSet<(Instant, u128, bool)>,
    next_waiter: u64,
    closed: bool,
    /// How long past its expiry a token or grant is still held (see the module notes).
    clock_drift: Duration,
}

impl State {
    /// Grants queued requests on `d` from the head while they can be granted, and forgets the
    /// lock once nobody holds or wants it.
    fn pump(&mut self, d: &Bytes) {
        let Some(entry) = self.locks.get_mut(d) else {
            return;
        };
        while let Some(head) = entry.queue.front() {
            let (owner, mode) = (head.owner.clone(), head.mode);
            if !entry.try_take(&owner, mode, false).unwrap_or(false) {
                break;
            }
            let waiter = entry.queue.pop_front().expect("head exists");
            // A dropped receiver is handled by its request's guard: the waiter is no longer
            // queued, so the guard gives the lock back.
            let _ = waiter.wake.send(());
        }
        if entry.is_idle() {
            self.locks.remove(d);
        }
    }

    fn release_all(&mut self, owner: &Owner, locks: &[(Bytes, LockMode)]) {
        for (d, mode) in locks {
            if let Some(entry) = self.locks.get_mut(d) {
                entry.release(owner, *mode);
            }
            self.pump(d);
        }
    }

    /// Removes waiter `id` from `d`'s queue; false if it is no longer queued (granted).
    fn remove_waiter(&mut self, d: &Bytes, id: u64) -> bool {
        let Some(entry) = self.locks.get_mut(d) else {
            return false;
        };
        let Some(i) = entry.queue.iter().position(|w| w.id == id) else {
            return false;
        };
        entry.queue.remove(i);
        // The queue head may have been what held others back.
        self.pump(d);
        true
    }

    fn is_frozen(&self, locks: &[(Bytes, LockMode)]) -> bool {
        locks
            .iter()
            .any(|(d, _)| self.locks.get(d).is_some_and(|e| e.frozen))
    }

    fn remove_token(&mut self, id: u128) -> Option<TokenView> {
        let record = self.tokens.remove(&id)?;
        let owner = Owner::Client(record.view.client.clone());
        self.release_all(&owner, &record.view.locks);
        Some(record.view)
    }

    fn remove_grant(&mut self, id: u128) -> Option<GrantView> {
        let record = self.grants.remove(&id)?;
        self.release_all(&Owner::Grant, &record.view.locks);
        Some(record.view)
    }

    /// Releases every token and grant whose lock timeout and the clock-drift allowance after
    /// it have passed. Returns how many.
    fn sweep(&mut self, now: Instant) -> usize {
        let mut reaped = 0;
        while let Some(&(at, id, is_grant)) = self.expiry.first() {
            // The allowance is the same for every entry, so the index order still holds.
            if at
                .checked_add(self.clock_drift)
                .is_none_or(|free_at| free_at > now)
            {
                break;
            }
            self.expiry.pop_first();
            let current = if is_grant {
                self.grants.get(&id).map(|g| g.expires_at)
            } else {
                self.tokens.get(&id).map(|t| t.expires_at)
            };
            // Skip stale entries: the token is gone or was refreshed since.
            if current != Some(at) {
                continue;
            }
            if is_grant {
                self.remove_grant(id);
            } else {
                self.remove_token(id);
            }
            reaped += 1;
        }
        reaped
    }

    fn new_token(
        &mut self,
        client: Arc<str>,
        locks: Arc<[(Bytes, LockMode)]>,
        lock_timeout: TimeDuration,
        version_id: Option<i64>,
        requesting_thread: Arc<str>,
    ) -> TokenView {
        let mut token_id = random_id();
        while self.tokens.contains_key(&token_id) {
            tracing::error!("lock token id collision; drawing another");
            token_id = random_id();
        }
        let now_ms = wall_clock_ms();
        let expires_at = Instant::now() + lock_timeout.as_duration();
        let view = TokenView {
            token_id,
            client,
            creation_date_ms: now_ms,
            expiration_date_ms: now_ms.saturating_add(lock_timeout.to_millis()),
            locks,
            lock_timeout,
            version_id,
            requesting_thread,
        };
        self.tokens.insert(
            token_id,
            TokenRecord {
                view: view.clone(),
                expires_at,
            },
        );
        self.expiry.insert((expires_at, token_id, false));
        view
    }

    fn check_open(&self) -> Result<()> {
        if self.closed {
            Err(TimelockError::NotCurrentLeader)
        } else {
            Ok(())
        }
    }
}

/// A lock request in progress: what it holds and where it waits. Dropping it (request
/// abandoned, failed or cut off) leaves the queue and gives every lock back; a successful
/// request hands its locks to a token and disarms it.
struct Acquisition<'a> {
    service: &'a LockServiceV1,
    owner: Owner,
    held: Vec<(Bytes, LockMode)>,
    waiting: Option<(Bytes, LockMode, u64)>,
}

impl Drop for Acquisition<'_> {
    fn drop(&mut self) {
        if self.held.is_empty() && self.waiting.is_none() {
            return;
        }
        let mut st = self.service.state.lock();
        if st.closed {
            return;
        }
        if let Some((d, mode, id)) = self.waiting.take() {
            if !st.remove_waiter(&d, id) {
                self.held.push((d, mode));
            }
        }
        let held = std::mem::take(&mut self.held);
        st.release_all(&self.owner, &held);
    }
}

/// How a wait for one lock ended.
enum Waited {
    Granted,
    /// The request's own `BLOCK_UNTIL_TIMEOUT` duration passed.
    TimedOut,
    /// The server's blocking cut-off passed.
    CutOff,
}

/// The v1 lock table of one namespace for one term.
pub struct LockServiceV1 {
    state: Mutex<State>,
}

impl LockServiceV1 {
    /// A table with TimeLock's clock-drift allowance ([`DEFAULT_CLOCK_DRIFT`]).
    pub fn new() -> Arc<Self> {
        Self::with_clock_drift(DEFAULT_CLOCK_DRIFT)
    }

    /// A table whose tokens and grants stay held `clock_drift` past their expiry.
    pub fn with_clock_drift(clock_drift: Duration) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                clock_drift,
                ..State::default()
            }),
        })
    }

    /// `lockWithFullLockResponse`: takes `request`'s locks for `client` (`""` = anonymous).
    /// `cutoff`: the server's blocking limit; a request still waiting then fails with
    /// [`TimelockError::BlockingTimeout`] holding nothing.
    pub async fn lock(
        &self,
        client: &str,
        request: &LockRequest,
        cutoff: Option<Instant>,
    ) -> Result<LockResult> {
        if client == GRANT_CLIENT_ID {
            return Err(TimelockError::InvalidArgument(format!(
                "the lock client {GRANT_CLIENT_ID:?} is reserved"
            )));
        }
        let owner = Owner::Client(Arc::from(client));
        let started = Instant::now();
        let deadline = request.blocking_duration.map(|d| started + d.as_duration());
        let info = Arc::new(Requester {
            client: owner.name(),
            group: request.group,
            blocking: request.blocking,
            blocking_duration: request.blocking_duration,
            version_id: request.version_id,
            requesting_thread: request.creating_thread.clone(),
        });
        let mut acq = Acquisition {
            service: self,
            owner: owner.clone(),
            held: Vec::with_capacity(request.locks.len()),
            waiting: None,
        };
        let mut failed: Vec<(Bytes, Arc<str>)> = Vec::new();
        {
            let mut st = self.state.lock();
            st.check_open()?;
            st.sweep(started);
        }
        if request.blocking == BlockingMode::BlockUntilTimeout
            && request.group == LockGroupBehavior::LockAsManyAsPossible
        {
            // As LockServiceImpl: first take whatever is free, then wait for the rest.
            let mut st = self.state.lock();
            for (d, mode) in &request.locks {
                let entry = st.locks.entry(d.clone()).or_default();
                match entry.try_take(&owner, *mode, true) {
                    Ok(true) => acq.held.push((d.clone(), *mode)),
                    Ok(false) => failed.push((d.clone(), entry.holder())),
                    Err(e) => {
                        st.pump(d);
                        return Err(TimelockError::Internal(e));
                    }
                }
                st.pump(d);
            }
        }
        for (d, mode) in &request.locks {
            if acq.held.iter().any(|(h, _)| h == d) {
                continue;
            }
            let (holder, wake) = {
                let mut st = self.state.lock();
                st.check_open()?;
                if request.blocking == BlockingMode::BlockIndefinitelyThenRelease
                    && !st.locks.contains_key(d)
                {
                    // Nobody holds or wants it: nothing to wait for.
                    continue;
                }
                let entry = st.locks.entry(d.clone()).or_default();
                match entry.try_take(&owner, *mode, true) {
                    Ok(true) => {
                        acq.held.push((d.clone(), *mode));
                        failed.retain(|(f, _)| f != d);
                        continue;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        st.pump(d);
                        return Err(TimelockError::Internal(e));
                    }
                }
                let holder = entry.holder();
                let may_wait = match request.blocking {
                    BlockingMode::DoNotBlock => false,
                    BlockingMode::BlockUntilTimeout => deadline.is_some_and(|t| Instant::now() < t),
                    _ => true,
                };
                if !may_wait {
                    (holder, None)
                } else {
                    let (tx, rx) = oneshot::channel();
                    let id = st.next_waiter;
                    st.next_waiter += 1;
                    let entry = st.locks.get_mut(d).expect("entry just created");
                    entry.queue.push_back(Waiter {
                        id,
                        owner: owner.clone(),
                        mode: *mode,
                        wake: tx,
                        info: info.clone(),
                    });
                    acq.waiting = Some((d.clone(), *mode, id));
                    (holder, Some(rx))
                }
            };
            let outcome = match wake {
                None => Waited::TimedOut,
                Some(rx) => self.wait(rx, &mut acq, deadline, cutoff).await?,
            };
            match outcome {
                Waited::Granted => failed.retain(|(f, _)| f != d),
                Waited::CutOff => {
                    return Err(TimelockError::BlockingTimeout(format!(
                        "lock request of client {client:?} still blocked after the blocking limit of {} ms (lock_v1.blocking_timeout_ms); retry",
                        cutoff.map(|c| c.saturating_duration_since(started).as_millis()).unwrap_or(0)
                    )));
                }
                Waited::TimedOut => {
                    if !failed.iter().any(|(f, _)| f == d) {
                        failed.push((d.clone(), holder));
                    }
                    if request.group == LockGroupBehavior::LockAllOrNone {
                        break;
                    }
                }
            }
        }
        failed.sort_by(|a, b| a.0.cmp(&b.0));
        if request.blocking == BlockingMode::BlockIndefinitelyThenRelease {
            // `acq` gives everything back when dropped.
            return Ok(LockResult {
                token: None,
                failed,
                block_and_release: true,
            });
        }
        if acq.held.is_empty()
            || (request.group == LockGroupBehavior::LockAllOrNone
                && acq.held.len() < request.locks.len())
        {
            return Ok(LockResult {
                token: None,
                failed,
                block_and_release: false,
            });
        }
        let mut st = self.state.lock();
        st.check_open()?;
        let mut held = std::mem::take(&mut acq.held);
        held.sort_by(|a, b| a.0.cmp(&b.0));
        let token = st.new_token(
            owner.name(),
            Arc::from(held),
            request.lock_timeout,
            request.version_id,
            request.creating_thread.clone(),
        );
        Ok(LockResult {
            token: Some(token),
            failed,
            block_and_release: false,
        })
    }

    async fn wait(
        &self,
        rx: oneshot::Receiver<()>,
        acq: &mut Acquisition<'_>,
        deadline: Option<Instant>,
        cutoff: Option<Instant>,
    ) -> Result<Waited> {
        let limit = match (deadline, cutoff) {
            (Some(d), Some(c)) => Some(d.min(c)),
            (d, c) => d.or(c),
        };
        let result = match limit {
            Some(at) => tokio::time::timeout_at(tokio::time::Instant::from_std(at), rx).await,
            None => Ok(rx.await),
        };
        let (d, mode, id) = acq.waiting.take().expect("waiting");
        match result {
            Ok(Ok(())) => {
                acq.held.push((d, mode));
                Ok(Waited::Granted)
            }
            Ok(Err(_)) => Err(TimelockError::NotCurrentLeader),
            Err(_elapsed) => {
                let mut st = self.state.lock();
                st.check_open()?;
                if !st.remove_waiter(&d, id) {
                    // Granted in the same instant as the time ran out: count it.
                    acq.held.push((d, mode));
                    return Ok(Waited::Granted);
                }
                let cut = match (deadline, cutoff) {
                    (Some(d), Some(c)) => c <= d,
                    (None, Some(_)) => true,
                    _ => false,
                };
                Ok(if cut {
                    Waited::CutOff
                } else {
                    Waited::TimedOut
                })
            }
        }
    }

    /// Unlocks a token by id (`unlock`, `unlockSimple`, `unlock-deprecated`). False if the
    /// token is unknown, already unlocked or freed (expired and past the drift allowance).
    pub fn unlock(&self, token_id: u128) -> bool {
        let mut st = self.state.lock();
        if st.closed {
            return false;
        }
        st.sweep(Instant::now());
        st.remove_token(token_id).is_some()
    }

    /// `unlockAndFreeze`: unlocks, but locks the client still holds through another token
    /// stay unavailable to everyone until completely released. Refused (400) for the anonymous
    /// client and for tokens holding read locks.
    pub fn unlock_and_freeze(&self, token_id: u128) -> Result<bool> {
        let mut st = self.state.lock();
        if st.closed {
            return Ok(false);
        }
        st.sweep(Instant::now());
        let Some(record) = st.tokens.get(&token_id) else {
            return Ok(false);
        };
        if record.view.client.is_empty() {
            return Err(TimelockError::InvalidArgument(
                "unlockAndFreeze is not allowed for the anonymous client".into(),
            ));
        }
        if record.view.locks.iter().any(|(_, m)| *m == LockMode::Read) {
            return Err(TimelockError::InvalidArgument(
                "unlockAndFreeze is not allowed for tokens holding read locks".into(),
            ));
        }
        let record = st.tokens.remove(&token_id).expect("present");
        let owner = Owner::Client(record.view.client.clone());
        for (d, mode) in record.view.locks.iter() {
            if let Some(entry) = st.locks.get_mut(d) {
                entry.release(&owner, *mode);
                if entry.write.is_some() || !entry.readers.is_empty() {
                    entry.frozen = true;
                }
            }
            st.pump(d);
        }
        Ok(true)
    }

    /// Refreshes tokens by id (`refreshLockRefreshTokens`, `refreshTokens`): each still held
    /// and not frozen gets `expirationDateMs = now + lockTimeout`. Returns the refreshed ones.
    pub fn refresh(&self, token_ids: impl IntoIterator<Item = u128>) -> Vec<TokenView> {
        let mut st = self.state.lock();
        if st.closed {
            return Vec::new();
        }
        let now = Instant::now();
        st.sweep(now);
        let now_ms = wall_clock_ms();
        let mut out: Vec<TokenView> = Vec::new();
        for id in token_ids {
            if out.iter().any(|t| t.token_id == id) {
                continue;
            }
            let Some(record) = st.tokens.get(&id) else {
                continue;
            };
            if st.is_frozen(&record.view.locks) {
                continue;
            }
            let record = st.tokens.get_mut(&id).expect("present");
            let timeout = record.view.lock_timeout;
            record.expires_at = now + timeout.as_duration();
            record.view.expiration_date_ms = now_ms.saturating_add(timeout.to_millis());
            let (at, view) = (record.expires_at, record.view.clone());
            st.expiry.insert((at, id, false));
            out.push(view);
        }
        out
    }

    /// `getTokens`: the client's tokens (not frozen). Refused for the anonymous client.
    pub fn tokens_of(&self, client: &str) -> Result<Vec<TokenView>> {
        if client.is_empty() {
            return Err(TimelockError::InvalidArgument(
                "client must not be anonymous".into(),
            ));
        }
        if client == GRANT_CLIENT_ID {
            return Err(TimelockError::InvalidArgument("Illegal client!".into()));
        }
        let mut st = self.state.lock();
        if st.closed {
            return Ok(Vec::new());
        }
        st.sweep(Instant::now());
        let mut out: Vec<TokenView> = st
            .tokens
            .values()
            .filter(|t| &*t.view.client == client && !st.is_frozen(&t.view.locks))
            .map(|t| t.view.clone())
            .collect();
        out.sort_by_key(|t| t.token_id);
        Ok(out)
    }

    /// `convertToGrant`: moves a token's locks to a new grant. 400 for an unknown or frozen
    /// token; 500 if the client holds one of the locks more than once (as TimeLock).
    pub fn convert_to_grant(&self, token_id: u128) -> Result<GrantView> {
        let mut st = self.state.lock();
        st.check_open()?;
        st.sweep(Instant::now());
        let Some(record) = st.tokens.get(&token_id) else {
            return Err(TimelockError::InvalidArgument(format!(
                "token is invalid: {token_id}"
            )));
        };
        if st.is_frozen(&record.view.locks) {
            return Err(TimelockError::InvalidArgument(format!(
                "token is frozen: {token_id}"
            )));
        }
        let owner = Owner::Client(record.view.client.clone());
        let locks = record.view.locks.clone();
        change_owner(&mut st, &locks, &owner, &Owner::Grant)?;
        let record = st.tokens.remove(&token_id).expect("present");
        let mut grant_id = random_id();
        while st.grants.contains_key(&grant_id) {
            grant_id = random_id();
        }
        let timeout = record.view.lock_timeout;
        let now_ms = wall_clock_ms();
        let expires_at = Instant::now() + timeout.as_duration();
        let view = GrantView {
            grant_id,
            creation_date_ms: now_ms,
            expiration_date_ms: now_ms.saturating_add(timeout.to_millis()),
            locks,
            lock_timeout: timeout,
            version_id: record.view.version_id,
        };
        st.grants.insert(
            grant_id,
            GrantRecord {
                view: view.clone(),
                expires_at,
            },
        );
        st.expiry.insert((expires_at, grant_id, true));
        Ok(view)
    }

    /// `useGrant`: hands a grant's locks to `client` in a new token. 400 for an unknown grant.
    pub fn use_grant(&self, client: &str, grant_id: u128) -> Result<TokenView> {
        if client == GRANT_CLIENT_ID {
            return Err(TimelockError::InvalidArgument(format!(
                "the lock client {GRANT_CLIENT_ID:?} is reserved"
            )));
        }
        let mut st = self.state.lock();
        st.check_open()?;
        st.sweep(Instant::now());
        let Some(grant) = st.grants.get(&grant_id) else {
            return Err(TimelockError::InvalidArgument(format!(
                "Lock client {client:?} tried to use a lock grant that doesn't correspond to any held locks (grantId: {grant_id}); it's likely that this lock grant has expired due to timeout"
            )));
        };
        let owner = Owner::Client(Arc::from(client));
        let locks = grant.view.locks.clone();
        change_owner(&mut st, &locks, &Owner::Grant, &owner)?;
        let grant = st.grants.remove(&grant_id).expect("present").view;
        Ok(st.new_token(
            owner.name(),
            grant.locks,
            grant.lock_timeout,
            grant.version_id,
            Arc::from("Converted from Grant, Missing Thread Name"),
        ))
    }

    /// `refreshGrant`: extends a grant; `None` if unknown or expired.
    pub fn refresh_grant(&self, grant_id: u128) -> Option<GrantView> {
        let mut st = self.state.lock();
        if st.closed {
            return None;
        }
        let now = Instant::now();
        st.sweep(now);
        let record = st.grants.get_mut(&grant_id)?;
        let timeout = record.view.lock_timeout;
        record.expires_at = now + timeout.as_duration();
        record.view.expiration_date_ms = wall_clock_ms().saturating_add(timeout.to_millis());
        let (at, view) = (record.expires_at, record.view.clone());
        st.expiry.insert((at, grant_id, true));
        Some(view)
    }

    /// `getMinLockedInVersionId(LockClient)`: the smallest `versionId` among the tokens
    /// `client` holds (`""` = anonymous), or `None` when it holds none with a version id. A
    /// token counts while it is held (expired ones too, until freed past the drift allowance):
    /// not after it is unlocked (also by `unlock-and-freeze`) or converted to a grant, and one
    /// taken up from a grant counts for its new client. `LockServiceImpl` keeps a converted
    /// token's version id under its old client forever (its `versionIdMap` entry is never
    /// removed); answering from the held tokens instead keeps the answer true.
    pub fn min_locked_in_version_id(&self, client: &str) -> Option<i64> {
        let mut st = self.state.lock();
        if st.closed {
            return None;
        }
        st.sweep(Instant::now());
        st.tokens
            .values()
            .filter(|t| &*t.view.client == client)
            .filter_map(|t| t.view.version_id)
            .min()
    }

    /// `getLockState` for one descriptor.
    pub fn lock_state(&self, descriptor: &[u8]) -> LockStateView {
        let mut st = self.state.lock();
        st.sweep(Instant::now());
        let Some(entry) = st.locks.get(descriptor) else {
            return LockStateView::default();
        };
        let exact = if entry.readers.is_empty() {
            entry.write.iter().map(|(o, _)| o.name()).collect()
        } else {
            entry.readers.iter().map(|(o, _)| o.name()).collect()
        };
        let mut holders: Vec<TokenView> = st
            .tokens
            .values()
            .filter(|t| t.view.locks.iter().any(|(d, _)| d.as_ref() == descriptor))
            .map(|t| t.view.clone())
            .collect();
        holders.sort_by_key(|t| t.creation_date_ms);
        LockStateView {
            is_write_locked: entry.write.is_some(),
            is_frozen: entry.frozen,
            exact_current_lock_holders: exact,
            holders,
            requesters: entry.queue.iter().map(|w| (*w.info).clone()).collect(),
        }
    }

    /// Releases expired tokens and grants; returns how many.
    pub fn reap(&self) -> usize {
        let mut st = self.state.lock();
        if st.closed {
            return 0;
        }
        st.sweep(Instant::now())
    }

    /// Ends this table's term: waiters fail with `NotCurrentLeader`, every lock is dropped.
    pub fn close(&self) {
        let mut st = self.state.lock();
        st.closed = true;
        st.locks.clear();
        st.tokens.clear();
        st.grants.clear();
        st.expiry.clear();
    }

    /// Number of live tokens (tests, diagnostics).
    pub fn token_count(&self) -> usize {
        self.state.lock().tokens.len()
    }
}

/// Moves held locks from one owner to another (token <-> grant), all or none. A lock held
/// more than once by the old owner, or in both modes, cannot move (TimeLock's
/// `IllegalMonitorStateException`, a 500).
fn change_owner(
    st: &mut State,
    locks: &[(Bytes, LockMode)],
    from: &Owner,
    to: &Owner,
) -> Result<()> {
    for (d, mode) in locks {
        let entry = st.locks.get(d);
        let movable = entry.is_some_and(|e| {
            !e.frozen
                && match mode {
                    LockMode::Write => {
                        matches!(&e.write, Some((o, 1)) if o == from)
                            && !e.readers.iter().any(|(o, _)| o == from)
                    }
                    LockMode::Read => {
                        e.write.is_none() && e.readers.iter().any(|(o, n)| o == from && *n == 1)
                    }
                }
        });
        if !movable {
            return Err(TimelockError::Internal(format!(
                "cannot move lock {:?} from {:?} to {:?}: it is held more than once, in both modes, or frozen",
                String::from_utf8_lossy(d),
                from.name(),
                to.name()
            )));
        }
    }
    for (d, mode) in locks {
        let entry = st.locks.get_mut(d).expect("checked");
        match mode {
            LockMode::Write => entry.write = Some((to.clone(), 1)),
            LockMode::Read => {
                let i = entry
                    .readers
                    .iter()
                    .position(|(o, _)| o == from)
                    .expect("checked");
                entry.readers.swap_remove(i);
                match entry.readers.iter_mut().find(|(o, _)| o == to) {
                    Some((_, n)) => *n += 1,
                    None => entry.readers.push((to.clone(), 1)),
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
