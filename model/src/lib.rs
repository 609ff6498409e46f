//! A model of leadership per namespace on etcd, for the `stateright` model checker: the
//! protocol that docs/cluster.md ("Leader per namespace") describes, as the server implements
//! it in src/cluster/shards.rs (a namespace here stands for one of its shards).
//!
//! What is modelled, each step one atomic transition that the checker interleaves in every
//! possible order:
//! * **etcd**: leases with an expiry time, removed (with every key attached to them) at any
//!   moment after they expired, as etcd's lessor does lazily, and renewed only before it; one
//!   leadership key per namespace carrying its owner, its lease and the revision it was created
//!   at; the stored bound of each namespace. Every write is a transaction with a condition.
//!   Bound writes travel: sent on the request path, applied by etcd at any later moment (even
//!   after their sender crashed), and only then is the sender told the outcome.
//! * **nodes**: each holds at most one lease (shared by every namespace it leads) and its own
//!   view of that lease, a deadline computed as the renewal's send time plus the TTL less a
//!   margin; per namespace, at most one *term*: the revision of its key and the timestamps it
//!   may still hand out (`next..=limit`). Nodes crash (losing everything but what etcd holds)
//!   and restart.
//! * **pauses**: a node does nothing while time passes (a stopped process, a long GC, a stale
//!   lease view): any interleaving in which a node's steps are delayed is explored, so a node
//!   that wakes up with a term it believes it holds is covered.
//! * **clients**: `Serve` is a client's timestamp request answered by a node, the only place a
//!   timestamp is issued.
//! * **hand-off**: a planned move is `HandOff`: the node stops serving the namespace, then
//!   deletes its key on condition that it still has the revision of its term. `StepDown` is a
//!   hand-off whose delete never reached etcd (or a node that noticed its key gone); `Release`
//!   is that delete retried later. Any node may then take the namespace in two steps, as the
//!   server does: `Acquire`, an etcd put-if-absent attached to its lease, after which the node
//!   holds a term that is still loading (it neither serves nor writes bounds); then `Load`, a
//!   separate linearizable read of the stored bound into the term, which installs it only if
//!   the node is up and its lease deadline is still ahead (the server's `clock.is_valid()`).
//!   Anything may happen between the two (other writes applied, lease expiry, crash, pause);
//!   a node whose deadline passed, or whose read failed, gives the loading term up, with the
//!   key released (`HandOff`) or not (`StepDown`, `LeaseLost`). `Acquire` does not check the
//!   node's deadline (the server does not either): only `Load` installs a term. Who *should*
//!   take a namespace (the balancer's choice) does not matter for safety, so every node is
//!   allowed to try.
//!
//! What is abstracted: clocks run at one rate (the drift allowance is part of the margin), a
//! renewal is received by etcd when it is sent (a later receipt only extends etcd's expiry
//! further past the node's deadline), a lost renewal acknowledgement (`lost_acks`) is explored
//! in one configuration only (it only makes a node's view more conservative, and doubles the
//! state space), a lost etcd write is one that never applies, locks are left out (they live and
//! die with the term, so they follow from the term's exclusivity).
//!
//! Four mutants show that each ingredient is needed: `lease_check: false` removes the
//! request-path check of the lease deadline (a node serves for as long as it believes it holds
//! a term, until its background task notices): two nodes serve one namespace, and one issues a
//! timestamp below the other's. `guarded_writes: false` makes bound writes unconditional: a
//! write still on its way when its term ended lowers the stored bound under a later term.
//! `stop_before_delete: false` deletes the key at a hand-off before the term stops: two nodes
//! serve one namespace. `load_after_create: false` reads the bound before it creates the key:
//! the old term's last write lands between the two, and the new term starts at or below a
//! timestamp already issued.

use stateright::{Model, Property};

/// The bounds of the state space and the protocol variant.
#[derive(Clone, Debug)]
pub struct Protocol {
    pub nodes: u8,
    pub namespaces: u8,
    /// etcd's lease TTL, in ticks.
    pub ttl: u8,
    /// How long before its lease can have expired in etcd a node stops serving, in ticks.
    pub margin: u8,
    /// The last tick explored.
    pub max_time: u8,
    /// Leases granted over a whole run (a restarted node needs a new one).
    pub max_leases: u8,
    pub max_crashes: u8,
    /// Hand-offs and step-downs over a whole run (giving up a loading term counts as one).
    pub max_handoffs: u8,
    /// Timestamps reserved per bound write.
    pub reservation: u8,
    /// The highest bound explored.
    pub max_bound: u8,
    /// Whether a renewal's acknowledgement may be lost (etcd's expiry moves, the node's
    /// deadline does not).
    pub lost_acks: bool,
    /// Whether a node checks its lease deadline on every request (the server's `TermGate`).
    pub lease_check: bool,
    /// Whether a bound write is conditional on the term's key revision.
    pub guarded_writes: bool,
    /// Whether a hand-off stops serving before it deletes the key.
    pub stop_before_delete: bool,
    /// Whether a node reads the stored bound after it created the key (rather than before).
    pub load_after_create: bool,
}

impl Protocol {
    /// Two nodes, one namespace; a crash and restart, three leases, a hand-off, two
    /// timestamps, five ticks with a TTL of two.
    pub fn with_crashes() -> Self {
        Protocol {
            nodes: 2,
            namespaces: 1,
            ttl: 2,
            margin: 1,
            max_time: 4,
            max_leases: 3,
            max_crashes: 1,
            max_handoffs: 1,
            reservation: 1,
            max_bound: 2,
            lost_acks: false,
            lease_check: true,
            guarded_writes: true,
            stop_before_delete: true,
            load_after_create: true,
        }
    }

    /// Two nodes, two namespaces whose terms share each node's lease (a lost lease ends both);
    /// no crash, two leases, a hand-off, two timestamps per namespace, four ticks.
    pub fn two_namespaces() -> Self {
        Protocol {
            namespaces: 2,
            max_time: 3,
            max_leases: 2,
            max_crashes: 0,
            ..Self::with_crashes()
        }
    }

    /// Two nodes, one namespace, renewals whose acknowledgement may be lost; no crash, two
    /// leases, a hand-off, three timestamps, seven ticks.
    pub fn with_lost_acks() -> Self {
        Protocol {
            max_time: 6,
            max_leases: 2,
            max_crashes: 0,
            max_bound: 3,
            lost_acks: true,
            ..Self::with_crashes()
        }
    }

    /// The same protocol without the request-path lease check.
    pub fn without_lease_check(self) -> Self {
        Protocol {
            lease_check: false,
            ..self
        }
    }

    /// The same protocol with bound writes that do not check the key's revision.
    pub fn with_unguarded_writes(self) -> Self {
        Protocol {
            guarded_writes: false,
            ..self
        }
    }

    /// The same protocol with a hand-off that deletes the key and goes on serving until
    /// something else ends its term.
    pub fn deleting_before_stopping(self) -> Self {
        Protocol {
            stop_before_delete: false,
            ..self
        }
    }

    /// The same protocol with the stored bound read before the key is created.
    pub fn loading_before_creating(self) -> Self {
        Protocol {
            load_after_create: false,
            ..self
        }
    }
}

/// An etcd lease.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Lease {
    pub id: u8,
    pub expiry: u8,
}

/// A namespace's leadership key in etcd. `revision` stands for its create revision; counted
/// per namespace, since only its equality with a term's matters.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Key {
    pub owner: u8,
    pub lease: u8,
    pub revision: u8,
}

/// A node's term for one namespace: the key revision it won, and what it may issue.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Term {
    /// 0 only in the `load_after_create: false` mutant: the bound is read, the key not yet
    /// created.
    pub revision: u8,
    pub next: u8,
    pub limit: u8,
    /// A bound write of this term is on its way.
    pub writing: bool,
    /// The stored bound has been read into `next` and `limit`; until then the term neither
    /// serves nor writes.
    pub loaded: bool,
}

/// A bound write sent to etcd and not yet applied: the network may hold it for any time, and
/// it outlives its sender's crash.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct Write {
    pub node: u8,
    pub ns: u8,
    pub revision: u8,
    pub bound: u8,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Node {
    pub up: bool,
    /// The node's lease and its own deadline for it.
    pub lease: Option<(u8, u8)>,
    pub terms: Vec<Option<Term>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct State {
    pub now: u8,
    // etcd
    pub leases: Vec<Lease>,
    pub keys: Vec<Option<Key>>,
    pub bounds: Vec<u8>,
    /// Per namespace, the last key revision created.
    pub revisions: Vec<u8>,
    /// Bound writes on their way to etcd, sorted.
    pub in_flight: Vec<Write>,
    // nodes
    pub nodes: Vec<Node>,
    // budgets
    pub grants: u8,
    pub crashes: u8,
    pub handoffs: u8,
    // ghost variables, for the properties only
    /// The highest timestamp issued per namespace (0: none).
    pub issued: Vec<u8>,
    /// A timestamp at or below an earlier one of its namespace was issued.
    pub regression: bool,
    /// A namespace was served by a term other than its first.
    pub served_by_successor: bool,
    /// A namespace was served by a term that began after a hand-off.
    pub served_after_handoff: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Action {
    Tick,
    /// Grant a lease to a node without one.
    Grant(u8),
    /// Renew a node's lease; `acked: false` loses the acknowledgement.
    Renew {
        node: u8,
        acked: bool,
    },
    /// etcd removes an expired lease and its keys.
    Expire(u8),
    /// The node's background task finds its lease gone (deadline passed, or etcd says expired)
    /// and ends every term.
    LeaseLost(u8),
    /// etcd creates the namespace's key, if absent, attached to the node's lease: the node
    /// holds a term that is still loading.
    Acquire {
        node: u8,
        ns: u8,
    },
    /// A linearizable read of the stored bound into a loading term, installed only while the
    /// node's lease deadline is ahead.
    Load {
        node: u8,
        ns: u8,
    },
    /// A bound write sent, conditional on the term's key revision.
    Extend {
        node: u8,
        ns: u8,
    },
    /// etcd applies the `i`th write on its way, and its sender learns the outcome.
    Apply(u8),
    /// A client's timestamp request answered.
    Serve {
        node: u8,
        ns: u8,
    },
    HandOff {
        node: u8,
        ns: u8,
    },
    StepDown {
        node: u8,
        ns: u8,
    },
    Release {
        node: u8,
        ns: u8,
    },
    Crash(u8),
    Restart(u8),
}

impl Protocol {
    /// Whether `node` answers a request for `ns` now: it holds a term for it and, with the
    /// request-path check, its lease deadline has not passed.
    pub fn can_serve(&self, state: &State, node: u8, ns: u8) -> bool {
        let n = &state.nodes[node as usize];
        n.up && n.terms[ns as usize]
            .as_ref()
            .is_some_and(|t| t.loaded && t.revision != 0)
            && (!self.lease_check || self.lease_valid(state, n))
    }

    fn lease_valid(&self, state: &State, node: &Node) -> bool {
        node.lease.is_some_and(|(_, deadline)| state.now < deadline)
    }

    fn etcd_lease(state: &State, id: u8) -> Option<&Lease> {
        state.leases.iter().find(|l| l.id == id)
    }
}

impl Model for Protocol {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let ns = self.namespaces as usize;
        vec![State {
            now: 0,
            leases: Vec::new(),
            keys: vec![None; ns],
            bounds: vec![0; ns],
            revisions: vec![0; ns],
            in_flight: Vec::new(),
            nodes: vec![
                Node {
                    up: true,
                    lease: None,
                    terms: vec![None; ns],
                };
                self.nodes as usize
            ],
            grants: 0,
            crashes: 0,
            handoffs: 0,
            issued: vec![0; ns],
            regression: false,
            served_by_successor: false,
            served_after_handoff: false,
        }]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        if state.now < self.max_time {
            actions.push(Action::Tick);
        }
        for i in 0..state.in_flight.len() {
            actions.push(Action::Apply(i as u8));
        }
        for lease in &state.leases {
            if lease.expiry <= state.now {
                actions.push(Action::Expire(lease.id));
            }
        }
        for node in 0..self.nodes {
            let n = &state.nodes[node as usize];
            if !n.up {
                actions.push(Action::Restart(node));
                continue;
            }
            if state.crashes < self.max_crashes {
                actions.push(Action::Crash(node));
            }
            match n.lease {
                None => {
                    if state.grants < self.max_leases {
                        actions.push(Action::Grant(node));
                    }
                }
                Some((id, deadline)) => {
                    // etcd renews a lease only before its expiry (after it, a keep-alive is
                    // answered "not found" once the lessor has revoked it).
                    let alive = Self::etcd_lease(state, id).is_some_and(|l| state.now < l.expiry);
                    if alive {
                        actions.push(Action::Renew { node, acked: true });
                        if self.lost_acks {
                            actions.push(Action::Renew { node, acked: false });
                        }
                    }
                    if !alive || deadline <= state.now {
                        actions.push(Action::LeaseLost(node));
                    }
                }
            }
            for ns in 0..self.namespaces {
                let term = &n.terms[ns as usize];
                match term {
                    None => {
                        if !self.load_after_create {
                            // The mutant reads the bound first, whenever it likes: its view of
                            // the key being absent may be stale.
                            if n.lease.is_some() {
                                actions.push(Action::Load { node, ns });
                            }
                        } else if state.keys[ns as usize].is_none()
                            && n.lease
                                .is_some_and(|(id, _)| Self::etcd_lease(state, id).is_some())
                        {
                            // No check of the node's deadline here, as in the server: only the
                            // load installs a term, and it checks.
                            actions.push(Action::Acquire { node, ns });
                        }
                        if let (Some(key), Some((id, _))) = (&state.keys[ns as usize], n.lease) {
                            if key.owner == node && key.lease == id {
                                actions.push(Action::Release { node, ns });
                            }
                        }
                    }
                    Some(term) => {
                        if term.revision == 0 {
                            // The mutant creates the key after its read, and installs the
                            // term at once if its deadline is ahead.
                            if state.keys[ns as usize].is_none()
                                && self.lease_valid(state, n)
                                && n.lease
                                    .is_some_and(|(id, _)| Self::etcd_lease(state, id).is_some())
                            {
                                actions.push(Action::Acquire { node, ns });
                            }
                        } else if !term.loaded && self.lease_valid(state, n) {
                            actions.push(Action::Load { node, ns });
                        }
                        if self.can_serve(state, node, ns) {
                            if term.next <= term.limit {
                                actions.push(Action::Serve { node, ns });
                            } else if !term.writing
                                && term.limit + self.reservation <= self.max_bound
                            {
                                actions.push(Action::Extend { node, ns });
                            }
                        }
                        if state.handoffs < self.max_handoffs {
                            actions.push(Action::HandOff { node, ns });
                            actions.push(Action::StepDown { node, ns });
                        }
                    }
                }
            }
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut s = last.clone();
        match action {
            Action::Tick => s.now += 1,
            Action::Grant(node) => {
                s.grants += 1;
                let id = s.grants;
                s.leases.push(Lease {
                    id,
                    expiry: s.now + self.ttl,
                });
                s.nodes[node as usize].lease = Some((id, s.now + self.ttl - self.margin));
            }
            Action::Renew { node, acked } => {
                let n = &mut s.nodes[node as usize];
                let (id, _) = n.lease?;
                let expiry = s.now + self.ttl;
                s.leases.iter_mut().find(|l| l.id == id)?.expiry = expiry;
                if acked {
                    n.lease = Some((id, expiry - self.margin));
                }
            }
            Action::Expire(id) => {
                s.leases.retain(|l| l.id != id);
                for key in s.keys.iter_mut() {
                    if key.as_ref().is_some_and(|k| k.lease == id) {
                        *key = None;
                    }
                }
            }
            Action::LeaseLost(node) => {
                let n = &mut s.nodes[node as usize];
                n.lease = None;
                n.terms.iter_mut().for_each(|t| *t = None);
            }
            Action::Acquire { node, ns } => {
                let (id, _) = s.nodes[node as usize].lease?;
                // One transaction: if the key is absent, create it with this lease.
                Self::etcd_lease(&s, id)?;
                let i = ns as usize;
                if s.keys[i].is_some() {
                    return None;
                }
                s.revisions[i] += 1;
                let revision = s.revisions[i];
                s.keys[i] = Some(Key {
                    owner: node,
                    lease: id,
                    revision,
                });
                let term = &mut s.nodes[node as usize].terms[i];
                match term.as_mut() {
                    // The mutant: the bound was read before; the term is installed now.
                    Some(t) if !self.load_after_create && t.revision == 0 => t.revision = revision,
                    Some(_) => return None,
                    None if self.load_after_create => {
                        *term = Some(Term {
                            revision,
                            next: 0,
                            limit: 0,
                            writing: false,
                            loaded: false,
                        })
                    }
                    None => return None,
                }
            }
            Action::Load { node, ns } => {
                let i = ns as usize;
                let bound = s.bounds[i];
                let term = &mut s.nodes[node as usize].terms[i];
                // Issuing starts above the bound, after a write of a new one (next > limit).
                let loaded = Term {
                    revision: 0,
                    next: bound + 1,
                    limit: bound,
                    writing: false,
                    loaded: true,
                };
                match term.as_mut() {
                    Some(t) if self.load_after_create && !t.loaded => {
                        *t = Term {
                            revision: t.revision,
                            ..loaded
                        }
                    }
                    None if !self.load_after_create => *term = Some(loaded),
                    _ => return None,
                }
            }
            Action::Extend { node, ns } => {
                let term = s.nodes[node as usize].terms[ns as usize].as_mut()?;
                term.writing = true;
                let write = Write {
                    node,
                    ns,
                    revision: term.revision,
                    bound: term.limit + self.reservation,
                };
                s.in_flight.push(write);
                s.in_flight.sort();
            }
            Action::Apply(i) => {
                let write = s.in_flight.remove(i as usize);
                let ns = write.ns as usize;
                let current = s.keys[ns]
                    .as_ref()
                    .is_some_and(|k| k.revision == write.revision);
                let applied = current || !self.guarded_writes;
                if applied {
                    s.bounds[ns] = write.bound;
                }
                let term = &mut s.nodes[write.node as usize].terms[ns];
                if let Some(t) = term.as_mut().filter(|t| t.revision == write.revision) {
                    if applied {
                        t.limit = write.bound;
                        t.writing = false;
                    } else {
                        // The condition failed: the term ends.
                        *term = None;
                    }
                }
            }
            Action::Serve { node, ns } => {
                let term = s.nodes[node as usize].terms[ns as usize].as_mut()?;
                let ts = term.next;
                term.next += 1;
                // Ghosts: a term other than the namespace's first, and one that began after a
                // hand-off (terms are numbered per namespace, from 1).
                s.served_by_successor |= term.revision > 1;
                s.served_after_handoff |= term.revision > 1 && s.handoffs > 0;
                let i = ns as usize;
                if ts <= s.issued[i] {
                    s.regression = true;
                }
                s.issued[i] = s.issued[i].max(ts);
            }
            Action::HandOff { node, ns } if !self.stop_before_delete => {
                // The mutant: the key is deleted while the term goes on.
                let revision = s.nodes[node as usize].terms[ns as usize].as_ref()?.revision;
                s.handoffs += 1;
                if s.keys[ns as usize]
                    .as_ref()
                    .is_some_and(|k| k.revision == revision)
                {
                    s.keys[ns as usize] = None;
                }
            }
            Action::HandOff { node, ns } | Action::StepDown { node, ns } => {
                // Stop serving first ...
                let term = s.nodes[node as usize].terms[ns as usize].take()?;
                s.handoffs += 1;
                // ... then delete the key if it is still this term's.
                if matches!(action, Action::HandOff { .. })
                    && s.keys[ns as usize]
                        .as_ref()
                        .is_some_and(|k| k.revision == term.revision)
                {
                    s.keys[ns as usize] = None;
                }
            }
            Action::Release { node, ns } => {
                let (id, _) = s.nodes[node as usize].lease?;
                let key = s.keys[ns as usize].as_ref()?;
                if key.owner != node || key.lease != id {
                    return None;
                }
                s.keys[ns as usize] = None;
            }
            Action::Crash(node) => {
                s.crashes += 1;
                let n = &mut s.nodes[node as usize];
                n.up = false;
                n.lease = None;
                n.terms.iter_mut().for_each(|t| *t = None);
            }
            Action::Restart(node) => s.nodes[node as usize].up = true,
        }
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("one server per namespace", |model: &Protocol, state| {
                (0..model.namespaces).all(|ns| {
                    (0..model.nodes)
                        .filter(|node| model.can_serve(state, *node, ns))
                        .count()
                        <= 1
                })
            }),
            Property::always("timestamps only rise", |_, state: &State| !state.regression),
            // Not vacuous: leadership does move, and the new leader serves.
            Property::sometimes("a namespace served by a later term", |_, state: &State| {
                state.served_by_successor
            }),
            Property::sometimes(
                "served by a new term after a hand-off",
                |_, state: &State| state.served_after_handoff,
            ),
        ]
    }
}
