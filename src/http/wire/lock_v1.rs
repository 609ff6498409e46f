//! The legacy lock service's (v1) JSON shapes (`src/http/lock_v1.rs`), as AtlasDB's
//! `lock-api-objects` write and read them: token and grant ids are 127-bit integers written and
//! read as exact JSON numbers (`u128`, never floats); a `LockClient` is `{"clientId":"name"}`;
//! descriptors are `{"bytes":"<b64>"}`; timeouts `{"time":120,"unit":"SECONDS"}`.

use axum::response::Response;
use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::decode::decoded_by_serde;
use super::lock::LegacyDescriptor;
use super::write::json_bytes;
use crate::error::TimelockError;
use crate::lock::v1::{
    BlockingMode, GrantView, LockGroupBehavior, LockMode, LockRequest, LockResult, LockStateView,
    TimeDuration, TokenView,
};

// Request bodies decoded by serde alone (see `JsonBody`).
decoded_by_serde!(
    ConjureLockV1Request,
    WireLockRequest,
    TokenRef,
    Vec<TokenRef>,
    GrantRef,
    LegacyDescriptor
);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireLockWithMode {
    pub(crate) lock_descriptor: LegacyDescriptor,
    pub(crate) lock_mode: LockMode,
}

/// `LockRequest` as its `SerializationProxy` reads it; missing fields take the defaults.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireLockRequest {
    pub(crate) locks: Vec<WireLockWithMode>,
    pub(crate) lock_timeout: Option<TimeDuration>,
    pub(crate) lock_group_behavior: Option<LockGroupBehavior>,
    pub(crate) blocking_mode: Option<BlockingMode>,
    pub(crate) blocking_duration: Option<TimeDuration>,
    pub(crate) version_id: Option<i64>,
    pub(crate) creating_thread_name: Option<String>,
}

impl WireLockRequest {
    pub(crate) fn into_request(self) -> Result<LockRequest, TimelockError> {
        let locks = self
            .locks
            .into_iter()
            .map(|l| (l.lock_descriptor.bytes.0, l.lock_mode))
            .collect();
        LockRequest::new(
            locks,
            self.lock_timeout,
            self.lock_group_behavior,
            self.blocking_mode,
            self.blocking_duration,
            self.version_id,
            self.creating_thread_name,
        )
        .map_err(TimelockError::InvalidArgument)
    }
}

/// Any token given back by a client; only `tokenId` matters (`LockRefreshToken`,
/// `SimpleHeldLocksToken`, `HeldLocksToken` all identify a token by it).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TokenRef {
    pub(crate) token_id: u128,
}

/// A `HeldLocksGrant` given back by a client; only `grantId` matters.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GrantRef {
    pub(crate) grant_id: u128,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ConjureLockV1Request {
    pub(crate) lock_client: String,
    pub(crate) lock_request: WireLockRequest,
}

#[derive(Serialize)]
pub(crate) struct DescriptorOut {
    pub(crate) bytes: String,
}

pub(crate) fn descriptor(d: &Bytes) -> DescriptorOut {
    DescriptorOut {
        bytes: base64::engine::general_purpose::STANDARD.encode(d),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ClientOut<'a> {
    pub(crate) client_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LockWithModeOut {
    pub(crate) lock_descriptor: DescriptorOut,
    pub(crate) lock_mode: LockMode,
}

pub(crate) fn locks_with_mode(locks: &[(Bytes, LockMode)]) -> Vec<LockWithModeOut> {
    locks
        .iter()
        .map(|(d, m)| LockWithModeOut {
            lock_descriptor: descriptor(d),
            lock_mode: *m,
        })
        .collect()
}

/// `HeldLocksToken`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HeldLocksTokenOut<'a> {
    pub(crate) token_id: u128,
    pub(crate) client: ClientOut<'a>,
    pub(crate) creation_date_ms: i64,
    pub(crate) expiration_date_ms: i64,
    pub(crate) locks: Vec<LockWithModeOut>,
    pub(crate) lock_timeout: TimeDuration,
    pub(crate) version_id: Option<i64>,
    pub(crate) requesting_thread: &'a str,
}

pub(crate) fn held_locks_token(t: &TokenView) -> HeldLocksTokenOut<'_> {
    HeldLocksTokenOut {
        token_id: t.token_id,
        client: ClientOut {
            client_id: &t.client,
        },
        creation_date_ms: t.creation_date_ms,
        expiration_date_ms: t.expiration_date_ms,
        locks: locks_with_mode(&t.locks),
        lock_timeout: t.lock_timeout,
        version_id: t.version_id,
        requesting_thread: &t.requesting_thread,
    }
}

/// `LockRefreshToken` (also Conjure's `ConjureLockRefreshToken`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LockRefreshTokenOut {
    pub(crate) token_id: u128,
    pub(crate) expiration_date_ms: i64,
}

pub(crate) fn refresh_token(t: &TokenView) -> LockRefreshTokenOut {
    LockRefreshTokenOut {
        token_id: t.token_id,
        expiration_date_ms: t.expiration_date_ms,
    }
}

/// `HeldLocksGrant` (its `getLocksWithMode` is the `locksWithMode` property).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HeldLocksGrantOut {
    pub(crate) grant_id: u128,
    pub(crate) creation_date_ms: i64,
    pub(crate) expiration_date_ms: i64,
    pub(crate) locks_with_mode: Vec<LockWithModeOut>,
    pub(crate) lock_timeout: TimeDuration,
    pub(crate) version_id: Option<i64>,
}

pub(crate) fn grant(g: &GrantView) -> HeldLocksGrantOut {
    HeldLocksGrantOut {
        grant_id: g.grant_id,
        creation_date_ms: g.creation_date_ms,
        expiration_date_ms: g.expiration_date_ms,
        locks_with_mode: locks_with_mode(&g.locks),
        lock_timeout: g.lock_timeout,
        version_id: g.version_id,
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LockWithClientOut<'a> {
    pub(crate) lock_descriptor: DescriptorOut,
    pub(crate) lock_client: ClientOut<'a>,
}

/// `LockResponse` (v1).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LockResponseOut<'a> {
    pub(crate) token: Option<HeldLocksTokenOut<'a>>,
    pub(crate) locks: Vec<LockWithClientOut<'a>>,
    pub(crate) block_and_release: bool,
}

pub(crate) fn lock_response(r: &LockResult) -> LockResponseOut<'_> {
    LockResponseOut {
        token: r.token.as_ref().map(held_locks_token),
        locks: r
            .failed
            .iter()
            .map(|(d, c)| LockWithClientOut {
                lock_descriptor: descriptor(d),
                lock_client: ClientOut { client_id: c },
            })
            .collect(),
        block_and_release: r.block_and_release,
    }
}

pub(crate) fn boolean(value: bool) -> Response {
    json_bytes(Bytes::from_static(if value { b"true" } else { b"false" }))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LockServerOptionsOut {
    #[serde(rename = "isStandaloneServer")]
    pub(crate) is_standalone_server: bool,
    pub(crate) max_allowed_lock_timeout: TimeDuration,
    pub(crate) max_allowed_clock_drift: TimeDuration,
    pub(crate) max_allowed_blocking_duration: TimeDuration,
    pub(crate) max_normal_lock_age: TimeDuration,
    pub(crate) random_bit_count: u32,
    pub(crate) stuck_transaction_timeout: TimeDuration,
    pub(crate) slow_log_trigger_millis: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LockHolderOut<'a> {
    pub(crate) client: ClientOut<'a>,
    pub(crate) creation_date_ms: i64,
    pub(crate) expiration_date_ms: i64,
    pub(crate) num_other_locks_held: usize,
    pub(crate) version_id: Option<i64>,
    pub(crate) requesting_thread: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LockRequesterOut<'a> {
    pub(crate) client: ClientOut<'a>,
    pub(crate) lock_group_behavior: LockGroupBehavior,
    pub(crate) blocking_mode: BlockingMode,
    pub(crate) blocking_duration: Option<TimeDuration>,
    pub(crate) version_id: Option<i64>,
    pub(crate) requesting_thread: &'a str,
}

/// `LockState` (`get-debugging-lock-state`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LockStateOut<'a> {
    #[serde(rename = "isWriteLocked")]
    pub(crate) is_write_locked: bool,
    #[serde(rename = "isFrozen")]
    pub(crate) is_frozen: bool,
    pub(crate) exact_current_lock_holders: Vec<ClientOut<'a>>,
    pub(crate) holders: Vec<LockHolderOut<'a>>,
    pub(crate) requesters: Vec<LockRequesterOut<'a>>,
}

pub(crate) fn lock_state(s: &LockStateView) -> LockStateOut<'_> {
    LockStateOut {
        is_write_locked: s.is_write_locked,
        is_frozen: s.is_frozen,
        exact_current_lock_holders: s
            .exact_current_lock_holders
            .iter()
            .map(|c| ClientOut { client_id: c })
            .collect(),
        holders: s
            .holders
            .iter()
            .map(|t| LockHolderOut {
                client: ClientOut {
                    client_id: &t.client,
                },
                creation_date_ms: t.creation_date_ms,
                expiration_date_ms: t.expiration_date_ms,
                num_other_locks_held: t.locks.len().saturating_sub(1),
                version_id: t.version_id,
                requesting_thread: &t.requesting_thread,
            })
            .collect(),
        requesters: s
            .requesters
            .iter()
            .map(|r| LockRequesterOut {
                client: ClientOut {
                    client_id: &r.client,
                },
                lock_group_behavior: r.group,
                blocking_mode: r.blocking,
                blocking_duration: r.blocking_duration,
                version_id: r.version_id,
                requesting_thread: &r.requesting_thread,
            })
            .collect(),
    }
}
