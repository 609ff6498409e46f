//! Criterion benches of the v2 lock table, without HTTP:
//! * `lock_unlock/descriptors=N`: an uncontended lock + unlock of N descriptors (the fast path:
//!   one mutex section each, no task, no channel);
//! * `hand_off/waiters=1`: a contended hand-off — a holder unlocks while a waiter is queued, and
//!   the waiter is woken with the lock (slow path: queue, oneshot, task wake-up).
//!
//! Run: `cargo bench -p timelock-bench --bench lock_table`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use timelock::lock::{LockLimits, LockOutcome, LockService};
use timelock::metrics::Metrics;
use uuid::Uuid;

fn descriptors(n: usize) -> Vec<Bytes> {
    (0..n)
        .map(|i| Bytes::from(format!("ns.table\0row-{i:06}")))
        .collect()
}

fn uncontended(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("lock_unlock");
    for n in [1usize, 10, 100] {
        let service = LockService::new(LockLimits::default(), Metrics::new());
        let ds = descriptors(n);
        group.bench_with_input(BenchmarkId::new("descriptors", n), &n, |b, _| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        let id = Uuid::new_v4();
                        let out = service.lock(id, ds.clone(), Duration::ZERO).await.unwrap();
                        assert!(matches!(out, LockOutcome::Acquired(_)));
                        service.unlock(&[id]).unwrap();
                    }
                    started.elapsed()
                })
            })
        });
    }
    group.finish();
}

fn hand_off(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("hand_off");
    group.bench_function("waiters=1", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let service: Arc<LockService> =
                    LockService::new(LockLimits::default(), Metrics::new());
                let lock = vec![Bytes::from_static(b"ns.table\0hot")];
                let mut holder = Uuid::new_v4();
                service
                    .lock(holder, lock.clone(), Duration::ZERO)
                    .await
                    .unwrap();
                let started = Instant::now();
                for _ in 0..iters {
                    // Queue a waiter behind the holder, then release: the waiter is handed the lock.
                    let next = Uuid::new_v4();
                    let waiter = {
                        let service = service.clone();
                        let lock = lock.clone();
                        tokio::spawn(async move {
                            service.lock(next, lock, Duration::from_secs(10)).await
                        })
                    };
                    while service.waiting_count() == 0 {
                        tokio::task::yield_now().await;
                    }
                    service.unlock(&[holder]).unwrap();
                    let out = waiter.await.unwrap().unwrap();
                    assert!(matches!(out, LockOutcome::Acquired(_)));
                    holder = next;
                }
                started.elapsed()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, uncontended, hand_off);
criterion_main!(benches);
