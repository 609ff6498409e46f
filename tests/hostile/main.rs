//! Hostile and careless clients: malformed input, slow and abusive connections, overload,
//! access control and TLS.
//!
//! One test binary per theme: each links the server crate once, and the tests inside run in
//! parallel like any other test binary's.

#[path = "../common/mod.rs"]
mod common;

mod auth;
mod bad_input;
mod http_abuse;
mod overload;
mod tls;
