//! Allocator tests against the in-memory and fault-injecting stores, including a property test
//! over random sequences of fresh / batch / fast-forward / invalidate / revalidate / restart.

use std::collections::HashSet;
use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::storage::faults::FaultInjectingStore;
use crate::storage::memory::MemoryStore;

const NS: &str = "ns";

fn limits(reservation: i64, low_water_mark: i64, max_per_request: i64) -> AllocatorLimits {
    AllocatorLimits {
        reservation,
        low_water_mark,
        max_per_request,
    }
}

fn service(store: &Arc<MemoryStore>, limits: AllocatorLimits) -> Arc<TimestampService> {
    let record = store.get(NS).unwrap_or_default();
    Arc::new(TimestampService::new(
        Arc::from(NS),
        record,
        limits,
        store.clone(),
        Metrics::new(),
    ))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Issued values never exceed what the store holds durably.
fn assert_within_durable(store: &MemoryStore, svc: &TimestampService) {
    let stored = store.get(NS).map(|r| r.bound).unwrap_or(0);
    assert!(
        svc.last_issued() <= stored,
        "issued {} above stored bound {stored}",
        svc.last_issued()
    );
    assert!(svc.durable_bound() <= stored);
}

#[test]
fn new_namespace_starts_at_one_and_batches_are_contiguous() {
    rt().block_on(async {
        let store = Arc::new(MemoryStore::new());
        let svc = service(&store, limits(100, 50, 10));
        assert_eq!(svc.fresh_timestamp().await.unwrap(), 1);
        assert_eq!(
            svc.fresh_timestamps(5).await.unwrap(),
            TimestampRange { lower: 2, upper: 6 }
        );
        // Clamped to max_per_request.
        assert_eq!(
            svc.fresh_timestamps(1_000).await.unwrap(),
            TimestampRange {
                lower: 7,
                upper: 16
            }
        );
        assert!(matches!(
            svc.fresh_timestamps(0).await,
            Err(TimelockError::InvalidArgument(_))
        ));
        assert!(matches!(
            svc.fresh_timestamps(-1).await,
            Err(TimelockError::InvalidArgument(_))
        ));
        assert_within_durable(&store, &svc);
    });
}

#[test]
fn restart_resumes_above_everything_issued() {
    rt().block_on(async {
        let store = Arc::new(MemoryStore::new());
        let mut highest = 0;
        for _ in 0..20 {
            let svc = service(&store, limits(7, 3, 5));
            let first = svc.fresh_timestamp().await.unwrap();
            assert!(
                first > highest,
                "first {first} after restart not above {highest}"
            );
            for _ in 0..4 {
                highest = svc.fresh_timestamps(3).await.unwrap().upper;
            }
            assert_within_durable(&store, &svc);
        }
    });
}

#[test]
fn fast_forward_is_max_semantics_durable_and_validated() {
    rt().block_on(async {
        let store = Arc::new(MemoryStore::new());
        let l = limits(1000, 500, 100);
        let svc = service(&store, l);
        svc.fast_forward(5_000).await.unwrap();
        assert_eq!(svc.fresh_timestamp().await.unwrap(), 5_001);
        svc.fast_forward(10).await.unwrap(); // the past: no-op
        svc.fast_forward(i64::MIN + 1).await.unwrap(); // AtlasDB's start-up no-op
        assert_eq!(svc.fresh_timestamp().await.unwrap(), 5_002);
        assert!(svc.fast_forward(i64::MIN).await.is_err());
        assert!(svc.fast_forward(i64::MAX).await.is_err());
        assert!(svc.fast_forward(max_fast_forward(&l) + 1).await.is_err());
        // Nothing broken by the refused values.
        assert_eq!(svc.fresh_timestamp().await.unwrap(), 5_003);
        // The fast-forward survives a restart even though no timestamp near it was issued.
        svc.fast_forward(1_000_000).await.unwrap();
        drop(svc);
        let svc = service(&store, l);
        assert!(svc.fresh_timestamp().await.unwrap() > 1_000_000);
    });
}

#[test]
fn top_of_the_range_errors_cleanly_without_wrapping() {
    rt().block_on(async {
        let store = Arc::new(MemoryStore::new());
        let l = limits(10, 0, 4);
        let svc = service(&store, l);
        svc.fast_forward(max_fast_forward(&l)).await.unwrap();
        let mut last = max_fast_forward(&l);
        loop {
            match svc.fresh_timestamps(4).await {
                Ok(range) => {
                    assert!(range.lower > last && range.upper >= range.lower);
                    last = range.upper;
                }
                Err(TimelockError::TimestampsExhausted { .. }) => break,
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert!(last > i64::MAX - 4, "stopped early at {last}");
        assert_within_durable(&store, &svc);
    });
}

#[test]
fn invalidate_returns_durable_bound_and_persists_across_restart() {
    rt().block_on(async {
        let store = Arc::new(MemoryStore::new());
        let l = limits(100, 50, 10);
        let svc = service(&store, l);
        let issued = svc.fresh_timestamps(10).await.unwrap().upper;
        let bound = svc.invalidate().await.unwrap();
        assert!(bound >= issued);
        assert_eq!(svc.invalidate().await.unwrap(), bound, "idempotent");
        assert!(matches!(
            svc.fresh_timestamp().await,
            Err(TimelockError::NamespaceInvalidated { .. })
        ));
        assert!(matches!(
            svc.fast_forward(10_000).await,
            Err(TimelockError::NamespaceInvalidated { .. })
        ));
        drop(svc);
        let svc = service(&store, l);
        assert!(svc.is_invalidated());
        assert!(svc.fresh_timestamp().await.is_err());
        svc.revalidate(50_000).await.unwrap();
        assert_eq!(svc.fresh_timestamp().await.unwrap(), 50_001);
        drop(svc);
        let svc = service(&store, l);
        assert!(!svc.is_invalidated());
        assert!(svc.fresh_timestamp().await.unwrap() > 50_001);
    });
}

#[test]
fn failed_bound_write_fail_stops_for_good() {
    rt().block_on(async {
        let memory = Arc::new(MemoryStore::new());
        let faulty: Arc<dyn BoundStore> = Arc::new(FaultInjectingStore::new(memory.clone(), 2));
        let l = limits(10, 0, 5);
        let svc = Arc::new(TimestampService::new(
            Arc::from(NS),
            NamespaceRecord::default(),
            l,
            faulty,
            Metrics::new(),
        ));
        let mut last = 0;
        let err = loop {
            match svc.fresh_timestamps(5).await {
                Ok(range) => last = range.upper,
                Err(e) => break e,
            }
        };
        assert!(matches!(err, TimelockError::FailStopped { .. }), "{err:?}");
        assert!(svc.is_fail_stopped());
        let durable = memory.get(NS).unwrap().bound;
        assert!(last <= durable, "issued {last} above durable {durable}");
        assert_eq!(svc.last_issued(), last);
        // Never again, not even below the durable bound, and not via fast-forward.
        assert!(svc.fresh_timestamp().await.is_err());
        assert!(svc.fast_forward(last + 1).await.is_err());
        assert!(svc.invalidate().await.is_err());
    });
}

#[test]
fn concurrent_tasks_never_share_a_timestamp() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = Arc::new(MemoryStore::new());
        let svc = service(&store, limits(50, 20, 7));
        let mut tasks = Vec::new();
        for t in 0..16 {
            let svc = svc.clone();
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                let mut previous = 0;
                for i in 0..500 {
                    if t == 0 && i % 50 == 0 {
                        svc.fast_forward(svc.last_issued() + 100).await.unwrap();
                    }
                    let range = svc.fresh_timestamps(1 + (i % 3)).await.unwrap();
                    assert!(range.lower > previous);
                    previous = range.upper;
                    got.extend(range.lower..=range.upper);
                }
                got
            }));
        }
        let mut seen = HashSet::new();
        for task in tasks {
            for ts in task.await.unwrap() {
                assert!(seen.insert(ts), "timestamp {ts} issued twice");
            }
        }
        assert_within_durable(&store, &svc);
    });
}

#[derive(Debug, Clone)]
enum Op {
    Fresh,
    Batch(i64),
    FastForward(i64),
    Invalidate,
    Revalidate(i64),
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Fresh),
        4 => (-3i64..40).prop_map(Op::Batch),
        2 => prop_oneof![(-100i64..2_000), Just(i64::MIN), Just(i64::MIN + 1), Just(i64::MAX)]
            .prop_map(Op::FastForward),
        1 => Just(Op::Invalidate),
        1 => (-100i64..2_000).prop_map(Op::Revalidate),
        1 => Just(Op::Restart),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the sequence: every value handed out is above every value handed out or
    /// fast-forwarded to before it (including across restarts), nothing is issued above the
    /// stored bound, invalidated namespaces issue nothing, and refused input changes nothing.
    #[test]
    fn allocator_model(ops in proptest::collection::vec(op(), 1..60),
                       reservation in 10i64..60, max_per_request in 1i64..10) {
        let l = limits(reservation, reservation / 2, max_per_request);
        rt().block_on(async {
            let store = Arc::new(MemoryStore::new());
            let mut svc = service(&store, l);
            let mut floor = 0i64; // every later timestamp must exceed this
            let mut invalidated = false;
            for op in ops {
                match op {
                    Op::Fresh | Op::Batch(_) => {
                        let n = if let Op::Batch(n) = op { n } else { 1 };
                        let result = svc.fresh_timestamps(n).await;
                        match (n <= 0, invalidated, result) {
                            (true, _, r) => {
                                let refused = matches!(r, Err(TimelockError::InvalidArgument(_)));
                                prop_assert!(refused);
                            }
                            (false, true, r) => {
                                let refused = matches!(r, Err(TimelockError::NamespaceInvalidated { .. }));
                                prop_assert!(refused);
                            }
                            (false, false, r) => {
                                let range = r.unwrap();
                                prop_assert!(range.lower > floor, "{} not above {}", range.lower, floor);
                                prop_assert_eq!(range.count(), n.min(max_per_request));
                                floor = range.upper;
                            }
                        }
                    }
                    Op::FastForward(t) => {
                        let result = svc.fast_forward(t).await;
                        if t == i64::MIN || t > max_fast_forward(&l) {
                            let refused = matches!(result, Err(TimelockError::InvalidArgument(_)));
                            prop_assert!(refused);
                        } else if invalidated {
                            prop_assert!(result.is_err());
                        } else {
                            result.unwrap();
                            floor = floor.max(t);
                        }
                    }
                    Op::Invalidate => {
                        let bound = svc.invalidate().await.unwrap();
                        prop_assert!(bound >= floor);
                        invalidated = true;
                    }
                    Op::Revalidate(t) => {
                        svc.revalidate(t).await.unwrap();
                        floor = floor.max(t);
                        invalidated = false;
                    }
                    Op::Restart => svc = service(&store, l),
                }
                assert_within_durable(&store, &svc);
                prop_assert_eq!(svc.is_invalidated(), invalidated);
            }
            Ok(())
        })?;
    }
}

#[test]
fn restored_namespace_is_fenced_until_fast_forwarded() {
    rt().block_on(async {
        let store = Arc::new(MemoryStore::new());
        let l = limits(100, 50, 10);
        store
            .put(
                NS,
                NamespaceRecord {
                    bound: 1_000,
                    invalidated: false,
                    fenced: true,
                },
            )
            .await
            .unwrap();
        let svc = service(&store, l);
        assert!(svc.is_fenced());
        assert!(matches!(
            svc.fresh_timestamp().await,
            Err(TimelockError::NamespaceFenced { .. })
        ));
        // Fast-forward to the last timestamp the world saw lifts the fence, durably.
        svc.fast_forward(5_000).await.unwrap();
        assert_eq!(svc.fresh_timestamp().await.unwrap(), 5_001);
        drop(svc);
        let svc = service(&store, l);
        assert!(!svc.is_fenced());
        assert!(svc.fresh_timestamp().await.unwrap() > 5_001);

        // Invalidating a fenced namespace leaves it invalidated; only revalidate lifts that.
        store
            .put(
                NS,
                NamespaceRecord {
                    bound: 9_000,
                    invalidated: false,
                    fenced: true,
                },
            )
            .await
            .unwrap();
        let svc = service(&store, l);
        assert_eq!(svc.invalidate().await.unwrap(), 9_000);
        assert!(matches!(
            svc.fast_forward(10_000).await,
            Err(TimelockError::NamespaceInvalidated { .. })
        ));
        svc.revalidate(10_000).await.unwrap();
        assert_eq!(svc.fresh_timestamp().await.unwrap(), 10_001);
    });
}

/// A store that counts bound writes.
struct CountingStore {
    inner: Arc<MemoryStore>,
    puts: std::sync::atomic::AtomicU64,
}

#[async_trait::async_trait]
impl BoundStore for CountingStore {
    async fn load_all(
        &self,
    ) -> std::result::Result<Vec<(String, NamespaceRecord)>, crate::storage::StoreError> {
        self.inner.load_all().await
    }

    async fn put(
        &self,
        namespace: &str,
        record: NamespaceRecord,
    ) -> std::result::Result<(), crate::storage::StoreError> {
        self.puts.fetch_add(1, Ordering::Relaxed);
        self.inner.put(namespace, record).await
    }

    fn describe(&self) -> String {
        "counting".into()
    }
}

#[test]
fn reservation_grows_with_the_issue_rate_and_jumps_do_not_count() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let memory = Arc::new(MemoryStore::new());
        let store = Arc::new(CountingStore {
            inner: memory.clone(),
            puts: Default::default(),
        });
        let l = limits(MIN_ADAPTIVE_RESERVATION, MIN_ADAPTIVE_RESERVATION / 2, 100);
        let svc = Arc::new(TimestampService::new(
            Arc::from(NS),
            NamespaceRecord::default(),
            l,
            store.clone(),
            Metrics::new(),
        ));
        // Full-speed batches: the window grows far beyond the configured reservation...
        let started = std::time::Instant::now();
        let mut previous = 0;
        while started.elapsed() < std::time::Duration::from_millis(400) {
            for _ in 0..100 {
                let range = svc.fresh_timestamps(100).await.unwrap();
                assert!(range.lower > previous);
                previous = range.upper;
            }
            tokio::task::yield_now().await;
            assert_within_durable(&memory, &svc);
        }
        let window = svc.reservation_window();
        assert!(window > 20 * l.reservation, "window {window} did not grow");
        // ... so that bound writes become rare: 50,000 more timestamps, at most a few writes.
        let before = store.puts.load(Ordering::Relaxed);
        for _ in 0..500 {
            svc.fresh_timestamps(100).await.unwrap();
        }
        let writes = store.puts.load(Ordering::Relaxed) - before;
        assert!(writes <= 2, "{writes} bound writes for 1,000 batches");
        assert_within_durable(&memory, &svc);

        // A fast-forward is a jump, not a rate: the window does not explode.
        let svc = Arc::new(TimestampService::new(
            Arc::from("other"),
            NamespaceRecord::default(),
            l,
            store.clone(),
            Metrics::new(),
        ));
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        svc.fast_forward(1_000_000_000_000).await.unwrap();
        for _ in 0..30 {
            svc.fresh_timestamps(100).await.unwrap();
        }
        assert!(
            svc.reservation_window() < 1_000_000,
            "window {} after a fast-forward",
            svc.reservation_window()
        );
        assert!(svc.durable_bound() < 1_000_000_000_000 + 10_000_000);
    });
}
