//! The comparison harness: every target is a separate server process, loaded from this process
//! over loopback at a fixed concurrency, in interleaved short windows.
//!
//! Targets, all started by the harness:
//! * `ceiling` — a constant-response axum handler (this binary re-executed with
//!   `COMPARE_ROLE=ceiling`): the same axum, hyper and tokio runtime settings as the server (a
//!   multi-thread runtime with one worker per core, TCP_NODELAY; no header-read timeout),
//!   answering `1` to `POST /{ns}/timestamp/fresh-timestamp` through axum's router. The
//!   reference of every ratio (as the performance issue defines it).
//! * `ceiling-hyper` — the same process answering the same request on a second port with a
//!   bare hyper HTTP/1.1 connection and a `service_fn`, no router: what HTTP/1.1 itself costs.
//!   The server's hot endpoints skip axum's router (`src/http/direct.rs`), so they can match or
//!   pass the axum ceiling; this row is the stricter bound, reported beside it.
//! * `ceiling-st` — the same process answering the `/tl/st` load (the same requests, bodies
//!   and batched `/tl/ul2` releases) with a constant answer of a real one's size, parsed by the
//!   generator as the real one is (the `/tl/ul2` releases, one per 64 starts, get `[]` rather
//!   than the echoed tokens, about 40 bytes less per start): what `/tl/st` costs in HTTP bytes
//!   alone. The run also prints `/tl/st`'s per-round ratio to it.
//! * this server (`target/release/timelock serve`, default settings, RocksDB on a real disk,
//!   synced bound writes): `fresh-timestamp`, `fresh-timestamps?number=10000`, `/tl/ts`,
//!   `/tl/st` (immutable-timestamp locks released 64 at a time, as committing clients do), and
//!   lock + unlock (`/tl/l` then `/tl/ul2`, counted per request).
//! * the same `fresh-timestamp` load against three deployment variants, each its own server:
//!   over TLS (`fresh-tls`, a self-signed certificate, rustls on both sides), with access control
//!   on (`fresh-auth`, the namespace's token on every request, an admin credential set), and from
//!   the leader of a one-node cluster on a one-member etcd (`fresh-leader`). Their per-round
//!   ratios to `fresh` are printed with the goals of the structural issue (0.9, 0.95, 0.95).
//! * peers (`peers.rs`): etcd, Redis `INCR` (two fsync settings), PostgreSQL `nextval`, tsoracle.
//!
//! Method: after a warm-up per target, `ROUNDS` rounds (default 7); in each, every target in a
//! rotated order gets a short warm-up then a `WINDOW_MS` window (default 1500) with
//! `CONNECTIONS` (default 32) closed-loop connections, one request in flight each. Every reply is
//! validated (status, shape, values strictly increasing per connection, no duplicates across
//! connections within a window): a wrong answer fails the run. Measured per window: requests/s,
//! timestamps/s, latency p50/p99/p99.9, server CPU µs per request (`/proc/<pid>/task/*/schedstat`
//! of the server's processes), the load generator's own CPU µs per request (this process: it
//! shares the two cores, so its cost per reply weighs on every ratio; requests are prebuilt or
//! formatted into reused buffers, request ids come from a counter, replies are checked with
//! memmem searches), and at the end each server's peak RSS (`VmHWM`). The ratio to
//! the ceiling is taken per round and the median reported, so machine drift hits every target
//! alike. Then: p99 at half load (open loop at half the ceiling's median rate, latency from the
//! scheduled send time), resource checks (idle RSS, 500 namespaces with 100,000 held locks, cold
//! start, restart with 500 namespaces), and a scale sweep (namespaces, held locks, waiters,
//! connections).
//!
//! Output: tables on stdout, raw numbers as JSON and the chart as PNG in `--out DIR` (default
//! `target/compare`).
//!
//! `ALT_BIN=PATH`: `fresh`, `tl/st` and `lock+unlock` also against that build of the server (a
//! `*-alt` target each, in the same rounds), with their per-round ratios to this build printed:
//! a change measured on and off in one run.
//!
//! `TARGETS=fresh,tl/st` (short names: fresh, batch10k, tl/ts, tl/st, lock+unlock) narrows a run
//! to those targets and the ceiling (and `ceiling-st` with `tl/st`), for profiling one path.
//!
//! `--smoke` (and any run without `--bench`, such as `cargo test --bench compare`): the
//! ceilings and the server's targets for a few hundred milliseconds each, no peers; fails
//! only on wrong answers, never on speed.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::peers::{self, PeerConn, PeerKind, PeerProcess};

/// The server binary of this build profile (bench/build.rs); `./dev bench` builds it first.
const TIMELOCK: &str = env!("TIMELOCK_BENCH_BIN");

// ---------------------------------------------------------------------------------------------
// Options

#[derive(Debug, Clone)]
struct Options {
    smoke: bool,
    rounds: usize,
    window: Duration,
    warmup: Duration,
    connections: usize,
    peers: bool,
    extras: bool,
    out: PathBuf,
}

fn env_parse<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl Options {
    fn from_env_and_args() -> Options {
        let args: Vec<String> = std::env::args().collect();
        let smoke = args.iter().any(|a| a == "--smoke") || !args.iter().any(|a| a == "--bench");
        let out = args
            .iter()
            .position(|a| a == "--out")
            .and_then(|i| args.get(i + 1))
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("target/compare"));
        // cargo runs a bench in its package's directory (bench/); a relative --out means the
        // workspace root, where the docs and the target dir are.
        let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(out);
        Options {
            smoke,
            rounds: if smoke { 1 } else { env_parse("ROUNDS", 7) },
            window: Duration::from_millis(if smoke {
                300
            } else {
                env_parse("WINDOW_MS", 1500)
            }),
            warmup: Duration::from_millis(if smoke {
                100
            } else {
                env_parse("WARMUP_MS", 300)
            }),
            connections: env_parse("CONNECTIONS", 32),
            peers: !smoke && std::env::var("NO_PEERS").is_err(),
            extras: !smoke && std::env::var("NO_EXTRAS").is_err(),
            out,
        }
    }
}

pub fn main() -> ExitCode {
    if std::env::var("PEERS_PROBE").is_ok() {
        return peers::probe();
    }
    if std::env::var("COMPARE_ROLE").as_deref() == Ok("ceiling") {
        return serve_ceiling();
    }
    let options = Options::from_env_and_args();
    if std::env::args().any(|a| a == "--redraw") {
        return redraw(&options.out);
    }
    if !Path::new(TIMELOCK).exists() {
        eprintln!(
            "compare: no server binary at {TIMELOCK}; build it first (./dev bench does), e.g. \
             cargo build --release --bin timelock"
        );
        return ExitCode::FAILURE;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    match runtime.block_on(run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("compare: FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The ceiling: a constant-response axum server in its own process.

/// A `/tl/st` answer as the server writes it under load (large timestamps and clock), for the
/// ceiling shaped like `/tl/st`.
const SHAPED_START_ANSWER: &str = concat!(
    r#"{"immutableTimestamp":{"immutableTimestamp":1234567890123,"lock":{"requestId":"6f1c2a4e-5b7d-4e0f-8a9b-0c1d2e3f4a5b"}},"#,
    r#""timestamps":{"start":1234567890139,"interval":16,"count":1},"#,
    r#""lease":{"leaderTime":{"id":"d68c1f25-0249-465e-957e-970aaf51998b","currentTime":12345678901234},"validity":"PT8S"},"#,
    r#""lockWatchUpdate":{"type":"snapshot","logId":"d68c1f25-0249-465e-957e-970aaf51998b","lastKnownVersion":-1,"locked":[],"lockWatches":[]}}"#
);

/// Where the ceiling process writes its bare hyper port.
fn hyper_port_file(port_file: &Path) -> PathBuf {
    port_file.with_extension("hyper")
}

/// The bare hyper ceiling: HTTP/1.1 keep-alive connections answered by a `service_fn` with a
/// constant `1` (`application/json`), whatever the request.
async fn serve_bare_hyper(listener: tokio::net::TcpListener) {
    use http_body_util::Full;
    use hyper::body::Bytes;
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(true);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let http = http.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|_request| async {
                let mut response = hyper::Response::new(Full::new(Bytes::from_static(b"1")));
                response.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static("application/json"),
                );
                Ok::<_, std::convert::Infallible>(response)
            });
            let _ = http
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                .await;
        });
    }
}

fn serve_ceiling() -> ExitCode {
    use axum::routing::post;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        async fn constant() -> axum::response::Response {
            let mut response = axum::response::Response::new(axum::body::Body::from("1"));
            response.headers_mut().insert(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json"),
            );
            response
        }
        // The same, shaped like `/tl/st`: an answer of a real start-transactions answer's size
        // (the body of the request is left to hyper, which reads and discards it), and the
        // batched `/tl/ul2` the load generator sends every 64 starts (answered `[]`, where the
        // server echoes the released tokens).
        async fn constant_start() -> axum::response::Response {
            let mut response =
                axum::response::Response::new(axum::body::Body::from(SHAPED_START_ANSWER));
            response.headers_mut().insert(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json"),
            );
            response
        }
        async fn constant_unlock() -> axum::response::Response {
            let mut response = axum::response::Response::new(axum::body::Body::from("[]"));
            response.headers_mut().insert(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json"),
            );
            response
        }
        let app = axum::Router::new()
            .route("/{ns}/timestamp/fresh-timestamp", post(constant))
            .route("/tl/st/{ns}", post(constant_start))
            .route("/tl/ul2/{ns}", post(constant_unlock));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let port_file =
            PathBuf::from(std::env::var("COMPARE_PORT_FILE").expect("COMPARE_PORT_FILE"));
        let bare = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        std::fs::write(
            hyper_port_file(&port_file),
            format!("{}\n", bare.local_addr().unwrap().port()),
        )
        .unwrap();
        tokio::spawn(serve_bare_hyper(bare));
        std::fs::write(&port_file, format!("{port}\n")).unwrap();
        use axum::serve::ListenerExt;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app).await.unwrap();
    });
    ExitCode::SUCCESS
}

// ---------------------------------------------------------------------------------------------
// Server processes

/// A server process started by the harness (killed on drop).
struct Server {
    child: Child,
    addr: SocketAddr,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

fn bench_dir() -> PathBuf {
    // A real disk (target/), not /tmp, which may be tmpfs.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("compare");
    std::fs::create_dir_all(&dir).expect("bench dir");
    dir
}

fn wait_for_port(child: &mut Child, port_file: &Path) -> anyhow::Result<u16> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(port_file) {
            if let Ok(port) = text.trim().parse() {
                return Ok(port);
            }
        }
        if let Some(status) = child.try_wait()? {
            bail!("server exited during start-up: {status}");
        }
        ensure!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The ceiling process, and the address of its bare hyper listener.
fn start_ceiling() -> anyhow::Result<(Server, SocketAddr)> {
    let dir = tempfile::tempdir_in(bench_dir())?;
    let port_file = dir.path().join("port");
    let mut child = Command::new(std::env::current_exe()?)
        .env("COMPARE_ROLE", "ceiling")
        .env("COMPARE_PORT_FILE", &port_file)
        .stdin(Stdio::null())
        .spawn()?;
    // The bare hyper port is written first, so it is there once the axum one is.
    let port = wait_for_port(&mut child, &port_file)?;
    let hyper_port: u16 = std::fs::read_to_string(hyper_port_file(&port_file))?
        .trim()
        .parse()?;
    Ok((
        Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _dir: Some(dir),
        },
        SocketAddr::from(([127, 0, 0, 1], hyper_port)),
    ))
}

/// The real server with default settings (plus `env`), data in a fresh dir on a real disk.
fn start_timelock(env: &[(&str, &str)]) -> anyhow::Result<(Server, Duration)> {
    let dir = tempfile::tempdir_in(bench_dir())?;
    start_timelock_in(dir, env)
}

fn start_timelock_in(
    dir: tempfile::TempDir,
    env: &[(&str, &str)],
) -> anyhow::Result<(Server, Duration)> {
    start_binary_in(Path::new(TIMELOCK), dir, env)
}

/// [`start_timelock_in`] with another build of the server (the `ALT_BIN` targets).
fn start_binary_in(
    binary: &Path,
    dir: tempfile::TempDir,
    env: &[(&str, &str)],
) -> anyhow::Result<(Server, Duration)> {
    let port_file = dir.path().join("port");
    let _ = std::fs::remove_file(&port_file);
    let started = Instant::now();
    let mut command = Command::new(binary);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--port-file")
        .arg(&port_file)
        .current_dir(dir.path())
        .env("TIMELOCK__LOG__LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().context("starting timelock")?;
    let port = wait_for_port(&mut child, &port_file)?;
    Ok((
        Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _dir: Some(dir),
        },
        started.elapsed(),
    ))
}

/// Total CPU time of a process's threads so far, from `/proc/<pid>/task/*/schedstat` (ns).
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// A `/proc/<pid>/status` field in kB (`VmHWM`, `VmRSS`).
fn status_kb(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
}

fn peak_rss_mb(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|p| status_kb(*p, "VmHWM:"))
        .sum::<u64>() as f64
        / 1024.0
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 client: one connection, one request in flight, replies parsed by hand.

struct Http {
    stream: Stream,
    buf: Vec<u8>,
}

/// A connection's byte stream: plain TCP, or TLS over it (the TLS target).
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.write_all(bytes).await,
            Stream::Tls(s) => s.write_all(bytes).await,
        }
    }

    async fn read_buf(&mut self, buf: &mut Vec<u8>) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read_buf(buf).await,
            Stream::Tls(s) => s.read_buf(buf).await,
        }
    }
}

impl Http {
    async fn connect(addr: SocketAddr) -> anyhow::Result<Http> {
        Http::connect_with(addr, None).await
    }

    /// A connection, over TLS when `tls` is given (the server's name is `localhost`).
    async fn connect_with(
        addr: SocketAddr,
        tls: Option<&tokio_rustls::TlsConnector>,
    ) -> anyhow::Result<Http> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let stream = match tls {
            None => Stream::Plain(tcp),
            Some(connector) => {
                let name = rustls::pki_types::ServerName::try_from("localhost")?;
                Stream::Tls(Box::new(connector.connect(name, tcp).await?))
            }
        };
        Ok(Http {
            stream,
            buf: Vec::with_capacity(1024),
        })
    }

    /// Sends `request` (complete bytes) and returns (status, body).
    async fn exchange(&mut self, request: &[u8]) -> anyhow::Result<(u16, &[u8])> {
        self.stream.write_all(request).await?;
        self.buf.clear();
        loop {
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(4096);
            }
            let n = self.stream.read_buf(&mut self.buf).await?;
            ensure!(n > 0, "server closed the connection");
            let Some(end) = find(&self.buf, b"\r\n\r\n") else {
                continue;
            };
            let head = std::str::from_utf8(&self.buf[..end])?;
            let status: u16 = head
                .get(9..12)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| anyhow!("bad status line: {head}"))?;
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            let start = end + 4;
            if self.buf.len() < start + length {
                continue;
            }
            return Ok((status, &self.buf[start..start + length]));
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

fn post(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// [`post`] with `Authorization: Bearer <token>`.
fn post_authorized(path: &str, token: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// [`post`] into a reused buffer.
fn post_into(out: &mut Vec<u8>, path: &str, body: &[u8]) {
    use std::io::Write;
    out.clear();
    let _ = write!(
        out,
        "POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    out.extend_from_slice(body);
}

/// Request ids for one connection: a random base and a counter, as UUIDs.
struct IdSource {
    base: u128,
    counter: u64,
}

impl IdSource {
    fn new() -> IdSource {
        IdSource {
            base: uuid::Uuid::new_v4().as_u128() & !u128::from(u64::MAX),
            counter: 0,
        }
    }

    fn next(&mut self) -> uuid::Uuid {
        self.counter += 1;
        uuid::Uuid::from_u128(self.base | u128::from(self.counter))
    }
}

/// A request sent over and over with only a UUID changing: built once per connection and the
/// UUID written in place, so that the generator's CPU (which shares the machine with the
/// server under test) goes on the exchange rather than on formatting the same bytes again.
#[derive(Default)]
struct Template {
    bytes: Vec<u8>,
    /// Where the 36 characters of the UUID go.
    at: usize,
    /// Where the body starts.
    body: usize,
}

impl Template {
    /// `POST path` with the body `before` + a UUID + `after`.
    fn new(path: &str, before: &str, after: &str) -> Template {
        let placeholder = uuid::Uuid::nil().hyphenated().to_string();
        let body = format!("{before}{placeholder}{after}");
        let bytes = post(path, &body);
        Template {
            at: bytes.len() - after.len() - placeholder.len(),
            body: bytes.len() - body.len(),
            bytes,
        }
    }

    /// The request with `id` in place.
    fn with(&mut self, id: uuid::Uuid) -> &[u8] {
        id.hyphenated()
            .encode_lower(&mut self.bytes[self.at..self.at + 36]);
        &self.bytes
    }

    /// The request with the UUID currently in `other` in place.
    fn with_token_of(&mut self, other: &Template) -> &[u8] {
        self.bytes[self.at..self.at + 36].copy_from_slice(&other.bytes[other.at..other.at + 36]);
        &self.bytes
    }

    /// The request's body (everything after the head).
    fn body(&self) -> &[u8] {
        &self.bytes[self.body..]
    }
}

/// Searchers for the keys the generator checks in answers, built once (a `memmem::find` per
/// call builds its searcher every time).
struct Keys {
    start: memchr::memmem::Finder<'static>,
    count: memchr::memmem::Finder<'static>,
    successful: memchr::memmem::Finder<'static>,
    lower_bound: memchr::memmem::Finder<'static>,
    upper_bound: memchr::memmem::Finder<'static>,
    inclusive_lower: memchr::memmem::Finder<'static>,
    inclusive_upper: memchr::memmem::Finder<'static>,
}

static KEYS: std::sync::LazyLock<Keys> = std::sync::LazyLock::new(|| {
    let key = |needle: &'static [u8]| memchr::memmem::Finder::new(needle);
    Keys {
        start: key(br#""start":"#),
        count: key(br#""count":"#),
        successful: key(br#""successful""#),
        lower_bound: key(br#""lowerBound":"#),
        upper_bound: key(br#""upperBound":"#),
        inclusive_lower: key(br#""inclusiveLower":"#),
        inclusive_upper: key(br#""inclusiveUpper":"#),
    }
});

/// The integer after `key` (a quoted name and its colon, as found by `key`) in a small JSON
/// body.
fn json_int_after(body: &[u8], key: &memchr::memmem::Finder<'_>) -> anyhow::Result<i64> {
    let at = key.find(body).ok_or_else(|| {
        anyhow!(
            "no {} in {}",
            String::from_utf8_lossy(key.needle()),
            String::from_utf8_lossy(body)
        )
    })?;
    let rest = &body[at + key.needle().len()..];
    let rest = &rest[rest.iter().take_while(|b| **b == b' ').count()..];
    let len = rest
        .iter()
        .take_while(|b| b.is_ascii_digit() || **b == b'-')
        .count();
    Ok(std::str::from_utf8(&rest[..len])?.parse()?)
}

/// The namespace every target is loaded in.
const NS: &str = "bench";
/// The access-control target's token for [`NS`] (its namespace tokens file lists it).
const NAMESPACE_TOKEN: &str = "bench-namespace-token-0123456789";
const ST_PATH: &str = "/tl/st/bench";
const L_PATH: &str = "/tl/l/bench";
const UL2_PATH: &str = "/tl/ul2/bench";

fn parse_number(body: &[u8]) -> anyhow::Result<i64> {
    Ok(std::str::from_utf8(body)?.trim().parse()?)
}

// ---------------------------------------------------------------------------------------------
// Targets

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Ceiling,
    /// The ceiling process's bare hyper listener (no router).
    CeilingHyper,
    /// The ceiling process answering `/tl/st`-shaped requests with a constant answer of the
    /// same size: how much of `/tl/st`'s gap is HTTP bytes rather than work.
    CeilingStart,
    Fresh,
    /// `fresh-timestamp` over TLS (rustls on both sides, keep-alive connections).
    FreshTls,
    /// `fresh-timestamp` with access control on: the namespace needs its token, sent as a
    /// bearer token on every request.
    FreshAuth,
    /// `fresh-timestamp` from the leader of a one-node cluster on etcd.
    FreshLeader,
    Batch,
    TlTs,
    StartTransaction,
    LockUnlock,
    /// One of the server's targets against another build of it (`ALT_BIN`), with default
    /// settings: a change measured on and off in one run.
    Alt(AltOf),
    Peer(PeerKind),
}

/// What an [`Kind::Alt`] target loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AltOf {
    Fresh,
    StartTransaction,
    LockUnlock,
}

impl AltOf {
    const ALL: [AltOf; 3] = [AltOf::Fresh, AltOf::StartTransaction, AltOf::LockUnlock];

    /// The target of this server's own build that it is compared with.
    fn base(self) -> Kind {
        match self {
            AltOf::Fresh => Kind::Fresh,
            AltOf::StartTransaction => Kind::StartTransaction,
            AltOf::LockUnlock => Kind::LockUnlock,
        }
    }
}

impl Kind {
    fn label(self) -> String {
        match self {
            Kind::Ceiling => "ceiling (constant axum handler)".into(),
            Kind::CeilingHyper => "ceiling, bare hyper (constant, no router)".into(),
            Kind::CeilingStart => format!(
                "ceiling shaped as /tl/st ({}-byte answer)",
                SHAPED_START_ANSWER.len()
            ),
            Kind::Fresh => "timelock fresh-timestamp".into(),
            Kind::FreshTls => "timelock fresh-timestamp over TLS".into(),
            Kind::FreshAuth => "timelock fresh-timestamp, access control on".into(),
            Kind::FreshLeader => "timelock fresh-timestamp, cluster leader (etcd)".into(),
            Kind::Batch => "timelock fresh-timestamps?number=10000".into(),
            Kind::TlTs => "timelock /tl/ts (1)".into(),
            Kind::StartTransaction => "timelock /tl/st (1 transaction)".into(),
            Kind::LockUnlock => "timelock /tl/l + /tl/ul2 (per request)".into(),
            Kind::Alt(of) => format!("{} (ALT_BIN build)", of.base().label()),
            Kind::Peer(p) => p.label().to_string(),
        }
    }

    /// The kind whose requests and checks this target uses.
    fn load(self) -> Kind {
        match self {
            Kind::Alt(of) => of.base(),
            kind => kind,
        }
    }

    fn short(self) -> String {
        match self {
            Kind::Ceiling => "ceiling".into(),
            Kind::CeilingHyper => "ceiling-hyper".into(),
            Kind::CeilingStart => "ceiling-st".into(),
            Kind::Fresh => "fresh".into(),
            Kind::FreshTls => "fresh-tls".into(),
            Kind::FreshAuth => "fresh-auth".into(),
            Kind::FreshLeader => "fresh-leader".into(),
            Kind::Batch => "batch10k".into(),
            Kind::TlTs => "tl/ts".into(),
            Kind::StartTransaction => "tl/st".into(),
            Kind::LockUnlock => "lock+unlock".into(),
            Kind::Alt(of) => format!("{}-alt", of.base().short()),
            Kind::Peer(p) => p.label().to_string(),
        }
    }
}

/// A target: what to load and where.
struct Target {
    kind: Kind,
    addr: Option<SocketAddr>,
    pids: Vec<u32>,
    durability: String,
    peer: Option<Arc<PeerProcess>>,
    /// The TLS target's client configuration.
    tls: Option<tokio_rustls::TlsConnector>,
}

/// One connection's worth of client state for a target.
// One per connection, moved once into its task: the size of the HTTP variant costs nothing.
#[allow(clippy::large_enum_variant)]
enum Conn {
    Http {
        http: Http,
        kind: Kind,
        last: i64,
        /// /tl/st: immutable-timestamp lock tokens to release in a batch.
        pending: Vec<uuid::Uuid>,
        /// lock + unlock: whether the next request is the unlock.
        locked: bool,
        /// /tl/st: the start request; lock + unlock: the lock request.
        request: Template,
        /// lock + unlock: the unlock request (`["<token>"]`), which is also its answer.
        unlock: Template,
        /// The complete request of targets whose request never changes, built once.
        fixed: Vec<u8>,
        /// Request ids: a random 128-bit base per connection plus a counter (unique, and
        /// without a `getrandom` system call per request charged to the load generator).
        ids: IdSource,
        /// Reused request buffer.
        out: Vec<u8>,
    },
    Peer {
        conn: Box<dyn PeerConn>,
        last: i64,
    },
}

/// What one request yielded: timestamps handed out, and the highest value seen (for the
/// per-connection and cross-connection checks), if any.
struct Yield {
    timestamps: u64,
    values: Option<(i64, i64)>,
}

impl Conn {
    async fn open(target: &Target, index: usize, tag: &str) -> anyhow::Result<Conn> {
        if let Some(peer) = &target.peer {
            return Ok(Conn::Peer {
                conn: peers::connect(peer).await?,
                last: i64::MIN,
            });
        }
        let fixed = match target.kind.load() {
            Kind::Ceiling
            | Kind::CeilingHyper
            | Kind::Fresh
            | Kind::FreshTls
            | Kind::FreshLeader => post(&format!("/{NS}/timestamp/fresh-timestamp"), ""),
            Kind::FreshAuth => {
                post_authorized(&format!("/{NS}/timestamp/fresh-timestamp"), NAMESPACE_TOKEN)
            }
            Kind::Batch => post(
                &format!("/{NS}/timestamp/fresh-timestamps?number=10000"),
                "",
            ),
            Kind::TlTs => post(&format!("/tl/ts/{NS}"), r#"{"numTimestamps":1}"#),
            _ => Vec::new(),
        };
        // Per connection: its own lock descriptor, and a requestor id derived from it.
        let descriptor = base64_of(&format!("row-{tag}-{index}"));
        let (request, unlock) = match target.kind.load() {
            Kind::StartTransaction | Kind::CeilingStart => (
                Template::new(
                    ST_PATH,
                    r#"{"requestId":""#,
                    &format!(
                        r#"","requestorId":"{}","numTransactions":1}}"#,
                        requestor_of(&descriptor)
                    ),
                ),
                Template::default(),
            ),
            Kind::LockUnlock => (
                Template::new(
                    L_PATH,
                    r#"{"requestId":""#,
                    &format!(r#"","lockDescriptors":["{descriptor}"],"acquireTimeoutMs":1000}}"#),
                ),
                Template::new(UL2_PATH, r#"[""#, r#""]"#),
            ),
            _ => (Template::default(), Template::default()),
        };
        Ok(Conn::Http {
            http: Http::connect_with(target.addr.expect("http target"), target.tls.as_ref())
                .await?,
            kind: target.kind.load(),
            last: i64::MIN,
            pending: Vec::new(),
            locked: false,
            request,
            unlock,
            fixed,
            ids: IdSource::new(),
            out: Vec::with_capacity(4096),
        })
    }

    /// After the window (not counted): releases what this connection still holds, so that one
    /// window's leftovers do not sit in the server's lock table through the next windows.
    async fn finish(&mut self) -> anyhow::Result<()> {
        match self {
            Conn::Http {
                http, pending, out, ..
            } if !pending.is_empty() => release(http, out, pending).await,
            Conn::Http {
                http,
                locked,
                request,
                unlock,
                ..
            } if *locked => {
                *locked = false;
                let (status, _) = http.exchange(unlock.with_token_of(request)).await?;
                ensure!(status == 200, "/tl/ul2 answered {status}");
                Ok(())
            }
            _ => Ok(()),
        }
    }

    async fn request(&mut self) -> anyhow::Result<Yield> {
        match self {
            Conn::Peer { conn, last } => {
                let v = conn.next().await?;
                ensure!(v > *last, "peer value {v} after {last} on one connection");
                *last = v;
                Ok(Yield {
                    timestamps: 1,
                    values: Some((v, v)),
                })
            }
            Conn::Http {
                http,
                kind,
                last,
                pending,
                locked,
                request,
                unlock,
                fixed,
                ids,
                out,
            } => {
                let (lo, hi, n) = match kind {
                    Kind::Ceiling | Kind::CeilingHyper => {
                        let (status, body) = http.exchange(fixed).await?;
                        ensure!(status == 200 && body == b"1", "ceiling answered {status}");
                        return Ok(Yield {
                            timestamps: 1,
                            values: None,
                        });
                    }
                    Kind::Fresh | Kind::FreshTls | Kind::FreshAuth | Kind::FreshLeader => {
                        let (status, body) = http.exchange(fixed).await?;
                        ensure!(status == 200, "fresh-timestamp answered {status}");
                        let v = parse_number(body)?;
                        (v, v, 1)
                    }
                    Kind::Batch => {
                        let (status, body) = http.exchange(fixed).await?;
                        ensure!(status == 200, "fresh-timestamps answered {status}");
                        let lo = json_int_after(body, &KEYS.lower_bound)?;
                        let hi = json_int_after(body, &KEYS.upper_bound)?;
                        ensure!(hi - lo + 1 == 10_000, "batch of {} not 10000", hi - lo + 1);
                        (lo, hi, 10_000)
                    }
                    Kind::TlTs => {
                        let (status, body) = http.exchange(fixed).await?;
                        ensure!(status == 200, "/tl/ts answered {status}");
                        let lo = json_int_after(body, &KEYS.inclusive_lower)?;
                        let hi = json_int_after(body, &KEYS.inclusive_upper)?;
                        (lo, hi, (hi - lo + 1) as u64)
                    }
                    Kind::StartTransaction | Kind::CeilingStart => {
                        if pending.len() >= 64 {
                            release(http, out, pending).await?;
                        }
                        let id = ids.next();
                        let (status, reply) = http.exchange(request.with(id)).await?;
                        ensure!(status == 200, "/tl/st answered {status}");
                        let start = json_int_after(reply, &KEYS.start)?;
                        ensure!(
                            json_int_after(reply, &KEYS.count)? == 1,
                            "/tl/st count != 1"
                        );
                        pending.push(id);
                        if *kind == Kind::CeilingStart {
                            // A constant answer: parsed like the real one, nothing to order.
                            return Ok(Yield {
                                timestamps: 0,
                                values: None,
                            });
                        }
                        (start, start, 1)
                    }
                    Kind::LockUnlock => {
                        if std::mem::take(locked) {
                            // The token is the lock request's id, still in its template; the
                            // answer lists the tokens released: exactly the one sent.
                            let sent = unlock.with_token_of(request);
                            let (status, reply) = http.exchange(sent).await?;
                            ensure!(
                                status == 200 && reply == unlock.body(),
                                "/tl/ul2 answered {status}: {}",
                                String::from_utf8_lossy(reply)
                            );
                        } else {
                            let (status, reply) = http.exchange(request.with(ids.next())).await?;
                            ensure!(
                                status == 200 && KEYS.successful.find(reply).is_some(),
                                "/tl/l answered {status}: {}",
                                String::from_utf8_lossy(reply)
                            );
                            *locked = true;
                        }
                        return Ok(Yield {
                            timestamps: 0,
                            values: None,
                        });
                    }
                    Kind::Peer(_) | Kind::Alt(_) => {
                        unreachable!("peers are not HTTP; alt connections load their base kind")
                    }
                };
                ensure!(lo > *last, "{lo} after {last} on one connection");
                *last = hi;
                Ok(Yield {
                    timestamps: n,
                    values: Some((lo, hi)),
                })
            }
        }
    }
}

/// `/tl/ul2` for the immutable-timestamp locks of `pending` (as committing clients release
/// theirs), which it empties.
async fn release(
    http: &mut Http,
    out: &mut Vec<u8>,
    pending: &mut Vec<uuid::Uuid>,
) -> anyhow::Result<()> {
    let mut list = Vec::with_capacity(pending.len() * 39 + 2);
    list.push(b'[');
    for (i, t) in pending.iter().enumerate() {
        if i > 0 {
            list.push(b',');
        }
        list.push(b'"');
        list.extend_from_slice(
            t.hyphenated()
                .encode_lower(&mut uuid::Uuid::encode_buffer())
                .as_bytes(),
        );
        list.push(b'"');
    }
    list.push(b']');
    post_into(out, UL2_PATH, &list);
    let (status, _) = http.exchange(out).await?;
    ensure!(status == 200, "/tl/ul2 answered {status}");
    pending.clear();
    Ok(())
}

/// A stable requestor id per connection (so start-transaction partitions are per client).
fn requestor_of(descriptor: &str) -> uuid::Uuid {
    // FNV-1a, spread over 128 bits: stable per connection, distinct between connections.
    let mut h: u128 = 0x6c62272e07bb014262b821756295c58d;
    for b in descriptor.bytes() {
        h ^= b as u128;
        h = h.wrapping_mul(0x0000000001000000000000000000013B);
    }
    uuid::Uuid::from_u128(h)
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

// ---------------------------------------------------------------------------------------------
// Windows

/// What one window measured.
#[derive(Debug, Clone, serde::Serialize)]
struct Window {
    target: String,
    round: usize,
    secs: f64,
    requests: u64,
    timestamps: u64,
    req_per_sec: f64,
    ts_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    server_cpu_us_per_req: f64,
    /// CPU of this (load-generating) process per request: what the generator itself cost, on
    /// the same two cores.
    client_cpu_us_per_req: f64,
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64
}

/// Runs `connections` closed-loop connections against `target` for `window`; validates every
/// reply; returns the measurements. `rate`: open loop at this many requests/s in total
/// instead (latency from the scheduled send time).
async fn window(
    target: &Target,
    connections: usize,
    window: Duration,
    round: usize,
    rate: Option<f64>,
) -> anyhow::Result<Window> {
    let tag = format!("{}-{round}-{}", target.kind.short(), rand_tag());
    let mut conns = Vec::with_capacity(connections);
    for i in 0..connections {
        conns.push(Conn::open(target, i, &tag).await?);
    }
    // PostgreSQL serves each connection from a process of its own: count the processes that
    // exist once the connections are open.
    let pids = match &target.peer {
        Some(peer) => peer.pids_now(),
        None => target.pids.clone(),
    };
    let cpu_before: u64 = pids.iter().map(|p| cpu_ns(*p)).sum();
    let client_before = cpu_ns(std::process::id());
    let started = Instant::now();
    let deadline = started + window;
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut conn)| {
            let interval = rate.map(|r| Duration::from_secs_f64(connections as f64 / r));
            tokio::spawn(async move {
                let mut latencies: Vec<u32> = Vec::with_capacity(4096);
                let mut values: Vec<(i64, i64)> = Vec::new();
                let mut timestamps = 0u64;
                // Open loop: stagger the connections over one interval.
                let mut next_send =
                    interval.map(|iv| Instant::now() + iv.mul_f64(i as f64 / connections as f64));
                loop {
                    let sent = match (next_send, interval) {
                        (Some(at), Some(iv)) => {
                            if at >= deadline {
                                break;
                            }
                            tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
                            next_send = Some(at + iv);
                            at
                        }
                        _ => {
                            let now = Instant::now();
                            if now >= deadline {
                                break;
                            }
                            now
                        }
                    };
                    let got = conn.request().await?;
                    latencies.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    timestamps += got.timestamps;
                    if let Some(v) = got.values {
                        values.push(v);
                    }
                }
                Ok::<_, anyhow::Error>((latencies, values, timestamps, conn))
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut ranges = Vec::new();
    let mut timestamps = 0;
    let mut conns = Vec::with_capacity(connections);
    for t in tasks {
        let (l, v, n, conn) = t.await??;
        latencies.extend(l);
        ranges.extend(v);
        timestamps += n;
        conns.push(conn);
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu_after: u64 = pids.iter().map(|p| cpu_ns(*p)).sum();
    let client_after = cpu_ns(std::process::id());
    for conn in &mut conns {
        conn.finish().await?;
    }
    // No value handed out twice: ranges must not overlap.
    ranges.sort_unstable();
    if let Some(w) = ranges.windows(2).find(|w| w[1].0 <= w[0].1) {
        bail!(
            "{}: values handed out twice: {:?} and {:?}",
            target.kind.label(),
            w[0],
            w[1]
        );
    }
    latencies.sort_unstable();
    let requests = latencies.len() as u64;
    ensure!(
        requests > 0,
        "{}: no request completed",
        target.kind.label()
    );
    Ok(Window {
        target: target.kind.short(),
        round,
        secs,
        requests,
        timestamps,
        req_per_sec: requests as f64 / secs,
        ts_per_sec: timestamps as f64 / secs,
        p50_us: percentile(&latencies, 0.50),
        p99_us: percentile(&latencies, 0.99),
        p999_us: percentile(&latencies, 0.999),
        server_cpu_us_per_req: (cpu_after.saturating_sub(cpu_before)) as f64
            / 1000.0
            / requests as f64,
        client_cpu_us_per_req: (client_after.saturating_sub(client_before)) as f64
            / 1000.0
            / requests as f64,
    })
}

fn rand_tag() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// `--redraw --out DIR`: draws `DIR/compare.png` again from `DIR/compare.json` (after a change
/// to the chart alone; nothing is measured).
fn redraw(out: &Path) -> ExitCode {
    let drawn = (|| -> anyhow::Result<()> {
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("compare.json"))?)?;
        let summaries: Vec<Summary> = serde_json::from_value(report["summary"].clone())?;
        super::chart::draw(&summaries, &out.join("compare.png"))
    })();
    match drawn {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("compare: redraw failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The run

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub target: String,
    pub label: String,
    pub durability: String,
    pub req_per_sec: f64,
    pub ts_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub server_cpu_us_per_req: f64,
    pub client_cpu_us_per_req: f64,
    pub peak_rss_mb: f64,
    pub ratio_to_ceiling: f64,
    pub ratio_min: f64,
    pub ratio_max: f64,
}

async fn run(options: Options) -> anyhow::Result<()> {
    let started = Instant::now();
    std::fs::create_dir_all(&options.out)?;
    raise_fd_limit();
    let (ceiling, hyper_addr) = start_ceiling()?;
    let (timelock, _) = start_timelock(&[])?;
    let constant = |kind| Target {
        kind,
        addr: Some(if kind == Kind::CeilingHyper {
            hyper_addr
        } else {
            ceiling.addr
        }),
        pids: vec![ceiling.pid()],
        durability: "none (constant)".into(),
        peer: None,
        tls: None,
    };
    let mut targets = vec![
        constant(Kind::Ceiling),
        constant(Kind::CeilingHyper),
        constant(Kind::CeilingStart),
    ];
    for kind in [
        Kind::Fresh,
        Kind::Batch,
        Kind::TlTs,
        Kind::StartTransaction,
        Kind::LockUnlock,
    ] {
        targets.push(Target {
            kind,
            addr: Some(timelock.addr),
            pids: vec![timelock.pid()],
            durability: if kind == Kind::LockUnlock {
                "locks in memory (they die with the process, as in TimeLock)".into()
            } else {
                "bound fsynced (RocksDB sync write) before any timestamp above it; one write per reservation of at least 1,000,000 (about 2 s of traffic at high rates)".into()
            },
            peer: None,
            tls: None,
        });
    }
    // `ALT_BIN=path`: the same three loads against another build of the server, each round
    // beside this build's, so that a change (a transport wrapper replaced by the library's, say)
    // is measured on and off in one run.
    let alt = match std::env::var_os("ALT_BIN") {
        Some(path) => Some(start_binary_in(
            Path::new(&path),
            tempfile::tempdir_in(bench_dir())?,
            &[],
        )?),
        None => None,
    };
    if let Some((server, _)) = &alt {
        for of in AltOf::ALL {
            targets.push(Target {
                kind: Kind::Alt(of),
                addr: Some(server.addr),
                pids: vec![server.pid()],
                durability: "as this build".into(),
                peer: None,
                tls: None,
            });
        }
    }
    // The same fresh-timestamp load against the deployments people run: TLS, access control
    // and a cluster leader, each a server of its own, compared with `fresh` round by round.
    let variants = Variants::start().await?;
    for (kind, server, tls, durability) in [
        (
            Kind::FreshTls,
            &variants.tls,
            Some(variants.connector.clone()),
            "as fresh",
        ),
        (Kind::FreshAuth, &variants.auth, None, "as fresh"),
        (
            Kind::FreshLeader,
            &variants.leader,
            None,
            "bound in etcd (one member, raft WAL fdatasync) before any timestamp above it",
        ),
    ] {
        targets.push(Target {
            kind,
            addr: Some(server.addr),
            pids: vec![server.pid()],
            durability: durability.into(),
            peer: None,
            tls,
        });
    }
    // `TARGETS=fresh,tl/st` (short names) narrows a run to those targets and the ceiling (and
    // the `/tl/st`-shaped ceiling with `tl/st`), for profiling one path.
    if let Ok(only) = std::env::var("TARGETS") {
        let wanted: Vec<&str> = only.split(',').map(str::trim).collect();
        targets.retain(|t| {
            t.kind == Kind::Ceiling
                || wanted.contains(&t.kind.short().as_str())
                || (t.kind == Kind::CeilingStart && wanted.contains(&"tl/st"))
        });
    }
    let mut skipped = Vec::new();
    if options.peers {
        for kind in PeerKind::ALL {
            match peers::start(kind).await {
                Ok(peer) => {
                    let peer = Arc::new(peer);
                    targets.push(Target {
                        kind: Kind::Peer(kind),
                        addr: None,
                        pids: peer.pids.clone(),
                        durability: peer.durability.clone(),
                        peer: Some(peer),
                        tls: None,
                    });
                }
                Err(e) => {
                    println!("compare: {} skipped: {e:#}", kind.label());
                    skipped.push((kind.label().to_string(), format!("{e:#}")));
                }
            }
        }
    }

    // Warm-up, then interleaved rounds in rotating order.
    for t in &targets {
        window(t, options.connections, options.warmup * 3, 0, None)
            .await
            .with_context(|| format!("warm-up of {}", t.kind.label()))?;
    }
    let mut windows: Vec<Window> = Vec::new();
    for round in 0..options.rounds {
        let n = targets.len();
        for k in 0..n {
            let t = &targets[(k + round) % n];
            window(t, options.connections, options.warmup, round, None).await?;
            let w = window(t, options.connections, options.window, round, None)
                .await
                .with_context(|| format!("{} in round {round}", t.kind.label()))?;
            windows.push(w);
        }
        eprintln!(
            "compare: round {}/{} done ({:.0} s)",
            round + 1,
            options.rounds,
            started.elapsed().as_secs_f64()
        );
    }

    let summaries = summarise(&targets, &windows, options.rounds);
    print_table(&summaries, &options);
    let shaped = shaped_start_ratio(&windows, options.rounds);
    if let Some((median, min, max)) = shaped {
        println!(
            "\n/tl/st against the ceiling shaped as /tl/st (median of per-round ratios): **{median:.3}** ({min:.2}–{max:.2})"
        );
    }

    let mut variant_ratios = serde_json::Map::new();
    for (variant, goal) in [
        ("fresh-tls", 0.9),
        ("fresh-auth", 0.95),
        ("fresh-leader", 0.95),
    ] {
        if let Some((median, min, max)) = ratio_between(&windows, variant, "fresh", options.rounds)
        {
            println!(
                "{variant} against fresh (median of per-round ratios): **{median:.3}** ({min:.2}–{max:.2}; goal ≥ {goal})"
            );
            variant_ratios.insert(
                variant.into(),
                serde_json::json!({"median": median, "min": min, "max": max, "goal": goal}),
            );
        }
    }

    let mut alt_ratios = serde_json::Map::new();
    for of in AltOf::ALL {
        let (alt, base) = (Kind::Alt(of).short(), of.base().short());
        if let Some((median, min, max)) = ratio_between(&windows, &alt, &base, options.rounds) {
            println!(
                "{alt} against {base} (ALT_BIN build over this one, median of per-round ratios): **{median:.3}** ({min:.2}–{max:.2})"
            );
            alt_ratios.insert(
                alt,
                serde_json::json!({"median": median, "min": min, "max": max}),
            );
        }
    }

    let mut report = serde_json::json!({
        "machine": machine(),
        "alt_to_this_build": alt_ratios,
        "variants_to_fresh": variant_ratios,
        "connections": options.connections,
        "window_ms": options.window.as_millis() as u64,
        "rounds": options.rounds,
        "windows": windows,
        "summary": summaries,
        "skipped": skipped,
        "tl_st_to_shaped_ceiling": shaped.map(|(median, min, max)| {
            serde_json::json!({"median": median, "min": min, "max": max})
        }),
    });

    if options.extras {
        let half = half_load(&targets, &summaries, &options).await?;
        report["half_load"] = half;
        report["resources"] = resources().await?;
        report["scale"] = scale(&options).await?;
    }
    if !options.smoke {
        let json_path = options.out.join("compare.json");
        std::fs::write(&json_path, serde_json::to_vec_pretty(&report)?)?;
        let png_path = options.out.join("compare.png");
        match super::chart::draw(&summaries, &png_path) {
            Ok(()) => println!(
                "\nraw numbers: {}\nchart: {}",
                json_path.display(),
                png_path.display()
            ),
            Err(e) => println!(
                "\nraw numbers: {}\nchart not drawn: {e:#}",
                json_path.display()
            ),
        }
    } else {
        println!(
            "compare: smoke run passed (every reply valid) in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    drop(alt);
    drop(variants);
    drop(timelock);
    drop(ceiling);
    Ok(())
}

/// The servers of the deployment variants (TLS, access control, cluster leader) and what
/// their clients need.
struct Variants {
    tls: Server,
    connector: tokio_rustls::TlsConnector,
    auth: Server,
    leader: Server,
    // Dropped after the leader, which would otherwise spend its last moments retrying etcd.
    _etcd: PeerProcess,
}

impl Variants {
    async fn start() -> anyhow::Result<Variants> {
        // TLS: a self-signed certificate for `localhost`, trusted by the harness's client.
        let dir = tempfile::tempdir_in(bench_dir())?;
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
        let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_file, cert.cert.pem())?;
        std::fs::write(&key_file, cert.key_pair.serialize_pem())?;
        let (tls, _) = start_timelock_in(
            dir,
            &[
                (
                    "TIMELOCK__TLS__CERT_FILE",
                    cert_file.to_str().expect("utf-8 path"),
                ),
                (
                    "TIMELOCK__TLS__KEY_FILE",
                    key_file.to_str().expect("utf-8 path"),
                ),
            ],
        )?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.cert.der().clone())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));

        // Access control: the namespace needs its token (held as a SHA-256 digest), and an
        // admin credential closes the admin routes, as a deployment would configure both.
        let dir = tempfile::tempdir_in(bench_dir())?;
        let tokens = dir.path().join("namespace-tokens");
        std::fs::write(&tokens, format!("{NS} {NAMESPACE_TOKEN}\n"))?;
        let (auth, _) = start_timelock_in(
            dir,
            &[
                (
                    "TIMELOCK__AUTH__NAMESPACE_TOKENS_FILE",
                    tokens.to_str().expect("utf-8 path"),
                ),
                ("TIMELOCK__AUTH__ADMIN_TOKEN", "env:BENCH_ADMIN_TOKEN"),
                ("BENCH_ADMIN_TOKEN", "bench-admin-token-0123456789"),
            ],
        )?;

        // A one-node cluster on a one-member etcd: the leader's request path (the term gate
        // and leader routing) against the single node's.
        let etcd = peers::start(PeerKind::Etcd).await?;
        let endpoint = format!("http://{}", etcd.addr);
        let (leader, _) = start_timelock(&[
            ("TIMELOCK__CLUSTER__MODE", "etcd"),
            ("TIMELOCK__CLUSTER__ETCD_ENDPOINTS", endpoint.as_str()),
            ("TIMELOCK__CLUSTER__NODE_ID", "bench"),
        ])?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while fresh_once(leader.addr, NS).await.is_err() {
            ensure!(
                Instant::now() < deadline,
                "the cluster node did not become leader"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Variants {
            tls,
            connector,
            auth,
            leader,
            _etcd: etcd,
        })
    }
}

/// `a`'s requests/s over `b`'s, per round: the median, lowest and highest.
fn ratio_between(windows: &[Window], a: &str, b: &str, rounds: usize) -> Option<(f64, f64, f64)> {
    let rate = |target: &str, round: usize| {
        windows
            .iter()
            .find(|w| w.round == round && w.target == target)
            .map(|w| w.req_per_sec)
    };
    let mut ratios: Vec<f64> = (0..rounds)
        .filter_map(|r| Some(rate(a, r)? / rate(b, r)?))
        .collect();
    if ratios.is_empty() {
        return None;
    }
    let median = median(&mut ratios);
    Some((median, ratios[0], ratios[ratios.len() - 1]))
}

/// `/tl/st` requests/s over the `/tl/st`-shaped ceiling's, per round: the median, lowest and
/// highest. What is left of `/tl/st`'s gap once HTTP bytes cost both sides alike.
fn shaped_start_ratio(windows: &[Window], rounds: usize) -> Option<(f64, f64, f64)> {
    ratio_between(windows, "tl/st", "ceiling-st", rounds)
}

fn summarise(targets: &[Target], windows: &[Window], rounds: usize) -> Vec<Summary> {
    let ceiling_by_round: Vec<Option<f64>> = (0..rounds)
        .map(|r| {
            windows
                .iter()
                .find(|w| w.round == r && w.target == "ceiling")
                .map(|w| w.req_per_sec)
        })
        .collect();
    targets
        .iter()
        .map(|t| {
            let mine: Vec<&Window> = windows
                .iter()
                .filter(|w| w.target == t.kind.short())
                .collect();
            let pick = |f: &dyn Fn(&Window) -> f64| {
                let mut v: Vec<f64> = mine.iter().map(|w| f(w)).collect();
                median(&mut v)
            };
            let mut ratios: Vec<f64> = mine
                .iter()
                .filter_map(|w| Some(w.req_per_sec / ceiling_by_round.get(w.round).copied()??))
                .collect();
            let ratio = median(&mut ratios);
            Summary {
                target: t.kind.short(),
                label: t.kind.label(),
                durability: t.durability.clone(),
                req_per_sec: pick(&|w| w.req_per_sec),
                ts_per_sec: pick(&|w| w.ts_per_sec),
                p50_us: pick(&|w| w.p50_us),
                p99_us: pick(&|w| w.p99_us),
                p999_us: pick(&|w| w.p999_us),
                server_cpu_us_per_req: pick(&|w| w.server_cpu_us_per_req),
                client_cpu_us_per_req: pick(&|w| w.client_cpu_us_per_req),
                peak_rss_mb: peak_rss_mb(&t.pids),
                ratio_to_ceiling: ratio,
                ratio_min: ratios.first().copied().unwrap_or(f64::NAN),
                ratio_max: ratios.last().copied().unwrap_or(f64::NAN),
            }
        })
        .collect()
}

fn print_table(summaries: &[Summary], options: &Options) {
    println!();
    println!(
        "{} connections, {} rounds of {} ms windows (medians); {}",
        options.connections,
        options.rounds,
        options.window.as_millis(),
        machine()
    );
    println!();
    println!("| target | requests/s | timestamps/s | p50 µs | p99 µs | p99.9 µs | server CPU µs/req | generator CPU µs/req | peak RSS MB | ratio to ceiling (rounds) |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for s in summaries {
        println!(
            "| {} | {:.0} | {} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} | **{:.3}** ({:.2}–{:.2}) |",
            s.label,
            s.req_per_sec,
            if s.target.starts_with("ceiling") || s.target == "lock+unlock" {
                "–".to_string()
            } else {
                format!("{:.0}", s.ts_per_sec)
            },
            s.p50_us,
            s.p99_us,
            s.p999_us,
            s.server_cpu_us_per_req,
            s.client_cpu_us_per_req,
            s.peak_rss_mb,
            s.ratio_to_ceiling,
            s.ratio_min,
            s.ratio_max
        );
    }
    println!();
    println!("| target | durability |");
    println!("|---|---|");
    for s in summaries {
        println!("| {} | {} |", s.label, s.durability);
    }
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_default();
    format!("{cpus} CPUs ({model}), Linux, loopback")
}

fn raise_fd_limit() {
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max.min(65_536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Half load: p99 at half the ceiling's throughput, open loop.

async fn half_load(
    targets: &[Target],
    summaries: &[Summary],
    options: &Options,
) -> anyhow::Result<serde_json::Value> {
    let ceiling_rate = summaries[0].req_per_sec;
    let rate = ceiling_rate / 2.0;
    let pair = [&targets[0], &targets[1]]; // ceiling, fresh-timestamp
    let mut p99 = [Vec::new(), Vec::new()];
    let mut achieved = [Vec::new(), Vec::new()];
    for round in 0..options.rounds.min(5) {
        for k in 0..2 {
            let i = (k + round) % 2;
            let w = window(
                pair[i],
                options.connections,
                options.window,
                round,
                Some(rate),
            )
            .await?;
            p99[i].push(w.p99_us);
            achieved[i].push(w.req_per_sec);
        }
    }
    let c = median(&mut p99[0].clone());
    let f = median(&mut p99[1].clone());
    println!();
    println!(
        "half load ({rate:.0} requests/s open loop, {} connections, latency from the scheduled send): p99 ceiling {c:.0} µs, fresh-timestamp {f:.0} µs: **{:.2}×** the ceiling's",
        options.connections,
        f / c
    );
    Ok(serde_json::json!({
        "rate": rate,
        "ceiling_p99_us": p99[0],
        "fresh_p99_us": p99[1],
        "ceiling_achieved": achieved[0],
        "fresh_achieved": achieved[1],
        "median_ratio": f / c,
    }))
}

// ---------------------------------------------------------------------------------------------
// Resources: memory and start-up.

async fn fresh_once(addr: SocketAddr, ns: &str) -> anyhow::Result<i64> {
    let mut http = Http::connect(addr).await?;
    let (status, body) = http
        .exchange(&post(&format!("/{ns}/timestamp/fresh-timestamp"), ""))
        .await?;
    ensure!(status == 200, "status {status}");
    parse_number(body)
}

/// From spawning the process to the first timestamp answered.
async fn time_to_first_timestamp(
    dir: tempfile::TempDir,
    ns: &str,
    env: &[(&str, &str)],
) -> anyhow::Result<(Server, Duration)> {
    let started = Instant::now();
    let (server, _) = start_timelock_in(dir, env)?;
    loop {
        if fresh_once(server.addr, ns).await.is_ok() {
            return Ok((server, started.elapsed()));
        }
        ensure!(started.elapsed() < Duration::from_secs(30), "no timestamp");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn resources() -> anyhow::Result<serde_json::Value> {
    // Cold start: a fresh data dir each time.
    let mut cold = Vec::new();
    for _ in 0..5 {
        let dir = tempfile::tempdir_in(bench_dir())?;
        let (_server, took) = time_to_first_timestamp(dir, "cold", &[]).await?;
        cold.push(took.as_secs_f64() * 1000.0);
    }
    // Idle RSS of a started server that has served one request.
    let (idle, _) = start_timelock(&[])?;
    fresh_once(idle.addr, "idle").await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle_rss = status_kb(idle.pid(), "VmRSS:").unwrap_or(0) as f64 / 1024.0;
    drop(idle);

    // 500 namespaces with 100,000 held locks (200 per namespace, one request each).
    let (loaded, _) = start_timelock(&[])?;
    let mut http = Http::connect(loaded.addr).await?;
    for ns in 0..500 {
        let descriptors: Vec<String> = (0..200)
            .map(|i| format!("\"{}\"", base64_of(&format!("table.row{ns}.{i}"))))
            .collect();
        let body = format!(
            r#"{{"requestId":"{}","lockDescriptors":[{}],"acquireTimeoutMs":1000}}"#,
            uuid::Uuid::new_v4(),
            descriptors.join(",")
        );
        let (status, reply) = http
            .exchange(&post(&format!("/tl/l/ns{ns}"), &body))
            .await?;
        ensure!(
            status == 200 && find(reply, b"\"successful\"").is_some(),
            "locking in ns{ns}: {status}"
        );
        fresh_once(loaded.addr, &format!("ns{ns}")).await?;
    }
    let locked_rss = status_kb(loaded.pid(), "VmRSS:").unwrap_or(0) as f64 / 1024.0;
    drop(loaded);

    // Restart with 500 namespaces: create them, stop gracefully, time the restart.
    let dir = tempfile::tempdir_in(bench_dir())?;
    let dir_path = dir.path().to_path_buf();
    let (mut server, _) = start_timelock_in(dir, &[])?;
    for ns in 0..500 {
        fresh_once(server.addr, &format!("ns{ns}")).await?;
    }
    unsafe {
        libc::kill(server.pid() as i32, libc::SIGTERM);
    }
    let _ = server.child.wait();
    let dir = server._dir.take().expect("dir");
    drop(server);
    let mut restarts = Vec::new();
    let mut dir = Some(dir);
    for _ in 0..5 {
        let (mut s, took) = time_to_first_timestamp(dir.take().unwrap(), "ns499", &[]).await?;
        restarts.push(took.as_secs_f64() * 1000.0);
        unsafe {
            libc::kill(s.pid() as i32, libc::SIGTERM);
        }
        let _ = s.child.wait();
        dir = s._dir.take();
    }
    let _ = dir_path;
    let cold_ms = median(&mut cold.clone());
    let restart_ms = median(&mut restarts.clone());
    println!();
    println!("| resource | measured | goal |");
    println!("|---|---:|---:|");
    println!("| idle RSS (after one request) | {idle_rss:.1} MB | < 30 MB |");
    println!("| RSS with 500 namespaces and 100,000 held locks | {locked_rss:.1} MB | < 256 MB |");
    println!(
        "| cold start to first timestamp (median of 5; worst {:.0}) | {cold_ms:.0} ms | < 100 ms |",
        cold.iter().cloned().fold(0.0, f64::max)
    );
    println!("| restart with 500 namespaces to first timestamp (median of 5; worst {:.0}) | {restart_ms:.0} ms | < 500 ms |", restarts.iter().cloned().fold(0.0, f64::max));
    Ok(serde_json::json!({
        "idle_rss_mb": idle_rss,
        "rss_500_namespaces_100k_locks_mb": locked_rss,
        "cold_start_ms": cold,
        "restart_500_namespaces_ms": restarts,
    }))
}

// ---------------------------------------------------------------------------------------------
// Scale: how cost grows with namespaces, held locks, waiters and connections.

async fn scale(options: &Options) -> anyhow::Result<serde_json::Value> {
    let secs = Duration::from_millis(1000);
    let (server, _) = start_timelock(&[("TIMELOCK__NAMESPACES__MAX", "10100")])?;
    let target = |kind| Target {
        kind,
        addr: Some(server.addr),
        pids: vec![server.pid()],
        durability: String::new(),
        peer: None,
        tls: None,
    };
    let mut out = serde_json::Map::new();
    println!();
    println!("| scale | requests/s | p99 µs | server CPU µs/req |");
    println!("|---|---:|---:|---:|");

    // Namespaces: fresh timestamps spread over N namespaces (each connection cycles through
    // its share of them).
    for n in [1usize, 500, 10_000] {
        let mut http = Http::connect(server.addr).await?;
        for i in 0..n {
            let (status, _) = http
                .exchange(&post(&format!("/sc{i}/timestamp/fresh-timestamp"), ""))
                .await?;
            ensure!(status == 200, "creating namespace sc{i}: {status}");
        }
        let w = spread_window(server.addr, server.pid(), options.connections, n, secs).await?;
        println!(
            "| fresh-timestamp over {n} namespaces | {:.0} | {:.0} | {:.1} |",
            w.req_per_sec, w.p99_us, w.server_cpu_us_per_req
        );
        out.insert(format!("namespaces_{n}"), serde_json::to_value(&w)?);
    }

    // Held locks: lock + unlock with 0 or 100,000 other locks held in the same namespace.
    let lock_target = target(Kind::LockUnlock);
    let w0 = window(&lock_target, options.connections, secs, 0, None).await?;
    let mut http = Http::connect(server.addr).await?;
    for batch in 0..100 {
        let descriptors: Vec<String> = (0..1000)
            .map(|i| format!("\"{}\"", base64_of(&format!("held.{batch}.{i}"))))
            .collect();
        let body = format!(
            r#"{{"requestId":"{}","lockDescriptors":[{}],"acquireTimeoutMs":1000}}"#,
            uuid::Uuid::new_v4(),
            descriptors.join(",")
        );
        let (status, _) = http.exchange(&post("/tl/l/bench", &body)).await?;
        ensure!(status == 200, "holding locks: {status}");
    }
    let w1 = window(&lock_target, options.connections, secs, 0, None).await?;
    for (label, w) in [("0", &w0), ("100,000", &w1)] {
        println!(
            "| lock + unlock with {label} other locks held | {:.0} | {:.0} | {:.1} |",
            w.req_per_sec, w.p99_us, w.server_cpu_us_per_req
        );
    }
    out.insert("locks_held_0".into(), serde_json::to_value(&w0)?);
    out.insert("locks_held_100000".into(), serde_json::to_value(&w1)?);

    // Waiters: one lock held, W requests queued on it, then released: time until all got it.
    for waiters in [1usize, 100, 1000] {
        let took = waiters_handoff(server.addr, waiters).await?;
        println!(
            "| hand-off through {waiters} queued waiters (one lock, FIFO) | {:.0} per s | – | – |",
            waiters as f64 / took.as_secs_f64()
        );
        out.insert(
            format!("waiters_{waiters}_ms"),
            (took.as_secs_f64() * 1000.0).into(),
        );
    }

    // Connections: fresh timestamps with 1, 32 and 1,000 connections.
    let fresh = target(Kind::Fresh);
    for c in [1usize, 32, 1000] {
        let w = window(&fresh, c, secs, 0, None).await?;
        println!(
            "| fresh-timestamp with {c} connections | {:.0} | {:.0} | {:.1} |",
            w.req_per_sec, w.p99_us, w.server_cpu_us_per_req
        );
        out.insert(format!("connections_{c}"), serde_json::to_value(&w)?);
    }
    Ok(serde_json::Value::Object(out))
}

/// Fresh timestamps with each request going to the next of `namespaces` namespaces.
async fn spread_window(
    addr: SocketAddr,
    pid: u32,
    connections: usize,
    namespaces: usize,
    length: Duration,
) -> anyhow::Result<Window> {
    let requests: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..namespaces)
            .map(|i| post(&format!("/sc{i}/timestamp/fresh-timestamp"), ""))
            .collect(),
    );
    let cpu_before = cpu_ns(pid);
    let started = Instant::now();
    let deadline = started + length;
    let mut tasks = Vec::new();
    for c in 0..connections {
        let requests = requests.clone();
        tasks.push(tokio::spawn(async move {
            let mut http = Http::connect(addr).await?;
            let mut last = vec![i64::MIN; requests.len()];
            let mut latencies = Vec::new();
            let mut i = c % requests.len();
            while Instant::now() < deadline {
                let sent = Instant::now();
                let (status, body) = http.exchange(&requests[i]).await?;
                ensure!(status == 200, "status {status}");
                let v = parse_number(body)?;
                ensure!(v > last[i], "namespace sc{i}: {v} after {}", last[i]);
                last[i] = v;
                latencies.push(sent.elapsed().as_micros() as u32);
                i = (i + connections) % requests.len();
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let requests = latencies.len() as u64;
    Ok(Window {
        target: format!("spread-{namespaces}"),
        round: 0,
        secs,
        requests,
        timestamps: requests,
        req_per_sec: requests as f64 / secs,
        ts_per_sec: requests as f64 / secs,
        p50_us: percentile(&latencies, 0.5),
        p99_us: percentile(&latencies, 0.99),
        p999_us: percentile(&latencies, 0.999),
        server_cpu_us_per_req: (cpu_ns(pid) - cpu_before) as f64 / 1000.0 / requests as f64,
        client_cpu_us_per_req: f64::NAN,
    })
}

/// Holds one lock, queues `waiters` lock requests on it (each on its own connection), releases
/// it, and measures until every waiter has held and released it in turn.
async fn waiters_handoff(addr: SocketAddr, waiters: usize) -> anyhow::Result<Duration> {
    let descriptor = base64_of(&format!("contended-{}", rand_tag()));
    let lock_body = |id: &str| {
        format!(
            r#"{{"requestId":"{id}","lockDescriptors":["{descriptor}"],"acquireTimeoutMs":60000}}"#
        )
    };
    let mut holder = Http::connect(addr).await?;
    let first = uuid::Uuid::new_v4().to_string();
    let (status, _) = holder
        .exchange(&post("/tl/l/wait", &lock_body(&first)))
        .await?;
    ensure!(status == 200, "first lock: {status}");
    let order = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for w in 0..waiters {
        let body = lock_body(&uuid::Uuid::new_v4().to_string());
        let order = order.clone();
        let mut http = Http::connect(addr).await?;
        tasks.push(tokio::spawn(async move {
            let id = find_id(&body);
            let (status, reply) = http.exchange(&post("/tl/l/wait", &body)).await?;
            ensure!(
                status == 200 && find(reply, b"\"successful\"").is_some(),
                "waiter {w}: {status}"
            );
            order.lock().push(w);
            let (status, _) = http
                .exchange(&post("/tl/ul2/wait", &format!("[\"{id}\"]")))
                .await?;
            ensure!(status == 200, "waiter {w} unlock: {status}");
            Ok::<_, anyhow::Error>(())
        }));
    }
    // Let every waiter queue up.
    tokio::time::sleep(Duration::from_millis(200 + waiters as u64)).await;
    let started = Instant::now();
    let (status, _) = holder
        .exchange(&post("/tl/ul2/wait", &format!("[\"{first}\"]")))
        .await?;
    ensure!(status == 200, "release: {status}");
    for t in tasks {
        t.await??;
    }
    let took = started.elapsed();
    ensure!(
        order.lock().len() == waiters,
        "not every waiter got the lock"
    );
    let _: HashSet<usize> = order.lock().iter().copied().collect();
    Ok(took)
}

fn find_id(body: &str) -> String {
    body.split('"').nth(3).unwrap_or_default().to_string()
}
