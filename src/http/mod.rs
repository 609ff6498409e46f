//! The HTTP layer: thin axum routers over the core services.
//!
//! Handlers decode and validate the request (see [`extract`]), call one core service, and encode
//! the result in exactly the JSON shape AtlasDB clients parse (spec `timelock-api.md`). Errors
//! become responses in one place, [`error`]. Every route is served at the root and again under
//! the configured prefix (`/timelock/api` by default), as TimeLock deployments use either.
//!
//! Modules: [`timestamp`] (fresh timestamps, legacy and Conjure), [`management`]
//! (fast-forward, ping, invalidate/revalidate, `/tl/management`, `/tl/feedback`), [`ops`]
//! (metrics, health, request metrics middleware), [`overload`] (shedding beyond the in-flight
//! limit), [`lock`] (v2 locks, lock watches) and [`lock_v1`] (the legacy v1 lock service),
//! [`admin`] (backups, migrations, status) and [`page`] (the status page at `/`).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::Response;
use axum::Router;

use crate::cluster::Leadership;
use crate::config::{ClusterMode, Settings};
use crate::metrics::Metrics;
use crate::namespaces::Namespaces;

pub mod admin;
pub mod auth;
pub mod direct;
pub mod error;
pub mod extract;
pub mod lock;
pub mod lock_v1;
pub mod management;
pub mod ops;
pub mod overload;
pub mod page;
pub mod routing;
pub mod timestamp;
pub mod transactions;
pub mod wire;

pub use wire::write::{json, json_number, no_content};

/// What every handler can reach. One `Arc`, so handing it to a handler costs one reference
/// count increment.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    /// Whether this node serves, and the current term's namespace registry.
    pub leadership: Arc<Leadership>,
    /// The bound store (for online backups through the admin API).
    pub store: Arc<dyn crate::storage::BoundStore>,
    /// Where online backups are written.
    pub backups_dir: std::path::PathBuf,
    /// Where reported migration progress is kept.
    pub migrations_dir: std::path::PathBuf,
    /// Largest request body read (`server.max_body_bytes`).
    pub max_body_bytes: usize,
    pub metrics: Metrics,
    /// Random per process start (TimeLock's `getServerLifecycleId`).
    pub lifecycle_id: uuid::Uuid,
    /// Set when graceful shutdown begins; readiness turns red.
    pub shutting_down: Arc<AtomicBool>,
    /// Set by `forceKillTimeLockServer`: every client request is refused (503) and readiness
    /// is red until the process is restarted; nothing clears it.
    pub killed: Arc<overload::KillSwitch>,
    /// Who may do what (`[auth]`); open unless configured.
    pub access: Arc<crate::auth::AccessPolicy>,
    /// The legacy (v1) lock service's blocking limit and request permits.
    pub lock_v1: lock_v1::V1Limits,
    /// One status snapshot taken at a time, shared by the requests that wait for it.
    pub status: admin::StatusGate,
}

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }

    /// The registry that serves `ns`, or `NotCurrentLeader`/`NotLeaderOf` (503, or 308 to
    /// the namespace's leader).
    #[inline]
    pub fn registry(&self, ns: &str) -> crate::error::Result<Arc<Namespaces>> {
        self.leadership.registry_for(ns)
    }

    /// The namespace `ns`, created on first use, if this node serves it.
    #[inline]
    pub async fn namespace(
        &self,
        ns: &str,
    ) -> crate::error::Result<Arc<crate::namespaces::Namespace>> {
        self.registry(ns)?.get_or_create(ns).await
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The complete application as served: the hot client endpoints dispatched directly (see
/// [`direct`]) when `server.direct_dispatch` is on, with the same leader routing and access
/// control as the router's layers; everything else through [`app`]'s router.
pub fn service(state: AppState, settings: &Settings) -> direct::Dispatch {
    let (router, layers) = build(state.clone(), settings);
    let bodies = direct::BodyLimits {
        max_bytes: settings.server.max_body_bytes,
        read_timeout: Duration::from_millis(settings.server.body_read_timeout_ms),
    };
    if !settings.server.direct_dispatch {
        return direct::Dispatch::router_only(router, bodies);
    }
    let guards = direct::Guards {
        leader: (settings.cluster.mode == ClusterMode::Etcd).then(|| state.clone()),
        access: state
            .access
            .is_enforcing()
            .then(|| Arc::new(auth_guard(&state, settings))),
    };
    let prefix = &settings.server.path_prefix;
    direct::Dispatch::new(router, state, prefix, layers, bodies, guards)
}

fn auth_guard(state: &AppState, settings: &Settings) -> auth::AuthGuard {
    auth::AuthGuard {
        policy_source: state.access.clone(),
        prefix: settings.server.path_prefix.clone(),
        max_body_bytes: settings.server.max_body_bytes,
        metrics: state.metrics.guard.clone(),
    }
}

/// The complete application as one router: client routes at the root and under
/// `settings.server.path_prefix`.
pub fn app(state: AppState, settings: &Settings) -> Router {
    build(state, settings).0
}

fn build(state: AppState, settings: &Settings) -> (Router, direct::DirectLayers) {
    // Requests are cut off after `request_timeout_ms` (a Conjure 408), except lock requests,
    // whose wait is bounded by each request's own `acquireTimeoutMs`, as in TimeLock.
    let timeout = Some(Duration::from_millis(settings.server.request_timeout_ms));
    let timed = ops::TrackingLayer::new(state.metrics.clone(), timeout);
    // One in-flight limit shared by the root and prefixed copies of the client routes;
    // operations routes stay outside it so an overloaded server can still be observed.
    let limit = overload::InFlightLimit::new(
        settings.server.max_in_flight_requests,
        state.metrics.guard.shed.with_label_values(&["in_flight"]),
        state.killed.clone(),
    );
    let timed_client = timed.clone().with_limit(limit.clone());
    let untimed_client = ops::TrackingLayer::new(state.metrics.clone(), None).with_limit(limit);
    let direct_layers = direct::DirectLayers {
        timed: timed_client.clone(),
        untimed: untimed_client.clone(),
    };
    let routes = || {
        Router::new()
            .merge(
                Router::new()
                    .merge(direct::hot_routes(true))
                    .merge(timestamp::routes())
                    .merge(management::routes())
                    .merge(transactions::routes())
                    .route_layer(timed_client.clone()),
            )
            .merge(
                Router::new()
                    .merge(direct::hot_routes(false))
                    .merge(lock::routes())
                    .route_layer(untimed_client.clone()),
            )
            // v1 lock requests are cut off by `lock_v1.blocking_timeout_ms` instead.
            .merge(lock_v1::routes().route_layer(untimed_client.clone()))
            .merge(ops::routes().route_layer(timed.clone()))
    };
    // Admin routes stay apart from client routes, at the root only, under one prefix that an
    // admin credential can protect.
    let mut router = routes().nest(admin::PREFIX, admin::routes().route_layer(timed.clone()));
    // The status page, for a person with a browser: the exact root path only (every client
    // route has at least one segment), behind the admin credential like `/admin`.
    router = router.route(
        "/",
        axum::routing::get(page::page).route_layer(timed.clone()),
    );
    let prefix = settings.server.path_prefix.as_str();
    if !prefix.is_empty() {
        router = router.nest(prefix, routes());
    }
    if state.access.is_enforcing() {
        let guard = Arc::new(auth_guard(&state, settings));
        router = router.route_layer(axum::middleware::from_fn_with_state(guard, auth::authorize));
    }
    router = router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    if settings.cluster.mode == ClusterMode::Etcd {
        let prefix: Arc<str> = Arc::from(settings.server.path_prefix.as_str());
        router = router.layer(axum::middleware::from_fn_with_state(
            (state.clone(), prefix),
            routing::leader_only,
        ));
    }
    (router.with_state(state), direct_layers)
}

async fn not_found() -> Response {
    error::conjure_error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "Default:NotFound",
        None,
        "no such endpoint".to_string(),
    )
}

async fn method_not_allowed() -> Response {
    error::conjure_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "INVALID_ARGUMENT",
        "Default:MethodNotAllowed",
        None,
        "method not allowed on this endpoint (TimeLock endpoints are POST, except ping and leader-time)"
            .to_string(),
    )
}
