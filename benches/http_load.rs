//! HTTP load harness: throughput of the real timelock `fresh-timestamp` endpoint relative to a
//! constant-response axum handler, measured in one process and one run.
//!
//! By default four targets run side by side, each on its own multi-thread tokio runtime:
//! * `constant` — a bare axum `Router` with one POST route (same path template as timelock's)
//!   answering the JSON number `1`, served with `axum::serve` and TCP_NODELAY: the floor of what
//!   axum + hyper + the loopback TCP stack cost per request;
//! * `timelock` — `timelock::server::Server::bind` with default settings (everything
//!   `http::app` adds: prefix copy, request-metrics middleware, body limit, namespace registry,
//!   allocator), its RocksDB data dir in a temporary directory on a real disk;
//! * `timelock-st` — the same server asked `POST /tl/st` (start one transaction; the immutable-
//!   timestamp locks are released 64 at a time, as committing clients would);
//! * `timelock-lock` — the same server asked `POST /tl/l` then `POST /tl/ul2` (uncontended);
//! * `timelock-batch` — the same server asked `POST /{ns}/timestamp/fresh-timestamps?number=10000`
//!   (the batch path at full speed: the bound store must stay off the request path).
//!
//! `LOAD_TARGETS=all` adds variants in between (see [`TARGETS`]) that each add one part of the
//! real server, to attribute the difference.
//!
//! The load generator runs on a third runtime in the same process: `LOAD_CONNECTIONS` HTTP/1.1
//! keep-alive connections (hyper 1's client `conn::http1`, one request in flight per
//! connection) POSTing as fast as they get answers. Targets are measured in interleaved rounds
//! (constant, timelock | timelock, constant | ...) after a warm-up, so drift (thermal, noisy
//! neighbours, page cache) hits both alike. Every timestamp reply is validated: status 200, a
//! JSON integer, strictly increasing per connection, and unique across the whole run; every
//! constant reply must be `1`.
//!
//! The result table has per-target median requests/s, p50/p99 latency, and the ratio
//! timelock/constant as the median of the per-round ratios.
//!
//! Run: `CARGO_TARGET_DIR=/work/target-bench cargo bench --bench http_load`
//! Quick check (exits non-zero only on wrong answers or transport errors, never on speed):
//! `LOAD_SECS=0.5 LOAD_ROUNDS=1 cargo bench --bench http_load`, or `... -- --smoke`, or
//! `LOAD_SMOKE=1`; the quick mode is also what runs when the binary is started without `--bench`
//! (`cargo test --benches`).
//!
//! Environment (defaults in brackets): `LOAD_SECS` seconds per round and target [1],
//! `LOAD_ROUNDS` [10], `LOAD_WARMUP_SECS` per target [1], `LOAD_CONNECTIONS` [32],
//! `LOAD_SERVER_THREADS` workers per server runtime [2], `LOAD_CLIENT_THREADS` [2],
//! `LOAD_ROUTER_CALLS` calls per thread and round in the in-process phase [50000; 0 skips it],
//! `LOAD_ROUTER_ROUNDS` rounds of the in-process phase [6],
//! `LOAD_TARGETS` comma-separated subset of the targets below, or `all`
//! [`constant,timelock,timelock-st,timelock-lock,timelock-batch`],
//! `TIMELOCK_BENCH_DIR` where the RocksDB temp dir goes [cargo's `<target>/tmp`].
//!
//! Before the HTTP phase, an in-process phase calls each target's router directly
//! (`tower::ServiceExt::oneshot`, no sockets, no hyper) on `LOAD_SERVER_THREADS` threads at once
//! and reports CPU ns per request: a noise-free attribution of what the handler, extractors and
//! layers cost. The HTTP phase also reports server and client CPU per request (from
//! `/proc/self/task/*/schedstat`), which other load on the machine disturbs far less than
//! requests/s, and how many CPUs other processes used meanwhile.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderValue, Method, Request, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::serve::ListenerExt;
use axum::Router;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

use timelock::config::Settings;
use timelock::http::AppState;
use timelock::server::Server;
use timelock::storage::memory::MemoryStore;
use timelock::storage::BoundStore;

const PATH_TEMPLATE: &str = "/{ns}/timestamp/fresh-timestamp";

// ---------------------------------------------------------------------------------------------
// Options

#[derive(Debug, Clone)]
struct Options {
    secs: f64,
    rounds: usize,
    warmup_secs: f64,
    connections: usize,
    server_threads: usize,
    client_threads: usize,
    router_calls: u64,
    router_rounds: usize,
    targets: Vec<Target>,
    bench_dir: PathBuf,
}

fn env_parse<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| {
            eprintln!("http_load: cannot parse {name}={text:?}");
            std::process::exit(2)
        }),
        Err(_) => default,
    }
}

impl Options {
    fn from_env() -> Self {
        let args: Vec<String> = std::env::args().skip(1).collect();
        // `cargo bench` passes `--bench`; `cargo test --benches` does not: run the smoke variant.
        let smoke = args.iter().any(|a| a == "--smoke")
            || !args.iter().any(|a| a == "--bench")
            || std::env::var_os("LOAD_SMOKE").is_some_and(|v| v != "0");
        let (secs, rounds, warmup, router_calls, router_rounds) = if smoke {
            (0.5, 1, 0.2, 2_000, 1)
        } else {
            (1.0, 10, 1.0, 50_000, 6)
        };
        let spec = std::env::var("LOAD_TARGETS").unwrap_or_else(|_| {
            "constant,timelock,timelock-st,timelock-lock,timelock-batch".into()
        });
        let mut targets: Vec<Target> = if spec.trim() == "all" {
            (0..TARGETS.len()).collect()
        } else {
            spec.split(',')
                .map(|t| {
                    target_index(t.trim()).unwrap_or_else(|| {
                        let known: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
                        eprintln!(
                            "http_load: unknown target {t:?} in LOAD_TARGETS (known: all, {})",
                            known.join(", ")
                        );
                        std::process::exit(2)
                    })
                })
                .collect()
        };
        targets.sort_unstable();
        targets.dedup();
        let opts = Self {
            secs: env_parse("LOAD_SECS", secs),
            rounds: env_parse("LOAD_ROUNDS", rounds),
            warmup_secs: env_parse("LOAD_WARMUP_SECS", warmup),
            connections: env_parse("LOAD_CONNECTIONS", 32),
            server_threads: env_parse("LOAD_SERVER_THREADS", 2),
            client_threads: env_parse("LOAD_CLIENT_THREADS", 2),
            router_calls: env_parse("LOAD_ROUTER_CALLS", router_calls),
            router_rounds: env_parse("LOAD_ROUTER_ROUNDS", router_rounds),
            targets,
            bench_dir: std::env::var_os("TIMELOCK_BENCH_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR"))),
        };
        if opts.secs <= 0.0 || opts.connections == 0 {
            eprintln!("http_load: LOAD_SECS and LOAD_CONNECTIONS must be positive");
            std::process::exit(2);
        }
        opts
    }
}

// ---------------------------------------------------------------------------------------------
// Servers

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Fixed body `1`, no state.
    Constant,
    /// Fixed body `1`, but the handler extracts `State<AppState>` like timelock's handlers do.
    ConstantState,
    /// `timelock::http::timestamp::routes()` alone: handler, namespace lookup, allocator.
    Routes,
    /// `Routes` behind the request-metrics layer `http::ops::TrackingLayer`, layered as
    /// `http::app` layers it.
    RoutesMetrics,
    /// `timelock::http::app` itself over a MemoryStore (`prefix`: with the path-prefix copy of
    /// every route, as by default).
    App { prefix: bool },
    /// The real thing: `timelock::server::Server::bind` with default settings and RocksDB.
    Timelock,
}

impl Kind {
    fn returns_timestamps(self) -> bool {
        !matches!(self, Kind::Constant | Kind::ConstantState)
    }
}

struct TargetSpec {
    name: &'static str,
    kind: Kind,
    workload: Workload,
    about: &'static str,
}

/// What the load generator asks a target, and how it checks the answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    /// `POST /bench/timestamp/fresh-timestamp` (the constant handler answers `1`).
    Fresh,
    /// `POST /tl/st/bench` for one transaction with a new request id; every 64 starts, one
    /// `POST /tl/ul2/bench` releases their immutable-timestamp locks (as committing clients do),
    /// so held locks stay bounded. Only the starts are counted.
    StartTransactions,
    /// `POST /tl/l/bench` (an uncontended lock, one descriptor per connection, timeout 0), then
    /// `POST /tl/ul2/bench` for it: two requests, both counted.
    LockUnlock,
    /// `POST /bench/timestamp/fresh-timestamps?number=10000`: `{"lowerBound","upperBound"}`,
    /// 10,000 timestamps each.
    Batch,
}

const BATCH_URI: &str = "/bench/timestamp/fresh-timestamps?number=10000";

/// Every target, from least to most of timelock; `LOAD_TARGETS` picks a subset (default
/// `constant,timelock`; `all` for all). The variants in between attribute the difference: each
/// adds one part of the real server to the one before it.
const TARGETS: &[TargetSpec] = &[
    TargetSpec {
        name: "constant",
        kind: Kind::Constant,
        workload: Workload::Fresh,
        about: "bare Router, one POST route, fixed JSON body `1`",
    },
    TargetSpec {
        name: "constant-state",
        kind: Kind::ConstantState,
        workload: Workload::Fresh,
        about: "constant, but the handler extracts State<AppState>",
    },
    TargetSpec {
        name: "routes",
        kind: Kind::Routes,
        workload: Workload::Fresh,
        about: "http::timestamp::routes() only (no layers, no prefix copy), MemoryStore",
    },
    TargetSpec {
        name: "routes+metrics",
        kind: Kind::RoutesMetrics,
        workload: Workload::Fresh,
        about: "routes behind the http::ops::TrackingLayer request metrics",
    },
    TargetSpec {
        name: "app-no-prefix",
        kind: Kind::App { prefix: false },
        workload: Workload::Fresh,
        about:
            "http::app() with server.path_prefix = \"\" (no second copy of the routes), MemoryStore",
    },
    TargetSpec {
        name: "app",
        kind: Kind::App { prefix: true },
        workload: Workload::Fresh,
        about: "http::app() with default settings, MemoryStore",
    },
    TargetSpec {
        name: "timelock",
        kind: Kind::Timelock,
        workload: Workload::Fresh,
        about: "timelock::server::Server, default settings, RocksDB on disk",
    },
    TargetSpec {
        name: "timelock-st",
        kind: Kind::Timelock,
        workload: Workload::StartTransactions,
        about: "the same server: POST /tl/st (1 transaction), immutable locks released every 64",
    },
    TargetSpec {
        name: "timelock-lock",
        kind: Kind::Timelock,
        workload: Workload::LockUnlock,
        about: "the same server: POST /tl/l then /tl/ul2 (uncontended), both counted",
    },
    TargetSpec {
        name: "timelock-batch",
        kind: Kind::Timelock,
        workload: Workload::Batch,
        about: "the same server: POST /{ns}/timestamp/fresh-timestamps?number=10000",
    },
];

/// Index into [`TARGETS`].
type Target = usize;

fn target_name(target: Target) -> &'static str {
    TARGETS[target].name
}

fn target_index(name: &str) -> Option<Target> {
    TARGETS.iter().position(|t| t.name == name)
}

/// A server on its own runtime, stopped by dropping (or sending on) `shutdown`.
struct RunningServer {
    addr: SocketAddr,
    runtime: Runtime,
    threads: ThreadSet,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl RunningServer {
    fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let joined = self
                .runtime
                .block_on(async { tokio::time::timeout(Duration::from_secs(5), task).await });
            match joined {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => eprintln!("http_load: server ended with error: {e:#}"),
                Ok(Err(e)) => eprintln!("http_load: server task failed: {e}"),
                Err(_) => eprintln!("http_load: server did not shut down within 5 s"),
            }
        }
        self.runtime.shutdown_timeout(Duration::from_secs(2));
    }
}

/// The OS threads of one runtime (workers and blocking pool), for CPU accounting: CPU time
/// per request is far less disturbed by other load on the machine than requests per second.
#[derive(Clone, Default)]
struct ThreadSet(Arc<parking_lot::Mutex<Vec<i32>>>);

impl ThreadSet {
    fn register_current(&self) {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() };
            self.0.lock().push(tid);
        }
    }

    /// Nanoseconds each thread has run on a CPU so far (`/proc/self/task/<tid>/schedstat`).
    fn cpu_ns(&self) -> BTreeMap<i32, u64> {
        let tids = self.0.lock().clone();
        tids.into_iter()
            .filter_map(|tid| {
                let text =
                    std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
                let ns = text.split_whitespace().next()?.parse().ok()?;
                Some((tid, ns))
            })
            .collect()
    }
}

/// CPU seconds used between two [`ThreadSet::cpu_ns`] readings (threads in both only); `None`
/// where per-thread CPU time is unavailable.
fn cpu_secs(before: &BTreeMap<i32, u64>, after: &BTreeMap<i32, u64>) -> Option<f64> {
    if after.is_empty() {
        return None;
    }
    let ns: u64 = after
        .iter()
        .filter_map(|(tid, a)| before.get(tid).map(|b| a.saturating_sub(*b)))
        .sum();
    Some(ns as f64 / 1e9)
}

fn runtime_with_threads(name: &str, threads: usize) -> (Runtime, ThreadSet) {
    let set = ThreadSet::default();
    let registered = set.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .on_thread_start(move || registered.register_current())
        .enable_all()
        .build()
        .expect("runtime");
    (runtime, set)
}

async fn constant_handler() -> Response {
    let mut response = Response::new(Body::from(Bytes::from_static(b"1")));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

async fn constant_state_handler(State(state): State<AppState>) -> Response {
    std::hint::black_box(&state);
    constant_handler().await
}

/// Serves `router` like `Server::serve` does (TCP_NODELAY, graceful shutdown) on `runtime`.
fn serve_router((runtime, threads): (Runtime, ThreadSet), router: Router) -> RunningServer {
    let listener = runtime
        .block_on(TcpListener::bind("127.0.0.1:0"))
        .expect("bind server");
    let addr = listener.local_addr().expect("local addr");
    let (tx, rx) = oneshot::channel::<()>();
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let task = runtime.spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await
            .map_err(anyhow::Error::from)
    });
    RunningServer {
        addr,
        runtime,
        threads,
        shutdown: Some(tx),
        task: Some(task),
    }
}

fn default_settings() -> Settings {
    let mut settings = Settings::default();
    settings.server.listen = "127.0.0.1:0".into();
    settings
}

/// The state `Server` would build, over a MemoryStore (built through `Server::bind_with_store`
/// so the bench keeps compiling when `AppState` grows fields).
fn memory_state(runtime: &Runtime, settings: &Settings) -> AppState {
    let store: Arc<dyn BoundStore> = Arc::new(MemoryStore::new());
    let server = runtime
        .block_on(Server::bind_with_store(
            settings,
            store,
            PathBuf::from("(memory)"),
        ))
        .expect("build app state");
    server.state().clone()
}

/// The router a target serves. For `timelock` this is `timelock::http::app` over a MemoryStore
/// (what `Server` serves, minus the disk), used by the in-process phase; the HTTP phase starts
/// the real `Server` instead.
fn target_router(target: Target, runtime: &Runtime, settings: &Settings) -> Router {
    match TARGETS[target].kind {
        Kind::Constant => Router::new().route(PATH_TEMPLATE, post(constant_handler)),
        Kind::ConstantState => Router::new()
            .route(PATH_TEMPLATE, post(constant_state_handler))
            .with_state(memory_state(runtime, settings)),
        Kind::Routes => {
            timelock::http::timestamp::routes().with_state(memory_state(runtime, settings))
        }
        Kind::RoutesMetrics => {
            let state = memory_state(runtime, settings);
            let timeout = Some(Duration::from_millis(settings.server.request_timeout_ms));
            timelock::http::timestamp::routes()
                .route_layer(timelock::http::ops::TrackingLayer::new(
                    state.metrics.clone(),
                    timeout,
                ))
                .with_state(state)
        }
        Kind::App { prefix } => {
            let mut settings = settings.clone();
            if !prefix {
                settings.server.path_prefix = String::new();
            }
            timelock::http::app(memory_state(runtime, &settings), &settings)
        }
        Kind::Timelock => timelock::http::app(memory_state(runtime, settings), settings),
    }
}

fn start_target(target: Target, threads: usize, data_dir: PathBuf) -> RunningServer {
    let spec = &TARGETS[target];
    let (runtime, threads) = runtime_with_threads(&format!("srv-{}", spec.name), threads);
    let mut settings = default_settings();
    if spec.kind != Kind::Timelock {
        let router = target_router(target, &runtime, &settings);
        return serve_router((runtime, threads), router);
    }
    // Each real-server target has its own RocksDB (one data dir, one process holding it).
    settings.storage.data_dir = data_dir.join(spec.name);
    let server = runtime
        .block_on(Server::bind(&settings))
        .expect("bind timelock server");
    let addr = server.local_addr();
    let (tx, rx) = oneshot::channel::<()>();
    let task = runtime.spawn(server.serve(async move {
        let _ = rx.await;
    }));
    RunningServer {
        addr,
        runtime,
        threads,
        shutdown: Some(tx),
        task: Some(task),
    }
}

// ---------------------------------------------------------------------------------------------
// A hand-written request-metrics layer: the measured proposal for `http::ops::track_requests`

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    #[cfg(unix)]
    {
        let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
        // SAFETY: valid clock id and out-parameter.
        if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0 {
            return Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
        }
    }
    Duration::ZERO
}

/// The requests one in-process caller sends for `calls` counted operations of `workload`
/// (built before the clock starts), and how many of them count.
fn in_process_requests(
    workload: Workload,
    calls: u64,
) -> (Vec<(&'static str, Option<Bytes>)>, u64) {
    let mut out = Vec::new();
    let requestor = uuid::Uuid::new_v4();
    let descriptor = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        requestor.as_bytes(),
    );
    match workload {
        Workload::Fresh => out.extend((0..calls).map(|_| (URI, None))),
        Workload::Batch => out.extend((0..calls).map(|_| (BATCH_URI, None))),
        Workload::StartTransactions => {
            let mut ids = Vec::new();
            for _ in 0..calls {
                let id = uuid::Uuid::new_v4();
                ids.push(id);
                let body = format!(
                    r#"{{"requestId":"{id}","requestorId":"{requestor}","numTransactions":1}}"#
                );
                out.push(("/tl/st/bench", Some(Bytes::from(body))));
                if ids.len() == 64 {
                    let body = serde_json::to_string(&ids).expect("ids");
                    out.push(("/tl/ul2/bench", Some(Bytes::from(body))));
                    ids.clear();
                }
            }
        }
        Workload::LockUnlock => {
            for _ in 0..calls {
                let id = uuid::Uuid::new_v4();
                let body = format!(
                    r#"{{"requestId":"{id}","lockDescriptors":["{descriptor}"],"acquireTimeoutMs":0}}"#
                );
                out.push(("/tl/l/bench", Some(Bytes::from(body))));
                out.push(("/tl/ul2/bench", Some(Bytes::from(format!(r#"["{id}"]"#)))));
            }
            return (out, calls * 2);
        }
    }
    (out, calls)
}

/// Calls `router` directly (`tower::ServiceExt::oneshot`, as `axum::serve` does per request)
/// `calls` times on each of `threads` threads at once, validating every answer. Returns the
/// median over threads of CPU nanoseconds per counted request, and the errors seen.
fn router_cost(router: &Router, target: Target, calls: u64, threads: usize) -> (f64, Errors) {
    let barrier = Arc::new(std::sync::Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let router = router.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    let spec = &TARGETS[target];
                    let timestamps = spec.kind.returns_timestamps();
                    let mut errors = Errors::default();
                    let mut last: Option<i64> = None;
                    let mut check =
                        |uri: &str, status: StatusCode, body: &[u8], errors: &mut Errors| {
                            let text = String::from_utf8_lossy(body);
                            if status != StatusCode::OK {
                                errors.push(format!("in-process {uri}: status {status}: {text}"));
                            } else if !timestamps {
                                if body != b"1" {
                                    errors.push(format!("in-process: constant body {text:?}"));
                                }
                            } else if uri == URI {
                                match text.parse::<i64>() {
                                    Ok(ts) if last.is_none_or(|l| ts > l) => last = Some(ts),
                                    Ok(ts) => errors.push(format!(
                                        "in-process: timestamp {ts} not above previous {last:?}"
                                    )),
                                    Err(_) => {
                                        errors.push(format!("in-process: not a number: {text:?}"))
                                    }
                                }
                            } else if uri == BATCH_URI {
                                match check_batch(status, body) {
                                    Ok(ts) if last.is_none_or(|l| ts > l) => last = Some(ts),
                                    Ok(ts) => errors.push(format!(
                                        "in-process: batch {ts} not above previous {last:?}"
                                    )),
                                    Err(e) => errors.push(e),
                                }
                            } else if !body.starts_with(b"{") && !body.starts_with(b"[") {
                                errors.push(format!("in-process {uri}: {text}"));
                            }
                        };
                    let request = |uri: &'static str, body: &Option<Bytes>| {
                        let builder = Request::builder()
                            .method(Method::POST)
                            .uri(uri)
                            .header(header::HOST, "localhost");
                        match body {
                            None => builder.body(Body::empty()),
                            Some(b) => builder
                                .header(header::CONTENT_TYPE, "application/json")
                                .header(header::CONTENT_LENGTH, b.len())
                                .body(Body::from(b.clone())),
                        }
                        .expect("request")
                    };
                    // Warm up (creates the namespace), then measure.
                    let (warm, _) = in_process_requests(spec.workload, calls / 10 + 1);
                    for (i, (uri, body)) in warm.iter().enumerate() {
                        let response =
                            tower::ServiceExt::oneshot(router.clone(), request(uri, body))
                                .await
                                .expect("infallible");
                        let status = response.status();
                        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
                            .await
                            .unwrap_or_default();
                        if i == 0 || status != StatusCode::OK {
                            check(uri, status, &body, &mut errors);
                        }
                    }
                    let (requests, counted) = in_process_requests(spec.workload, calls);
                    barrier.wait();
                    let started = thread_cpu();
                    for (uri, body) in &requests {
                        let response =
                            tower::ServiceExt::oneshot(router.clone(), request(uri, body))
                                .await
                                .expect("infallible");
                        let status = response.status();
                        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
                            .await
                            .unwrap_or_default();
                        check(uri, status, &body, &mut errors);
                    }
                    let cpu = thread_cpu().saturating_sub(started);
                    (cpu.as_nanos() as f64 / counted as f64, errors)
                })
            })
        })
        .collect();
    let mut per_call = Vec::new();
    let mut errors = Errors::default();
    for handle in handles {
        let (ns, errs) = handle.join().expect("router thread");
        per_call.push(ns);
        errors.extend(errs);
    }
    (median(&mut per_call), errors)
}

/// Warns when `dir` is on tmpfs, where synced writes cost nothing and the numbers mislead.
#[cfg(target_os = "linux")]
fn filesystem_note(dir: &std::path::Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    let Ok(c_path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return String::new();
    };
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid NUL-terminated path and a properly sized out-parameter.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut stat) } != 0 {
        return String::new();
    }
    if stat.f_type as i64 == TMPFS_MAGIC {
        eprintln!(
            "WARNING: {} is on tmpfs; set TIMELOCK_BENCH_DIR to a directory on a real disk",
            dir.display()
        );
        " (tmpfs!)".into()
    } else {
        format!(" (fs magic {:#x})", stat.f_type)
    }
}

#[cfg(not(target_os = "linux"))]
fn filesystem_note(_dir: &std::path::Path) -> String {
    String::new()
}

// ---------------------------------------------------------------------------------------------
// Client: hyper 1 over tokio's TcpStream (hyper-util's `TokioIo`, inlined to avoid a dependency)

struct TokioIo(TcpStream);

impl hyper::rt::Read for TokioIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        // SAFETY: tokio's ReadBuf only ever writes initialised bytes into the uninitialised
        // tail it is given, and we advance the cursor by exactly the number it filled.
        let filled = unsafe {
            let mut tbuf = tokio::io::ReadBuf::uninit(buf.as_mut());
            match tokio::io::AsyncRead::poll_read(Pin::new(&mut self.0), cx, &mut tbuf) {
                Poll::Ready(Ok(())) => tbuf.filled().len(),
                other => return other,
            }
        };
        unsafe { buf.advance(filled) };
        Poll::Ready(Ok(()))
    }
}

impl hyper::rt::Write for TokioIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        tokio::io::AsyncWrite::poll_write(Pin::new(&mut self.0), cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::io::AsyncWrite::poll_flush(Pin::new(&mut self.0), cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::io::AsyncWrite::poll_shutdown(Pin::new(&mut self.0), cx)
    }

    fn is_write_vectored(&self) -> bool {
        tokio::io::AsyncWrite::is_write_vectored(&self.0)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        tokio::io::AsyncWrite::poll_write_vectored(Pin::new(&mut self.0), cx, bufs)
    }
}

/// One keep-alive connection and what it has seen so far.
struct Conn {
    sender: SendRequest<Body>,
    /// Last timestamp received on this connection (timelock only), for the monotonicity check.
    last: Option<i64>,
}

async fn connect(addr: SocketAddr) -> anyhow::Result<Conn> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo(tcp)).await?;
    tokio::spawn(async move {
        // Ends when the sender is dropped or the server closes; errors surface on the sender.
        let _ = connection.await;
    });
    Ok(Conn { sender, last: None })
}

/// Reads a whole (small) response body.
async fn read_body(mut body: Incoming) -> Result<Bytes, hyper::Error> {
    let mut first: Option<Bytes> = None;
    let mut rest: Vec<u8> = Vec::new();
    loop {
        let frame =
            std::future::poll_fn(|cx| hyper::body::Body::poll_frame(Pin::new(&mut body), cx)).await;
        let Some(frame) = frame else { break };
        if let Ok(data) = frame?.into_data() {
            match &first {
                None => first = Some(data),
                Some(f) => {
                    if rest.is_empty() {
                        rest.extend_from_slice(f);
                    }
                    rest.extend_from_slice(&data);
                }
            }
        }
    }
    Ok(if rest.is_empty() {
        first.unwrap_or_default()
    } else {
        Bytes::from(rest)
    })
}

// ---------------------------------------------------------------------------------------------
// One measurement

/// Wrong answers and transport errors: all counted, the first few kept for the report.
#[derive(Default)]
struct Errors {
    count: u64,
    kept: Vec<String>,
}

impl Errors {
    fn push(&mut self, text: String) {
        self.count += 1;
        if self.kept.len() < MAX_ERRORS_KEPT {
            self.kept.push(text);
        }
    }

    fn extend(&mut self, other: Errors) {
        self.count += other.count;
        let room = MAX_ERRORS_KEPT.saturating_sub(self.kept.len());
        self.kept.extend(other.kept.into_iter().take(room));
    }

    fn is_empty(&self) -> bool {
        self.count == 0
    }
}

#[derive(Default)]
struct ConnResult {
    /// Requests answered (correctly or not) before the deadline.
    completed: u64,
    /// Requests answered at all (including the last ones, finishing after the deadline).
    answered: u64,
    /// Latency of each request completed before the deadline, nanoseconds.
    latencies_ns: Vec<u32>,
    /// Timestamps received (timelock only), for the run-wide uniqueness check.
    timestamps: Vec<i64>,
    errors: Errors,
    /// The connection broke; it is replaced before the next round.
    broken: bool,
}

/// The outcome of one target in one round.
struct RoundResult {
    requests_per_sec: f64,
    /// Server (resp. load generator) CPU time per answered request, microseconds.
    server_cpu_us: Option<f64>,
    client_cpu_us: Option<f64>,
    latencies_ns: Vec<u32>,
    timestamps: Vec<i64>,
    errors: Errors,
}

const MAX_ERRORS_KEPT: usize = 20;

/// One request/response exchange on `conn`.
async fn exchange(
    conn: &mut Conn,
    host: &HeaderValue,
    uri: &str,
    body: Option<String>,
) -> Result<(StatusCode, Bytes), String> {
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(header::HOST, host.clone())
        .header(header::ACCEPT, HeaderValue::from_static("application/json"));
    if body.is_some() {
        builder = builder.header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    let request = builder
        .body(body.map(Body::from).unwrap_or_else(Body::empty))
        .expect("request");
    conn.sender
        .ready()
        .await
        .map_err(|e| format!("connection not ready: {e}"))?;
    let response = conn
        .sender
        .send_request(request)
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status();
    let body = read_body(response.into_body())
        .await
        .map_err(|e| format!("reading body failed: {e}"))?;
    Ok((status, body))
}

/// Checks a batch answer: 200 and `{"lowerBound":l,"upperBound":l+9999}`; returns `l`.
fn check_batch(status: StatusCode, body: &[u8]) -> Result<i64, String> {
    let v: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let lower = v.as_ref().and_then(|v| v["lowerBound"].as_i64());
    let upper = v.as_ref().and_then(|v| v["upperBound"].as_i64());
    match (status, lower, upper) {
        (StatusCode::OK, Some(l), Some(u)) if u - l == 9_999 => Ok(l),
        _ => Err(format!("batch: {status} {}", String::from_utf8_lossy(body))),
    }
}

/// Checks one timestamp against the connection's previous one and keeps it for the run-wide
/// uniqueness check.
fn check_timestamp(conn: &mut Conn, out: &mut ConnResult, ts: i64) {
    if let Some(last) = conn.last {
        if ts <= last {
            out.errors.push(format!(
                "timestamp {ts} not above previous {last} on the same connection"
            ));
        }
    }
    conn.last = Some(ts);
    out.timestamps.push(ts);
}

async fn drive(
    mut conn: Conn,
    target: Target,
    uri: &'static str,
    host: HeaderValue,
    deadline: Instant,
    record: bool,
) -> (Conn, ConnResult) {
    let mut out = ConnResult {
        latencies_ns: Vec::with_capacity(if record { 64 * 1024 } else { 0 }),
        ..ConnResult::default()
    };
    let spec = &TARGETS[target];
    let requestor = uuid::Uuid::new_v4();
    let descriptor = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        requestor.as_bytes(),
    );
    let mut to_release: Vec<uuid::Uuid> = Vec::new();
    loop {
        let started = Instant::now();
        if started >= deadline {
            break;
        }
        // What one operation sends, and how many counted requests it makes.
        let result: Result<u64, String> = match spec.workload {
            Workload::Fresh => match exchange(&mut conn, &host, uri, None).await {
                Err(e) => Err(e),
                Ok((status, body)) => {
                    if status != StatusCode::OK {
                        out.errors.push(format!(
                            "status {status}: {}",
                            String::from_utf8_lossy(&body)
                        ));
                    } else if !spec.kind.returns_timestamps() {
                        if &body[..] != b"1" {
                            out.errors.push(format!(
                                "constant body {:?}",
                                String::from_utf8_lossy(&body)
                            ));
                        }
                    } else {
                        match std::str::from_utf8(&body)
                            .ok()
                            .and_then(|s| s.parse::<i64>().ok())
                        {
                            None => out.errors.push(format!(
                                "not a JSON integer: {:?}",
                                String::from_utf8_lossy(&body)
                            )),
                            Some(ts) => check_timestamp(&mut conn, &mut out, ts),
                        }
                    }
                    Ok(1)
                }
            },
            Workload::Batch => match exchange(&mut conn, &host, BATCH_URI, None).await {
                Err(e) => Err(e),
                Ok((status, body)) => {
                    match check_batch(status, &body) {
                        Ok(lower) => check_timestamp(&mut conn, &mut out, lower),
                        Err(e) => out.errors.push(e),
                    }
                    Ok(1)
                }
            },
            Workload::StartTransactions => {
                let id = uuid::Uuid::new_v4();
                let body = format!(
                    r#"{{"requestId":"{id}","requestorId":"{requestor}","numTransactions":1}}"#
                );
                match exchange(&mut conn, &host, "/tl/st/bench", Some(body)).await {
                    Err(e) => Err(e),
                    Ok((status, body)) => {
                        let v: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
                        let start = v.as_ref().and_then(|v| v["timestamps"]["start"].as_i64());
                        let immutable = v
                            .as_ref()
                            .and_then(|v| v["immutableTimestamp"]["immutableTimestamp"].as_i64());
                        match (
                            status,
                            start,
                            immutable,
                            v.as_ref().map(|v| v["timestamps"]["count"] == 1),
                        ) {
                            (StatusCode::OK, Some(start), Some(imm), Some(true))
                                if imm <= start =>
                            {
                                check_timestamp(&mut conn, &mut out, start);
                                to_release.push(id);
                            }
                            _ => out.errors.push(format!(
                                "start transactions: {status} {}",
                                String::from_utf8_lossy(&body)
                            )),
                        }
                        let mut release = Ok(());
                        if to_release.len() >= 64 {
                            let ids = serde_json::to_string(&to_release).expect("ids");
                            release = match exchange(&mut conn, &host, "/tl/ul2/bench", Some(ids))
                                .await
                            {
                                Ok((StatusCode::OK, body)) => {
                                    let released: Vec<uuid::Uuid> =
                                        serde_json::from_slice(&body).unwrap_or_default();
                                    if released != to_release {
                                        out.errors.push(
                                            "unlock did not release every immutable-timestamp lock"
                                                .into(),
                                        );
                                    }
                                    to_release.clear();
                                    Ok(())
                                }
                                Ok((status, body)) => {
                                    out.errors.push(format!(
                                        "unlock: {status} {}",
                                        String::from_utf8_lossy(&body)
                                    ));
                                    Ok(())
                                }
                                Err(e) => Err(e),
                            };
                        }
                        release.map(|()| 1)
                    }
                }
            }
            Workload::LockUnlock => {
                let id = uuid::Uuid::new_v4();
                let body = format!(
                    r#"{{"requestId":"{id}","lockDescriptors":["{descriptor}"],"acquireTimeoutMs":0}}"#
                );
                match exchange(&mut conn, &host, "/tl/l/bench", Some(body)).await {
                    Err(e) => Err(e),
                    Ok((status, body)) => {
                        let locked = status == StatusCode::OK
                            && serde_json::from_slice::<serde_json::Value>(&body).is_ok_and(|v| {
                                v["type"] == "successful"
                                    && v["successful"]["lockToken"]["requestId"]
                                        == id.to_string().as_str()
                            });
                        if !locked {
                            out.errors
                                .push(format!("lock: {status} {}", String::from_utf8_lossy(&body)));
                        }
                        match exchange(
                            &mut conn,
                            &host,
                            "/tl/ul2/bench",
                            Some(format!(r#"["{id}"]"#)),
                        )
                        .await
                        {
                            Err(e) => Err(e),
                            Ok((status, body)) => {
                                if locked
                                    && (status != StatusCode::OK
                                        || body != format!(r#"["{id}"]"#).as_bytes())
                                {
                                    out.errors.push(format!(
                                        "unlock: {status} {}",
                                        String::from_utf8_lossy(&body)
                                    ));
                                }
                                Ok(2)
                            }
                        }
                    }
                }
            }
        };
        let requests = match result {
            Ok(n) => n,
            Err(e) => {
                out.errors.push(e);
                out.broken = true;
                break;
            }
        };
        let finished = Instant::now();
        out.answered += requests;
        if finished <= deadline {
            out.completed += requests;
            if record {
                let ns = (finished.duration_since(started).as_nanos() / u128::from(requests))
                    .min(u32::MAX as u128);
                for _ in 0..requests {
                    out.latencies_ns.push(ns as u32);
                }
            }
        }
    }
    (conn, out)
}

const URI: &str = "/bench/timestamp/fresh-timestamp";

/// The client runtime and its threads.
struct Client {
    runtime: Runtime,
    threads: ThreadSet,
}

/// Runs `conns` against `server` for `secs`; returns the connections for the next round.
fn measure(
    client: &Client,
    target: Target,
    server: &RunningServer,
    conns: Vec<Conn>,
    secs: f64,
    record: bool,
) -> (Vec<Conn>, RoundResult) {
    let addr = server.addr;
    let host = HeaderValue::from_str(&addr.to_string()).expect("host header");
    let window = Duration::from_secs_f64(secs);
    let server_before = server.threads.cpu_ns();
    let client_before = client.threads.cpu_ns();
    let (kept, mut result, answered) = client.runtime.block_on(async move {
        let deadline = Instant::now() + window;
        let tasks: Vec<_> = conns
            .into_iter()
            .map(|conn| tokio::spawn(drive(conn, target, URI, host.clone(), deadline, record)))
            .collect();
        let mut kept = Vec::with_capacity(tasks.len());
        let mut result = RoundResult {
            requests_per_sec: 0.0,
            server_cpu_us: None,
            client_cpu_us: None,
            latencies_ns: Vec::new(),
            timestamps: Vec::new(),
            errors: Errors::default(),
        };
        let mut completed = 0u64;
        let mut answered = 0u64;
        let mut broken = 0usize;
        for task in tasks {
            let (conn, out) = task.await.expect("load task");
            completed += out.completed;
            answered += out.answered;
            result.latencies_ns.extend_from_slice(&out.latencies_ns);
            result.timestamps.extend_from_slice(&out.timestamps);
            result.errors.extend(out.errors);
            if out.broken {
                broken += 1;
            } else {
                kept.push(conn);
            }
        }
        result.requests_per_sec = completed as f64 / window.as_secs_f64();
        (kept, result, (answered, broken))
    });
    let (answered, broken) = answered;
    let per_request = |secs: Option<f64>| {
        secs.filter(|_| answered > 0)
            .map(|s| s * 1e6 / answered as f64)
    };
    result.server_cpu_us = per_request(cpu_secs(&server_before, &server.threads.cpu_ns()));
    result.client_cpu_us = per_request(cpu_secs(&client_before, &client.threads.cpu_ns()));
    // Replace broken connections outside the CPU accounting.
    let mut kept = kept;
    for _ in 0..broken {
        match client.runtime.block_on(connect(addr)) {
            Ok(c) => kept.push(c),
            Err(e) => result.errors.push(format!("reconnect failed: {e}")),
        }
    }
    (kept, result)
}

/// Busy CPU time of the whole machine and of this process, to tell how much other load there was.
struct MachineLoad {
    at: Instant,
    machine_busy_ticks: u64,
    self_ticks: u64,
}

impl MachineLoad {
    /// Average number of CPUs other processes kept busy since `before`.
    fn foreign_cpus_since(&self, before: &MachineLoad) -> f64 {
        let hz = 100.0; // USER_HZ, fixed at 100 on Linux for /proc
        let machine = self
            .machine_busy_ticks
            .saturating_sub(before.machine_busy_ticks) as f64;
        let own = self.self_ticks.saturating_sub(before.self_ticks) as f64;
        let secs = self.at.duration_since(before.at).as_secs_f64();
        ((machine - own) / hz / secs).max(0.0)
    }
}

fn machine_load() -> Option<MachineLoad> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy = cpu.iter().take(8).sum::<u64>() - cpu.get(3)? - cpu.get(4)?;
    let own = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name: utime is the 14th field, stime the 15th.
    let rest = own.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(MachineLoad {
        at: Instant::now(),
        machine_busy_ticks: busy,
        self_ticks: utime + stime,
    })
}

// ---------------------------------------------------------------------------------------------
// Statistics and report

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

fn percentile_us(sorted_ns: &[u32], p: f64) -> f64 {
    if sorted_ns.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted_ns.len() as f64).ceil() as usize;
    sorted_ns[rank.clamp(1, sorted_ns.len()) - 1] as f64 / 1000.0
}

#[derive(Default)]
struct TargetSummary {
    rps: Vec<f64>,
    /// Per-round throughput relative to `constant` measured in the same round.
    ratios: Vec<f64>,
    server_cpu_us: Vec<f64>,
    client_cpu_us: Vec<f64>,
    latencies_ns: Vec<u32>,
    errors: Errors,
    timestamps: Vec<i64>,
    validated: usize,
}

fn fmt_opt(value: f64, decimals: usize) -> String {
    if value.is_nan() {
        "-".to_string()
    } else {
        format!("{value:.decimals$}")
    }
}

fn main() -> ExitCode {
    let opts = Options::from_env();
    let targets = opts.targets.clone();
    let constant = target_index("constant").expect("constant target");
    let timelock = target_index("timelock").expect("timelock target");

    let bench_dir = opts.bench_dir.clone();
    std::fs::create_dir_all(&bench_dir).expect("create bench dir");
    let fs_note = filesystem_note(&bench_dir);
    let data_dir = tempfile::tempdir_in(&bench_dir).expect("temp data dir");

    let mut summaries: BTreeMap<Target, TargetSummary> = BTreeMap::new();

    // Phase 1: the router alone, in process. Noise-free attribution of the per-request cost of
    // handler, extractors, middleware and layers; misses hyper, sockets and the kernel.
    if opts.router_calls > 0 && opts.router_rounds > 0 {
        println!(
            "in-process router cost: {} round(s) x {} calls on each of {} threads at once, \
             CPU time per request (no sockets, no hyper):",
            opts.router_rounds, opts.router_calls, opts.server_threads
        );
        let setup = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let settings = default_settings();
        let in_process: Vec<Target> = targets.clone();
        let routers: BTreeMap<Target, Router> = in_process
            .iter()
            .map(|&t| (t, target_router(t, &setup, &settings)))
            .collect();
        let mut costs: BTreeMap<Target, Vec<f64>> = BTreeMap::new();
        let mut deltas: BTreeMap<Target, Vec<f64>> = BTreeMap::new();
        for round in 0..opts.router_rounds {
            let mut order = in_process.clone();
            if round % 2 == 1 {
                order.reverse();
            }
            let mut this_round = BTreeMap::new();
            for target in order {
                let (ns, errors) = router_cost(
                    &routers[&target],
                    target,
                    opts.router_calls,
                    opts.server_threads,
                );
                this_round.insert(target, ns);
                costs.entry(target).or_default().push(ns);
                summaries.entry(target).or_default().errors.extend(errors);
            }
            if let Some(&base) = this_round.get(&constant) {
                for (&target, &ns) in &this_round {
                    deltas.entry(target).or_default().push(ns - base);
                }
            }
        }
        println!(
            "  {:<20} {:>10} {:>15} {:>12}",
            "target", "ns/rq med", "ns/rq min-max", "vs constant"
        );
        for (&target, values) in &costs {
            let min = values.iter().copied().fold(f64::INFINITY, f64::min);
            let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let delta = deltas
                .get(&target)
                .map_or(f64::NAN, |d| median(&mut d.clone()));
            println!(
                "  {:<20} {:>10.0} {:>15} {:>12}",
                target_name(target),
                median(&mut values.clone()),
                format!("{min:.0}-{max:.0}"),
                if target == constant || delta.is_nan() {
                    "-".to_string()
                } else {
                    format!("{delta:+.0} ns")
                }
            );
        }
        println!(
            "  (vs constant: median over rounds of the difference to constant in the same round)"
        );
        println!();
    }

    if opts.rounds == 0 {
        // LOAD_ROUNDS=0: in-process phase only.
        let mut failed = false;
        for (&target, summary) in &summaries {
            failed |= !summary.errors.is_empty();
            for e in &summary.errors.kept {
                eprintln!("http_load: {}: {e}", target_name(target));
            }
        }
        return if !failed {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }

    // Phase 2: HTTP over loopback.
    let mut servers: BTreeMap<Target, RunningServer> = BTreeMap::new();
    for &target in &targets {
        let server = start_target(target, opts.server_threads, data_dir.path().join("data"));
        servers.insert(target, server);
    }

    let (runtime, threads) = runtime_with_threads("load-client", opts.client_threads);
    let client = Client { runtime, threads };

    println!(
        "http_load: {} connection(s), {} round(s) x {:.1} s per target after {:.1} s warm-up; \
         server runtimes {} worker(s) each, client runtime {} worker(s), {} CPU(s)",
        opts.connections,
        opts.rounds,
        opts.secs,
        opts.warmup_secs,
        opts.server_threads,
        opts.client_threads,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    for &target in &targets {
        println!("  {:<20} {}", target_name(target), TARGETS[target].about);
    }
    if targets.contains(&timelock) {
        println!(
            "timelock data dir: {}{fs_note}",
            data_dir.path().join("data").display()
        );
    }

    let mut pools: BTreeMap<Target, Vec<Conn>> = BTreeMap::new();
    for &target in &targets {
        let addr = servers[&target].addr;
        let conns = client.runtime.block_on(async {
            let mut conns = Vec::with_capacity(opts.connections);
            for _ in 0..opts.connections {
                conns.push(connect(addr).await.expect("connect to server"));
            }
            conns
        });
        pools.insert(target, conns);
    }

    let mut run = |target: Target, secs: f64, record: bool| -> RoundResult {
        let conns = pools.remove(&target).expect("pool");
        let (conns, result) = measure(&client, target, &servers[&target], conns, secs, record);
        pools.insert(target, conns);
        result
    };

    // Warm-up: creates the namespace, fills caches, grows buffers; validated, not timed.
    if opts.warmup_secs > 0.0 {
        for &target in &targets {
            let result = run(target, opts.warmup_secs, false);
            let summary = summaries.entry(target).or_default();
            summary.errors.extend(result.errors);
            summary.timestamps.extend(result.timestamps);
        }
    }

    let load_before = machine_load();
    for round in 0..opts.rounds {
        // Alternate the order (a b c | c b a | ...) so slow drift does not favour one target.
        let mut order = targets.clone();
        if round % 2 == 1 {
            order.reverse();
        }
        let mut this_round: BTreeMap<Target, f64> = BTreeMap::new();
        let mut line = format!("round {}/{}:", round + 1, opts.rounds);
        for target in order {
            let result = run(target, opts.secs, true);
            line.push_str(&format!(
                "  {} {:.0}/s{}",
                target_name(target),
                result.requests_per_sec,
                if result.errors.is_empty() {
                    String::new()
                } else {
                    format!(" ({} errors)", result.errors.count)
                }
            ));
            this_round.insert(target, result.requests_per_sec);
            let summary = summaries.entry(target).or_default();
            summary.rps.push(result.requests_per_sec);
            summary.server_cpu_us.extend(result.server_cpu_us);
            summary.client_cpu_us.extend(result.client_cpu_us);
            summary.latencies_ns.extend_from_slice(&result.latencies_ns);
            summary.errors.extend(result.errors);
            summary.timestamps.extend(result.timestamps);
        }
        if let Some(&base) = this_round.get(&constant) {
            for (&target, &rps) in &this_round {
                summaries.entry(target).or_default().ratios.push(rps / base);
            }
            if let Some(&t) = this_round.get(&timelock) {
                line.push_str(&format!("  | timelock/constant {:.3}", t / base));
            }
        }
        println!("{line}");
    }

    let foreign = machine_load().and_then(|after| Some(after.foreign_cpus_since(&load_before?)));

    // Run-wide uniqueness of every timestamp each server handed out (all connections, warm-up
    // included).
    for (&target, summary) in summaries.iter_mut() {
        if !TARGETS[target].kind.returns_timestamps() {
            continue;
        }
        let mut all = std::mem::take(&mut summary.timestamps);
        all.sort_unstable();
        let duplicates = all.windows(2).filter(|w| w[0] == w[1]).count();
        if duplicates > 0 {
            summary.errors.push(format!(
                "{duplicates} duplicate timestamp(s) across connections out of {}",
                all.len()
            ));
        }
        summary.validated = all.len();
    }

    println!();
    println!(
        "{:<20} {:>9} {:>15} {:>8} {:>8} {:>8} {:>10} {:>10} {:>9} {:>6}",
        "target",
        "rq/s med",
        "rq/s min-max",
        "p50 µs",
        "p99 µs",
        "vs const",
        "srv CPU/rq",
        "cli CPU/rq",
        "validated",
        "errors"
    );
    let mut total_errors = 0u64;
    let mut cpu_per_request: BTreeMap<Target, f64> = BTreeMap::new();
    for (&target, summary) in summaries.iter_mut() {
        let rps = &summary.rps;
        let min = rps.iter().copied().fold(f64::INFINITY, f64::min);
        let max = rps.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let med = median(&mut summary.rps.clone());
        let ratio = median(&mut summary.ratios.clone());
        let server_cpu = median(&mut summary.server_cpu_us.clone());
        let client_cpu = median(&mut summary.client_cpu_us.clone());
        cpu_per_request.insert(target, server_cpu + client_cpu);
        summary.latencies_ns.sort_unstable();
        total_errors += summary.errors.count;
        println!(
            "{:<20} {:>9.0} {:>15} {:>8.1} {:>8.1} {:>8} {:>10} {:>10} {:>9} {:>6}",
            target_name(target),
            med,
            format!("{min:.0}-{max:.0}"),
            percentile_us(&summary.latencies_ns, 50.0),
            percentile_us(&summary.latencies_ns, 99.0),
            fmt_opt(ratio, 3),
            fmt_opt(server_cpu, 2),
            fmt_opt(client_cpu, 2),
            if TARGETS[target].kind.returns_timestamps() {
                summary.validated.to_string()
            } else {
                "-".to_string()
            },
            summary.errors.count
        );
    }
    println!(
        "(vs const: median over rounds of req/s relative to constant in the same round; \
         CPU/rq: median µs of CPU per request on the server's (client's) threads, \
         kernel time included)"
    );
    if let Some(summary) = summaries.get(&timelock) {
        if !summary.ratios.is_empty() {
            let per_round: Vec<String> = summary.ratios.iter().map(|r| format!("{r:.3}")).collect();
            let ratio = median(&mut summary.ratios.clone());
            println!();
            println!(
                "ratio timelock/constant (median of per-round ratios): {ratio:.3}   [per round: {}]   target >= 0.85: {}",
                per_round.join(" "),
                if ratio >= 0.85 { "met" } else { "NOT met" }
            );
            // With server and client sharing the CPUs, throughput is about CPUs / (server +
            // client CPU per request): this ratio is what the throughput ratio converges to on an
            // otherwise idle machine, and it is far less sensitive to other load.
            if let (Some(c), Some(t)) = (
                cpu_per_request.get(&constant),
                cpu_per_request.get(&timelock),
            ) {
                if c.is_finite() && t.is_finite() && *t > 0.0 {
                    println!(
                        "CPU-based ratio (constant CPU/rq ÷ timelock CPU/rq, server + client): {:.3}",
                        c / t
                    );
                }
            }
        }
    }
    if let Some(foreign) = foreign {
        println!(
            "other processes used {foreign:.2} CPUs on average during the measured rounds{}",
            if foreign > 0.2 {
                " — throughput figures are disturbed; trust the CPU/rq columns and the in-process table more"
            } else {
                ""
            }
        );
    }
    println!("(speed never fails the run; wrong answers and transport errors do)");

    // Close client connections first so graceful shutdown has nothing to wait for.
    drop(pools);
    client.runtime.shutdown_timeout(Duration::from_secs(2));
    for (_, server) in servers {
        server.stop();
    }
    drop(data_dir);

    if total_errors > 0 {
        eprintln!();
        eprintln!("http_load: {total_errors} wrong answer(s) or transport error(s):");
        for (&target, summary) in &summaries {
            for e in &summary.errors.kept {
                eprintln!("  {}: {e}", target_name(target));
            }
        }
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
