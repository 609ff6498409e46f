//! Operations: Prometheus `/metrics`, `/health/live`, `/health/ready`, and the middleware that
//! counts requests by matched route and status and times them.
//!
//! Readiness is red while the server shuts down and whenever a namespace's timestamp service has
//! fail-stopped, so a load balancer stops sending it traffic; liveness stays green (restarting is
//! the operator's decision, and the recovery path, once storage is fixed).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use prometheus::{Histogram, IntCounter};

use crate::cluster::Role;
use crate::metrics::Metrics;
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
        .route("/health/leader", get(leader))
}

async fn metrics(State(state): State<AppState>) -> Response {
    // Namespace states, summed over the registries this node serves (none on a follower).
    let (mut failed, mut fenced, mut oldest, mut led) = (0, 0, f64::INFINITY, 0);
    for registry in state.leadership.registries() {
        let (f, n, o) = registry.state_counts();
        (failed, fenced, oldest) = (failed + f, fenced + n, oldest.min(o));
        led += registry.len() as i64;
    }
    state.metrics.fail_stopped.set(failed);
    state.metrics.fenced.set(fenced);
    state
        .metrics
        .oldest_fence_start
        .set(if oldest.is_finite() { oldest } else { 0.0 });
    state.metrics.cluster.namespaces_led.set(led);
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

/// Readiness: 200 when this node can do its part, 503 when it cannot.
///
/// * single node: ready unless shutting down or a namespace has fail-stopped;
/// * cluster leader: the same;
/// * cluster follower: ready (it answers clients with a redirect or 503 as TimeLock's
///   followers do; a container orchestrator should keep it running);
/// * no quorum (etcd unreachable): not ready.
///
/// `role` says which; `/health/leader` is 200 only where client requests are served (for a
/// load balancer that should send traffic to the leader only).
async fn ready(State(state): State<AppState>) -> Response {
    let role = state.leadership.role();
    let shutting_down = state.shutting_down.load(Ordering::Acquire);
    let killed = state.killed.is_killed();
    let (mut fail_stopped, mut fenced) = (Vec::new(), Vec::new());
    for registry in state.leadership.registries() {
        fail_stopped.extend(registry.fail_stopped());
        fenced.extend(registry.fenced());
    }
    fail_stopped.sort();
    fenced.sort();
    let ok = fail_stopped.is_empty() && !shutting_down && !killed && role != Role::NoQuorum;
    let mut body = json!({
        "status": if ok { "READY" } else { "NOT_READY" },
        "role": role.as_str(),
        "shuttingDown": shutting_down,
        "forceKilled": killed,
        "failStoppedNamespaces": fail_stopped,
        "fencedNamespaces": fenced,
    });
    if role != Role::Single {
        body["nodeId"] = json!(state.leadership.node_id());
        body["leader"] = match role {
            _ if state.leadership.per_namespace() => json!(null),
            Role::Leader => json!(state.leadership.advertise_url()),
            _ => json!(state.leadership.leader_url().as_deref()),
        };
        body["leadership"] = json!(crate::status::leadership_status(&state.leadership));
    }
    let mut response = super::json(&body);
    if !ok {
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    }
    response
}

/// 200 where client requests are served (the single node, or the cluster's leader), else 503.
async fn leader(State(state): State<AppState>) -> Response {
    let role = state.leadership.role();
    let mut response = super::json(&json!({ "role": role.as_str() }));
    if !state.leadership.serves() {
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    }
    response
}

/// Counts and times every routed request under its route template (not the raw path, so
/// namespaces do not explode label cardinality), and enforces the request timeout.
///
/// A hand-written tower layer rather than `axum::middleware::from_fn`: `route_layer` applies it
/// once per route, so each instance learns its route template once and keeps the metric handles
/// of its usual answer (its method with 200) in a `OnceLock`; the hot path takes no lock, hashes
/// no label and boxes no future. Other answers go through a per-thread cache of handles.
///
/// The timeout timer is armed only if the handler does not finish on its first poll: the hot
/// paths (a timestamp from the reservation, an uncontended lock) complete immediately and never
/// touch the timer wheel; a request that waits (for a bound write, say) gets its deadline.
/// `timeout: None` is for routes whose waits are bounded by the request itself (lock
/// acquisition's `acquireTimeoutMs`).
#[derive(Clone)]
pub struct TrackingLayer {
    metrics: Metrics,
    timeout: Option<Duration>,
    limit: Option<super::overload::InFlightLimit>,
}

impl TrackingLayer {
    pub fn new(metrics: Metrics, timeout: Option<Duration>) -> Self {
        Self {
            metrics,
            timeout,
            limit: None,
        }
    }

    /// Requests beyond `limit` are answered 429 at once (see [`super::overload`]), before they
    /// are timed or counted by route.
    pub fn with_limit(mut self, limit: super::overload::InFlightLimit) -> Self {
        self.limit = Some(limit);
        self
    }

    /// The layer over `inner` for a route served without the router (see [`super::direct`]):
    /// its template is given rather than read from the request's `MatchedPath`.
    pub fn layer_for_route<S>(&self, inner: S, route: &str) -> Tracking<S> {
        let tracking = tower::Layer::layer(self, inner);
        let _ = tracking.shared.route.set(route.into());
        tracking
    }
}

struct RouteMetrics {
    metrics: Metrics,
    timeout: Option<Duration>,
    limit: Option<super::overload::InFlightLimit>,
    route: OnceLock<Box<str>>,
    usual: OnceLock<(Method, IntCounter, Histogram)>,
}

impl<S> tower::Layer<S> for TrackingLayer {
    type Service = Tracking<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Tracking {
            inner,
            shared: Arc::new(RouteMetrics {
                metrics: self.metrics.clone(),
                timeout: self.timeout,
                limit: self.limit.clone(),
                route: OnceLock::new(),
                usual: OnceLock::new(),
            }),
        }
    }
}

#[derive(Clone)]
pub struct Tracking<S> {
    inner: S,
    shared: Arc<RouteMetrics>,
}

#[cfg(test)]
impl<S> Tracking<S> {
    /// The route template this service counts requests under, once known.
    pub(crate) fn route_label(&self) -> Option<&str> {
        self.shared.route.get().map(|r| &**r)
    }
}

impl<S, B> tower::Service<axum::http::Request<B>> for Tracking<S>
where
    S: tower::Service<axum::http::Request<B>, Response = Response, Error = Infallible>,
    S::Future: Unpin,
{
    type Response = Response;
    type Error = Infallible;
    type Future = TrackingFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        if self.shared.route.get().is_none() {
            let route = request
                .extensions()
                .get::<MatchedPath>()
                .map_or("unmatched", MatchedPath::as_str);
            let _ = self.shared.route.set(route.into());
        }
        let inner = &mut self.inner;
        Self::track(&self.shared, request, |request| inner.call(request))
    }
}

impl<S> Tracking<S> {
    /// Calls `inner` on `request` inside the tracking: the in-flight slot, the start time and
    /// the method recorded for the metrics. Borrows the service, so a caller holding it behind
    /// a shared reference (the direct dispatcher) need not clone it per request.
    fn track<B, F>(
        shared: &Arc<RouteMetrics>,
        request: axum::http::Request<B>,
        inner: impl FnOnce(axum::http::Request<B>) -> F,
    ) -> TrackingFuture<F> {
        let admitted = match &shared.limit {
            Some(limit) => {
                if let Err(refusal) = limit.admit() {
                    return TrackingFuture::refused(shared.clone(), refusal, request.method());
                }
                true
            }
            None => false,
        };
        let started = Instant::now();
        let method = request.method().clone();
        TrackingFuture {
            inner: Some(inner(request)),
            shared: shared.clone(),
            started,
            method,
            deadline: None,
            admitted,
            refusal: super::overload::Refusal::Overloaded,
        }
    }

    /// [`tower::Service::call`] for a service whose route was given at construction
    /// ([`TrackingLayer::layer_for_route`]), through a shared reference.
    pub fn call_ref<B, F>(
        &self,
        request: axum::http::Request<B>,
        inner: impl FnOnce(&S, axum::http::Request<B>) -> F,
    ) -> TrackingFuture<F> {
        Self::track(&self.shared, request, |request| inner(&self.inner, request))
    }
}

pub struct TrackingFuture<F> {
    /// `None` for a request refused by the in-flight limit.
    inner: Option<F>,
    shared: Arc<RouteMetrics>,
    started: Instant,
    method: Method,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Whether this request holds an in-flight slot of `shared.limit`, given back when the
    /// future is dropped (after the response is produced, or with the request).
    admitted: bool,
    /// Why a request with no `inner` was refused.
    refusal: super::overload::Refusal,
}

impl<F> Drop for TrackingFuture<F> {
    fn drop(&mut self) {
        if self.admitted {
            if let Some(limit) = &self.shared.limit {
                limit.release();
            }
        }
    }
}

impl<F> TrackingFuture<F> {
    fn refused(
        shared: Arc<RouteMetrics>,
        refusal: super::overload::Refusal,
        method: &Method,
    ) -> Self {
        TrackingFuture {
            inner: None,
            shared,
            started: Instant::now(),
            method: method.clone(),
            deadline: None,
            admitted: false,
            refusal,
        }
    }
}

impl<F> Future for TrackingFuture<F>
where
    F: Future<Output = Result<Response, Infallible>> + Unpin,
{
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            // Shed requests count under their route and status too (429, or 503 once
            // force-killed), so `timelock_http_requests_total` shows every answer given.
            let response = this.refusal.response();
            let route = this.shared.route.get().map_or("unmatched", |r| r);
            let seconds = this.started.elapsed().as_secs_f64();
            record(
                &this.shared.metrics,
                route,
                &this.method,
                response.status(),
                seconds,
            );
            return Poll::Ready(Ok(response));
        };
        let response = match Pin::new(inner).poll(cx) {
            Poll::Ready(Ok(response)) => response,
            Poll::Ready(Err(never)) => match never {},
            Poll::Pending => {
                let Some(limit) = this.shared.timeout else {
                    return Poll::Pending;
                };
                let started = this.started;
                // What is left of the limit, timed on tokio's clock (which the timer runs on)
                // rather than as a deadline converted from the wall clock: the same in
                // production, and right under a paused test clock too, where the two differ
                // (the router fuzz target's lock waits advance tokio's clock by years).
                let sleep = this.deadline.get_or_insert_with(|| {
                    Box::pin(tokio::time::sleep(limit.saturating_sub(started.elapsed())))
                });
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                super::error::conjure_error(
                    StatusCode::REQUEST_TIMEOUT,
                    "TIMEOUT",
                    "Default:Timeout",
                    None,
                    format!(
                        "request did not complete within {} ms (server.request_timeout_ms)",
                        limit.as_millis()
                    ),
                )
            }
        };
        let shared = &*this.shared;
        let seconds = this.started.elapsed().as_secs_f64();
        let route = shared.route.get().map_or("unmatched", |r| r);
        let status = response.status();
        if status == StatusCode::OK {
            let (method, count, latency) = shared.usual.get_or_init(|| {
                (
                    this.method.clone(),
                    shared.metrics.http_requests.with_label_values(&[
                        route,
                        this.method.as_str(),
                        "200",
                    ]),
                    shared.metrics.http_latency.with_label_values(&[route]),
                )
            });
            if *method == this.method {
                count.inc();
                latency.observe(seconds);
                return Poll::Ready(Ok(response));
            }
        }
        record(&shared.metrics, route, &this.method, status, seconds);
        Poll::Ready(Ok(response))
    }
}

type Handles = Vec<(u64, Method, u16, IntCounter, Histogram)>;

thread_local! {
    /// Label handles resolved before on this thread, by route template, then by registry,
    /// method and status: the hot path skips the metric vectors' shared locks and label hashing.
    /// Bounded by routes × methods × statuses.
    static HANDLES: std::cell::RefCell<std::collections::HashMap<Box<str>, Handles>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

fn record(metrics: &Metrics, route: &str, method: &Method, status: StatusCode, seconds: f64) {
    let code = status.as_u16();
    HANDLES.with(|cache| {
        let mut cache = cache.borrow_mut();
        if !cache.contains_key(route) {
            cache.insert(route.into(), Vec::new());
        }
        let handles = cache.get_mut(route).expect("just inserted");
        let found = handles
            .iter()
            .position(|(id, m, c, _, _)| *id == metrics.id && m == method && *c == code);
        let index = found.unwrap_or_else(|| {
            handles.push((
                metrics.id,
                method.clone(),
                code,
                metrics
                    .http_requests
                    .with_label_values(&[route, method.as_str(), status.as_str()]),
                metrics.http_latency.with_label_values(&[route]),
            ));
            handles.len() - 1
        });
        let (_, _, _, count, latency) = &handles[index];
        count.inc();
        latency.observe(seconds);
    });
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    use axum::body::Body;
    use axum::routing::post;
    use tower::ServiceExt;

    use super::*;
    use crate::http::Shared;
    use crate::lock::LockLimits;
    use crate::metrics::Metrics;
    use crate::namespaces::Namespaces;
    use crate::storage::memory::MemoryStore;
    use crate::timestamp::AllocatorLimits;

    async fn state() -> AppState {
        let metrics = Metrics::new();
        let limits = AllocatorLimits {
            reservation: 100,
            low_water_mark: 50,
            max_per_request: 10,
        };
        let store: Arc<dyn crate::storage::BoundStore> = Arc::new(MemoryStore::new());
        let namespaces = Namespaces::load(
            store.clone(),
            limits,
            LockLimits::default(),
            10,
            metrics.clone(),
        )
        .await
        .unwrap();
        AppState::new(Shared {
            leadership: Arc::new(crate::cluster::Leadership::single(
                Arc::new(namespaces),
                metrics.clone(),
            )),
            store,
            backups_dir: std::path::PathBuf::from("unused"),
            migrations_dir: std::path::PathBuf::from("unused"),
            max_body_bytes: 1024,
            metrics,
            lifecycle_id: uuid::Uuid::new_v4(),
            shutting_down: Arc::new(AtomicBool::new(false)),
            killed: Default::default(),
            access: Default::default(),
            lock_v1: crate::http::lock_v1::V1Limits::from(&crate::config::LockV1Settings::default()),
            status: Default::default(),
        })
    }

    async fn call(timeout: Option<Duration>, path: &str) -> Response {
        let state = state().await;
        let tracking = TrackingLayer::new(state.metrics.clone(), timeout);
        let app: Router = Router::new()
            .route("/fast", post(|| async { "fast" }))
            .route(
                "/slow",
                post(|| async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    "slow"
                }),
            )
            .route_layer(tracking);
        let request = axum::http::Request::post(path).body(Body::empty()).unwrap();
        app.oneshot(request).await.unwrap()
    }

    #[tokio::test]
    async fn timeout_applies_only_to_requests_that_wait_too_long() {
        let limit = Some(Duration::from_millis(50));
        assert_eq!(call(limit, "/fast").await.status(), StatusCode::OK);
        let timed_out = call(limit, "/slow").await;
        assert_eq!(timed_out.status(), StatusCode::REQUEST_TIMEOUT);
        let body = axum::body::to_bytes(timed_out.into_body(), 10_000)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["errorCode"], "TIMEOUT");
        assert_eq!(
            call(None, "/slow").await.status(),
            StatusCode::OK,
            "untimed routes wait"
        );
        assert_eq!(
            call(Some(Duration::from_secs(5)), "/slow").await.status(),
            StatusCode::OK
        );
    }
}
