//! The lock endpoints' bodies (`src/http/lock.rs`): Conjure descriptors as base64 strings,
//! legacy ones as `{"bytes":"<b64>"}`; the strict decoder of `/tl/l` and `/tl/wl` requests and
//! the hand-written writer of `/tl/l`'s answer.

use axum::response::Response;
use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

use super::decode::{decoded_by_serde, once, Decode, Scanner};
use super::write::JsonWriter;
use crate::lock::watch::LockWatchReference;
use crate::lock::{Lease, LockOutcome};
use crate::transactions::LockToken;

// Request bodies decoded by serde alone (see `JsonBody`).
decoded_by_serde!(TokensRequest, StartWatchingRequest, LegacyLockRequest);

/// A base64-encoded byte string (Conjure `binary`).
#[derive(Debug, Clone)]
pub struct B64(pub Bytes);

impl<'de> Deserialize<'de> for B64 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map(|v| B64(Bytes::from(v)))
            .map_err(|e| serde::de::Error::custom(format!("invalid base64 lock descriptor: {e}")))
    }
}

/// A legacy JSON lock descriptor, `{"bytes":"<b64>"}`.
#[derive(Debug, Clone, Deserialize)]
pub struct LegacyDescriptor {
    pub bytes: B64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConjureLockRequest {
    pub(crate) request_id: Uuid,
    pub(crate) lock_descriptors: Vec<B64>,
    pub(crate) acquire_timeout_ms: i64,
}

/// The strict decoder (see [`super::decode`]): the three fields, each once, descriptors as
/// base64 strings without escapes. Anything else, an unknown field or a descriptor that is not
/// valid base64 among them, goes to serde, which decides (and words every error).
impl Decode for ConjureLockRequest {
    fn decode_fast(body: &[u8]) -> Option<Self> {
        let mut s = Scanner::new(body);
        let (mut request_id, mut descriptors, mut timeout) = (None, None, None);
        s.object(|s, key| match key {
            b"requestId" => once(&mut request_id, s.uuid()),
            b"lockDescriptors" => {
                let mut list = Vec::new();
                let parsed = s.array(|s| {
                    let text = s.plain_string()?;
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(text)
                        .ok()?;
                    list.push(B64(Bytes::from(bytes)));
                    Some(())
                });
                once(&mut descriptors, parsed.map(|()| list))
            }
            b"acquireTimeoutMs" => once(&mut timeout, s.i64()),
            _ => None,
        })?;
        s.end()?;
        Some(Self {
            request_id: request_id?,
            lock_descriptors: descriptors?,
            acquire_timeout_ms: timeout?,
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LegacyLockRequest {
    pub(crate) request_id: Uuid,
    pub(crate) lock_descriptors: Vec<LegacyDescriptor>,
    pub(crate) acquire_timeout_ms: i64,
}

/// `{"type":"successful","successful":{"lockToken":{"requestId":..},"lease":..}}` or
/// `{"type":"unsuccessful","unsuccessful":{}}`.
pub(crate) fn conjure_lock_response(request_id: Uuid, outcome: &LockOutcome) -> Response {
    let mut w = JsonWriter::with_capacity(256); // typically 216 bytes: no regrowth
    match outcome {
        LockOutcome::Acquired(lease) => {
            w.raw(r#"{"successful":{"lease":"#)
                .lease(lease)
                .raw(r#","lockToken":{"requestId":"#)
                .uuid(&request_id)
                .raw(r#"}},"type":"successful"}"#);
        }
        LockOutcome::TimedOut => {
            w.raw(r#"{"type":"unsuccessful","unsuccessful":{}}"#);
        }
    }
    w.into_response()
}

#[derive(Deserialize)]
pub(crate) struct TokensRequest {
    pub(crate) tokens: Vec<LockToken>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RefreshResponse<T> {
    pub(crate) refreshed_tokens: Vec<T>,
    pub(crate) lease: Lease,
}

#[derive(Deserialize)]
pub(crate) struct StartWatchingRequest {
    pub(crate) references: Vec<LockWatchReference>,
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    type Fields = (Uuid, Vec<Bytes>, i64);

    fn fields(r: ConjureLockRequest) -> Fields {
        let descriptors = r.lock_descriptors.into_iter().map(|d| d.0).collect();
        (r.request_id, descriptors, r.acquire_timeout_ms)
    }

    /// Lock descriptors: valid base64 mostly, and what serde and base64 refuse or see differently.
    fn descriptor() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => prop::collection::vec(any::<u8>(), 0..12)
                .prop_map(|b| base64::engine::general_purpose::STANDARD.encode(b)),
            1 => Just("cm93".to_string()),
            1 => Just("cm93=".to_string()),
            1 => Just("c m93".to_string()),
            1 => Just("cm\\u0039".to_string()),
            1 => Just("cm93\\/".to_string()),
            1 => Just("é".to_string()),
            1 => Just("ab-_".to_string()),
            1 => Just("ab+/".to_string()),
        ]
    }

    fn body() -> impl Strategy<Value = String> {
        let id = prop_oneof![
            6 => Just("6f1c2a4e-5b7d-4e0f-8a9b-0c1d2e3f4a5b"),
            1 => Just("6F1C2A4E5B7D4E0F8A9B0C1D2E3F4A5B"),
            1 => Just("nope"),
        ];
        let timeout = prop_oneof![
            6 => (-2i64..5000).prop_map(|n| n.to_string()),
            1 => Just("1.5".to_string()),
            1 => Just("null".to_string()),
            1 => Just("\"10\"".to_string()),
        ];
        let descriptors = prop_oneof![
            8 => prop::collection::vec(descriptor(), 0..4).prop_map(|d| {
                let quoted: Vec<String> = d.iter().map(|d| format!("\"{d}\"")).collect();
                format!("[{}]", quoted.join(","))
            }),
            1 => Just("null".to_string()),
            1 => Just("[1]".to_string()),
        ];
        (id, descriptors, timeout, 0usize..8)
            .prop_map(|(id, d, t, variant)| {
                let mut members = vec![
                    format!("\"requestId\":\"{id}\""),
                    format!("\"lockDescriptors\":{d}"),
                    format!("\"acquireTimeoutMs\":{t}"),
                ];
                match variant {
                    0 => members.push("\"clientDescription\":\"x\"".to_string()),
                    1 => {
                        members.remove(2);
                    }
                    2 => members.push(format!("\"acquireTimeoutMs\":{t}")),
                    _ => {}
                }
                members
            })
            .prop_shuffle()
            .prop_map(|m| format!("{{{}}}", m.join(",")))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        /// Whatever the fast decoder accepts, serde decodes to the same request.
        #[test]
        fn lock_requests_decode_as_serde_does(body in body()) {
            if let Some(fast) = ConjureLockRequest::decode_fast(body.as_bytes()) {
                let serde = serde_json::from_str::<ConjureLockRequest>(&body).map(fields).ok();
                prop_assert_eq!(Some(fields(fast)), serde, "{}", body);
            }
        }
    }

    #[test]
    fn clients_lock_requests_take_the_fast_path() {
        let body = r#"{"requestId":"6f1c2a4e-5b7d-4e0f-8a9b-0c1d2e3f4a5b","lockDescriptors":["cm93LTE=","cm93LTI="],"acquireTimeoutMs":1000}"#;
        let fast = ConjureLockRequest::decode_fast(body.as_bytes()).expect("fast path");
        let (id, descriptors, timeout) = fields(fast);
        assert_eq!(id.to_string(), "6f1c2a4e-5b7d-4e0f-8a9b-0c1d2e3f4a5b");
        assert_eq!(descriptors, [Bytes::from("row-1"), Bytes::from("row-2")]);
        assert_eq!(timeout, 1000);
        let unknown = body.replace(
            "\"acquireTimeoutMs\"",
            "\"clientDescription\":\"c\",\"acquireTimeoutMs\"",
        );
        assert!(ConjureLockRequest::decode_fast(unknown.as_bytes()).is_none());
    }
}
