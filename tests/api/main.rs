//! The wire contract as AtlasDB clients see it: every endpoint's paths, shapes and status codes,
//! the v2 and v1 lock services, mutual exclusion under load, direct dispatch and pipelining.
//!
//! One test binary per theme: each links the server crate once, and the tests inside run in
//! parallel like any other test binary's.

#[path = "../common/mod.rs"]
mod common;

mod direct_dispatch;
mod endpoints;
mod lock_exclusion;
mod lock_v1;
mod locks;
mod pipelining;
mod transaction_guarantees;
