//! Monotonicity under concurrency, checked the way AtlasDB's Jepsen checkers do:
//! * per client, every timestamp is greater than that client's previous one (`MonotonicChecker`);
//! * if read A completed before read B was invoked, B's value is greater (`NonOverlappingReadsMonotonicChecker`);
//! * no value is returned twice (`UniquenessChecker`);
//!
//! Plus, for fast-forward: every read invoked after a fast-forward to T completed returns > T.
//!
//! The reservation is tiny so bound writes (in line and in the background) happen constantly
//! while clients race.

use crate::common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// One completed read: when it was invoked and completed, and the timestamps it returned.
#[derive(Debug, Clone)]
struct Op {
    client: usize,
    invoked: Instant,
    completed: Instant,
    lower: i64,
    upper: i64,
}

/// The Jepsen checkers over every completed read. Returns the number of violations found (and
/// panics with the first few).
fn check_history(history: &[Op]) {
    let mut violations = Vec::new();
    // Per-client monotonic.
    let clients: HashSet<usize> = history.iter().map(|o| o.client).collect();
    for c in clients {
        let mut ops: Vec<&Op> = history.iter().filter(|o| o.client == c).collect();
        ops.sort_by_key(|o| o.invoked);
        for pair in ops.windows(2) {
            if pair[1].lower <= pair[0].upper {
                violations.push(format!("client {c}: {:?} then {:?}", pair[0], pair[1]));
            }
        }
    }
    // Non-overlapping reads: sweep by invoke time, tracking the max value completed before it.
    let mut by_completion: Vec<&Op> = history.iter().collect();
    by_completion.sort_by_key(|o| o.completed);
    let mut by_invocation: Vec<&Op> = history.iter().collect();
    by_invocation.sort_by_key(|o| o.invoked);
    let mut done = 0;
    let mut max_completed: Option<&Op> = None;
    for b in by_invocation {
        while done < by_completion.len() && by_completion[done].completed < b.invoked {
            let a = by_completion[done];
            if max_completed.is_none_or(|m| a.upper > m.upper) {
                max_completed = Some(a);
            }
            done += 1;
        }
        if let Some(a) = max_completed {
            if b.lower <= a.upper {
                violations.push(format!("read {b:?} invoked after {a:?} completed"));
            }
        }
    }
    // Uniqueness.
    let mut seen = HashSet::new();
    for o in history {
        for ts in o.lower..=o.upper {
            if !seen.insert(ts) {
                violations.push(format!("timestamp {ts} returned twice"));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "{} violations, first: {:?}",
        violations.len(),
        &violations[..violations.len().min(5)]
    );
    assert!(!history.is_empty(), "liveness: at least one timestamp read");
}

/// Issues one read of a kind chosen by `i` and returns its inclusive range.
async fn read(http: &reqwest::Client, base: &str, ns: &str, i: usize) -> (i64, i64) {
    let kind = i % 6;
    let request = match kind {
        0 => http.post(format!("{base}/{ns}/timestamp/fresh-timestamp")),
        1 => http.get(format!("{base}/timelock/api/{ns}/timelock/fresh-timestamp")),
        2 => http.post(format!(
            "{base}/{ns}/timestamp/fresh-timestamps?number={}",
            1 + i % 7
        )),
        3 => http
            .post(format!("{base}/tl/ts/{ns}"))
            .body(format!("{{\"numTimestamps\":{}}}", 1 + i % 5)),
        4 => http
            .post(format!("{base}/tl/t2/{ns}"))
            .body(format!("{}", 1 + i % 4)),
        _ => http.post(format!("{base}/tl/ts1/{ns}")),
    };
    let response = request
        .header("content-type", "application/json")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    match kind {
        0 | 1 | 5 => {
            let ts: i64 = body.parse().unwrap();
            (ts, ts)
        }
        2 => {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            (
                v["lowerBound"].as_i64().unwrap(),
                v["upperBound"].as_i64().unwrap(),
            )
        }
        3 => {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            (
                v["inclusiveLower"].as_i64().unwrap(),
                v["inclusiveUpper"].as_i64().unwrap(),
            )
        }
        _ => {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let start = v["start"].as_i64().unwrap();
            (start, start + v["count"].as_i64().unwrap() - 1)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_clients_see_linearizable_unique_timestamps() {
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[("TIMELOCK__TIMESTAMP__RESERVATION", "40")]);
    let base = server.base();
    let clients = 24;
    let per_client = 150;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            let http = client(); // one connection pool per client, like separate processes
            let mut ops = Vec::with_capacity(per_client);
            for i in 0..per_client {
                let invoked = Instant::now();
                let (lower, upper) = read(&http, &base, "jepsen", c + i).await;
                ops.push(Op {
                    client: c,
                    invoked,
                    completed: Instant::now(),
                    lower,
                    upper,
                });
            }
            ops
        }));
    }
    let mut history = Vec::new();
    for t in tasks {
        history.extend(t.await.unwrap());
    }
    assert_eq!(history.len(), clients * per_client);
    check_history(&history);
    let metrics = get(&server, "/metrics").await.body;
    let writes: f64 = metrics
        .lines()
        .find(|l| l.starts_with("timelock_bound_writes_total{result=\"ok\"}"))
        .and_then(|l| l.split_whitespace().last())
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        writes > 50.0,
        "the test should exercise many bound writes, saw {writes}"
    );
}

#[tokio::test]
async fn the_checker_catches_violations() {
    // A checker that cannot fail proves nothing: feed it histories with each kind of bug.
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let op = |client, inv, comp, v| Op {
        client,
        invoked: at(inv),
        completed: at(comp),
        lower: v,
        upper: v,
    };
    for bad in [
        vec![op(0, 0, 1, 5), op(0, 2, 3, 4)], // per-client regression
        vec![op(0, 0, 1, 5), op(1, 2, 3, 4)], // stale read after a completed one
        vec![op(0, 0, 5, 5), op(1, 1, 6, 5)], // duplicate
    ] {
        let caught = std::panic::catch_unwind(|| check_history(&bad)).is_err();
        assert!(caught, "checker missed {bad:?}");
    }
    check_history(&[op(0, 0, 5, 7), op(1, 1, 6, 5), op(1, 7, 8, 8)]); // overlapping reads may reorder
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fast_forward_races_with_fresh_timestamps() {
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[("TIMELOCK__TIMESTAMP__RESERVATION", "100")]);
    let base = server.base();
    let stop_at = Instant::now() + Duration::from_secs(3);
    let forwards: Arc<parking_lot::Mutex<Vec<(Instant, i64)>>> = Arc::default();
    let mut readers = Vec::new();
    for c in 0..12 {
        let base = base.clone();
        readers.push(tokio::spawn(async move {
            let http = client();
            let mut ops = Vec::new();
            let mut i = 0;
            while Instant::now() < stop_at && i < 2_000 {
                let invoked = Instant::now();
                let (lower, upper) = read(&http, &base, "race", c * 7 + i).await;
                ops.push(Op {
                    client: c,
                    invoked,
                    completed: Instant::now(),
                    lower,
                    upper,
                });
                i += 1;
            }
            ops
        }));
    }
    let mut forwarders = Vec::new();
    for f in 0..3u64 {
        let base = base.clone();
        let forwards = forwards.clone();
        forwarders.push(tokio::spawn(async move {
            let http = client();
            let mut target = 1_000 * (f as i64 + 1);
            let mut n = 0;
            while Instant::now() < stop_at && n < 300 {
                // Jumps of varying size, some into the past (no-ops), some far ahead.
                target += [5, 50, 5_000, -20_000, 777][(n % 5) as usize];
                let path = if n % 2 == 0 {
                    format!(
                        "{base}/race/timestamp-management/fast-forward?currentTimestamp={target}"
                    )
                } else {
                    format!(
                        "{base}/tl/management/fastForward?namespace=race&currentTimestamp={target}"
                    )
                };
                let r = http.post(path).send().await.unwrap();
                assert_eq!(r.status(), 204);
                forwards.lock().push((Instant::now(), target));
                n += 1;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        }));
    }
    for f in forwarders {
        f.await.unwrap();
    }
    let mut history = Vec::new();
    for r in readers {
        history.extend(r.await.unwrap());
    }
    check_history(&history);
    // Every read invoked after a fast-forward to T completed returned more than T.
    let forwards = forwards.lock().clone();
    assert!(forwards.len() > 30);
    let mut checked = 0;
    for op in &history {
        for (done, target) in &forwards {
            if *done < op.invoked {
                assert!(
                    op.lower > *target,
                    "read {op:?} invoked after fast-forward to {target}"
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked > 1000,
        "too few read/fast-forward pairs checked: {checked}"
    );
}
