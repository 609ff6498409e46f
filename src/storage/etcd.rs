//! A [`BoundStore`] in etcd, for a cluster of timelock nodes (the first piece of the
//! high-availability work; the node that serves is chosen by an etcd election).
//!
//! Layout: one key per namespace, `<prefix>ns/<name>`, holding the same 10-byte record as the
//! RocksDB store. An etcd put returns once the write is committed by a quorum and fsynced, which
//! is the durability `BoundStore::put` promises.
//!
//! Leadership fencing: a store built [`EtcdStore::with_leader_guard`] writes only inside an etcd
//! transaction that compares the election key's creation revision with the one this node won.
//! Once the node's lease expires or it resigns, the key is gone (or belongs to the next leader),
//! the comparison fails and so does the write: a deposed leader can never extend a bound, and
//! its allocator fail-stops instead of handing out timestamps from an old term.

use std::sync::Arc;

use async_trait::async_trait;
use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};

use super::{codec, BoundStore, NamespaceRecord, StoreError};

/// The election key this node holds, and the revision at which it won.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderGuard {
    pub key: Vec<u8>,
    pub revision: i64,
}

/// Which namespaces a store loads (leader per namespace: those of one shard).
pub type NamespaceFilter = Arc<dyn Fn(&str) -> bool + Send + Sync>;

pub struct EtcdStore {
    client: Client,
    prefix: String,
    guard: Option<LeaderGuard>,
    endpoints: Vec<String>,
    only: Option<NamespaceFilter>,
}

fn etcd_error(what: &str, e: etcd_client::Error) -> StoreError {
    StoreError(format!("etcd {what} failed: {e}"))
}

impl EtcdStore {
    /// Connects to `endpoints`; every key lives under `prefix` (e.g. `/timelock/`).
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<Self, StoreError> {
        let client = Client::connect(endpoints, None)
            .await
            .map_err(|e| etcd_error("connect", e))?;
        Ok(Self {
            client,
            prefix: prefix.to_string(),
            guard: None,
            endpoints: endpoints.to_vec(),
            only: None,
        })
    }

    /// A store over an existing client (the election's), under `prefix`.
    pub fn from_client(client: Client, prefix: &str, endpoints: &[String]) -> Self {
        Self {
            client,
            prefix: prefix.to_string(),
            guard: None,
            endpoints: endpoints.to_vec(),
            only: None,
        }
    }

    /// Writes only while `guard` is still the election's leader key.
    pub fn with_leader_guard(mut self, guard: LeaderGuard) -> Self {
        self.guard = Some(guard);
        self
    }

    /// Loads only the namespaces `filter` keeps (a shard's, under a leader per namespace).
    /// Writes are not filtered: the registry above asks only for its own namespaces.
    pub fn only(mut self, filter: NamespaceFilter) -> Self {
        self.only = Some(filter);
        self
    }

    fn namespace_prefix(&self) -> String {
        format!("{}ns/", self.prefix)
    }
}

#[async_trait]
impl BoundStore for EtcdStore {
    async fn load_all(&self) -> Result<Vec<(String, NamespaceRecord)>, StoreError> {
        let prefix = self.namespace_prefix();
        let response = self
            .client
            .clone()
            .get(prefix.as_bytes(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|e| etcd_error("get", e))?;
        let mut out = Vec::new();
        for kv in response.kvs() {
            let name = kv
                .key_str()
                .ok()
                .and_then(|k| k.strip_prefix(prefix.as_str()))
                .ok_or_else(|| {
                    StoreError("namespace key in etcd is not UTF-8 under the prefix".into())
                })?
                .to_string();
            if self.only.as_ref().is_some_and(|keep| !keep(&name)) {
                continue;
            }
            let record = codec::decode(kv.value())
                .map_err(|e| StoreError(format!("namespace {name:?}: {e}")))?;
            out.push((name, record));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    async fn put(&self, namespace: &str, record: NamespaceRecord) -> Result<(), StoreError> {
        let key = format!("{}{namespace}", self.namespace_prefix());
        let value = codec::encode(record).to_vec();
        let mut client = self.client.clone();
        match &self.guard {
            None => client
                .put(key, value, None)
                .await
                .map(|_| ())
                .map_err(|e| etcd_error("put", e)),
            Some(guard) => {
                let txn = Txn::new()
                    .when([Compare::create_revision(
                        guard.key.clone(),
                        CompareOp::Equal,
                        guard.revision,
                    )])
                    .and_then([TxnOp::put(key, value, None)]);
                let response = client
                    .txn(txn)
                    .await
                    .map_err(|e| etcd_error("transaction", e))?;
                if response.succeeded() {
                    Ok(())
                } else {
                    Err(StoreError(
                        "this node is no longer the leader (its election key is gone or was replaced); refusing to extend the bound"
                            .into(),
                    ))
                }
            }
        }
    }

    fn describe(&self) -> String {
        format!(
            "etcd at {} under {:?}",
            self.endpoints.join(","),
            self.prefix
        )
    }
}
