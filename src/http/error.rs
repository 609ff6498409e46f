//! The one place where errors become HTTP responses.
//!
//! Every error body is a Conjure `SerializableError`
//! (`{"errorCode","errorName","errorInstanceId","parameters"}`), as AtlasDB clients expect from
//! TimeLock (spec section 2). `parameters.message` carries the human-readable reason and, where
//! there is one, `parameters.namespace` the namespace concerned.

use std::sync::Arc;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::TimelockError;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SerializableError<'a> {
    error_code: &'a str,
    error_name: &'a str,
    error_instance_id: String,
    parameters: Parameters<'a>,
}

#[derive(Serialize)]
struct Parameters<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
    message: String,
}

/// Status, Conjure error code and error name for each error.
fn classify(err: &TimelockError) -> (StatusCode, &'static str, &'static str, Option<&str>) {
    use TimelockError::*;
    match err {
        InvalidArgument(_) => (
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "Default:InvalidArgument",
            None,
        ),
        RequestTooLarge(_) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "REQUEST_ENTITY_TOO_LARGE",
            "Default:RequestEntityTooLarge",
            None,
        ),
        RequestTimeout(_) => (
            StatusCode::REQUEST_TIMEOUT,
            "TIMEOUT",
            "Default:Timeout",
            None,
        ),
        ForceKilled => (
            StatusCode::SERVICE_UNAVAILABLE,
            "INTERNAL",
            "TimeLock:ServerKilled",
            None,
        ),
        // FAILED_PRECONDITION is Conjure's code for "not in a state to do this"; it is not a QoS
        // status (308/429/503), so clients do not retry it on another node.
        NamespaceInvalidated { namespace } => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "FAILED_PRECONDITION",
            "TimeLock:NamespaceInvalidated",
            Some(namespace),
        ),
        NamespaceFenced { namespace } => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "FAILED_PRECONDITION",
            "TimeLock:NamespaceFenced",
            Some(namespace),
        ),
        FailStopped { namespace, .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "INTERNAL",
            "TimeLock:TimestampServiceStopped",
            Some(namespace),
        ),
        TooManyNamespaces { .. } => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "Default:Internal",
            None,
        ),
        TimestampsExhausted { namespace } => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "TimeLock:TimestampsExhausted",
            Some(namespace),
        ),
        Storage(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "INTERNAL",
            "TimeLock:StorageUnavailable",
            None,
        ),
        ShuttingDown => (
            StatusCode::SERVICE_UNAVAILABLE,
            "INTERNAL",
            "TimeLock:ShuttingDown",
            None,
        ),
        NotCurrentLeader | NotLeaderOf(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "INTERNAL",
            "TimeLock:NotCurrentLeader",
            None,
        ),
        Unauthenticated(_) => (
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "Default:Unauthorized",
            None,
        ),
        PermissionDenied(_) => (
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "Default:PermissionDenied",
            None,
        ),
        TooManyRequests(_) => (
            StatusCode::TOO_MANY_REQUESTS,
            "INTERNAL",
            "TimeLock:TooManyRequests",
            None,
        ),
        BlockingTimeout(_) => (
            StatusCode::TOO_MANY_REQUESTS,
            "INTERNAL",
            "TimeLock:BlockingTimeout",
            None,
        ),
        Internal(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "Default:Internal",
            None,
        ),
    }
}

/// A Conjure error response.
pub fn conjure_error(
    status: StatusCode,
    code: &str,
    name: &str,
    namespace: Option<&str>,
    message: String,
) -> Response {
    let body = SerializableError {
        error_code: code,
        error_name: name,
        error_instance_id: uuid::Uuid::new_v4().to_string(),
        parameters: Parameters { namespace, message },
    };
    let bytes = serde_json::to_vec(&body).expect("error body serialises");
    let mut response = (status, bytes).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

impl IntoResponse for TimelockError {
    fn into_response(self) -> Response {
        // QoS answers have no body, as conjure-java's `QosException` responses (spec section 2).
        match &self {
            TimelockError::NotCurrentLeader | TimelockError::NotLeaderOf(_) => {
                tracing::debug!("not the current leader: 503");
                let mut response = StatusCode::SERVICE_UNAVAILABLE.into_response();
                // In cluster mode, routing turns this into a redirect to the leader (of this
                // namespace, when the error names it).
                let namespace = match self {
                    TimelockError::NotLeaderOf(ns) => Some(Arc::<str>::from(ns)),
                    _ => None,
                };
                response
                    .extensions_mut()
                    .insert(super::routing::NotCurrentLeaderResponse { namespace });
                return response;
            }
            TimelockError::ForceKilled => {
                // A QoS 503 as a follower's: clients try another node.
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            }
            TimelockError::TooManyRequests(reason) => {
                tracing::info!(%reason, "throttled: 429");
                return StatusCode::TOO_MANY_REQUESTS.into_response();
            }
            TimelockError::BlockingTimeout(reason) => {
                // conjure-java's `QosException.throttle(Duration.ZERO)`: retry at once, here.
                tracing::info!(%reason, "blocking limit reached: 429 Retry-After 0");
                let mut response = StatusCode::TOO_MANY_REQUESTS.into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("0"));
                return response;
            }
            _ => {}
        }
        let (status, code, name, namespace) = classify(&self);
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self, "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), error = %self, "request rejected");
        }
        conjure_error(status, code, name, namespace, self.to_string())
    }
}
