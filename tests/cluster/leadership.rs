//! Cluster mode: three real `timelock` nodes electing a leader through a real etcd on loopback.
//! Each node reaches etcd through its own TCP proxy, so a test can partition one node from etcd
//! (its connections go silent) while clients can still reach it.
//!
//! What is shown: only the leader serves and followers answer 308/503 exactly as specified;
//! `kill -9` of the leader elects another and timestamps keep rising, locks die with the term
//! and the leadership id changes; a leader cut off from etcd stops serving before any other node
//! starts, and a checker over every client operation across repeated failovers finds no
//! violation; a rolling restart keeps the service up; after etcd is killed and restarted,
//! service is back within one lease TTL.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::checker::{check, Op};
use common::etcd::{start_etcd, Etcd, Proxy};
use common::TestServer;
use parking_lot::Mutex;
use serde_json::{json, Value};

pub(crate) const NEW_PROTOCOL: &str = "test-client/1.0 atlasdb-http-client/2.0";

pub(crate) struct Cluster {
    pub(crate) nodes: Vec<TestServer>,
    pub(crate) proxies: Vec<Proxy>,
    _dirs: Vec<tempfile::TempDir>,
    pub(crate) etcd: Etcd,
    /// The etcd prefix every node of this cluster shares.
    prefix: String,
    /// Settings of every node: the fast lease, and those the cluster was started with.
    env: Vec<(String, String)>,
}

impl Cluster {
    /// `reservation`: timestamps reserved per bound write. Small makes guarded bound writes to
    /// etcd frequent; large (TimeLock's 1,000,000) lets a leader serve from memory for long,
    /// so only the lease deadline can stop a partitioned one.
    pub(crate) async fn start(size: usize, reservation: u32) -> Cluster {
        Self::start_with(size, reservation, &[]).await
    }

    /// [`Cluster::start`] with `extra` settings on every node (e.g. the leader mode).
    pub(crate) async fn start_with(
        size: usize,
        reservation: u32,
        extra: &[(&str, &str)],
    ) -> Cluster {
        let etcd = start_etcd().await;
        let mut env: Vec<(String, String)> = [
            ("TIMELOCK__CLUSTER__MODE", "etcd".to_string()),
            ("TIMELOCK__CLUSTER__LEASE_TTL_SECS", "2".to_string()),
            ("TIMELOCK__CLUSTER__RENEW_INTERVAL_MS", "250".to_string()),
            ("TIMELOCK__CLUSTER__SAFETY_MARGIN_MS", "400".to_string()),
            ("TIMELOCK__CLUSTER__ETCD_TIMEOUT_MS", "500".to_string()),
            ("TIMELOCK__TIMESTAMP__RESERVATION", reservation.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut cluster = Cluster {
            nodes: Vec::new(),
            proxies: Vec::new(),
            _dirs: Vec::new(),
            etcd,
            prefix: format!("/timelock-test-{}/", uuid::Uuid::new_v4()),
            env,
        };
        for _ in 0..size {
            cluster.add_node(&[]).await;
        }
        cluster
    }

    /// Starts one more node on this cluster's etcd prefix, behind a proxy of its own, with
    /// `extra` settings over the cluster's (a later setting wins). Returns its index.
    pub(crate) async fn add_node(&mut self, extra: &[(&str, &str)]) -> usize {
        let i = self.nodes.len();
        let proxy = Proxy::start(self.etcd.addr).await;
        let dir = tempfile::tempdir().unwrap();
        let mut env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let (endpoint, node_id) = (proxy.endpoint(), format!("node{i}"));
        env.extend([
            ("TIMELOCK__CLUSTER__ETCD_ENDPOINTS", endpoint.as_str()),
            ("TIMELOCK__CLUSTER__ETCD_PREFIX", self.prefix.as_str()),
            ("TIMELOCK__CLUSTER__NODE_ID", node_id.as_str()),
        ]);
        env.extend_from_slice(extra);
        let node = TestServer::start(&dir.path().join("data"), &env);
        self.nodes.push(node);
        self.proxies.push(proxy);
        self._dirs.push(dir);
        i
    }

    /// The nodes' current base URLs (a restarted node listens on a new port). Every URL ever
    /// used is remembered: a follower may redirect to a leader that has just died.
    pub(crate) fn bases(&self) -> Vec<String> {
        let bases: Vec<String> = self.nodes.iter().map(|n| n.base()).collect();
        known_nodes().lock().extend(bases.iter().cloned());
        bases
    }

    /// The index of the node whose readiness says `leader`, waiting up to `limit`.
    pub(crate) async fn leader(&self, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            let mut leaders = Vec::new();
            for (i, node) in self.nodes.iter().enumerate() {
                if let Some(role) = role_of(&node.base()).await {
                    if role == "leader" {
                        leaders.push(i);
                    }
                }
            }
            if leaders.len() == 1 {
                return leaders[0];
            }
            assert!(
                leaders.len() <= 1,
                "two nodes claim to lead at once: {leaders:?}"
            );
            assert!(
                Instant::now() < deadline,
                "no leader within {limit:?}; logs:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) fn logs(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| format!("--- node{i} ---\n{}", tail(&n.log(), 40)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

pub(crate) fn known_nodes() -> &'static Mutex<std::collections::HashSet<String>> {
    static KNOWN: std::sync::OnceLock<Mutex<std::collections::HashSet<String>>> =
        std::sync::OnceLock::new();
    KNOWN.get_or_init(Default::default)
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub(crate) async fn role_of(base: &str) -> Option<String> {
    common::etcd::role_of(&http(), base, Duration::from_secs(2)).await
}

pub(crate) fn http() -> reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(5))
                .pool_max_idle_per_host(8)
                .build()
                .unwrap()
        })
        .clone()
}

/// One attempt against one node.
#[derive(Debug)]
pub(crate) enum Attempt {
    Ok(Value),
    Redirect(String),
    Unavailable,
    Other(u16, String),
    Unreachable,
}

pub(crate) async fn attempt(base: &str, path: &str, body: Option<&Value>) -> Attempt {
    let mut request = http()
        .post(format!("{base}{path}"))
        .header("User-Agent", NEW_PROTOCOL);
    if let Some(body) = body {
        request = request.json(body);
    }
    let Ok(response) = request.send().await else {
        return Attempt::Unreachable;
    };
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = response.text().await.unwrap_or_default();
    match status {
        200 => Attempt::Ok(serde_json::from_str(&text).unwrap_or(Value::Null)),
        204 => Attempt::Ok(Value::Null),
        308 => Attempt::Redirect(location.expect("308 carries Location")),
        503 if text.is_empty() => Attempt::Unavailable,
        _ => Attempt::Other(status, text),
    }
}

/// What AtlasDB's client does: follow a 308 to the named node, try the next node on 503 or when
/// unreachable. Returns the value and the base URL that served it.
pub(crate) async fn call(
    bases: &[String],
    start: usize,
    path: &str,
    body: Option<&Value>,
    limit: Duration,
) -> Result<(Value, String), String> {
    let deadline = Instant::now() + limit;
    let mut i = start;
    loop {
        let base = bases[i % bases.len()].clone();
        let mut target = base.clone();
        for _ in 0..3 {
            match attempt(&target, path, body).await {
                Attempt::Ok(v) => return Ok((v, target)),
                Attempt::Redirect(location) => {
                    assert!(
                        known_nodes().lock().contains(&location),
                        "redirect to {location}, which is no cluster node's advertised URL"
                    );
                    target = location;
                }
                Attempt::Other(status, text) => return Err(format!("{target}: {status} {text}")),
                Attempt::Unavailable | Attempt::Unreachable => break,
            }
        }
        if Instant::now() > deadline {
            return Err(format!("no node served {path} within {limit:?}"));
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) async fn fresh(bases: &[String], ns: &str) -> (i64, String) {
    let (v, node) = call(
        bases,
        0,
        &format!("/{ns}/timestamp/fresh-timestamp"),
        None,
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    (v.as_i64().expect("a number"), node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_serves_and_followers_redirect_or_answer_503() {
    let cluster = Cluster::start(3, 200).await;
    let leader = cluster.leader(Duration::from_secs(20)).await;
    let bases = cluster.bases();
    let leader_base = bases[leader].clone();
    // Followers learn the leader by polling etcd (every renew interval): wait until they know.
    let deadline = Instant::now() + Duration::from_secs(10);
    for (i, base) in bases.iter().enumerate() {
        if i == leader {
            continue;
        }
        loop {
            let ready: Value = http()
                .get(format!("{base}/health/ready"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if ready["leader"] == json!(leader_base) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{base} never learned the leader: {ready}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // The leader serves everyone, new protocol or curl.
    let first = http()
        .post(format!("{leader_base}/ha/timestamp/fresh-timestamp"))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(
        first.text().await.unwrap(),
        "1",
        "a new namespace starts at 1"
    );

    for (i, base) in bases.iter().enumerate() {
        if i == leader {
            continue;
        }
        // Legacy routes: 503 (no body) to a client without the new protocol, as the
        // reverse-migration runbook says; 308 to the leader for a new-protocol client.
        for path in [
            "/ha/timestamp/fresh-timestamp",
            "/timelock/api/ha/timestamp/fresh-timestamp",
            "/ha/timestamp-management/ping",
        ] {
            let method = if path.ends_with("ping") {
                reqwest::Method::GET
            } else {
                reqwest::Method::POST
            };
            for agent in [None, Some("curl/8.0")] {
                let mut plain = http().request(method.clone(), format!("{base}{path}"));
                if let Some(agent) = agent {
                    plain = plain.header("User-Agent", agent);
                }
                let plain = plain.send().await.unwrap();
                assert_eq!(plain.status(), 503, "{base}{path} with agent {agent:?}");
                assert_eq!(plain.text().await.unwrap(), "", "QoS answers have no body");
            }
            let modern = http()
                .request(method, format!("{base}{path}"))
                .header("User-Agent", NEW_PROTOCOL)
                .send()
                .await
                .unwrap();
            assert_eq!(modern.status(), 308, "{base}{path} with the new protocol");
            assert_eq!(
                modern.headers()["location"].to_str().unwrap(),
                leader_base,
                "Location is the leader's base URL"
            );
        }
        // Conjure routes: 308 to the leader whatever the agent, none included (spec section 2:
        // TimeLock's Conjure endpoints always answer RetryOther), on both dispatch paths (the
        // hot `/tl/ts` directly, the others through the router).
        for (path, body) in [
            ("/timelock/api/tl/ts/ha", r#"{"numTimestamps":1}"#),
            ("/tl/ts/ha", r#"{"numTimestamps":1}"#),
            ("/tl/lt/ha", ""),
            ("/lk/laghl/ha", "{}"),
            ("/timelock/api/lw/sw/ha", "{}"),
        ] {
            for agent in [None, Some("curl/8.0"), Some(NEW_PROTOCOL)] {
                let mut request = http()
                    .post(format!("{base}{path}"))
                    .header("Content-Type", "application/json")
                    .body(body);
                if let Some(agent) = agent {
                    request = request.header("User-Agent", agent);
                }
                let response = request.send().await.unwrap();
                assert_eq!(response.status(), 308, "{base}{path} with agent {agent:?}");
                assert_eq!(
                    response.headers()["location"].to_str().unwrap(),
                    leader_base,
                    "{base}{path}: Location is the leader's base URL"
                );
            }
        }
        // Operations endpoints are every node's own.
        let ready: Value = http()
            .get(format!("{base}/health/ready"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(ready["role"], "follower");
        assert_eq!(ready["status"], "READY");
        assert_eq!(ready["leader"], json!(leader_base));
        let leader_check = http()
            .get(format!("{base}/health/leader"))
            .send()
            .await
            .unwrap();
        assert_eq!(leader_check.status(), 503);
        let metrics = http()
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(metrics.contains("timelock_cluster_role{role=\"follower\"} 1"));
        // 3 legacy routes: 2 answers of 503 and 1 of 308 each; 5 Conjure routes, 3 of 308 each.
        assert!(
            metrics.contains("timelock_cluster_redirects_total 18"),
            "{metrics}"
        );
        assert!(
            metrics.contains("timelock_cluster_not_leader_total 6"),
            "{metrics}"
        );
        // What TimelockLeaseRenewalSlow compares the renewal age with.
        assert!(metrics.contains(
            "timelock_cluster_lease_ttl_seconds 2
"
        ));
    }
    let ready: Value = http()
        .get(format!("{leader_base}/health/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["role"], "leader");
    assert_eq!(ready["leader"], json!(leader_base));
    assert_eq!(
        http()
            .get(format!("{leader_base}/health/leader"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // The CLI, given every node, finds the leader whichever node comes first.
    let all = bases.join(",");
    let mut previous = 1;
    for order in [
        all.clone(),
        bases.iter().rev().cloned().collect::<Vec<_>>().join(","),
    ] {
        let out = std::process::Command::new(common::BIN)
            .args([
                "timestamp",
                "fetch",
                "--server",
                &order,
                "--namespace",
                "ha",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ts: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        assert!(ts > previous);
        previous = ts;
    }
}

/// Leadership id of `ns` from the leader's `/tl/lt` (changes with every term).
pub(crate) async fn leadership_id(bases: &[String], ns: &str) -> String {
    let (v, _) = call(
        bases,
        0,
        &format!("/tl/lt/{ns}"),
        None,
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    v["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_elects_another_timestamps_rise_and_locks_die() {
    let mut cluster = Cluster::start(3, 200).await;
    let mut failover_ms = Vec::new();
    for round in 0..3 {
        let leader = cluster.leader(Duration::from_secs(20)).await;
        let bases = cluster.bases();
        let (before, served_by) = fresh(&bases, "ko").await;
        assert_eq!(served_by, bases[leader]);
        let id_before = leadership_id(&bases, "ko").await;
        // A lock descriptor of this round's own (base64 of "row0", "row1", ...).
        let row = ["cm93MA==", "cm93MQ==", "cm93Mg=="][round];
        let (lock, _) = call(
            &bases,
            0,
            "/tl/l/ko",
            Some(&json!({"requestId": uuid::Uuid::new_v4(), "lockDescriptors": [row], "acquireTimeoutMs": 1000})),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert_eq!(lock["type"], "successful", "{lock}");
        let token = lock["successful"]["lockToken"]["requestId"].clone();

        cluster.nodes[leader].kill9();
        let killed = Instant::now();
        let survivors: Vec<String> = bases
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != leader)
            .map(|(_, b)| b.clone())
            .collect();
        let (after, new_leader) = fresh(&survivors, "ko").await;
        failover_ms.push(killed.elapsed().as_millis() as u64);
        assert!(after > before, "round {round}: {after} after {before}");
        assert_ne!(new_leader, bases[leader]);

        // The lock died with the term; the leadership id changed.
        let (refreshed, _) = call(
            &survivors,
            0,
            "/tl/rl2/ko",
            Some(&json!([token])),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert_eq!(
            refreshed["refreshedTokens"],
            json!([]),
            "a lock of the old term is not refreshable"
        );
        let id_after = leadership_id(&survivors, "ko").await;
        assert_ne!(id_before, id_after, "leadership id changes across failover");
        // The lock is free again on the new leader.
        let (again, _) = call(
            &survivors,
            0,
            "/tl/l/ko",
            Some(&json!({"requestId": uuid::Uuid::new_v4(), "lockDescriptors": [row], "acquireTimeoutMs": 1000})),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert_eq!(again["type"], "successful");

        cluster.nodes[leader].restart();
        cluster.bases();
    }
    failover_ms.sort();
    println!(
        "failover after kill -9 (leader killed -> first timestamp from the new leader), ms: {failover_ms:?}"
    );
    // The lease is 2 s here: a kill is noticed when it expires.
    assert!(failover_ms.iter().all(|ms| *ms < 15_000), "{failover_ms:?}");
}

#[test]
fn the_checker_catches_each_kind_of_violation() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let op = |client, a, b, value| Op {
        client,
        invoked: at(a),
        completed: at(b),
        value,
        node: "n".into(),
    };
    assert!(check(&[op(0, 0, 1, 1), op(1, 2, 3, 2)]).is_ok());
    assert!(
        check(&[op(0, 0, 1, 2), op(0, 2, 3, 1)]).is_err(),
        "per client"
    );
    assert!(
        check(&[op(0, 0, 1, 2), op(1, 0, 1, 2)]).is_err(),
        "duplicate"
    );
    assert!(
        check(&[op(0, 0, 1, 5), op(1, 2, 3, 4)]).is_err(),
        "real-time order"
    );
    assert!(
        check(&[op(0, 0, 3, 5), op(1, 1, 2, 4)]).is_ok(),
        "overlapping"
    );
}

/// Stops the clients of [`spawn_clients`]: every operation recorded, and how many gave up.
pub(crate) async fn stop_clients(
    stop: &std::sync::atomic::AtomicBool,
    clients: Vec<tokio::task::JoinHandle<u64>>,
    ops: &Mutex<Vec<Op>>,
) -> (Vec<Op>, u64) {
    let failures = join_clients(stop, clients).await;
    let ops = ops.lock().clone();
    (ops, failures)
}

/// Stops the clients of [`spawn_load`] and answers how many operations gave up.
pub(crate) async fn join_clients(
    stop: &std::sync::atomic::AtomicBool,
    clients: Vec<tokio::task::JoinHandle<u64>>,
) -> u64 {
    stop.store(true, std::sync::atomic::Ordering::Release);
    let mut failures = 0;
    for c in clients {
        failures += c.await.unwrap();
    }
    failures
}

/// Runs `clients` clients fetching timestamps of `lin` until `stop`, recording every success.
pub(crate) fn spawn_clients(
    clients: usize,
    bases: Arc<Mutex<Vec<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    ops: Arc<Mutex<Vec<Op>>>,
) -> Vec<tokio::task::JoinHandle<u64>> {
    let work = || Work {
        path: "/lin/timestamp/fresh-timestamp".into(),
        body: None,
        ops: ops.clone(),
    };
    spawn_load((0..clients).map(|_| vec![work()]).collect(), bases, stop)
}

/// A request for one fresh timestamp that a load client repeats, and where its operations go.
pub(crate) struct Work {
    pub(crate) path: String,
    pub(crate) body: Option<Value>,
    pub(crate) ops: Arc<Mutex<Vec<Op>>>,
}

/// Runs one client per entry of `load` until `stop`, each making its requests in turn and
/// recording every success (client `i`'s operations as client `i`). Client `i` starts at node
/// `i`, then at the node that served it last, as AtlasDB's clients stay with the node a
/// redirect led them to.
pub(crate) fn spawn_load(
    load: Vec<Vec<Work>>,
    bases: Arc<Mutex<Vec<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<u64>> {
    load.into_iter()
        .enumerate()
        .map(|(client, works)| {
            let (bases, stop) = (bases.clone(), stop.clone());
            tokio::spawn(async move {
                let mut failures = 0u64;
                let mut last: Option<String> = None;
                for work in works.iter().cycle() {
                    if stop.load(std::sync::atomic::Ordering::Acquire) {
                        break;
                    }
                    let current = bases.lock().clone();
                    let start = last
                        .as_ref()
                        .and_then(|l| current.iter().position(|b| b == l))
                        .unwrap_or(client);
                    let invoked = Instant::now();
                    match call(
                        &current,
                        start,
                        &work.path,
                        work.body.as_ref(),
                        Duration::from_secs(30),
                    )
                    .await
                    {
                        Ok((v, node)) => {
                            // A legacy fresh timestamp is a number; `/tl/ts` a range.
                            let value = v
                                .as_i64()
                                .or_else(|| v["inclusiveLower"].as_i64())
                                .unwrap_or_else(|| panic!("{}: not a timestamp: {v}", work.path));
                            work.ops.lock().push(Op {
                                client,
                                invoked,
                                completed: Instant::now(),
                                value,
                                node: node.clone(),
                            });
                            last = Some(node);
                        }
                        Err(e) => {
                            if failures < 3 {
                                println!("client {client} gave up: {e}");
                            }
                            failures += 1
                        }
                    }
                }
                failures
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_etcd_stops_serving_before_another_starts() {
    let cluster = Cluster::start(3, 1_000_000).await;
    let bases = Arc::new(Mutex::new(cluster.bases()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ops = Arc::new(Mutex::new(Vec::new()));
    cluster.leader(Duration::from_secs(20)).await;
    let clients = spawn_clients(4, bases.clone(), stop.clone(), ops.clone());

    let mut handovers = Vec::new();
    for round in 0..3 {
        let old = cluster.leader(Duration::from_secs(20)).await;
        let old_base = cluster.nodes[old].base();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let cut_at = Instant::now();
        cluster.proxies[old].cut();
        // Wait for a different node to lead and serve.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let served_elsewhere = ops
                .lock()
                .iter()
                .any(|o| o.invoked > cut_at && o.node != old_base);
            if served_elsewhere {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: no other node served; logs:\n{}",
                cluster.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The partitioned leader is still reachable by clients, but no longer serves.
        match attempt(&old_base, "/lin/timestamp/fresh-timestamp", None).await {
            Attempt::Unavailable | Attempt::Redirect(_) => {}
            other => panic!("round {round}: the partitioned old leader answered {other:?}"),
        }
        let role = role_of(&old_base).await;
        assert_eq!(role.as_deref(), Some("no_quorum"), "round {round}");
        {
            let ops = ops.lock();
            let last_old = ops
                .iter()
                .filter(|o| o.node == old_base)
                .map(|o| o.completed)
                .max()
                .unwrap();
            let first_new = ops
                .iter()
                .filter(|o| o.invoked > cut_at && o.node != old_base)
                .map(|o| o.completed)
                .min()
                .unwrap();
            assert!(
                last_old < first_new,
                "round {round}: the old leader answered after the new one"
            );
            handovers.push((
                last_old.duration_since(cut_at).as_millis() as u64,
                first_new.duration_since(cut_at).as_millis() as u64,
            ));
        }
        cluster.proxies[old].heal();
        // It rejoins as a follower.
        let deadline = Instant::now() + Duration::from_secs(20);
        while role_of(&old_base).await.as_deref() != Some("follower") {
            assert!(
                Instant::now() < deadline,
                "round {round}: old leader did not rejoin"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let (ops, failures) = stop_clients(&stop, clients, &ops).await;
    println!(
        "partition: {} operations by 4 clients over 3 failovers, {failures} gave up; (old leader's last answer, new leader's first answer) after the cut, ms: {handovers:?}",
        ops.len()
    );
    assert!(ops.len() > 100, "too few operations to mean anything");
    assert_eq!(
        failures, 0,
        "every operation eventually succeeded on some node"
    );
    check(&ops).unwrap();
}

/// etcd killed (SIGKILL) under load for longer than the lease, then started again: service is
/// back within one lease TTL of etcd answering again. The deposed leader's lease revoke fails
/// while etcd is down; unless it is retried once etcd is back, the old election key (its lease
/// extended by etcd's restart) blocks the election for another TTL and more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_etcd_is_killed_and_restarted_service_is_back_within_one_ttl() {
    const TTL: Duration = Duration::from_secs(2); // Cluster::start's lease
    let mut cluster = Cluster::start(3, 200).await;
    let bases = Arc::new(Mutex::new(cluster.bases()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ops = Arc::new(Mutex::new(Vec::new()));
    cluster.leader(Duration::from_secs(20)).await;
    let clients = spawn_clients(3, bases.clone(), stop.clone(), ops.clone());
    let mut back_ms = Vec::new();
    for round in 0..2 {
        cluster.leader(Duration::from_secs(20)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        cluster.etcd.kill9();
        // Down for longer than the lease: every node must have stopped serving.
        tokio::time::sleep(TTL + Duration::from_secs(1)).await;
        for base in cluster.bases() {
            let role = role_of(&base).await;
            assert_eq!(role.as_deref(), Some("no_quorum"), "round {round}: {base}");
            match attempt(&base, "/lin/timestamp/fresh-timestamp", None).await {
                Attempt::Unavailable => {}
                other => panic!("round {round}: {base} answered {other:?} without etcd"),
            }
        }
        let max_before = ops.lock().iter().map(|o| o.value).max().unwrap();
        cluster.etcd.restart().await;
        let etcd_back = Instant::now();
        // The first timestamp any node serves, polled directly.
        let first = 'served: loop {
            for base in cluster.bases() {
                if let Attempt::Ok(v) = attempt(&base, "/lin/timestamp/fresh-timestamp", None).await
                {
                    break 'served v.as_i64().unwrap();
                }
            }
            assert!(
                etcd_back.elapsed() < Duration::from_secs(20),
                "round {round}: no service 20 s after etcd's return; logs:\n{}",
                cluster.logs()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let took = etcd_back.elapsed();
        back_ms.push(took.as_millis() as u64);
        assert!(
            first > max_before,
            "round {round}: {first} after etcd's return, {max_before} before"
        );
        assert!(
            took <= TTL,
            "round {round}: service back {took:?} after etcd's return, more than the lease TTL {TTL:?}; logs:\n{}",
            cluster.logs()
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ops, failures) = stop_clients(&stop, clients, &ops).await;
    println!(
        "etcd SIGKILL and restart, twice: service back after etcd answered again, ms: {back_ms:?}; {} operations, {failures} gave up",
        ops.len()
    );
    assert_eq!(failures, 0, "every operation eventually succeeded");
    check(&ops).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_every_node_keeps_service() {
    let mut cluster = Cluster::start(3, 200).await;
    let bases = Arc::new(Mutex::new(cluster.bases()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ops = Arc::new(Mutex::new(Vec::new()));
    cluster.leader(Duration::from_secs(20)).await;
    let clients = spawn_clients(3, bases.clone(), stop.clone(), ops.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..cluster.nodes.len() {
        let status = cluster.nodes[i].terminate();
        assert!(status.success(), "node{i} exit: {status}");
        cluster.nodes[i].restart();
        *bases.lock() = cluster.bases();
        // Back in the cluster (as leader or follower) before the next node goes.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let role = role_of(&cluster.nodes[i].base()).await;
            if matches!(role.as_deref(), Some("leader") | Some("follower")) {
                break;
            }
            assert!(Instant::now() < deadline, "node{i} did not rejoin");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (ops, failures) = stop_clients(&stop, clients, &ops).await;
    let served_by: std::collections::BTreeSet<&str> = ops.iter().map(|o| o.node.as_str()).collect();
    println!(
        "rolling restart: {} operations, {failures} gave up, served by {} distinct node addresses",
        ops.len(),
        served_by.len()
    );
    assert_eq!(failures, 0, "every operation eventually succeeded");
    assert!(served_by.len() >= 2, "leadership moved during the restart");
    check(&ops).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_etcd_a_node_serves_nothing_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let dead = format!("http://127.0.0.1:{}", common::etcd::free_port());
    let node = TestServer::start(
        &dir.path().join("data"),
        &[
            ("TIMELOCK__CLUSTER__MODE", "etcd"),
            ("TIMELOCK__CLUSTER__ETCD_ENDPOINTS", &dead),
        ],
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ready = http().get(node.url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["role"], "no_quorum");
    assert_eq!(body["leader"], Value::Null);
    // Leader unknown: 503 even for a new-protocol client, and nothing was created.
    assert!(matches!(
        attempt(&node.base(), "/nq/timestamp/fresh-timestamp", None).await,
        Attempt::Unavailable
    ));
    let live = http().get(node.url("/health/live")).send().await.unwrap();
    assert_eq!(live.status(), 200, "alive, just not serving");
}

#[test]
fn cluster_mode_needs_an_address_others_can_reach() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .env("TIMELOCK__CLUSTER__MODE", "etcd")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cluster.advertise_url"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_force_killed_leader_hands_over_and_refuses_clients() {
    let cluster = Cluster::start(2, 1_000).await;
    let bases = cluster.bases();
    let leader = cluster.leader(Duration::from_secs(30)).await;
    let other = 1 - leader;
    let (before, _) = fresh(&bases, "killed").await;
    let killed = http()
        .post(format!(
            "{}/tl/management/forceKillTimeLockServer",
            bases[leader]
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(killed.status(), 200);
    // The other node takes over (the killed one revoked its lease) and timestamps go on rising.
    let deadline = Instant::now() + Duration::from_secs(20);
    while role_of(&bases[other]).await.as_deref() != Some("leader") {
        assert!(
            Instant::now() < deadline,
            "no hand-over; logs:\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (after, node) = fresh(&bases, "killed").await;
    assert!(after > before, "{after} after {before}");
    assert_eq!(node, bases[other]);
    // The killed node refuses clients, old and new protocol alike, and is not ready.
    for agent in [NEW_PROTOCOL, "curl/8"] {
        let r = http()
            .post(format!(
                "{}/killed/timestamp/fresh-timestamp",
                bases[leader]
            ))
            .header("User-Agent", agent)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503, "{agent}");
    }
    let ready = http()
        .get(format!("{}/health/ready", bases[leader]))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
}

/// The status view of a cluster: every node answers `/admin/status` and the page about itself,
/// followers included (a follower's `/` is not a 503), and `timelock status` with every node
/// shows their roles and the leader's namespaces, saying which node answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_reports_its_status_and_the_cli_shows_the_cluster() {
    let cluster = Cluster::start(3, 200).await;
    let leader = cluster.leader(Duration::from_secs(20)).await;
    let bases = cluster.bases();
    let leader_base = bases[leader].clone();
    let ts = http()
        .post(format!(
            "{leader_base}/seen/timestamp/fresh-timestamps?number=5"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(ts.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    for (i, base) in bases.iter().enumerate() {
        let status = loop {
            let s: Value = http()
                .get(format!("{base}/admin/status"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            // Followers learn the leader by polling etcd: wait until they know.
            if s["node"]["leaderUrl"] == json!(leader_base) {
                break s;
            }
            assert!(Instant::now() < deadline, "{base}: {s:#}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(status["node"]["nodeId"], format!("node{i}"));
        if i == leader {
            assert_eq!(status["node"]["role"], "leader");
            assert_eq!(status["node"]["serves"], true);
            assert_eq!(status["namespaces"][0]["name"], "seen");
            assert_eq!(status["namespaces"][0]["lastIssued"], 5);
        } else {
            assert_eq!(status["node"]["role"], "follower");
            assert_eq!(status["node"]["serves"], false);
            assert_eq!(status["namespaces"], Value::Null, "{status:#}");
        }
        let page = http().get(format!("{base}/")).send().await.unwrap();
        assert_eq!(page.status(), 200, "{base}/");
        let html = page.text().await.unwrap();
        let role = if i == leader { "leader" } else { "follower" };
        assert!(
            html.contains(&format!("<span id=\"role\">{role}</span>")),
            "{html}"
        );
    }

    let mut args = vec!["status".to_string()];
    for base in &bases {
        args.push("--server".into());
        args.push(base.clone());
    }
    let o = std::process::Command::new(common::BIN)
        .args(&args)
        .env_remove("TIMELOCK_TOKEN")
        .env_remove("TIMELOCK_TOKEN_FILE")
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for (i, base) in bases.iter().enumerate() {
        let row = table
            .lines()
            .find(|l| l.starts_with(base.as_str()))
            .unwrap_or_else(|| panic!("no row for {base}:\n{table}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        if i == leader {
            assert_eq!(
                cells[1..4],
                ["leader", &format!("node{i}"), "(this"],
                "{table}"
            );
        } else {
            assert_eq!(
                cells[1..4],
                ["follower", &format!("node{i}"), leader_base.as_str()],
                "{table}"
            );
        }
    }
    assert!(
        table.contains(&format!("namespaces (from {leader_base}):")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("seen ") && l.contains(" serving ")),
        "{table}"
    );
}
