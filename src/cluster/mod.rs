//! Who serves: one node on its own, or the elected leader of a cluster on etcd.
//!
//! [`Leadership`] is what the rest of the server asks: "may I serve, and from which namespace
//! registry?" On a single node the answer never changes. In cluster mode ([`election`]) the
//! nodes campaign for one etcd election key held with a lease; the winner loads every bound from
//! etcd into a *new* [`Namespaces`] registry (nothing of an earlier term is reused: allocators
//! start at the stored bounds, lock services get new leadership ids), and installs it here. When
//! the term ends, the registry's [`crate::term_gate::TermGate`] closes, its lock services close, and it is
//! dropped; non-leaders answer clients with 308 or 503 (see `http::routing`).
//!
//! Why this is linearizable across failovers:
//! * every bound write of a term is an etcd transaction that succeeds only while this node's
//!   election key still exists with the revision it won at (`storage::etcd`), and a new leader
//!   wins only after the old key is gone, so it loads a bound at or above every timestamp the
//!   old leader can ever have issued;
//! * the old leader stops serving before its lease can have expired in etcd: the gate compares
//!   the monotonic clock, on every request, with the send time of the last acknowledged
//!   renewal plus the TTL, less a clock-drift allowance and a safety margin. So by the time a
//!   new leader can exist, the old one has stopped answering.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::RwLock;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Result, TimelockError};
use crate::metrics::Metrics;
use crate::namespaces::Namespaces;

pub mod election;
pub mod lease;
pub mod shards;

/// This node's part in serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Single-node mode: always serves.
    Single,
    /// Cluster mode, holding the leader lease: serves.
    Leader,
    /// Cluster mode, etcd reachable, another node (or none yet) leads.
    Follower,
    /// Cluster mode, etcd unreachable or without quorum: nobody can be known to lead.
    NoQuorum,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Single => "single",
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::NoQuorum => "no_quorum",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            0 => Role::Single,
            1 => Role::Leader,
            2 => Role::Follower,
            _ => Role::NoQuorum,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            Role::Single => 0,
            Role::Leader => 1,
            Role::Follower => 2,
            Role::NoQuorum => 3,
        }
    }

    const ALL: [Role; 4] = [Role::Single, Role::Leader, Role::Follower, Role::NoQuorum];
}

/// What this node knows of one shard's leadership (in single-leader mode, of the one term).
#[derive(Debug, Clone, Default)]
pub struct ShardView {
    /// The leading node's id and advertised URL, when known.
    pub leader_node: Option<Arc<str>>,
    pub leader_url: Option<Arc<str>>,
    /// The etcd revision at which the current leader's key was created (its term), 0 unknown.
    pub revision: i64,
    /// When this node started leading the shard (wall clock, ms since the epoch), 0 if not.
    pub since_unix_ms: u64,
}

/// One unit of leadership: the whole namespace space in single-leader mode, one shard of it
/// in leader-per-namespace mode.
#[derive(Default)]
struct Slot {
    /// This node's registry while it leads the slot.
    current: RwLock<Option<Arc<Namespaces>>>,
    view: RwLock<ShardView>,
}

/// The current terms' registries and what non-leaders need to answer clients.
pub struct Leadership {
    role: AtomicU8,
    /// One slot, or one per shard in leader-per-namespace mode.
    slots: Box<[Slot]>,
    per_namespace: bool,
    node_id: String,
    advertise_url: String,
    metrics: Metrics,
    /// Leader per namespace: the election task's door for operators' takeovers.
    takeovers: OnceLock<mpsc::Sender<Takeover>>,
}

/// An operator's request that this node take leadership of `shards` (see
/// [`Leadership::take_over`]); answered with the shards this node leads once done.
pub struct Takeover {
    pub shards: Vec<usize>,
    pub reply: oneshot::Sender<Vec<usize>>,
}

/// The shard of `namespace` among `shards`: FNV-1a (64-bit) of its bytes, modulo the count.
/// Every node and every version must agree on it, so it is spelled out rather than taken from
/// a hasher whose output may change.
pub fn shard_of(namespace: &str, shards: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in namespace.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % shards.max(1) as u64) as usize
}

impl Leadership {
    fn build(
        slots: usize,
        per_namespace: bool,
        node_id: String,
        advertise_url: String,
        metrics: Metrics,
        role: Role,
    ) -> Self {
        let this = Self {
            role: AtomicU8::new(role.to_u8()),
            slots: (0..slots.max(1)).map(|_| Slot::default()).collect(),
            per_namespace,
            node_id,
            advertise_url,
            metrics,
            takeovers: OnceLock::new(),
        };
        this.publish_role(role);
        this
    }

    /// Single-node mode: `namespaces` serves for the whole life of the process.
    pub fn single(namespaces: Arc<Namespaces>, metrics: Metrics) -> Self {
        let this = Self::build(
            1,
            false,
            String::new(),
            String::new(),
            metrics,
            Role::Single,
        );
        *this.slots[0].current.write() = Some(namespaces);
        this
    }

    /// Cluster mode, one leader: starts with no quorum and nothing to serve until elected.
    pub fn clustered(node_id: String, advertise_url: String, metrics: Metrics) -> Self {
        Self::build(1, false, node_id, advertise_url, metrics, Role::NoQuorum)
    }

    /// Cluster mode, a leader per namespace: `shards` slots, none led yet.
    pub fn sharded(
        shards: usize,
        node_id: String,
        advertise_url: String,
        metrics: Metrics,
    ) -> Self {
        Self::build(
            shards,
            true,
            node_id,
            advertise_url,
            metrics,
            Role::NoQuorum,
        )
    }

    /// Whether each namespace has a leader of its own (`leader_mode = "per-namespace"`).
    pub fn per_namespace(&self) -> bool {
        self.per_namespace
    }

    /// How many units of leadership there are (1 unless leader per namespace).
    pub fn shard_count(&self) -> usize {
        self.slots.len()
    }

    /// The slot that leads `namespace`.
    #[inline]
    pub fn shard_of(&self, namespace: &str) -> usize {
        if self.slots.len() == 1 {
            0
        } else {
            shard_of(namespace, self.slots.len())
        }
    }

    /// The registry that serves `namespace`, or an error saying this node does not lead it:
    /// [`TimelockError::NotCurrentLeader`] with one leader, [`TimelockError::NotLeaderOf`]
    /// with a leader per namespace (so that routing redirects to that namespace's leader).
    #[inline]
    pub fn registry_for(&self, namespace: &str) -> Result<Arc<Namespaces>> {
        match self.slots[self.shard_of(namespace)].current.read().clone() {
            Some(registry) => Ok(registry),
            None if self.per_namespace => Err(TimelockError::NotLeaderOf(namespace.to_string())),
            None => Err(TimelockError::NotCurrentLeader),
        }
    }

    /// Ok if this node leads every one of `namespaces` now, else the error of the first it
    /// does not lead (in the order given): a request that names several namespaces is
    /// refused whole, before anything is done (TimeLock's multi-client endpoints fail whole
    /// too, but only after the namespaces it leads have done their part).
    pub fn check_leads_all<'a>(&self, namespaces: impl IntoIterator<Item = &'a str>) -> Result<()> {
        for ns in namespaces {
            self.registry_for(ns)?;
        }
        Ok(())
    }

    /// The registry of shard `k`, while this node leads it.
    pub fn registry_for_shard(&self, k: usize) -> Option<Arc<Namespaces>> {
        self.slots.get(k)?.current.read().clone()
    }

    /// Every registry this node serves now (one per led shard; one on a single node).
    pub fn registries(&self) -> Vec<Arc<Namespaces>> {
        self.slots
            .iter()
            .filter_map(|s| s.current.read().clone())
            .collect()
    }

    /// The namespaces this node serves, sorted (only those used within the active window if
    /// `active`). One leader: `NotCurrentLeader` on a follower (so that it redirects). A
    /// leader per namespace: those of the shards this node leads.
    pub fn names(&self, active: bool) -> Result<Vec<String>> {
        let registries = if self.per_namespace {
            self.registries()
        } else {
            vec![self.namespaces()?]
        };
        let mut names: Vec<String> = registries
            .iter()
            .flat_map(|r| if active { r.active_names() } else { r.names() })
            .collect();
        names.sort();
        Ok(names)
    }

    /// The registry of the single term: on a single node or the single leader. With a leader
    /// per namespace there is none; use [`Leadership::registry_for`] or
    /// [`Leadership::registries`].
    #[inline]
    pub fn namespaces(&self) -> Result<Arc<Namespaces>> {
        if self.per_namespace {
            return Err(TimelockError::NotCurrentLeader);
        }
        self.slots[0]
            .current
            .read()
            .clone()
            .ok_or(TimelockError::NotCurrentLeader)
    }

    pub fn role(&self) -> Role {
        Role::from_u8(self.role.load(Ordering::Acquire))
    }

    /// Whether this node may serve client requests now: with one leader, whether it is the
    /// leader (or a single node); with a leader per namespace, whether it leads any shard.
    #[inline]
    pub fn serves(&self) -> bool {
        matches!(self.role(), Role::Single | Role::Leader)
    }

    /// Whether this node serves `namespace` now.
    #[inline]
    pub fn serves_namespace(&self, namespace: &str) -> bool {
        if self.per_namespace {
            self.slots[self.shard_of(namespace)]
                .current
                .read()
                .is_some()
        } else {
            self.serves()
        }
    }

    /// The leader's URL when another node leads and it is known (the 308 target). With a
    /// leader per namespace, that of `namespace`'s shard (none without a namespace).
    pub fn leader_url_for(&self, namespace: Option<&str>) -> Option<Arc<str>> {
        let slot = match (self.per_namespace, namespace) {
            (false, _) => 0,
            (true, Some(ns)) => self.shard_of(ns),
            (true, None) => return None,
        };
        let slot = &self.slots[slot];
        if slot.current.read().is_some() {
            return None;
        }
        let view = slot.view.read();
        if view.leader_node.as_deref() == Some(self.node_id.as_str()) {
            // Keys of this node's that it no longer serves under (a release in flight): not a
            // place to send a client back to.
            return None;
        }
        view.leader_url.clone()
    }

    /// The single leader's URL when another node leads and it is known.
    pub fn leader_url(&self) -> Option<Arc<str>> {
        self.leader_url_for(None)
    }

    /// What this node knows of every shard's leadership, in shard order.
    pub fn shard_views(&self) -> Vec<ShardView> {
        self.slots.iter().map(|s| s.view.read().clone()).collect()
    }

    /// The shards this node leads now.
    pub fn led_shards(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&k| self.slots[k].current.read().is_some())
            .collect()
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn advertise_url(&self) -> &str {
        &self.advertise_url
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn publish_role(&self, role: Role) {
        self.role.store(role.to_u8(), Ordering::Release);
        for r in Role::ALL {
            self.metrics
                .cluster
                .role
                .with_label_values(&[r.as_str()])
                .set(i64::from(r == role));
        }
    }

    /// Starts serving `namespaces` as the leader of a new term (single leader).
    pub(crate) fn install(&self, namespaces: Arc<Namespaces>) {
        self.install_shard(0, namespaces, 0);
    }

    /// Starts serving shard `k` from `namespaces`, the registry of a term begun at etcd
    /// `revision`.
    pub(crate) fn install_shard(&self, k: usize, namespaces: Arc<Namespaces>, revision: i64) {
        let slot = &self.slots[k];
        *slot.view.write() = ShardView {
            leader_node: Some(Arc::from(self.node_id.as_str())),
            leader_url: Some(Arc::from(self.advertise_url.as_str())),
            revision,
            since_unix_ms: now_unix_ms(),
        };
        *slot.current.write() = Some(namespaces);
        self.publish_role(Role::Leader);
        self.metrics.cluster.terms.inc();
        if self.per_namespace {
            self.metrics.cluster.shards_led.inc();
        }
    }

    /// Ends the current term, if any: its registry stops serving at once (gate closed, lock
    /// waiters answered 503, locks dropped) and is released.
    pub(crate) fn step_down(&self, next: Role, reason: &str) {
        if self.per_namespace {
            for k in 0..self.slots.len() {
                self.step_down_shard(k, reason);
            }
        } else {
            self.end_slot(0, reason);
            *self.slots[0].view.write() = ShardView::default();
        }
        self.publish_role(next);
    }

    /// Leader per namespace: ends this node's term of shard `k`, if any. Returns whether it
    /// led the shard.
    pub(crate) fn step_down_shard(&self, k: usize, reason: &str) -> bool {
        let ended = self.end_slot(k, reason);
        if ended {
            *self.slots[k].view.write() = ShardView::default();
            self.metrics.cluster.shards_led.dec();
            if self.role() == Role::Leader && self.led_shards().is_empty() {
                self.publish_role(Role::Follower);
            }
        }
        ended
    }

    fn end_slot(&self, k: usize, reason: &str) -> bool {
        let ended = self.slots[k].current.write().take();
        let Some(namespaces) = ended else {
            return false;
        };
        namespaces.end_term();
        self.metrics
            .cluster
            .step_downs
            .with_label_values(&[reason])
            .inc();
        if self.per_namespace {
            tracing::info!(node = %self.node_id, shard = k, reason, "stepped down: no longer leading the shard");
        } else {
            tracing::warn!(node = %self.node_id, reason, "stepped down: no longer serving as leader");
        }
        true
    }

    /// Records what this (non-leading) node knows about the leader.
    pub(crate) fn observe_leader(&self, role: Role, leader_url: Option<Arc<str>>) {
        debug_assert!(role != Role::Leader);
        let slot = &self.slots[0];
        if slot.current.read().is_some() {
            return; // leading: the election loop steps down first
        }
        let changed = {
            let mut view = slot.view.write();
            let changed = view.leader_url != leader_url;
            view.leader_url = leader_url.clone();
            changed
        };
        if changed {
            tracing::info!(node = %self.node_id, leader = ?leader_url, role = role.as_str(), "leader observed");
        }
        if self.role() != role {
            self.publish_role(role);
        }
    }

    /// Leader per namespace: records who leads shard `k` (a shard this node does not lead).
    pub(crate) fn observe_shard(&self, k: usize, view: ShardView) {
        let slot = &self.slots[k];
        if slot.current.read().is_some() {
            return;
        }
        *slot.view.write() = view;
    }

    /// Leader per namespace: this node's role when it leads no shard (`Follower` while etcd
    /// answers, `NoQuorum` when it does not).
    pub(crate) fn set_idle_role(&self, role: Role) {
        debug_assert!(role != Role::Leader);
        if self.led_shards().is_empty() && self.role() != role {
            self.publish_role(role);
        }
    }

    /// Leader per namespace: lets operators' takeovers reach the election task.
    pub(crate) fn accept_takeovers(&self, door: mpsc::Sender<Takeover>) {
        let _ = self.takeovers.set(door);
    }

    /// Asks this node to lead the shards of `namespaces` (TimeLock's
    /// `NamespaceLeadershipTakeoverService`), as safe hand-offs from their current leaders.
    /// Returns the namespaces this node leads once done (or after `wait`). On a single node
    /// every namespace is led here; the single leader leads all of them and a follower none.
    pub async fn take_over(&self, namespaces: &[String], wait: std::time::Duration) -> Vec<String> {
        let led = |this: &Self| -> Vec<String> {
            namespaces
                .iter()
                .filter(|ns| this.serves_namespace(ns))
                .cloned()
                .collect()
        };
        let Some(door) = self.takeovers.get().filter(|_| self.per_namespace) else {
            return led(self);
        };
        let mut shards: Vec<usize> = namespaces.iter().map(|ns| self.shard_of(ns)).collect();
        shards.sort_unstable();
        shards.dedup();
        let (reply, answer) = oneshot::channel();
        if door.send(Takeover { shards, reply }).await.is_ok() {
            let _ = tokio::time::timeout(wait, answer).await;
        }
        led(self)
    }

    /// Single-node mode: serves `namespaces` from now on in place of the current registry,
    /// whose lock services are closed. Lets [`crate::server::InMemoryApp::reset`] start afresh
    /// behind the same router.
    pub(crate) fn replace(&self, namespaces: Arc<Namespaces>) {
        let old = self.slots[0].current.write().replace(namespaces);
        if let Some(old) = old {
            old.close_lock_services();
        }
    }

    /// Ends the terms for shutdown.
    pub fn close(&self) {
        for registry in self.registries() {
            registry.close_lock_services();
        }
    }
}

fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
