//! Load shedding: beyond `server.max_in_flight_requests` concurrent requests the server answers
//! `429 Too Many Requests` with `Retry-After` at once instead of queueing without bound.
//!
//! Why here and how: a request that cannot be served soon is better refused immediately — the
//! AtlasDB client retries a 429 on the same node after `Retry-After` (spec section 2) — than
//! parked, where it holds memory and makes every accepted request slower. Requests that wait
//! (lock acquisition, a bound write on a slow disk) are what pile up, so the count is of
//! requests inside handlers, not of connections (those are capped separately by
//! `server.max_connections`, see `server::accept_loop`). The check is one atomic add and one
//! subtract per request, with no lock and no allocation; the answer is a QoS response with no
//! body, as conjure-java's.
//!
//! `/metrics` and `/health/*` are outside the limit, so an overloaded server can still be
//! observed.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus::IntCounter;

/// Seconds a shed client is asked to wait before retrying.
pub const RETRY_AFTER_SECS: &str = "1";

/// The 429 a shed request (or connection) gets.
pub fn too_many_requests() -> Response {
    let mut response = StatusCode::TOO_MANY_REQUESTS.into_response();
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_static(RETRY_AFTER_SECS),
    );
    response
}

/// The in-flight limit, shared by every client route. Applied by the request tracking layer
/// ([`super::ops::TrackingLayer::with_limit`]) rather than as a layer of its own: one fewer
/// boxed service (and its per-request clone) between the router and a handler.
///
/// It is also where a server taken out of service by `forceKillTimeLockServer` refuses client
/// requests: the one check every client route already makes, so the kill switch costs the hot
/// path a load of a flag that never changes in normal operation.
#[derive(Clone)]
pub struct InFlightLimit {
    in_flight: Arc<AtomicUsize>,
    max: usize,
    shed: IntCounter,
    killed: Arc<KillSwitch>,
}

/// Set by `forceKillTimeLockServer` and never cleared: the process refuses every client request
/// until it is restarted. A flag for the per-request check, and a notification for the few
/// tasks that must act on it (cluster mode hands leadership over).
#[derive(Default)]
pub struct KillSwitch {
    killed: AtomicBool,
    notify: tokio::sync::Notify,
}

impl KillSwitch {
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    #[inline]
    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Relaxed)
    }

    /// Completes once [`Self::kill`] was called.
    pub async fn killed(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before the check, so a kill between the two is not missed.
            notified.as_mut().enable();
            if self.is_killed() {
                return;
            }
            notified.await;
        }
    }
}

/// Why a request was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The limit is reached: 429, retry after a second.
    Overloaded,
    /// The server was force-killed: 503 until it is restarted.
    Killed,
}

impl Refusal {
    pub fn response(self) -> Response {
        match self {
            Refusal::Overloaded => too_many_requests(),
            Refusal::Killed => crate::error::TimelockError::ForceKilled.into_response(),
        }
    }
}

impl InFlightLimit {
    /// At most `max` requests inside handlers; `shed` counts the refused ones; none at all
    /// once `killed` is set.
    pub fn new(max: usize, shed: IntCounter, killed: Arc<KillSwitch>) -> Self {
        Self {
            in_flight: Arc::new(AtomicUsize::new(0)),
            max,
            shed,
            killed,
        }
    }

    /// Takes a slot for one request, or refuses it when the limit is reached (the refusal is
    /// counted) or the server was killed. A taken slot must be given back with
    /// [`Self::release`].
    pub fn admit(&self) -> Result<(), Refusal> {
        if self.killed.is_killed() {
            return Err(Refusal::Killed);
        }
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.shed.inc();
            return Err(Refusal::Overloaded);
        }
        Ok(())
    }

    /// Gives back a slot taken by [`Self::admit`]. (The request tracking layer holds the limit
    /// for as long as the request, so a slot is a flag there rather than a second reference
    /// count on the counter's allocation, shared by every request on both workers.)
    pub fn release(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::extract::Request;
    use axum::routing::post;
    use tower::ServiceExt;

    #[tokio::test]
    async fn sheds_beyond_the_limit_and_recovers() {
        let (release, released) = tokio::sync::watch::channel(false);
        let shed = IntCounter::new("shed", "shed").unwrap();
        let router = axum::Router::new()
            .route(
                "/wait",
                post(move || {
                    let mut released = released.clone();
                    async move {
                        let _ = released.wait_for(|r| *r).await;
                        "done"
                    }
                }),
            )
            .route_layer(
                crate::http::ops::TrackingLayer::new(crate::metrics::Metrics::new(), None)
                    .with_limit(InFlightLimit::new(2, shed.clone(), Default::default())),
            );
        let call = |router: axum::Router| async move {
            router
                .oneshot(Request::post("/wait").body(Body::empty()).expect("request"))
                .await
                .expect("infallible")
        };
        let first = tokio::spawn(call(router.clone()));
        let second = tokio::spawn(call(router.clone()));
        // Let both reach the handler and park there.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let third = call(router.clone()).await;
        assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(third.headers()[header::RETRY_AFTER], RETRY_AFTER_SECS);
        assert_eq!(shed.get(), 1);
        release.send(true).unwrap();
        assert_eq!(first.await.unwrap().status(), StatusCode::OK);
        assert_eq!(second.await.unwrap().status(), StatusCode::OK);
        // Slots are returned: the next request is admitted.
        assert_eq!(call(router).await.status(), StatusCode::OK);
        assert_eq!(shed.get(), 1);
    }
}
