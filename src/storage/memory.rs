//! An in-memory [`BoundStore`] for tests and benchmarks. Its contents survive a simulated restart
//! (drop the services, keep the store) but not the process.

use std::collections::BTreeMap;

use async_trait::async_trait;
use parking_lot::Mutex;

use super::{BoundStore, NamespaceRecord, StoreError};

#[derive(Debug, Default)]
pub struct MemoryStore {
    records: Mutex<BTreeMap<String, NamespaceRecord>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// The record as last persisted, if any.
    pub fn get(&self, namespace: &str) -> Option<NamespaceRecord> {
        self.records.lock().get(namespace).copied()
    }
}

#[async_trait]
impl BoundStore for MemoryStore {
    async fn load_all(&self) -> Result<Vec<(String, NamespaceRecord)>, StoreError> {
        Ok(self
            .records
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect())
    }

    async fn put(&self, namespace: &str, record: NamespaceRecord) -> Result<(), StoreError> {
        self.records.lock().insert(namespace.to_string(), record);
        Ok(())
    }

    fn describe(&self) -> String {
        "in-memory store (not durable)".to_string()
    }
}
