//! Side-by-side load harness: this server against the ceiling (a constant-response axum
//! handler) and against what users would run instead (etcd, Redis, PostgreSQL, tsoracle).
//! See `harness.rs` for what is measured and how; `peers.rs` starts and drives the peers.
//!
//!     ./dev bench                 # release build, then the full run (about 10 minutes)
//!     ./dev bench --smoke         # a few seconds; fails only on wrong answers

#[path = "compare/chart.rs"]
mod chart;
#[path = "compare/harness.rs"]
mod harness;
#[path = "compare/peers.rs"]
mod peers;

fn main() -> std::process::ExitCode {
    harness::main()
}
