//! The one error type of the core services.
//!
//! Core code returns [`TimelockError`] and never thinks about HTTP; `http::error` is the single
//! place that turns each variant into a status code and a Conjure `SerializableError` body. The
//! variants are chosen by what a caller must do about them (fix the request, stop using this
//! namespace, try later), not by where they came from.

use std::sync::Arc;

/// Everything a core service can refuse or fail with.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TimelockError {
    /// The request itself is wrong (bad namespace, bad number, bad JSON). Never retried.
    #[error("{0}")]
    InvalidArgument(String),

    /// The namespace was invalidated (its timestamps moved to another service). Not retryable:
    /// a client that retries elsewhere could be handed timestamps from a service that is no
    /// longer authoritative.
    #[error("namespace {namespace:?} is invalidated: this server no longer issues its timestamps; revalidate it (POST /{namespace}/timestamp-management/revalidate?currentTimestamp=T) to use it here again")]
    NamespaceInvalidated { namespace: Arc<str> },

    /// The namespace was restored from a backup and has not been fast-forwarded since: its bound
    /// may be below timestamps already handed out before the restore.
    #[error("namespace {namespace:?} was restored from a backup and is fenced: fast-forward it past the last timestamp issued before the restore (POST /{namespace}/timestamp-management/fast-forward?currentTimestamp=T) before using it")]
    NamespaceFenced { namespace: Arc<str> },

    /// The namespace's bound could not be made durable; its timestamp service has stopped for
    /// good (until a restart re-reads the bound). See "Fail-stop" in docs/guarantees.md.
    #[error("timestamp service for namespace {namespace:?} has stopped because its bound could not be made durable ({reason}); restart the server once storage is healthy")]
    FailStopped {
        namespace: Arc<str>,
        reason: Arc<str>,
    },

    /// Creating one more namespace would pass the configured cap.
    #[error("Maximum number of clients exceeded: this server already has {limit} namespaces (namespaces.max)")]
    TooManyNamespaces { limit: usize },

    /// The namespace has run out of 63-bit timestamps.
    #[error("namespace {namespace:?} has exhausted the timestamp space (Long.MAX_VALUE)")]
    TimestampsExhausted { namespace: Arc<str> },

    /// Storage failed outside any one namespace (for example creating a namespace).
    #[error("storage error: {0}")]
    Storage(String),

    /// The request body is larger than the configured limit.
    #[error("{0}")]
    RequestTooLarge(String),

    /// The request (its body, say) did not arrive or complete within its deadline (408).
    #[error("{0}")]
    RequestTimeout(String),

    /// The server was taken out of service by `forceKillTimeLockServer`: it refuses every
    /// client request until it is restarted by hand (503, no body: clients go to another node).
    #[error(
        "this server was taken out of service (forceKillTimeLockServer); restart it to serve again"
    )]
    ForceKilled,

    /// This node no longer leads the namespace's services (they were closed by a leadership
    /// change or `invalidateResources`). Clients retry on another node (503).
    #[error("not the current leader for this namespace")]
    NotCurrentLeader,

    /// Leader per namespace: another node leads this namespace (or nobody yet). Answered as
    /// [`TimelockError::NotCurrentLeader`], with a 308 to that namespace's leader when known.
    #[error("this node does not lead namespace {0:?}")]
    NotLeaderOf(String),

    /// A bounded resource (for example lock waiters) is exhausted; retry later (429).
    #[error("{0}")]
    TooManyRequests(String),

    /// No credential, or one this server does not know (401). No side effects happened.
    #[error("{0}")]
    Unauthenticated(String),

    /// A known credential that does not grant this operation (403). No side effects happened.
    #[error("{0}")]
    PermissionDenied(String),

    /// The server is shutting down.
    #[error("server is shutting down")]
    ShuttingDown,

    /// A legacy (v1) lock request was still blocked when the server's blocking limit ran out
    /// (TimeLock's `BlockingTimeoutException`): it holds nothing; the client retries on the same
    /// node (429 with `Retry-After: 0`, or 503 for legacy clients).
    #[error("{0}")]
    BlockingTimeout(String),

    /// An internal inconsistency the request ran into (for example a v1 lock client asking for
    /// the write lock while holding the read lock: TimeLock's `IllegalMonitorStateException`).
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = TimelockError> = std::result::Result<T, E>;
