//! Entry points for the fuzz targets in `fuzz/` (not part of the supported API).
//!
//! The request body types of the HTTP handlers are private to their modules; this facade lets
//! the `conjure_json` and `lock_descriptors` targets decode bytes exactly as the handlers do
//! (`serde_json` into the same types) without making the types themselves public.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::http::wire::lock::{ConjureLockRequest, LegacyDescriptor, LegacyLockRequest, B64};
use crate::http::wire::{lock, timestamp, transactions};
use crate::lock::watch::{IdentifiedVersion, LockWatchReference};
use crate::transactions::LockToken;

/// One request body type a handler decodes with `JsonBody<T>`.
pub struct BodyType {
    /// The Rust type, for messages.
    pub name: &'static str,
    /// Decodes `body` as that type: `Ok` if the handler would accept it as JSON.
    pub decode: fn(&[u8]) -> Result<(), String>,
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<(), String> {
    serde_json::from_slice::<T>(body)
        .map(drop)
        .map_err(|e| e.to_string())
}

macro_rules! body_types {
    ($($t:ty),* $(,)?) => {
        &[$(BodyType { name: stringify!($t), decode: decode::<$t> }),*]
    };
}

/// Every type a request body is decoded as, across `src/http/{timestamp,lock,transactions,
/// management,admin}.rs`, plus the pieces they are built from.
pub const REQUEST_BODIES: &[BodyType] = body_types![
    // timestamp.rs
    timestamp::GetFreshTimestampsRequest,
    i64,
    // lock.rs
    ConjureLockRequest,
    LegacyLockRequest,
    lock::TokensRequest,
    Vec<Uuid>,
    lock::StartWatchingRequest,
    Vec<String>,
    Vec<LockToken>,
    // transactions.rs
    transactions::StartTransactionsRequest,
    transactions::CommitTimestampsRequest,
    transactions::CommitTimestampRequest,
    BTreeMap<String, transactions::StartTransactionsRequest>,
    BTreeMap<String, transactions::CommitTimestampsRequest>,
    BTreeMap<String, Vec<Uuid>>,
    BTreeMap<String, Vec<transactions::TimestampLeaseRequest>>,
    BTreeMap<String, Vec<String>>,
    transactions::IdentifiedRequest,
    // admin.rs
    crate::operations::migration::Migration,
    // parts
    B64,
    LegacyDescriptor,
    IdentifiedVersion,
    LockWatchReference,
];

/// A lock request body as the lock handlers decode it: Conjure (`["<b64>"]` descriptors) or
/// legacy (`[{"bytes":"<b64>"}]`). Returns the request id, the decoded descriptors and the
/// timeout.
pub fn decode_lock_request(body: &[u8], legacy: bool) -> Result<(Uuid, Vec<Bytes>, i64), String> {
    if legacy {
        let r: LegacyLockRequest = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        Ok((
            r.request_id,
            r.lock_descriptors.into_iter().map(|d| d.bytes.0).collect(),
            r.acquire_timeout_ms,
        ))
    } else {
        let r: ConjureLockRequest = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        Ok((
            r.request_id,
            r.lock_descriptors.into_iter().map(|d| d.0).collect(),
            r.acquire_timeout_ms,
        ))
    }
}

/// One Conjure lock descriptor (a JSON base64 string), decoded as the handlers do.
pub fn decode_descriptor(json: &[u8]) -> Result<Bytes, String> {
    serde_json::from_slice::<B64>(json)
        .map(|d| d.0)
        .map_err(|e| e.to_string())
}
