//! The per-namespace timestamp allocator.
//!
//! Two numbers define it, both only ever increasing:
//! * `issued` — the highest timestamp handed out (or fast-forwarded to);
//! * `durable` — the highest bound known to be persisted by the [`BoundStore`].
//!
//! The invariant is `issued <= durable` at every instant: a range is handed out by a
//! compare-and-swap of `issued` that is attempted only when the new value is within `durable`.
//! Because `durable` never decreases, a check that passed before the CAS still holds after it.
//! After a restart both start at the stored bound, so the first timestamp is `bound + 1`, above
//! everything issued before, however the process died.
//!
//! The hot path is one atomic load of the state, two loads and one CAS: no lock, no allocation,
//! no disk. Disk is touched only to move `durable` forward, by
//! * a background extension once fewer than the low-water mark of reserved values remain, and
//! * a request that finds the reservation exhausted (it waits for the write), and
//! * fast-forward, invalidate and revalidate, which persist before they return.
//!
//! The reservation follows the issue rate, as PD's timestamp oracle does: each extension
//! reserves `max(timestamp.reservation, rate × RESERVATION_HORIZON)` (the rate measured between
//! bound writes, capped at [`MAX_WINDOW`]), and the low-water mark scales with it, so even a
//! client taking 10,000-timestamp batches as fast as it can finds the bound extended in the
//! background, long before it runs out, instead of waiting for a disk write every few requests.
//! Reservations below [`MIN_ADAPTIVE_RESERVATION`] are used as configured (they are there to
//! exercise bound writes). A larger reservation only moves the durable bound further ahead; the invariant is unchanged
//! (the values skipped after a restart are at most one window).
//!
//! All bound writes and state changes are serialised by one async mutex (`writer`), like
//! AtlasDB's `ErrorCheckingTimestampBoundStore`. A failed write moves the service to `FAILED` for
//! good: it never retries into a silent success (fail-stop; recovery is a restart, which re-reads
//! the bound). Arithmetic is checked everywhere; nothing wraps.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::config::TimestampSettings;
use crate::error::{Result, TimelockError};
use crate::metrics::Metrics;
use crate::storage::{BoundStore, NamespaceRecord};
use crate::term_gate::TermGate;

const ACTIVE: u8 = 0;
const INVALIDATED: u8 = 1;
const FAILED: u8 = 2;
const FENCED: u8 = 3;

/// Each bound write reserves at least this long at the issue rate observed since the previous
/// one (PD reserves 3 s): the background extension then starts with about half of it left.
pub const RESERVATION_HORIZON: Duration = Duration::from_secs(2);

/// Largest window one bound write reserves, however fast timestamps go (about 10^12, which is
/// still over 8 million restarts' worth of skipped values below `i64::MAX`).
pub const MAX_WINDOW: i64 = 1 << 40;

/// Reservations below this are taken literally (no rate sizing): they exist to exercise bound
/// writes (tests, fault drills), which a rate-sized window would make rare.
pub const MIN_ADAPTIVE_RESERVATION: i64 = 10_000;

/// Rate samples shorter than this only ever grow the window (short samples are noisy).
const MIN_SHRINK_SAMPLE: Duration = Duration::from_millis(100);

/// Where the last rate sample was taken: when, and `issued` at that moment.
struct RateSample {
    at: Instant,
    issued: i64,
}

/// An inclusive range of fresh timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampRange {
    pub lower: i64,
    pub upper: i64,
}

/// Timestamps issued by [`TimestampService::try_fresh_timestamps`], to be read out with
/// [`TimestampService::finish`].
#[must_use]
#[derive(Debug)]
pub struct Issued {
    range: TimestampRange,
    /// The reservation fell below the low-water mark: extend it in the background.
    low: bool,
}

impl TimestampRange {
    pub fn count(&self) -> i64 {
        self.upper - self.lower + 1
    }
}

/// Limits and tuning shared by every namespace's allocator.
#[derive(Debug, Clone, Copy)]
pub struct AllocatorLimits {
    pub reservation: i64,
    pub low_water_mark: i64,
    pub max_per_request: i64,
}

impl From<&TimestampSettings> for AllocatorLimits {
    fn from(s: &TimestampSettings) -> Self {
        Self {
            reservation: s.reservation,
            low_water_mark: s.low_water_mark.unwrap_or(s.reservation / 2),
            max_per_request: s.max_per_request,
        }
    }
}

/// Largest value `fast-forward` accepts: one whole reservation must still fit below
/// `i64::MAX`, so a fast-forwarded namespace can keep issuing.
pub fn max_fast_forward(limits: &AllocatorLimits) -> i64 {
    i64::MAX - limits.reservation
}

/// Rejects a batch size that is not positive (TimeLock: `IllegalArgumentException`, 400).
pub fn validate_count(requested: i64) -> Result<()> {
    if requested <= 0 {
        return Err(TimelockError::InvalidArgument(format!(
            "number of timestamps requested must be positive, got {requested}"
        )));
    }
    Ok(())
}

/// Rejects the missing-value sentinel `Long.MIN_VALUE` and targets so close to `Long.MAX_VALUE`
/// that the namespace could not issue afterwards. Everything else is acceptable (values at or
/// below the current timestamp are no-ops).
pub fn validate_fast_forward(limits: &AllocatorLimits, timestamp: i64) -> Result<()> {
    if timestamp == i64::MIN {
        return Err(TimelockError::InvalidArgument(
            "currentTimestamp is required (Long.MIN_VALUE is the missing-value sentinel)".into(),
        ));
    }
    let max = max_fast_forward(limits);
    if timestamp > max {
        return Err(TimelockError::InvalidArgument(format!(
            "currentTimestamp {timestamp} is too close to Long.MAX_VALUE: at most {max} is accepted, so that a full reservation of {} timestamps still fits",
            limits.reservation
        )));
    }
    Ok(())
}

/// The timestamp service of one namespace.
pub struct TimestampService {
    namespace: Arc<str>,
    issued: AtomicI64,
    durable: AtomicI64,
    state: AtomicU8,
    failure: OnceLock<Arc<str>>,
    extending: AtomicBool,
    writer: Mutex<()>,
    limits: AllocatorLimits,
    /// Current reservation per bound write (at least `limits.reservation`, see module docs).
    window: AtomicI64,
    /// Extend in the background when fewer than this many reserved values remain (the configured
    /// low-water mark scaled with `window`).
    low_water: AtomicI64,
    /// Last rate sample; touched only by bound writes (under `writer`) and fast-forwards.
    sample: parking_lot::Mutex<RateSample>,
    store: Arc<dyn BoundStore>,
    metrics: Metrics,
    /// Open while this node's term may serve (always, on a single node; see [`TermGate`]).
    gate: Arc<TermGate>,
    /// Unix seconds at which this service was built fenced (0 if it was not). The fence itself
    /// records no time: a restored namespace is fenced from the restart that follows the
    /// restore, which is when this process builds it.
    fenced_since: f64,
}

impl TimestampService {
    /// Builds the service from its persisted record: nothing at or below `record.bound` will be
    /// issued.
    pub fn new(
        namespace: Arc<str>,
        record: NamespaceRecord,
        limits: AllocatorLimits,
        store: Arc<dyn BoundStore>,
        metrics: Metrics,
    ) -> Self {
        Self {
            namespace,
            issued: AtomicI64::new(record.bound),
            durable: AtomicI64::new(record.bound),
            state: AtomicU8::new(if record.invalidated {
                INVALIDATED
            } else if record.fenced {
                FENCED
            } else {
                ACTIVE
            }),
            failure: OnceLock::new(),
            extending: AtomicBool::new(false),
            writer: Mutex::new(()),
            limits,
            window: AtomicI64::new(limits.reservation),
            low_water: AtomicI64::new(limits.low_water_mark),
            sample: parking_lot::Mutex::new(RateSample {
                at: Instant::now(),
                issued: record.bound,
            }),
            store,
            metrics,
            gate: TermGate::unbounded(),
            fenced_since: if record.fenced && !record.invalidated {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64())
            } else {
                0.0
            },
        }
    }

    /// Serves only while `gate` is open (cluster mode: while this node holds the leader lease).
    pub fn with_gate(mut self, gate: Arc<TermGate>) -> Self {
        self.gate = gate;
        self
    }

    pub fn namespace(&self) -> &Arc<str> {
        &self.namespace
    }

    /// Highest bound known durable: no timestamp above it has been issued.
    pub fn durable_bound(&self) -> i64 {
        self.durable.load(Ordering::Acquire)
    }

    /// Highest timestamp issued or fast-forwarded to.
    pub fn last_issued(&self) -> i64 {
        self.issued.load(Ordering::Acquire)
    }

    pub fn is_invalidated(&self) -> bool {
        self.state.load(Ordering::Acquire) == INVALIDATED
    }

    /// Restored from a backup and not yet fast-forwarded.
    pub fn is_fenced(&self) -> bool {
        self.state.load(Ordering::Acquire) == FENCED
    }

    /// Unix seconds since which this process has seen the namespace fenced; `None` unless it
    /// is fenced now.
    pub fn fenced_since(&self) -> Option<f64> {
        self.is_fenced().then_some(self.fenced_since)
    }

    pub fn is_fail_stopped(&self) -> bool {
        self.state.load(Ordering::Acquire) == FAILED
    }

    /// Why the service fail-stopped, once it has.
    pub fn failure(&self) -> Option<Arc<str>> {
        self.failure.get().cloned()
    }

    fn check_state(&self) -> Result<()> {
        self.gate.check()?;
        match self.state.load(Ordering::Acquire) {
            ACTIVE => Ok(()),
            INVALIDATED => Err(TimelockError::NamespaceInvalidated {
                namespace: self.namespace.clone(),
            }),
            FENCED => Err(TimelockError::NamespaceFenced {
                namespace: self.namespace.clone(),
            }),
            _ => Err(self.failed_error()),
        }
    }

    fn failed_error(&self) -> TimelockError {
        TimelockError::FailStopped {
            namespace: self.namespace.clone(),
            reason: self
                .failure
                .get()
                .cloned()
                .unwrap_or_else(|| Arc::from("unknown")),
        }
    }

    /// One fresh timestamp.
    pub async fn fresh_timestamp(self: &Arc<Self>) -> Result<i64> {
        Ok(self.fresh_timestamps(1).await?.lower)
    }

    /// Between 1 and `min(requested, max_per_request)` fresh timestamps. `requested <= 0` is an
    /// invalid argument.
    pub async fn fresh_timestamps(self: &Arc<Self>, requested: i64) -> Result<TimestampRange> {
        loop {
            match self.try_fresh_timestamps(requested)? {
                Some(issued) => return Ok(self.finish(issued)),
                None => self.wait_for_reservation(requested).await?,
            }
        }
    }

    /// [`Self::fresh_timestamps`] without waiting: `None` when the reservation cannot cover the
    /// request, which then needs [`Self::wait_for_reservation`] before trying again. No I/O, no
    /// allocation, no lock: callers may hold their own lock across it (the lock-watch log's, so
    /// that no lock event falls between the timestamps and the update they carry). The range is
    /// issued once this returns `Some`; [`Self::finish`] (outside the caller's lock) reads it out
    /// and starts a background extension if the reservation runs low.
    pub fn try_fresh_timestamps(&self, requested: i64) -> Result<Option<Issued>> {
        validate_count(requested)?;
        let n = requested.min(self.limits.max_per_request);
        loop {
            self.check_state()?;
            let current = self.issued.load(Ordering::Acquire);
            let next =
                current
                    .checked_add(n)
                    .ok_or_else(|| TimelockError::TimestampsExhausted {
                        namespace: self.namespace.clone(),
                    })?;
            let durable = self.durable.load(Ordering::Acquire);
            if next > durable {
                return Ok(None);
            }
            if self
                .issued
                .compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Ok(Some(Issued {
                    range: TimestampRange {
                        lower: current + 1,
                        upper: next,
                    },
                    low: durable - next < self.low_water.load(Ordering::Relaxed),
                }));
            }
        }
    }

    /// The range of an [`Issued`], counted, with the reservation topped up in the background if
    /// it ran low.
    pub fn finish(self: &Arc<Self>, issued: Issued) -> TimestampRange {
        if issued.low {
            self.extend_in_background();
        }
        self.metrics
            .timestamps_issued
            .inc_by(issued.range.count() as u64);
        issued.range
    }

    /// Waits until the reservation covers `requested` more timestamps than issued so far (a
    /// bound write, unless another request's write already did it). Another request may take
    /// them first: callers try again and may have to wait again.
    pub async fn wait_for_reservation(&self, requested: i64) -> Result<()> {
        validate_count(requested)?;
        self.check_state()?;
        let n = requested.min(self.limits.max_per_request);
        let next = self
            .issued
            .load(Ordering::Acquire)
            .checked_add(n)
            .ok_or_else(|| TimelockError::TimestampsExhausted {
                namespace: self.namespace.clone(),
            })?;
        if next > self.durable.load(Ordering::Acquire) {
            self.ensure_reserved(next, next).await?;
        }
        Ok(())
    }

    /// Moves the sequence so that every later timestamp is greater than `timestamp`. Never lowers
    /// it; idempotent. Persists before returning, so the promise survives a crash.
    pub async fn fast_forward(self: &Arc<Self>, timestamp: i64) -> Result<()> {
        self.check_fast_forward_target(timestamp)?;
        if self.state.load(Ordering::Acquire) == FENCED {
            // The operator names the last timestamp the world may have seen: lift the fence.
            return self.lift(timestamp, false).await;
        }
        self.check_state()?;
        if timestamp <= self.issued.load(Ordering::Acquire) {
            return Ok(()); // already past it (covers AtlasDB's Long.MIN_VALUE + 1 start-up call)
        }
        self.ensure_durable(timestamp, timestamp + self.limits.reservation)
            .await?;
        self.issued.fetch_max(timestamp, Ordering::AcqRel);
        self.skip_rate_sample_to(timestamp);
        Ok(())
    }

    /// A jump of `issued` (fast-forward, revalidate) is not issue rate: the next sample counts
    /// only what is issued after it.
    fn skip_rate_sample_to(&self, timestamp: i64) {
        let mut sample = self.sample.lock();
        sample.issued = sample.issued.max(timestamp);
    }

    /// The current reservation window (at least `timestamp.reservation`).
    pub fn reservation_window(&self) -> i64 {
        self.window.load(Ordering::Relaxed)
    }

    /// Takes a rate sample at `issued` and resizes the window (and the low-water mark) to
    /// `max(reservation, rate × RESERVATION_HORIZON)`. Samples shorter than
    /// [`MIN_SHRINK_SAMPLE`] may only grow it. Called under `writer`, before a bound write.
    fn resize_window(&self, issued: i64) -> i64 {
        if self.limits.reservation < MIN_ADAPTIVE_RESERVATION {
            return self.limits.reservation;
        }
        let now = Instant::now();
        let mut sample = self.sample.lock();
        let elapsed = now.duration_since(sample.at);
        let counted = issued.saturating_sub(sample.issued).max(0);
        *sample = RateSample {
            at: now,
            issued: issued.max(sample.issued),
        };
        drop(sample);
        let reservation = self.limits.reservation;
        let current = self.window.load(Ordering::Relaxed);
        let secs = elapsed.as_secs_f64().max(1e-6);
        let wanted = (counted as f64 / secs * RESERVATION_HORIZON.as_secs_f64())
            .min(MAX_WINDOW as f64) as i64;
        let window = if elapsed >= MIN_SHRINK_SAMPLE {
            wanted.max(reservation)
        } else {
            wanted.max(current)
        }
        .clamp(reservation, MAX_WINDOW.max(reservation));
        if window != current {
            let low = (i128::from(self.limits.low_water_mark) * i128::from(window)
                / i128::from(reservation)) as i64;
            self.low_water.store(low, Ordering::Relaxed);
            self.window.store(window, Ordering::Relaxed);
        }
        window
    }

    fn check_fast_forward_target(&self, timestamp: i64) -> Result<()> {
        validate_fast_forward(&self.limits, timestamp)
    }

    /// Durably marks the namespace invalidated and returns its durable bound: the highest
    /// timestamp it can ever have issued. Idempotent: invalidating again returns the same bound.
    pub async fn invalidate(self: &Arc<Self>) -> Result<i64> {
        let _guard = self.writer.lock().await;
        self.gate.check()?;
        match self.state.load(Ordering::Acquire) {
            INVALIDATED => return Ok(self.durable_bound()),
            FAILED => return Err(self.failed_error()),
            _ => {}
        }
        let bound = self.durable_bound();
        self.persist(NamespaceRecord {
            bound,
            invalidated: true,
            fenced: false,
        })
        .await?;
        self.state.store(INVALIDATED, Ordering::Release);
        tracing::warn!(namespace = %self.namespace, bound, "namespace invalidated");
        Ok(bound)
    }

    /// Lifts an invalidation (or a restore fence) and fast-forwards past `timestamp` in one
    /// durable write. On an active namespace this is a plain fast-forward.
    pub async fn revalidate(self: &Arc<Self>, timestamp: i64) -> Result<()> {
        self.check_fast_forward_target(timestamp)?;
        self.lift(timestamp, true).await
    }

    /// Persists `max(durable, timestamp + reservation)` with no flags and becomes active.
    /// An invalidated namespace is lifted only if `allow_invalidated` (revalidate, not
    /// fast-forward).
    async fn lift(&self, timestamp: i64, allow_invalidated: bool) -> Result<()> {
        let _guard = self.writer.lock().await;
        self.gate.check()?;
        match self.state.load(Ordering::Acquire) {
            FAILED => return Err(self.failed_error()),
            INVALIDATED if !allow_invalidated => {
                return Err(TimelockError::NamespaceInvalidated {
                    namespace: self.namespace.clone(),
                })
            }
            _ => {}
        }
        let bound = self
            .durable_bound()
            .max(timestamp + self.limits.reservation);
        self.persist(NamespaceRecord {
            bound,
            invalidated: false,
            fenced: false,
        })
        .await?;
        self.issued.fetch_max(timestamp, Ordering::AcqRel);
        self.skip_rate_sample_to(timestamp);
        match self.state.swap(ACTIVE, Ordering::AcqRel) {
            INVALIDATED => {
                tracing::warn!(namespace = %self.namespace, timestamp, "namespace revalidated")
            }
            FENCED => {
                tracing::warn!(namespace = %self.namespace, timestamp, "restore fence lifted")
            }
            _ => {}
        }
        Ok(())
    }

    /// Makes `durable >= needed`, writing `max(target, needed)` if a write is required.
    async fn ensure_durable(&self, needed: i64, target: i64) -> Result<()> {
        let _guard = self.writer.lock().await;
        self.check_state()?;
        if self.durable.load(Ordering::Acquire) >= needed {
            return Ok(());
        }
        self.persist(NamespaceRecord {
            bound: target.max(needed),
            invalidated: false,
            fenced: false,
        })
        .await
    }

    /// Makes `durable >= needed` for the allocator: a write, if one is required, reserves the
    /// current window (resized to the issue rate) above `base`.
    async fn ensure_reserved(&self, needed: i64, base: i64) -> Result<()> {
        let _guard = self.writer.lock().await;
        self.check_state()?;
        if self.durable.load(Ordering::Acquire) >= needed {
            return Ok(());
        }
        let issued = self.issued.load(Ordering::Acquire);
        let window = self.resize_window(issued);
        self.persist(NamespaceRecord {
            bound: base.max(issued).saturating_add(window).max(needed),
            invalidated: false,
            fenced: false,
        })
        .await
    }

    /// Writes `record` durably and publishes its bound. Caller holds `writer`. On failure the
    /// service fail-stops.
    async fn persist(&self, record: NamespaceRecord) -> Result<()> {
        let started = Instant::now();
        let result = self.store.put(&self.namespace, record).await;
        self.metrics
            .bound_write_latency
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => {
                self.metrics.bound_writes.with_label_values(&["ok"]).inc();
                self.durable.fetch_max(record.bound, Ordering::AcqRel);
                Ok(())
            }
            Err(e) => {
                self.metrics
                    .bound_writes
                    .with_label_values(&["error"])
                    .inc();
                let _ = self.failure.set(Arc::from(e.0.as_str()));
                // `timelock_fail_stopped_services` is counted from the registry at each scrape,
                // so a later term (cluster mode) does not inherit this one's count.
                self.state.store(FAILED, Ordering::Release);
                if self.gate.is_leased() {
                    // Cluster mode: the whole term ends (nothing more is served from it) and a
                    // new one, here or on another node, reloads the bounds from etcd.
                    self.gate.close();
                    tracing::error!(
                        namespace = %self.namespace,
                        error = %e,
                        durable_bound = self.durable_bound(),
                        "could not persist timestamp bound to etcd: ending this leadership term"
                    );
                    return Err(TimelockError::NotCurrentLeader);
                }
                tracing::error!(
                    namespace = %self.namespace,
                    error = %e,
                    durable_bound = self.durable_bound(),
                    "FAIL-STOP: could not persist timestamp bound; this namespace issues no more timestamps until the server is restarted"
                );
                Err(self.failed_error())
            }
        }
    }

    /// Starts one background bound extension unless one is already running.
    fn extend_in_background(self: &Arc<Self>) {
        if self.extending.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        let spawned = tokio::runtime::Handle::try_current().map(|handle| {
            handle.spawn(async move {
                let issued = this.issued.load(Ordering::Acquire);
                let needed = issued
                    .saturating_add(this.low_water.load(Ordering::Relaxed))
                    .saturating_add(1);
                // Errors are already logged and have fail-stopped the service.
                let _ = this.ensure_reserved(needed, issued).await;
                this.extending.store(false, Ordering::Release);
            })
        });
        if spawned.is_err() {
            // No runtime (synchronous caller): the next exhausted request extends in line.
            self.extending.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests;
