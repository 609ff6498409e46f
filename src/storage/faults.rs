//! A [`BoundStore`] wrapper that fails writes on demand, to exercise the fail-stop path the way a
//! full or failing disk would: after `fail_after` successful writes, every write returns an error
//! and is *not* applied.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use super::{BoundStore, NamespaceRecord, StoreError};

pub struct FaultInjectingStore {
    inner: Arc<dyn BoundStore>,
    fail_after: u64,
    writes: AtomicU64,
}

impl FaultInjectingStore {
    pub fn new(inner: Arc<dyn BoundStore>, fail_after: u64) -> Self {
        Self {
            inner,
            fail_after,
            writes: AtomicU64::new(0),
        }
    }
}

#[async_trait]
impl BoundStore for FaultInjectingStore {
    async fn load_all(&self) -> Result<Vec<(String, NamespaceRecord)>, StoreError> {
        self.inner.load_all().await
    }

    async fn new_namespace_record(&self) -> Result<NamespaceRecord, StoreError> {
        self.inner.new_namespace_record().await
    }

    async fn put(&self, namespace: &str, record: NamespaceRecord) -> Result<(), StoreError> {
        if self.writes.fetch_add(1, Ordering::SeqCst) >= self.fail_after {
            return Err(StoreError(format!(
                "injected I/O error (faults.fail_bound_writes_after = {})",
                self.fail_after
            )));
        }
        self.inner.put(namespace, record).await
    }

    fn checkpoint(&self, target: &std::path::Path) -> Result<(), StoreError> {
        self.inner.checkpoint(target)
    }

    fn describe(&self) -> String {
        format!(
            "{} with injected write faults after {} writes",
            self.inner.describe(),
            self.fail_after
        )
    }
}
