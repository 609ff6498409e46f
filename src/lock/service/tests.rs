//! Lock service unit tests: FIFO hand-off, all-or-nothing with timeouts, idempotency,
//! wait-for-locks, refresh/unlock subsets, reaping, and closing a term.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use uuid::Uuid;

use super::*;

fn service(server_lease_ms: u64) -> Arc<LockService> {
    LockService::new(
        LockLimits {
            server_lease: Duration::from_millis(server_lease_ms),
            client_lease: Duration::from_millis(server_lease_ms / 2),
            max_descriptors_per_request: 100,
            max_descriptor_bytes: 16,
            max_waiters: 50,
            ..LockLimits::default()
        },
        Metrics::new(),
    )
}

fn d(name: &str) -> Bytes {
    Bytes::copy_from_slice(name.as_bytes())
}

fn acquired(outcome: &LockOutcome) -> bool {
    matches!(outcome, LockOutcome::Acquired(_))
}

const LONG: Duration = Duration::from_secs(10);
const SHORT: Duration = Duration::from_millis(50);

#[tokio::test]
async fn uncontended_lock_and_unlock() {
    let s = service(20_000);
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let out = s.lock(a, vec![d("x"), d("y"), d("x")], LONG).await.unwrap();
    let LockOutcome::Acquired(lease) = out else {
        panic!()
    };
    assert_eq!(lease.leader_time.id, s.leadership_id());
    assert_eq!(s.held_descriptor_count(), 2, "deduplicated");
    assert!(
        !acquired(&s.lock(b, vec![d("y")], Duration::ZERO).await.unwrap()),
        "0 = try once"
    );
    assert_eq!(
        s.unlock(&[a, b]).unwrap(),
        vec![a],
        "only held tokens are unlocked"
    );
    assert_eq!(s.unlock(&[a]).unwrap(), Vec::<Uuid>::new());
    assert_eq!(s.held_descriptor_count(), 0);
}

#[tokio::test]
async fn fifo_hand_off_to_waiters() {
    let s = service(20_000);
    let holder = Uuid::new_v4();
    s.lock(holder, vec![d("x")], LONG).await.unwrap();
    let mut waiters = Vec::new();
    let order = Arc::new(parking_lot::Mutex::new(Vec::new()));
    for i in 0..5 {
        let s = s.clone();
        let order = order.clone();
        let id = Uuid::new_v4();
        waiters.push(tokio::spawn(async move {
            let out = s.lock(id, vec![d("x")], LONG).await.unwrap();
            assert!(acquired(&out));
            order.lock().push(i);
            tokio::time::sleep(Duration::from_millis(5)).await;
            s.unlock(&[id]).unwrap();
        }));
        tokio::time::sleep(Duration::from_millis(10)).await; // queue in a known order
    }
    s.unlock(&[holder]).unwrap();
    for w in waiters {
        w.await.unwrap();
    }
    assert_eq!(*order.lock(), vec![0, 1, 2, 3, 4]);
    assert_eq!(s.held_descriptor_count(), 0);
}

#[tokio::test]
async fn timeout_releases_partial_holds() {
    let s = service(20_000);
    let blocker = Uuid::new_v4();
    s.lock(blocker, vec![d("b")], LONG).await.unwrap();
    // Wants a (free) and b (held): takes a, waits on b, times out, must give a back.
    let req = Uuid::new_v4();
    assert_eq!(
        s.lock(req, vec![d("b"), d("a")], SHORT).await.unwrap(),
        LockOutcome::TimedOut
    );
    let other = Uuid::new_v4();
    assert!(acquired(
        &s.lock(other, vec![d("a")], Duration::ZERO).await.unwrap()
    ));
    assert_eq!(s.held_descriptor_count(), 2);
    // A retry of the timed-out request id times out again (idempotent w.r.t. timeout).
    assert_eq!(
        s.lock(req, vec![d("c")], LONG).await.unwrap(),
        LockOutcome::TimedOut
    );
}

#[tokio::test]
async fn requests_are_idempotent_during_and_after_acquisition() {
    let s = service(20_000);
    let holder = Uuid::new_v4();
    s.lock(holder, vec![d("x")], LONG).await.unwrap();
    let req = Uuid::new_v4();
    let first = tokio::spawn({
        let s = s.clone();
        async move { s.lock(req, vec![d("x")], LONG).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = tokio::spawn({
        let s = s.clone();
        async move { s.lock(req, vec![d("x")], LONG).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.unlock(&[holder]).unwrap();
    let (a, b) = (first.await.unwrap(), second.await.unwrap());
    assert!(acquired(&a));
    assert_eq!(
        a, b,
        "a retry joins the same acquisition and gets the same lease"
    );
    // After acquisition, a retry returns the same token without queueing.
    assert_eq!(s.lock(req, vec![d("x")], Duration::ZERO).await.unwrap(), a);
    assert_eq!(s.unlock(&[req]).unwrap(), vec![req]);
}

#[tokio::test]
async fn wait_for_locks_queues_but_holds_nothing() {
    let s = service(20_000);
    let holder = Uuid::new_v4();
    s.lock(holder, vec![d("x")], LONG).await.unwrap();
    let waiter = tokio::spawn({
        let s = s.clone();
        async move {
            s.wait_for_locks(Uuid::new_v4(), vec![d("x")], LONG)
                .await
                .unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    // A lock request queued behind the waiter still gets the lock after it.
    let next = Uuid::new_v4();
    let locker = tokio::spawn({
        let s = s.clone();
        async move { s.lock(next, vec![d("x")], LONG).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!waiter.is_finished());
    s.unlock(&[holder]).unwrap();
    assert!(acquired(&waiter.await.unwrap()));
    assert!(acquired(&locker.await.unwrap()));
    assert_eq!(s.held_descriptor_count(), 1);
    assert_eq!(
        s.wait_for_locks(Uuid::new_v4(), vec![d("x")], SHORT)
            .await
            .unwrap(),
        LockOutcome::TimedOut
    );
    assert!(acquired(
        &s.wait_for_locks(Uuid::new_v4(), vec![d("free")], Duration::ZERO)
            .await
            .unwrap()
    ));
}

#[tokio::test]
async fn refresh_and_reaping() {
    let s = service(200);
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    s.lock(a, vec![d("a")], LONG).await.unwrap();
    s.lock(b, vec![d("b")], LONG).await.unwrap();
    let waiter = tokio::spawn({
        let s = s.clone();
        async move { s.lock(Uuid::new_v4(), vec![d("b")], LONG).await.unwrap() }
    });
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(s.refresh(&[a]).unwrap(), vec![a]);
        s.reap();
    }
    // a was refreshed and survives; b was not and was reaped, handing it to the waiter.
    assert_eq!(s.refresh(&[a, b]).unwrap(), vec![a]);
    assert!(acquired(&waiter.await.unwrap()));
    assert_eq!(s.unlock(&[b]).unwrap(), Vec::<Uuid>::new());
}

#[tokio::test]
async fn closing_fails_waiters_and_drops_locks() {
    let s = service(20_000);
    let holder = Uuid::new_v4();
    s.lock(holder, vec![d("x")], LONG).await.unwrap();
    let waiter = tokio::spawn({
        let s = s.clone();
        async move { s.lock(Uuid::new_v4(), vec![d("x")], LONG).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.close();
    assert_eq!(waiter.await.unwrap(), Err(TimelockError::NotCurrentLeader));
    assert_eq!(s.refresh(&[holder]), Err(TimelockError::NotCurrentLeader));
    assert_eq!(s.held_descriptor_count(), 0);
}

#[tokio::test]
async fn limits_and_immutable_tracking() {
    let s = service(20_000);
    let too_many: Vec<Bytes> = (0..101).map(|i| d(&i.to_string())).collect();
    assert!(matches!(
        s.lock(Uuid::new_v4(), too_many, LONG).await,
        Err(TimelockError::InvalidArgument(_))
    ));
    let too_big = Bytes::from(vec![7u8; 17]);
    assert!(matches!(
        s.lock(Uuid::new_v4(), vec![too_big], LONG).await,
        Err(TimelockError::InvalidArgument(_))
    ));

    let (t1, t2) = (Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(s.lock_immutable_timestamp(t1, 10).unwrap().0, 10);
    assert_eq!(s.lock_immutable_timestamp(t2, 20).unwrap().0, 10);
    assert_eq!(s.immutable_timestamp(), Some(10));
    s.unlock(&[t1]).unwrap();
    assert_eq!(
        s.immutable_timestamp(),
        Some(20),
        "rises once the lower lock is released"
    );
    s.unlock(&[t2]).unwrap();
    assert_eq!(s.immutable_timestamp(), None);

    let names = vec!["leaseA".to_string()];
    let (l1, l2) = (Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(
        s.acquire_timestamp_leases(l1, &names, 5).unwrap().0,
        vec![5]
    );
    assert_eq!(
        s.acquire_timestamp_leases(l2, &names, 9).unwrap().0,
        vec![5]
    );
    s.unlock(&[l1]).unwrap();
    assert_eq!(s.min_leased_timestamp("leaseA"), Some(9));
}

#[tokio::test]
async fn waiter_cap_answers_too_many_requests() {
    let s = service(20_000);
    s.lock(Uuid::new_v4(), vec![d("x")], LONG).await.unwrap();
    let mut waiting = Vec::new();
    for _ in 0..50 {
        let s = s.clone();
        waiting.push(tokio::spawn(async move {
            s.lock(Uuid::new_v4(), vec![d("x")], Duration::from_secs(1))
                .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let refused = s
        .lock(Uuid::new_v4(), vec![d("x")], Duration::from_secs(1))
        .await;
    assert!(
        matches!(refused, Err(TimelockError::TooManyRequests(_))),
        "{refused:?}"
    );
    for w in waiting {
        assert_eq!(w.await.unwrap().unwrap(), LockOutcome::TimedOut);
    }
}

#[tokio::test]
async fn huge_timeouts_do_not_overflow() {
    let s = service(20_000);
    let holder = Uuid::new_v4();
    s.lock(holder, vec![d("x")], LONG).await.unwrap();
    let waiter = tokio::spawn({
        let s = s.clone();
        async move {
            s.lock(
                Uuid::new_v4(),
                vec![d("x")],
                Duration::from_millis(i64::MAX as u64),
            )
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.unlock(&[holder]).unwrap();
    assert!(acquired(&waiter.await.unwrap().unwrap()));
}

#[tokio::test]
async fn watch_update_without_watches_answers_as_the_log_does() {
    use crate::lock::watch::{IdentifiedVersion, LockWatchReference};
    let s = service(20_000);
    let id = s.leadership_id();
    // Locks held and released without watches log nothing.
    s.lock(Uuid::new_v4(), vec![d("t.a")], LONG).await.unwrap();
    let token = Uuid::new_v4();
    s.lock(token, vec![d("t.b")], LONG).await.unwrap();
    s.unlock(&[token]).unwrap();
    let versions = [
        None,
        Some(IdentifiedVersion { id, version: -1 }),
        Some(IdentifiedVersion { id, version: 0 }),
        Some(IdentifiedVersion { id, version: -2 }),
        Some(IdentifiedVersion {
            id: Uuid::new_v4(),
            version: -1,
        }),
    ];
    for v in &versions {
        let slow = {
            let st = s.state.lock();
            st.watches.update(v.as_ref(), st.locks.keys())
        };
        assert_eq!(s.watch_update(v.as_ref()), slow, "for {v:?}");
    }
    // The first watch turns the fast path off for good: the `created` event is seen.
    s.start_watching(vec![LockWatchReference::FullTable {
        qualified_table_ref: "t.a".into(),
    }])
    .unwrap();
    let update = s.watch_update(Some(&IdentifiedVersion { id, version: -1 }));
    assert_eq!(update.last_known_version(), 0);
    assert!(matches!(
        update,
        crate::lock::watch::LockWatchStateUpdate::Success { ref events, .. } if events.len() == 1
    ));
}

#[tokio::test]
async fn a_large_unlock_releases_exactly_the_held_tokens_in_order() {
    let s = service(20_000);
    // 70 immutable-timestamp tokens (more than one hold of the mutex's worth), a lock token,
    // and ids nobody holds, interleaved; one of the held ids twice.
    let held: Vec<Uuid> = (0..70).map(|_| Uuid::new_v4()).collect();
    for (i, id) in held.iter().enumerate() {
        s.lock_immutable_timestamp(*id, 100 + i as i64).unwrap();
    }
    let lock = Uuid::new_v4();
    assert!(acquired(&s.lock(lock, vec![d("x")], LONG).await.unwrap()));
    let mut asked = Vec::new();
    let mut expected = Vec::new();
    for (i, id) in held.iter().enumerate() {
        asked.push(*id);
        expected.push(*id);
        if i % 9 == 0 {
            asked.push(Uuid::new_v4());
        }
    }
    asked.insert(33, lock);
    expected.insert(expected.iter().position(|t| *t == asked[34]).unwrap(), lock);
    asked.push(held[5]);
    assert_eq!(s.unlock(&asked).unwrap(), expected);
    assert_eq!(
        s.immutable_timestamp(),
        None,
        "every immutable lock released"
    );
    let other = Uuid::new_v4();
    assert!(
        acquired(&s.lock(other, vec![d("x")], Duration::ZERO).await.unwrap()),
        "the lock was released"
    );
}
