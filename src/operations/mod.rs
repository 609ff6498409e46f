//! Operations: what an operator does to a server's data rather than what a client asks of it —
//! backups and restores of a data dir ([`backup`]) and the resumable migration of a namespace
//! between two servers ([`migrate`]).

pub mod backup;
pub mod migrate;
