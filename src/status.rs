//! What this server is doing right now, in one snapshot: its role in the cluster and who leads,
//! every namespace's state (serving, fenced, invalidated, fail-stopped) with its last issued
//! timestamp, durable bound and locks, the newest backup and the migrations in flight.
//!
//! Plain data, no HTTP: the admin endpoint (`GET /admin/status`) serialises it, the status page
//! at `/` renders it, and `timelock status` reads it back with these same types (as it reads
//! backup metadata and migration records).
//!
//! Collecting costs nothing on the request path: it reads the atomics the services keep anyway
//! and takes each namespace's lock-table mutex once, briefly, to count; it lists the backups and
//! migrations directories, so callers run it off the async workers.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::cluster::{Leadership, Role};
use crate::operations::{backup, migration};

/// The snapshot. Field names are stable (scripts read `timelock status --json`); fields may be
/// added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The server's version.
    pub version: String,
    /// When the snapshot was taken, milliseconds since the Unix epoch (the server's clock).
    pub generated_at_unix_ms: u64,
    pub node: NodeStatus,
    /// Every namespace, by name; `None` where this node does not serve (a follower, or no
    /// quorum): the leader has them.
    pub namespaces: Option<Vec<NamespaceStatus>>,
    /// The newest complete backup in the server's backup dir, if any.
    pub last_backup: Option<BackupStatus>,
    /// Why the backup dir could not be listed, if it could not.
    #[serde(default)]
    pub backup_error: Option<String>,
    /// Migrations reported to this server that are running or reversing.
    pub migrations_in_flight: Vec<MigrationStatus>,
}

/// This node's part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// `single`, `leader`, `follower` or `no_quorum`.
    pub role: String,
    /// Whether this node serves client requests now.
    pub serves: bool,
    /// Cluster mode: this node's id.
    pub node_id: Option<String>,
    /// Cluster mode: the URL other nodes redirect clients to when this node leads.
    pub advertise_url: Option<String>,
    /// Cluster mode: the leader's URL (this node's own when it leads), when known.
    pub leader_url: Option<String>,
    pub shutting_down: bool,
    pub force_killed: bool,
    /// Cluster mode: who leads what, as this node knows it.
    #[serde(default)]
    pub leadership: Option<LeadershipStatus>,
}

/// Cluster mode: the leader mode, this node's terms and lease, and the leaders it knows of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeadershipStatus {
    /// `single-leader` or `per-namespace`.
    pub mode: String,
    /// Units of leadership: 1 with a single leader, `cluster.shards` per namespace.
    pub shards: usize,
    /// Milliseconds since etcd last acknowledged this node's lease renewal.
    pub lease_renewal_age_ms: u64,
    /// Milliseconds this node may still serve without another renewal (0 when leading
    /// nothing or unknown).
    pub lease_remaining_ms: u64,
    /// The terms this node holds: one per shard it leads.
    pub terms: Vec<TermStatus>,
    /// Every leader this node knows of (itself included), with the shards each leads.
    pub leaders: Vec<LeaderStatus>,
    /// Shards with no known leader now (taken within a renewal interval, normally).
    pub unled_shards: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TermStatus {
    pub shard: usize,
    /// The etcd revision the term began at (its id: a later term has a higher one).
    pub revision: i64,
    /// When this node began the term, milliseconds since the Unix epoch.
    pub since_unix_ms: u64,
    /// The shard's namespaces this node serves (those created so far).
    pub namespaces: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaderStatus {
    pub node: String,
    pub url: String,
    pub shards: Vec<usize>,
}

/// Who leads what, as `leadership` knows it; `None` outside cluster mode.
pub fn leadership_status(leadership: &Leadership) -> Option<LeadershipStatus> {
    if leadership.role() == Role::Single {
        return None;
    }
    let metrics = &leadership.metrics().cluster;
    let per_namespace = leadership.per_namespace();
    let mut terms = Vec::new();
    let mut leaders: std::collections::BTreeMap<(String, String), Vec<usize>> = Default::default();
    let mut unled_shards = Vec::new();
    for (k, view) in leadership.shard_views().into_iter().enumerate() {
        if let Some(registry) = leadership.registry_for_shard(k) {
            terms.push(TermStatus {
                shard: k,
                revision: view.revision,
                since_unix_ms: view.since_unix_ms,
                namespaces: registry.names(),
            });
        }
        match (view.leader_node, view.leader_url) {
            (node, Some(url)) => leaders
                .entry((
                    node.map(|n| n.to_string()).unwrap_or_default(),
                    url.to_string(),
                ))
                .or_default()
                .push(k),
            _ => unled_shards.push(k),
        }
    }
    let led_any = !terms.is_empty();
    Some(LeadershipStatus {
        mode: if per_namespace {
            "per-namespace"
        } else {
            "single-leader"
        }
        .to_string(),
        shards: leadership.shard_count(),
        lease_renewal_age_ms: (metrics.lease_renewal_age.get() * 1000.0) as u64,
        lease_remaining_ms: if led_any {
            (metrics.lease_remaining.get() * 1000.0) as u64
        } else {
            0
        },
        terms,
        leaders: leaders
            .into_iter()
            .map(|((node, url), shards)| LeaderStatus { node, url, shards })
            .collect(),
        unled_shards,
    })
}

/// What a namespace does with a request for timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NamespaceState {
    /// Issues timestamps.
    Serving,
    /// Restored from a backup: refuses until fast-forwarded.
    Fenced,
    /// Invalidated (a migration's source): refuses until revalidated.
    Invalidated,
    /// A bound write failed: refuses until the server is restarted on working storage.
    FailStopped,
}

impl NamespaceState {
    pub fn as_str(self) -> &'static str {
        match self {
            NamespaceState::Serving => "serving",
            NamespaceState::Fenced => "fenced",
            NamespaceState::Invalidated => "invalidated",
            NamespaceState::FailStopped => "fail-stopped",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceStatus {
    pub name: String,
    pub state: NamespaceState,
    /// Highest timestamp issued or fast-forwarded to (the bound it started from, if none yet).
    pub last_issued: i64,
    /// Highest bound known durable: nothing above it has been issued.
    pub durable_bound: i64,
    /// v2 lock descriptors that have a holder (a request still acquiring the rest of its locks
    /// counts for those it already holds).
    pub locks_held: usize,
    /// Requests queued on v2 locks.
    pub lock_waiters: usize,
    /// Live legacy (v1) lock tokens.
    pub v1_lock_tokens: usize,
    /// Why it fail-stopped.
    #[serde(default)]
    pub failure: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    pub name: String,
    pub created_at: String,
    pub created_at_unix_ms: u64,
    /// Seconds between the backup and the snapshot.
    pub age_seconds: u64,
    /// `on-demand`, `pre-upgrade` or `scheduled`.
    #[serde(rename = "type")]
    pub backup_type: String,
    /// Complete backups in the backup dir.
    pub count: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MigrationStatus {
    pub id: String,
    /// `RUNNING` or `REVERSING`.
    pub state: migration::MigrationState,
    /// Where timestamps are moving from and to now (swapped by each reverse).
    pub source: String,
    pub destination: String,
    /// `source-namespace -> destination-namespace` per namespace, with its step.
    pub namespaces: Vec<String>,
    pub reversals: u32,
}

/// What the caller knows that the services do not (the HTTP layer's shutdown and kill flags).
#[derive(Debug, Clone, Copy, Default)]
pub struct Flags {
    pub shutting_down: bool,
    pub force_killed: bool,
}

/// Takes the snapshot. Reads directories: call it off the async workers.
pub fn collect(
    leadership: &Leadership,
    backups_dir: &Path,
    migrations_dir: &Path,
    flags: Flags,
) -> Status {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let role = leadership.role();
    let clustered = role != Role::Single;
    let leader_url = match role {
        Role::Single => None,
        // Each shard has its own leader: see `leadership`.
        _ if leadership.per_namespace() => None,
        Role::Leader => Some(leadership.advertise_url().to_string()),
        _ => leadership.leader_url().map(|u| u.to_string()),
    };
    let node = NodeStatus {
        role: role.as_str().to_string(),
        serves: leadership.serves(),
        node_id: clustered.then(|| leadership.node_id().to_string()),
        advertise_url: clustered.then(|| leadership.advertise_url().to_string()),
        leader_url,
        shutting_down: flags.shutting_down,
        force_killed: flags.force_killed,
        leadership: leadership_status(leadership),
    };
    let registries: Vec<_> = leadership
        .registries()
        .into_iter()
        .filter(|r| r.is_serving())
        .collect();
    let namespaces = (!registries.is_empty() || leadership.per_namespace()).then(|| {
        let mut all: Vec<NamespaceStatus> = registries
            .iter()
            .flat_map(|r| r.entries())
            .map(|(name, ns)| namespace_status(&name, &ns))
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    });
    let (last_backup, backup_error) = match backup::list(backups_dir) {
        Ok(all) => (
            all.last().map(|m| BackupStatus {
                name: m.name.clone(),
                created_at: m.created_at.clone(),
                created_at_unix_ms: m.created_at_unix_ms,
                age_seconds: now_ms.saturating_sub(m.created_at_unix_ms) / 1000,
                backup_type: m.backup_type.as_str().to_string(),
                count: all.len(),
            }),
            None,
        ),
        Err(e) => (None, Some(e.to_string())),
    };
    let migrations_in_flight = migration::list(migrations_dir)
        .into_iter()
        .filter(|m| {
            matches!(
                m.state,
                migration::MigrationState::Running | migration::MigrationState::Reversing
            )
        })
        .map(|m| MigrationStatus {
            source: m.direction_mapping.source.describe(),
            destination: m.direction_mapping.destination.describe(),
            namespaces: m
                .namespaces
                .iter()
                .map(|p| {
                    format!(
                        "{} -> {} ({})",
                        p.source_namespace,
                        p.destination_namespace,
                        step_name(p.step)
                    )
                })
                .collect(),
            id: m.id,
            state: m.state,
            reversals: m.reversals,
        })
        .collect();
    Status {
        version: crate::VERSION.to_string(),
        generated_at_unix_ms: now_ms,
        node,
        namespaces,
        last_backup,
        backup_error,
        migrations_in_flight,
    }
}

fn namespace_status(name: &str, ns: &crate::namespaces::Namespace) -> NamespaceStatus {
    let ts = &ns.timestamps;
    // One atomic holds the state, so exactly one of these is true.
    let state = if ts.is_fail_stopped() {
        NamespaceState::FailStopped
    } else if ts.is_invalidated() {
        NamespaceState::Invalidated
    } else if ts.is_fenced() {
        NamespaceState::Fenced
    } else {
        NamespaceState::Serving
    };
    let locks = ns.locks();
    NamespaceStatus {
        name: name.to_string(),
        state,
        last_issued: ts.last_issued(),
        durable_bound: ts.durable_bound(),
        locks_held: locks.held_descriptor_count(),
        lock_waiters: locks.waiting_count(),
        v1_lock_tokens: ns.locks_v1().token_count(),
        failure: ts.failure().map(|f| f.to_string()),
    }
}

fn step_name(step: migration::Step) -> &'static str {
    match step {
        migration::Step::Pending => "pending",
        migration::Step::Checked => "checked",
        migration::Step::SourceBlocked => "source-blocked",
        migration::Step::DestinationForwarded => "destination-forwarded",
        migration::Step::Verified => "verified",
    }
}

/// Shard numbers as ranges, `0-3,7,9-10`, `-` for none: 64 shards stay one short cell.
pub fn shard_ranges(shards: &[usize]) -> String {
    let mut sorted = shards.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    if parts.is_empty() {
        "-".to_string()
    } else {
        parts.join(",")
    }
}

/// `850ms`, `1.2s`: a lease age or remainder for a person.
pub fn human_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

/// The lowest and highest term revision, `12` or `12..40`, `-` for none.
pub fn revision_range(terms: &[TermStatus]) -> String {
    let low = terms.iter().map(|t| t.revision).min();
    let high = terms.iter().map(|t| t.revision).max();
    match (low, high) {
        (Some(l), Some(h)) if l == h => l.to_string(),
        (Some(l), Some(h)) => format!("{l}..{h}"),
        _ => "-".to_string(),
    }
}

/// `45s`, `12m 05s`, `3h 07m`, `2d 04h`: an age for a person.
pub fn human_age(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d {:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_well() {
        assert_eq!(human_age(0), "0s");
        assert_eq!(human_age(59), "59s");
        assert_eq!(human_age(61), "1m 01s");
        assert_eq!(human_age(3600 + 7 * 60 + 5), "1h 07m");
        assert_eq!(human_age(2 * 86_400 + 4 * 3600), "2d 04h");
    }

    #[test]
    fn shards_and_revisions_read_well() {
        assert_eq!(shard_ranges(&[]), "-");
        assert_eq!(shard_ranges(&[3]), "3");
        assert_eq!(shard_ranges(&[9, 0, 1, 2, 3, 7, 10, 2]), "0-3,7,9-10");
        assert_eq!(human_ms(850), "850ms");
        assert_eq!(human_ms(1250), "1.2s");
        let term = |revision| TermStatus {
            shard: 0,
            revision,
            since_unix_ms: 0,
            namespaces: vec![],
        };
        assert_eq!(revision_range(&[]), "-");
        assert_eq!(revision_range(&[term(5)]), "5");
        assert_eq!(revision_range(&[term(40), term(12)]), "12..40");
    }

    #[test]
    fn states_serialise_as_documented() {
        for (state, text) in [
            (NamespaceState::Serving, "serving"),
            (NamespaceState::Fenced, "fenced"),
            (NamespaceState::Invalidated, "invalidated"),
            (NamespaceState::FailStopped, "fail-stopped"),
        ] {
            assert_eq!(serde_json::to_value(state).unwrap(), text);
            assert_eq!(state.as_str(), text);
        }
    }
}
