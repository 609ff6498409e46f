//! Leader routing in cluster mode (spec section 2): only the leader serves; a non-leader
//! answers at once, without touching any service, with
//! * **308** and `Location: <leader's advertised URL>`, when the leader is known, on the Conjure
//!   routes (`/tl/*`, `/lk/*`, `/lw/*`) whatever the client, and on the legacy `/{ns}/...`
//!   routes to clients that speak the new protocol (a `User-Agent` agent
//!   `atlasdb-http-client/2.0`); they re-send the same request to that base URL, as TimeLock's
//!   `RetryOther` makes them do. TimeLock's Conjure endpoints always answer `RetryOther` (the
//!   agent only picks the answer of its legacy Jersey endpoints), so a Conjure client without
//!   the agent must be redirected too;
//! * **503** with no body otherwise (leader unknown, or a legacy client such as `curl` on a
//!   legacy route: the reverse-migration runbook tells operators that a 503 means "try the other
//!   nodes").
//!
//! `/metrics`, `/health/*`, `/admin/status` and the status page `/` are answered by every node.
//! A request that started on the leader but found its term ended (`NotCurrentLeader` from a
//! service) is answered the same way. Only installed in cluster mode: a single node pays nothing
//! for it. The hot endpoints' direct dispatch ([`super::direct`]) makes the same check with the
//! same functions.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;

/// Marks a response produced from `TimelockError::NotCurrentLeader` (or `NotLeaderOf`), so
/// that routing can turn it into a redirect; with a leader per namespace, to the leader of the
/// namespace it names.
#[derive(Clone)]
pub struct NotCurrentLeaderResponse {
    pub namespace: Option<std::sync::Arc<str>>,
}

/// Whether any `User-Agent` agent is `atlasdb-http-client` at version 2.0 (AtlasDB's
/// `ProtocolAwareness`: such clients follow 308 redirects).
pub fn speaks_new_protocol(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::USER_AGENT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(str::split_whitespace)
        .any(|agent| {
            agent
                .strip_prefix("atlasdb-http-client/")
                .is_some_and(|version| version == "2.0" || version.starts_with("2.0."))
        })
}

/// Whether a non-leader answers this request with a 308 when it knows the leader: always on
/// a Conjure route, on a legacy route only for a new-protocol client (spec section 2).
pub fn redirects(headers: &HeaderMap, path: &str, prefix: &str) -> bool {
    is_conjure_route(without_prefix(path, prefix)) || speaks_new_protocol(headers)
}

/// Whether `path` (without the prefix) is one of TimeLock's Conjure routes: `/tl/*` and `/lw/*`
/// (never a legacy namespace: TimeLock's `{ns}` pattern excludes both), and the lock v1 shim
/// `/lk/{laghl,rlrt,us}/*` (`lk` alone is a legal legacy namespace).
fn is_conjure_route(path: &str) -> bool {
    if path.starts_with("/tl/") || path.starts_with("/lw/") {
        return true;
    }
    path.strip_prefix("/lk/").is_some_and(|rest| {
        ["laghl/", "rlrt/", "us/"]
            .iter()
            .any(|op| rest.starts_with(op))
    })
}

fn without_prefix<'a>(path: &'a str, prefix: &str) -> &'a str {
    if prefix.is_empty() {
        return path;
    }
    match path.strip_prefix(prefix) {
        Some(rest) if rest.starts_with('/') => rest,
        _ => path,
    }
}

/// Whether `path` is an operations endpoint every node answers. The status endpoint and page
/// (at the root only) are each node's report on itself, so a follower answers them too; a
/// takeover (`/tl/paxos/*`) asks the very node it is sent to to lead.
fn answered_by_every_node(path: &str, prefix: &str) -> bool {
    if path == "/" || path == "/admin/status" {
        return true;
    }
    let path = without_prefix(path, prefix);
    path == "/metrics" || path.starts_with("/health/") || path.starts_with("/tl/paxos/")
}

/// The middleware: see the module docs.
pub async fn leader_only(
    State((state, prefix)): State<(AppState, std::sync::Arc<str>)>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let redirect = redirects(request.headers(), path, &prefix);
    if state.killed.is_killed()
        && !answered_by_every_node(path, &prefix)
        && !path.starts_with("/admin/")
    {
        // Force-killed: refused as everywhere else, not redirected to a leader this node no
        // longer follows (it stopped campaigning, so what it knows of the leader goes stale).
        return crate::error::TimelockError::ForceKilled.into_response();
    }
    // One leader: a follower answers at once. A leader per namespace: the handler finds
    // whether this node leads the request's namespaces (before it does anything).
    if !state.leadership.per_namespace()
        && !state.leadership.serves()
        && !answered_by_every_node(path, &prefix)
    {
        return not_leader(&state, redirect, None);
    }
    let response = next.run(request).await;
    if let Some(marker) = response.extensions().get::<NotCurrentLeaderResponse>() {
        return not_leader(&state, redirect, marker.namespace.as_deref());
    }
    response
}

/// A non-leader's answer: 308 to the leader (of `namespace`, with a leader per namespace)
/// when `redirect` and the leader is known, else 503.
pub(super) fn not_leader(state: &AppState, redirect: bool, namespace: Option<&str>) -> Response {
    let metrics = &state.metrics.cluster;
    if redirect {
        if let Some(location) = state
            .leadership
            .leader_url_for(namespace)
            .and_then(|url| HeaderValue::from_str(&url).ok())
        {
            metrics.redirects.inc();
            let mut response = StatusCode::PERMANENT_REDIRECT.into_response();
            response.headers_mut().insert(header::LOCATION, location);
            return response;
        }
    }
    metrics.not_leader.inc();
    StatusCode::SERVICE_UNAVAILABLE.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(agents: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for a in agents {
            h.append(header::USER_AGENT, HeaderValue::from_str(a).unwrap());
        }
        h
    }

    #[test]
    fn new_protocol_is_recognised_by_its_user_agent() {
        assert!(speaks_new_protocol(&headers(&["atlasdb-http-client/2.0"])));
        assert!(speaks_new_protocol(&headers(&[
            "my-service/1.2.3 (nodeId:abc) atlasdb-http-client/2.0 conjure-java-runtime/8.1.0"
        ])));
        assert!(speaks_new_protocol(&headers(&[
            "curl/8.0",
            "atlasdb-http-client/2.0"
        ])));
        assert!(!speaks_new_protocol(&headers(&[])));
        assert!(!speaks_new_protocol(&headers(&["curl/7.88.1"])));
        assert!(!speaks_new_protocol(&headers(&["atlasdb-http-client/1.0"])));
        assert!(!speaks_new_protocol(&headers(&[
            "atlasdb-http-client/2.01"
        ])));
        assert!(!speaks_new_protocol(&headers(&[
            "xatlasdb-http-client/2.0"
        ])));
    }

    #[test]
    fn conjure_routes_redirect_whatever_the_agent() {
        let curl = headers(&["curl/8.0"]);
        for p in [
            "/tl/ts/ns",
            "/timelock/api/tl/ts/ns",
            "/tl/multi/ts",
            "/lw/ns/lw",
            "/lk/laghl/ns",
            "/timelock/api/lk/us/ns",
            "/lk/rlrt/ns",
        ] {
            assert!(redirects(&curl, p, "/timelock/api"), "{p}");
            assert!(redirects(&headers(&[]), p, "/timelock/api"), "{p}");
        }
        for p in [
            "/ns/timestamp/fresh-timestamp",
            "/timelock/api/ns/timestamp/fresh-timestamp",
            "/lk/timestamp/fresh-timestamp",
            "/tl",
            "/tlx/timestamp/fresh-timestamp",
            "/timelock/apitl/ts/ns",
        ] {
            assert!(!redirects(&curl, p, "/timelock/api"), "{p}");
            assert!(
                redirects(&headers(&["atlasdb-http-client/2.0"]), p, "/timelock/api"),
                "{p}"
            );
        }
    }

    #[test]
    fn operations_endpoints_are_answered_everywhere() {
        for p in [
            "/metrics",
            "/health/ready",
            "/timelock/api/health/live",
            "/",
            "/admin/status",
            "/tl/paxos/takeover/ns",
            "/timelock/api/tl/paxos/takeoverNamespaces",
        ] {
            assert!(answered_by_every_node(p, "/timelock/api"), "{p}");
        }
        for p in [
            "/ns/timestamp/fresh-timestamp",
            "/tl/ts/ns",
            "/admin/backups",
            "/admin/status/x",
            "/timelock/api/admin/status",
            "/metricsx",
        ] {
            assert!(!answered_by_every_node(p, "/timelock/api"), "{p}");
        }
    }
}
