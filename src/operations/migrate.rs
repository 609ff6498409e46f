//! Migrating namespaces between timestamp services as one resumable command.
//!
//! A side is either a TimeLock-compatible server (`http://host:port`, this server or Palantir's)
//! or a file holding one decimal timestamp (`file:PATH`: the embedded service's side, where the
//! operator wrote the key-value store's bound, or where the restore timestamp should land).
//!
//! Per namespace the forward steps are: check both ends; block the source (invalidate it, which
//! returns its durable bound atomically — or, for a source that cannot be invalidated, take a
//! fresh timestamp and require `--source-is-offline`); fast-forward the destination past that
//! bound; verify that a fresh destination timestamp is greater. Every step is recorded in a
//! state file before the next begins, so a crashed tool resumes (`migrate resume ID`) without
//! doing a step twice; the steps are idempotent besides (invalidate returns the same bound,
//! fast-forward never lowers).
//!
//! A `--reversible` migration in `COMMITTED` can be reversed (`migrate reverse ID`): block the new
//! side, revalidate the old side past everything the new side issued, verify, and record the swap
//! of the direction mapping — the mongosync `reverse` endpoint's semantics for timestamps.
//! Reversing twice brings you back.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};

use super::migration::{
    load, save, state_path, DirectionMapping, Migration, MigrationState, NamespaceProgress, Side,
    Step,
};
use super::write_file_durably;
use crate::client::{encode_segment, read_timestamp_file, server_url, Client};

/// A side as the operator writes it: `http(s)://host:port[/path]` or `file:PATH`.
pub fn side(text: &str) -> anyhow::Result<Side> {
    if let Some(path) = text.strip_prefix("file:") {
        return Ok(Side::File {
            path: PathBuf::from(path),
        });
    }
    if text.starts_with("http://") || text.starts_with("https://") {
        server_url(text)?;
        return Ok(Side::Server {
            url: text.trim_end_matches('/').to_string(),
        });
    }
    bail!("{text:?} is neither a server URL (http://host:port) nor a file (file:PATH)")
}

/// What `migrate start` was asked.
pub struct StartRequest {
    pub from: Side,
    pub to: Side,
    pub namespaces: Vec<String>,
    pub to_namespace: Option<String>,
    pub reversible: bool,
    pub source_is_offline: bool,
}

/// Test hook: `TIMELOCK_MIGRATE_CRASH_AFTER=<step>` stops the tool right after that step is
/// recorded, as a crash would.
fn maybe_crash(step: Step) {
    if let Ok(want) = std::env::var("TIMELOCK_MIGRATE_CRASH_AFTER") {
        let name = serde_json::to_value(step)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string));
        if name.as_deref() == Some(want.as_str()) {
            eprintln!("TIMELOCK_MIGRATE_CRASH_AFTER={want}: stopping abruptly");
            std::process::exit(70);
        }
    }
}

/// Starts a migration and runs it to `COMMITTED`.
pub async fn start(dir: &Path, request: StartRequest) -> anyhow::Result<Migration> {
    if request.namespaces.is_empty() {
        bail!("name at least one --namespace");
    }
    if request.to_namespace.is_some() && request.namespaces.len() != 1 {
        bail!("--to-namespace renames exactly one --namespace");
    }
    if matches!(request.from, Side::File { .. }) && !request.source_is_offline {
        bail!("a file source is an embedded timestamp service: stop its clients and confirm with --source-is-offline");
    }
    if request.reversible
        && (!matches!(request.from, Side::Server { .. })
            || !matches!(request.to, Side::Server { .. }))
    {
        bail!("--reversible needs servers on both sides (a file cannot be blocked or revalidated)");
    }
    let id = format!(
        "{}-{}",
        crate::operations::backup::utc_rfc3339(std::time::SystemTime::now())
            .replace([':', '-'], "")
            .to_lowercase(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let namespaces = request
        .namespaces
        .iter()
        .map(|ns| NamespaceProgress {
            source_namespace: ns.clone(),
            destination_namespace: request.to_namespace.clone().unwrap_or_else(|| ns.clone()),
            step: Step::Pending,
            source_bound: None,
            verified_timestamp: None,
        })
        .collect();
    let mut m = Migration {
        id,
        state: MigrationState::Running,
        reversible: request.reversible,
        source_is_offline: request.source_is_offline,
        direction_mapping: DirectionMapping {
            source: request.from,
            destination: request.to,
            source_writable: true,
            destination_writable: false,
        },
        namespaces,
        log: Vec::new(),
        reversals: 0,
    };
    // Every refusal before the first side effect (the state file is the first).
    check_plan(&m)?;
    m.log.push(format!(
        "started: {} -> {}",
        m.direction_mapping.source.describe(),
        m.direction_mapping.destination.describe()
    ));
    save(dir, &m)?;
    eprintln!(
        "migration {} recorded in {}",
        m.id,
        state_path(dir, &m.id).display()
    );
    run(dir, m).await
}

/// The refusals every run of a migration makes before acting (a state file may have been edited
/// since it was written): valid namespaces, valid sides, and never one namespace of one service
/// as both its source and its destination (blocking the source would block the destination).
fn check_plan(m: &Migration) -> anyhow::Result<()> {
    let (source, destination) = (
        &m.direction_mapping.source,
        &m.direction_mapping.destination,
    );
    for side in [source, destination] {
        if let Side::Server { url } = side {
            server_url(url)?;
        }
    }
    // A file source's bound is read when the source is "blocked": garbage in it must stop the
    // migration before anything is recorded or moved.
    if let Side::File { path } = source {
        if m.namespaces.iter().any(|n| n.step < Step::SourceBlocked) {
            read_timestamp_file(path)?;
        }
    }
    for ns in &m.namespaces {
        for name in [&ns.source_namespace, &ns.destination_namespace] {
            crate::client::check_namespace(name)?;
        }
        if source.same_as(destination) && ns.source_namespace == ns.destination_namespace {
            bail!(
                "{} and {} are the same service: migrating namespace {} onto itself would block it for good; nothing was changed (to rename within one server, give --to-namespace)",
                source.describe(),
                destination.describe(),
                ns.source_namespace
            );
        }
    }
    Ok(())
}

/// Continues a migration from its last recorded step.
pub async fn resume(dir: &Path, id: &str) -> anyhow::Result<Migration> {
    let m = load(dir, id)?;
    check_plan(&m)?;
    match m.state {
        MigrationState::Committed => Ok(m),
        MigrationState::Running | MigrationState::Reversing => run(dir, m).await,
    }
}

async fn run(dir: &Path, mut m: Migration) -> anyhow::Result<Migration> {
    let client = Client::new()?;
    let source = m.direction_mapping.source.clone();
    let destination = m.direction_mapping.destination.clone();
    let reversing = m.state == MigrationState::Reversing;
    // Both ends of every namespace are checked before any namespace is blocked, so that an
    // unreachable end stops the migration before its first side effect.
    for i in 0..m.namespaces.len() {
        let (src_ns, dst_ns) = (
            m.namespaces[i].source_namespace.clone(),
            m.namespaces[i].destination_namespace.clone(),
        );
        if m.namespaces[i].step < Step::Checked {
            check(&client, &source, &src_ns).await?;
            check(&client, &destination, &dst_ns).await?;
            record(
                &client,
                dir,
                &mut m,
                i,
                Step::Checked,
                format!("{src_ns} -> {dst_ns}: both ends reachable"),
            )
            .await?;
        }
    }
    for i in 0..m.namespaces.len() {
        let (src_ns, dst_ns) = (
            m.namespaces[i].source_namespace.clone(),
            m.namespaces[i].destination_namespace.clone(),
        );
        if m.namespaces[i].step < Step::SourceBlocked {
            let bound =
                block_source(&client, &source, &src_ns, m.source_is_offline && !reversing).await?;
            m.namespaces[i].source_bound = Some(bound);
            record(
                &client,
                dir,
                &mut m,
                i,
                Step::SourceBlocked,
                format!("{src_ns}: source blocked at bound {bound}"),
            )
            .await?;
        }
        let bound = m.namespaces[i]
            .source_bound
            .expect("recorded with SourceBlocked");
        if m.namespaces[i].step < Step::DestinationForwarded {
            forward_destination(&client, &destination, &dst_ns, bound, reversing).await?;
            record(
                &client,
                dir,
                &mut m,
                i,
                Step::DestinationForwarded,
                format!("{dst_ns}: destination moved past {bound}"),
            )
            .await?;
        }
        if m.namespaces[i].step < Step::Verified {
            let verified = match &destination {
                Side::Server { url } => {
                    let fresh = fetch(&client, url, &dst_ns).await?;
                    if fresh <= bound {
                        bail!("verification failed: {url} issued {fresh} for {dst_ns}, not above the source bound {bound}; the destination is NOT safe to use");
                    }
                    Some(fresh)
                }
                Side::File { .. } => None,
            };
            m.namespaces[i].verified_timestamp = verified;
            record(
                &client,
                dir,
                &mut m,
                i,
                Step::Verified,
                format!("{dst_ns}: verified (fresh timestamp {verified:?} > {bound})"),
            )
            .await?;
        }
    }
    if reversing {
        m.reversals += 1;
        m.log
            .push("reverse complete: direction mapping swapped".into());
    }
    m.state = MigrationState::Committed;
    m.direction_mapping.source_writable = false;
    m.direction_mapping.destination_writable = true;
    m.log.push("committed".into());
    save(dir, &m)?;
    report(&client, &m).await;
    Ok(m)
}

async fn record(
    client: &Client,
    dir: &Path,
    m: &mut Migration,
    i: usize,
    step: Step,
    what: String,
) -> anyhow::Result<()> {
    m.namespaces[i].step = step;
    // Once any namespace's source is blocked, clients can no longer write there: the mapping
    // says so from that step on (a crash leaves it true to the servers' state).
    m.direction_mapping.source_writable = m.namespaces.iter().all(|n| n.step < Step::SourceBlocked);
    eprintln!("{what}");
    m.log.push(what);
    save(dir, m)?;
    report(client, m).await;
    maybe_crash(step);
    Ok(())
}

/// Tells every server involved where the migration stands (`PUT /admin/migrations/{id}`), for
/// their admin view. Best effort: servers without the endpoint (Palantir's) are skipped.
async fn report(client: &Client, m: &Migration) {
    let body = serde_json::to_string(m).expect("migration serialises");
    for side in [
        &m.direction_mapping.source,
        &m.direction_mapping.destination,
    ] {
        if let Side::Server { url } = side {
            if let Err(e) = client
                .put_json(url, &format!("admin/migrations/{}", m.id), &body)
                .await
            {
                client.warn_once(
                    url,
                    &format!("could not report migration progress to {url} ({e:#}); the migration itself goes on (`timelock migrate status {}` shows it)", m.id),
                );
            }
        }
    }
}

async fn check(client: &Client, side: &Side, ns: &str) -> anyhow::Result<()> {
    match side {
        Side::Server { url } => {
            let body = client
                .call(
                    reqwest::Method::GET,
                    url,
                    &format!("{}/timestamp-management/ping", encode_segment(ns)),
                )
                .await?;
            if body.trim() != "pong" {
                bail!("{url} did not answer ping with pong for {ns}: {body:?}");
            }
            Ok(())
        }
        Side::File { path } => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                if !parent.is_dir() {
                    bail!("directory of {} does not exist", path.display());
                }
            }
            Ok(())
        }
    }
}

async fn fetch(client: &Client, url: &str, ns: &str) -> anyhow::Result<i64> {
    let body = client
        .call(
            reqwest::Method::POST,
            url,
            &format!("{}/timestamp/fresh-timestamp", encode_segment(ns)),
        )
        .await?;
    body.trim()
        .parse()
        .map_err(|_| anyhow!("{url} returned {body:?}, not a timestamp"))
}

/// Blocks the source and returns the highest timestamp it can have issued.
async fn block_source(
    client: &Client,
    side: &Side,
    ns: &str,
    source_is_offline: bool,
) -> anyhow::Result<i64> {
    match side {
        Side::File { path } => read_timestamp_file(path),
        Side::Server { url } => {
            match client
                .call(
                    reqwest::Method::POST,
                    url,
                    &format!("{}/timestamp-management/invalidate", encode_segment(ns)),
                )
                .await
            {
                Ok(body) => body
                    .trim()
                    .parse()
                    .map_err(|_| anyhow!("{url} returned {body:?} for invalidate, not a bound")),
                Err(e) if e.to_string().contains("HTTP 404") => {
                    if !source_is_offline {
                        bail!("{url} cannot be invalidated (it has no invalidate endpoint, e.g. Palantir's TimeLock): stop its clients and re-run with --source-is-offline");
                    }
                    let fresh = fetch(client, url, ns).await?;
                    eprintln!("{url} cannot be invalidated; source confirmed offline, using a fresh timestamp {fresh}");
                    Ok(fresh)
                }
                Err(e) => Err(e),
            }
        }
    }
}

/// Moves the destination past `bound` (revalidating it when reversing onto the old side).
async fn forward_destination(
    client: &Client,
    side: &Side,
    ns: &str,
    bound: i64,
    revalidate: bool,
) -> anyhow::Result<()> {
    match side {
        Side::File { path } => write_file_durably(path, &format!("{bound}\n")),
        Side::Server { url } => {
            let verb = if revalidate {
                "revalidate"
            } else {
                "fast-forward"
            };
            client
                .call(
                    reqwest::Method::POST,
                    url,
                    &format!(
                        "{}/timestamp-management/{verb}?currentTimestamp={bound}",
                        encode_segment(ns)
                    ),
                )
                .await
                .map(|_| ())
        }
    }
}

/// Reverses a committed reversible migration: the destination becomes the source again.
pub async fn reverse(dir: &Path, id: &str) -> anyhow::Result<Migration> {
    let mut m = load(dir, id)?;
    check_plan(&m)?;
    if !m.reversible {
        bail!("migration {id} was not started with --reversible");
    }
    if m.state != MigrationState::Committed {
        bail!(
            "migration {id} is {:?}, not COMMITTED: resume it first (timelock migrate resume {id})",
            m.state
        );
    }
    let old = m.direction_mapping.clone();
    m.direction_mapping = DirectionMapping {
        source: old.destination,
        destination: old.source,
        source_writable: true,
        destination_writable: false,
    };
    for ns in &mut m.namespaces {
        std::mem::swap(&mut ns.source_namespace, &mut ns.destination_namespace);
        ns.step = Step::Pending;
        ns.source_bound = None;
        ns.verified_timestamp = None;
    }
    m.state = MigrationState::Reversing;
    m.log
        .push("REVERSING: blocking the new side and moving the old side past it".into());
    save(dir, &m)?;
    run(dir, m).await
}
