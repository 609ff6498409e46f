//! Cluster mode, measured: failover time and throughput against a single node, in one run.
//!
//!     cargo bench -p timelock-bench --bench cluster
//!
//! Starts a real etcd (Debian's `etcd-server`) and three release-built `timelock` nodes on
//! loopback with the shipped cluster defaults (lease TTL 3 s, renewal every 500 ms, safety
//! margin 500 ms), then:
//! 1. **failover**: `FAILOVERS` times (default 10), `kill -9` the leader and time until a
//!    client that tries every surviving node gets a timestamp (checked to be larger than the
//!    last one before the kill); then the same with a graceful stop (SIGTERM: the leader
//!    revokes its lease, so the next one need not wait for it to expire);
//! 2. **throughput**: `CONNECTIONS` (default 32) HTTP/1.1 keep-alive connections fetching fresh
//!    timestamps for `WINDOW_MS` (default 2000) from a single node (RocksDB) and from the
//!    cluster's leader (bounds in etcd), alternating for `ROUNDS` (default 5) rounds so drift
//!    hits both alike. Every reply is checked (a number, strictly increasing per connection).
//!
//! Prints a table; medians and worst cases, and the cluster/single ratio per round.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::etcd::{start_etcd, Proxy};
use common::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn env_parse<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("cluster bench: run with `cargo bench -p timelock-bench --bench cluster`");
        return;
    }
    if !std::path::Path::new(common::BIN).exists() {
        eprintln!(
            "cluster bench: no server binary at {}; build it first: cargo build --release --bin timelock",
            common::BIN
        );
        std::process::exit(1);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

struct Node {
    server: TestServer,
    _dir: tempfile::TempDir,
}

async fn run() {
    let failovers: usize = env_parse("FAILOVERS", 10);
    let connections: usize = env_parse("CONNECTIONS", 32);
    let window = Duration::from_millis(env_parse("WINDOW_MS", 2000));
    let rounds: usize = env_parse("ROUNDS", 5);

    let etcd = start_etcd().await;
    let mut proxies = Vec::new();
    let mut nodes = Vec::new();
    for i in 0..3 {
        // The proxies only forward here (they let the tests partition a node).
        let proxy = Proxy::start(etcd.addr).await;
        let dir = tempfile::tempdir().unwrap();
        let endpoint = proxy.endpoint();
        let id = format!("node{i}");
        let server = TestServer::start(
            &dir.path().join("data"),
            &[
                ("TIMELOCK__CLUSTER__MODE", "etcd"),
                ("TIMELOCK__CLUSTER__ETCD_ENDPOINTS", &endpoint),
                ("TIMELOCK__CLUSTER__NODE_ID", &id),
                ("TIMELOCK__LOG__LEVEL", "warn"),
            ],
        );
        proxies.push(proxy);
        nodes.push(Node { server, _dir: dir });
    }

    // 1. Failover.
    let mut kill_ms = Vec::new();
    let mut term_ms = Vec::new();
    for i in 0..failovers * 3 / 2 {
        let graceful = i >= failovers;
        let leader = wait_for_leader(&nodes).await;
        let before = fetch_any(&nodes, None, Duration::from_secs(30))
            .await
            .unwrap();
        let started = Instant::now();
        if graceful {
            nodes[leader].server.terminate();
        } else {
            nodes[leader].server.kill9();
        }
        let after = fetch_any(&nodes, Some(leader), Duration::from_secs(60))
            .await
            .expect("a new leader serves");
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        assert!(
            after > before,
            "timestamps went back across failover: {before} then {after}"
        );
        if graceful {
            term_ms.push(ms);
        } else {
            kill_ms.push(ms);
        }
        nodes[leader].server.restart();
        wait_for_role(&nodes[leader].server, "follower").await;
    }

    // 2. Throughput: a single node against the cluster's leader.
    let single_dir = tempfile::tempdir().unwrap();
    let single = TestServer::start(
        &single_dir.path().join("data"),
        &[("TIMELOCK__LOG__LEVEL", "warn")],
    );
    let leader = wait_for_leader(&nodes).await;
    let targets = [
        ("single node (RocksDB)", addr(&single)),
        ("cluster leader (etcd)", addr(&nodes[leader].server)),
    ];
    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut ratios = Vec::new();
    for round in 0..rounds {
        let mut this_round = [0.0; 2];
        // Rotate which target goes first.
        for k in 0..2 {
            let t = (k + round) % 2;
            let (_, target) = targets[t];
            load(target, connections, Duration::from_millis(300)).await; // warm-up
            let rate = load(target, connections, window).await;
            this_round[t] = rate;
            rates[t].push(rate);
        }
        ratios.push(this_round[1] / this_round[0]);
    }

    println!();
    println!("timelock cluster mode (3 nodes, 1 etcd member, loopback, 2 cores), shipped cluster defaults");
    println!();
    println!("| failover | runs | median ms | worst ms | best ms |");
    println!("|---|---:|---:|---:|---:|");
    for (name, samples) in [
        (
            "leader `kill -9` -> first timestamp from the new leader",
            &mut kill_ms,
        ),
        (
            "leader SIGTERM (lease revoked) -> first timestamp",
            &mut term_ms,
        ),
    ] {
        samples.sort_by(f64::total_cmp);
        if samples.is_empty() {
            continue;
        }
        println!(
            "| {name} | {} | {:.0} | {:.0} | {:.0} |",
            samples.len(),
            median(samples),
            samples[samples.len() - 1],
            samples[0]
        );
    }
    println!();
    println!(
        "| fresh-timestamp, {connections} connections, {} ms windows x {rounds} | median req/s | min | max |",
        window.as_millis()
    );
    println!("|---|---:|---:|---:|");
    for (t, (name, _)) in targets.iter().enumerate() {
        let mut r = rates[t].clone();
        r.sort_by(f64::total_cmp);
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} |",
            median(&r),
            r[0],
            r[r.len() - 1]
        );
    }
    let mut sorted = ratios.clone();
    sorted.sort_by(f64::total_cmp);
    println!();
    println!(
        "cluster / single, per round: {} (median {:.3})",
        ratios
            .iter()
            .map(|r| format!("{r:.3}"))
            .collect::<Vec<_>>()
            .join(", "),
        median(&sorted)
    );
    drop(proxies);
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

fn addr(server: &TestServer) -> SocketAddr {
    format!("127.0.0.1:{}", server.port).parse().unwrap()
}

async fn role(server: &TestServer) -> Option<String> {
    let response = reqwest::Client::new()
        .get(server.url("/health/ready"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    let body: serde_json::Value = response.json().await.ok()?;
    body["role"].as_str().map(str::to_string)
}

async fn wait_for_leader(nodes: &[Node]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for (i, n) in nodes.iter().enumerate() {
            if role(&n.server).await.as_deref() == Some("leader") {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_for_role(server: &TestServer, wanted: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while role(server).await.as_deref() != Some(wanted) {
        assert!(Instant::now() < deadline, "node did not become {wanted}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A fresh timestamp from whichever node serves (skipping `except`), as a client that tries
/// every node would get it; polls every 10 ms until `limit`.
async fn fetch_any(nodes: &[Node], except: Option<usize>, limit: Duration) -> Option<i64> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let deadline = Instant::now() + limit;
    loop {
        for (i, n) in nodes.iter().enumerate() {
            if Some(i) == except {
                continue;
            }
            if let Ok(r) = client
                .post(n.server.url("/bench/timestamp/fresh-timestamp"))
                .send()
                .await
            {
                if r.status() == 200 {
                    return r.text().await.ok()?.trim().parse().ok();
                }
            }
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

const REQUEST: &[u8] =
    b"POST /bench/timestamp/fresh-timestamp HTTP/1.1\r\nHost: bench\r\nContent-Length: 0\r\n\r\n";

/// Requests per second over `window` with `connections` closed-loop keep-alive connections.
async fn load(target: SocketAddr, connections: usize, window: Duration) -> f64 {
    let deadline = Instant::now() + window;
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(target).await.unwrap();
                stream.set_nodelay(true).unwrap();
                let mut buf = Vec::with_capacity(512);
                let mut last = i64::MIN;
                let mut done = 0u64;
                while Instant::now() < deadline {
                    let ts = exchange(&mut stream, &mut buf).await;
                    assert!(
                        ts > last,
                        "timestamps not increasing on a connection: {last} then {ts}"
                    );
                    last = ts;
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / started.elapsed().as_secs_f64()
}

/// One request on a keep-alive connection; the reply must be `200` with a number body.
async fn exchange(stream: &mut TcpStream, buf: &mut Vec<u8>) -> i64 {
    stream.write_all(REQUEST).await.unwrap();
    buf.clear();
    loop {
        let mut chunk = [0u8; 512];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "server closed the connection");
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = std::str::from_utf8(&buf[..end]).unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "unexpected reply: {head}");
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .expect("content-length");
        let body_start = end + 4;
        if buf.len() < body_start + length {
            continue;
        }
        return std::str::from_utf8(&buf[body_start..body_start + length])
            .unwrap()
            .parse()
            .expect("a number");
    }
}
