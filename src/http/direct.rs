//! Direct dispatch of the hot client endpoints, in front of the axum router.
//!
//! Why: every AtlasDB transaction calls a handful of endpoints (start, commit timestamps, lock,
//! unlock, refresh) and operators `curl` fresh timestamps; for those, axum's generic routing
//! is a measurable share of the request. Per request it looks the path up, allocates the path
//! parameters and inserts them and the matched template into the request's extensions, and
//! clones and boxes a service and a future for each layer between the router and the handler
//! (the profile is in docs/performance-history.md).
//!
//! What: a [`Dispatch`] service matches `POST` to the hot paths by hand — at the root and
//! under the configured prefix — and calls the same handler functions with the same extractor
//! values the router would build, wrapped in the same request tracking (metrics under the same
//! route template, the same in-flight limit and request timeout). Everything else goes to the
//! router, which stays the definition of behaviour: other methods, any path that is not plain
//! (a namespace with percent-escapes or characters outside `[A-Za-z0-9_.-]`, a trailing slash,
//! a legacy namespace equal to a fixed first segment such as `tl`). The router's outer layers
//! — leader routing in cluster mode, access control — are per-request checks ([`Guards`]) made
//! here by the same functions before a hot handler runs, so every deployment gets this path.
//! `server.direct_dispatch = false` sends every request through the router; the test
//! `tests/api/direct_dispatch.rs` runs the same requests both ways and compares the answers.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::HttpBody;
use axum::extract::{RawQuery, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Router;

use super::extract::{read_body, BodyReader, Buffered, FromBody, NsName};
use super::ops::{Tracking, TrackingFuture, TrackingLayer};
use super::AppState;

/// The endpoints served without the router.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hot {
    /// `/{ns}/timestamp/fresh-timestamp`
    FreshTimestamp,
    /// `/{ns}/timestamp/fresh-timestamps?number=N`
    FreshTimestamps,
    /// `/tl/ts/{ns}`
    ConjureTimestamps,
    /// `/tl/st/{ns}`
    StartTransactions,
    /// `/tl/gct/{ns}`
    CommitTimestamps,
    /// `/tl/l/{ns}`
    Lock,
    /// `/tl/ul2/{ns}`
    UnlockV2,
    /// `/tl/rl2/{ns}`
    RefreshV2,
}

impl Hot {
    const ALL: [Hot; 8] = [
        Hot::FreshTimestamp,
        Hot::FreshTimestamps,
        Hot::ConjureTimestamps,
        Hot::StartTransactions,
        Hot::CommitTimestamps,
        Hot::Lock,
        Hot::UnlockV2,
        Hot::RefreshV2,
    ];

    /// The router's template for this endpoint (at the root), the `route` label of its
    /// metrics.
    fn template(self) -> &'static str {
        match self {
            Hot::FreshTimestamp => "/{ns}/timestamp/fresh-timestamp",
            Hot::FreshTimestamps => "/{ns}/timestamp/fresh-timestamps",
            Hot::ConjureTimestamps => "/tl/ts/{ns}",
            Hot::StartTransactions => "/tl/st/{ns}",
            Hot::CommitTimestamps => "/tl/gct/{ns}",
            Hot::Lock => "/tl/l/{ns}",
            Hot::UnlockV2 => "/tl/ul2/{ns}",
            Hot::RefreshV2 => "/tl/rl2/{ns}",
        }
    }

    /// Lock requests are bounded by their own `acquireTimeoutMs`, not the request timeout
    /// (as the router's lock routes are).
    fn timed(self) -> bool {
        !matches!(self, Hot::Lock | Hot::UnlockV2 | Hot::RefreshV2)
    }

    /// The endpoint as the router serves it: the same handler as [`serve`] calls directly
    /// (legacy fresh timestamps also answer `GET`, as TimeLock's do).
    fn method_router(self) -> MethodRouter<AppState> {
        use super::{lock, timestamp, transactions};
        match self {
            Hot::FreshTimestamp => get(timestamp::fresh_timestamp).post(timestamp::fresh_timestamp),
            Hot::FreshTimestamps => {
                get(timestamp::fresh_timestamps).post(timestamp::fresh_timestamps)
            }
            Hot::ConjureTimestamps => post(timestamp::conjure_fresh_timestamps),
            Hot::StartTransactions => post(transactions::start_transactions),
            Hot::CommitTimestamps => post(transactions::commit_timestamps),
            Hot::Lock => post(lock::conjure_lock),
            Hot::UnlockV2 => post(lock::conjure_unlock_v2),
            Hot::RefreshV2 => post(lock::conjure_refresh_v2),
        }
    }
}

/// The hot endpoints as router routes, the timed or the untimed ones ([`Hot::timed`]): each
/// declared once, in [`Hot`], for the router and for direct dispatch alike.
pub(super) fn hot_routes(timed: bool) -> Router<AppState> {
    Hot::ALL
        .iter()
        .filter(|hot| hot.timed() == timed)
        .fold(Router::new(), |router, hot| {
            router.route(hot.template(), hot.method_router())
        })
}

/// First path segments of fixed routes: a legacy `/{ns}/...` path whose namespace is one of
/// these is left to the router, whose precedence between fixed and parameter segments decides.
const FIXED_FIRST_SEGMENTS: [&str; 5] = ["tl", "lw", "admin", "metrics", "health"];

/// A namespace segment the router would pass through unchanged: not empty, not starting with
/// a dot, and only `[A-Za-z0-9_.-]` (so no percent-decoding and no second segment).
fn plain(segment: &str) -> bool {
    !segment.is_empty()
        && !segment.starts_with('.')
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// Which hot endpoint `path` (without the prefix) is, and its namespace.
fn classify<'a>(path: &'a str, prefix_first_segment: &str) -> Option<(Hot, &'a str)> {
    let rest = path.strip_prefix('/')?;
    let slash = rest.bytes().position(|b| b == b'/')?;
    let (first, tail) = (&rest[..slash], &rest[slash + 1..]);
    let (hot, ns) = if first == "tl" {
        let slash = tail.bytes().position(|b| b == b'/')?;
        let (op, ns) = (&tail[..slash], &tail[slash + 1..]);
        let hot = match op.as_bytes() {
            b"ts" => Hot::ConjureTimestamps,
            b"st" => Hot::StartTransactions,
            b"gct" => Hot::CommitTimestamps,
            b"l" => Hot::Lock,
            b"ul2" => Hot::UnlockV2,
            b"rl2" => Hot::RefreshV2,
            _ => return None,
        };
        (hot, ns)
    } else {
        let hot = match tail.as_bytes() {
            b"timestamp/fresh-timestamp" => Hot::FreshTimestamp,
            b"timestamp/fresh-timestamps" => Hot::FreshTimestamps,
            _ => return None,
        };
        if FIXED_FIRST_SEGMENTS.contains(&first) || first == prefix_first_segment {
            return None;
        }
        (hot, first)
    };
    plain(ns).then_some((hot, ns))
}

/// The namespace of a path (without the prefix) that [`classify`] matched as `hot`: the last
/// segment of a Conjure path, the first of a legacy one.
fn namespace_of(hot: Hot, path: &str) -> &str {
    match hot {
        Hot::FreshTimestamp | Hot::FreshTimestamps => {
            let rest = &path[1..];
            &rest[..rest.bytes().position(|b| b == b'/').unwrap_or(rest.len())]
        }
        _ => &path[path.bytes().rposition(|b| b == b'/').map_or(0, |i| i + 1)..],
    }
}

/// A handler's future, boxed: one allocation per request, sized to that endpoint's own state
/// machine (a single `async` block matching over every endpoint would be as large as the
/// largest, and moved whole into its box on every request).
type Handled = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

/// An endpoint whose handler takes its body: the body read from hyper's body directly and
/// decoded as the handler's `JsonBody` extractor decodes it, then the handler
/// called with the extractor values the router would build.
fn with_body<E, B, H, F, R>(
    state: AppState,
    ns: NsName,
    request: axum::http::Request<B>,
    handler: H,
) -> Handled
where
    E: FromBody + Send + 'static,
    B: HttpBody<Data = bytes::Bytes> + Unpin + Send + 'static,
    H: FnOnce(State<AppState>, NsName, E) -> F + Send + 'static,
    F: Future<Output = R> + Send,
    R: IntoResponse,
{
    // Only the body goes into the future: the request head (mostly the URI and the header
    // map) is dropped here rather than copied into the box and kept beside the
    // handler's state.
    let body = request.into_body();
    Box::pin(async move {
        let body = read_body::<E, B>(body, state.max_body_bytes).await;
        Ok(match body {
            Ok(body) => handler(State(state), ns, body).await.into_response(),
            Err(rejection) => rejection.into_response(),
        })
    })
}

/// Calls the endpoint's handler as the router would, with the extractor values it would build.
fn serve<B>(hot: Hot, state: AppState, ns: String, request: axum::http::Request<B>) -> Handled
where
    B: HttpBody<Data = bytes::Bytes> + Unpin + Send + 'static,
{
    use super::{lock, timestamp, transactions};
    let ns = NsName(ns);
    match hot {
        Hot::FreshTimestamp => Box::pin(async move {
            Ok(timestamp::fresh_timestamp(State(state), ns)
                .await
                .into_response())
        }),
        Hot::FreshTimestamps => {
            let query = RawQuery(request.uri().query().map(str::to_owned));
            Box::pin(async move {
                Ok(timestamp::fresh_timestamps(State(state), ns, query)
                    .await
                    .into_response())
            })
        }
        Hot::ConjureTimestamps => {
            with_body(state, ns, request, timestamp::conjure_fresh_timestamps)
        }
        Hot::StartTransactions => with_body(state, ns, request, transactions::start_transactions),
        Hot::CommitTimestamps => with_body(state, ns, request, transactions::commit_timestamps),
        Hot::Lock => with_body(state, ns, request, lock::conjure_lock),
        Hot::UnlockV2 => with_body(state, ns, request, lock::conjure_unlock_v2),
        Hot::RefreshV2 => with_body(state, ns, request, lock::conjure_refresh_v2),
    }
}

/// One hot endpoint as a service (at the root or under the prefix: `skip` bytes of the path
/// are the prefix).
#[derive(Clone)]
pub struct HotService {
    hot: Hot,
    skip: usize,
    state: AppState,
}

impl HotService {
    /// The endpoint's response future (`classify` matched the request's path).
    fn handle<B>(&self, request: axum::http::Request<B>) -> Handled
    where
        B: HttpBody<Data = bytes::Bytes> + Unpin + Send + 'static,
    {
        let ns = namespace_of(self.hot, &request.uri().path()[self.skip..]).to_owned();
        serve(self.hot, self.state.clone(), ns, request)
    }
}

/// The hot endpoints, each tracked as its router route is: `[root, prefixed]` per [`Hot`].
struct Direct {
    prefix: Box<str>,
    prefix_first_segment: Box<str>,
    services: Vec<[Tracking<HotService>; 2]>,
    guards: Guards,
}

/// The per-request checks the router's outer layers make, made here the same way and in the
/// same order for the hot endpoints: leader routing (cluster mode), then access control. Each is
/// `None` where the router has no such layer, so a single open node pays nothing.
pub(super) struct Guards {
    /// Cluster mode: only the leader serves (see [`super::routing`]).
    pub leader: Option<AppState>,
    /// Access control is enforcing (see [`super::auth`]).
    pub access: Option<Arc<super::auth::AuthGuard>>,
}

impl Guards {
    /// The answer that ends the request before its handler, if any: a non-leader's 308 or 503,
    /// or access control's 401 or 403. `ns` is the route's namespace: [`classify`] matched only
    /// plain segments, so it is what the router's percent-decoded `{ns}` would be.
    fn refuse<B>(
        &self,
        request: &axum::http::Request<B>,
        ns: &str,
        prefix: &str,
        memo: Option<&super::auth::TokenMemo>,
    ) -> Option<Response> {
        if let Some(state) = &self.leader {
            // With a leader per namespace the handler finds out (as behind the router, where
            // access control answers first), and its error names the namespace to redirect for.
            if !state.leadership.per_namespace() && !state.leadership.serves() {
                let redirect =
                    super::routing::redirects(request.headers(), request.uri().path(), prefix);
                return Some(super::routing::not_leader(state, redirect, Some(ns)));
            }
        }
        let guard = self.access.as_ref()?;
        super::auth::refuse_namespace(guard, request, ns, memo)
    }

    /// What the router's leader routing does with a response: a term that ended while the
    /// request ran is answered as a non-leader would answer.
    fn after<B>(&self, request: &axum::http::Request<B>, prefix: &str) -> Option<LeaderAfter> {
        self.leader.as_ref().map(|state| LeaderAfter {
            state: state.clone(),
            redirect: super::routing::redirects(request.headers(), request.uri().path(), prefix),
        })
    }
}

/// See [`Guards::after`].
pub struct LeaderAfter {
    state: AppState,
    redirect: bool,
}

impl LeaderAfter {
    fn apply(&self, response: Response) -> Response {
        match response
            .extensions()
            .get::<super::routing::NotCurrentLeaderResponse>()
        {
            Some(marker) => {
                super::routing::not_leader(&self.state, self.redirect, marker.namespace.as_deref())
            }
            None => response,
        }
    }
}

impl Direct {
    /// The tracked service for `path` and the namespace it names, if it is a hot endpoint.
    fn route_with_namespace<'a>(&self, path: &'a str) -> Option<(&Tracking<HotService>, &'a str)> {
        if !self.prefix.is_empty() {
            if let Some(rest) = path.strip_prefix(&*self.prefix) {
                if rest.starts_with('/') {
                    let (hot, ns) = classify(rest, &self.prefix_first_segment)?;
                    return Some((&self.services[hot as usize][1], ns));
                }
            }
        }
        let (hot, ns) = classify(path, &self.prefix_first_segment)?;
        Some((&self.services[hot as usize][0], ns))
    }
}

/// The application's service: hot endpoints directly, everything else through the router.
///
/// Every request's body is read whole here, before routing, within `server.body_read_timeout_ms`
/// (408 beyond) and `server.max_body_bytes` (413): so a client that declares a body and never
/// finishes sending it is cut off on every route, and takes no in-flight slot
/// ([`super::overload`]) while it sends — the slot, the request timeout and the lock routes'
/// exemption from it all start once the body is in. A body that has already arrived (the usual
/// case: hyper has read it into the connection's buffer before it asks for the response) is
/// taken on the spot, with no timer, clone or allocation; only one still on its way waits, with
/// its own deadline.
#[derive(Clone)]
pub struct Dispatch {
    router: Router,
    direct: Option<Arc<Direct>>,
    bodies: BodyLimits,
    /// With access control on: the connection's bearer-token memo, shared by the clones hyper
    /// makes of this service for each request; [`Dispatch::for_connection`] starts a new one.
    memo: Option<Arc<super::auth::TokenMemo>>,
}

/// How request bodies are read (see [`Dispatch`]).
#[derive(Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    pub read_timeout: std::time::Duration,
}

/// How [`Dispatch`] is built: the router and, when direct dispatch applies, the layers its
/// hot routes carry there.
pub(super) struct DirectLayers {
    pub timed: TrackingLayer,
    pub untimed: TrackingLayer,
}

impl Dispatch {
    /// Every request through `router`.
    pub fn router_only(router: Router, bodies: BodyLimits) -> Self {
        Self {
            router,
            direct: None,
            bodies,
            memo: None,
        }
    }

    /// The service for a new connection: shares everything but the token memo.
    pub fn for_connection(&self) -> Self {
        let enforcing = self
            .direct
            .as_ref()
            .is_some_and(|d| d.guards.access.is_some());
        Self {
            memo: enforcing.then(Default::default),
            ..self.clone()
        }
    }

    pub(super) fn new(
        router: Router,
        state: AppState,
        prefix: &str,
        layers: DirectLayers,
        bodies: BodyLimits,
        guards: Guards,
    ) -> Self {
        let prefix_first_segment: Box<str> = Box::from(
            prefix
                .trim_start_matches('/')
                .split('/')
                .next()
                .unwrap_or(""),
        );
        let services = Hot::ALL
            .iter()
            .map(|&hot| {
                let layer = if hot.timed() {
                    &layers.timed
                } else {
                    &layers.untimed
                };
                let make = |skip: usize, route: String| {
                    layer.layer_for_route(
                        HotService {
                            hot,
                            skip,
                            state: state.clone(),
                        },
                        &route,
                    )
                };
                [
                    make(0, hot.template().to_string()),
                    make(prefix.len(), format!("{prefix}{}", hot.template())),
                ]
            })
            .collect();
        Self {
            router,
            direct: Some(Arc::new(Direct {
                prefix: prefix.into(),
                prefix_first_segment,
                services,
                guards,
            })),
            bodies,
            memo: None,
        }
    }

    /// Routes a request whose body is complete (or absent).
    fn dispatch<B, Pending>(&mut self, request: axum::http::Request<B>) -> DispatchFuture<Pending>
    where
        B: HttpBody<Data = bytes::Bytes> + Unpin + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        if let Some(direct) = &self.direct {
            if request.method() == Method::POST {
                if let Some((service, ns)) = direct.route_with_namespace(request.uri().path()) {
                    if let Some(response) =
                        direct
                            .guards
                            .refuse(&request, ns, &direct.prefix, self.memo.as_deref())
                    {
                        return DispatchFuture::Answered {
                            response: Some(response),
                        };
                    }
                    let after = direct.guards.after(&request, &direct.prefix);
                    // Called through the shared reference: cloning the service would add and
                    // drop two reference counts that every request on both workers writes.
                    return DispatchFuture::Direct {
                        future: service.call_ref(request, HotService::handle),
                        after,
                    };
                }
            }
        }
        DispatchFuture::Router {
            future: tower::Service::call(&mut self.router, request),
        }
    }
}

/// The router's response future (the same whatever the request's body type).
type RouterFuture = axum::routing::future::RouteFuture<Infallible>;

/// A body still arriving: read on, then routed.
pub struct Reading<B> {
    parts: Option<axum::http::request::Parts>,
    reader: BodyReader<B>,
    dispatch: Dispatch,
    started: std::time::Instant,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> Reading<B>
where
    B: HttpBody<Data = bytes::Bytes> + Unpin + Send + 'static,
{
    /// The routed request's future once the body is in, or the answer that ends the request.
    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Result<DispatchFuture<B>, Response>> {
        match self.reader.poll_read(cx) {
            Poll::Ready(Ok(bytes)) => {
                let parts = self.parts.take().expect("polled after the body was read");
                let request = axum::http::Request::from_parts(parts, Buffered::new(bytes));
                return Poll::Ready(Ok(self.dispatch.dispatch(request)));
            }
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error.into_response())),
            Poll::Pending => {}
        }
        let limit = self.dispatch.bodies.read_timeout;
        let started = self.started;
        let sleep = self.deadline.get_or_insert_with(|| {
            Box::pin(tokio::time::sleep(limit.saturating_sub(started.elapsed())))
        });
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let mut response = crate::error::TimelockError::RequestTimeout(format!(
            "request body not received within {} ms (server.body_read_timeout_ms)",
            limit.as_millis()
        ))
        .into_response();
        // The rest of the body may still come: the connection cannot carry another request.
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
        Poll::Ready(Err(response))
    }
}

pin_project_lite::pin_project! {
    /// A response from the router or from a hot endpoint, once the request's body is in.
    #[project = DispatchProj]
    pub enum DispatchFuture<B> {
        Router { #[pin] future: RouterFuture },
        Direct { future: TrackingFuture<Handled>, after: Option<LeaderAfter> },
        Reading { reading: Box<Reading<B>> },
        Answered { response: Option<Response> },
    }
}

impl<B> Future for DispatchFuture<B>
where
    B: HttpBody<Data = bytes::Bytes> + Unpin + Send + 'static,
{
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let next = match self.as_mut().project() {
                DispatchProj::Router { future } => return future.poll(cx),
                DispatchProj::Direct { future, after } => {
                    return match (Pin::new(future).poll(cx), after) {
                        (Poll::Ready(Ok(response)), Some(after)) => {
                            Poll::Ready(Ok(after.apply(response)))
                        }
                        (poll, _) => poll,
                    }
                }
                DispatchProj::Answered { response } => {
                    return Poll::Ready(Ok(response.take().expect("polled after completion")))
                }
                DispatchProj::Reading { reading } => match reading.poll_body(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(routed)) => routed,
                    Poll::Ready(Err(response)) => return Poll::Ready(Ok(response)),
                },
            };
            self.set(next);
        }
    }
}

impl<B> tower::Service<axum::http::Request<B>> for Dispatch
where
    B: HttpBody<Data = bytes::Bytes> + Unpin + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = DispatchFuture<B>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        if request.body().is_end_stream() {
            return self.dispatch(request);
        }
        let (parts, body) = request.into_parts();
        let mut reader = BodyReader::new(body, self.bodies.max_bytes);
        // hyper asks for the response only after it has read what the connection's buffer holds
        // of the body, so a body sent with its head is complete here: read it without a waker
        // of our own (the request's task polls this future at once if it is not).
        match reader.poll_read(&mut Context::from_waker(std::task::Waker::noop())) {
            Poll::Ready(Ok(bytes)) => {
                self.dispatch(axum::http::Request::from_parts(parts, Buffered::new(bytes)))
            }
            Poll::Ready(Err(error)) => DispatchFuture::Answered {
                response: Some(error.into_response()),
            },
            Poll::Pending => DispatchFuture::Reading {
                reading: Box::new({
                    #[cfg(test)]
                    tests::BODIES_AWAITED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    Reading {
                        parts: Some(parts),
                        reader,
                        dispatch: self.clone(),
                        started: std::time::Instant::now(),
                        deadline: None,
                    }
                }),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::server::InMemoryApp;

    /// Requests whose body had not arrived when they were dispatched.
    pub(super) static BODIES_AWAITED: std::sync::atomic::AtomicUsize =
        std::sync::atomic::AtomicUsize::new(0);

    async fn read_answer(client: &mut tokio::io::DuplexStream) -> String {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 4096];
        let n = client.read(&mut buf).await.unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Over a real hyper connection: a body sent with its head is read on the spot (no waiting
    /// state, no timer); one sent later is waited for and served; one never finished gets 408.
    #[tokio::test]
    async fn bodies_sent_with_their_head_are_taken_on_the_spot() {
        use std::sync::atomic::Ordering;
        use tokio::io::AsyncWriteExt;
        let mut settings = Settings::default();
        settings.server.body_read_timeout_ms = 300;
        let app = InMemoryApp::new(&settings).await.unwrap();
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let service = hyper_util::service::TowerToHyperService::new(app.service.clone());
        tokio::spawn(
            hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(server), service),
        );
        let body = r#"{"numTimestamps":2}"#;
        let head = format!(
            "POST /tl/ts/spot HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let awaited = BODIES_AWAITED.load(Ordering::Relaxed);
        for _ in 0..3 {
            client
                .write_all(format!("{head}{body}").as_bytes())
                .await
                .unwrap();
            let reply = read_answer(&mut client).await;
            assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        }
        // Other tests run in parallel and may wait for bodies; none of these three did.
        let spot = BODIES_AWAITED.load(Ordering::Relaxed) - awaited;
        client.write_all(head.as_bytes()).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        client.write_all(body.as_bytes()).await.unwrap();
        let reply = read_answer(&mut client).await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(BODIES_AWAITED.load(Ordering::Relaxed) - awaited > spot);
        client.write_all(head.as_bytes()).await.unwrap();
        client.write_all(b"{").await.unwrap();
        let reply = read_answer(&mut client).await;
        assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
        assert!(reply.contains("server.body_read_timeout_ms"), "{reply}");
        assert_eq!(spot, 0, "a body sent with its head was waited for");
    }

    #[tokio::test]
    async fn direct_dispatch_unless_switched_off() {
        let direct = |settings: Settings| async move {
            InMemoryApp::new(&settings)
                .await
                .unwrap()
                .service
                .direct
                .is_some()
        };
        assert!(direct(Settings::default()).await);
        let mut off = Settings::default();
        off.server.direct_dispatch = false;
        assert!(!direct(off).await);
        let mut auth = Settings::default();
        let token = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(token.path(), "a-long-random-admin-secret\n").unwrap();
        auth.auth.admin_token = format!("file:{}", token.path().display());
        assert!(
            direct(auth).await,
            "access control is checked on the direct path too"
        );

        let app = InMemoryApp::new(&Settings::default()).await.unwrap();
        let routes = app.service.direct.as_ref().unwrap();
        let route = |path: &str| {
            routes
                .route_with_namespace(path)
                .map(|(t, _)| t.route_label().unwrap_or_default().to_string())
        };
        assert_eq!(route("/tl/st/ns").as_deref(), Some("/tl/st/{ns}"));
        assert_eq!(
            route("/timelock/api/tl/st/ns").as_deref(),
            Some("/timelock/api/tl/st/{ns}")
        );
        assert_eq!(
            route("/timelock/api/ns/timestamp/fresh-timestamp").as_deref(),
            Some("/timelock/api/{ns}/timestamp/fresh-timestamp")
        );
        assert_eq!(route("/timelock/apix/tl/st/ns"), None);
        assert_eq!(route("/timelock/api"), None);
        assert_eq!(route("/timelock/api/"), None);
        assert_eq!(route("/timelock/timestamp/fresh-timestamp"), None);
    }

    fn hot(path: &str) -> Option<(Hot, &str)> {
        classify(path, "timelock")
    }

    #[test]
    fn hot_paths_are_recognised() {
        assert_eq!(
            hot("/ns/timestamp/fresh-timestamp"),
            Some((Hot::FreshTimestamp, "ns"))
        );
        assert_eq!(
            hot("/a.b-c_D9/timestamp/fresh-timestamps"),
            Some((Hot::FreshTimestamps, "a.b-c_D9"))
        );
        assert_eq!(hot("/tl/ts/x"), Some((Hot::ConjureTimestamps, "x")));
        for path in [
            "/ns-1/timestamp/fresh-timestamp",
            "/ns-1/timestamp/fresh-timestamps",
            "/tl/ts/ns-1",
            "/tl/st/ns-1",
            "/tl/ul2/ns-1",
        ] {
            let (h, ns) = hot(path).unwrap();
            assert_eq!(ns, "ns-1");
            assert_eq!(namespace_of(h, path), "ns-1", "{path}");
        }
        assert_eq!(hot("/tl/st/x"), Some((Hot::StartTransactions, "x")));
        assert_eq!(hot("/tl/gct/x"), Some((Hot::CommitTimestamps, "x")));
        assert_eq!(hot("/tl/l/x"), Some((Hot::Lock, "x")));
        assert_eq!(hot("/tl/ul2/x"), Some((Hot::UnlockV2, "x")));
        assert_eq!(hot("/tl/rl2/x"), Some((Hot::RefreshV2, "x")));
        for (i, h) in Hot::ALL.iter().enumerate() {
            assert_eq!(*h as usize, i, "ALL is in declaration order");
        }
    }

    #[test]
    fn anything_unusual_is_left_to_the_router() {
        for path in [
            "",
            "/",
            "/tl/st",
            "/tl/st/",
            "/tl/st/x/",
            "/tl/st/x/y",
            "/tl/st/a%20b",
            "/tl/st/a b",
            "/tl/st/é",
            "/tl/st/.",
            "/tl/st/..",
            "/tl/ul/x",
            "/tl/g1ct/x",
            "/tl/xx/x",
            "//timestamp/fresh-timestamp",
            "/ns/timestamp/fresh-timestamp/",
            "/ns/timestamp//fresh-timestamp",
            "/ns/timelock/fresh-timestamp",
            "/ns%41/timestamp/fresh-timestamp",
            "/tl/timestamp/fresh-timestamp",
            "/lw/timestamp/fresh-timestamp",
            "/admin/timestamp/fresh-timestamp",
            "/metrics/timestamp/fresh-timestamp",
            "/health/timestamp/fresh-timestamp",
            "/timelock/timestamp/fresh-timestamp",
            "/../timestamp/fresh-timestamp",
            "/ns/timestamp/fresh-timestamps/x",
        ] {
            assert_eq!(hot(path), None, "{path}");
        }
    }
}
