//! Operator commands end to end: backups and restores, migrations, the CLI, and the status view.
//!
//! One test binary per theme: each links the server crate once, and the tests inside run in
//! parallel like any other test binary's.

#[path = "../common/mod.rs"]
mod common;

mod backup;
mod cli;
mod migrate;
mod monitoring;
mod restore_property;
mod status;
