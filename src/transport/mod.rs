//! Transport: what happens to a connection before and after HTTP sees a request — TLS and the
//! self-waking poll. The accept loop that uses them is in `server` (`accept_loop`), with hyper's
//! header-read timeout and hyper-util's graceful shutdown; nothing here knows a route.

pub mod self_wake;
pub mod tls;
