//! The invariant across failures: monotonic timestamps under load, restarts, power cuts, I/O
//! faults, fail-stop, clock jumps and a bounded soak.
//!
//! One test binary per theme: each links the server crate once, and the tests inside run in
//! parallel like any other test binary's.

#[path = "../common/mod.rs"]
mod common;

mod clock_jumps;
mod fail_stop;
mod io_faults;
mod monotonic;
mod power_cut;
mod restarts;
mod soak;
