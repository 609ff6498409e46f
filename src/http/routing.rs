//! Leader routing in cluster mode (spec section 2): only the leader serves; a non-leader
//! answers at once, without touching any service, with
//! * **308** and `Location: <leader's advertised URL>` to clients that speak the new protocol
//!   (a `User-Agent` agent `atlasdb-http-client/2.0`), when the leader is known; they re-send
//!   the same request to that base URL, as TimeLock's `RetryOther` makes them do;
//! * **503** with no body otherwise (leader unknown, or a legacy client such as `curl`: the
//!   reverse-migration runbook tells operators that a 503 means "try the other nodes").
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

/// Marks a response produced from `TimelockError::NotCurrentLeader`, so that routing can turn
/// it into a redirect.
#[derive(Clone, Copy)]
pub struct NotCurrentLeaderResponse;

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

/// Whether `path` is an operations endpoint every node answers. The status endpoint and page
/// (at the root only) are each node's report on itself, so a follower answers them too.
fn answered_by_every_node(path: &str, prefix: &str) -> bool {
    if path == "/" || path == "/admin/status" {
        return true;
    }
    let path = if prefix.is_empty() {
        path
    } else {
        path.strip_prefix(prefix).unwrap_or(path)
    };
    path == "/metrics" || path.starts_with("/health/")
}

/// The middleware: see the module docs.
pub async fn leader_only(
    State((state, prefix)): State<(AppState, std::sync::Arc<str>)>,
    request: Request,
    next: Next,
) -> Response {
    let new_protocol = speaks_new_protocol(request.headers());
    let path = request.uri().path();
    if state.killed.is_killed()
        && !answered_by_every_node(path, &prefix)
        && !path.starts_with("/admin/")
    {
        // Force-killed: refused as everywhere else, not redirected to a leader this node no
        // longer follows (it stopped campaigning, so what it knows of the leader goes stale).
        return crate::error::TimelockError::ForceKilled.into_response();
    }
    if !state.leadership.serves() && !answered_by_every_node(path, &prefix) {
        return not_leader(&state, new_protocol);
    }
    let response = next.run(request).await;
    if response
        .extensions()
        .get::<NotCurrentLeaderResponse>()
        .is_some()
    {
        return not_leader(&state, new_protocol);
    }
    response
}

pub(super) fn not_leader(state: &AppState, new_protocol: bool) -> Response {
    let metrics = &state.metrics.cluster;
    if new_protocol {
        if let Some(location) = state
            .leadership
            .leader_url()
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
    fn operations_endpoints_are_answered_everywhere() {
        for p in [
            "/metrics",
            "/health/ready",
            "/timelock/api/health/live",
            "/",
            "/admin/status",
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
