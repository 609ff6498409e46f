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

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
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

/// The tower layer; see the module docs.
#[derive(Clone)]
pub struct ShedLayer {
    in_flight: Arc<AtomicUsize>,
    max: usize,
    shed: IntCounter,
}

impl ShedLayer {
    /// At most `max` requests inside the wrapped service at once; `shed` counts refusals.
    pub fn new(max: usize, shed: IntCounter) -> Self {
        Self {
            in_flight: Arc::new(AtomicUsize::new(0)),
            max,
            shed,
        }
    }
}

impl<S> tower::Layer<S> for ShedLayer {
    type Service = Shed<S>;

    fn layer(&self, inner: S) -> Shed<S> {
        Shed {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Shed<S> {
    inner: S,
    layer: ShedLayer,
}

/// Decrements the in-flight count when the request finishes (or is dropped mid-way, for
/// instance when the client disconnects).
struct Admitted(Arc<AtomicUsize>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<S> tower::Service<Request> for Shed<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ShedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let counter = &self.layer.in_flight;
        if counter.fetch_add(1, Ordering::AcqRel) >= self.layer.max {
            counter.fetch_sub(1, Ordering::AcqRel);
            self.layer.shed.inc();
            return ShedFuture::Shed;
        }
        let admitted = Admitted(counter.clone());
        ShedFuture::Admitted {
            inner: self.inner.call(request),
            _admitted: admitted,
        }
    }
}

pin_project_lite::pin_project! {
    /// The wrapped handler's future plus the in-flight slot it holds, or an immediate 429.
    #[project = ShedProjection]
    pub enum ShedFuture<F> {
        Admitted { #[pin] inner: F, _admitted: Admitted },
        Shed,
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for ShedFuture<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ShedProjection::Admitted { inner, .. } => inner.poll(cx),
            ShedProjection::Shed => Poll::Ready(Ok(too_many_requests())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
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
            .layer(ShedLayer::new(2, shed.clone()));
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
