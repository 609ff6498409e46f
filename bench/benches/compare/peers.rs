//! The peers: what a user might run instead of timelock to hand out increasing numbers, each
//! started on loopback with a fresh data dir on a real disk and driven one operation at a time
//! over its own client connection, exactly as the harness drives timelock.
//!
//! | peer             | operation                          | value returned                    |
//! |------------------|------------------------------------|-----------------------------------|
//! | etcd             | `Put ts ""`                        | the response header's revision    |
//! | redis-always     | `INCR ts`, AOF `appendfsync always`| the integer reply                 |
//! | redis-everysec   | `INCR ts`, AOF `appendfsync everysec` | the integer reply              |
//! | postgres         | prepared `SELECT nextval('ts')`    | the sequence value                |
//! | tsoracle         | gRPC `TsoService/GetTs{count: 1}`  | `physical_ms << 18 \| logical`    |
//!
//! Servers come from Debian packages (`etcd-server`, `redis-server`, `postgresql`), installed
//! with `apt-get` when missing. tsoracle is not packaged: `start(Tsoracle)` builds its standalone
//! CLI (crates.io `tsoracle`, pinned, file driver only) once with `cargo install` into
//! `<target>/tmp/peer-tools/` and reuses the binary afterwards, so the main build never depends
//! on it. Every server is killed, and its data dir removed, when its [`PeerProcess`] drops.

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// tsoracle's standalone CLI, pinned: its gRPC API (`tsoracle.v1.TsoService`) is spoken below.
const TSORACLE_VERSION: &str = "2.3.3";
/// PostgreSQL's server binaries as Debian bookworm's `postgresql-15` installs them.
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A running peer server (killed, and its temp dir removed, on drop).
pub struct PeerProcess {
    /// e.g. "redis INCR (appendfsync always)".
    pub name: String,
    /// One line: what is synced when.
    pub durability: String,
    /// Server process ids at start, for CPU and RSS accounting. PostgreSQL forks one backend
    /// process per connection: call [`PeerProcess::pids_now`] after connecting to count them.
    pub pids: Vec<u32>,
    kind: PeerKind,
    children: Vec<Child>,
    pub addr: SocketAddr,
    dir: Option<tempfile::TempDir>,
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        for child in &mut self.children {
            if self.kind == PeerKind::Postgres {
                // SIGQUIT: PostgreSQL's immediate shutdown, which takes the backends with it
                // (SIGKILL on the postmaster alone would orphan them for a moment).
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGQUIT) };
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = child.try_wait() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

impl PeerProcess {
    /// The server's processes right now: the start pids and all their descendants (for
    /// PostgreSQL, one backend per open connection).
    pub fn pids_now(&self) -> Vec<u32> {
        let mut all: Vec<u32> = self.children.iter().map(Child::id).collect();
        let parents = parent_map();
        let mut i = 0;
        while i < all.len() {
            let p = all[i];
            for (&pid, &ppid) in &parents {
                if ppid == p && !all.contains(&pid) {
                    all.push(pid);
                }
            }
            i += 1;
        }
        all
    }
}

/// pid -> parent pid for every process in /proc.
fn parent_map() -> std::collections::HashMap<u32, u32> {
    let mut map = std::collections::HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return map;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            if let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) {
                if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
                    map.insert(pid, ppid);
                }
            }
        }
    }
    map
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerKind {
    Etcd,
    RedisAlways,
    RedisEverysec,
    Postgres,
    Tsoracle,
}

impl PeerKind {
    pub const ALL: [PeerKind; 5] = [
        PeerKind::Etcd,
        PeerKind::RedisAlways,
        PeerKind::RedisEverysec,
        PeerKind::Postgres,
        PeerKind::Tsoracle,
    ];

    /// Short id.
    pub fn label(self) -> &'static str {
        match self {
            PeerKind::Etcd => "etcd",
            PeerKind::RedisAlways => "redis-always",
            PeerKind::RedisEverysec => "redis-everysec",
            PeerKind::Postgres => "postgres",
            PeerKind::Tsoracle => "tsoracle",
        }
    }
}

/// Installs what is missing, starts the server on loopback on free ports with a fresh data dir
/// on a real disk, and waits until it answers. `Err(reason)` when it cannot.
pub async fn start(kind: PeerKind) -> anyhow::Result<PeerProcess> {
    let r = match kind {
        PeerKind::Etcd => start_etcd().await,
        PeerKind::RedisAlways => start_redis(true).await,
        PeerKind::RedisEverysec => start_redis(false).await,
        PeerKind::Postgres => start_postgres().await,
        PeerKind::Tsoracle => start_tsoracle().await,
    };
    r.with_context(|| kind.label())
}

/// One client connection (its own TCP connection / gRPC channel), used by one load task.
#[async_trait::async_trait]
pub trait PeerConn: Send {
    /// One operation; returns the counter value the peer handed out.
    async fn next(&mut self) -> anyhow::Result<i64>;
}

pub async fn connect(peer: &PeerProcess) -> anyhow::Result<Box<dyn PeerConn>> {
    Ok(match peer.kind {
        PeerKind::Etcd => Box::new(EtcdConn::connect(peer.addr).await?),
        PeerKind::RedisAlways | PeerKind::RedisEverysec => {
            Box::new(RedisConn::connect(peer.addr).await?)
        }
        PeerKind::Postgres => Box::new(PgConn::connect(peer.addr).await?),
        PeerKind::Tsoracle => Box::new(TsoConn::connect(peer.addr).await?),
    })
}

// ---------------------------------------------------------------------------------------------
// Shared plumbing: ports, data dirs, packages, waiting.

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// Where data dirs go: the bench's `CARGO_TARGET_TMPDIR` (under the target dir, so a real disk),
/// else the system temp dir.
fn scratch_root() -> PathBuf {
    option_env!("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

/// True when `dir` is on tmpfs/ramfs (fsync would be free there, which would flatter a peer).
fn on_tmpfs(dir: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return false;
    }
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    matches!(st.f_type as i64, TMPFS_MAGIC | RAMFS_MAGIC)
}

/// Every ancestor of `dir` can be traversed by other users (needed when the server runs as the
/// `postgres` user).
fn world_traversable(dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    dir.ancestors().all(|a| {
        a.as_os_str().is_empty()
            || std::fs::metadata(a).is_ok_and(|m| m.permissions().mode() & 0o001 != 0)
    })
}

/// A fresh data dir on a real disk; `other_users` when a non-root server user must reach it.
fn data_dir(kind: PeerKind, other_users: bool) -> anyhow::Result<tempfile::TempDir> {
    let mut candidates = vec![
        scratch_root(),
        std::env::temp_dir(),
        PathBuf::from("/var/tmp"),
    ];
    candidates.dedup();
    let mut why = Vec::new();
    for root in candidates {
        if std::fs::create_dir_all(&root).is_err() {
            why.push(format!("{}: cannot create", root.display()));
            continue;
        }
        if on_tmpfs(&root) {
            why.push(format!("{}: tmpfs", root.display()));
            continue;
        }
        if other_users && !world_traversable(&root) {
            why.push(format!(
                "{}: not traversable by other users",
                root.display()
            ));
            continue;
        }
        return tempfile::Builder::new()
            .prefix(&format!("peer-{}-", kind.label()))
            .tempdir_in(&root)
            .with_context(|| format!("temp dir in {}", root.display()));
    }
    bail!("no usable data dir on a real disk ({})", why.join("; "))
}

/// Serializes package installs (apt holds a lock).
static INSTALL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Installs the Debian `package` unless `binary` exists.
async fn ensure_package(binary: &str, package: &str) -> anyhow::Result<()> {
    let _guard = INSTALL.lock().await;
    if Path::new(binary).exists() {
        return Ok(());
    }
    eprintln!("peers: {binary} missing; installing Debian package {package}");
    let apt = |args: &[&str]| {
        let mut cmd = if is_root() {
            tokio::process::Command::new("apt-get")
        } else {
            let mut c = tokio::process::Command::new("sudo");
            c.arg("-n").arg("apt-get");
            c
        };
        cmd.args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    };
    let mut out = apt(&["install", "-y", "-q", package]).output().await?;
    if !out.status.success() {
        // A stale package index is the usual cause: refresh once and retry.
        let _ = apt(&["update", "-q"]).output().await;
        out = apt(&["install", "-y", "-q", package]).output().await?;
    }
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!(
            "apt-get install {package} failed: {}",
            err.lines().last().unwrap_or("").trim()
        );
    }
    if !Path::new(binary).exists() {
        bail!("installed {package} but {binary} is still missing");
    }
    Ok(())
}

/// Spawns a server with stdout/stderr to `log` in its data dir.
fn spawn(mut cmd: Command, log: &Path) -> anyhow::Result<Child> {
    let out = std::fs::File::create(log)?;
    let err = out.try_clone()?;
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("spawn {:?}", cmd.get_program()))
}

/// The last lines of a server log, for error messages.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" | ")
}

/// Polls `probe` until it succeeds, the child exits, or `limit` passes.
async fn wait_ready<F, Fut>(
    child: &mut Child,
    log: &Path,
    limit: Duration,
    mut probe: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let last = match tokio::time::timeout(Duration::from_secs(2), probe()).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "probe timed out".to_string(),
        };
        if let Some(status) = child.try_wait()? {
            bail!("server exited ({status}) during start: {}", log_tail(log));
        }
        if Instant::now() >= deadline {
            bail!(
                "not answering after {limit:?} (last error: {last}); log: {}",
                log_tail(log)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// etcd: a single member; the value is the cluster revision a put creates.

async fn start_etcd() -> anyhow::Result<PeerProcess> {
    ensure_package("/usr/bin/etcd", "etcd-server").await?;
    let dir = data_dir(PeerKind::Etcd, false)?;
    let (client, peer) = (free_port()?, free_port()?);
    let endpoint = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let mut cmd = Command::new("/usr/bin/etcd");
    cmd.args(["--name", "peer", "--data-dir"])
        .arg(dir.path().join("etcd"))
        .args(["--listen-client-urls", &endpoint])
        .args(["--advertise-client-urls", &endpoint])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("peer={peer_url}")]);
    let log = dir.path().join("etcd.log");
    let mut child = spawn(cmd, &log)?;
    let ready = wait_ready(&mut child, &log, Duration::from_secs(30), || async {
        let mut c = etcd_client::Client::connect([endpoint.as_str()], None).await?;
        c.status().await?;
        Ok(())
    })
    .await;
    let pids = vec![child.id()];
    let peer = PeerProcess {
        name: "etcd Put (1 member)".into(),
        durability: "raft WAL fdatasync (batched across concurrent puts) before each reply; \
                     single member"
            .into(),
        pids,
        kind: PeerKind::Etcd,
        children: vec![child],
        addr: loopback(client),
        dir: Some(dir),
    };
    ready?;
    Ok(peer)
}

struct EtcdConn {
    client: etcd_client::Client,
}

impl EtcdConn {
    async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let client = etcd_client::Client::connect([format!("http://{addr}")], None).await?;
        Ok(EtcdConn { client })
    }
}

#[async_trait::async_trait]
impl PeerConn for EtcdConn {
    async fn next(&mut self) -> anyhow::Result<i64> {
        let resp = self.client.put("ts", "", None).await?;
        let header = resp.header().ok_or_else(|| anyhow!("put: no header"))?;
        Ok(header.revision())
    }
}

// ---------------------------------------------------------------------------------------------
// Redis: INCR on one key, AOF on, RDB snapshots off.

async fn start_redis(always: bool) -> anyhow::Result<PeerProcess> {
    ensure_package("/usr/bin/redis-server", "redis-server").await?;
    let kind = if always {
        PeerKind::RedisAlways
    } else {
        PeerKind::RedisEverysec
    };
    let dir = data_dir(kind, false)?;
    let port = free_port()?;
    let mut cmd = Command::new("/usr/bin/redis-server");
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .arg("--dir")
        .arg(dir.path())
        .args(["--daemonize", "no", "--save", "", "--appendonly", "yes"])
        .args(["--appendfsync", if always { "always" } else { "everysec" }])
        .args(["--logfile", "", "--maxclients", "10000"]);
    let log = dir.path().join("redis.log");
    let mut child = spawn(cmd, &log)?;
    let addr = loopback(port);
    let ready = wait_ready(&mut child, &log, Duration::from_secs(20), || async move {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"*1\r\n$4\r\nPING\r\n").await?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await?;
        if buf[..n].starts_with(b"+PONG") {
            Ok(())
        } else {
            bail!("PING: {:?}", String::from_utf8_lossy(&buf[..n]))
        }
    })
    .await;
    let (name, durability) = if always {
        (
            "redis INCR (appendfsync always)",
            "AOF write + fsync before replies are sent (one fsync per event-loop pass, \
             grouping the commands that arrived together)",
        )
    } else {
        (
            "redis INCR (appendfsync everysec)",
            "AOF written to the page cache before the reply, fsync'd by a background thread \
             about once a second: an OS crash or power loss can lose ~1-2 s of INCRs, so \
             values repeat",
        )
    };
    let pids = vec![child.id()];
    let peer = PeerProcess {
        name: name.into(),
        durability: durability.into(),
        pids,
        kind,
        children: vec![child],
        addr,
        dir: Some(dir),
    };
    ready?;
    Ok(peer)
}

/// A minimal RESP client: one `INCR ts` in flight at a time.
struct RedisConn {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl RedisConn {
    async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(RedisConn {
            stream,
            buf: Vec::with_capacity(64),
        })
    }
}

#[async_trait::async_trait]
impl PeerConn for RedisConn {
    async fn next(&mut self) -> anyhow::Result<i64> {
        self.stream
            .write_all(b"*2\r\n$4\r\nINCR\r\n$2\r\nts\r\n")
            .await?;
        self.buf.clear();
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = &self.buf[..end];
                if end + 2 != self.buf.len() {
                    bail!("redis: unexpected bytes after the reply");
                }
                return match line.first() {
                    Some(b':') => std::str::from_utf8(&line[1..])?
                        .parse()
                        .context("redis: integer reply"),
                    _ => bail!("redis: {}", String::from_utf8_lossy(line)),
                };
            }
            let mut chunk = [0u8; 64];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("redis: connection closed");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL: a fresh cluster, one sequence, `SELECT nextval('ts')`.

/// (uid, gid) of the `postgres` user, to run initdb and the server as when we are root.
fn postgres_user() -> anyhow::Result<(u32, u32)> {
    let name = std::ffi::CString::new("postgres")?;
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        bail!("no `postgres` OS user (the postgresql package creates it)");
    }
    Ok(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> anyhow::Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .with_context(|| format!("chown {}", path.display()))?;
    if path.is_dir() {
        for e in std::fs::read_dir(path)? {
            chown_tree(&e?.path(), uid, gid)?;
        }
    }
    Ok(())
}

async fn start_postgres() -> anyhow::Result<PeerProcess> {
    ensure_package(&format!("{PG_BIN}/postgres"), "postgresql").await?;
    use std::os::unix::process::CommandExt;
    let as_user = if is_root() {
        Some(postgres_user()?)
    } else {
        None
    };
    let dir = data_dir(PeerKind::Postgres, as_user.is_some())?;
    if let Some((uid, gid)) = as_user {
        chown_tree(dir.path(), uid, gid)?;
    }
    let data = dir.path().join("data");
    let run_as = |cmd: &mut Command| {
        if let Some((uid, gid)) = as_user {
            cmd.uid(uid).gid(gid).env("HOME", "/var/lib/postgresql");
        }
    };

    // initdb's own final sync is skipped (-N) to start faster; the running server syncs
    // everything it needs (fsync=on).
    let mut initdb = Command::new(format!("{PG_BIN}/initdb"));
    initdb
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "--auth=trust", "-E", "UTF8"])
        .args(["--locale=C", "-N"]);
    run_as(&mut initdb);
    let out = tokio::task::spawn_blocking(move || initdb.output()).await??;
    if !out.status.success() {
        bail!(
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }

    let port = free_port()?;
    let mut cmd = Command::new(format!("{PG_BIN}/postgres"));
    cmd.arg("-D")
        .arg(&data)
        .args(["-c", "listen_addresses=127.0.0.1"])
        .args(["-c", &format!("port={port}")])
        .arg("-c")
        .arg(format!("unix_socket_directories={}", dir.path().display()))
        .args(["-c", "fsync=on", "-c", "synchronous_commit=on"])
        .args(["-c", "max_connections=500"]);
    run_as(&mut cmd);
    let log = dir.path().join("postgres.log");
    let mut child = spawn(cmd, &log)?;
    if let Some((uid, gid)) = as_user {
        let _ = std::os::unix::fs::chown(&log, Some(uid), Some(gid));
    }
    let addr = loopback(port);
    let ready = wait_ready(&mut child, &log, Duration::from_secs(30), || async move {
        let (client, conn) = pg_connect(addr).await?;
        let task = tokio::spawn(conn);
        client
            .batch_execute("CREATE SEQUENCE IF NOT EXISTS ts")
            .await?;
        drop(client);
        let _ = task.await;
        Ok(())
    })
    .await;
    let root = child.id();
    let mut peer = PeerProcess {
        name: "postgres nextval (sequence)".into(),
        durability: "fsync=on, synchronous_commit=on, but nextval WAL-logs only every 32nd \
                     value (pre-logging 32 ahead; only that call's commit waits for the WAL \
                     flush); the calls in between write no WAL and wait for no flush, so a \
                     value can be answered before the record covering it is on disk: after a \
                     crash values can repeat"
            .into(),
        pids: vec![root],
        kind: PeerKind::Postgres,
        children: vec![child],
        addr,
        dir: Some(dir),
    };
    ready?;
    peer.pids = peer.pids_now();
    Ok(peer)
}

async fn pg_connect(
    addr: SocketAddr,
) -> anyhow::Result<(
    tokio_postgres::Client,
    tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
)> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(addr.ip().to_string())
        .port(addr.port())
        .user("postgres")
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(5));
    Ok(config.connect(tokio_postgres::NoTls).await?)
}

struct PgConn {
    client: tokio_postgres::Client,
    stmt: tokio_postgres::Statement,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PgConn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PgConn {
    async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let (client, conn) = pg_connect(addr).await?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        let stmt = client.prepare("SELECT nextval('ts')").await?;
        Ok(PgConn { client, stmt, task })
    }
}

#[async_trait::async_trait]
impl PeerConn for PgConn {
    async fn next(&mut self) -> anyhow::Result<i64> {
        let row = self.client.query_one(&self.stmt, &[]).await?;
        Ok(row.try_get(0)?)
    }
}

// ---------------------------------------------------------------------------------------------
// tsoracle: its standalone CLI (file driver), built once; GetTs over gRPC with tonic.

/// Builds (once) and returns the pinned tsoracle binary.
async fn tsoracle_binary() -> anyhow::Result<PathBuf> {
    let _guard = INSTALL.lock().await;
    let tools = scratch_root()
        .join("peer-tools")
        .join(format!("tsoracle-{TSORACLE_VERSION}"));
    let bin = tools.join("bin").join("tsoracle");
    if bin.exists() {
        return Ok(bin);
    }
    std::fs::create_dir_all(&tools)?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let log = tools.join("build.log");
    eprintln!(
        "peers: building tsoracle {TSORACLE_VERSION} once with cargo install (a few minutes; \
         log {})",
        log.display()
    );
    let mut cmd = tokio::process::Command::new("nice");
    cmd.arg(&cargo)
        .args(["install", "tsoracle", "--locked", "--no-default-features"])
        .args(["--features", "file", "--version"])
        .arg(format!("={TSORACLE_VERSION}"))
        .arg("--root")
        .arg(&tools)
        .arg("--target-dir")
        .arg(tools.join("build"))
        // Outside any project, so no workspace config or toolchain file applies.
        .current_dir(&tools)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::fs::OpenOptions::new().append(true).open(&log)?)
        .kill_on_drop(true);
    let status = tokio::time::timeout(Duration::from_secs(30 * 60), cmd.status())
        .await
        .map_err(|_| anyhow!("cargo install tsoracle took over 30 min"))??;
    if !status.success() || !bin.exists() {
        bail!(
            "cargo install tsoracle {TSORACLE_VERSION} failed ({status}): {}",
            log_tail(&log)
        );
    }
    let _ = std::fs::remove_dir_all(tools.join("build"));
    Ok(bin)
}

async fn start_tsoracle() -> anyhow::Result<PeerProcess> {
    let bin = tsoracle_binary().await?;
    let dir = data_dir(PeerKind::Tsoracle, false)?;
    let port = free_port()?;
    let addr = loopback(port);
    let mut cmd = Command::new(&bin);
    cmd.args(["serve", "file", "--listen", &addr.to_string()])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args([
            "--heartbeat-interval",
            "0s",
            "--log",
            "warn",
            "--no-metrics",
        ]);
    let log = dir.path().join("tsoracle.log");
    let mut child = spawn(cmd, &log)?;
    let ready = wait_ready(&mut child, &log, Duration::from_secs(30), || async move {
        TsoConn::connect(addr).await?.next().await.map(drop)
    })
    .await;
    let pids = vec![child.id()];
    let peer = PeerProcess {
        name: format!("tsoracle {TSORACLE_VERSION} GetTs (file driver)"),
        durability: "file driver: a high-water 3 s of clock ahead (--window-ahead) is fsync'd \
                     (tmp file + rename + dir fsync) before any timestamp under it is issued; \
                     GetTs inside the window touches no disk"
            .into(),
        pids,
        kind: PeerKind::Tsoracle,
        children: vec![child],
        addr,
        dir: Some(dir),
    };
    ready?;
    Ok(peer)
}

/// `tsoracle.v1.GetTsRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct GetTsRequest {
    #[prost(uint32, tag = "1")]
    count: u32,
}

/// `tsoracle.v1.GetTsResponse` (epoch fields unused here).
#[derive(Clone, PartialEq, prost::Message)]
struct GetTsResponse {
    #[prost(uint64, tag = "1")]
    physical_ms: u64,
    #[prost(uint32, tag = "2")]
    logical_start: u32,
    #[prost(uint32, tag = "3")]
    count: u32,
}

struct TsoConn {
    grpc: tonic::client::Grpc<tonic::transport::Channel>,
}

impl TsoConn {
    async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect()
            .await?;
        Ok(TsoConn {
            grpc: tonic::client::Grpc::new(channel),
        })
    }
}

#[async_trait::async_trait]
impl PeerConn for TsoConn {
    async fn next(&mut self) -> anyhow::Result<i64> {
        self.grpc
            .ready()
            .await
            .map_err(|e| anyhow!("tsoracle channel: {e}"))?;
        let resp: tonic::Response<GetTsResponse> = self
            .grpc
            .unary(
                tonic::Request::new(GetTsRequest { count: 1 }),
                tonic::codegen::http::uri::PathAndQuery::from_static(
                    "/tsoracle.v1.TsoService/GetTs",
                ),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .map_err(|s| anyhow!("GetTs: {} {}", s.code(), s.message()))?;
        let r = resp.into_inner();
        if r.count != 1 || r.logical_start >= 1 << 18 {
            bail!("GetTs: malformed grant {r:?}");
        }
        // tsoracle's packing (tsoracle-core `Timestamp::pack`): 46 bits of ms, 18 logical.
        i64::try_from((r.physical_ms << 18) | u64::from(r.logical_start))
            .context("GetTs: timestamp exceeds i64")
    }
}

// ---------------------------------------------------------------------------------------------
// PEERS_PROBE=1: start every peer, 4 connections x 2000 ops, check the answers.

const PROBE_CONNS: usize = 4;
const PROBE_OPS: usize = 2000;

pub fn probe() -> std::process::ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("peers probe: tokio runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut failed = false;
    for kind in PeerKind::ALL {
        let label = kind.label();
        let t0 = Instant::now();
        let peer = match rt.block_on(start(kind)) {
            Ok(p) => p,
            Err(e) => {
                println!("{label:<15} skipped: {e:#}");
                continue;
            }
        };
        println!(
            "{label:<15} started in {:.1}s: {} (pids {:?})",
            t0.elapsed().as_secs_f64(),
            peer.name,
            peer.pids
        );
        println!("{:<15} durability: {}", "", peer.durability);
        let result = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(300), probe_load(&peer)).await
        });
        match result {
            Ok(Ok((ops_per_s, pids))) => println!(
                "{label:<15} ok: {PROBE_CONNS} conns x {PROBE_OPS} ops, {ops_per_s:.0} ops/s \
                 (server processes under load: {})",
                pids.len()
            ),
            Ok(Err(e)) => {
                failed = true;
                println!("{label:<15} FAILED: {e:#}");
            }
            Err(_) => {
                failed = true;
                println!("{label:<15} FAILED: probe load took over 300 s");
            }
        }
        drop(peer);
    }
    if failed {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}

/// Runs the probe load; returns ops/s and the server's process ids while connected.
async fn probe_load(peer: &PeerProcess) -> anyhow::Result<(f64, Vec<u32>)> {
    let mut conns = Vec::new();
    for _ in 0..PROBE_CONNS {
        conns.push(connect(peer).await?);
    }
    let pids = peer.pids_now();
    let t0 = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let mut values = Vec::with_capacity(PROBE_OPS);
                for _ in 0..PROBE_OPS {
                    values.push(c.next().await?);
                }
                anyhow::Ok(values)
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.push(t.await??);
    }
    let secs = t0.elapsed().as_secs_f64();
    let mut seen = HashSet::new();
    for (i, values) in all.iter().enumerate() {
        if let Some(w) = values.windows(2).find(|w| w[1] <= w[0]) {
            bail!(
                "connection {i}: not strictly increasing: {} then {}",
                w[0],
                w[1]
            );
        }
        for v in values {
            if !seen.insert(*v) {
                bail!("value {v} handed out twice");
            }
        }
    }
    Ok(((PROBE_CONNS * PROBE_OPS) as f64 / secs, pids))
}
