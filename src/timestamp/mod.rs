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
//! * a background extension once fewer than `low_water_mark` reserved values remain, and
//! * a request that finds the reservation exhausted (it waits for the write), and
//! * fast-forward, invalidate and revalidate, which persist before they return.
//!
//! All bound writes and state changes are serialised by one async mutex (`writer`), like
//! AtlasDB's `ErrorCheckingTimestampBoundStore`. A failed write moves the service to `FAILED` for
//! good: it never retries into a silent success (fail-stop; recovery is a restart, which re-reads
//! the bound). Arithmetic is checked everywhere; nothing wraps.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use tokio::sync::Mutex;

use crate::cluster::gate::TermGate;
use crate::config::TimestampSettings;
use crate::error::{Result, TimelockError};
use crate::metrics::Metrics;
use crate::storage::{BoundStore, NamespaceRecord};

const ACTIVE: u8 = 0;
const INVALIDATED: u8 = 1;
const FAILED: u8 = 2;
const FENCED: u8 = 3;

/// An inclusive range of fresh timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampRange {
    pub lower: i64,
    pub upper: i64,
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
    store: Arc<dyn BoundStore>,
    metrics: Metrics,
    /// Open while this node's term may serve (always, on a single node; see [`TermGate`]).
    gate: Arc<TermGate>,
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
            store,
            metrics,
            gate: TermGate::unbounded(),
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

    pub fn is_fail_stopped(&self) -> bool {
        self.state.load(Ordering::Acquire) == FAILED
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
                // Reservation exhausted: wait for a bound write, then try again.
                self.ensure_durable(next, next.saturating_add(self.limits.reservation))
                    .await?;
                continue;
            }
            if self
                .issued
                .compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                if durable - next < self.limits.low_water_mark {
                    self.extend_in_background();
                }
                self.metrics.timestamps_issued.inc_by(n as u64);
                return Ok(TimestampRange {
                    lower: current + 1,
                    upper: next,
                });
            }
        }
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
        Ok(())
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
                if self.state.swap(FAILED, Ordering::AcqRel) != FAILED {
                    self.metrics.fail_stopped.inc();
                }
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
                    .saturating_add(this.limits.low_water_mark)
                    .saturating_add(1);
                let target = issued.saturating_add(this.limits.reservation);
                // Errors are already logged and have fail-stopped the service.
                let _ = this.ensure_durable(needed, target).await;
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
