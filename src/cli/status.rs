//! `timelock status`: one table for a server or a whole cluster, from each node's
//! `GET /admin/status` ([`crate::status::Status`]). Every node is asked about itself, at once;
//! the namespaces come from the node that serves (the single node, or the cluster's leader),
//! and the table says which node that was.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail};
use clap::Args;
use reqwest::Method;
use serde::Serialize;

use crate::client::{check_servers, Client};
use crate::status::{human_age, human_ms, revision_range, shard_ranges, Status};

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Base URL of a server, e.g. http://127.0.0.1:8421. Repeat the flag (or separate URLs by
    /// commas) to list every node of a cluster: each is asked about itself. Servers with an
    /// admin credential need it in TIMELOCK_TOKEN or TIMELOCK_TOKEN_FILE (or a client
    /// certificate in TIMELOCK_CLIENT_CERT), as for the other admin commands.
    #[arg(long = "server", required = true, value_name = "URL")]
    pub servers: Vec<String>,
    /// Print JSON for scripts (with --watch: one line per refresh).
    #[arg(long)]
    pub json: bool,
    /// Refresh every SECS seconds (default 2) until interrupted (Ctrl-C).
    #[arg(
        long,
        num_args = 0..=1,
        default_missing_value = "2",
        value_name = "SECS",
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub watch: Option<u64>,
}

/// What `--json` prints: every node's answer (or why there is none), and which node's
/// namespaces the table shows.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub nodes: Vec<NodeReport>,
    /// The node that serves (whose namespaces are shown), if any answered.
    pub namespaces_from: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeReport {
    pub server: String,
    /// Why this node could not be asked.
    pub error: Option<String>,
    pub status: Option<Status>,
}

impl Report {
    /// The node whose namespaces are shown: the first that serves, else the first that answered.
    fn primary(&self) -> Option<(&str, &Status)> {
        let answered = || {
            self.nodes
                .iter()
                .filter_map(|n| n.status.as_ref().map(|s| (n.server.as_str(), s)))
        };
        answered()
            .find(|(_, s)| s.node.serves && s.namespaces.is_some())
            .or_else(|| answered().next())
    }
}

/// Runs `timelock status`; prints as it goes (watch) or returns the table.
/// What a command that asks several servers ends with: the report (JSON or text) if every
/// server answered; the report printed and an error if some could not be asked; only their
/// errors if none could.
pub(super) fn outcome<R: serde::Serialize>(
    report: &R,
    errors: Vec<String>,
    asked: usize,
    json: bool,
    render: impl FnOnce(&R) -> String,
) -> anyhow::Result<Option<String>> {
    if errors.len() == asked {
        bail!("{}", errors.join("\n"));
    }
    let out = if json {
        serde_json::to_string_pretty(report)?
    } else {
        render(report)
    };
    if !errors.is_empty() {
        println!("{out}");
        bail!(
            "{} of {asked} servers could not be asked (see above)",
            errors.len()
        );
    }
    Ok(Some(out))
}

pub async fn run_status(args: StatusArgs) -> anyhow::Result<Option<String>> {
    let servers = server_list(&args.servers)?;
    let client = Arc::new(Client::new()?);
    let Some(every) = args.watch else {
        let report = gather(&client, &servers).await;
        let errors = report
            .nodes
            .iter()
            .filter_map(|n| n.error.clone())
            .collect();
        return outcome(&report, errors, report.nodes.len(), args.json, render);
    };
    let clear = !args.json && std::io::stdout().is_terminal();
    let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        let report = gather(&client, &servers).await;
        let text = if args.json {
            format!("{}\n", serde_json::to_string(&report)?)
        } else {
            format!(
                // Home and clear screen first on a terminal: the table redrawn in place.
                "{}timelock status at {} (every {every}s; Ctrl-C to stop)\n{}\n\n",
                if clear { "\x1b[H\x1b[2J" } else { "" },
                crate::operations::backup::utc_rfc3339(SystemTime::now()),
                render(&report)
            )
        };
        let mut stdout = std::io::stdout().lock();
        if stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
            .is_err()
        {
            // The reader went away (`| head`): done, not an error.
            return Ok(None);
        }
        drop(stdout);
        tokio::select! {
            _ = &mut interrupted => return Ok(None),
            _ = tokio::time::sleep(Duration::from_secs(every)) => {}
        }
    }
}

/// The `--server` flags as a list of nodes: commas split, blanks dropped, the same URL given
/// twice kept once (one node, not two that both serve), each checked before anything is sent.
pub(super) fn server_list(flags: &[String]) -> anyhow::Result<Vec<String>> {
    let servers: Vec<String> = flags
        .iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .fold(Vec::new(), |mut all, s| {
            // The same URL twice is one node, not two that both serve.
            if !all
                .iter()
                .any(|a: &String| a.trim_end_matches('/') == s.trim_end_matches('/'))
            {
                all.push(s);
            }
            all
        });
    if servers.is_empty() {
        bail!("--server is empty: give the server's base URL, e.g. http://127.0.0.1:8421");
    }
    for server in &servers {
        check_servers(server)?;
    }
    Ok(servers)
}

/// Asks every node at once.
async fn gather(client: &Arc<Client>, servers: &[String]) -> Report {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, server) in servers.iter().enumerate() {
        let client = client.clone();
        let server = server.clone();
        tasks.spawn(async move {
            let result = ask(&client, &server).await;
            (i, server, result)
        });
    }
    let mut nodes: Vec<(usize, NodeReport)> = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let Ok((i, server, result)) = joined else {
            continue;
        };
        let (status, error) = match result {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        nodes.push((
            i,
            NodeReport {
                server,
                error,
                status,
            },
        ));
    }
    nodes.sort_by_key(|(i, _)| *i);
    let nodes: Vec<NodeReport> = nodes.into_iter().map(|(_, n)| n).collect();
    let mut report = Report {
        nodes,
        namespaces_from: None,
    };
    report.namespaces_from = report
        .primary()
        .filter(|(_, s)| s.namespaces.is_some())
        .map(|(server, _)| server.to_string());
    report
}

/// How long one node may take to answer: a hung node must not hold up the table (or a
/// `--watch` refresh) for the client's general 60 s.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);

async fn ask(client: &Client, server: &str) -> anyhow::Result<Status> {
    let call = client.call_admin(Method::GET, server, "admin/status");
    let body = tokio::time::timeout(ASK_TIMEOUT, call)
        .await
        .map_err(|_| {
            anyhow!(
                "{server} did not answer /admin/status within {} s",
                ASK_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| {
            let text = format!("{e:#}");
            if text.contains("HTTP 401") || text.contains("HTTP 403") {
                anyhow!("{text}; /admin/status needs the admin credential: set TIMELOCK_TOKEN or TIMELOCK_TOKEN_FILE (or TIMELOCK_CLIENT_CERT)")
            } else if text.contains("HTTP 404") {
                anyhow!("{text}; a server older than `timelock status` has no /admin/status")
            } else {
                e
            }
        })?;
    serde_json::from_str(&body)
        .map_err(|e| anyhow!("{server} answered /admin/status with something unreadable: {e}"))
}

/// Text from a server, made safe for a terminal: control characters (escape sequences) shown
/// as `?`.
pub(super) fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Left-aligned columns, two spaces apart.
pub(super) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_string()
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// Whether the node is in a cluster with a leader per namespace (where many nodes lead).
fn per_namespace(s: &Status) -> bool {
    s.node
        .leadership
        .as_ref()
        .is_some_and(|l| l.mode == "per-namespace")
}

/// The human table.
pub fn render(report: &Report) -> String {
    let dash = || "-".to_string();
    let rows: Vec<Vec<String>> = report
        .nodes
        .iter()
        .map(|n| match (&n.status, &n.error) {
            (Some(s), _) => {
                let mut role = s.node.role.clone();
                if s.node.force_killed {
                    role.push_str(" (force-killed)");
                } else if s.node.shutting_down {
                    role.push_str(" (shutting down)");
                }
                vec![
                    clean(&n.server),
                    clean(&role),
                    s.node.node_id.as_deref().map_or_else(dash, clean),
                    match (s.node.role.as_str(), &s.node.leader_url) {
                        ("single", _) => dash(),
                        _ if per_namespace(s) => "(per namespace)".to_string(),
                        ("leader", _) => "(this node)".to_string(),
                        (_, Some(url)) => clean(url),
                        (_, None) => "unknown".to_string(),
                    },
                    clean(&s.version),
                ]
            }
            (None, error) => vec![
                clean(&n.server),
                "ERROR".to_string(),
                dash(),
                dash(),
                clean(error.as_deref().unwrap_or("no answer")),
            ],
        })
        .collect();
    let mut out = table(&["SERVER", "ROLE", "NODE ID", "LEADER", "VERSION"], &rows);
    let leaders: Vec<&str> = report
        .nodes
        .iter()
        .filter(|n| {
            n.status
                .as_ref()
                .is_some_and(|s| s.node.role == "leader" && !per_namespace(s))
        })
        .map(|n| n.server.as_str())
        .collect();
    if leaders.len() > 1 {
        out.push_str(&format!(
            "\nWARNING: {} nodes say they lead ({}); a deposed leader stops serving when its lease lapses: ask again",
            leaders.len(),
            clean(&leaders.join(", "))
        ));
    }
    let led: Vec<String> = report
        .nodes
        .iter()
        .filter_map(|n| {
            let l = n.status.as_ref()?.node.leadership.as_ref()?;
            let shards: Vec<usize> = l.terms.iter().map(|t| t.shard).collect();
            let namespaces: usize = l.terms.iter().map(|t| t.namespaces.len()).sum();
            Some(format!(
                "\n  {}: {}, leads {} of {} shards ({}), {namespaces} namespaces, terms {}, lease renewed {} ago{}",
                clean(&n.server),
                clean(&l.mode),
                shards.len(),
                l.shards,
                shard_ranges(&shards),
                revision_range(&l.terms),
                human_ms(l.lease_renewal_age_ms),
                if shards.is_empty() {
                    String::new()
                } else {
                    format!(", {} left", human_ms(l.lease_remaining_ms))
                }
            ))
        })
        .collect();
    if !led.is_empty() {
        out.push_str("\nleadership (details: timelock cluster status):");
        for line in led {
            out.push_str(&line);
        }
    }
    out.push_str("\n\n");
    let Some((from, status)) = report.primary() else {
        out.push_str("no server answered");
        return out;
    };
    match &status.namespaces {
        None => out.push_str(
            "namespaces: unknown (no node that answered serves: the cluster has no leader, or it was not listed)",
        ),
        Some(list) => {
            if per_namespace(status) {
                out.push_str(&format!(
                    "namespaces led by {} (each node leads its own: list every node to see the rest):\n",
                    clean(from)
                ));
            } else {
                out.push_str(&format!("namespaces (from {}):\n", clean(from)));
            }
            if list.is_empty() {
                out.push_str("(none yet: a namespace is created on its first request)");
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|ns| {
                        let mut state = ns.state.as_str().to_string();
                        if let Some(why) = &ns.failure {
                            state.push_str(&format!(" ({})", clean(why)));
                        }
                        vec![
                            clean(&ns.name),
                            state,
                            ns.last_issued.to_string(),
                            ns.durable_bound.to_string(),
                            ns.locks_held.to_string(),
                            ns.lock_waiters.to_string(),
                            ns.v1_lock_tokens.to_string(),
                        ]
                    })
                    .collect();
                out.push_str(&table(
                    &[
                        "NAMESPACE",
                        "STATE",
                        "LAST ISSUED",
                        "DURABLE BOUND",
                        "LOCKS HELD",
                        "WAITERS",
                        "V1 TOKENS",
                    ],
                    &rows,
                ));
            }
        }
    }
    out.push_str("\n\n");
    match (&status.last_backup, &status.backup_error) {
        (_, Some(e)) => out.push_str(&format!(
            "last backup: the backup dir cannot be listed: {}",
            clean(e)
        )),
        (Some(b), None) => out.push_str(&format!(
            "last backup: {} ({}), taken {}, {} ago; {} in all",
            clean(&b.name),
            clean(&b.backup_type),
            clean(&b.created_at),
            human_age(b.age_seconds),
            b.count
        )),
        (None, None) => out.push_str("last backup: none"),
    }
    out.push('\n');
    if status.migrations_in_flight.is_empty() {
        out.push_str("migrations in flight: none");
    } else {
        out.push_str("migrations in flight:");
        for m in &status.migrations_in_flight {
            out.push_str(&format!(
                "\n  {} {}: {} -> {}: {}",
                clean(&m.id),
                format!("{:?}", m.state).to_uppercase(),
                clean(&m.source),
                clean(&m.destination),
                clean(&m.namespaces.join(", "))
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_and_escapes_are_defused() {
        let t = table(
            &["A", "BB"],
            &[
                vec!["xxx".into(), "1".into()],
                vec!["y".into(), "22".into()],
            ],
        );
        assert_eq!(t, "A    BB\nxxx  1\ny    22");
        assert_eq!(clean("ok\x1b[2Jno\n"), "ok?[2Jno?");
    }
}
