//! Criterion benches of the timestamp allocator's hot path, without HTTP.
//!
//! * `reference/atomic_fetch_add` — one `AtomicI64::fetch_add`, the floor any allocator pays;
//!   `reference/atomic_fetch_add,threads=2` — the same counter hammered from two threads (the
//!   floor of a shared counter under contention, to compare with `threads=2` below).
//! * `fresh_timestamp/store=memory` — `TimestampService::fresh_timestamp` with a reservation so
//!   large that no bound write happens inside the measurement (pure CAS + metrics path).
//! * `fresh_timestamps/store=memory,n=N` — batch requests (cost per call, not per timestamp).
//! * `fresh_timestamp/store=memory,threads=2` — two threads hammering one namespace (CAS
//!   contention); reported time is wall time per call per thread.
//! * `fresh_timestamp/store=rocksdb,reservation=1000` — a real RocksDB on a real disk with a
//!   small reservation, so roughly one synced bound write per 1000 timestamps is amortised into
//!   the per-call figure.
//!
//! The allocator is async but its hot path never suspends, so each sample is one
//! `rt.block_on` around a loop of `iters` calls (`iter_custom`) on a current-thread runtime:
//! the runtime's enter/exit cost is paid once per sample, not per call. A call that does have
//! to wait (an exhausted reservation waiting for its synced write) suspends normally.
//!
//! Run: `cargo bench -p timelock-bench --bench allocator`
//! (append `-- <filter>` to run a subset, e.g. `-- store=memory`).

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use timelock::metrics::Metrics;
use timelock::storage::memory::MemoryStore;
use timelock::storage::rocks::RocksStore;
use timelock::storage::{BoundStore, NamespaceRecord};
use timelock::timestamp::{AllocatorLimits, TimestampService};
use tokio::runtime::Runtime;

/// Large enough that criterion's sampling (billions of calls at most) never exhausts it.
const HUGE_RESERVATION: i64 = 1 << 50;

fn current_thread_runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn service(store: Arc<dyn BoundStore>, reservation: i64) -> Arc<TimestampService> {
    let limits = AllocatorLimits {
        reservation,
        low_water_mark: reservation / 2,
        max_per_request: 10_000,
    };
    Arc::new(TimestampService::new(
        Arc::from("bench"),
        NamespaceRecord::default(),
        limits,
        store,
        Metrics::new(),
    ))
}

/// Where on-disk benches put their data: `$TIMELOCK_BENCH_DIR`, else cargo's per-target scratch
/// directory for benches (`<target>/tmp`, on the same disk as the build).
fn scratch_dir() -> PathBuf {
    let dir = std::env::var_os("TIMELOCK_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&dir).expect("create bench scratch dir");
    warn_if_tmpfs(&dir);
    dir
}

#[cfg(target_os = "linux")]
fn warn_if_tmpfs(dir: &std::path::Path) {
    use std::os::unix::ffi::OsStrExt;
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    let c_path = std::ffi::CString::new(dir.as_os_str().as_bytes()).expect("path without NUL");
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid NUL-terminated path and a properly sized out-parameter.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut stat) } == 0 && stat.f_type as i64 == TMPFS_MAGIC
    {
        eprintln!(
            "WARNING: {} is on tmpfs: synced RocksDB writes will look unrealistically cheap \
             (set TIMELOCK_BENCH_DIR to a directory on a real disk)",
            dir.display()
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn warn_if_tmpfs(_dir: &std::path::Path) {}

/// Times `iters` sequential calls of `fresh_timestamps(n)` inside one `block_on`.
fn run_calls(rt: &Runtime, svc: &Arc<TimestampService>, n: i64, iters: u64) -> Duration {
    rt.block_on(async {
        let started = Instant::now();
        if n == 1 {
            for _ in 0..iters {
                black_box(svc.fresh_timestamp().await.expect("fresh timestamp"));
            }
        } else {
            for _ in 0..iters {
                black_box(svc.fresh_timestamps(n).await.expect("fresh timestamps"));
            }
        }
        started.elapsed()
    })
}

fn reference(c: &mut Criterion) {
    let mut group = c.benchmark_group("reference");
    group.throughput(Throughput::Elements(1));
    let counter = AtomicI64::new(0);
    group.bench_function("atomic_fetch_add", |b| {
        b.iter(|| black_box(counter.fetch_add(1, Ordering::AcqRel)))
    });
    // The floor for a counter shared by two cores: every increment moves the cache line.
    let shared = Arc::new(AtomicI64::new(0));
    group.bench_function("atomic_fetch_add,threads=2", |b| {
        b.iter_custom(|iters| {
            on_threads(2, |_| {
                let shared = shared.clone();
                move || {
                    let started = Instant::now();
                    for _ in 0..iters {
                        black_box(shared.fetch_add(1, Ordering::AcqRel));
                    }
                    started.elapsed()
                }
            })
        })
    });
    group.finish();
}

fn memory_store(c: &mut Criterion) {
    let rt = current_thread_runtime();
    let store: Arc<dyn BoundStore> = Arc::new(MemoryStore::new());
    let svc = service(store, HUGE_RESERVATION);
    // First call persists the (huge) reservation; nothing below touches the store again.
    rt.block_on(svc.fresh_timestamp()).expect("first timestamp");

    let mut group = c.benchmark_group("fresh_timestamp");
    group.throughput(Throughput::Elements(1));
    group.bench_function("store=memory", |b| {
        b.iter_custom(|iters| run_calls(&rt, &svc, 1, iters))
    });
    group.bench_function("store=memory,threads=2", |b| {
        b.iter_custom(|iters| contended(&svc, 2, iters))
    });
    group.finish();

    let mut group = c.benchmark_group("fresh_timestamps");
    for n in [1i64, 100, 10_000] {
        // Throughput in calls: the figure of interest is cost per request, whatever its size.
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("store=memory,n={n}")),
            &n,
            |b, &n| b.iter_custom(|iters| run_calls(&rt, &svc, n, iters)),
        );
    }
    group.finish();
}

/// Runs the closures made by `make(i)` on `threads` threads started together; returns the slowest
/// thread's own measurement, i.e. wall time for `iters` operations per thread under contention.
fn on_threads<F, W>(threads: usize, make: F) -> Duration
where
    F: Fn(usize) -> W,
    W: FnOnce() -> Duration + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let work = make(i);
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                work()
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("bench thread"))
        .max()
        .unwrap_or_default()
}

/// `threads` threads each make `iters` calls on one service at the same time.
fn contended(svc: &Arc<TimestampService>, threads: usize, iters: u64) -> Duration {
    on_threads(threads, |_| {
        let svc = svc.clone();
        // Each thread drives its own current-thread runtime, built before the barrier.
        let rt = current_thread_runtime();
        move || run_calls(&rt, &svc, 1, iters)
    })
}

fn rocksdb_store(c: &mut Criterion) {
    const RESERVATION: i64 = 1000;
    let dir = tempfile::tempdir_in(scratch_dir()).expect("temp dir");
    let rt = current_thread_runtime();
    // As the server opens it: with the default free-space margin checked before every write.
    let min_free_bytes = timelock::config::Settings::default().storage.min_free_bytes;
    let rocks = RocksStore::open(dir.path(), min_free_bytes, None).expect("open RocksDB");
    let svc = service(Arc::new(rocks), RESERVATION);
    rt.block_on(svc.fresh_timestamp()).expect("first timestamp");

    let mut group = c.benchmark_group("fresh_timestamp");
    group.throughput(Throughput::Elements(1));
    // Each ~1000 calls wait for one fsync, so samples are noisy; give criterion more time.
    group.measurement_time(Duration::from_secs(8));
    group.bench_function(format!("store=rocksdb,reservation={RESERVATION}"), |b| {
        b.iter_custom(|iters| run_calls(&rt, &svc, 1, iters))
    });
    group.finish();
    drop(svc);
    drop(rt);
}

criterion_group!(benches, reference, memory_store, rocksdb_store);
criterion_main!(benches);
