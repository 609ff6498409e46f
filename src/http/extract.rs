//! Request decoding with Conjure errors: path namespaces, query numbers and JSON bodies.
//!
//! axum's own extractors answer bad input with plain-text bodies; AtlasDB clients expect a
//! Conjure `SerializableError`, so these wrappers turn every decoding failure into a
//! [`TimelockError`] (400, or 413 for an oversized body). Decoding happens before any namespace
//! is touched, so bad input never has side effects.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::wire::decode::Decode;
use super::AppState;
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

/// Any other single `{param}` path segment (admin backup names, migration ids), percent-decoded;
/// a segment that is not UTF-8 is a Conjure 400 rather than axum's plain-text rejection.
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = TimelockError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| PathParam(value))
            .map_err(|e| TimelockError::InvalidArgument(format!("invalid path parameter: {e}")))
    }
}

/// A JSON request body decoded as `T`, at most `server.max_body_bytes` long (413 beyond): the
/// one body extractor. `T` says how it is decoded ([`Decode`]): by its strict hand-written
/// decoder where it has one, by serde otherwise and for every body outside the strict subset,
/// with the same answers either way.
///
/// The limit is enforced here, where a body is read, rather than by a router-wide layer that
/// would wrap every route (the body-less timestamp hot path included).
pub struct JsonBody<T>(pub T);

impl<T: Decode> FromRequest<AppState> for JsonBody<T> {
    type Rejection = TimelockError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        read_body(req.into_body(), state.max_body_bytes).await
    }
}

/// A JSON body extractor, decoded from the body's bytes.
pub trait FromBody: Sized {
    fn from_bytes(bytes: &[u8]) -> Result<Self, TimelockError>;
}

/// Reads a request body of any type (at most `limit` bytes, 413 beyond) and decodes it as
/// extractor `E` — what `E`'s `FromRequest` does, without needing axum's boxed body (so that
/// [`super::direct`] reads hyper's own, and need not keep the request head while it arrives).
pub async fn read_body<E: FromBody, B>(body: B, limit: usize) -> Result<E, TimelockError>
where
    B: axum::body::HttpBody<Data = Bytes> + Unpin,
{
    let bytes = body_bytes(body, limit).await?;
    E::from_bytes(&bytes)
}

impl<T: Decode> FromBody for JsonBody<T> {
    fn from_bytes(bytes: &[u8]) -> Result<Self, TimelockError> {
        match T::decode_fast(bytes) {
            Some(value) => Ok(JsonBody(value)),
            None => from_json(bytes).map(JsonBody),
        }
    }
}

fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, TimelockError> {
    serde_json::from_slice(bytes)
        .map_err(|e| TimelockError::InvalidArgument(format!("invalid JSON request body: {e}")))
}

/// The request's body, at most `limit` bytes long (413 beyond; at once when its declared
/// length says so, which hyper parsed from `Content-Length`: a chunked body declares none).
async fn body_bytes<B>(body: B, limit: usize) -> Result<Bytes, TimelockError>
where
    B: axum::body::HttpBody<Data = Bytes> + Unpin,
{
    let mut reader = BodyReader::new(body, limit);
    std::future::poll_fn(|cx| reader.poll_read(cx)).await
}

/// Reads a whole body, refusing it once it grows past `limit` bytes, by polling (so that
/// [`super::direct::Dispatch`] can read a body before routing without boxing a future). A body
/// that arrives as one frame (every small JSON request) is returned as that frame, without the
/// buffer list and copy of a general collector.
pub(crate) struct BodyReader<B> {
    body: B,
    limit: usize,
    first: Option<Bytes>,
    joined: Vec<u8>,
    total: usize,
}

impl<B> BodyReader<B>
where
    B: axum::body::HttpBody<Data = Bytes> + Unpin,
{
    pub(crate) fn new(body: B, limit: usize) -> Self {
        Self {
            body,
            limit,
            first: None,
            joined: Vec::new(),
            total: 0,
        }
    }

    fn too_large(&self) -> TimelockError {
        TimelockError::RequestTooLarge(format!(
            "request body larger than {} bytes (server.max_body_bytes)",
            self.limit
        ))
    }

    /// Reads what has arrived; ready with the whole body once it is complete.
    pub(crate) fn poll_read(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<Bytes, TimelockError>> {
        use std::task::Poll;
        if self.total == 0
            && self
                .body
                .size_hint()
                .exact()
                .is_some_and(|n| n > self.limit as u64)
        {
            return Poll::Ready(Err(self.too_large()));
        }
        loop {
            let frame = match std::pin::Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => break,
                Poll::Ready(Some(Err(_))) => {
                    return Poll::Ready(Err(TimelockError::InvalidArgument(
                        "cannot read the request body".to_string(),
                    )))
                }
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            self.total += data.len();
            if self.total > self.limit {
                return Poll::Ready(Err(self.too_large()));
            }
            if self.first.is_none() && self.joined.is_empty() {
                self.first = Some(data);
            } else {
                if let Some(earlier) = self.first.take() {
                    self.joined.extend_from_slice(&earlier);
                }
                self.joined.extend_from_slice(&data);
            }
            // A body of known length is complete once that many bytes have arrived: no further
            // poll for its end.
            if self.body.is_end_stream() {
                break;
            }
        }
        let joined = std::mem::take(&mut self.joined);
        Poll::Ready(Ok(self.first.take().unwrap_or_else(|| Bytes::from(joined))))
    }
}

/// A body already read whole (by [`super::direct::Dispatch`], before routing): one frame.
pub struct Buffered(Option<Bytes>);

impl Buffered {
    pub fn new(bytes: Bytes) -> Self {
        Self(Some(bytes))
    }
}

impl axum::body::HttpBody for Buffered {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.take().map(|b| Ok(hyper::body::Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.0.as_ref().map_or(0, |b| b.len() as u64))
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
    // Fast path, no allocation but the value: nothing percent- or plus-encoded.
    if !query.contains(['%', '+']) {
        return Ok(query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.to_string()));
    }
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

    /// A body that yields these frames, one per poll.
    struct Frames(std::collections::VecDeque<Result<Bytes, std::io::Error>>);

    impl hyper::body::Body for Frames {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
            std::task::Poll::Ready(self.0.pop_front().map(|f| f.map(hyper::body::Frame::data)))
        }
    }

    fn chunked(chunks: &[&'static str]) -> axum::body::Body {
        axum::body::Body::new(Frames(
            chunks
                .iter()
                .map(|c| Ok(Bytes::from_static(c.as_bytes())))
                .collect(),
        ))
    }

    async fn read(chunks: &[&'static str], limit: usize) -> Result<Bytes, &'static str> {
        body_bytes(chunked(chunks), limit)
            .await
            .map_err(|e| match e {
                TimelockError::RequestTooLarge(_) => "too large",
                _ => "unreadable",
            })
    }

    #[tokio::test]
    async fn bodies_are_read_whole_up_to_the_limit() {
        assert_eq!(read(&[], 8).await.unwrap(), "");
        assert_eq!(read(&["{}"], 8).await.unwrap(), "{}");
        assert_eq!(read(&["{\"a\"", ":1}"], 8).await.unwrap(), "{\"a\":1}");
        assert_eq!(read(&["", "1", "", "23"], 8).await.unwrap(), "123");
        assert_eq!(read(&["12345", "678"], 8).await.unwrap(), "12345678");
        assert_eq!(read(&["12345", "678"], 7).await, Err("too large"));
        assert_eq!(read(&["123456789"], 8).await, Err("too large"));
        let failing = axum::body::Body::new(Frames(
            [
                Ok(Bytes::from_static(b"{")),
                Err(std::io::Error::other("reset")),
            ]
            .into(),
        ));
        assert!(matches!(
            body_bytes(failing, 8).await,
            Err(TimelockError::InvalidArgument(_))
        ));
    }

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
        // Encoded keys and values take the general path.
        assert_eq!(query_i64(Some("numb%65r=%2B7"), "number").unwrap(), Some(7));
        assert_eq!(query_i64(Some("&&number=4&"), "number").unwrap(), Some(4));
        assert_eq!(
            query_str(Some("number"), "number").unwrap().as_deref(),
            Some("")
        );
        assert_eq!(
            query_str(Some("a=b=c"), "a").unwrap().as_deref(),
            Some("b=c")
        );
    }
}
