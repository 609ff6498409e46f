//! The v2 lock service (TimeLock's `AsyncLockService`): exclusive locks with FIFO queues and
//! leases ([`service`]), the leader clock that leases are measured on ([`clock`]), the
//! lock-watch event log ([`watch`]); and, apart from it, the legacy v1 READ/WRITE lock table
//! ([`v1`]). Locks live in memory on the serving node and die with its term, as in TimeLock;
//! clients detect that through the leadership id.

pub mod clock;
mod min_tracker;
pub mod service;
pub mod v1;
pub mod watch;

pub use clock::{LeaderTime, Lease};
pub use service::{LockLimits, LockOutcome, LockService};
