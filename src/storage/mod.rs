//! Durable state behind one trait, so the engine can change without the core noticing.
//!
//! What is persisted is deliberately tiny: per namespace, the *upper bound* of timestamps it may
//! issue and whether it has been invalidated. Everything else (the issued counter, locks) lives in
//! memory and is rebuilt above the bound after a restart, exactly as TimeLock's
//! `PersistentTimestampServiceImpl` does.
//!
//! [`BoundStore::put`] must be durable when it returns `Ok` (a synced write): the allocator hands
//! out timestamps up to a bound only after `put` of that bound has succeeded. An `Err` is final for
//! the caller (fail-stop); stores must not retry internally in a way that could hide a lost write.
//!
//! Implementations: [`rocks::RocksStore`] (embedded, one node), [`memory::MemoryStore`] (tests and
//! benches), and [`faults::FaultInjectingStore`] (wraps another store and fails writes on demand).

use async_trait::async_trait;

pub mod etcd;
pub mod faults;
pub mod memory;
pub mod rocks;

/// What is stored for one namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NamespaceRecord {
    /// No timestamp above this has been or will be issued without first persisting a larger bound.
    pub bound: i64,
    /// Set by `invalidate`; a namespace so marked issues nothing until revalidated.
    pub invalidated: bool,
    /// Set when the namespace is restored from a backup: its bound may be older than timestamps
    /// the world has seen, so it issues nothing until fast-forwarded (or revalidated).
    pub fenced: bool,
}

/// A storage failure. Carries text only: the caller's reaction (fail-stop) is the same for all.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct StoreError(pub String);

/// The durable home of namespace bounds.
#[async_trait]
pub trait BoundStore: Send + Sync + 'static {
    /// Every namespace ever created, with its record, in name order.
    async fn load_all(&self) -> Result<Vec<(String, NamespaceRecord)>, StoreError>;

    /// The record a namespace created from now on starts from. After a restore it carries a
    /// floor and the fence (the restored data cannot know what a namespace absent from it
    /// handed out after the backup); otherwise bound 0, unfenced.
    async fn new_namespace_record(&self) -> Result<NamespaceRecord, StoreError> {
        Ok(NamespaceRecord::default())
    }

    /// Durably replaces the record of `namespace` (creating it if absent). Returns only once the
    /// write is synced to stable storage.
    async fn put(&self, namespace: &str, record: NamespaceRecord) -> Result<(), StoreError>;

    /// Writes a consistent point-in-time copy of the store's files to `target` (online backups).
    /// Stores without files (in memory, remote engines) do not support it.
    fn checkpoint(&self, target: &std::path::Path) -> Result<(), StoreError> {
        Err(StoreError(format!(
            "{} cannot take file checkpoints (asked for {})",
            self.describe(),
            target.display()
        )))
    }

    /// Human-readable location, for logs ("rocksdb at /var/lib/timelock").
    fn describe(&self) -> String;
}

/// Encoding of a [`NamespaceRecord`]: `[version=1][bound: i64 big-endian][flags]`.
pub(crate) mod codec {
    use super::{NamespaceRecord, StoreError};

    const RECORD_VERSION: u8 = 1;
    const FLAG_INVALIDATED: u8 = 1;
    const FLAG_FENCED: u8 = 2;
    pub(crate) const RECORD_LEN: usize = 10;

    pub(crate) fn encode(record: NamespaceRecord) -> [u8; RECORD_LEN] {
        let mut out = [0u8; RECORD_LEN];
        out[0] = RECORD_VERSION;
        out[1..9].copy_from_slice(&record.bound.to_be_bytes());
        out[9] = (if record.invalidated {
            FLAG_INVALIDATED
        } else {
            0
        }) | (if record.fenced { FLAG_FENCED } else { 0 });
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<NamespaceRecord, StoreError> {
        if bytes.len() != RECORD_LEN || bytes[0] != RECORD_VERSION {
            return Err(StoreError(format!(
                "unreadable namespace record ({} bytes, version {:?}); refusing to guess a bound",
                bytes.len(),
                bytes.first()
            )));
        }
        let bound = i64::from_be_bytes(bytes[1..9].try_into().expect("8 bytes"));
        let flags = bytes[9];
        if flags & !(FLAG_INVALIDATED | FLAG_FENCED) != 0 || bound < 0 {
            return Err(StoreError(format!(
                "corrupt namespace record (bound {bound}, flags {flags})"
            )));
        }
        Ok(NamespaceRecord {
            bound,
            invalidated: flags & FLAG_INVALIDATED != 0,
            fenced: flags & FLAG_FENCED != 0,
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn round_trips_and_rejects_garbage() {
            for record in [
                NamespaceRecord {
                    bound: 0,
                    invalidated: false,
                    fenced: false,
                },
                NamespaceRecord {
                    bound: i64::MAX,
                    invalidated: true,
                    fenced: false,
                },
                NamespaceRecord {
                    bound: 77,
                    invalidated: false,
                    fenced: true,
                },
            ] {
                assert_eq!(decode(&encode(record)).unwrap(), record);
            }
            assert!(decode(&[1, 2, 3]).is_err());
            let mut bad = encode(NamespaceRecord::default());
            bad[0] = 9;
            assert!(decode(&bad).is_err());
            let mut negative = encode(NamespaceRecord {
                bound: -5,
                invalidated: false,
                fenced: false,
            });
            negative[0] = 1;
            assert!(decode(&negative).is_err());
        }
    }
}
