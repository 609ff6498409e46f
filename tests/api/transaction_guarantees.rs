//! The orderings AtlasDB clients depend on (issue 22), checked black-box against the real server:
//!
//! * an immutable timestamp or minimum leased timestamp answer is below the start timestamp of
//!   every transaction, and the first fresh timestamp of every lease, still open when it was
//!   answered (sweep deletes old versions below it);
//! * a start's lock-watch update contains no event logged after its start timestamps were
//!   issued (clients cache values per version: a later unlock would let a start read a value
//!   committed after it);
//! * snapshots and `created` events list exactly the completed lock acquisitions.
//!
//! The race tests run for a few seconds each and count violations; they print the counts so a
//! run against an older build (`TIMELOCK_TEST_BIN=...`) shows how often it went wrong.

use crate::common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use common::{temp_data_dir, TestServer};
use serde_json::{json, Value};
use uuid::Uuid;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn row(table: &str, row: &str) -> Vec<u8> {
    let mut v = table.as_bytes().to_vec();
    v.push(0);
    v.extend_from_slice(row.as_bytes());
    v
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// POSTs `body` and returns the JSON answer; anything but 200 panics.
async fn call(client: &reqwest::Client, server: &TestServer, path: &str, body: &Value) -> Value {
    post(client, &server.url(""), path, body).await
}

/// A transaction or lease: the timestamp it protects and when its release was sent (`None`:
/// never, within the round).
struct Open {
    protected: i64,
    released: Option<Instant>,
}

/// An immutable or minimum leased timestamp answer and when it was received.
struct Answer {
    value: i64,
    at: Instant,
}

#[derive(Default)]
struct Round {
    transactions: Vec<Open>,
    immutable: Vec<Answer>,
    /// Per lease name.
    leases: [Vec<Open>; LEASES.len()],
    min_leased: [Vec<Answer>; LEASES.len()],
}

/// Answers `M` for which some transaction (lease) released only after `M` was received, so
/// still open when `M` was computed, protects a timestamp `<= M`.
fn violations(opens: &[Open], answers: &[Answer]) -> Vec<String> {
    let mut opens: Vec<(i64, Option<Instant>)> =
        opens.iter().map(|o| (o.protected, o.released)).collect();
    opens.sort_by_key(|o| o.0);
    // Prefix maximum of the release times (`None`, never released, is the largest).
    let mut latest: Vec<(Option<Instant>, i64)> = Vec::with_capacity(opens.len());
    for (protected, released) in &opens {
        let previous = latest.last().copied();
        let next = match (previous, released) {
            (Some((None, p)), _) => (None, p),
            (_, None) => (None, *protected),
            (Some((Some(prev), p)), Some(r)) if prev >= *r => (Some(prev), p),
            (_, Some(r)) => (Some(*r), *protected),
        };
        latest.push(next);
    }
    let mut found = Vec::new();
    for answer in answers {
        let below = opens.partition_point(|o| o.0 <= answer.value);
        if below == 0 {
            continue;
        }
        let (released, protected) = latest[below - 1];
        if released.is_none_or(|r| r > answer.at) {
            found.push(format!(
                "answered {} while {} (released later or never) was open",
                answer.value, protected
            ));
        }
    }
    found
}

/// Lease names, each sparsely held, so that a poll often finds one with no lease at all (the
/// case the old order got wrong).
const LEASES: [&str; 4] = ["lease-0", "lease-1", "lease-2", "lease-3"];

fn name_index(name: &str) -> usize {
    LEASES.iter().position(|n| *n == name).unwrap()
}

/// How long the `n`th transaction or lease is held: mostly under a millisecond, sometimes 20 ms.
fn hold(n: u64) -> Duration {
    if n % 8 == 0 {
        Duration::from_millis(20)
    } else {
        Duration::from_micros(200 * (n % 4))
    }
}

/// Starters, lease holders and pollers on namespace `ns` until `until`.
async fn race_round(server: &TestServer, ns: &str, until: Instant) -> Round {
    let round = Arc::new(Mutex::new(Round::default()));
    let server = Arc::new(server.url(""));
    let mut tasks = Vec::new();
    for worker in 0..6 {
        let (round, base, ns) = (round.clone(), server.clone(), ns.to_string());
        tasks.push(tokio::spawn(async move {
            let client = http();
            let requestor = Uuid::new_v4();
            let mut n = 0u64;
            while Instant::now() < until {
                n += 1;
                let id = Uuid::new_v4();
                let v = post(
                    &client,
                    &base,
                    &format!("/tl/st/{ns}"),
                    &json!({"requestId": id, "requestorId": requestor, "numTransactions": 1}),
                )
                .await;
                let at = Instant::now();
                let start = v["timestamps"]["start"].as_i64().unwrap();
                let immutable = v["immutableTimestamp"]["immutableTimestamp"]
                    .as_i64()
                    .unwrap();
                tokio::time::sleep(hold(n + worker)).await;
                let released = Some(Instant::now());
                {
                    let mut r = round.lock().unwrap();
                    r.immutable.push(Answer {
                        value: immutable,
                        at,
                    });
                    r.transactions.push(Open {
                        protected: start,
                        released,
                    });
                }
                post(&client, &base, &format!("/tl/ul2/{ns}"), &json!([id])).await;
            }
        }));
    }
    for worker in 0..3usize {
        let (round, base, ns) = (round.clone(), server.clone(), ns.to_string());
        tasks.push(tokio::spawn(async move {
            let client = http();
            let mut n = 0u64;
            while Instant::now() < until {
                n += 1;
                let id = Uuid::new_v4();
                let name = LEASES[(n as usize + worker) % LEASES.len()];
                let v = post(
                    &client,
                    &base,
                    "/tl/multi/atl",
                    &json!({ns.clone(): [{"requestId": id, "numFreshTimestamps": {name: 1}}]}),
                )
                .await;
                let at = Instant::now();
                let response = &v[&ns]["alias"][0]["timestampLeaseResponses"][name];
                let first = response["freshTimestamps"]["start"].as_i64().unwrap();
                let min = response["minLeased"].as_i64().unwrap();
                tokio::time::sleep(hold(n + worker as u64)).await;
                let released = Some(Instant::now());
                {
                    let mut r = round.lock().unwrap();
                    r.min_leased[name_index(name)].push(Answer { value: min, at });
                    r.leases[name_index(name)].push(Open {
                        protected: first,
                        released,
                    });
                }
                post(&client, &base, "/tl/multi/ul", &json!({ns.clone(): [id]})).await;
            }
        }));
    }
    for _ in 0..3 {
        let (round, base, ns) = (round.clone(), server.clone(), ns.to_string());
        tasks.push(tokio::spawn(async move {
            let client = http();
            while Instant::now() < until {
                let v = post(
                    &client,
                    &base,
                    &format!("/{ns}/timelock/immutable-timestamp"),
                    &json!({}),
                )
                .await;
                let at = Instant::now();
                let value = v.as_i64().unwrap();
                round.lock().unwrap().immutable.push(Answer { value, at });
                let v = post(
                    &client,
                    &base,
                    "/tl/multi/gmlt",
                    &json!({ns.clone(): LEASES}),
                )
                .await;
                let at = Instant::now();
                let mut r = round.lock().unwrap();
                for (i, name) in LEASES.iter().enumerate() {
                    let value = v[&ns][name].as_i64().unwrap();
                    r.min_leased[i].push(Answer { value, at });
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    Arc::try_unwrap(round)
        .ok()
        .expect("every task finished")
        .into_inner()
        .unwrap()
}

/// [`call`] on the server at `base`.
async fn post(client: &reqwest::Client, base: &str, path: &str, body: &Value) -> Value {
    let response = client
        .post(format!("{base}{path}"))
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert_eq!(status, 200, "{path}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
}

/// Issue 22 part 0: with the minimum read before the fresh timestamp, a poll could answer a
/// fresh timestamp above the start of a transaction that locked and started in between. The
/// window is widest while timestamps wait for bound writes: a tiny reservation, fresh
/// namespaces, and the first moments after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn immutable_and_min_leased_answers_stay_below_open_starts() {
    let (_dir, data) = temp_data_dir();
    let mut server = TestServer::start(&data, &[("TIMELOCK__TIMESTAMP__RESERVATION", "40")]);
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for phase in 0..2 {
        if phase == 1 {
            // Every lock of the first phase dies with the old process; the rounds below compare
            // only what was taken after the restart.
            server.terminate();
            server.restart();
        }
        for ns in ["fresh-a", "fresh-b"] {
            let round = race_round(&server, ns, Instant::now() + Duration::from_millis(1500)).await;
            let lease_count: usize = round.leases.iter().map(Vec::len).sum();
            let answer_count: usize = round.min_leased.iter().map(Vec::len).sum();
            assert!(
                round.transactions.len() > 20 && lease_count > 10,
                "too few operations to mean anything: {} starts, {lease_count} leases",
                round.transactions.len(),
            );
            let starts = violations(&round.transactions, &round.immutable);
            let leases: Vec<String> = round
                .leases
                .iter()
                .zip(&round.min_leased)
                .flat_map(|(opens, answers)| violations(opens, answers))
                .collect();
            report.push(format!(
                "phase {phase} {ns}: {} starts, {} immutable answers, {} bad; {lease_count} leases, {answer_count} min-leased answers, {} bad",
                round.transactions.len(),
                round.immutable.len(),
                starts.len(),
                leases.len()
            ));
            failures.extend(starts.into_iter().take(3));
            failures.extend(leases.into_iter().take(3));
        }
    }
    eprintln!("{}", report.join("\n"));
    assert!(
        failures.is_empty(),
        "{}\n{}",
        report.join("\n"),
        failures.join("\n")
    );
}

/// Writers and starters of the lock-watch race.
const WRITERS: usize = 12;
const STARTERS: usize = 8;

/// A POST with a JSON body, as written on the wire.
fn raw_request(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Reads one 200 answer with a Content-Length body and returns its JSON.
fn read_answer(reader: &mut std::io::BufReader<std::net::TcpStream>) -> Value {
    use std::io::{BufRead, Read};
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "status line {line:?}");
    let mut length = None;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).unwrap();
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').unwrap();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.trim().parse::<usize>().unwrap());
        }
    }
    let mut body = vec![0; length.expect("Content-Length")];
    reader.read_exact(&mut body).unwrap();
    serde_json::from_slice(&body).unwrap()
}

/// Issue 22 part 1: writers lock a row, take a commit timestamp, unlock; starters pass their
/// last known version. No start may receive (at or below its version) the unlock of a writer
/// whose commit timestamp is above its start. Most starters go through `/tl/multi/sts`, the
/// others through `/tl/st`. One namespace: writers contending with starts for the lock table's
/// mutex is what delayed a start between its timestamps and its update in the old code.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn start_updates_hold_no_unlock_of_a_later_commit() {
    const TABLE: &str = "gt.race";
    const NS: &str = "race";
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[]);
    let client = http();
    watch(&client, &server, NS, TABLE).await;
    let secs = std::env::var("TIMELOCK_RACE_SECS").map_or(8, |s| s.parse().unwrap());
    let until = Instant::now() + Duration::from_secs(secs);
    let base = Arc::new(server.url(""));
    // Descriptor -> commit timestamp of the write that locked it (descriptors are unique).
    let writes: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
    // Version -> (kind, descriptor) of every event some start was sent.
    let events: Arc<Mutex<BTreeMap<i64, (String, String)>>> = Arc::default();
    // (start timestamp, version of its update).
    let starts: Arc<Mutex<Vec<(i64, i64)>>> = Arc::default();
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let (port, writes) = (server.port, writes.clone());
        tasks.push(tokio::task::spawn_blocking(move || {
            // Lock, commit timestamp and unlock written back-to-back on one connection: the
            // server answers pipelined requests in order, so the commit timestamp is taken
            // after the lock and the unlock logged after the commit timestamp, microseconds
            // apart instead of a client round trip.
            let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            stream.set_nodelay(true).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut stream = stream;
            let mut n = 0u64;
            while Instant::now() < until {
                n += 1;
                let descriptor = b64(&row(TABLE, &format!("w{writer}-{n}")));
                let id = Uuid::new_v4();
                let lock = json!({"requestId": id, "lockDescriptors": [descriptor], "acquireTimeoutMs": 1000});
                let batch = [
                    raw_request(&format!("/tl/l/{NS}"), &lock.to_string()),
                    raw_request(&format!("/tl/g1ct/{NS}"), "{}"),
                    raw_request(&format!("/tl/ul2/{NS}"), &json!([id]).to_string()),
                ]
                .concat();
                std::io::Write::write_all(&mut stream, batch.as_bytes()).unwrap();
                let locked = read_answer(&mut reader);
                assert_eq!(locked["type"], "successful", "{locked}");
                let commit = read_answer(&mut reader)["timestamp"].as_i64().unwrap();
                assert_eq!(read_answer(&mut reader), json!([id]));
                writes.lock().unwrap().insert(descriptor, commit);
            }
        }));
    }
    for starter in 0..STARTERS {
        let (base, events, starts) = (base.clone(), events.clone(), starts.clone());
        tasks.push(tokio::spawn(async move {
            let client = http();
            let requestor = Uuid::new_v4();
            let mut known: Option<Value> = None;
            while Instant::now() < until {
                let mut body = json!({"requestId": Uuid::new_v4(), "requestorId": requestor, "numTransactions": 1});
                // Most pass their last known version, as AtlasDB clients do; one always asks
                // for a snapshot.
                if let Some(version) = known.as_ref().filter(|_| starter > 0) {
                    body["lastKnownVersion"] = version.clone();
                }
                let v = if starter % 3 == 1 {
                    post(&client, &base, &format!("/tl/st/{NS}"), &body).await
                } else {
                    let mut v = post(&client, &base, "/tl/multi/sts", &json!({NS: body})).await;
                    v[NS].take()
                };
                let start = v["timestamps"]["start"].as_i64().unwrap();
                let update = &v["lockWatchUpdate"];
                let version = update["lastKnownVersion"].as_i64().unwrap();
                known = Some(json!({"id": update["logId"], "version": version}));
                starts.lock().unwrap().push((start, version));
                if update["type"] == "success" {
                    let mut events = events.lock().unwrap();
                    for event in update["events"].as_array().unwrap() {
                        for d in event["lockDescriptors"].as_array().unwrap() {
                            events.insert(
                                event["sequence"].as_i64().unwrap(),
                                (
                                    event["type"].as_str().unwrap().to_string(),
                                    d["bytes"].as_str().unwrap().to_string(),
                                ),
                            );
                        }
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let writes = writes.lock().unwrap();
    let events = events.lock().unwrap();
    let starts = starts.lock().unwrap();
    // (commit timestamp, version of the writer's unlock), for every unlock some start was sent.
    let mut unlocks: Vec<(i64, i64)> = events
        .iter()
        .filter(|(_, (kind, _))| kind == "unlock")
        .filter_map(|(version, (_, d))| writes.get(d).map(|commit| (*commit, *version)))
        .collect();
    // Sorted by commit timestamp, with the lowest unlock version among all later commits.
    unlocks.sort();
    let mut lowest_after = vec![(i64::MAX, 0); unlocks.len() + 1];
    for i in (0..unlocks.len()).rev() {
        lowest_after[i] = if unlocks[i].1 < lowest_after[i + 1].0 {
            (unlocks[i].1, unlocks[i].0)
        } else {
            lowest_after[i + 1]
        };
    }
    let bad: Vec<String> = starts
        .iter()
        .filter_map(|(start, version)| {
            let later = unlocks.partition_point(|u| u.0 <= *start);
            let (unlock_version, commit) = lowest_after[later];
            (unlock_version <= *version).then(|| {
                format!(
                    "start {start} got version {version}, but a writer committed at {commit} and its unlock is event {unlock_version}"
                )
            })
        })
        .collect();
    eprintln!(
        "{} starts, {} writes, {} unlocks seen, {} bad",
        starts.len(),
        writes.len(),
        unlocks.len(),
        bad.len()
    );
    assert!(
        unlocks.len() > 100 && starts.len() > 100,
        "too few operations to mean anything: {} unlocks seen, {} starts",
        unlocks.len(),
        starts.len()
    );
    assert!(
        bad.is_empty(),
        "{} bad starts, e.g.\n{}",
        bad.len(),
        bad[..bad.len().min(5)].join("\n")
    );
}

/// Watches the whole of `table`.
async fn watch(client: &reqwest::Client, server: &TestServer, ns: &str, table: &str) {
    let response = client
        .post(server.url(&format!("/lw/sw/{ns}")))
        .json(&json!({"references": [{"type": "fullTable", "qualifiedTableRef": table}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
}

async fn leader_id(client: &reqwest::Client, server: &TestServer, ns: &str) -> Value {
    call(client, server, &format!("/tl/lt/{ns}"), &json!({})).await["id"].clone()
}

/// A start with `last_known` (`None`: a snapshot); returns its lock-watch update.
async fn update(
    client: &reqwest::Client,
    server: &TestServer,
    ns: &str,
    last_known: Option<Value>,
) -> Value {
    let mut body =
        json!({"requestId": Uuid::new_v4(), "requestorId": Uuid::new_v4(), "numTransactions": 1});
    if let Some(version) = last_known {
        body["lastKnownVersion"] = version;
    }
    call(client, server, &format!("/tl/st/{ns}"), &body).await["lockWatchUpdate"].clone()
}

fn descriptors(list: &Value) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            base64::engine::general_purpose::STANDARD
                .decode(d["bytes"].as_str().unwrap())
                .unwrap()
        })
        .collect();
    out.sort();
    out
}

fn lock_request(id: Uuid, rows: &[&Vec<u8>], timeout_ms: u64) -> Value {
    let d: Vec<String> = rows.iter().map(|r| b64(r)).collect();
    json!({"requestId": id, "lockDescriptors": d, "acquireTimeoutMs": timeout_ms})
}

/// Issue 22 part 2: a request holding `a` and queued on `b` has not acquired anything yet.
/// Neither the `created` event of a watch registered meanwhile nor a snapshot lists `a`, and
/// after the request times out (no unlock event) a snapshot at the same version agrees.
#[tokio::test]
async fn partial_holder_is_not_listed_and_times_out_without_changing_the_snapshot() {
    const NS: &str = "partial";
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[]);
    let client = http();
    let (a, b) = (row("p.t", "a"), row("p.t", "b"));
    let holder = Uuid::new_v4();
    let v = call(
        &client,
        &server,
        "/tl/l/partial",
        &lock_request(holder, &[&b], 0),
    )
    .await;
    assert_eq!(v["type"], "successful", "{v}");
    let partial = {
        let (client, url) = (client.clone(), server.url("/tl/l/partial"));
        let body = lock_request(Uuid::new_v4(), &[&a, &b], 1500);
        tokio::spawn(async move {
            client
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    // The request takes `a` at once and queues on `b`.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let leader = leader_id(&client, &server, NS).await;
    watch(&client, &server, NS, "p.t").await;
    let created = update(
        &client,
        &server,
        NS,
        Some(json!({"id": leader, "version": -1})),
    )
    .await;
    assert_eq!(created["type"], "success", "{created}");
    let event = &created["events"][0];
    assert_eq!(event["type"], "created", "{created}");
    assert_eq!(
        descriptors(&event["lockDescriptors"]),
        vec![b.clone()],
        "{created}"
    );
    let before = update(&client, &server, NS, None).await;
    assert_eq!(before["type"], "snapshot");
    assert_eq!(descriptors(&before["locked"]), vec![b.clone()], "{before}");

    let outcome = partial.await.unwrap();
    assert_eq!(outcome["type"], "unsuccessful", "{outcome}");
    let after = update(&client, &server, NS, None).await;
    assert_eq!(
        after["lastKnownVersion"], before["lastKnownVersion"],
        "no event: {after}"
    );
    assert_eq!(after, before, "two snapshots at one version must agree");
}

/// Issue 22 part 2: a release hands `b` to a waiter that still queues on `c`. Until that request
/// completes, `b` is free as far as watchers know (its unlock was logged); once it completes,
/// one lock event lists both, and every snapshot equals the replayed events.
#[tokio::test]
async fn waiter_handed_a_lock_is_listed_once_its_request_completes() {
    const NS: &str = "handed";
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[]);
    let client = http();
    let leader = leader_id(&client, &server, NS).await;
    watch(&client, &server, NS, "h.t").await;
    let (b, c) = (row("h.t", "b"), row("h.t", "c"));
    let (holder_b, holder_c, waiter) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    for (id, d) in [(holder_b, &b), (holder_c, &c)] {
        let v = call(&client, &server, "/tl/l/handed", &lock_request(id, &[d], 0)).await;
        assert_eq!(v["type"], "successful", "{v}");
    }
    let waiting = {
        let (client, url) = (client.clone(), server.url("/tl/l/handed"));
        let body = lock_request(waiter, &[&b, &c], 10_000);
        tokio::spawn(async move {
            client
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // `b` goes to the waiter, which now queues on `c`.
    call(&client, &server, "/tl/ul2/handed", &json!([holder_b])).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let snapshot = update(&client, &server, NS, None).await;
    assert_eq!(
        descriptors(&snapshot["locked"]),
        vec![c.clone()],
        "{snapshot}"
    );
    let events = update(
        &client,
        &server,
        NS,
        Some(json!({"id": leader, "version": 0})),
    )
    .await;
    assert_eq!(
        events["events"].as_array().unwrap().len(),
        3,
        "two locks and an unlock: {events}"
    );
    assert_eq!(events["events"][2]["type"], "unlock", "{events}");
    assert_eq!(events["lastKnownVersion"], snapshot["lastKnownVersion"]);

    call(&client, &server, "/tl/ul2/handed", &json!([holder_c])).await;
    let outcome = waiting.await.unwrap();
    assert_eq!(outcome["type"], "successful", "{outcome}");
    let snapshot = update(&client, &server, NS, None).await;
    assert_eq!(
        descriptors(&snapshot["locked"]),
        vec![b.clone(), c.clone()],
        "{snapshot}"
    );
    let version = snapshot["lastKnownVersion"].as_i64().unwrap();
    let tail = update(
        &client,
        &server,
        NS,
        Some(json!({"id": leader, "version": version - 2})),
    )
    .await;
    let tail = tail["events"].as_array().unwrap().clone();
    assert_eq!(tail.len(), 2, "{tail:?}");
    assert_eq!(tail[0]["type"], "unlock");
    assert_eq!(descriptors(&tail[0]["lockDescriptors"]), vec![c.clone()]);
    assert_eq!(tail[1]["type"], "lock");
    assert_eq!(tail[1]["lockToken"], json!({"requestId": waiter}));
    assert_eq!(descriptors(&tail[1]["lockDescriptors"]), vec![b, c]);
}
