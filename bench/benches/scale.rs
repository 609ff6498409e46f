//! Scale, simulated honestly on a small machine: a 3-node cluster whose nodes each get a CPU
//! quota, under a load of many namespaces, measured per cluster mode (issue 24).
//!
//!     cargo build --release --bin timelock
//!     cargo bench -p timelock-bench --bench scale
//!
//! Needs root and a writable cgroup v1 `cpu` controller (`/sys/fs/cgroup/cpu/`); without one it
//! says so loudly and exits without measuring. Each node runs in a cgroup of its own limited by
//! `cpu.cfs_quota_us` / `cpu.cfs_period_us` to `NODE_CPU` cores (default 0.25), so that three
//! nodes together use well under the machine's cores and the load generator and etcd (both
//! unlimited) are not what is measured. Per-node CPU comes from a `cpuacct` cgroup of the same
//! name (or `/proc/<pid>/stat` when that controller is not writable).
//!
//! For every mode in `MODES` (comma-separated; default `single-leader`) a cluster of 3 nodes is
//! started on one shared etcd (a key prefix per mode). A mode is `name` or
//! `name:KEY=VALUE+KEY=VALUE`, the `KEY`s being extra environment settings of its nodes (for
//! example `per-namespace:TIMELOCK__CLUSTER__LEADER_MODE=per-namespace`), so a new mode needs
//! no change here. Then:
//! 1. **throughput**: `ROUNDS` rounds (default 5); in each, every mode in turn (the order
//!    rotates per round) gets `NAMESPACES` namespaces (default 30) × `CLIENTS_PER_NS` clients
//!    (default 2) for `WINDOW_MS` (default 3000) after a warm-up. A client is one HTTP/1.1
//!    keep-alive connection fetching fresh timestamps of its one namespace, speaking as AtlasDB
//!    (`atlasdb-http-client/2.0`): it follows a 308 to the node named in `Location` and moves to
//!    the next node on a 503 or a broken connection. Every reply is checked: a number, strictly
//!    larger than the client's previous one. Reported per mode and round: aggregate timestamps/s,
//!    and per node its share of the timestamps issued and of all answers (from its `/metrics`),
//!    its CPU (cores used, share of the cluster's CPU) and how often its quota throttled it.
//! 2. **unaffected namespaces**: per mode, 1 client per namespace pausing `FAILOVER_PACE_MS`
//!    (default 2; 0: none) after each answer, so that no node runs into its quota (a throttled node
//!    stalls its clients for the rest of the period, which would read as a gap); `kill -9` the
//!    node that served the most namespaces and report, per namespace, the longest time without
//!    a successful answer over the `FAILOVER_WINDOW_MS` (default 8000) after the kill, split by
//!    whether the killed node was serving that namespace, and beside it the worst gap of any
//!    namespace in 2 s before the kill (the floor of this measure). With one leader for every
//!    namespace every namespace sees the failover gap.
//! 3. **hand-off on SIGTERM**: the same paced load; SIGTERM the node serving the most
//!    namespaces and report, per namespace it served, the time from the signal to the first
//!    answer from another node (median and worst): a planned move, where the node steps down and
//!    releases its leadership before it exits.
//!
//! Cgroups and processes are removed at exit, also on a panic (a failed check); cgroups left by
//! a run that was killed outright are removed by the next run.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::etcd::start_etcd;
use common::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CPU_ROOT: &str = "/sys/fs/cgroup/cpu";
const CPUACCT_ROOT: &str = "/sys/fs/cgroup/cpuacct";
/// Every cgroup this bench makes starts with this, followed by the bench's process id.
const GROUP_PREFIX: &str = "timelock-scale-";
const PERIOD_US: u64 = 100_000;

/// A setting from the environment; one that is set but is not a `T` in `range` is refused.
fn env_parse<T>(name: &str, default: T, range: std::ops::RangeInclusive<T>) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Debug,
{
    let value = match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| format!("{name}={text:?} is not a number"))?,
        Err(std::env::VarError::NotPresent) => default,
        Err(e) => return Err(format!("{name}: {e}")),
    };
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(format!("{name} must be in {range:?}, got {value:?}"))
    }
}

/// Everything the run is told, checked before anything is started.
struct Settings {
    modes: Vec<Mode>,
    node_cpu: f64,
    rounds: usize,
    namespaces: usize,
    per_ns: usize,
    window: Duration,
    warmup: Duration,
    failover_window: Duration,
    failover_pace: Duration,
}

impl Settings {
    fn from_env() -> Result<Settings, String> {
        let ms = |name, default| env_parse(name, default, 100..=600_000).map(Duration::from_millis);
        let s = Settings {
            modes: parse_modes(&std::env::var("MODES").unwrap_or_else(|_| "single-leader".into()))?,
            node_cpu: env_parse("NODE_CPU", 0.25, 0.01..=64.0)?,
            rounds: env_parse("ROUNDS", 5, 1..=1000)?,
            namespaces: env_parse("NAMESPACES", 30, 1..=1000)?,
            per_ns: env_parse("CLIENTS_PER_NS", 2, 1..=64)?,
            window: ms("WINDOW_MS", 3000)?,
            warmup: ms("WARMUP_MS", 500)?,
            failover_window: ms("FAILOVER_WINDOW_MS", 8000)?,
            failover_pace: Duration::from_millis(env_parse("FAILOVER_PACE_MS", 2, 0..=1000)?),
        };
        // One connection per client in this process: stay well inside its file limit.
        if s.namespaces * s.per_ns > 4096 {
            return Err(format!(
                "NAMESPACES x CLIENTS_PER_NS = {} clients; at most 4096",
                s.namespaces * s.per_ns
            ));
        }
        Ok(s)
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("scale bench: run with `cargo bench -p timelock-bench --bench scale`");
        return;
    }
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(why) => {
            eprintln!("scale bench: {why}");
            std::process::exit(2);
        }
    };
    if let Err(why) = cpu_controller_writable() {
        eprintln!();
        eprintln!(
            "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
        );
        eprintln!("!! scale bench SKIPPED: the cgroup v1 cpu controller is not writable here:");
        eprintln!("!!   {why}");
        eprintln!("!! It needs root and {CPU_ROOT}/ mounted read-write; nothing was measured.");
        eprintln!(
            "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
        );
        return;
    }
    if !Path::new(common::BIN).exists() {
        eprintln!(
            "scale bench: no server binary at {}; build it first: cargo build --release --bin timelock",
            common::BIN
        );
        std::process::exit(1);
    }
    remove_stale_groups();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        // On Ctrl-C or SIGTERM the run is dropped: its servers are killed, its groups removed.
        tokio::select! {
            () = run(settings) => {}
            _ = tokio::signal::ctrl_c() => eprintln!("scale bench: interrupted; cleaning up"),
            _ = term.recv() => eprintln!("scale bench: terminated; cleaning up"),
        }
    });
}

// ---------------------------------------------------------------------------------------------
// cgroups

/// Tries to make (and remove) a group with a quota: the only proof that the bench can limit a node.
fn cpu_controller_writable() -> Result<(), String> {
    let probe = Path::new(CPU_ROOT).join(format!("{GROUP_PREFIX}probe-{}", std::process::id()));
    std::fs::create_dir(&probe).map_err(|e| format!("mkdir {}: {e}", probe.display()))?;
    let result = std::fs::write(probe.join("cpu.cfs_quota_us"), "50000")
        .map_err(|e| format!("write {}/cpu.cfs_quota_us: {e}", probe.display()));
    let _ = std::fs::remove_dir(&probe);
    result
}

/// Groups of earlier runs whose process is gone (a run killed outright never ran its drops).
fn remove_stale_groups() {
    for root in [CPU_ROOT, CPUACCT_ROOT] {
        let Ok(entries) = std::fs::read_dir(root) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let Some(rest) = name.strip_prefix(GROUP_PREFIX) else {
                continue;
            };
            let owner: Option<u32> = rest.split('-').next().and_then(|p| p.parse().ok());
            let alive = owner.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
            if !alive {
                // Servers of a run killed outright: this bench started them, nothing else runs
                // in a group of this name.
                let procs = std::fs::read_to_string(entry.path().join("cgroup.procs"));
                for pid in procs.unwrap_or_default().lines() {
                    if let Ok(pid) = pid.trim().parse::<i32>() {
                        eprintln!("scale bench: killing {pid}, left in {name} by an earlier run");
                        unsafe {
                            libc::kill(pid, libc::SIGKILL);
                        }
                    }
                }
                for _ in 0..100 {
                    if std::fs::remove_dir(entry.path()).is_ok() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

/// One node's groups: `cpu` (the quota) and, when writable, `cpuacct` (its CPU time).
struct NodeGroup {
    cpu: PathBuf,
    acct: Option<PathBuf>,
}

impl NodeGroup {
    /// A group limited to `cores`, or unlimited (only accounted for, and removed at exit).
    fn create(name: &str, cores: Option<f64>) -> NodeGroup {
        let cpu = Path::new(CPU_ROOT).join(name);
        std::fs::create_dir(&cpu).unwrap_or_else(|e| panic!("mkdir {}: {e}", cpu.display()));
        if let Some(cores) = cores {
            std::fs::write(cpu.join("cpu.cfs_period_us"), PERIOD_US.to_string()).unwrap();
            let quota = ((cores * PERIOD_US as f64) as u64).max(1000);
            std::fs::write(cpu.join("cpu.cfs_quota_us"), quota.to_string()).unwrap();
        }
        let acct = Path::new(CPUACCT_ROOT).join(name);
        let acct = std::fs::create_dir(&acct).ok().map(|_| acct);
        NodeGroup { cpu, acct }
    }

    /// Moves a process, all its threads included, into the groups.
    fn add(&self, pid: u32) {
        std::fs::write(self.cpu.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", self.cpu.display()));
        if let Some(acct) = &self.acct {
            let _ = std::fs::write(acct.join("cgroup.procs"), pid.to_string());
        }
    }

    /// CPU time of the group in ns (of the process `pid` when there is no cpuacct group).
    fn cpu_ns(&self, pid: Option<u32>) -> u64 {
        if let Some(acct) = &self.acct {
            if let Some(ns) = std::fs::read_to_string(acct.join("cpuacct.usage"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                return ns;
            }
        }
        pid.map(process_cpu_ns).unwrap_or(0)
    }

    /// (`nr_periods`, `nr_throttled`) of the quota.
    fn throttling(&self) -> (u64, u64) {
        let text = std::fs::read_to_string(self.cpu.join("cpu.stat")).unwrap_or_default();
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
                .unwrap_or(0)
        };
        (field("nr_periods "), field("nr_throttled "))
    }
}

impl Drop for NodeGroup {
    fn drop(&mut self) {
        // The kernel lets a group go only once its last process is reaped; that can lag a kill.
        for dir in std::iter::once(&self.cpu).chain(self.acct.iter()) {
            for _ in 0..100 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if dir.exists() {
                eprintln!("scale bench: could not remove {}", dir.display());
            }
        }
    }
}

/// Idle time of the whole machine in ns (all cores), from `/proc/stat`.
fn machine_idle_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    // cpu  user nice system idle iowait ...
    let idle: u64 = stat
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(4))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    idle * 1_000_000_000 / hz
}

/// The child process of this one running `command` (etcd, started by the test harness).
fn child_named(command: &str) -> Option<u32> {
    let me = std::process::id();
    let tasks = std::fs::read_dir(format!("/proc/{me}/task")).ok()?;
    for task in tasks.flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for pid in children
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
        {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == command {
                return Some(pid);
            }
        }
    }
    None
}

/// utime + stime of a process, all threads, in ns.
fn process_cpu_ns(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name (which may hold spaces) in parentheses.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|s| s.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ticks * 1_000_000_000 / hz
}

// ---------------------------------------------------------------------------------------------
// the clusters

struct Mode {
    name: String,
    settings: Vec<(String, String)>,
}

fn parse_modes(spec: &str) -> Result<Vec<Mode>, String> {
    let mut modes: Vec<Mode> = Vec::new();
    for entry in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, settings) = entry.split_once(':').unwrap_or((entry, ""));
        // The name goes into node ids and the report.
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "MODES: mode name {name:?} must be letters, digits, '-' or '_'"
            ));
        }
        if modes.iter().any(|m| m.name == name) {
            return Err(format!("MODES: {name:?} is named twice"));
        }
        let mut pairs = Vec::new();
        for kv in settings.split('+').filter(|s| !s.is_empty()) {
            match kv.split_once('=') {
                Some((k, v)) if !k.is_empty() => pairs.push((k.to_string(), v.to_string())),
                _ => return Err(format!("MODES: {kv:?} (in {name}) is not KEY=VALUE")),
            }
        }
        modes.push(Mode {
            name: name.to_string(),
            settings: pairs,
        });
    }
    if modes.is_empty() {
        return Err("MODES names no mode".into());
    }
    Ok(modes)
}

/// A node: its server, its groups. Field order matters: the server is killed before its
/// groups are removed.
struct Node {
    server: TestServer,
    group: NodeGroup,
    _dir: tempfile::TempDir,
}

impl Node {
    fn addr(&self) -> SocketAddr {
        format!("127.0.0.1:{}", self.server.port).parse().unwrap()
    }

    fn restart(&mut self) {
        self.server.restart();
        self.group.add(self.server.pid().expect("running"));
    }
}

/// etcd and its group, in the order they must go.
struct EtcdInGroup {
    etcd: common::etcd::Etcd,
    group: NodeGroup,
    pid: u32,
}

struct Cluster {
    mode: Mode,
    nodes: Vec<Node>,
}

impl Cluster {
    fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(Node::addr).collect()
    }
}

/// What a node's counters and CPU were at one instant.
#[derive(Clone, Copy, Default)]
struct Sample {
    timestamps: f64,
    answers: f64,
    cpu_ns: u64,
    periods: u64,
    throttled: u64,
}

async fn sample(node: &Node) -> Sample {
    let text = reqwest::Client::new()
        .get(node.server.url("/metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("/metrics")
        .text()
        .await
        .expect("/metrics body");
    let mut s = Sample::default();
    for line in text.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        if series == "timelock_timestamps_issued_total" {
            s.timestamps += value;
        } else if series.starts_with("timelock_http_requests_total{")
            && !series.contains("/metrics")
        {
            s.answers += value;
        }
    }
    s.cpu_ns = node.group.cpu_ns(node.server.pid());
    (s.periods, s.throttled) = node.group.throttling();
    s
}

// ---------------------------------------------------------------------------------------------
// the load

/// A namespace's record across its clients: when it last got an answer, from which node, and
/// its longest time without one since `reset_gap`.
struct NamespaceState {
    name: String,
    inner: Mutex<NsInner>,
}

struct NsInner {
    last_success: Option<Instant>,
    max_gap: Duration,
    served_by: Option<SocketAddr>,
    /// A hand-off being watched: the node leaving, since when, and the first answer from
    /// another node after that.
    handoff: Option<(SocketAddr, Instant, Option<Instant>)>,
}

impl NamespaceState {
    fn success(&self, by: SocketAddr) {
        let mut inner = self.inner.lock().unwrap();
        let now = Instant::now();
        if let Some(last) = inner.last_success {
            inner.max_gap = inner.max_gap.max(now.saturating_duration_since(last));
        }
        inner.last_success = Some(now);
        inner.served_by = Some(by);
        if let Some((leaving, since, first @ None)) = &mut inner.handoff {
            if by != *leaving && now >= *since {
                *first = Some(now);
            }
        }
    }

    /// From now on, notes the first answer from a node other than `leaving`.
    fn watch_handoff(&self, leaving: SocketAddr, since: Instant) {
        self.inner.lock().unwrap().handoff = Some((leaving, since, None));
    }

    /// When another node first answered after the watched hand-off began, if it has.
    fn handed_off_at(&self) -> Option<Instant> {
        self.inner.lock().unwrap().handoff.and_then(|(_, _, at)| at)
    }

    /// Starts a new measurement; a gap under way counts from its start.
    fn reset_gap(&self) {
        self.inner.lock().unwrap().max_gap = Duration::ZERO;
    }

    /// The longest gap, counting one still open at `end`.
    fn gap_until(&self, end: Instant) -> Duration {
        let inner = self.inner.lock().unwrap();
        let open = inner
            .last_success
            .map_or(Duration::MAX, |last| end.saturating_duration_since(last));
        inner.max_gap.max(open)
    }
}

struct Load {
    namespaces: Vec<Arc<NamespaceState>>,
    successes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// `pace`: a pause after each answer (none: closed loop, as fast as the cluster answers).
    fn start(
        nodes: &[SocketAddr],
        namespaces: usize,
        per_ns: usize,
        pace: Option<Duration>,
    ) -> Load {
        let nodes = Arc::new(nodes.to_vec());
        let successes = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let namespaces: Vec<_> = (0..namespaces)
            .map(|i| {
                Arc::new(NamespaceState {
                    name: format!("scale{i:03}"),
                    inner: Mutex::new(NsInner {
                        last_success: None,
                        max_gap: Duration::ZERO,
                        served_by: None,
                        handoff: None,
                    }),
                })
            })
            .collect();
        let mut tasks = Vec::new();
        for (i, ns) in namespaces.iter().enumerate() {
            for c in 0..per_ns {
                let (nodes, ns, successes, stop) =
                    (nodes.clone(), ns.clone(), successes.clone(), stop.clone());
                // Clients start spread over the nodes; a 308 moves them.
                let first = (i + c) % nodes.len();
                tasks.push(tokio::spawn(client(
                    nodes, first, ns, successes, stop, pace,
                )));
            }
        }
        Load {
            namespaces,
            successes,
            stop,
            tasks,
        }
    }

    /// Stops the clients; panics if any of them found a wrong answer.
    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            if let Err(e) = t.await {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    }
}

enum Reply {
    Timestamp(i64),
    Redirect(SocketAddr),
    Unavailable,
}

async fn client(
    nodes: Arc<Vec<SocketAddr>>,
    first: usize,
    ns: Arc<NamespaceState>,
    successes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    pace: Option<Duration>,
) {
    let request = format!(
        "POST /{}/timestamp/fresh-timestamp HTTP/1.1\r\nHost: bench\r\n\
         User-Agent: timelock-bench/0 atlasdb-http-client/2.0\r\nContent-Length: 0\r\n\r\n",
        ns.name
    )
    .into_bytes();
    let mut target = nodes[first];
    let mut stream: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(512);
    let mut last = i64::MIN;
    while !stop.load(Ordering::Relaxed) {
        if stream.is_none() {
            match tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(target)).await
            {
                Ok(Ok(s)) => {
                    s.set_nodelay(true).unwrap();
                    stream = Some(s);
                }
                _ => {
                    target = next_node(&nodes, target);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            }
        }
        let s = stream.as_mut().unwrap();
        let reply =
            tokio::time::timeout(Duration::from_secs(1), exchange(s, &request, &mut buf)).await;
        match reply {
            Ok(Ok(Reply::Timestamp(ts))) => {
                assert!(
                    ts > last,
                    "namespace {}: timestamps not increasing for a client: {last} then {ts} (from {target})",
                    ns.name
                );
                last = ts;
                successes.fetch_add(1, Ordering::Relaxed);
                ns.success(target);
                if let Some(pace) = pace {
                    tokio::time::sleep(pace).await;
                }
            }
            Ok(Ok(Reply::Redirect(to))) => {
                target = to;
                stream = None;
            }
            Ok(Ok(Reply::Unavailable)) => {
                // A follower that knows no leader, or a leader stepping down: try the next node.
                target = next_node(&nodes, target);
                stream = None;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok(Err(_)) | Err(_) => {
                target = next_node(&nodes, target);
                stream = None;
            }
        }
    }
}

fn next_node(nodes: &[SocketAddr], current: SocketAddr) -> SocketAddr {
    let i = nodes.iter().position(|n| *n == current).unwrap_or(0);
    nodes[(i + 1) % nodes.len()]
}

/// One request on a keep-alive connection. A 200 must carry a bare number; a 308 must name a
/// node; a 503 is a follower's "try another node"; anything else is a failed check.
async fn exchange(
    stream: &mut TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> std::io::Result<Reply> {
    stream.write_all(request).await?;
    buf.clear();
    loop {
        let mut chunk = [0u8; 512];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = std::str::from_utf8(&buf[..end]).expect("an ASCII head");
        let header = |name: &str| {
            head.lines().skip(1).find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
        };
        let length: usize = header("content-length")
            .map(|v| v.parse().expect("a content-length"))
            .unwrap_or(0);
        let body_start = end + 4;
        if buf.len() < body_start + length {
            continue;
        }
        let status = head.get(9..12).unwrap_or("");
        let body = std::str::from_utf8(&buf[body_start..body_start + length]).unwrap_or("");
        return Ok(match status {
            "200" => Reply::Timestamp(
                body.parse()
                    .unwrap_or_else(|_| panic!("200 without a number: {body:?}")),
            ),
            "308" => {
                let location = header("location").expect("308 carries Location");
                let to = location
                    .strip_prefix("http://")
                    .and_then(|a| a.trim_end_matches('/').parse().ok())
                    .unwrap_or_else(|| panic!("308 to an unexpected place: {location:?}"));
                Reply::Redirect(to)
            }
            "503" => Reply::Unavailable,
            _ => panic!("unexpected reply: {head}"),
        });
    }
}

/// Waits until every namespace of `load` has had an answer.
async fn wait_until_served(load: &Load, limit: Duration) {
    let deadline = Instant::now() + limit;
    while load
        .namespaces
        .iter()
        .any(|ns| ns.inner.lock().unwrap().last_success.is_none())
    {
        assert!(
            Instant::now() < deadline,
            "not every namespace got an answer within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// the run

struct RoundResult {
    rate: f64,
    /// Cores used by this bench process (the load generator) and left idle on the machine.
    bench_cores: f64,
    etcd_cores: f64,
    idle_cores: f64,
    nodes: Vec<NodeShare>,
}

/// One node's part of a round.
struct NodeShare {
    timestamps: f64,
    answers: f64,
    cores: f64,
    cpu: f64,
    /// Fraction of the quota's periods in which the node was throttled.
    throttled: f64,
}

async fn measure_round(
    cluster: &Cluster,
    etcd: &EtcdInGroup,
    namespaces: usize,
    per_ns: usize,
    warmup: Duration,
    window: Duration,
) -> RoundResult {
    let load = Load::start(&cluster.addrs(), namespaces, per_ns, None);
    wait_until_served(&load, Duration::from_secs(60)).await;
    tokio::time::sleep(warmup).await;
    let mut before = Vec::new();
    for n in &cluster.nodes {
        before.push(sample(n).await);
    }
    let count_before = load.successes.load(Ordering::Relaxed);
    let (bench_before, idle_before) = (process_cpu_ns(std::process::id()), machine_idle_ns());
    let etcd_before = etcd.group.cpu_ns(Some(etcd.pid));
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let count_after = load.successes.load(Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let (bench_after, idle_after) = (process_cpu_ns(std::process::id()), machine_idle_ns());
    let etcd_after = etcd.group.cpu_ns(Some(etcd.pid));
    let mut after = Vec::new();
    for n in &cluster.nodes {
        after.push(sample(n).await);
    }
    load.stop().await;

    let deltas: Vec<Sample> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| Sample {
            timestamps: a.timestamps - b.timestamps,
            answers: a.answers - b.answers,
            cpu_ns: a.cpu_ns.saturating_sub(b.cpu_ns),
            periods: a.periods.saturating_sub(b.periods),
            throttled: a.throttled.saturating_sub(b.throttled),
        })
        .collect();
    let total_ts: f64 = deltas.iter().map(|d| d.timestamps).sum::<f64>().max(1.0);
    let total_answers: f64 = deltas.iter().map(|d| d.answers).sum::<f64>().max(1.0);
    let total_cpu: f64 = (deltas.iter().map(|d| d.cpu_ns).sum::<u64>() as f64).max(1.0);
    RoundResult {
        rate: (count_after - count_before) as f64 / elapsed,
        bench_cores: bench_after.saturating_sub(bench_before) as f64 / 1e9 / elapsed,
        etcd_cores: etcd_after.saturating_sub(etcd_before) as f64 / 1e9 / elapsed,
        idle_cores: idle_after.saturating_sub(idle_before) as f64 / 1e9 / elapsed,
        nodes: deltas
            .iter()
            .map(|d| NodeShare {
                timestamps: d.timestamps / total_ts,
                answers: d.answers / total_answers,
                cores: d.cpu_ns as f64 / 1e9 / elapsed,
                cpu: d.cpu_ns as f64 / total_cpu,
                throttled: d.throttled as f64 / (d.periods.max(1)) as f64,
            })
            .collect(),
    }
}

struct FailoverResult {
    victim: usize,
    /// Gaps in ms of the namespaces the killed node served, and of the others.
    led: Vec<f64>,
    /// The worst gap of any namespace in 2 s before the kill.
    quiet_worst: f64,
    others: Vec<f64>,
    unrecovered: usize,
    /// SIGTERM of the node serving the most namespaces: per namespace it served, ms from the
    /// signal to the first answer from another node (none if not within the window).
    handoffs: Vec<f64>,
    handoff_missing: usize,
}

async fn measure_failover(
    cluster: &mut Cluster,
    namespaces: usize,
    window: Duration,
    pace: Duration,
) -> FailoverResult {
    let addrs = cluster.addrs();
    // Paced, so that no node runs into its quota: a throttled node stalls every client for the
    // rest of the quota period, and that would be counted as a gap with or without a kill.
    let load = Load::start(&addrs, namespaces, 1, (!pace.is_zero()).then_some(pace));
    wait_until_served(&load, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The same measure with nothing killed: what a gap of "no effect" looks like here.
    for ns in &load.namespaces {
        ns.reset_gap();
    }
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let quiet_end = Instant::now();
    let quiet: Vec<Duration> = load
        .namespaces
        .iter()
        .map(|ns| ns.gap_until(quiet_end))
        .collect();
    // Which node serves each namespace right now; the victim is the one serving the most.
    let served_by: Vec<Option<SocketAddr>> = load
        .namespaces
        .iter()
        .map(|ns| ns.inner.lock().unwrap().served_by)
        .collect();
    let (victim, victim_addr) = busiest(&addrs, &served_by);
    for ns in &load.namespaces {
        ns.reset_gap();
    }
    // SIGKILL without waiting for the exit: a node held at its quota can take most of a quota
    // period to die, and reaping it here would stall this runtime's clients meanwhile.
    let pid = cluster.nodes[victim].server.pid().expect("running");
    // SAFETY: a plain signal to a child process of this bench.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    let killed = Instant::now();
    tokio::time::sleep(window).await;
    let end = Instant::now();
    let gaps: Vec<Duration> = load.namespaces.iter().map(|ns| ns.gap_until(end)).collect();
    load.stop().await;
    let mut result = FailoverResult {
        victim,
        led: Vec::new(),
        quiet_worst: quiet.iter().max().unwrap().as_secs_f64() * 1000.0,
        others: Vec::new(),
        unrecovered: 0,
        handoffs: Vec::new(),
        handoff_missing: 0,
    };
    for (gap, by) in gaps.iter().zip(&served_by) {
        if *gap >= end - killed {
            result.unrecovered += 1;
        }
        let ms = gap.as_secs_f64() * 1000.0;
        if *by == Some(victim_addr) {
            result.led.push(ms);
        } else {
            result.others.push(ms);
        }
    }
    cluster.nodes[victim].server.kill9(); // reaps it
    cluster.nodes[victim].restart();
    (result.handoffs, result.handoff_missing) =
        measure_handoff(cluster, namespaces, window, pace).await;
    result
}

/// The node serving the most namespaces, by index and address.
fn busiest(addrs: &[SocketAddr], served_by: &[Option<SocketAddr>]) -> (usize, SocketAddr) {
    let mut counts: HashMap<SocketAddr, usize> = HashMap::new();
    for a in served_by.iter().flatten() {
        *counts.entry(*a).or_default() += 1;
    }
    let addr = *counts.iter().max_by_key(|(_, c)| **c).expect("served").0;
    (addrs.iter().position(|a| *a == addr).unwrap(), addr)
}

/// A planned move: SIGTERM the node serving the most namespaces under a paced load, and time
/// for each namespace it served the first answer from another node, from the signal (so the
/// step-down, the release and the new leader's takeover are all inside). Returns those times
/// in ms and how many namespaces saw none within `window`.
async fn measure_handoff(
    cluster: &mut Cluster,
    namespaces: usize,
    window: Duration,
    pace: Duration,
) -> (Vec<f64>, usize) {
    let addrs = cluster.addrs();
    let load = Load::start(&addrs, namespaces, 1, (!pace.is_zero()).then_some(pace));
    wait_until_served(&load, Duration::from_secs(60)).await;
    // Let clients settle on their namespaces' leaders (the restarted node takes shards back).
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let served_by: Vec<Option<SocketAddr>> = load
        .namespaces
        .iter()
        .map(|ns| ns.inner.lock().unwrap().served_by)
        .collect();
    let (victim, victim_addr) = busiest(&addrs, &served_by);
    let pid = cluster.nodes[victim].server.pid().expect("running");
    let signalled = Instant::now();
    for ns in &load.namespaces {
        ns.watch_handoff(victim_addr, signalled);
    }
    // SAFETY: a plain signal to a child process of this bench.
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    tokio::time::sleep(window).await;
    let mut times = Vec::new();
    let mut missing = 0;
    for (ns, by) in load.namespaces.iter().zip(&served_by) {
        if *by != Some(victim_addr) {
            continue;
        }
        match ns.handed_off_at() {
            Some(at) => times.push(at.saturating_duration_since(signalled).as_secs_f64() * 1000.0),
            None => missing += 1,
        }
    }
    load.stop().await;
    cluster.nodes[victim].server.terminate();
    cluster.nodes[victim].restart();
    (times, missing)
}

async fn run(settings: Settings) {
    let Settings {
        modes,
        node_cpu,
        rounds,
        namespaces,
        per_ns,
        window,
        warmup,
        failover_window,
        failover_pace,
    } = settings;
    let me = std::process::id();

    let etcd = start_etcd().await;
    // etcd runs unlimited; its group measures its CPU and lets a later run find it if this one
    // is killed outright.
    let etcd_pid = child_named("etcd").expect("etcd is a child of this process");
    let etcd_group = NodeGroup::create(&format!("{GROUP_PREFIX}{me}-etcd"), None);
    etcd_group.add(etcd_pid);
    let etcd = EtcdInGroup {
        etcd,
        group: etcd_group,
        pid: etcd_pid,
    };
    let mut clusters: Vec<Cluster> = Vec::new();
    for (m, mode) in modes.into_iter().enumerate() {
        let mut nodes = Vec::new();
        for i in 0..3 {
            let group =
                NodeGroup::create(&format!("{GROUP_PREFIX}{me}-m{m}-node{i}"), Some(node_cpu));
            let dir = tempfile::tempdir().unwrap();
            let id = format!("{}-node{i}", mode.name);
            let prefix = format!("/scale-{m}/");
            let mut env: Vec<(&str, &str)> = vec![
                ("TIMELOCK__CLUSTER__MODE", "etcd"),
                ("TIMELOCK__CLUSTER__ETCD_ENDPOINTS", &etcd.etcd.endpoint),
                ("TIMELOCK__CLUSTER__ETCD_PREFIX", &prefix),
                ("TIMELOCK__CLUSTER__NODE_ID", &id),
                ("TIMELOCK__LOG__LEVEL", "warn"),
            ];
            env.extend(mode.settings.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            let server = TestServer::start(&dir.path().join("data"), &env);
            group.add(server.pid().expect("running"));
            nodes.push(Node {
                server,
                group,
                _dir: dir,
            });
        }
        clusters.push(Cluster { mode, nodes });
    }

    let mut results: Vec<Vec<RoundResult>> = clusters.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for k in 0..clusters.len() {
            let m = (k + round) % clusters.len();
            let r = measure_round(&clusters[m], &etcd, namespaces, per_ns, warmup, window).await;
            eprintln!(
                "round {round} {}: {:.0} timestamps/s",
                clusters[m].mode.name, r.rate
            );
            results[m].push(r);
        }
    }
    println!();
    println!(
        "timelock scale bench: 3 nodes x {node_cpu} core (cgroup cpu quota), {namespaces} namespaces x {per_ns} keep-alive clients, {} ms windows x {rounds} rounds",
        window.as_millis()
    );
    println!();
    println!("| mode | median timestamps/s | min | max | per round | load generator cores | etcd cores | machine idle cores |");
    println!("|---|---:|---:|---:|---|---:|---:|---:|");
    let mut medians = Vec::new();
    for (cluster, rs) in clusters.iter().zip(&results) {
        let mut rates: Vec<f64> = rs.iter().map(|r| r.rate).collect();
        let per_round = rates
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", ");
        rates.sort_by(f64::total_cmp);
        medians.push(median(&rates));
        let n = rs.len().max(1) as f64;
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {per_round} | {:.2} | {:.2} | {:.2} |",
            cluster.mode.name,
            median(&rates),
            rates[0],
            rates[rates.len() - 1],
            rs.iter().map(|r| r.bench_cores).sum::<f64>() / n,
            rs.iter().map(|r| r.etcd_cores).sum::<f64>() / n,
            rs.iter().map(|r| r.idle_cores).sum::<f64>() / n,
        );
    }
    for (m, cluster) in clusters.iter().enumerate().skip(1) {
        let ratios: Vec<String> = results[m]
            .iter()
            .zip(&results[0])
            .map(|(a, b)| format!("{:.2}", a.rate / b.rate))
            .collect();
        println!(
            "{} / {} per round: {} (medians: {:.2})",
            cluster.mode.name,
            clusters[0].mode.name,
            ratios.join(", "),
            medians[m] / medians[0]
        );
    }
    println!();
    println!("Per node, mean over the rounds (shares of the cluster's total):");
    println!();
    println!("| mode | node | timestamps | answers (incl. 308/503) | CPU cores | CPU share | periods throttled |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    let mut not_the_limit = Vec::new();
    for (cluster, rs) in clusters.iter().zip(&results) {
        for i in 0..cluster.nodes.len() {
            let mean = |f: &dyn Fn(&NodeShare) -> f64| {
                rs.iter().map(|r| f(&r.nodes[i])).sum::<f64>() / rs.len().max(1) as f64
            };
            println!(
                "| {} | node{i} | {:.1}% | {:.1}% | {:.3} | {:.1}% | {:.0}% |",
                cluster.mode.name,
                mean(&|n| n.timestamps) * 100.0,
                mean(&|n| n.answers) * 100.0,
                mean(&|n| n.cores),
                mean(&|n| n.cpu) * 100.0,
                mean(&|n| n.throttled) * 100.0,
            );
            // A node that serves but is not held at its quota was limited by something else
            // (the load generator, etcd, other work on the machine): the mode's rate then
            // understates what its nodes could do.
            if mean(&|n| n.timestamps) > 0.05 && mean(&|n| n.throttled) < 0.9 {
                not_the_limit.push(format!(
                    "{} node{i} (throttled in {:.0}% of periods)",
                    cluster.mode.name,
                    mean(&|n| n.throttled) * 100.0
                ));
            }
        }
    }
    if !not_the_limit.is_empty() {
        println!();
        println!(
            "WARNING: the quota was not what limited {}; something else was (see the machine idle and load generator columns). Ratios between modes understate; try a smaller NODE_CPU.",
            not_the_limit.join(", ")
        );
    }
    // Throughput first: a failover that fails its checks leaves these printed.
    let mut failovers = Vec::new();
    for cluster in clusters.iter_mut() {
        failovers.push(measure_failover(cluster, namespaces, failover_window, failover_pace).await);
    }

    println!();
    println!(
        "Unaffected namespaces: `kill -9` of the node serving the most namespaces under load (1 client per namespace, a {} ms pause after each answer); longest time per namespace without an answer in the {} ms after the kill, and the worst of any namespace in 2 s before it:",
        failover_pace.as_millis(),
        failover_window.as_millis()
    );
    println!();
    println!("| mode | killed | namespaces it served: n, median ms, worst ms | other namespaces: n, median ms, worst ms | not back by the end | worst before the kill, ms |");
    println!("|---|---|---|---|---:|---:|");
    for (cluster, f) in clusters.iter().zip(&mut failovers) {
        let summary = |v: &mut Vec<f64>| {
            if v.is_empty() {
                return "0, -, -".to_string();
            }
            v.sort_by(f64::total_cmp);
            format!("{}, {:.0}, {:.0}", v.len(), median(v), v[v.len() - 1])
        };
        println!(
            "| {} | node{} | {} | {} | {} | {:.0} |",
            cluster.mode.name,
            f.victim,
            summary(&mut f.led),
            summary(&mut f.others),
            f.unrecovered,
            f.quiet_worst
        );
    }
    println!();
    println!(
        "Hand-off on SIGTERM of the node serving the most namespaces (same paced load): per namespace it served, ms from the signal to the first answer from another node:"
    );
    println!();
    println!("| mode | namespaces moved | median ms | worst ms | not moved within the window |");
    println!("|---|---:|---:|---:|---:|");
    for (cluster, f) in clusters.iter().zip(&mut failovers) {
        f.handoffs.sort_by(f64::total_cmp);
        let (med, worst) = match f.handoffs.last() {
            Some(w) => (format!("{:.0}", median(&f.handoffs)), format!("{w:.0}")),
            None => ("-".into(), "-".into()),
        };
        println!(
            "| {} | {} | {med} | {worst} | {} |",
            cluster.mode.name,
            f.handoffs.len(),
            f.handoff_missing
        );
    }
    drop(clusters);
    drop(etcd);
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}
