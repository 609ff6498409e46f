//! Request decoding with Conjure errors: path namespaces, query numbers and JSON bodies.
//!
//! axum's own extractors answer bad input with plain-text bodies; AtlasDB clients expect a
//! Conjure `SerializableError`, so these wrappers turn every decoding failure into a
//! [`TimelockError`] (400, or 413 for an oversized body). Decoding happens before any namespace
//! is touched, so bad input never has side effects.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::TimelockError;

/// The `{ns}` path segment, not yet validated (validation happens at creation).
pub struct NsName(pub String);

impl<S: Send + Sync> FromRequestParts<S> for NsName {
    type Rejection = TimelockError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(name)| NsName(name))
            .map_err(|e| TimelockError::InvalidArgument(format!("invalid namespace in path: {e}")))
    }
}

/// A JSON request body decoded as `T`.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = TimelockError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| TimelockError::InvalidArgument(format!("invalid JSON request body: {e}")))
    }
}

fn body_error(rejection: BytesRejection) -> TimelockError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        TimelockError::RequestTooLarge(format!("request body too large: {rejection}"))
    } else {
        TimelockError::InvalidArgument(format!("cannot read request body: {rejection}"))
    }
}

/// Reads integer `key` from a raw query string. Absent → `Ok(None)`; present but not a 64-bit
/// integer → 400. If the key repeats, the first value wins (as in Jersey).
pub fn query_i64(query: Option<&str>, key: &str) -> Result<Option<i64>, TimelockError> {
    match query_str(query, key)? {
        None => Ok(None),
        Some(value) => value.trim().parse::<i64>().map(Some).map_err(|_| {
            TimelockError::InvalidArgument(format!(
                "query parameter {key} must be a 64-bit integer, got {value:?}"
            ))
        }),
    }
}

/// Reads string `key` from a raw query string (first occurrence).
pub fn query_str(query: Option<&str>, key: &str) -> Result<Option<String>, TimelockError> {
    let Some(query) = query else { return Ok(None) };
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|e| TimelockError::InvalidArgument(format!("malformed query string: {e}")))?;
    Ok(pairs.into_iter().find(|(k, _)| k == key).map(|(_, v)| v))
}

/// Like [`query_i64`] but the parameter is required.
pub fn required_i64(query: Option<&str>, key: &str) -> Result<i64, TimelockError> {
    query_i64(query, key)?
        .ok_or_else(|| TimelockError::InvalidArgument(format!("query parameter {key} is required")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_numbers() {
        assert_eq!(query_i64(Some("number=5"), "number").unwrap(), Some(5));
        assert_eq!(
            query_i64(Some("a=1&number=-3&number=9"), "number").unwrap(),
            Some(-3)
        );
        assert_eq!(query_i64(None, "number").unwrap(), None);
        assert_eq!(query_i64(Some("other=1"), "number").unwrap(), None);
        assert!(query_i64(Some("number=abc"), "number").is_err());
        assert!(query_i64(Some("number=9223372036854775808"), "number").is_err());
        assert_eq!(
            query_i64(
                Some("currentTimestamp=-9223372036854775808"),
                "currentTimestamp"
            )
            .unwrap(),
            Some(i64::MIN)
        );
        assert!(required_i64(Some(""), "number").is_err());
    }
}
