//! Admin endpoints, under one prefix (`/admin`) apart from the client routes so that a later
//! admin credential can protect them all: online backups of the running server.
//!
//! * `POST /admin/backups[?name=N]` — a consistent point-in-time backup (RocksDB checkpoint plus
//!   `metadata.json`) of the live data dir, type `on-demand`; answers its metadata.
//! * `GET /admin/backups` — every backup's metadata, oldest first.
//! * `GET /admin/backups/{name}` — one backup's metadata.

use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;

use super::extract::query_str;
use super::{json, AppState};
use crate::backup::{self, BackupError, BackupType};
use crate::error::TimelockError;

pub const PREFIX: &str = "/admin";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/backups", get(list_backups).post(create_backup))
        .route("/backups/{name}", get(show_backup))
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
    .map_err(|e| TimelockError::Storage(format!("backup task failed: {e}")))?
    .map_err(to_error)?;
    Ok(json(&metadata))
}

async fn list_backups(State(state): State<AppState>) -> Result<Response, TimelockError> {
    Ok(json(&backup::list(&state.backups_dir).map_err(to_error)?))
}

async fn show_backup(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, TimelockError> {
    Ok(json(
        &backup::show(&state.backups_dir, &name).map_err(to_error)?,
    ))
}
