//! A migration's record: the state `timelock migrate` keeps in its state dir after every step,
//! and the copy it reports to the servers' admin API (`PUT /admin/migrations/{id}`), where
//! `GET /admin/migrations` shows it. Plain data and files: no HTTP client, so the server
//! keeps records without depending on the tool.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::write_file_durably;

/// Where the state of migrations is kept by default.
pub const DEFAULT_STATE_DIR: &str = "var/migrations";

/// One side of a migration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Side {
    Server { url: String },
    File { path: PathBuf },
}

impl Side {
    /// Whether two sides are one service: the same server (scheme, host and port: a path such as
    /// `/timelock/api` reaches the same namespaces) or the same file.
    pub fn same_as(&self, other: &Side) -> bool {
        match (self, other) {
            (Side::Server { url: a }, Side::Server { url: b }) => {
                match (reqwest::Url::parse(a), reqwest::Url::parse(b)) {
                    (Ok(a), Ok(b)) => a.origin() == b.origin(),
                    _ => a == b,
                }
            }
            (Side::File { path: a }, Side::File { path: b }) => {
                a == b
                    || matches!(
                        (a.canonicalize(), b.canonicalize()),
                        (Ok(x), Ok(y)) if x == y
                    )
            }
            _ => false,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Side::Server { url } => url.clone(),
            Side::File { path } => format!("file:{}", path.display()),
        }
    }
}

/// Where a migration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MigrationState {
    Running,
    Committed,
    Reversing,
}

/// Progress of one namespace, in step order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    Pending,
    Checked,
    SourceBlocked,
    DestinationForwarded,
    Verified,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceProgress {
    pub source_namespace: String,
    pub destination_namespace: String,
    pub step: Step,
    /// The highest timestamp the source can have issued (its bound when blocked).
    pub source_bound: Option<i64>,
    /// The fresh destination timestamp that proved the destination is past the bound.
    pub verified_timestamp: Option<i64>,
}

/// The persisted migration, what `migrate status` and the admin view show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Migration {
    pub id: String,
    pub state: MigrationState,
    pub reversible: bool,
    pub source_is_offline: bool,
    /// Which side is the source now (swapped by each reverse).
    pub direction_mapping: DirectionMapping,
    pub namespaces: Vec<NamespaceProgress>,
    /// Every step taken, in order, with what it found.
    pub log: Vec<String>,
    pub reversals: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectionMapping {
    pub source: Side,
    pub destination: Side,
    /// May clients write (take timestamps) there? Only the destination, once committed.
    pub source_writable: bool,
    pub destination_writable: bool,
}

pub fn state_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.json"))
}

/// Every migration recorded in `dir` (unreadable files are skipped).
pub fn list(dir: &Path) -> Vec<Migration> {
    let mut out: Vec<Migration> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|t| serde_json::from_str(&t).ok())
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// Writes a migration's state durably.
pub fn save(dir: &Path, m: &Migration) -> anyhow::Result<()> {
    validate_id(&m.id)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_file_durably(&state_path(dir, &m.id), &serde_json::to_string_pretty(m)?)
}

/// A migration id names its state file `<id>.json` in the state dir: letters, digits and `-`
/// only, so that no id (such as `../x`, from `PUT /admin/migrations/{id}`) reaches outside it.
fn validate_id(id: &str) -> anyhow::Result<()> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        bail!("invalid migration id {id:?}");
    }
    Ok(())
}

/// Reads a migration's state.
pub fn load(dir: &Path, id: &str) -> anyhow::Result<Migration> {
    validate_id(id)?;
    let path = state_path(dir, id);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("no migration {id:?} in {}", dir.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is unreadable", path.display()))
}
