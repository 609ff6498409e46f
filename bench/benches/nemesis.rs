//! A randomized nemesis run against the cluster (issue 24): faults chosen at random, under a
//! multi-namespace load, with the Jepsen-style checker over every operation.
//!
//!     cargo bench -p timelock-bench --bench nemesis        # or: ./dev nemesis
//!
//! Starts a real etcd (Debian's `etcd-server`) and three release-built `timelock` nodes on
//! loopback, each node reaching etcd through its own TCP proxy (tests/common/etcd.rs). Clients
//! (`NEMESIS_CLIENTS` per namespace, default 3, over `NEMESIS_NAMESPACES`, default 8) each fetch
//! timestamps of one namespace in a closed loop, choosing per call among the legacy
//! `/{ns}/timestamp/fresh-timestamp` (as a new-protocol client), `/tl/ts/{ns}` and `/tl/st/{ns}`;
//! a call starts at a random node, follows 308s and moves to the next node on 503 or a
//! connection error, as AtlasDB's client does. A client starts where its last call was served
//! three times in four, else at a random node, and waits `NEMESIS_PACE_MS` (default 10) between
//! calls, so that the run leaves the machine's cores to the cluster it tests.
//!
//! Every few seconds the nemesis picks one fault at random: `kill -9` a node (restarted a few
//! seconds later), SIGSTOP a node past the lease TTL then SIGCONT, cut a node off from etcd then
//! heal, `kill -9` etcd then restart it, or a rolling restart (SIGTERM and restart of each node
//! in turn). Faults run one at a time; the node is the leader half of the time.
//!
//! Environment:
//! * `NEMESIS_SECS` (default 600): how long faults are injected; then everything is healed,
//!   every namespace must serve again, and the run stops by itself.
//! * `NEMESIS_SEED`: replays a run's choices (faults, targets, durations, the clients' choice of
//!   kinds); printed at the start. Timing still differs between runs.
//! * `NEMESIS_FAULTS`: the kinds to choose from, comma-separated among `kill`, `pause`, `cut`,
//!   `etcd`, `rolling` (default: all).
//! * `NEMESIS_ENV`: extra `KEY=VALUE` settings, comma-separated, given to every node, such as a
//!   lease (`TIMELOCK__CLUSTER__LEASE_TTL_SECS=2`) or a leadership mode, so the same run works
//!   against another cluster configuration unchanged. `NEMESIS_ENV_NODE0` (1, 2) adds settings
//!   for one node only: `NEMESIS_ENV_NODE2=TIMELOCK__CLUSTER__ETCD_PREFIX=/elsewhere/` makes a
//!   split brain (node2 elects itself in a cluster of its own), which the checker must report.
//!
//! The checker (tests/common/checker.rs) runs per namespace over every successful operation:
//! unique across all clients, per-client strictly increasing, real-time ordered. A violation is
//! printed with the fault timeline around it, the nodes' data and logs are kept, and the process
//! exits non-zero. The report: operations checked per kind, faults injected per kind, the
//! longest gap per namespace without a successful operation and per fault kind (the longest
//! gap in any namespace that began during a fault: median and worst over the faults of that
//! kind), and errors by kind.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::checker::{check, Op};
use common::etcd::{start_etcd, Etcd, Proxy};
use common::TestServer;
use parking_lot::Mutex;
use serde_json::Value;

const NEW_PROTOCOL: &str = "timelock-nemesis/1.0 atlasdb-http-client/2.0";
const NODES: usize = 3;

/// A setting from the environment: `default` when unset; a value that does not parse or is
/// outside `range` ends the run before anything starts (exit 2), rather than being ignored.
fn env_setting<T>(name: &str, default: T, range: std::ops::RangeInclusive<T>) -> T
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    let Ok(text) = std::env::var(name) else {
        return default;
    };
    match text.trim().parse::<T>() {
        Ok(v) if range.contains(&v) => v,
        _ => refuse(&format!(
            "{name}={text:?}: expected a whole number from {} to {}",
            range.start(),
            range.end()
        )),
    }
}

/// Ends the run on a bad setting, before any process is started.
fn refuse(why: &str) -> ! {
    eprintln!("nemesis: {why}");
    std::process::exit(2)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("nemesis: run with `cargo bench -p timelock-bench --bench nemesis`");
        return;
    }
    if !std::path::Path::new(&common::server_binary()).exists() {
        eprintln!(
            "nemesis: no server binary at {}; build it first: cargo build --release --bin timelock",
            common::server_binary()
        );
        std::process::exit(1);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ok = runtime.block_on(run());
    // Every process and task is gone by now (the cluster's guard ran): exit with the verdict.
    drop(runtime);
    if !ok {
        std::process::exit(1);
    }
}

/// SplitMix64: small, seedable, and enough to choose faults.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// A duration drawn uniformly from `[lo, hi)` milliseconds.
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Fault {
    Kill,
    Pause,
    Cut,
    EtcdKill,
    Rolling,
}

impl Fault {
    const ALL: [Fault; 5] = [
        Fault::Kill,
        Fault::Pause,
        Fault::Cut,
        Fault::EtcdKill,
        Fault::Rolling,
    ];
    /// The short names `NEMESIS_FAULTS` takes.
    fn key(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::Cut => "cut",
            Fault::EtcdKill => "etcd",
            Fault::Rolling => "rolling",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill -9 a node, restart it",
            Fault::Pause => "SIGSTOP a node past the lease, SIGCONT",
            Fault::Cut => "cut a node off from etcd, heal",
            Fault::EtcdKill => "kill -9 etcd, restart it",
            Fault::Rolling => "rolling restart (SIGTERM each node)",
        }
    }
}

/// The fault timeline, relative to the start of the load.
struct Timeline {
    start: Instant,
    events: Mutex<Vec<(Instant, String)>>,
}

impl Timeline {
    fn note(&self, what: String) {
        let now = Instant::now();
        println!(
            "{:>8.3}s  {what}",
            now.duration_since(self.start).as_secs_f64()
        );
        self.events.lock().push((now, what));
    }

    /// The events from `before` ahead of `at` to `after` past it.
    fn around(&self, at: Instant, before: Duration, after: Duration) -> String {
        let events = self.events.lock();
        let mut out = String::new();
        for (t, what) in events.iter() {
            if *t + before >= at && *t <= at + after {
                out.push_str(&format!(
                    "{:>8.3}s  {what}\n",
                    t.duration_since(self.start).as_secs_f64()
                ));
            }
        }
        out
    }

    fn secs(&self, t: Instant) -> f64 {
        t.saturating_duration_since(self.start).as_secs_f64()
    }
}

/// The cluster, owned by the run; its guard heals every fault and stops every process, also
/// when the run panics.
struct Cluster {
    nodes: Vec<TestServer>,
    proxies: Vec<Proxy>,
    etcd: Etcd,
    dirs: Vec<tempfile::TempDir>,
    paused: Vec<bool>,
    bases: Arc<Mutex<Vec<String>>>,
    known: Arc<Mutex<HashSet<String>>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (i, node) in self.nodes.iter_mut().enumerate() {
            if self.paused[i] {
                if let Some(pid) = node.pid() {
                    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
                }
            }
            node.kill9();
        }
        for proxy in &self.proxies {
            proxy.heal();
        }
        // The fields' own guards then stop etcd and the proxies and remove the directories.
    }
}

impl Cluster {
    async fn start(extra_env: &[(String, String)]) -> Cluster {
        let etcd = start_etcd().await;
        let mut nodes = Vec::new();
        let mut proxies = Vec::new();
        let mut dirs = Vec::new();
        for i in 0..NODES {
            let proxy = Proxy::start(etcd.addr).await;
            let dir = tempfile::tempdir().unwrap();
            let mut env = vec![
                ("TIMELOCK__CLUSTER__MODE".to_string(), "etcd".to_string()),
                ("TIMELOCK__CLUSTER__ETCD_ENDPOINTS".into(), proxy.endpoint()),
                ("TIMELOCK__CLUSTER__NODE_ID".into(), format!("node{i}")),
                ("TIMELOCK__LOG__LEVEL".into(), "info".into()),
            ];
            for (k, v) in extra_env
                .iter()
                .chain(&settings(&format!("NEMESIS_ENV_NODE{i}")))
            {
                env.retain(|(key, _)| key != k);
                env.push((k.clone(), v.clone()));
            }
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let node = TestServer::start(&dir.path().join("data"), &env);
            nodes.push(node);
            proxies.push(proxy);
            dirs.push(dir);
        }
        let cluster = Cluster {
            nodes,
            proxies,
            etcd,
            dirs,
            paused: vec![false; NODES],
            bases: Arc::new(Mutex::new(Vec::new())),
            known: Arc::new(Mutex::new(HashSet::new())),
        };
        cluster.publish_bases();
        cluster
    }

    /// Tells the clients the nodes' current URLs (a restarted node listens on a new port).
    fn publish_bases(&self) {
        let bases: Vec<String> = self.nodes.iter().map(|n| n.base()).collect();
        self.known.lock().extend(bases.iter().cloned());
        *self.bases.lock() = bases;
    }

    /// The index of a node that says it leads (today's single leader; `None` in another mode
    /// or while nobody leads).
    async fn leader(&self) -> Option<usize> {
        for (i, node) in self.nodes.iter().enumerate() {
            if !self.paused[i] && role_of(&node.base()).await.as_deref() == Some("leader") {
                return Some(i);
            }
        }
        None
    }

    /// Waits until node `i` is back in the cluster (leading or following), up to `limit`.
    async fn rejoined(&self, i: usize, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let role = role_of(&self.nodes[i].base()).await;
            if matches!(role.as_deref(), Some("leader" | "follower")) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn signal(&mut self, i: usize, signal: i32) {
        let pid = self.nodes[i].pid().expect("node running") as i32;
        unsafe { libc::kill(pid, signal) };
        self.paused[i] = signal == libc::SIGSTOP;
    }

    /// Keeps the nodes' data and logs for a post-mortem; returns where they are.
    fn keep_dirs(&mut self) -> Vec<std::path::PathBuf> {
        self.dirs.drain(..).map(|d| d.keep()).collect()
    }
}

async fn role_of(base: &str) -> Option<String> {
    common::etcd::role_of(&http(), base, Duration::from_secs(1)).await
}

fn http() -> reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                // Short, so a call stuck on a paused node moves on to another.
                .timeout(Duration::from_secs(2))
                .pool_max_idle_per_host(64)
                .build()
                .unwrap()
        })
        .clone()
}

/// The operations a client chooses among.
#[derive(Clone, Copy)]
enum Kind {
    Fresh,
    Ts,
    St,
}

const KINDS: [(Kind, &str); 3] = [
    (Kind::Fresh, "legacy fresh-timestamp"),
    (Kind::Ts, "/tl/ts (getFreshTimestamps)"),
    (Kind::St, "/tl/st (startTransactions)"),
];

/// Counters of what the clients saw, by kind.
#[derive(Default)]
struct Counters {
    ok: [AtomicU64; 3],
    redirects: AtomicU64,
    unavailable: AtomicU64,
    unreachable: AtomicU64,
    other: Mutex<BTreeMap<String, u64>>,
    gave_up: AtomicU64,
}

impl Counters {
    fn other(&self, what: String) {
        *self.other.lock().entry(what).or_default() += 1;
    }
}

enum Attempt {
    Ok(i64),
    Redirect(String),
    Unavailable,
    Unreachable,
    Other(String),
}

async fn attempt(base: &str, kind: Kind, ns: &str, requestor: uuid::Uuid) -> Attempt {
    let request = match kind {
        Kind::Fresh => http().post(format!("{base}/{ns}/timestamp/fresh-timestamp")),
        Kind::Ts => http()
            .post(format!("{base}/tl/ts/{ns}"))
            .header("Content-Type", "application/json")
            .body(r#"{"numTimestamps":1}"#),
        Kind::St => http()
            .post(format!("{base}/tl/st/{ns}"))
            .header("Content-Type", "application/json")
            .body(format!(
                r#"{{"requestId":"{}","requestorId":"{requestor}","numTransactions":1}}"#,
                uuid::Uuid::new_v4()
            )),
    };
    let response = match request.header("User-Agent", NEW_PROTOCOL).send().await {
        Ok(r) => r,
        Err(_) => return Attempt::Unreachable,
    };
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let Ok(text) = response.text().await else {
        return Attempt::Unreachable;
    };
    match status {
        200 => {
            let value = match kind {
                Kind::Fresh => text.trim().parse().ok(),
                Kind::Ts => serde_json::from_str::<Value>(&text).ok().and_then(|v| {
                    let (lo, hi) = (v["inclusiveLower"].as_i64()?, v["inclusiveUpper"].as_i64()?);
                    (lo == hi).then_some(lo)
                }),
                Kind::St => serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v["timestamps"]["start"].as_i64()),
            };
            match value {
                Some(v) => Attempt::Ok(v),
                None => Attempt::Other(format!("200 with an unexpected body: {text:.80}")),
            }
        }
        308 => match location {
            Some(l) => Attempt::Redirect(l),
            None => Attempt::Other("308 without Location".into()),
        },
        503 => Attempt::Unavailable,
        _ => Attempt::Other(format!("{status} {text:.80}")),
    }
}

/// The shared state of the load.
struct Load {
    bases: Arc<Mutex<Vec<String>>>,
    known: Arc<Mutex<HashSet<String>>>,
    stop: AtomicBool,
    ops: Vec<Mutex<Vec<Op>>>,
    counters: Counters,
}

/// One call as AtlasDB's client makes it: start at some node, follow a 308 to the node it
/// names, try the next node on 503 or when unreachable, until `limit`.
async fn call(
    load: &Load,
    rng: &mut Rng,
    kind: Kind,
    ns: &str,
    requestor: uuid::Uuid,
    sticky: &mut Option<usize>,
    limit: Duration,
) -> Option<(i64, String)> {
    let deadline = Instant::now() + limit;
    // Mostly where the last call was served, as a client that learned the leader; sometimes
    // anywhere, so that followers and a deposed leader keep being asked too.
    let mut i = match *sticky {
        Some(i) if rng.below(4) != 0 => i,
        _ => rng.below(NODES as u64) as usize,
    };
    let c = &load.counters;
    loop {
        let bases = load.bases.lock().clone();
        let mut target = bases[i % bases.len()].clone();
        for _ in 0..3 {
            match attempt(&target, kind, ns, requestor).await {
                Attempt::Ok(v) => {
                    *sticky = Some(i % bases.len());
                    return Some((v, target));
                }
                Attempt::Redirect(location) => {
                    c.redirects.fetch_add(1, Ordering::Relaxed);
                    if !load.known.lock().contains(&location) {
                        c.other(format!("308 to {location}, no node's URL"));
                        break;
                    }
                    target = location;
                }
                Attempt::Unavailable => {
                    c.unavailable.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Attempt::Unreachable => {
                    c.unreachable.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Attempt::Other(what) => {
                    c.other(what);
                    break;
                }
            }
        }
        if Instant::now() > deadline || load.stop.load(Ordering::Acquire) {
            return None;
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn spawn_clients(
    load: &Arc<Load>,
    namespaces: usize,
    per_namespace: usize,
    seed: u64,
    pace: Duration,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut handles = Vec::new();
    for n in 0..namespaces {
        for k in 0..per_namespace {
            let client = n * per_namespace + k;
            let load = load.clone();
            let mut rng = Rng(seed ^ (client as u64 + 1).wrapping_mul(0xA076_1D64_78BD_642F));
            handles.push(tokio::spawn(async move {
                let ns = format!("nemesis{n}");
                let requestor = uuid::Uuid::new_v4();
                let mut sticky = None;
                while !load.stop.load(Ordering::Acquire) {
                    tokio::time::sleep(pace).await;
                    let k = rng.below(3) as usize;
                    let invoked = Instant::now();
                    match call(
                        &load,
                        &mut rng,
                        KINDS[k].0,
                        &ns,
                        requestor,
                        &mut sticky,
                        Duration::from_secs(30),
                    )
                    .await
                    {
                        Some((value, node)) => {
                            load.counters.ok[k].fetch_add(1, Ordering::Relaxed);
                            load.ops[n].lock().push(Op {
                                client,
                                invoked,
                                completed: Instant::now(),
                                value,
                                node,
                            });
                        }
                        None if load.stop.load(Ordering::Acquire) => {}
                        None => {
                            load.counters.gave_up.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
    }
    handles
}

/// The longest interval between consecutive successes (`done`, sorted; the last one runs to
/// `end`) that began within `[from, to]`.
fn worst_gap(done: &[Instant], from: Instant, to: Instant, end: Instant) -> Duration {
    let first = done.partition_point(|t| *t < from);
    let mut worst = Duration::ZERO;
    for k in first..done.len() {
        if done[k] > to {
            break;
        }
        let next = done.get(k + 1).copied().unwrap_or(end);
        worst = worst.max(next.saturating_duration_since(done[k]));
    }
    worst
}

/// `KEY=VALUE` pairs, comma-separated, from the environment variable `name`.
fn settings(name: &str) -> Vec<(String, String)> {
    std::env::var(name)
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .unwrap_or_else(|| refuse(&format!("{name}: {kv:?} is not KEY=VALUE")));
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect()
}

/// Sleeps `d`, or returns early (false) when Ctrl-C arrives.
async fn sleep_or_interrupt(d: Duration, interrupted: &AtomicBool) -> bool {
    if interrupted.load(Ordering::Acquire) {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = tokio::signal::ctrl_c() => {
            interrupted.store(true, Ordering::Release);
            false
        }
    }
}

async fn run() -> bool {
    let secs: u64 = env_setting("NEMESIS_SECS", 600, 1..=86_400);
    let namespaces: usize = env_setting("NEMESIS_NAMESPACES", 8, 1..=1_000);
    let per_namespace: usize = env_setting("NEMESIS_CLIENTS", 3, 1..=100);
    let pace = Duration::from_millis(env_setting("NEMESIS_PACE_MS", 10, 0..=60_000));
    let now_nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let seed: u64 = env_setting("NEMESIS_SEED", now_nanos, 0..=u64::MAX);
    let extra_env = settings("NEMESIS_ENV");
    // The per-node settings are read again as each node starts; reading them here first means a
    // malformed one ends the run before etcd or any node is running.
    for i in 0..NODES {
        settings(&format!("NEMESIS_ENV_NODE{i}"));
    }
    let kinds: Vec<Fault> = match std::env::var("NEMESIS_FAULTS") {
        Ok(list) => list
            .split(',')
            .map(|k| {
                Fault::ALL
                    .into_iter()
                    .find(|f| f.key() == k.trim())
                    .unwrap_or_else(|| {
                        refuse(&format!(
                            "NEMESIS_FAULTS: {k:?} is none of kill, pause, cut, etcd, rolling"
                        ))
                    })
            })
            .collect(),
        Err(_) => Fault::ALL.to_vec(),
    };
    // A pause must outlast the lease, whatever the configured one.
    let ttl = Duration::from_secs(
        extra_env
            .iter()
            .find(|(k, _)| k == "TIMELOCK__CLUSTER__LEASE_TTL_SECS")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(3),
    );
    println!(
        "nemesis: seed {seed} (replay with NEMESIS_SEED={seed}), {secs} s of faults, {namespaces} namespaces x {per_namespace} clients, {NODES} nodes, lease TTL {ttl:?}, faults {:?}, extra node settings {extra_env:?}",
        kinds.iter().map(|f| f.key()).collect::<Vec<_>>()
    );

    let mut cluster = Cluster::start(&extra_env).await;
    let interrupted = AtomicBool::new(false);
    // Every node in the cluster (leading or following) before the load begins.
    for i in 0..NODES {
        assert!(
            cluster.rejoined(i, Duration::from_secs(60)).await,
            "node{i} did not join within 60 s:\n{}",
            cluster.nodes[i].log()
        );
    }
    let load = Arc::new(Load {
        bases: cluster.bases.clone(),
        known: cluster.known.clone(),
        stop: AtomicBool::new(false),
        ops: (0..namespaces).map(|_| Mutex::new(Vec::new())).collect(),
        counters: Counters::default(),
    });
    let timeline = Timeline {
        start: Instant::now(),
        events: Mutex::new(Vec::new()),
    };
    let clients = spawn_clients(&load, namespaces, per_namespace, seed, pace);
    timeline.note(format!(
        "load started; nodes: {}",
        cluster
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| format!("node{i} {}", n.base()))
            .collect::<Vec<_>>()
            .join(", ")
    ));

    let mut rng = Rng(seed);
    let mut injected: BTreeMap<Fault, u64> = BTreeMap::new();
    // Each fault's kind and its window, from injection to healed.
    let mut windows: Vec<(Fault, Instant, Instant)> = Vec::new();
    let faults_end = timeline.start + Duration::from_secs(secs);
    let mut incidents = Vec::new();
    'nemesis: while Instant::now() < faults_end {
        if !sleep_or_interrupt(rng.millis(1_000, 4_000), &interrupted).await {
            break;
        }
        let fault = kinds[rng.below(kinds.len() as u64) as usize];
        let target_leader = rng.below(2) == 0;
        let mut target = rng.below(NODES as u64) as usize;
        if target_leader {
            if let Some(l) = cluster.leader().await {
                target = l;
            }
        }
        let who = if target_leader { " (leader)" } else { "" };
        *injected.entry(fault).or_default() += 1;
        let fault_began = Instant::now();
        match fault {
            Fault::Kill => {
                cluster.nodes[target].kill9();
                timeline.note(format!("kill -9 node{target}{who}"));
                let down = rng.millis(1_000, 6_000);
                sleep_or_interrupt(down, &interrupted).await;
                tokio::task::block_in_place(|| cluster.nodes[target].restart());
                cluster.publish_bases();
                timeline.note(format!(
                    "restarted node{target} at {}",
                    cluster.nodes[target].base()
                ));
            }
            Fault::Pause => {
                cluster.signal(target, libc::SIGSTOP);
                timeline.note(format!("SIGSTOP node{target}{who}"));
                let paused = ttl + rng.millis(500, 3_000);
                sleep_or_interrupt(paused, &interrupted).await;
                cluster.signal(target, libc::SIGCONT);
                timeline.note(format!("SIGCONT node{target}"));
            }
            Fault::Cut => {
                cluster.proxies[target].cut();
                timeline.note(format!("cut node{target}{who} off from etcd"));
                sleep_or_interrupt(rng.millis(1_000, 7_000), &interrupted).await;
                cluster.proxies[target].heal();
                timeline.note(format!("healed node{target}"));
            }
            Fault::EtcdKill => {
                cluster.etcd.kill9();
                timeline.note("kill -9 etcd".into());
                sleep_or_interrupt(rng.millis(500, 6_000), &interrupted).await;
                cluster.etcd.restart().await;
                timeline.note("etcd restarted and answering".into());
            }
            Fault::Rolling => {
                timeline.note("rolling restart begins".into());
                for i in 0..NODES {
                    let status = tokio::task::block_in_place(|| cluster.nodes[i].terminate());
                    timeline.note(format!("node{i} stopped on SIGTERM ({status})"));
                    if !status.success() {
                        incidents.push(format!("node{i} exited with {status} on SIGTERM"));
                    }
                    tokio::task::block_in_place(|| cluster.nodes[i].restart());
                    cluster.publish_bases();
                    timeline.note(format!("restarted node{i} at {}", cluster.nodes[i].base()));
                    if !cluster.rejoined(i, Duration::from_secs(30)).await {
                        incidents
                            .push(format!("node{i} did not rejoin within 30 s of its restart"));
                        timeline.note(format!("node{i} did not rejoin within 30 s"));
                    }
                    if !sleep_or_interrupt(Duration::from_millis(300), &interrupted).await {
                        // Finish the restart of this node, then stop.
                        continue 'nemesis;
                    }
                }
                timeline.note("rolling restart done".into());
            }
        }
        windows.push((fault, fault_began, Instant::now()));
    }
    if interrupted.load(Ordering::Acquire) {
        timeline.note("interrupted (Ctrl-C): healing and stopping".into());
    }

    // Heal: every node running and reachable, etcd up (each fault healed itself above), then
    // every namespace must serve again.
    timeline.note("faults over; every namespace must serve again".into());
    let healed_at = Instant::now();
    let mut recovered = vec![None; namespaces];
    let recovery_deadline = healed_at + Duration::from_secs(60);
    while !interrupted.load(Ordering::Acquire)
        && recovered.iter().any(Option::is_none)
        && Instant::now() < recovery_deadline
    {
        for (n, slot) in recovered.iter_mut().enumerate() {
            if slot.is_none() && load.ops[n].lock().iter().any(|o| o.invoked >= healed_at) {
                *slot = Some(healed_at.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    load.stop.store(true, Ordering::Release);
    for c in clients {
        let _ = c.await;
    }
    let load_end = Instant::now();
    timeline.note("load stopped".into());
    for (n, r) in recovered.iter().enumerate() {
        if r.is_none() && !interrupted.load(Ordering::Acquire) {
            incidents.push(format!(
                "namespace nemesis{n} did not serve within 60 s after the faults"
            ));
        }
    }

    // The checker, per namespace.
    let mut violations = Vec::new();
    let mut gaps = Vec::new();
    let mut dones = Vec::new();
    for n in 0..namespaces {
        let ops = std::mem::take(&mut *load.ops[n].lock());
        if let Err(v) = check(&ops) {
            violations.push((n, v));
        }
        // Longest time without a successful operation in this namespace.
        let mut done: Vec<Instant> = ops.iter().map(|o| o.completed).collect();
        done.sort();
        let mut last = timeline.start;
        let mut gap = (Duration::ZERO, timeline.start);
        for t in done.iter().copied().chain(std::iter::once(load_end)) {
            let d = t.saturating_duration_since(last);
            if d > gap.0 {
                gap = (d, last);
            }
            last = t;
        }
        gaps.push((n, ops.len(), gap));
        dones.push(done);
    }
    // Per fault: the longest gap in any namespace that began while the fault lasted (a gap
    // begins with the last success before it, so a little before the fault itself).
    let mut by_fault: BTreeMap<Fault, Vec<Duration>> = BTreeMap::new();
    for (fault, began, healed) in &windows {
        let from = *began - Duration::from_millis(100);
        let worst = dones
            .iter()
            .map(|done| worst_gap(done, from, *healed, load_end))
            .max()
            .unwrap_or_default();
        by_fault.entry(*fault).or_default().push(worst);
    }

    // The report.
    let c = &load.counters;
    let total: u64 = c.ok.iter().map(|a| a.load(Ordering::Relaxed)).sum();
    println!();
    println!(
        "nemesis report: seed {seed}, {:.0} s of load ({secs} s of faults), {NODES} nodes, {namespaces} namespaces x {per_namespace} clients",
        load_end.duration_since(timeline.start).as_secs_f64()
    );
    println!();
    println!("| operations checked | count |");
    println!("|---|---:|");
    for (k, (_, name)) in KINDS.iter().enumerate() {
        println!("| {name} | {} |", c.ok[k].load(Ordering::Relaxed));
    }
    println!("| **total** | **{total}** |");
    println!();
    println!("| fault injected | count |");
    println!("|---|---:|");
    for fault in Fault::ALL {
        println!(
            "| {} | {} |",
            fault.name(),
            injected.get(&fault).copied().unwrap_or(0)
        );
    }
    println!("| **total** | **{}** |", injected.values().sum::<u64>());
    println!();
    println!("| fault | faults | longest gap in any namespace that began during the fault, ms: median | max |");
    println!("|---|---:|---:|---:|");
    for (fault, mut worst) in by_fault {
        worst.sort();
        println!(
            "| {} | {} | {} | {} |",
            fault.name(),
            worst.len(),
            worst[worst.len() / 2].as_millis(),
            worst[worst.len() - 1].as_millis()
        );
    }
    println!();
    println!("| namespace | operations | longest gap without a success, ms | gap began at s | back after the faults, ms |");
    println!("|---|---:|---:|---:|---:|");
    for (n, count, (gap, from)) in &gaps {
        println!(
            "| nemesis{n} | {count} | {} | {:.1} | {} |",
            gap.as_millis(),
            timeline.secs(*from),
            recovered[*n].map_or("never".to_string(), |d| d.as_millis().to_string())
        );
    }
    println!();
    println!("| errors seen by clients (each retried) | count |");
    println!("|---|---:|");
    println!("| 308 followed | {} |", c.redirects.load(Ordering::Relaxed));
    println!(
        "| 503 (not leader, no quorum) | {} |",
        c.unavailable.load(Ordering::Relaxed)
    );
    println!(
        "| unreachable or timed out (2 s) | {} |",
        c.unreachable.load(Ordering::Relaxed)
    );
    for (what, count) in c.other.lock().iter() {
        println!("| {what} | {count} |");
    }
    println!(
        "| calls given up after 30 s | {} |",
        c.gave_up.load(Ordering::Relaxed)
    );
    println!();

    for incident in &incidents {
        println!("INCIDENT (liveness, not a safety violation): {incident}");
    }
    let vacuous = gaps.iter().any(|(_, count, _)| *count == 0);
    if vacuous {
        println!("FAILED: a namespace had no successful operation, so nothing was checked there");
    }
    if violations.is_empty() {
        println!("checker: no violation in {total} operations");
    } else {
        for (n, v) in &violations {
            println!(
                "VIOLATION in namespace nemesis{n} at {:.3} s: {v}\nfault timeline around it (30 s before, 5 s after):\n{}",
                timeline.secs(v.at),
                timeline.around(v.at, Duration::from_secs(30), Duration::from_secs(5))
            );
        }
        for (i, dir) in cluster.keep_dirs().iter().enumerate() {
            println!("node{i}'s data and logs kept in {}", dir.display());
        }
    }
    drop(cluster);
    violations.is_empty() && !vacuous && incidents.is_empty()
}
