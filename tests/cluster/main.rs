//! Cluster mode on etcd: leadership, failover, fencing, and the etcd bound store.
//!
//! One test binary per theme: each links the server crate once, and the tests inside run in
//! parallel like any other test binary's.

#[path = "../common/mod.rs"]
mod common;

mod cli;
mod etcd_store;
mod leadership;
mod per_namespace;
