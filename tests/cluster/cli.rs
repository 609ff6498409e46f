//! `timelock cluster status` and `timelock cluster takeover` against real clusters on a real
//! etcd: with a leader per namespace the table shows each node's shards and which node leads
//! each namespace, a takeover moves a namespace (and timestamps keep rising across it); with a
//! single leader the table shows one leader and a follower's takeover fails with exit 1; bad
//! input is refused before anything is sent.

use crate::common;
use crate::leadership::{fresh, http, Cluster};

use std::collections::BTreeMap;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

fn cli(args: &[&str]) -> Output {
    std::process::Command::new(common::BIN)
        .args(args)
        .env_remove("TIMELOCK_TOKEN")
        .env_remove("TIMELOCK_TOKEN_FILE")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn status_args(bases: &[String]) -> Vec<&str> {
    let mut args = vec!["cluster", "status"];
    for base in bases {
        args.extend(["--server", base.as_str()]);
    }
    args
}

/// A node's readiness report.
async fn ready(base: &str) -> Value {
    http()
        .get(format!("{base}/health/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The shards a node says it leads.
fn shards_led(ready: &Value) -> Vec<u64> {
    ready["leadership"]["terms"]
        .as_array()
        .map(|terms| terms.iter().map(|t| t["shard"].as_u64().unwrap()).collect())
        .unwrap_or_default()
}

/// Waits until every one of `shards` is led by exactly one node and the shares are balanced
/// (differ by at most one: the first node up takes every shard, and hands some off as the
/// others join), the same in two polls in a row; returns each node's shards.
async fn settled(cluster: &Cluster, shards: u64, limit: Duration) -> Vec<Vec<u64>> {
    let deadline = Instant::now() + limit;
    let mut previous = Vec::new();
    loop {
        let mut led = Vec::new();
        for base in cluster.bases() {
            led.push(shards_led(&ready(&base).await));
        }
        let mut all: Vec<u64> = led.iter().flatten().copied().collect();
        all.sort_unstable();
        let sizes = led.iter().map(Vec::len);
        let balanced = sizes.clone().max().unwrap_or(0) - sizes.min().unwrap_or(0) <= 1;
        if all == (0..shards).collect::<Vec<_>>() && balanced && led == previous {
            return led;
        }
        previous = led.clone();
        assert!(
            Instant::now() < deadline,
            "shards never settled: {led:?}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The whitespace-separated cells of the row starting with `start`.
fn row<'a>(table: &'a str, start: &str) -> Vec<&'a str> {
    table
        .lines()
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no row starting {start:?}:\n{table}"))
        .split_whitespace()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_status_and_takeover_with_a_leader_per_namespace() {
    let cluster = Cluster::start_with(
        3,
        200,
        &[
            ("TIMELOCK__CLUSTER__LEADER_MODE", "per-namespace"),
            ("TIMELOCK__CLUSTER__SHARDS", "8"),
        ],
    )
    .await;
    let led = settled(&cluster, 8, Duration::from_secs(30)).await;
    let bases = cluster.bases();
    let id_of = |base: &str| format!("node{}", bases.iter().position(|b| b == base).unwrap());

    // Each namespace is created on its leader; remember who served it and its last timestamp.
    let names = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta"];
    let mut served: BTreeMap<&str, (i64, String)> = BTreeMap::new();
    for ns in names {
        let (ts, node) = fresh(&bases, ns).await;
        served.insert(ns, (ts, node));
    }

    let o = cli(&status_args(&bases));
    let table = stdout(&o);
    assert!(o.status.success(), "{table}{}", stderr(&o));
    assert!(
        table.starts_with("leader mode: per-namespace, 8 shards\n"),
        "{table}"
    );
    assert!(!table.contains("WARNING"), "{table}");
    for (i, base) in bases.iter().enumerate() {
        let cells = row(&table, base);
        assert_eq!(cells[1], format!("node{i}"), "{table}");
        assert_eq!(cells[2], "leader", "{table}");
        assert_eq!(
            cells[3],
            led[i].len().to_string(),
            "shards led, as the node's readiness says:\n{table}"
        );
    }
    let mut shard_of = BTreeMap::new();
    for (ns, (_, node)) in &served {
        let cells = row(&table, &format!("{ns} "));
        assert_eq!(
            cells[2],
            id_of(node),
            "{ns} is led where it was served:\n{table}"
        );
        shard_of.insert(*ns, cells[1].parse::<u64>().unwrap());
    }

    // JSON for scripts says the same.
    let mut args = status_args(&bases);
    args.push("--json");
    let o = cli(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(report["nodes"].as_array().unwrap().len(), 3);
    assert_eq!(report["warnings"], serde_json::json!([]));
    for ns in report["namespaces"].as_array().unwrap() {
        let name = ns["namespace"].as_str().unwrap();
        assert_eq!(ns["leaders"], serde_json::json!([id_of(&served[name].1)]));
    }

    // `timelock status` and every node's page show the node's own leadership.
    let mut args = vec!["status"];
    for base in &bases {
        args.extend(["--server", base.as_str()]);
    }
    let o = cli(&args);
    let text = stdout(&o);
    assert!(o.status.success(), "{text}{}", stderr(&o));
    for (i, base) in bases.iter().enumerate() {
        assert!(
            text.contains(&format!(
                "  {base}: per-namespace, leads {} of 8 shards",
                led[i].len()
            )),
            "{text}"
        );
        assert_eq!(row(&text, base)[3], "(per", "{text}");
        let html = http()
            .get(format!("{base}/"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            html.contains(&format!(
                "<span id=\"shards-led\">{} of 8</span>",
                led[i].len()
            )),
            "{html}"
        );
    }

    // Move alpha to a node that does not lead it: it leads alpha's shard after, and alpha's
    // timestamps keep rising there.
    let (before, from) = served["alpha"].clone();
    let to = bases.iter().find(|b| **b != from).unwrap().clone();
    let o = cli(&[
        "cluster",
        "takeover",
        "--server",
        &to,
        "--namespace",
        "alpha",
    ]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        stdout(&o).trim(),
        format!("{to} now leads 1 of 1 namespaces: alpha")
    );
    assert!(shards_led(&ready(&to).await).contains(&shard_of["alpha"]));
    let (after, node) = fresh(&bases, "alpha").await;
    assert_eq!(node, to);
    assert!(after > before, "{after} after {before}");

    // Several at once: all to one node, through takeoverNamespaces.
    let target = bases.iter().find(|b| **b != to).unwrap().clone();
    let o = cli(&[
        "cluster",
        "takeover",
        "--server",
        &target,
        "--namespace",
        "beta",
        "--namespace",
        "gamma",
        "--namespace",
        "beta",
    ]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        stdout(&o).trim(),
        format!("{target} now leads 2 of 2 namespaces: beta, gamma")
    );
    let now = shards_led(&ready(&target).await);
    assert!(now.contains(&shard_of["beta"]) && now.contains(&shard_of["gamma"]));

    // The table follows: alpha is now led by the node it moved to.
    let o = cli(&status_args(&bases));
    let table = stdout(&o);
    assert!(o.status.success(), "{table}{}", stderr(&o));
    assert_eq!(row(&table, "alpha ")[2], id_of(&to), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_status_and_takeover_with_a_single_leader() {
    let cluster = Cluster::start(3, 200).await;
    let leader = cluster.leader(Duration::from_secs(20)).await;
    let bases = cluster.bases();
    let (_, node) = fresh(&bases, "one").await;
    assert_eq!(node, bases[leader]);

    let o = cli(&status_args(&bases));
    let table = stdout(&o);
    assert!(o.status.success(), "{table}{}", stderr(&o));
    assert!(
        table.starts_with("leader mode: single-leader, 1 shards\n"),
        "{table}"
    );
    for (i, base) in bases.iter().enumerate() {
        let cells = row(&table, base);
        if i == leader {
            assert_eq!(
                cells[1..5],
                [&format!("node{i}"), "leader", "1", "(0)"],
                "{table}"
            );
        } else {
            assert_eq!(
                cells[1..5],
                [&format!("node{i}"), "follower", "0", "(-)"],
                "{table}"
            );
        }
    }
    assert_eq!(row(&table, "one ")[1..], ["0", &format!("node{leader}")]);
    assert!(!table.contains("WARNING"), "{table}");

    // Moving the single leadership is a restart of the leader: a follower takes nothing, and
    // says so with exit 1; the leader already leads.
    let follower = &bases[(leader + 1) % bases.len()];
    let o = cli(&[
        "cluster",
        "takeover",
        "--server",
        follower,
        "--namespace",
        "one",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        stdout(&o).trim(),
        format!("{follower} now leads 0 of 1 namespaces: none")
    );
    assert!(stderr(&o).contains("not taken: one"), "{}", stderr(&o));
    let o = cli(&[
        "cluster",
        "takeover",
        "--server",
        &bases[leader],
        "--namespace",
        "one",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Bad input is refused with a clear message and nothing is sent: a listener that would see
/// any request sees none. An unreachable server is an error (exit 1) that says so.
#[test]
fn bad_input_is_refused_before_anything_is_sent() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let watched = format!("http://{}", listener.local_addr().unwrap());
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };

    // Usage errors: clap's exit 2.
    for args in [
        vec!["cluster", "status"],
        vec!["cluster", "takeover", "--namespace", "a"],
        vec!["cluster", "takeover", "--server", &watched],
        vec!["cluster", "takeover", "--server", &watched, "--namespace"],
        vec!["cluster"],
    ] {
        let o = cli(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
    // Bad values: exit 1 and a message naming the problem.
    let two = format!("{watched},{watched}");
    for (args, says) in [
        (vec!["cluster", "status", "--server", "ftp://h"], "URL"),
        (vec!["cluster", "status", "--server", ""], "empty"),
        (
            vec!["cluster", "status", "--server", "localhost:8421"],
            "URL",
        ),
        (
            vec![
                "cluster",
                "takeover",
                "--server",
                "ftp://127.0.0.1:1",
                "--namespace",
                "a",
            ],
            "URL",
        ),
        (
            vec!["cluster", "takeover", "--server", &two, "--namespace", "a"],
            "exactly one URL",
        ),
        (
            vec![
                "cluster",
                "takeover",
                "--server",
                &watched,
                "--namespace",
                "a/../b",
            ],
            "invalid namespace",
        ),
        (
            vec![
                "cluster",
                "takeover",
                "--server",
                &watched,
                "--namespace",
                "",
            ],
            "invalid namespace",
        ),
        (
            vec![
                "cluster",
                "takeover",
                "--server",
                &watched,
                "--namespace",
                "ok",
                "--namespace",
                "tl",
            ],
            "reserved",
        ),
    ] {
        let o = cli(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
        assert!(stdout(&o).is_empty(), "{args:?}: {}", stdout(&o));
    }
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("something was sent for invalid input: {other:?}"),
    }
    // Unreachable: exit 1, saying which server.
    for args in [
        vec!["cluster", "status", "--server", &closed],
        vec![
            "cluster",
            "takeover",
            "--server",
            &closed,
            "--namespace",
            "a",
        ],
    ] {
        let o = cli(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&o).contains(&format!("cannot reach timelock server at {closed}")),
            "{args:?}: {}",
            stderr(&o)
        );
    }
}
