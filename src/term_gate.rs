//! The gate every request of a leadership term passes: open while this node may serve.
//!
//! In single-node mode the gate is open until closed (shutdown). In cluster mode it is tied to
//! the etcd lease behind this node's leadership: [`LeaseClock`] holds the instant until which
//! this node may serve (the last renewal's send time plus the lease TTL, shrunk for clock drift
//! and a safety margin), and the gate compares the monotonic clock with it *on every request*.
//! A leader whose renewals stop therefore stops serving by itself, at the deadline, even if
//! the election task is slow or the process was paused: no background task has to run first.
//! The check costs one clock read (vDSO, no system call) and two atomic loads.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Result, TimelockError};

/// The instant until which a lease lets this node serve, as nanoseconds since `base`.
pub struct LeaseClock {
    base: Instant,
    deadline_nanos: AtomicU64,
}

impl LeaseClock {
    /// A clock whose deadline has passed (nothing may be served until a renewal arrives).
    pub fn expired() -> Arc<Self> {
        Arc::new(Self {
            base: Instant::now(),
            deadline_nanos: AtomicU64::new(0),
        })
    }

    fn nanos(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base)
            .as_nanos()
            .min(u64::MAX as u128) as u64
    }

    /// Moves the deadline to `until` if that is later (renewal acknowledgements can arrive out
    /// of the order their requests were sent in; the deadline never moves back).
    pub fn extend_to(&self, until: Instant) {
        self.deadline_nanos
            .fetch_max(self.nanos(until), Ordering::AcqRel);
    }

    /// The deadline.
    pub fn deadline(&self) -> Instant {
        self.base + Duration::from_nanos(self.deadline_nanos.load(Ordering::Acquire))
    }

    /// Whether `now` is before the deadline.
    pub fn is_valid_at(&self, now: Instant) -> bool {
        self.nanos(now) < self.deadline_nanos.load(Ordering::Acquire)
    }

    /// Whether the deadline is still ahead.
    pub fn is_valid(&self) -> bool {
        self.is_valid_at(Instant::now())
    }

    /// Time left before the deadline (zero once passed).
    pub fn remaining(&self) -> Duration {
        self.deadline().saturating_duration_since(Instant::now())
    }
}

/// Open while the services of one term may serve; closed for good once the term ends.
pub struct TermGate {
    open: AtomicBool,
    lease: Option<Arc<LeaseClock>>,
}

impl TermGate {
    /// Single-node mode: open until [`TermGate::close`].
    pub fn unbounded() -> Arc<Self> {
        Arc::new(Self {
            open: AtomicBool::new(true),
            lease: None,
        })
    }

    /// Cluster mode: open until closed or until `lease`'s deadline passes.
    pub fn leased(lease: Arc<LeaseClock>) -> Arc<Self> {
        Arc::new(Self {
            open: AtomicBool::new(true),
            lease: Some(lease),
        })
    }

    /// Ok while this term may serve; [`TimelockError::NotCurrentLeader`] after.
    #[inline]
    pub fn check(&self) -> Result<()> {
        if self.is_open() {
            Ok(())
        } else {
            Err(TimelockError::NotCurrentLeader)
        }
    }

    #[inline]
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire) && self.lease.as_ref().is_none_or(|l| l.is_valid())
    }

    /// Whether this gate belongs to a cluster leadership term (whose failures end the term
    /// rather than stopping the service until a restart).
    pub fn is_leased(&self) -> bool {
        self.lease.is_some()
    }

    /// Ends the term: every later check fails.
    pub fn close(&self) {
        self.open.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unbounded_gate_is_open_until_closed() {
        let gate = TermGate::unbounded();
        assert!(gate.check().is_ok());
        gate.close();
        assert_eq!(gate.check(), Err(TimelockError::NotCurrentLeader));
    }

    #[test]
    fn leased_gate_closes_by_itself_at_the_deadline() {
        let clock = LeaseClock::expired();
        let gate = TermGate::leased(clock.clone());
        assert!(gate.check().is_err(), "no renewal yet");
        clock.extend_to(Instant::now() + Duration::from_millis(50));
        assert!(gate.check().is_ok());
        // An older acknowledgement never moves the deadline back.
        clock.extend_to(Instant::now());
        assert!(gate.check().is_ok());
        std::thread::sleep(Duration::from_millis(60));
        assert!(gate.check().is_err(), "deadline passed without a renewal");
        clock.extend_to(Instant::now() + Duration::from_secs(5));
        assert!(gate.check().is_ok());
        gate.close();
        assert!(gate.check().is_err(), "closed for good");
    }
}
