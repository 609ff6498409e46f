//! Mutual exclusion under concurrency, in the style of AtlasDB's Jepsen lock tests: 8 clients,
//! four lock names (`alpha|bravo|charlie|delta`), a random mix of lock / refresh / unlock (and
//! the occasional pause longer than the server lease, so the reaper takes locks away). Held
//! locks are refreshed 60% and unlocked 40% of the time, so locks change hands often.
//!
//! Checker (`RefreshCorrectnessChecker`): a client certainly held a lock from the moment its lock
//! request completed until the invocation of its last successful refresh or unlock of that token.
//! For each lock name these intervals of different tokens must never intersect. Bounded in time.

use crate::common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use serde_json::{json, Value};
use uuid::Uuid;

const NAMES: [&str; 4] = ["alpha", "bravo", "charlie", "delta"];

#[derive(Debug, Clone)]
struct Held {
    client: usize,
    name: &'static str,
    token: Uuid,
    from: Instant,
    to: Instant,
}

/// Finds two intervals of different tokens on one lock that intersect.
fn check(intervals: &[Held]) -> Result<usize, String> {
    let mut checked = 0;
    for name in NAMES {
        let mut on_lock: Vec<&Held> = intervals
            .iter()
            .filter(|h| h.name == name && h.to > h.from)
            .collect();
        on_lock.sort_by_key(|h| h.from);
        let mut latest: Option<&Held> = None;
        for h in on_lock {
            if let Some(prev) = latest {
                if h.from < prev.to && h.token != prev.token {
                    return Err(format!("{name}: {prev:?} overlaps {h:?}"));
                }
            }
            if latest.is_none_or(|p| h.to > p.to) {
                latest = Some(h);
            }
            checked += 1;
        }
    }
    Ok(checked)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

async fn call(http: &reqwest::Client, url: String, body: String) -> Option<Value> {
    let r = http
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .ok()?;
    assert_eq!(r.status(), 200);
    r.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_two_clients_ever_hold_the_same_lock() {
    let (_dir, data) = temp_data_dir();
    let env = [
        ("TIMELOCK__LOCK__SERVER_LEASE_MS", "1500"),
        ("TIMELOCK__LOCK__CLIENT_LEASE_MS", "600"),
        ("TIMELOCK__LOCK__REAPER_INTERVAL_MS", "100"),
    ];
    let server = TestServer::start(&data, &env);
    let base = server.base();
    let stop_at = Instant::now() + Duration::from_secs(6);
    let mut tasks = Vec::new();
    for client_id in 0..8usize {
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            let http = client();
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((client_id as u64 + 1) * 0x1234_5678));
            let mut held: HashMap<&'static str, Held> = HashMap::new();
            let mut done: Vec<Held> = Vec::new();
            let mut ops = 0;
            while Instant::now() < stop_at && ops < 600 {
                ops += 1;
                // Mostly act on a lock already held, so locks change hands often.
                let name = if !held.is_empty() && rng.next() % 10 < 7 {
                    let names: Vec<&'static str> = held.keys().copied().collect();
                    names[(rng.next() % names.len() as u64) as usize]
                } else {
                    NAMES[(rng.next() % 4) as usize]
                };
                let roll = rng.next() % 100;
                if roll < 1 {
                    // A pause past the server lease: whatever is held will be reaped.
                    tokio::time::sleep(Duration::from_millis(1_700)).await;
                    continue;
                }
                match held.get(name).cloned() {
                    None => {
                        let token = Uuid::new_v4();
                        let descriptor = base64::engine::general_purpose::STANDARD.encode(name);
                        let body = json!({"requestId": token, "lockDescriptors": [descriptor], "acquireTimeoutMs": rng.next() % 100}).to_string();
                        let Some(v) = call(&http, format!("{base}/tl/l/ns"), body).await else { continue };
                        if v["type"] == "successful" {
                            let now = Instant::now();
                            held.insert(name, Held { client: client_id, name, token, from: now, to: now });
                        }
                    }
                    Some(h) if roll < 60 => {
                        let invoked = Instant::now();
                        let Some(v) = call(&http, format!("{base}/tl/rl2/ns"), json!([h.token]).to_string()).await else { continue };
                        if v["refreshedTokens"] == json!([h.token]) {
                            held.get_mut(name).unwrap().to = invoked;
                        } else {
                            done.push(held.remove(name).unwrap()); // lost (reaped)
                        }
                    }
                    Some(h) => {
                        let invoked = Instant::now();
                        let Some(v) = call(&http, format!("{base}/tl/ul2/ns"), json!([h.token]).to_string()).await else { continue };
                        let mut h = held.remove(name).unwrap();
                        if v == json!([h.token]) {
                            h.to = invoked;
                        }
                        done.push(h);
                    }
                }
                tokio::time::sleep(Duration::from_millis(rng.next() % 5)).await;
            }
            done.extend(held.into_values());
            done
        }));
    }
    let mut intervals = Vec::new();
    for t in tasks {
        intervals.extend(t.await.unwrap());
    }
    let checked = check(&intervals).unwrap_or_else(|e| panic!("mutual exclusion violated: {e}"));
    eprintln!(
        "lock exclusion: {} holds checked over {} intervals, 0 overlaps",
        checked,
        intervals.len()
    );
    assert!(
        checked > 60,
        "liveness: enough successful holds to mean something ({checked})"
    );
    let clients_with_locks: std::collections::HashSet<usize> = intervals
        .iter()
        .filter(|h| h.to > h.from)
        .map(|h| h.client)
        .collect();
    assert!(
        clients_with_locks.len() >= 6,
        "most clients got locks: {clients_with_locks:?}"
    );
    let metrics = get(&server, "/metrics").await.body;
    let expiries = metrics
        .lines()
        .find(|l| l.starts_with("timelock_lock_expiries_total"))
        .unwrap();
    assert!(
        !expiries.ends_with(" 0"),
        "the reaper took some locks away: {expiries}"
    );
}

#[test]
fn the_checker_catches_overlap() {
    let t0 = Instant::now();
    let at = |ms| t0 + Duration::from_millis(ms);
    let h = |client, token, from, to| Held {
        client,
        name: "alpha",
        token,
        from: at(from),
        to: at(to),
    };
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    assert!(check(&[h(0, a, 0, 10), h(1, b, 5, 20)]).is_err());
    assert!(
        check(&[h(0, a, 0, 30), h(1, b, 5, 20)]).is_err(),
        "contained interval"
    );
    assert_eq!(
        check(&[h(0, a, 0, 10), h(1, b, 10, 20), h(0, a, 0, 0)]),
        Ok(2)
    );
}
