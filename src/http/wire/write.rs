//! Hand-written JSON for the fixed-shape answers of the hot endpoints (timestamp ranges, start
//! transactions, lock and unlock): written straight into one pre-sized buffer, with the same
//! field names, order and JSON types as the `serde` derives they replace (the tests compare
//! them byte for byte). Anything of variable shape (lock-watch updates other than the usual empty
//! snapshot) still goes through `serde_json`, into the same buffer.

use std::cell::Cell;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use crate::lock::watch::LockWatchStateUpdate;
use crate::lock::{LeaderTime, Lease};

/// A JSON body under construction.
pub struct JsonWriter(Vec<u8>);

impl JsonWriter {
    pub fn with_capacity(capacity: usize) -> Self {
        Self(Vec::with_capacity(capacity))
    }

    /// Appends `text` verbatim (punctuation and field names, already JSON).
    #[inline]
    pub fn raw(&mut self, text: &str) -> &mut Self {
        self.0.extend_from_slice(text.as_bytes());
        self
    }

    #[inline]
    pub fn i64(&mut self, value: i64) -> &mut Self {
        let mut buf = itoa::Buffer::new();
        self.0.extend_from_slice(buf.format(value).as_bytes());
        self
    }

    #[inline]
    pub fn bool(&mut self, value: bool) -> &mut Self {
        self.raw(if value { "true" } else { "false" })
    }

    /// A UUID as a JSON string, hyphenated lower case (as `uuid`'s serde impl writes it).
    #[inline]
    pub fn uuid(&mut self, id: &Uuid) -> &mut Self {
        self.0.extend_from_slice(&quoted_hyphenated(id));
        self
    }

    /// A UUID that recurs from answer to answer (a leadership id: the lease and the lock-watch
    /// log of a namespace carry the same one for its whole term), from a one-entry cache per
    /// thread of its text.
    #[inline]
    pub fn recurring_uuid(&mut self, id: &Uuid) -> &mut Self {
        thread_local! {
            static LAST: Cell<(Uuid, [u8; 38])> =
                const { Cell::new((Uuid::nil(), *b"\"00000000-0000-0000-0000-000000000000\"")) };
        }
        let text = LAST.with(|last| {
            let (cached, text) = last.get();
            if cached == *id {
                text
            } else {
                let text = quoted_hyphenated(id);
                last.set((*id, text));
                text
            }
        });
        self.0.extend_from_slice(&text);
        self
    }

    /// `{"id":"..","currentTime":..}`.
    pub fn leader_time(&mut self, time: &LeaderTime) -> &mut Self {
        self.raw(r#"{"id":"#)
            .recurring_uuid(&time.id)
            .raw(r#","currentTime":"#)
            .i64(time.current_time)
            .raw("}")
    }

    /// `{"leaderTime":{..},"validity":"PT8S"}`.
    pub fn lease(&mut self, lease: &Lease) -> &mut Self {
        self.raw(r#"{"leaderTime":"#)
            .leader_time(&lease.leader_time)
            .raw(r#","validity":""#);
        let validity = lease.validity.0;
        if validity.subsec_nanos() == 0 && (1..60).contains(&validity.as_secs()) {
            self.raw("PT").i64(validity.as_secs() as i64).raw("S");
        } else {
            let text = crate::lock::clock::iso8601(validity);
            self.raw(&text);
        }
        self.raw("\"}")
    }

    /// `["..",".."]`.
    pub fn uuids(&mut self, ids: &[Uuid]) -> &mut Self {
        self.0.reserve(ids.len() * 39 + 2);
        self.0.push(b'[');
        for (i, id) in ids.iter().enumerate() {
            if i > 0 {
                self.0.push(b',');
            }
            self.uuid(id);
        }
        self.0.push(b']');
        self
    }

    /// A lock-watch update, as its serde derive writes it. The common case on the
    /// `startTransactions` hot path, a snapshot with no watches and nothing locked under them,
    /// is written directly; anything else goes through serde.
    pub fn lock_watch_update(&mut self, update: &LockWatchStateUpdate) -> &mut Self {
        match update {
            LockWatchStateUpdate::Snapshot {
                log_id,
                last_known_version,
                locked,
                lock_watches,
            } if locked.is_empty() && lock_watches.is_empty() => self
                .raw(r#"{"type":"snapshot","logId":"#)
                .recurring_uuid(log_id)
                .raw(r#","lastKnownVersion":"#)
                .i64(*last_known_version)
                .raw(r#","locked":[],"lockWatches":[]}"#),
            _ => self.serde(update),
        }
    }

    /// Any value through `serde_json`, appended.
    pub fn serde<T: serde::Serialize>(&mut self, value: &T) -> &mut Self {
        serde_json::to_writer(&mut self.0, value).expect("response serialises");
        self
    }

    /// The finished `application/json` response.
    pub fn into_response(self) -> Response {
        json_bytes(bytes::Bytes::from(self.0))
    }

    #[cfg(test)]
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap()
    }
}

/// `{"<a>":x,"<b>":y}` for two integer fields (timestamp ranges).
pub fn two_numbers(a: &str, x: i64, b: &str, y: i64) -> Response {
    let mut w = JsonWriter::with_capacity(a.len() + b.len() + 48);
    w.raw("{\"")
        .raw(a)
        .raw("\":")
        .i64(x)
        .raw(",\"")
        .raw(b)
        .raw("\":")
        .i64(y)
        .raw("}");
    w.into_response()
}

/// Two lowercase hex digits per byte value.
const HEX_PAIRS: [[u8; 2]; 256] = {
    let digits = *b"0123456789abcdef";
    let mut table = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = [digits[i >> 4], digits[i & 15]];
        i += 1;
    }
    table
};

/// `"xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"` with its quotes, as `Uuid`'s lowercase hyphenated
/// form, a byte pair per table lookup and no intermediate `str` (UUIDs are most of a
/// start-transactions or unlock answer).
fn quoted_hyphenated(id: &Uuid) -> [u8; 38] {
    let mut out = [b'-'; 38];
    out[0] = b'"';
    out[37] = b'"';
    let mut at = 1;
    for (i, byte) in id.as_bytes().iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1; // the hyphen already there
        }
        out[at..at + 2].copy_from_slice(&HEX_PAIRS[usize::from(*byte)]);
        at += 2;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Responses

/// A bare JSON number, as TimeLock returns single timestamps.
pub fn json_number(value: i64) -> Response {
    let mut buf = itoa::Buffer::new();
    json_bytes(bytes::Bytes::copy_from_slice(buf.format(value).as_bytes()))
}

/// Any value as a JSON body.
pub fn json<T: serde::Serialize>(value: &T) -> Response {
    json_bytes(bytes::Bytes::from(
        serde_json::to_vec(value).expect("response serialises"),
    ))
}

pub(crate) fn json_bytes(body: bytes::Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// 204 No Content (void endpoints).
pub fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::lock::clock::IsoDuration;

    #[test]
    fn recurring_uuids_are_written_as_uuid_writes_them() {
        let ids = [Uuid::nil(), Uuid::new_v4(), Uuid::new_v4(), Uuid::max()];
        // Repeats, alternations and the cache's initial value.
        for id in ids
            .iter()
            .chain(&ids)
            .chain(&[ids[1], ids[1], ids[0], ids[2]])
        {
            let mut w = JsonWriter::with_capacity(0);
            w.recurring_uuid(id);
            assert_eq!(w.as_str(), format!("\"{}\"", id.hyphenated()));
        }
    }

    #[test]
    fn uuids_are_written_as_uuid_writes_them() {
        for id in [Uuid::nil(), Uuid::max()]
            .into_iter()
            .chain((0..1000).map(|_| Uuid::new_v4()))
        {
            let expected = format!("\"{}\"", id.hyphenated());
            assert_eq!(&quoted_hyphenated(&id)[..], expected.as_bytes());
        }
    }

    #[test]
    fn matches_serde() {
        let id = Uuid::new_v4();
        for validity in [
            Duration::from_secs(8),
            Duration::from_millis(500),
            Duration::from_secs(90),
            Duration::ZERO,
        ] {
            let lease = Lease {
                leader_time: LeaderTime {
                    id,
                    current_time: -5,
                },
                validity: IsoDuration(validity),
            };
            let mut w = JsonWriter::with_capacity(0);
            w.lease(&lease);
            assert_eq!(w.as_str(), serde_json::to_string(&lease).unwrap());
        }
        let ids = [Uuid::new_v4(), Uuid::nil(), Uuid::max()];
        for slice in [&ids[..0], &ids[..1], &ids[..]] {
            let mut w = JsonWriter::with_capacity(0);
            w.uuids(slice);
            assert_eq!(w.as_str(), serde_json::to_string(slice).unwrap());
        }
        let updates = [
            LockWatchStateUpdate::Snapshot {
                log_id: id,
                last_known_version: -1,
                locked: Vec::new(),
                lock_watches: Vec::new(),
            },
            LockWatchStateUpdate::Snapshot {
                log_id: id,
                last_known_version: i64::MAX,
                locked: vec![bytes::Bytes::from_static(b"row")],
                lock_watches: Vec::new(),
            },
            LockWatchStateUpdate::Success {
                log_id: id,
                last_known_version: 7,
                events: Vec::new(),
            },
        ];
        for update in &updates {
            let mut w = JsonWriter::with_capacity(0);
            w.lock_watch_update(update);
            assert_eq!(w.as_str(), serde_json::to_string(update).unwrap());
        }
        let mut w = JsonWriter::with_capacity(0);
        w.i64(i64::MIN).raw(",").i64(i64::MAX).raw(",").bool(true);
        assert_eq!(w.as_str(), "-9223372036854775808,9223372036854775807,true");
    }
}
