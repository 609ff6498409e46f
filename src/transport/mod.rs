//! Transport: what happens to a connection before and after HTTP sees a request — TLS, the
//! header-read deadline, the self-waking poll, and the graceful drain at shutdown. The accept
//! loop that ties them together is in `server` (`accept_loop`); nothing here knows a route.

pub mod drain;
pub mod head_timeout;
pub mod self_wake;
pub mod tls;
