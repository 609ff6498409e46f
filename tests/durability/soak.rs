//! Soak: timestamps and locks mixed for a long time, with `kill -9` every minute.
//!
//!     SOAK_SECS=1800 cargo test --release --test durability soak -- --ignored --nocapture
//!
//! 4 timestamp clients (per-client strictly increasing, above everything acknowledged before
//! each kill) and 4 lock clients contending for 8 lock names (no two clients may hold one name
//! at once, checked on the client side with the lease the server granted), against the real
//! server. Every `SOAK_KILL_SECS` (60) the server is killed with `kill -9` and restarted.
//! Reports violations (must be 0), and before each kill the server's RSS and open file
//! descriptors, so growth within a run shows. Bounded: stops by itself after `SOAK_SECS`.
//! Ignored by default (`cargo test` skips it); `SOAK_SECS=60` makes a quick one.

use crate::common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use parking_lot::Mutex;
use serde_json::json;

fn env_secs(name: &str, default: u64) -> Duration {
    Duration::from_secs(
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

fn status_value(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run with SOAK_SECS=... cargo test --release --test durability soak -- --ignored"]
async fn soak_timestamps_and_locks_with_kill9_every_minute() {
    let total = env_secs("SOAK_SECS", 1800);
    let every = env_secs("SOAK_KILL_SECS", 60);
    let (_dir, data) = temp_data_dir();
    let mut server = TestServer::start(&data, &[("TIMELOCK__TIMESTAMP__RESERVATION", "1000")]);
    let base = Arc::new(Mutex::new(server.base()));
    let stop = Arc::new(AtomicBool::new(false));
    let violations = Arc::new(Mutex::new(Vec::<String>::new()));
    let acknowledged = Arc::new(AtomicI64::new(0));
    let ops = Arc::new(AtomicU64::new(0));
    // Lock name -> (client, server generation) of its current holder, as clients see it.
    let holders: Arc<Mutex<HashMap<usize, (usize, u64)>>> = Default::default();
    let generation = Arc::new(AtomicU64::new(0));
    let client = client();
    let mut tasks = Vec::new();
    for c in 0..4 {
        let (base, stop, violations, acknowledged, ops, client) = (
            base.clone(),
            stop.clone(),
            violations.clone(),
            acknowledged.clone(),
            ops.clone(),
            client.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut last = 0i64;
            while !stop.load(Ordering::Acquire) {
                let url = format!("{}/soak/timestamp/fresh-timestamp", base.lock());
                let floor = acknowledged.load(Ordering::Acquire);
                let Ok(r) = client.post(&url).send().await else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let Ok(ts) = r.text().await.unwrap_or_default().trim().parse::<i64>() else {
                    continue;
                };
                if ts <= last || ts <= floor {
                    violations
                        .lock()
                        .push(format!("client {c}: {ts} after {last} (floor {floor})"));
                }
                last = ts;
                acknowledged.fetch_max(ts, Ordering::AcqRel);
                ops.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for c in 0..4 {
        let (base, stop, violations, holders, ops, client, generation) = (
            base.clone(),
            stop.clone(),
            violations.clone(),
            holders.clone(),
            ops.clone(),
            client.clone(),
            generation.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut n = c;
            while !stop.load(Ordering::Acquire) {
                n = (n * 7 + 3) % 8;
                let name = n;
                let descriptor = base64_name(name);
                let id = uuid::Uuid::new_v4();
                let base_url = base.lock().clone();
                let gen = generation.load(Ordering::Acquire);
                let body = json!({"requestId": id, "lockDescriptors": [descriptor], "acquireTimeoutMs": 200});
                let Ok(r) = client
                    .post(format!("{base_url}/tl/l/soak"))
                    .json(&body)
                    .send()
                    .await
                else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let Ok(v) = r.json::<serde_json::Value>().await else {
                    continue;
                };
                if v["type"] != "successful" {
                    continue;
                }
                // Held: nobody else may hold this name in the same server process (locks die
                // with the process, so holds from before a kill do not count).
                {
                    let mut h = holders.lock();
                    if let Some((other, other_gen)) = h.get(&name) {
                        if *other != c && *other_gen == gen {
                            violations
                                .lock()
                                .push(format!("lock {name}: client {c} while client {other} holds it"));
                        }
                    }
                    h.insert(name, (c, gen));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
                holders.lock().remove(&name);
                let _ = client
                    .post(format!("{base_url}/tl/ul2/soak"))
                    .json(&json!([id]))
                    .send()
                    .await;
                ops.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let started = Instant::now();
    let mut kills = 0;
    let mut samples = Vec::new();
    while started.elapsed() < total {
        tokio::time::sleep(every.min(total.saturating_sub(started.elapsed()))).await;
        let pid = server.pid().unwrap();
        let rss = status_value(pid, "VmRSS:");
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .unwrap_or(0);
        samples.push((started.elapsed().as_secs(), rss, fds));
        println!(
            "soak t={:>5}s: {} ops, RSS {rss} kB, {fds} fds, {} violations",
            started.elapsed().as_secs(),
            ops.load(Ordering::Relaxed),
            violations.lock().len()
        );
        server.kill9();
        kills += 1;
        // Locks die with the process: a new generation.
        generation.fetch_add(1, Ordering::AcqRel);
        server.restart();
        *base.lock() = server.base();
    }
    stop.store(true, Ordering::Release);
    for t in tasks {
        t.await.unwrap();
    }
    let violations = violations.lock().clone();
    println!(
        "soak: {} s, {kills} kill -9s, {} operations, {} violations; (t, RSS kB, fds) before each kill: {samples:?}",
        started.elapsed().as_secs(),
        ops.load(Ordering::Relaxed),
        violations.len()
    );
    assert!(violations.is_empty(), "{violations:?}");
    assert!(ops.load(Ordering::Relaxed) > 100);
}

fn base64_name(n: usize) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("soak-lock-{n}"))
}
