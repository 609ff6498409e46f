//! timelock: a standalone, TimeLock-compatible timestamp (and, later, lock) server.
//!
//! The crate is layered so that each layer knows only the one below it:
//!
//! * [`http`] — axum routers for the AtlasDB wire contract (legacy `/{ns}/...` paths and the
//!   Conjure `/tl/...` paths), parsing and validation, and the single place where
//!   [`error::TimelockError`] becomes an HTTP response.
//! * [`namespaces`] and [`timestamp`] — the core services. They know nothing of HTTP: a
//!   namespace registry that creates namespaces on first use, and a per-namespace allocator whose
//!   hot path is an atomic compare-and-swap inside a durably reserved range.
//! * [`storage`] — the bound store behind one trait ([`storage::BoundStore`]). RocksDB is the
//!   embedded single-node engine; a distributed engine can implement the same trait without the
//!   layers above noticing.
//!
//! [`server`] wires these together and runs the HTTP server; [`cli`] is the operator's command
//! line, which talks to a running server over HTTP.

pub mod auth;
pub mod backup;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod drain;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod head_timeout;
pub mod http;
pub mod lock;
pub mod metrics;
pub mod migrate;
pub mod namespaces;
pub mod self_wake;
pub mod server;
pub mod storage;
pub mod timestamp;
pub mod tls;
pub mod transactions;

/// The server's version, as reported in logs and (later) backup metadata.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The hash map of the request paths' tables (namespaces by name, tokens and requestors by
/// UUID, held locks by descriptor): foldhash, seeded at random per map, instead of SipHash,
/// which callgrind put at about 150 instructions per lookup, several lookups per `/tl/st`.
/// foldhash's seeding keeps collisions unpredictable to clients choosing the keys.
pub type FastHashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
