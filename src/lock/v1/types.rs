//! The value types of the legacy lock service, named and spelled as AtlasDB's
//! `lock-api-objects` (`LockMode`, `BlockingMode`, `LockGroupBehavior`, `TimeDuration`), so that
//! the HTTP layer can (de)serialise them as they are.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// `READ` (shared) or `WRITE` (exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LockMode {
    Read,
    Write,
}

/// Whether a request wants all of its locks or nothing, or whatever it can get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LockGroupBehavior {
    LockAllOrNone,
    LockAsManyAsPossible,
}

/// How long a request waits for locks held by others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BlockingMode {
    DoNotBlock,
    BlockUntilTimeout,
    BlockIndefinitely,
    /// Wait until every lock has been free once, then release at once (a barrier, no token).
    BlockIndefinitelyThenRelease,
}

/// `java.util.concurrent.TimeUnit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TimeUnit {
    Nanoseconds,
    Microseconds,
    Milliseconds,
    Seconds,
    Minutes,
    Hours,
    Days,
}

impl TimeUnit {
    fn nanos(self) -> i64 {
        match self {
            TimeUnit::Nanoseconds => 1,
            TimeUnit::Microseconds => 1_000,
            TimeUnit::Milliseconds => 1_000_000,
            TimeUnit::Seconds => 1_000_000_000,
            TimeUnit::Minutes => 60_000_000_000,
            TimeUnit::Hours => 3_600_000_000_000,
            TimeUnit::Days => 86_400_000_000_000,
        }
    }
}

/// `SimpleTimeDuration`: `{"time":120,"unit":"SECONDS"}`. Kept as given, since tokens echo it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeDuration {
    pub time: i64,
    pub unit: TimeUnit,
}

impl TimeDuration {
    pub const fn new(time: i64, unit: TimeUnit) -> Self {
        Self { time, unit }
    }

    /// Nanoseconds, saturating like Java's `TimeUnit.toNanos`.
    pub fn to_nanos(self) -> i64 {
        self.time.saturating_mul(self.unit.nanos())
    }

    /// Milliseconds, saturating (Java's `TimeUnit.toMillis`; truncates towards zero).
    pub fn to_millis(self) -> i64 {
        let per_ms = self.unit.nanos();
        if per_ms >= 1_000_000 {
            self.time.saturating_mul(per_ms / 1_000_000)
        } else {
            self.time / (1_000_000 / per_ms)
        }
    }

    /// As a `Duration`; negative values count as zero.
    pub fn as_duration(self) -> Duration {
        Duration::from_nanos(u64::try_from(self.to_nanos()).unwrap_or(0))
    }
}

/// The default lock timeout (`LockRequest.DEFAULT_LOCK_TIMEOUT`).
pub const DEFAULT_LOCK_TIMEOUT: TimeDuration = TimeDuration::new(120, TimeUnit::Seconds);
/// The largest lock timeout accepted (`LockServerOptions.maxAllowedLockTimeout`).
pub const MAX_LOCK_TIMEOUT: TimeDuration = TimeDuration::new(10, TimeUnit::Minutes);
/// Bits of randomness in token and grant ids (`LockServiceImpl.RANDOM_BIT_COUNT`).
pub const RANDOM_BIT_COUNT: u32 = 127;
/// The client id that owns locks while they are a grant; no real client may use it.
pub const GRANT_CLIENT_ID: &str = "(internal lock grant client)";

/// One lock request (`LockRequest`), already validated by [`LockRequest::new`].
#[derive(Debug, Clone)]
pub struct LockRequest {
    /// Sorted by unsigned lexicographic byte order, each descriptor once.
    pub locks: Vec<(Bytes, LockMode)>,
    pub lock_timeout: TimeDuration,
    pub group: LockGroupBehavior,
    pub blocking: BlockingMode,
    /// Only for `BLOCK_UNTIL_TIMEOUT`.
    pub blocking_duration: Option<TimeDuration>,
    pub version_id: Option<i64>,
    pub creating_thread: Arc<str>,
}

impl LockRequest {
    /// Builds a request the way `LockRequest.SerializationProxy` does, refusing what AtlasDB's
    /// builder refuses (each error is a 400): no locks at all (`LockRequest.Builder` checks
    /// `!lockMap.isEmpty()`), duplicate descriptors, a lock timeout that is
    /// negative or above 10 minutes, `BLOCK_UNTIL_TIMEOUT` without a duration,
    /// `LOCK_AS_MANY_AS_POSSIBLE` with `BLOCK_INDEFINITELY`, and a version id with
    /// `BLOCK_INDEFINITELY_THEN_RELEASE`. A zero blocking duration means `DO_NOT_BLOCK`.
    /// Missing fields take the builder's defaults (120 s, all-or-none, block indefinitely).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        locks: Vec<(Bytes, LockMode)>,
        lock_timeout: Option<TimeDuration>,
        group: Option<LockGroupBehavior>,
        blocking: Option<BlockingMode>,
        blocking_duration: Option<TimeDuration>,
        version_id: Option<i64>,
        creating_thread: Option<String>,
    ) -> Result<Self, String> {
        if locks.is_empty() {
            return Err("a lock request must name at least one lock (locks is empty)".into());
        }
        let mut locks = locks;
        locks.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(w) = locks.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(format!(
                "lock descriptor {:?} appears more than once in the request",
                String::from_utf8_lossy(&w[0].0)
            ));
        }
        let lock_timeout = lock_timeout.unwrap_or(DEFAULT_LOCK_TIMEOUT);
        if lock_timeout.time < 0 {
            return Err(format!(
                "lockTimeout must not be negative: {lock_timeout:?}"
            ));
        }
        if lock_timeout.to_nanos() > MAX_LOCK_TIMEOUT.to_nanos() {
            return Err(format!(
                "Requested lock timeout ({} {:?}) is greater than maximum allowed lock timeout (10 MINUTES)",
                lock_timeout.time, lock_timeout.unit
            ));
        }
        let group = group.unwrap_or(LockGroupBehavior::LockAllOrNone);
        let mut blocking = blocking.unwrap_or(BlockingMode::BlockIndefinitely);
        let mut blocking_duration = blocking_duration;
        if blocking == BlockingMode::BlockUntilTimeout {
            match blocking_duration {
                None => {
                    return Err("blockingDuration is required with BLOCK_UNTIL_TIMEOUT".into());
                }
                Some(d) if d.to_nanos() == 0 => {
                    blocking = BlockingMode::DoNotBlock;
                    blocking_duration = None;
                }
                Some(d) if d.time < 0 => {
                    return Err("blockingDuration must not be negative".into());
                }
                Some(_) => {}
            }
        } else {
            blocking_duration = None;
        }
        if group == LockGroupBehavior::LockAsManyAsPossible
            && blocking == BlockingMode::BlockIndefinitely
        {
            return Err(
                "LOCK_AS_MANY_AS_POSSIBLE needs an explicit blocking mode other than BLOCK_INDEFINITELY"
                    .into(),
            );
        }
        if version_id.is_some() && blocking == BlockingMode::BlockIndefinitelyThenRelease {
            return Err("versionId cannot be used with BLOCK_INDEFINITELY_THEN_RELEASE".into());
        }
        Ok(Self {
            locks,
            lock_timeout,
            group,
            blocking,
            blocking_duration,
            version_id,
            creating_thread: Arc::from(creating_thread.unwrap_or_default()),
        })
    }
}

/// A held-locks token as clients see it (`HeldLocksToken`).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenView {
    pub token_id: u128,
    /// `""` is the anonymous client.
    pub client: Arc<str>,
    pub creation_date_ms: i64,
    pub expiration_date_ms: i64,
    pub locks: Arc<[(Bytes, LockMode)]>,
    pub lock_timeout: TimeDuration,
    pub version_id: Option<i64>,
    pub requesting_thread: Arc<str>,
}

/// A lock grant (`HeldLocksGrant`): locks owned by no client until one uses the grant.
#[derive(Debug, Clone, PartialEq)]
pub struct GrantView {
    pub grant_id: u128,
    pub creation_date_ms: i64,
    pub expiration_date_ms: i64,
    pub locks: Arc<[(Bytes, LockMode)]>,
    pub lock_timeout: TimeDuration,
    pub version_id: Option<i64>,
}

/// The outcome of a lock request (`LockResponse`).
#[derive(Debug, Clone, PartialEq)]
pub struct LockResult {
    /// The token, if locks were granted.
    pub token: Option<TokenView>,
    /// Locks not granted, with a client holding each (`""` for anonymous).
    pub failed: Vec<(Bytes, Arc<str>)>,
    /// A `BLOCK_INDEFINITELY_THEN_RELEASE` answer: every lock was free once, nothing is held.
    pub block_and_release: bool,
}

impl LockResult {
    /// `LockResponse.success()`.
    pub fn success(&self) -> bool {
        if self.block_and_release {
            self.failed.is_empty()
        } else {
            self.token.is_some()
        }
    }
}

/// One client waiting in a lock's queue (for the debugging state).
#[derive(Debug, Clone, PartialEq)]
pub struct Requester {
    pub client: Arc<str>,
    pub group: LockGroupBehavior,
    pub blocking: BlockingMode,
    pub blocking_duration: Option<TimeDuration>,
    pub version_id: Option<i64>,
    pub requesting_thread: Arc<str>,
}

/// The state of one lock (`LockState`, `get-debugging-lock-state`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LockStateView {
    pub is_write_locked: bool,
    pub is_frozen: bool,
    pub exact_current_lock_holders: Vec<Arc<str>>,
    pub holders: Vec<TokenView>,
    pub requesters: Vec<Requester>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_convert_like_java_time_units() {
        assert_eq!(TimeDuration::new(2, TimeUnit::Minutes).to_millis(), 120_000);
        assert_eq!(
            TimeDuration::new(1500, TimeUnit::Microseconds).to_millis(),
            1
        );
        assert_eq!(TimeDuration::new(5, TimeUnit::Nanoseconds).to_nanos(), 5);
        assert_eq!(TimeDuration::new(1, TimeUnit::Days).to_millis(), 86_400_000);
        assert_eq!(
            TimeDuration::new(i64::MAX, TimeUnit::Days).to_nanos(),
            i64::MAX
        );
        assert_eq!(
            TimeDuration::new(-1, TimeUnit::Seconds).as_duration(),
            Duration::ZERO
        );
    }

    #[test]
    fn requests_are_validated_like_the_builder() {
        let l = |d: &str, m| (Bytes::from(d.to_string()), m);
        let ok = LockRequest::new(
            vec![l("b", LockMode::Read), l("a", LockMode::Write)],
            None,
            None,
            None,
            None,
            None,
            None,
        )
        .unwrap();
        assert_eq!(ok.locks[0].0, "a");
        assert_eq!(ok.lock_timeout, DEFAULT_LOCK_TIMEOUT);
        assert_eq!(ok.blocking, BlockingMode::BlockIndefinitely);
        assert_eq!(ok.group, LockGroupBehavior::LockAllOrNone);
        let dup = vec![l("a", LockMode::Read), l("a", LockMode::Write)];
        assert!(LockRequest::new(dup, None, None, None, None, None, None).is_err());
        // `LockRequest.Builder`: `checkArgument(!lockMap.isEmpty())`.
        let empty = LockRequest::new(vec![], None, None, None, None, None, None).unwrap_err();
        assert!(empty.contains("at least one lock"), "{empty}");
        let one = || vec![l("a", LockMode::Write)];
        let too_long = Some(TimeDuration::new(601, TimeUnit::Seconds));
        assert!(LockRequest::new(one(), too_long, None, None, None, None, None).is_err());
        let max = Some(TimeDuration::new(10, TimeUnit::Minutes));
        assert!(LockRequest::new(one(), max, None, None, None, None, None).is_ok());
        let until = Some(BlockingMode::BlockUntilTimeout);
        assert!(LockRequest::new(one(), None, None, until, None, None, None).is_err());
        let zero = Some(TimeDuration::new(0, TimeUnit::Seconds));
        let r = LockRequest::new(one(), None, None, until, zero, None, None).unwrap();
        assert_eq!(r.blocking, BlockingMode::DoNotBlock);
        let many = Some(LockGroupBehavior::LockAsManyAsPossible);
        assert!(LockRequest::new(one(), None, many, None, None, None, None).is_err());
        let release = Some(BlockingMode::BlockIndefinitelyThenRelease);
        assert!(LockRequest::new(one(), None, None, release, None, Some(1), None).is_err());
    }
}
