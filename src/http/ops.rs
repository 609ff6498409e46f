//! Operations: Prometheus `/metrics`, `/health/live`, `/health/ready`, and the middleware that
//! counts requests by matched route and status and times them.
//!
//! Readiness is red while the server shuts down and whenever a namespace's timestamp service has
//! fail-stopped, so a load balancer stops sending it traffic; liveness stays green (restarting is
//! the operator's decision, and the recovery path, once storage is fixed).

use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;

use super::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

async fn live() -> Response {
    super::json(&json!({"status": "UP"}))
}

async fn ready(State(state): State<AppState>) -> Response {
    let fail_stopped = state.namespaces.fail_stopped();
    let shutting_down = state.shutting_down.load(Ordering::Acquire);
    let ok = fail_stopped.is_empty() && !shutting_down;
    let body = json!({
        "status": if ok { "READY" } else { "NOT_READY" },
        "shuttingDown": shutting_down,
        "failStoppedNamespaces": fail_stopped,
    });
    let mut response = super::json(&body);
    if !ok {
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    }
    response
}

/// Counts and times every routed request under its route template (not the raw path, so
/// namespaces do not explode label cardinality).
pub async fn track_requests(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    let route = route
        .as_ref()
        .map(MatchedPath::as_str)
        .unwrap_or("unmatched");
    state
        .metrics
        .http_requests
        .with_label_values(&[route, method.as_str(), response.status().as_str()])
        .inc();
    state
        .metrics
        .http_latency
        .with_label_values(&[route])
        .observe(started.elapsed().as_secs_f64());
    response
}
