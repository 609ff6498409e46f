//! Access control on the HTTP side: works out which door a request knocks on and what it
//! presents, and asks [`crate::auth::AccessPolicy`]. Installed only when the policy closes at
//! least one door, so by default (everything open, as TimeLock) it costs nothing.
//!
//! It runs after routing (a route layer), so the namespace it checks is the one the handler
//! will use — taken from the matched route's `{ns}` parameter, already percent-decoded — rather
//! than a second, possibly different, parse of the raw path. The multi-namespace routes
//! (`/tl/multi/*`) name their namespaces in the body, which is read (within
//! `server.max_body_bytes`), checked, and handed on unchanged. A refusal happens before any
//! handler runs: no side effects. The hot endpoints' direct dispatch ([`super::direct`]) asks
//! the policy the same question through [`refuse_namespace`].

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::auth::{AccessPolicy, CertificateIdentity, Credentials, Decision, TokenDigest};
use crate::error::TimelockError;
use crate::metrics::GuardMetrics;

/// What the middleware needs.
pub struct AuthGuard {
    pub policy_source: Arc<AccessPolicy>,
    /// The configured path prefix, stripped before classifying a route template.
    pub prefix: String,
    pub max_body_bytes: usize,
    pub metrics: GuardMetrics,
}

/// Which door a route is.
#[derive(Debug, PartialEq, Eq)]
enum Door {
    /// Metrics, health, feedback: open.
    Open,
    /// Admin and management operations.
    Admin,
    /// Namespaces named in the body (`/tl/multi/*`).
    BodyNamespaces,
    /// The route's `{ns}`.
    Namespace,
}

fn door(template: &str, prefix: &str) -> Door {
    let template = if prefix.is_empty() {
        template
    } else {
        template
            .strip_prefix(prefix)
            .filter(|rest| rest.starts_with('/'))
            .unwrap_or(template)
    };
    if template.starts_with("/admin/")
        || template == "/admin"
        || template == "/"
        || template.starts_with("/tl/management/")
        || template.starts_with("/tl/paxos/")
        || template.ends_with("/timestamp-management/invalidate")
        || template.ends_with("/timestamp-management/revalidate")
    {
        Door::Admin
    } else if template.starts_with("/tl/multi/") {
        Door::BodyNamespaces
    } else if template.contains("{ns}") {
        Door::Namespace
    } else {
        Door::Open
    }
}

fn bearer(request: &Request) -> Option<&str> {
    bearer_of(request.headers())
}

fn bearer_of(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The namespaces a `/tl/multi/*` body names: an array of names, or an object keyed by name.
fn body_namespaces(body: &[u8]) -> Vec<String> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Array(items)) => items
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Ok(serde_json::Value::Object(map)) => map.into_iter().map(|(k, _)| k).collect(),
        // Not decodable: the handler answers 400 without touching anything.
        _ => Vec::new(),
    }
}

pub async fn authorize(
    State(guard): State<Arc<AuthGuard>>,
    matched: Option<MatchedPath>,
    params: Result<RawPathParams, axum::extract::rejection::RawPathParamsRejection>,
    request: Request,
    next: Next,
) -> Response {
    let door = matched
        .as_ref()
        .map_or(Door::Open, |m| door(m.as_str(), &guard.prefix));
    let certificate = request
        .extensions()
        .get::<CertificateIdentity>()
        .map(|c| c.0.clone());
    let credentials = Credentials::new(bearer(&request), certificate.as_deref());
    let policy = &guard.policy_source;
    let (decision, request) = match door {
        Door::Open => (Decision::Allow, request),
        Door::Admin => (policy.authorize_admin(&credentials), request),
        Door::Namespace => {
            let ns = params
                .as_ref()
                .ok()
                .and_then(|p| p.iter().find(|(k, _)| *k == "ns").map(|(_, v)| v));
            let decision = ns.map_or(Decision::Allow, |ns| {
                policy.authorize_namespace(ns, &credentials)
            });
            (decision, request)
        }
        Door::BodyNamespaces => {
            // Read the body to learn its namespaces, then hand it on unchanged.
            let (parts, body) = request.into_parts();
            let Ok(bytes) = axum::body::to_bytes(body, guard.max_body_bytes).await else {
                return TimelockError::RequestTooLarge(format!(
                    "request body unreadable or larger than {} bytes (server.max_body_bytes)",
                    guard.max_body_bytes
                ))
                .into_response();
            };
            let decision = body_namespaces(&bytes)
                .iter()
                .map(|ns| policy.authorize_namespace(ns, &credentials))
                .find(|d| *d != Decision::Allow)
                .unwrap_or(Decision::Allow);
            (decision, Request::from_parts(parts, Body::from(bytes)))
        }
    };
    match decision {
        Decision::Allow => next.run(request).await,
        refused => refuse(&guard, refused),
    }
}

/// One connection's last bearer token and its digest. A client sends the same token on every
/// request of a keep-alive connection, so its digest is computed once per connection instead
/// of once per request. Only tokens this connection sent are compared with each other, so the
/// comparison's timing tells a client nothing about anyone else's token.
#[derive(Default)]
pub struct TokenMemo(parking_lot::Mutex<Option<(Box<str>, TokenDigest)>>);

impl TokenMemo {
    fn digest(&self, token: &str) -> TokenDigest {
        let mut last = self.0.lock();
        match &*last {
            Some((seen, digest)) if **seen == *token => *digest,
            _ => {
                let digest = crate::auth::digest(token);
                *last = Some((token.into(), digest));
                digest
            }
        }
    }
}

/// The direct dispatch's check of a hot endpoint (a `{ns}` route): the same decision as
/// [`authorize`] makes for [`Door::Namespace`], from the same credentials, and the same refusal.
pub(super) fn refuse_namespace<B>(
    guard: &AuthGuard,
    request: &axum::http::Request<B>,
    ns: &str,
    memo: Option<&TokenMemo>,
) -> Option<Response> {
    let certificate = request.extensions().get::<CertificateIdentity>();
    let bearer = bearer_of(request.headers()).map(|token| match memo {
        Some(memo) => memo.digest(token),
        None => crate::auth::digest(token),
    });
    let credentials = Credentials::with_digest(bearer, certificate.map(|c| &*c.0));
    match guard.policy_source.authorize_namespace(ns, &credentials) {
        Decision::Allow => None,
        refused => Some(refuse(guard, refused)),
    }
}

fn refuse(guard: &AuthGuard, decision: Decision) -> Response {
    let (status, error) = match decision {
        Decision::Unauthenticated(why) => ("401", TimelockError::Unauthenticated(why)),
        Decision::Forbidden(why) => ("403", TimelockError::PermissionDenied(why)),
        Decision::Allow => unreachable!("allowed requests are not refused"),
    };
    guard.metrics.denied.with_label_values(&[status]).inc();
    let mut response = error.into_response();
    if status == "401" {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doors() {
        let p = "/timelock/api";
        assert_eq!(door("/admin/backups", p), Door::Admin);
        assert_eq!(door("/admin/backups/{name}", p), Door::Admin);
        assert_eq!(door("/admin/status", p), Door::Admin);
        // The status page shows every namespace: the admin credential's, like /admin/status.
        assert_eq!(door("/", p), Door::Admin);
        assert_eq!(door("/", ""), Door::Admin);
        assert_eq!(door("/tl/management/invalidateResources", p), Door::Admin);
        assert_eq!(door("/tl/paxos/takeover/{ns}", p), Door::Admin);
        assert_eq!(
            door("/timelock/api/tl/paxos/takeoverNamespaces", p),
            Door::Admin
        );
        assert_eq!(
            door("/timelock/api/tl/management/fastForward", p),
            Door::Admin
        );
        assert_eq!(
            door("/{ns}/timestamp-management/invalidate", p),
            Door::Admin
        );
        assert_eq!(
            door("/timelock/api/{ns}/timestamp-management/revalidate", p),
            Door::Admin
        );
        assert_eq!(
            door("/{ns}/timestamp-management/fast-forward", p),
            Door::Namespace
        );
        assert_eq!(door("/{ns}/timestamp-management/ping", p), Door::Namespace);
        assert_eq!(door("/tl/ts/{ns}", p), Door::Namespace);
        assert_eq!(door("/timelock/api/lk/laghl/{ns}", p), Door::Namespace);
        assert_eq!(door("/tl/multi/sts", p), Door::BodyNamespaces);
        assert_eq!(door("/timelock/api/tl/multi/lts", p), Door::BodyNamespaces);
        assert_eq!(door("/metrics", p), Door::Open);
        assert_eq!(door("/health/ready", p), Door::Open);
        assert_eq!(door("/tl/feedback/reportFeedback", p), Door::Open);
    }

    #[test]
    fn multi_bodies() {
        assert_eq!(body_namespaces(br#"["a","b"]"#), vec!["a", "b"]);
        let mut keys = body_namespaces(br#"{"x":{},"y":[1]}"#);
        keys.sort();
        assert_eq!(keys, vec!["x", "y"]);
        assert!(body_namespaces(b"not json").is_empty());
    }
}
