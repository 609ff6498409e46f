//! The namespace registry: validates names, creates namespaces on first use (durably, so they
//! survive restarts), enforces the cap, and hands out each namespace's services.
//!
//! Lookups of existing namespaces take a read lock on a small map and allocate nothing; only
//! creation takes the creation mutex and writes to the store. A name is validated once, when it
//! is created; an existing entry is valid by construction.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use tokio::sync::Mutex;

use crate::error::{Result, TimelockError};
use crate::lock::v1::LockServiceV1;
use crate::lock::{LockLimits, LockService};
use crate::metrics::Metrics;
use crate::partitions::PartitionAllocator;
use crate::storage::{BoundStore, NamespaceRecord, StoreError};
use crate::term_gate::TermGate;
use crate::timestamp::{AllocatorLimits, TimestampService};

/// Names reserved by TimeLock itself.
const RESERVED: [&str; 3] = ["tl", "lw", "leader"];

/// How recently a namespace must have been used to count as active (TimeLock: 6 hours).
pub const ACTIVE_WINDOW: Duration = Duration::from_secs(6 * 60 * 60);

/// Longest namespace accepted, in bytes. TimeLock's rule has no limit; a name is a client's
/// name, and a cap keeps a hostile one out of keys, logs, metrics and the CLI's URLs.
pub const MAX_NAME_BYTES: usize = 1024;

/// Checks a namespace name against TimeLock's rule `^(?!((tl|lw)$))[a-zA-Z0-9_-]+$` plus the
/// reserved word `leader` and at most [`MAX_NAME_BYTES`]. The one rule for names: the server
/// applies it to every request and the CLI to every `--namespace` before it builds a URL.
pub fn validate_name(name: &str) -> Result<()> {
    if name.len() > MAX_NAME_BYTES {
        return Err(TimelockError::InvalidArgument(format!(
            "invalid namespace ({} bytes, starting {:?}): a namespace is at most {MAX_NAME_BYTES} bytes",
            name.len(),
            name.chars().take(16).collect::<String>()
        )));
    }
    let well_formed = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !well_formed {
        return Err(TimelockError::InvalidArgument(format!(
            "invalid namespace {name:?}: a namespace must be non-empty and contain only [a-zA-Z0-9_-]"
        )));
    }
    if RESERVED.contains(&name) {
        return Err(TimelockError::InvalidArgument(format!(
            "invalid namespace {name:?}: the names tl, lw and leader are reserved"
        )));
    }
    Ok(())
}

/// Validates every name; the first invalid one is the error.
pub fn validate_names<'a>(names: impl IntoIterator<Item = &'a String>) -> Result<()> {
    names.into_iter().try_for_each(|n| validate_name(n))
}

/// One namespace and its services.
pub struct Namespace {
    pub timestamps: Arc<TimestampService>,
    /// The current term's lock service; replaced (and the old one closed) by
    /// [`Namespace::invalidate_resources`].
    locks: RwLock<Arc<LockService>>,
    /// The current term's legacy (v1) lock table, apart from the v2 one; renewed with it.
    locks_v1: RwLock<Arc<LockServiceV1>>,
    /// Start-transaction partitions per requestor.
    pub partitions: parking_lot::Mutex<PartitionAllocator>,
    lock_limits: LockLimits,
    metrics: Metrics,
    /// Seconds since the registry's epoch at the last request (for `getActiveNamespaces`).
    last_used: AtomicU64,
}

impl Namespace {
    /// The lock service of the current term.
    pub fn locks(&self) -> Arc<LockService> {
        self.locks.read().clone()
    }

    /// The legacy (v1) lock table of the current term.
    pub fn locks_v1(&self) -> Arc<LockServiceV1> {
        self.locks_v1.read().clone()
    }

    /// Drops the in-memory services and starts a new term: a new leadership id, all locks
    /// (v2 and v1, with v1 grants), leases, waiters and lock watches gone (TimeLock's
    /// `invalidateResources`). Timestamps are unaffected: they continue above the durable bound.
    pub fn invalidate_resources(&self) {
        let fresh = LockService::new(self.lock_limits, self.metrics.clone());
        let old = std::mem::replace(&mut *self.locks.write(), fresh);
        old.close();
        let old_v1 = std::mem::replace(
            &mut *self.locks_v1.write(),
            LockServiceV1::with_clock_drift(self.lock_limits.v1_clock_drift),
        );
        old_v1.close();
        *self.partitions.lock() = PartitionAllocator::default();
    }
}

/// All namespaces of this server.
pub struct Namespaces {
    map: RwLock<crate::FastHashMap<Arc<str>, Arc<Namespace>>>,
    create: Mutex<()>,
    store: Arc<dyn BoundStore>,
    limits: AllocatorLimits,
    lock_limits: LockLimits,
    max_namespaces: usize,
    /// Namespaces held by this registry and the others it shares the cap with (under a leader
    /// per namespace, every shard this node leads): the cap counts them all.
    census: Arc<AtomicUsize>,
    metrics: Metrics,
    epoch: Instant,
    /// Open while this registry's term may serve; closed by [`Namespaces::end_term`].
    gate: Arc<TermGate>,
    /// What a namespace created from now on starts from (see
    /// [`BoundStore::new_namespace_record`]): after a restore, fenced or floored.
    new_record: NamespaceRecord,
}

impl Namespaces {
    /// Loads every persisted namespace from `store`, for a single node (serves until shutdown).
    pub async fn load(
        store: Arc<dyn BoundStore>,
        limits: AllocatorLimits,
        lock_limits: LockLimits,
        max_namespaces: usize,
        metrics: Metrics,
    ) -> std::result::Result<Self, StoreError> {
        Self::load_term(
            store,
            limits,
            lock_limits,
            (max_namespaces, Arc::default()),
            metrics,
            TermGate::unbounded(),
        )
        .await
    }

    /// Loads every persisted namespace from `store` for one leadership term: every service
    /// serves only while `gate` is open. Nothing is carried over from an earlier term: the
    /// allocators start at the stored bounds and the lock services get new leadership ids.
    /// `cap` is the namespace cap and the count it applies to, shared with the registries of
    /// the node's other shards.
    pub async fn load_term(
        store: Arc<dyn BoundStore>,
        limits: AllocatorLimits,
        lock_limits: LockLimits,
        cap: (usize, Arc<AtomicUsize>),
        metrics: Metrics,
        gate: Arc<TermGate>,
    ) -> std::result::Result<Self, StoreError> {
        let (max_namespaces, census) = cap;
        let new_record = store.new_namespace_record().await?;
        let registry = Self {
            new_record,
            map: RwLock::new(Default::default()),
            create: Mutex::new(()),
            store: store.clone(),
            limits,
            lock_limits,
            max_namespaces,
            census,
            metrics,
            epoch: Instant::now(),
            gate,
        };
        let records = store.load_all().await?;
        {
            let mut map = registry.map.write();
            for (name, record) in records {
                let name: Arc<str> = Arc::from(name);
                let ns = registry.build(name.clone(), record, 0);
                map.insert(name, ns);
            }
            let total = registry.census.fetch_add(map.len(), Ordering::AcqRel) + map.len();
            registry.metrics.namespaces.set(total as i64);
        }
        Ok(registry)
    }

    fn build(&self, name: Arc<str>, record: NamespaceRecord, last_used: u64) -> Arc<Namespace> {
        Arc::new(Namespace {
            timestamps: Arc::new(
                TimestampService::new(
                    name,
                    record,
                    self.limits,
                    self.store.clone(),
                    self.metrics.clone(),
                )
                .with_gate(self.gate.clone()),
            ),
            locks: RwLock::new(LockService::new(self.lock_limits, self.metrics.clone())),
            locks_v1: RwLock::new(LockServiceV1::with_clock_drift(
                self.lock_limits.v1_clock_drift,
            )),
            partitions: parking_lot::Mutex::new(PartitionAllocator::default()),
            lock_limits: self.lock_limits,
            metrics: self.metrics.clone(),
            last_used: AtomicU64::new(last_used),
        })
    }

    fn now_secs(&self) -> u64 {
        // +1 so that 0 means "never used since start-up".
        self.epoch.elapsed().as_secs() + 1
    }

    /// The namespace, if it exists, without creating it.
    pub fn get(&self, name: &str) -> Option<Arc<Namespace>> {
        self.map.read().get(name).cloned()
    }

    /// The namespace, created (durably) on first use. Invalid names and creation past the cap
    /// are refused with nothing created.
    pub async fn get_or_create(&self, name: &str) -> Result<Arc<Namespace>> {
        self.gate.check()?;
        let ns = match self.get(name) {
            Some(ns) => ns,
            None => self.create(name).await?,
        };
        let now = self.now_secs();
        if ns.last_used.load(Ordering::Relaxed) != now {
            ns.last_used.store(now, Ordering::Relaxed);
        }
        Ok(ns)
    }

    async fn create(&self, name: &str) -> Result<Arc<Namespace>> {
        validate_name(name)?;
        let _guard = self.create.lock().await;
        if let Some(ns) = self.get(name) {
            return Ok(ns);
        }
        let count = self.census.load(Ordering::Acquire);
        if count >= self.max_namespaces {
            return Err(TimelockError::TooManyNamespaces {
                limit: self.max_namespaces,
            });
        }
        let record = NamespaceRecord {
            invalidated: false,
            ..self.new_record
        };
        self.store
            .put(name, record)
            .await
            .map_err(|e| TimelockError::Storage(format!("creating namespace {name:?}: {e}")))?;
        let name: Arc<str> = Arc::from(name);
        let ns = self.build(name.clone(), record, self.now_secs());
        self.map.write().insert(name.clone(), ns.clone());
        let total = self.census.fetch_add(1, Ordering::AcqRel) + 1;
        self.metrics.namespaces.set(total as i64);
        if record.fenced {
            tracing::warn!(namespace = %name, "namespace created FENCED: the data was restored from a backup that could not know it; fast-forward it past the last timestamp it issued before the restore");
        } else {
            tracing::info!(namespace = %name, floor = record.bound, "namespace created");
        }
        Ok(ns)
    }

    /// Every namespace, sorted by name.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.map.read().keys().map(|k| k.to_string()).collect();
        names.sort();
        names
    }

    /// Namespaces used within [`ACTIVE_WINDOW`], sorted by name.
    pub fn active_names(&self) -> Vec<String> {
        let now = self.now_secs();
        let window = ACTIVE_WINDOW.as_secs();
        let mut names: Vec<String> = self
            .map
            .read()
            .iter()
            .filter(|(_, ns)| {
                let used = ns.last_used.load(Ordering::Relaxed);
                used != 0 && now - used <= window
            })
            .map(|(k, _)| k.to_string())
            .collect();
        names.sort();
        names
    }

    /// Every namespace with its services, sorted by name (for the status view: one short read
    /// lock on the map, no lookup per name).
    pub fn entries(&self) -> Vec<(Arc<str>, Arc<Namespace>)> {
        let mut all: Vec<(Arc<str>, Arc<Namespace>)> = self
            .map
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Names of namespaces restored from a backup and not yet fast-forwarded.
    pub fn fenced(&self) -> Vec<String> {
        self.names_where(|ns| ns.timestamps.is_fenced())
    }

    /// Names of namespaces whose timestamp service has fail-stopped.
    pub fn fail_stopped(&self) -> Vec<String> {
        self.names_where(|ns| ns.timestamps.is_fail_stopped())
    }

    /// This registry's part of the namespace-state gauges: (fail-stopped, fenced, the oldest
    /// fence's start in seconds since the epoch or infinity). Summed over the registries a node
    /// serves at scrape time, so they cost the request path nothing.
    pub fn state_counts(&self) -> (i64, i64, f64) {
        let (mut failed, mut fenced, mut oldest) = (0i64, 0i64, f64::INFINITY);
        for ns in self.map.read().values() {
            if ns.timestamps.is_fail_stopped() {
                failed += 1;
            }
            if let Some(since) = ns.timestamps.fenced_since() {
                fenced += 1;
                oldest = oldest.min(since);
            }
        }
        (failed, fenced, oldest)
    }

    /// How many namespaces this registry holds.
    pub fn len(&self) -> usize {
        self.map.read().len()
    }

    /// Whether this registry holds no namespace.
    pub fn is_empty(&self) -> bool {
        self.map.read().is_empty()
    }

    fn names_where(&self, keep: impl Fn(&Namespace) -> bool) -> Vec<String> {
        let mut names: Vec<String> = self
            .map
            .read()
            .iter()
            .filter(|(_, ns)| keep(ns))
            .map(|(k, _)| k.to_string())
            .collect();
        names.sort();
        names
    }

    /// Whether this registry may still serve (its term's gate is open).
    pub fn is_serving(&self) -> bool {
        self.gate.is_open()
    }

    /// Ends this registry's term (leadership lost): nothing is served from it any more, lock
    /// waiters fail with 503 and every lock is dropped.
    pub fn end_term(&self) {
        self.gate.close();
        self.close_lock_services();
        // Its namespaces no longer count against this node's cap. Creation after the gate
        // closed is refused (the gate is checked first), so the count is final.
        let held = self.map.read().len();
        let total = self
            .census
            .fetch_sub(held, Ordering::AcqRel)
            .saturating_sub(held);
        self.metrics.namespaces.set(total as i64);
    }

    /// Ends every namespace's lock term (shutdown): waiters fail with 503, locks are dropped.
    pub fn close_lock_services(&self) {
        let all: Vec<Arc<Namespace>> = self.map.read().values().cloned().collect();
        for ns in all {
            ns.locks().close();
            ns.locks_v1().close();
        }
    }

    /// Reaps expired lock tokens and idle partition assignments in every namespace.
    pub fn reap(&self) {
        let all: Vec<Arc<Namespace>> = self.map.read().values().cloned().collect();
        for ns in all {
            ns.locks().reap();
            ns.locks_v1().reap();
            ns.partitions.lock().evict_idle();
        }
    }

    pub fn limits(&self) -> &AllocatorLimits {
        &self.limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_timelock_rules() {
        for ok in [
            "a", "client", "tlsuffix", "tl-x", "learner", "acceptor", "A_b-9", "lwx",
        ] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "tl", "lw", "leader", "a b", "a/b", "ns!", "é", "a.b", "%20",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_name(&"a".repeat(MAX_NAME_BYTES)).is_ok());
        assert!(validate_name(&"a".repeat(MAX_NAME_BYTES + 1)).is_err());
    }
}
