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
use std::sync::Arc;

use parking_lot::RwLock;

use crate::error::{Result, TimelockError};
use crate::metrics::Metrics;
use crate::namespaces::Namespaces;

pub mod election;

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

/// The current term's registry and what non-leaders need to answer clients.
pub struct Leadership {
    role: AtomicU8,
    current: RwLock<Option<Arc<Namespaces>>>,
    /// The leader's advertised URL, when it is another node and known.
    leader_url: RwLock<Option<Arc<str>>>,
    node_id: String,
    advertise_url: String,
    metrics: Metrics,
}

impl Leadership {
    /// Single-node mode: `namespaces` serves for the whole life of the process.
    pub fn single(namespaces: Arc<Namespaces>, metrics: Metrics) -> Self {
        let this = Self {
            role: AtomicU8::new(Role::Single.to_u8()),
            current: RwLock::new(Some(namespaces)),
            leader_url: RwLock::new(None),
            node_id: String::new(),
            advertise_url: String::new(),
            metrics,
        };
        this.publish_role(Role::Single);
        this
    }

    /// Cluster mode: starts with no quorum and nothing to serve until elected.
    pub fn clustered(node_id: String, advertise_url: String, metrics: Metrics) -> Self {
        let this = Self {
            role: AtomicU8::new(Role::NoQuorum.to_u8()),
            current: RwLock::new(None),
            leader_url: RwLock::new(None),
            node_id,
            advertise_url,
            metrics,
        };
        this.publish_role(Role::NoQuorum);
        this
    }

    /// The registry to serve from, or [`TimelockError::NotCurrentLeader`].
    #[inline]
    pub fn namespaces(&self) -> Result<Arc<Namespaces>> {
        self.current
            .read()
            .clone()
            .ok_or(TimelockError::NotCurrentLeader)
    }

    pub fn role(&self) -> Role {
        Role::from_u8(self.role.load(Ordering::Acquire))
    }

    /// Whether this node may serve client requests now.
    #[inline]
    pub fn serves(&self) -> bool {
        matches!(self.role(), Role::Single | Role::Leader)
    }

    /// The leader's URL when another node leads and it is known (the 308 target).
    pub fn leader_url(&self) -> Option<Arc<str>> {
        self.leader_url.read().clone()
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

    /// Starts serving `namespaces` as the leader of a new term.
    pub(crate) fn install(&self, namespaces: Arc<Namespaces>) {
        *self.leader_url.write() = None;
        *self.current.write() = Some(namespaces);
        self.publish_role(Role::Leader);
        self.metrics.cluster.terms.inc();
    }

    /// Ends the current term, if any: its registry stops serving at once (gate closed, lock
    /// waiters answered 503, locks dropped) and is released.
    pub(crate) fn step_down(&self, next: Role, reason: &str) {
        let ended = self.current.write().take();
        if let Some(namespaces) = ended {
            namespaces.end_term();
            self.metrics
                .cluster
                .step_downs
                .with_label_values(&[reason])
                .inc();
            tracing::warn!(node = %self.node_id, reason, "stepped down: no longer serving as leader");
        }
        self.publish_role(next);
    }

    /// Records what this (non-leading) node knows about the leader.
    pub(crate) fn observe_leader(&self, role: Role, leader_url: Option<Arc<str>>) {
        debug_assert!(role != Role::Leader);
        if self.current.read().is_some() {
            return; // leading: the election loop steps down first
        }
        let changed = {
            let mut url = self.leader_url.write();
            let changed = *url != leader_url;
            *url = leader_url.clone();
            changed
        };
        if changed {
            tracing::info!(node = %self.node_id, leader = ?leader_url, role = role.as_str(), "leader observed");
        }
        if self.role() != role {
            self.publish_role(role);
        }
    }

    /// Single-node mode: serves `namespaces` from now on in place of the current registry,
    /// whose lock services are closed. Lets [`crate::server::InMemoryApp::reset`] start afresh
    /// behind the same router.
    pub(crate) fn replace(&self, namespaces: Arc<Namespaces>) {
        let old = self.current.write().replace(namespaces);
        if let Some(old) = old {
            old.close_lock_services();
        }
    }

    /// Ends the term for shutdown.
    pub fn close(&self) {
        if let Some(namespaces) = self.current.read().clone() {
            namespaces.close_lock_services();
        }
    }
}
