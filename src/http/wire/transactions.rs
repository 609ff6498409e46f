//! The transaction endpoints' bodies (`src/http/transactions.rs`): the start-transactions
//! request with its strict decoder and its hand-written answer, commit-timestamp and
//! timestamp-lease requests and answers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::decode::{decoded_by_serde, once, Decode, Scanner};
use crate::lock::watch::IdentifiedVersion;
use crate::lock::Lease;
use crate::transactions::StartTransactionsResponse;

// Request bodies decoded by serde alone (see `JsonBody`).
decoded_by_serde!(
    CommitTimestampsRequest,
    CommitTimestampRequest,
    IdentifiedRequest,
    BTreeMap<String, StartTransactionsRequest>,
    BTreeMap<String, CommitTimestampsRequest>,
    BTreeMap<String, Vec<TimestampLeaseRequest>>,
);

#[derive(Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StartTransactionsRequest {
    pub(crate) request_id: Uuid,
    pub(crate) requestor_id: Uuid,
    pub(crate) num_transactions: i64,
    #[serde(default)]
    pub(crate) last_known_version: Option<IdentifiedVersion>,
}

impl StartTransactionsRequest {
    /// The body as AtlasDB's client writes it without a known lock-watch version: these three
    /// fields in this order, compact. Compared as literals instead of scanned key by key
    /// (most of the general decoder's work went on the keys). `None` for anything else, which
    /// [`Decode::decode_fast`] then scans.
    pub(crate) fn decode_usual(body: &[u8]) -> Option<Self> {
        let mut s = Scanner::new(body);
        s.literal(br#"{"requestId":"#)?;
        let request_id = s.uuid()?;
        s.literal(br#","requestorId":"#)?;
        let requestor_id = s.uuid()?;
        s.literal(br#","numTransactions":"#)?;
        let num_transactions = s.i64()?;
        s.literal(b"}")?;
        s.end()?;
        Some(Self {
            request_id,
            requestor_id,
            num_transactions,
            last_known_version: None,
        })
    }
}

impl Decode for StartTransactionsRequest {
    fn decode_fast(body: &[u8]) -> Option<Self> {
        if let Some(usual) = Self::decode_usual(body) {
            return Some(usual);
        }
        let mut s = Scanner::new(body);
        let (mut request_id, mut requestor_id, mut count) = (None, None, None);
        let mut last_known: Option<Option<IdentifiedVersion>> = None;
        s.object(|s, key| match key {
            b"requestId" => once(&mut request_id, s.uuid()),
            b"requestorId" => once(&mut requestor_id, s.uuid()),
            b"numTransactions" => once(&mut count, s.i64()),
            b"lastKnownVersion" => {
                let version = if s.null().is_some() {
                    Some(None)
                } else {
                    decode_version(s).map(Some)
                };
                once(&mut last_known, version)
            }
            _ => None,
        })?;
        s.end()?;
        Some(Self {
            request_id: request_id?,
            requestor_id: requestor_id?,
            num_transactions: count?,
            last_known_version: last_known.flatten(),
        })
    }
}

/// `{"id":"<uuid>","version":<int>}`, both fields once, nothing else.
pub(crate) fn decode_version(s: &mut Scanner<'_>) -> Option<IdentifiedVersion> {
    let (mut id, mut version) = (None, None);
    s.object(|s, key| match key {
        b"id" => once(&mut id, s.uuid()),
        b"version" => once(&mut version, s.i64()),
        _ => None,
    })?;
    Some(IdentifiedVersion {
        id: id?,
        version: version?,
    })
}

/// Written by hand, in the field order of the `StartTransactionsResponse` derive; only the
/// lock-watch update goes through serde.
pub(crate) fn start_response(r: &StartTransactionsResponse) -> super::write::JsonWriter {
    let mut w = super::write::JsonWriter::with_capacity(512); // typically 419 bytes: no regrowth
    w.raw(r#"{"immutableTimestamp":{"immutableTimestamp":"#)
        .i64(r.immutable_timestamp.immutable_timestamp)
        .raw(r#","lock":{"requestId":"#)
        .uuid(&r.immutable_timestamp.lock.request_id)
        .raw(r#"}},"timestamps":{"start":"#)
        .i64(r.timestamps.start)
        .raw(r#","interval":"#)
        .i64(r.timestamps.interval)
        .raw(r#","count":"#)
        .i64(r.timestamps.count)
        .raw(r#"},"lease":"#)
        .lease(&r.lease)
        .raw(r#","lockWatchUpdate":"#)
        .lock_watch_update(&r.lock_watch_update)
        .raw("}");
    w
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CommitTimestampsRequest {
    pub(crate) num_timestamps: i64,
    #[serde(default)]
    pub(crate) last_known_version: Option<IdentifiedVersion>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CommitTimestampRequest {
    #[serde(default)]
    pub(crate) last_known_version: Option<IdentifiedVersion>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TimestampLeaseRequest {
    pub(crate) request_id: Uuid,
    pub(crate) num_fresh_timestamps: BTreeMap<String, i64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LeaseGuarantee {
    pub(crate) identifier: Uuid,
    pub(crate) lease: Lease,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TimestampLeaseResponse {
    pub(crate) min_leased: i64,
    pub(crate) fresh_timestamps: ConjureTimestampRange,
}

#[derive(Serialize)]
pub(crate) struct ConjureTimestampRange {
    pub(crate) start: i64,
    pub(crate) count: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TimestampLeaseResponses {
    pub(crate) lease_guarantee: LeaseGuarantee,
    pub(crate) timestamp_lease_responses: BTreeMap<String, TimestampLeaseResponse>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct IdentifiedRequest {
    pub(crate) request_id: Uuid,
    #[serde(default)]
    pub(crate) requestor_id: Option<Uuid>,
    #[serde(default)]
    pub(crate) num_transactions: Option<i64>,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::lock::clock::IsoDuration;
    use crate::lock::watch::LockWatchStateUpdate;
    use crate::lock::LeaderTime;
    use crate::transactions::LockImmutableTimestampResponse;
    use crate::transactions::PartitionedTimestamps;

    #[test]
    fn start_response_matches_serde() {
        let r = StartTransactionsResponse {
            immutable_timestamp: LockImmutableTimestampResponse {
                immutable_timestamp: 90,
                lock: crate::transactions::LockToken {
                    request_id: Uuid::new_v4(),
                },
            },
            timestamps: PartitionedTimestamps {
                start: 113,
                interval: 16,
                count: 1,
            },
            lease: Lease {
                leader_time: LeaderTime {
                    id: Uuid::new_v4(),
                    current_time: 123_456_789,
                },
                validity: IsoDuration(Duration::from_secs(8)),
            },
            lock_watch_update: LockWatchStateUpdate::Snapshot {
                log_id: Uuid::new_v4(),
                last_known_version: -1,
                locked: Vec::new(),
                lock_watches: Vec::new(),
            },
        };
        assert_eq!(
            start_response(&r).as_str(),
            serde_json::to_string(&r).unwrap()
        );
    }
}
