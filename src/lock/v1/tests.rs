use std::time::{Duration, Instant};

use super::*;

fn req(locks: &[(&str, LockMode)]) -> LockRequestBuilder {
    LockRequestBuilder {
        locks: locks
            .iter()
            .map(|(d, m)| (Bytes::from(d.to_string()), *m))
            .collect(),
        timeout: None,
        group: None,
        blocking: Some(BlockingMode::DoNotBlock),
        duration: None,
        version: None,
    }
}

struct LockRequestBuilder {
    locks: Vec<(Bytes, LockMode)>,
    timeout: Option<TimeDuration>,
    group: Option<LockGroupBehavior>,
    blocking: Option<BlockingMode>,
    duration: Option<TimeDuration>,
    version: Option<i64>,
}

impl LockRequestBuilder {
    fn blocking(mut self, mode: BlockingMode) -> Self {
        self.blocking = Some(mode);
        self
    }
    fn until(mut self, ms: i64) -> Self {
        self.blocking = Some(BlockingMode::BlockUntilTimeout);
        self.duration = Some(TimeDuration::new(ms, TimeUnit::Milliseconds));
        self
    }
    fn lock_as_many(mut self) -> Self {
        self.group = Some(LockGroupBehavior::LockAsManyAsPossible);
        self
    }
    fn version(mut self, v: i64) -> Self {
        self.version = Some(v);
        self
    }
    fn timeout_ms(mut self, ms: i64) -> Self {
        self.timeout = Some(TimeDuration::new(ms, TimeUnit::Milliseconds));
        self
    }
    fn build(self) -> LockRequest {
        LockRequest::new(
            self.locks,
            self.timeout,
            self.group,
            self.blocking,
            self.duration,
            self.version,
            Some("test".into()),
        )
        .unwrap()
    }
}

const R: LockMode = LockMode::Read;
const W: LockMode = LockMode::Write;

async fn try_lock(
    s: &LockServiceV1,
    client: &str,
    locks: &[(&str, LockMode)],
) -> Option<TokenView> {
    s.lock(client, &req(locks).build(), None)
        .await
        .unwrap()
        .token
}

#[tokio::test]
async fn readers_share_writers_exclude() {
    let s = LockServiceV1::new();
    let r1 = try_lock(&s, "a", &[("x", R)]).await.unwrap();
    let r2 = try_lock(&s, "b", &[("x", R)]).await.unwrap();
    assert!(try_lock(&s, "c", &[("x", W)]).await.is_none());
    // Failures name a holder.
    let res = s.lock("c", &req(&[("x", W)]).build(), None).await.unwrap();
    assert_eq!(res.failed.len(), 1);
    assert!(["a", "b"].contains(&&*res.failed[0].1));
    assert!(s.unlock(r1.token_id));
    assert!(try_lock(&s, "c", &[("x", W)]).await.is_none());
    assert!(s.unlock(r2.token_id));
    let w = try_lock(&s, "c", &[("x", W)]).await.unwrap();
    assert!(try_lock(&s, "a", &[("x", R)]).await.is_none());
    assert!(try_lock(&s, "a", &[("x", W)]).await.is_none());
    assert!(s.unlock(w.token_id));
    assert!(!s.unlock(w.token_id), "second unlock is false");
    assert_eq!(s.token_count(), 0);
    assert!(s.state.lock().locks.is_empty(), "idle locks are forgotten");
}

#[tokio::test]
async fn reentrancy_per_client_but_not_for_anonymous() {
    let s = LockServiceV1::new();
    let w1 = try_lock(&s, "a", &[("x", W)]).await.unwrap();
    let w2 = try_lock(&s, "a", &[("x", W)]).await.unwrap();
    let r = try_lock(&s, "a", &[("x", R)]).await.unwrap();
    assert!(try_lock(&s, "b", &[("x", R)]).await.is_none());
    s.unlock(w1.token_id);
    s.unlock(r.token_id);
    assert!(
        try_lock(&s, "b", &[("x", R)]).await.is_none(),
        "w2 still holds"
    );
    s.unlock(w2.token_id);
    assert!(try_lock(&s, "b", &[("x", R)]).await.is_some());

    let s = LockServiceV1::new();
    let anon = try_lock(&s, "", &[("y", W)]).await.unwrap();
    assert_eq!(&*anon.client, "");
    assert!(try_lock(&s, "", &[("y", W)]).await.is_none());
    assert!(try_lock(&s, "", &[("y", R)]).await.is_none());
    // A reader cannot upgrade to writer: an error, as IllegalMonitorStateException.
    let s = LockServiceV1::new();
    try_lock(&s, "a", &[("z", R)]).await.unwrap();
    let err = s.lock("a", &req(&[("z", W)]).build(), None).await;
    assert!(matches!(err, Err(TimelockError::Internal(_))), "{err:?}");
}

#[tokio::test]
async fn group_behaviours() {
    let s = LockServiceV1::new();
    try_lock(&s, "a", &[("b", W)]).await.unwrap();
    let all = s
        .lock("c", &req(&[("a", W), ("b", W), ("c", W)]).build(), None)
        .await
        .unwrap();
    assert!(all.token.is_none());
    assert_eq!(all.failed.len(), 1);
    assert!(
        try_lock(&s, "z", &[("a", W)]).await.is_some(),
        "nothing kept"
    );
    let many = s
        .lock(
            "c",
            &req(&[("b", W), ("c", W), ("d", R)]).lock_as_many().build(),
            None,
        )
        .await
        .unwrap();
    let token = many.token.unwrap();
    let held: Vec<&[u8]> = token.locks.iter().map(|(d, _)| d.as_ref()).collect();
    assert_eq!(held, [b"c".as_ref(), b"d".as_ref()]);
    assert_eq!(
        many.failed,
        vec![(Bytes::from_static(b"b"), Arc::from("a"))]
    );
}

#[tokio::test]
async fn blocking_modes() {
    let s = LockServiceV1::new();
    let w = try_lock(&s, "a", &[("x", W)]).await.unwrap();
    // BLOCK_UNTIL_TIMEOUT gives up after its duration.
    let t0 = Instant::now();
    let r = s
        .lock("b", &req(&[("x", W)]).until(100).build(), None)
        .await
        .unwrap();
    assert!(r.token.is_none());
    assert!(t0.elapsed() >= Duration::from_millis(90));
    assert!(s.state.lock().locks["x".as_bytes()].queue.is_empty());
    // BLOCK_INDEFINITELY is granted when the holder lets go.
    let s2 = s.clone();
    let waiter = tokio::spawn(async move {
        s2.lock(
            "b",
            &req(&[("x", R)])
                .blocking(BlockingMode::BlockIndefinitely)
                .build(),
            None,
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiter.is_finished());
    s.unlock(w.token_id);
    let got = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let reader = got.token.unwrap();
    // BLOCK_INDEFINITELY_THEN_RELEASE waits, then holds nothing.
    let s3 = s.clone();
    let barrier = tokio::spawn(async move {
        s3.lock(
            "c",
            &req(&[("x", W), ("free", W)])
                .blocking(BlockingMode::BlockIndefinitelyThenRelease)
                .build(),
            None,
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!barrier.is_finished());
    s.unlock(reader.token_id);
    let done = tokio::time::timeout(Duration::from_secs(5), barrier)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(done.block_and_release && done.token.is_none() && done.success());
    assert!(s.state.lock().locks.is_empty());
    assert_eq!(s.token_count(), 0);
}

#[tokio::test]
async fn fifo_queue_holds_back_later_readers_and_cutoff_gives_everything_back() {
    let s = LockServiceV1::new();
    let r = try_lock(&s, "a", &[("x", R)]).await.unwrap();
    let s2 = s.clone();
    let writer = tokio::spawn(async move {
        s2.lock(
            "w",
            &req(&[("x", W)])
                .blocking(BlockingMode::BlockIndefinitely)
                .build(),
            None,
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    // A new reader queues behind the waiting writer (no writer starvation).
    assert!(try_lock(&s, "b", &[("x", R)]).await.is_none());
    // A reentrant reader does not.
    assert!(try_lock(&s, "a", &[("x", R)]).await.is_some());
    // The cut-off: a blocked request fails and gives back what it took.
    let cut = s
        .lock(
            "c",
            &req(&[("a", W), ("x", W)])
                .blocking(BlockingMode::BlockIndefinitely)
                .build(),
            Some(Instant::now() + Duration::from_millis(80)),
        )
        .await;
    assert!(
        matches!(cut, Err(TimelockError::BlockingTimeout(_))),
        "{cut:?}"
    );
    assert!(
        try_lock(&s, "d", &[("a", W)]).await.is_some(),
        "released on cut-off"
    );
    assert!(!writer.is_finished());
    writer.abort();
    let _ = writer.await;
    let q = s.state.lock().locks["x".as_bytes()].queue.len();
    assert_eq!(q, 0, "an abandoned waiter leaves the queue");
    s.unlock(r.token_id);
}

#[tokio::test]
async fn expiry_refresh_and_reaping() {
    // No drift allowance: a token is freed as soon as its timeout passes.
    let s = LockServiceV1::with_clock_drift(Duration::ZERO);
    let t = s
        .lock("a", &req(&[("x", W)]).timeout_ms(150).build(), None)
        .await
        .unwrap()
        .token
        .unwrap();
    assert_eq!(t.expiration_date_ms - t.creation_date_ms, 150);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refreshed = s.refresh([t.token_id, t.token_id, 42]);
    assert_eq!(refreshed.len(), 1);
    assert!(refreshed[0].expiration_date_ms >= t.expiration_date_ms);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        s.refresh([t.token_id]).len(),
        1,
        "still alive thanks to the refresh"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.reap(), 1);
    assert!(s.refresh([t.token_id]).is_empty());
    assert!(!s.unlock(t.token_id));
    assert!(try_lock(&s, "b", &[("x", W)]).await.is_some());
}

#[tokio::test]
async fn grants_move_locks_between_clients() {
    let s = LockServiceV1::new();
    let t = try_lock(&s, "a", &[("x", W), ("y", R)]).await.unwrap();
    let g = s.convert_to_grant(t.token_id).unwrap();
    assert!(s.refresh([t.token_id]).is_empty(), "the token is gone");
    assert!(
        try_lock(&s, "a", &[("x", W)]).await.is_none(),
        "a no longer owns x"
    );
    assert!(s.refresh_grant(g.grant_id).is_some());
    let t2 = s.use_grant("b", g.grant_id).unwrap();
    assert_eq!(&*t2.client, "b");
    assert_eq!(t2.locks, g.locks);
    assert!(
        s.use_grant("c", g.grant_id).is_err(),
        "a grant is used once"
    );
    assert!(s.refresh_grant(g.grant_id).is_none());
    assert!(
        try_lock(&s, "b", &[("x", W)]).await.is_some(),
        "b is reentrant on x"
    );
    assert!(s.convert_to_grant(12345).is_err());
    // A lock held twice cannot become a grant.
    let s = LockServiceV1::new();
    let t = try_lock(&s, "a", &[("x", W)]).await.unwrap();
    try_lock(&s, "a", &[("x", W)]).await.unwrap();
    assert!(matches!(
        s.convert_to_grant(t.token_id),
        Err(TimelockError::Internal(_))
    ));
    assert_eq!(s.refresh([t.token_id]).len(), 1, "token kept on failure");
}

#[tokio::test]
async fn unlock_and_freeze_and_get_tokens() {
    let s = LockServiceV1::new();
    let t1 = try_lock(&s, "a", &[("x", W)]).await.unwrap();
    let t2 = try_lock(&s, "a", &[("x", W)]).await.unwrap();
    assert_eq!(s.tokens_of("a").unwrap().len(), 2);
    assert!(s.tokens_of("").is_err());
    assert!(s.unlock_and_freeze(t1.token_id).unwrap());
    assert!(try_lock(&s, "a", &[("x", W)]).await.is_none(), "frozen");
    assert!(
        s.refresh([t2.token_id]).is_empty(),
        "frozen tokens are not refreshed"
    );
    assert!(s.tokens_of("a").unwrap().is_empty());
    s.unlock(t2.token_id);
    assert!(
        try_lock(&s, "b", &[("x", W)]).await.is_some(),
        "thawed once free"
    );
    let anon = try_lock(&s, "", &[("q", W)]).await.unwrap();
    assert!(s.unlock_and_freeze(anon.token_id).is_err());
    let reader = try_lock(&s, "r", &[("p", R)]).await.unwrap();
    assert!(s.unlock_and_freeze(reader.token_id).is_err());
}

#[tokio::test]
async fn close_fails_waiters_and_drops_everything() {
    let s = LockServiceV1::new();
    let t = try_lock(&s, "a", &[("x", W)]).await.unwrap();
    let s2 = s.clone();
    let waiter = tokio::spawn(async move {
        s2.lock(
            "b",
            &req(&[("x", W)])
                .blocking(BlockingMode::BlockIndefinitely)
                .build(),
            None,
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    s.close();
    let r = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(r, Err(TimelockError::NotCurrentLeader)));
    assert!(s.refresh([t.token_id]).is_empty());
}

#[test]
fn ids_have_127_random_bits() {
    let ids: Vec<u128> = (0..64).map(|_| random_id()).collect();
    assert!(ids.iter().all(|id| *id < (1u128 << 127)));
    assert!(ids.iter().any(|id| *id >= (1u128 << 126)), "top bit used");
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len());
}

/// `LockServiceImpl.reapLocks` frees a token only once
/// `expirationDateMs <= now - maxAllowedClockDrift`, and `refreshToken` / `convertToGrant` only
/// ask whether the token is still in `heldLocksTokenMap`: an expired token stays held, and
/// usable, for the whole allowance.
#[tokio::test]
async fn expired_tokens_stay_held_for_the_drift_allowance() {
    const DRIFT: Duration = Duration::from_millis(1_000);
    let s = LockServiceV1::with_clock_drift(DRIFT);
    let t = s
        .lock("a", &req(&[("x", W)]).timeout_ms(10).build(), None)
        .await
        .unwrap()
        .token
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(s.reap(), 0, "expired but within the allowance");
    assert!(
        try_lock(&s, "b", &[("x", W)]).await.is_none(),
        "still held against others"
    );
    assert_eq!(s.refresh([t.token_id]).len(), 1, "refreshable after expiry");
    // Let the refreshed token expire again; well before the allowance ends it is still held.
    let refreshed_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(refreshed_at.elapsed() < DRIFT, "the test slept too long");
    assert_eq!(s.reap(), 0);
    assert_eq!(s.token_count(), 1);
    // Past expiry (10 ms) + allowance without a refresh: freed.
    tokio::time::sleep(DRIFT).await;
    assert_eq!(s.reap(), 1);
    assert!(s.refresh([t.token_id]).is_empty());
    assert!(!s.unlock(t.token_id));
    assert!(try_lock(&s, "b", &[("x", W)]).await.is_some());

    // Grants get the same allowance (`reapLocks` runs on the grant queue too).
    let t = s
        .lock("c", &req(&[("y", W)]).timeout_ms(10).build(), None)
        .await
        .unwrap()
        .token
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let g = s
        .convert_to_grant(t.token_id)
        .expect("convertible after expiry");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(s.refresh_grant(g.grant_id).is_some());
    tokio::time::sleep(DRIFT + Duration::from_millis(200)).await;
    assert!(
        s.refresh_grant(g.grant_id).is_none(),
        "freed past the allowance"
    );
    assert!(try_lock(&s, "d", &[("y", W)]).await.is_some());
}

/// `LockServiceImpl.getMinLockedInVersionId(LockClient)`: the smallest version id of the
/// client's held tokens (`versionIdMap`, filled on lock, emptied on unlock, unlockAndFreeze and
/// reaping), `null` when none.
#[tokio::test]
async fn min_locked_in_version_id_follows_the_held_tokens() {
    let s = LockServiceV1::with_clock_drift(Duration::ZERO);
    let lock = |client: &'static str, d: &'static str, mode, v: i64| {
        let s = s.clone();
        async move {
            s.lock(client, &req(&[(d, mode)]).version(v).build(), None)
                .await
                .unwrap()
                .token
                .unwrap()
        }
    };
    assert_eq!(s.min_locked_in_version_id("vc"), None);
    let a = lock("vc", "ver/a", R, 50).await;
    let b = lock("vc", "ver/b", W, 30).await;
    let anon = lock("", "ver/c", W, 20).await;
    assert_eq!(s.min_locked_in_version_id("vc"), Some(30));
    assert_eq!(s.min_locked_in_version_id(""), Some(20));
    assert_eq!(s.min_locked_in_version_id("other"), None);
    assert!(s.unlock(b.token_id));
    assert_eq!(s.min_locked_in_version_id("vc"), Some(50));
    // unlockAndFreeze removes the token's version too.
    let frozen = lock("vc", "ver/d", W, 10).await;
    assert_eq!(s.min_locked_in_version_id("vc"), Some(10));
    assert!(s.unlock_and_freeze(frozen.token_id).unwrap());
    assert_eq!(s.min_locked_in_version_id("vc"), Some(50));
    // A converted token no longer counts for its client; the token made from the grant counts
    // for the client that used it.
    let g = s.convert_to_grant(a.token_id).unwrap();
    assert_eq!(s.min_locked_in_version_id("vc"), None);
    let used = s.use_grant("user", g.grant_id).unwrap();
    assert_eq!(s.min_locked_in_version_id("user"), Some(50));
    assert!(s.unlock(used.token_id));
    assert_eq!(s.min_locked_in_version_id("user"), None);
    // A freed (expired, reaped) token no longer counts.
    let short = s
        .lock(
            "vc",
            &req(&[("ver/e", W)]).version(5).timeout_ms(10).build(),
            None,
        )
        .await
        .unwrap()
        .token
        .unwrap();
    assert_eq!(s.min_locked_in_version_id("vc"), Some(5));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(s.min_locked_in_version_id("vc"), None);
    assert!(!s.unlock(short.token_id));
    assert!(s.unlock(anon.token_id));
    assert_eq!(s.min_locked_in_version_id(""), None);
}
