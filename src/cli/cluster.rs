//! `timelock cluster status` and `timelock cluster takeover`: who leads what in a cluster, and
//! moving namespaces to a node.
//!
//! `status` asks every listed node for its readiness (`GET /health/ready`, whose `leadership`
//! object says which shards the node leads, its terms and lease, and who it believes leads the
//! rest) and puts the answers side by side. Each node speaks only for itself, so the table can
//! show what no single node knows: two nodes that both claim a shard (a deposed leader that has
//! not yet noticed; it stops serving when its lease lapses), shards nobody leads, nodes
//! configured with another leader mode or shard count.
//!
//! `takeover` asks one node to lead some namespaces (`POST /tl/paxos/takeover/{ns}` or
//! `/tl/paxos/takeoverNamespaces`); the server hands each shard off safely and answers what it
//! leads once done. Names are checked by the server's own rule before anything is sent.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail};
use clap::{Args, Subcommand};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use super::status::{clean, table};
use crate::client::{check_namespace, check_servers, encode_segment, Client};
use crate::status::{human_ms, revision_range, shard_ranges, LeadershipStatus};

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Show which node leads which shards and namespaces, each node's lease and terms, and
    /// any disagreement between nodes (a shard claimed twice, shards nobody leads).
    Status(ClusterStatusArgs),
    /// Ask one node to lead the given namespaces (their whole shards, with a leader per
    /// namespace), handed off safely by their current leaders; prints what it leads after.
    /// Servers with an admin credential need it in TIMELOCK_TOKEN or TIMELOCK_TOKEN_FILE.
    Takeover(TakeoverArgs),
}

#[derive(Args, Debug)]
pub struct ClusterStatusArgs {
    /// Base URL of a node. Repeat the flag (or separate URLs by commas) to list every node:
    /// each is asked about itself.
    #[arg(long = "server", required = true, value_name = "URL")]
    pub servers: Vec<String>,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct TakeoverArgs {
    /// Base URL of the node that is to lead.
    #[arg(long, value_name = "URL")]
    pub server: String,
    /// A namespace to lead (repeat the flag for several).
    #[arg(long = "namespace", required = true, value_name = "NS")]
    pub namespaces: Vec<String>,
}

/// Runs a `cluster` command; returns what to print on success.
pub async fn run_cluster_command(command: ClusterCommand) -> anyhow::Result<Option<String>> {
    match command {
        ClusterCommand::Status(args) => run_cluster_status(args).await,
        ClusterCommand::Takeover(args) => run_takeover(args).await,
    }
}

/// One node's readiness answer, as far as `cluster status` reads it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ready {
    /// `READY` or `NOT_READY`.
    pub status: String,
    /// `single`, `leader`, `follower` or `no_quorum`.
    pub role: String,
    #[serde(default)]
    pub node_id: Option<String>,
    #[serde(default)]
    pub shutting_down: bool,
    #[serde(default)]
    pub force_killed: bool,
    #[serde(default)]
    pub leadership: Option<LeadershipStatus>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeAnswer {
    pub server: String,
    /// Why this node could not be asked.
    pub error: Option<String>,
    pub ready: Option<Ready>,
}

/// Who leads a namespace, by the claims of the nodes that answered.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceLeader {
    pub namespace: String,
    pub shard: usize,
    /// Every node that says it leads it (more than one: a disagreement).
    pub leaders: Vec<String>,
}

/// What `cluster status --json` prints.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterReport {
    pub nodes: Vec<NodeAnswer>,
    pub namespaces: Vec<NamespaceLeader>,
    /// Disagreements between nodes and other things an operator should look at.
    pub warnings: Vec<String>,
}

/// How long one node may take to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);

async fn run_cluster_status(args: ClusterStatusArgs) -> anyhow::Result<Option<String>> {
    let servers = super::status::server_list(&args.servers)?;
    let client = Arc::new(Client::new()?);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, server) in servers.iter().enumerate() {
        let client = client.clone();
        let server = server.clone();
        tasks.spawn(async move { (i, ask_ready(&client, &server).await) });
    }
    let mut results: Vec<Option<anyhow::Result<Ready>>> = servers.iter().map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        if let Ok((i, result)) = joined {
            results[i] = Some(result);
        }
    }
    let nodes: Vec<NodeAnswer> = servers
        .iter()
        .zip(results)
        .map(|(server, result)| {
            let result = result.unwrap_or_else(|| Err(anyhow!("the request to {server} failed")));
            match result {
                Ok(ready) => NodeAnswer {
                    server: server.clone(),
                    error: None,
                    ready: Some(ready),
                },
                Err(e) => NodeAnswer {
                    server: server.clone(),
                    error: Some(format!("{e:#}")),
                    ready: None,
                },
            }
        })
        .collect();
    let report = analyse(nodes);
    let errors = report
        .nodes
        .iter()
        .filter_map(|n| n.error.clone())
        .collect();
    super::status::outcome(&report, errors, report.nodes.len(), args.json, render)
}

async fn ask_ready(client: &Client, server: &str) -> anyhow::Result<Ready> {
    let (status, body) = tokio::time::timeout(
        ASK_TIMEOUT,
        client.ask_node(Method::GET, server, "health/ready", None),
    )
    .await
    .map_err(|_| {
        anyhow!(
            "{server} did not answer /health/ready within {} s",
            ASK_TIMEOUT.as_secs()
        )
    })??;
    // 503 is an answer too: a node without quorum, shutting down or force-killed says so.
    if !status.is_success() && status != StatusCode::SERVICE_UNAVAILABLE {
        return Err(Client::failure(server, status, &body));
    }
    serde_json::from_str(&body)
        .map_err(|e| anyhow!("{server} answered /health/ready with something unreadable: {e}"))
}

/// Cross-checks the nodes' answers: who claims which shard, which namespaces each leads, and
/// what they disagree about.
pub fn analyse(nodes: Vec<NodeAnswer>) -> ClusterReport {
    let mut warnings = Vec::new();
    let answered: Vec<(String, &Ready)> = nodes
        .iter()
        .filter_map(|n| n.ready.as_ref().map(|r| (name_of(&n.server, r), r)))
        .collect();

    // The same mode and shard count everywhere, or shards mean different things.
    let layouts: BTreeMap<(String, usize), Vec<&str>> =
        answered
            .iter()
            .fold(BTreeMap::new(), |mut all, (name, ready)| {
                if let Some(l) = &ready.leadership {
                    all.entry((l.mode.clone(), l.shards))
                        .or_insert_with(Vec::new)
                        .push(name.as_str());
                }
                all
            });
    if layouts.len() > 1 {
        let described: Vec<String> = layouts
            .iter()
            .map(|((mode, shards), who)| format!("{} ({mode}, {shards} shards)", who.join(", ")))
            .collect();
        warnings.push(format!(
            "nodes disagree on the leader mode or shard count: {}; every node of a cluster must use the same cluster.leader_mode and cluster.shards",
            described.join(" vs ")
        ));
    }

    // Claims: each node speaks for the shards it holds terms of.
    let mut claims: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let mut namespaces: BTreeMap<String, NamespaceLeader> = BTreeMap::new();
    for (name, ready) in &answered {
        let Some(l) = &ready.leadership else { continue };
        for term in &l.terms {
            claims.entry(term.shard).or_default().push(name.clone());
            for ns in &term.namespaces {
                let entry = namespaces
                    .entry(ns.clone())
                    .or_insert_with(|| NamespaceLeader {
                        namespace: ns.clone(),
                        shard: term.shard,
                        leaders: Vec::new(),
                    });
                entry.leaders.push(name.clone());
            }
        }
    }
    for (shard, who) in &claims {
        if who.len() > 1 {
            warnings.push(format!(
                "shard {shard} is claimed by {} nodes ({}); a deposed leader stops serving when its lease lapses: ask again",
                who.len(),
                who.join(", ")
            ));
        }
    }

    // Unled: no answering node holds it, and none knows of a leader for it (a node that did
    // not answer may lead a shard others know about).
    let shard_count = layouts.keys().map(|(_, n)| *n).max().unwrap_or(0);
    let known_elsewhere = |k: usize| {
        answered.iter().any(|(_, r)| {
            r.leadership
                .as_ref()
                .is_some_and(|l| l.leaders.iter().any(|x| x.shards.contains(&k)))
        })
    };
    let unled: Vec<usize> = (0..shard_count)
        .filter(|k| !claims.contains_key(k) && !known_elsewhere(*k))
        .collect();
    if !unled.is_empty() {
        warnings.push(format!(
            "{} of {shard_count} shards have no leader: {} (their namespaces are refused until a node takes them, normally within a renewal interval)",
            unled.len(),
            shard_ranges(&unled)
        ));
    }
    let not_ready: Vec<&str> = answered
        .iter()
        .filter(|(_, r)| r.status != "READY")
        .map(|(name, _)| name.as_str())
        .collect();
    if !not_ready.is_empty() {
        warnings.push(format!("not ready: {}", not_ready.join(", ")));
    }

    ClusterReport {
        nodes,
        namespaces: namespaces.into_values().collect(),
        warnings,
    }
}

/// A node's name in the report: its node id, else its URL.
fn name_of(server: &str, ready: &Ready) -> String {
    ready
        .node_id
        .clone()
        .unwrap_or_else(|| server.trim_end_matches('/').to_string())
}

/// The human table.
pub fn render(report: &ClusterReport) -> String {
    let dash = || "-".to_string();
    let mut mode = None;
    let rows: Vec<Vec<String>> = report
        .nodes
        .iter()
        .map(|n| match (&n.ready, &n.error) {
            (Some(r), _) => {
                let mut role = r.role.clone();
                if r.force_killed {
                    role.push_str(" (force-killed)");
                } else if r.shutting_down {
                    role.push_str(" (shutting down)");
                }
                let node = r.node_id.as_deref().map_or_else(dash, clean);
                match &r.leadership {
                    Some(l) => {
                        mode.get_or_insert_with(|| format!("{}, {} shards", l.mode, l.shards));
                        let shards: Vec<usize> = l.terms.iter().map(|t| t.shard).collect();
                        let namespaces: usize = l.terms.iter().map(|t| t.namespaces.len()).sum();
                        vec![
                            clean(&n.server),
                            node,
                            clean(&role),
                            format!("{} ({})", shards.len(), shard_ranges(&shards)),
                            namespaces.to_string(),
                            human_ms(l.lease_renewal_age_ms),
                            if shards.is_empty() {
                                dash()
                            } else {
                                human_ms(l.lease_remaining_ms)
                            },
                            revision_range(&l.terms),
                        ]
                    }
                    // A single node leads everything and has no lease.
                    None => vec![
                        clean(&n.server),
                        node,
                        clean(&role),
                        "all".to_string(),
                        "all".to_string(),
                        dash(),
                        dash(),
                        dash(),
                    ],
                }
            }
            (None, error) => vec![
                clean(&n.server),
                dash(),
                "ERROR".to_string(),
                clean(error.as_deref().unwrap_or("no answer")),
            ],
        })
        .collect();
    let mut out = String::new();
    if let Some(mode) = &mode {
        out.push_str(&format!("leader mode: {}\n", clean(mode)));
    }
    out.push_str(&table(
        &[
            "SERVER",
            "NODE",
            "ROLE",
            "SHARDS LED",
            "NAMESPACES",
            "LEASE AGE",
            "LEASE LEFT",
            "TERMS",
        ],
        &rows,
    ));
    out.push_str("\n\n");
    if report.namespaces.is_empty() {
        out.push_str(
            "namespaces: none led by the nodes that answered (a namespace appears once created on its leader)",
        );
    } else {
        let rows: Vec<Vec<String>> = report
            .namespaces
            .iter()
            .map(|ns| {
                vec![
                    clean(&ns.namespace),
                    ns.shard.to_string(),
                    clean(&ns.leaders.join(", ")),
                ]
            })
            .collect();
        out.push_str(&table(&["NAMESPACE", "SHARD", "LEADER"], &rows));
    }
    for w in &report.warnings {
        out.push_str(&format!("\nWARNING: {}", clean(w)));
    }
    out
}

async fn run_takeover(args: TakeoverArgs) -> anyhow::Result<Option<String>> {
    // Everything is checked before the first request.
    let server = args.server.trim();
    check_servers(server)?;
    if server.contains(',') {
        bail!("--server names the one node that is to lead; give exactly one URL");
    }
    let mut names: Vec<String> = Vec::new();
    for ns in &args.namespaces {
        check_namespace(ns).map_err(|e| anyhow!("--namespace {ns:?}: {e}"))?;
        if !names.contains(ns) {
            names.push(ns.clone());
        }
    }
    let client = Client::new()?;
    let (path, body) = match names.as_slice() {
        [one] => (format!("tl/paxos/takeover/{}", encode_segment(one)), None),
        _ => (
            "tl/paxos/takeoverNamespaces".to_string(),
            Some(serde_json::to_string(&names)?),
        ),
    };
    let (status, text) = client.ask_node(Method::POST, server, &path, body).await?;
    if !status.is_success() {
        let error = Client::failure(server, status, &text);
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            bail!("{error:#}; takeovers need the admin credential: set TIMELOCK_TOKEN or TIMELOCK_TOKEN_FILE (or TIMELOCK_CLIENT_CERT)");
        }
        if status == StatusCode::NOT_FOUND {
            bail!("{error:#}; a server older than leader per namespace has no /tl/paxos/takeover");
        }
        return Err(error);
    }
    let unreadable = |e| anyhow!("{server} answered the takeover with something unreadable: {e}");
    let led: Vec<String> = if names.len() == 1 {
        let taken: bool = serde_json::from_str(&text).map_err(unreadable)?;
        if taken {
            names.clone()
        } else {
            Vec::new()
        }
    } else {
        serde_json::from_str(&text).map_err(unreadable)?
    };
    let missing: Vec<&String> = names.iter().filter(|n| !led.contains(n)).collect();
    let out = format!(
        "{} now leads {} of {} namespaces: {}",
        clean(server),
        names.len() - missing.len(),
        names.len(),
        if led.is_empty() {
            "none".to_string()
        } else {
            clean(&led.join(", "))
        }
    );
    if !missing.is_empty() {
        println!("{out}");
        bail!(
            "not taken: {} (a node leads nothing while out of service, and with a single leader only the leader leads; otherwise the current leader may not have handed off yet: try again)",
            clean(
                &missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        );
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{LeaderStatus, TermStatus};

    fn node(server: &str, id: &str, shards: &[(usize, i64, &[&str])], total: usize) -> NodeAnswer {
        NodeAnswer {
            server: server.into(),
            error: None,
            ready: Some(Ready {
                status: "READY".into(),
                role: if shards.is_empty() {
                    "follower".into()
                } else {
                    "leader".into()
                },
                node_id: Some(id.into()),
                shutting_down: false,
                force_killed: false,
                leadership: Some(LeadershipStatus {
                    mode: "per-namespace".into(),
                    shards: total,
                    lease_renewal_age_ms: 120,
                    lease_remaining_ms: 1500,
                    terms: shards
                        .iter()
                        .map(|(k, revision, names)| TermStatus {
                            shard: *k,
                            revision: *revision,
                            since_unix_ms: 1,
                            namespaces: names.iter().map(|s| s.to_string()).collect(),
                        })
                        .collect(),
                    leaders: vec![LeaderStatus {
                        node: id.into(),
                        url: server.into(),
                        shards: shards.iter().map(|(k, _, _)| *k).collect(),
                    }],
                    unled_shards: vec![],
                }),
            }),
        }
    }

    fn row<'a>(table: &'a str, start: &str) -> Vec<&'a str> {
        table
            .lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no row {start}:\n{table}"))
            .split_whitespace()
            .collect()
    }

    #[test]
    fn a_healthy_cluster_has_one_row_per_node_and_no_warning() {
        let report = analyse(vec![
            node("http://a:1", "n0", &[(0, 10, &["x"]), (1, 12, &[])], 4),
            node("http://b:1", "n1", &[(2, 11, &["y", "z"]), (3, 11, &[])], 4),
        ]);
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        let out = render(&report);
        assert!(
            out.starts_with("leader mode: per-namespace, 4 shards\n"),
            "{out}"
        );
        assert_eq!(
            row(&out, "http://a:1"),
            [
                "http://a:1",
                "n0",
                "leader",
                "2",
                "(0-1)",
                "1",
                "120ms",
                "1.5s",
                "10..12"
            ]
        );
        assert_eq!(
            row(&out, "http://b:1"),
            [
                "http://b:1",
                "n1",
                "leader",
                "2",
                "(2-3)",
                "2",
                "120ms",
                "1.5s",
                "11"
            ]
        );
        assert_eq!(row(&out, "x "), ["x", "0", "n0"]);
        assert_eq!(row(&out, "z "), ["z", "2", "n1"]);
        assert!(!out.contains("WARNING"), "{out}");
    }

    #[test]
    fn a_shard_claimed_twice_and_unled_shards_are_flagged() {
        let report = analyse(vec![
            node("http://a:1", "n0", &[(0, 10, &["x"])], 4),
            node("http://b:1", "n1", &[(0, 14, &["x"]), (1, 9, &[])], 4),
        ]);
        let out = render(&report);
        assert!(
            out.contains("WARNING: shard 0 is claimed by 2 nodes (n0, n1)"),
            "{out}"
        );
        assert!(
            out.contains("WARNING: 2 of 4 shards have no leader: 2-3"),
            "{out}"
        );
        assert_eq!(row(&out, "x "), ["x", "0", "n0,", "n1"]);
    }

    #[test]
    fn mixed_modes_unreachable_nodes_and_single_nodes_are_shown() {
        let mut single_leader = node("http://c:1", "n2", &[(0, 3, &["x"])], 1);
        if let Some(l) = single_leader
            .ready
            .as_mut()
            .and_then(|r| r.leadership.as_mut())
        {
            l.mode = "single-leader".into();
        }
        let report = analyse(vec![
            node("http://a:1", "n0", &[(0, 10, &[])], 1),
            single_leader,
            NodeAnswer {
                server: "http://down:1".into(),
                error: Some("cannot reach timelock server at http://down:1".into()),
                ready: None,
            },
            NodeAnswer {
                server: "http://solo:1".into(),
                error: None,
                ready: Some(Ready {
                    status: "READY".into(),
                    role: "single".into(),
                    node_id: None,
                    shutting_down: false,
                    force_killed: false,
                    leadership: None,
                }),
            },
        ]);
        let out = render(&report);
        assert!(
            out.contains("nodes disagree on the leader mode or shard count"),
            "{out}"
        );
        assert_eq!(row(&out, "http://down:1")[1..3], ["-", "ERROR"]);
        assert_eq!(row(&out, "http://solo:1")[1..4], ["-", "single", "all"]);
    }

    #[test]
    fn escape_sequences_from_a_server_are_defused() {
        let report = analyse(vec![node(
            "http://a:1",
            "n\x1b[2J",
            &[(0, 1, &["ns\x1b]0;x\x07"])],
            1,
        )]);
        let out = render(&report);
        assert!(!out.contains('\x1b') && !out.contains('\x07'), "{out:?}");
    }
}
