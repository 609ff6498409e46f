//! Admin endpoints, under one prefix (`/admin`) apart from the client routes so that a later
//! admin credential can protect them all: online backups of the running server.
//!
//! * `POST /admin/backups[?name=N]` — a consistent point-in-time backup (RocksDB checkpoint plus
//!   `metadata.json`) of the live data dir, type `on-demand`; answers its metadata.
//! * `GET /admin/backups` — every backup's metadata, oldest first.
//! * `GET /admin/backups/{name}` — one backup's metadata.
//! * `PUT /admin/migrations/{id}` — `timelock migrate` reports its state after every step to each
//!   server involved; `GET /admin/migrations[/{id}]` shows it (state, per-namespace progress,
//!   direction mapping, which side may be written).
//! * `GET /admin/status` — what the server is doing now ([`crate::status::Status`]): role and
//!   leader, every namespace's state, last timestamp, bound and locks, the newest backup, the
//!   migrations in flight. Answered by every node of a cluster (each about itself).

use axum::extract::{RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;

use super::extract::{query_str, JsonBody, PathParam};
use super::{json, no_content, AppState};
use std::sync::Arc;

use crate::error::TimelockError;
use crate::operations::backup::{self, BackupError, BackupType};
use crate::status::Status;

pub const PREFIX: &str = "/admin";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/backups", get(list_backups).post(create_backup))
        .route("/backups/{name}", get(show_backup))
        .route("/status", get(status))
        .route("/migrations", get(list_migrations))
        .route(
            "/migrations/{id}",
            get(show_migration).put(report_migration),
        )
}

fn to_error(e: BackupError) -> TimelockError {
    match e {
        BackupError::Invalid(text) => TimelockError::InvalidArgument(text),
        other => TimelockError::Storage(other.to_string()),
    }
}

async fn create_backup(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, TimelockError> {
    let name = query_str(query.as_deref(), "name")?;
    let store = state.store.clone();
    let dir = state.backups_dir.clone();
    let metadata = tokio::task::spawn_blocking(move || {
        backup::create(&dir, name.as_deref(), BackupType::OnDemand, |target| {
            store.checkpoint(target)
        })
    })
    .await
    .map_err(|e| TimelockError::Storage(format!("backup task failed: {e}")));
    let backups = &state.metrics.backup;
    let metadata = match metadata {
        Ok(Ok(metadata)) => metadata,
        // A refused name is the caller's mistake, not a failed backup.
        Ok(Err(e @ BackupError::Invalid(_))) => return Err(to_error(e)),
        Ok(Err(e)) => {
            backups.failures.with_label_values(&["on_demand"]).inc();
            return Err(to_error(e));
        }
        Err(e) => {
            backups.failures.with_label_values(&["on_demand"]).inc();
            return Err(e);
        }
    };
    backups.succeeded(metadata.created_at_unix_ms);
    Ok(json(&metadata))
}

async fn list_backups(State(state): State<AppState>) -> Result<Response, TimelockError> {
    Ok(json(&backup::list(&state.backups_dir).map_err(to_error)?))
}

async fn show_backup(
    State(state): State<AppState>,
    PathParam(name): PathParam,
) -> Result<Response, TimelockError> {
    Ok(json(
        &backup::show(&state.backups_dir, &name).map_err(to_error)?,
    ))
}

async fn report_migration(
    State(state): State<AppState>,
    PathParam(id): PathParam,
    JsonBody(migration): JsonBody<crate::operations::migration::Migration>,
) -> Result<Response, TimelockError> {
    if migration.id != id {
        return Err(TimelockError::InvalidArgument(format!(
            "body is migration {:?}, path says {id:?}",
            migration.id
        )));
    }
    let dir = state.migrations_dir.clone();
    tokio::task::spawn_blocking(move || crate::operations::migration::save(&dir, &migration))
        .await
        .map_err(|e| TimelockError::Storage(format!("migration writer failed: {e}")))?
        .map_err(|e| TimelockError::InvalidArgument(format!("{e:#}")))?;
    Ok(no_content())
}

async fn show_migration(
    State(state): State<AppState>,
    PathParam(id): PathParam,
) -> Result<Response, TimelockError> {
    let m = crate::operations::migration::load(&state.migrations_dir, &id)
        .map_err(|e| TimelockError::InvalidArgument(format!("{e:#}")))?;
    Ok(json(&m))
}

async fn list_migrations(State(state): State<AppState>) -> Result<Response, TimelockError> {
    Ok(json(&crate::operations::migration::list(
        &state.migrations_dir,
    )))
}

/// Serialises status snapshots. Taking one lists two directories on a blocking thread, a pool
/// the bound writes share: requests arriving together (a page left open in many browsers, a
/// scanner hitting `/`) queue here, on the async side, and use one blocking thread between them.
/// A request is answered with a snapshot taken after it arrived, never an older one.
#[derive(Default)]
pub struct StatusGate(tokio::sync::Mutex<Option<(std::time::Instant, Arc<Status>)>>);

/// The status snapshot, taken off the async workers (see [`StatusGate`]).
pub(super) async fn snapshot(state: &AppState) -> Result<Arc<Status>, TimelockError> {
    let arrived = std::time::Instant::now();
    let mut last = state.status.0.lock().await;
    if let Some((taken, status)) = &*last {
        if *taken >= arrived {
            return Ok(status.clone());
        }
    }
    let taken = std::time::Instant::now();
    let status = Arc::new(collect(state).await?);
    *last = Some((taken, status.clone()));
    Ok(status)
}

async fn collect(state: &AppState) -> Result<Status, TimelockError> {
    let leadership = state.leadership.clone();
    let backups = state.backups_dir.clone();
    let migrations = state.migrations_dir.clone();
    let flags = crate::status::Flags {
        shutting_down: state
            .shutting_down
            .load(std::sync::atomic::Ordering::Acquire),
        force_killed: state.killed.is_killed(),
    };
    tokio::task::spawn_blocking(move || {
        crate::status::collect(&leadership, &backups, &migrations, flags)
    })
    .await
    .map_err(|e| TimelockError::Internal(format!("status task failed: {e}")))
}

async fn status(State(state): State<AppState>) -> Result<Response, TimelockError> {
    Ok(json(&*snapshot(&state).await?))
}
