//! timelock: a standalone, TimeLock-compatible timestamp and lock server.
//!
//! The layers, top down; each imports only from the layers below it:
//!
//! * [`server`] — wiring: builds every layer from the settings, binds, runs the accept loop,
//!   schedules backups, shuts down gracefully.
//! * [`transport`] — connections before HTTP: TLS and the self-waking poll.
//! * [`http`] — the AtlasDB wire contract (legacy `/{ns}/...` and Conjure `/tl/...` paths):
//!   routes and handlers, the wire layer ([`http::wire`]: every body type with its decoder and
//!   writer), access control, load shedding, and the single place where
//!   [`error::TimelockError`] becomes an HTTP response.
//! * [`status`] — one snapshot of what the server is doing (role, namespaces, backups,
//!   migrations), read from the layers below for the admin endpoint, the page at `/` and
//!   `timelock status`.
//! * [`cluster`] — who serves: a single node, or the leader elected through etcd.
//! * [`operations`] — backups, restores and migrations of a server's data.
//! * the core services, which know nothing of HTTP: [`namespaces`] (the registry, creation on
//!   first use), [`transactions`] (start transactions, commit timestamps; [`partitions`]), [`timestamp`] (the
//!   allocator: an atomic compare-and-swap inside a durably reserved range), [`lock`] (the v2
//!   lock service, leases, lock watches; the legacy v1 lock table), and [`term_gate`] (the
//!   fence every request of a leadership term passes), plus [`auth`] (the access policy).
//! * [`storage`] — the bound store behind one trait ([`storage::BoundStore`]): RocksDB for a
//!   single node, etcd for a cluster.
//! * [`config`], [`error`] and [`metrics`] are shared by every layer.
//!
//! [`cli`] is the operator's command line and [`client`] its HTTP client (also the migration
//! tool's): a client of running servers, which nothing of the server imports.

pub mod auth;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod lock;
pub mod metrics;
pub mod namespaces;
pub mod operations;
pub mod partitions;
pub mod server;
pub mod status;
pub mod storage;
pub mod term_gate;
pub mod timestamp;
pub mod transactions;
pub mod transport;

/// The server's version, as reported in logs and (later) backup metadata.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The hash map of the request paths' tables (namespaces by name, tokens and requestors by
/// UUID, held locks by descriptor): foldhash, seeded at random per map, instead of SipHash,
/// whose per-lookup cost showed in profiles of `/tl/st` (several lookups per request).
/// foldhash's seeding keeps collisions unpredictable to clients choosing the keys.
pub type FastHashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
