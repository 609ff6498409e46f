//! A leader per namespace (`cluster.leader_mode = "per-namespace"`): namespaces are hashed
//! into `cluster.shards` shards, and each shard is led by one node with a term of its own.
//!
//! The design and its safety argument are in docs/cluster.md ("Leader per namespace"), and
//! the hand-off protocol is model-checked in `model/`. In short, per shard this is today's
//! single leader: one etcd key, `<prefix>lead/shards/<k>`, created only if absent and attached
//! to the node's lease; bound writes of the shard's namespaces conditional on that key's
//! create revision; a lease deadline checked on every request. What the shards share is the
//! node's one lease (one keep-alive stream whatever the shard count).
//!
//! Keys under `<prefix>lead/`, all but `layout` attached to the writing node's lease:
//! * `layout`: the shard count, written once; a node configured with another count refuses to
//!   lead (the hash of a namespace to its shard would differ between nodes);
//! * `nodes/<node id>`: this node is live and wants shards; its advertised URL;
//! * `shards/<k>`: the leader of shard `k` (node id and URL);
//! * `assign/<k>`: an operator's takeover: shard `k` should be led by that node.
//!
//! Every node computes the same assignment from the live nodes and the takeovers
//! ([`assignment`]) and acts only on its own part: it takes a free shard assigned to it, and
//! hands off a shard it leads that is assigned elsewhere: it stops serving the shard *first*,
//! then deletes the key if it still has its term's revision. The assignment decides only who
//! *should* lead; safety never depends on it.
//!
//! One watch on `<prefix>lead/` wakes the loop on any change; each pass re-reads the keys (a
//! few dozen), so a lost event costs one tick of `renew_interval_ms`, never correctness.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, WatchOptions, WatchStream,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use super::lease::{unrevoke, with_timeout, Exit, Failure, Session, TermFactory, Unrevoked};
use super::{shard_of, Leadership, Role, ShardView, Takeover};
use crate::config::ClusterSettings;
use crate::storage::etcd::{EtcdStore, LeaderGuard};
use crate::storage::BoundStore;
use crate::term_gate::{LeaseClock, TermGate};

/// The value of a `shards/<k>` and `nodes/<id>` key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Holder {
    node: String,
    url: String,
}

/// What a pass reads from etcd.
#[derive(Debug, Default)]
struct Observed {
    /// Live nodes: id → URL.
    nodes: BTreeMap<String, String>,
    /// Per shard: its leader and the create revision of its key.
    holders: Vec<Option<(Holder, i64)>>,
    /// Operators' takeovers: shard → node id.
    overrides: BTreeMap<usize, String>,
}

fn lead_prefix(settings: &ClusterSettings) -> String {
    format!("{}lead/", settings.etcd_prefix)
}

fn shard_key(settings: &ClusterSettings, k: usize) -> String {
    format!("{}lead/shards/{k}", settings.etcd_prefix)
}

/// Ok if no node leads a shard under `settings`' prefix: the single leader checks this after
/// it wins its election (see the module docs of [`super::election`]).
pub(crate) async fn no_shard_leaders(
    ops: &Client,
    settings: &ClusterSettings,
    timeout: Duration,
) -> Result<(), Failure> {
    let prefix = format!("{}lead/shards/", settings.etcd_prefix);
    let response = with_timeout(
        timeout,
        "get",
        ops.clone().get(
            prefix,
            Some(GetOptions::new().with_prefix().with_count_only()),
        ),
    )
    .await?;
    if response.count() > 0 {
        tracing::error!(
            shards = response.count(),
            "cluster: nodes in leader_mode \"per-namespace\" lead shards under this etcd prefix; this node (single-leader) refuses to lead. Every node of a cluster must use the same leader_mode"
        );
        return Err("another leader mode holds etcd".into());
    }
    Ok(())
}

/// Which node should lead each shard: an operator's takeover if its node is live, else a
/// balanced rendezvous hash. Each shard ranks the nodes by a hash of (shard, node) and takes
/// the first with room, so that shares differ by at most one and a change of membership moves
/// few shards. Takeovers are laid on top: a takeover moves the shards it names and no others. Every node computes the same answer from
/// the same keys.
fn assignment(
    shards: usize,
    nodes: &BTreeMap<String, String>,
    overrides: &BTreeMap<usize, String>,
) -> Vec<Option<String>> {
    let mut out: Vec<Option<String>> = vec![None; shards];
    if nodes.is_empty() {
        return out;
    }
    // Every node leads `floor` shards, and `extra` of them one more.
    let floor = shards / nodes.len();
    let mut extra = shards % nodes.len();
    let mut load: BTreeMap<&str, usize> = nodes.keys().map(|n| (n.as_str(), 0)).collect();
    for (k, slot) in out.iter_mut().enumerate() {
        let mut ranked: Vec<&str> = nodes.keys().map(String::as_str).collect();
        ranked.sort_by_key(|n| std::cmp::Reverse(rank(k, n)));
        let pick = ranked
            .iter()
            .find(|n| load[**n] < floor)
            .or_else(|| {
                (extra > 0)
                    .then(|| ranked.iter().find(|n| load[**n] == floor))
                    .flatten()
            })
            .copied()
            .expect("room for every shard");
        if load[pick] == floor {
            extra -= 1;
        }
        *load.get_mut(pick).expect("live") += 1;
        *slot = Some(pick.to_string());
    }
    // Takeovers on top, so that they move the shards they name and no others.
    for (&k, node) in overrides {
        if k < shards && nodes.contains_key(node) {
            out[k] = Some(node.clone());
        }
    }
    out
}

/// The rendezvous weight of `node` for shard `k` (FNV-1a of both, spelled out so that every
/// node and version agrees).
fn rank(k: usize, node: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in (k as u64).to_le_bytes().iter().chain(node.as_bytes()) {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // FNV's last bytes barely reach the high bits: mix them (splitmix64's finaliser).
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// Runs candidacies until `shutdown` turns true (see [`super::election::run`]).
pub async fn run(
    leadership: Arc<Leadership>,
    settings: ClusterSettings,
    factory: TermFactory,
    mut shutdown: watch::Receiver<bool>,
) {
    let (door, mut takeovers) = mpsc::channel(64);
    leadership.accept_takeovers(door);
    let pause = Duration::from_millis(settings.renew_interval_ms.min(1_000));
    let mut unrevoked = Unrevoked::default();
    loop {
        if *shutdown.borrow() {
            leadership.step_down(Role::Follower, "shutdown");
            return;
        }
        let mut node = Node {
            leadership: &leadership,
            settings: &settings,
            factory: &factory,
            terms: vec![None; leadership.shard_count()],
            releases: Vec::new(),
            waiting: Vec::new(),
        };
        let ended = node
            .candidacy(&mut shutdown, &mut unrevoked, &mut takeovers)
            .await;
        match ended {
            Ok(Exit::Shutdown) => return,
            Ok(Exit::Again) => {}
            Err(reason) => {
                tracing::warn!(node = %leadership.node_id(), %reason, "shards: candidacy ended; retrying");
                leadership.step_down(Role::NoQuorum, "etcd_error");
            }
        }
        // Between candidacies this node knows nothing current of the other leaders: answer
        // 503 (clients try the other nodes) rather than redirect to a leader it last saw.
        forget_views(&leadership);
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Without etcd, nothing known of other leaders can be trusted for redirects.
fn forget_views(leadership: &Leadership) {
    for k in 0..leadership.shard_count() {
        leadership.observe_shard(k, ShardView::default());
    }
}

/// One candidacy of this node: its lease, its terms, its pending work.
struct Node<'a> {
    leadership: &'a Arc<Leadership>,
    settings: &'a ClusterSettings,
    factory: &'a TermFactory,
    /// Per shard, the create revision of this node's key while it leads the shard.
    terms: Vec<Option<i64>>,
    /// Shards stepped down from whose key could not be deleted yet: (shard, revision).
    releases: Vec<(usize, i64)>,
    /// Operators' takeovers not yet complete, with their deadline.
    waiting: Vec<Takeover>,
}

impl Node<'_> {
    async fn candidacy(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
        unrevoked: &mut Unrevoked,
        takeovers: &mut mpsc::Receiver<Takeover>,
    ) -> Result<Exit, Failure> {
        let settings = self.settings;
        let leadership = self.leadership;
        let timeout = Duration::from_millis(settings.etcd_timeout_ms);
        let Session {
            ops,
            streams,
            lease_id,
            clock,
            mut renewer,
            ..
        } = Session::open(leadership, settings, unrevoked).await?;
        if let Err(reason) = self.check_layout(&ops, timeout).await {
            unrevoke(unrevoked, &ops, lease_id, timeout).await;
            return Err(reason);
        }
        let me = Holder {
            node: leadership.node_id().to_string(),
            url: leadership.advertise_url().to_string(),
        };
        // Join: `nodes/<id>`, only if no other process holds this id. One that does is an
        // earlier run of this node killed outright (its keys expire with its lease within a
        // TTL), or another node misconfigured with the same `cluster.node_id`: taking over its
        // keys could let two processes serve one shard, so wait for them to go instead.
        if !self.join(&ops, &me, lease_id, timeout).await? {
            unrevoke(unrevoked, &ops, lease_id, timeout).await;
            tracing::warn!(node = %me.node, "shards: node id in use under this etcd prefix (an earlier run of this node, or another node with the same cluster.node_id); waiting for its lease to expire");
            return Ok(Exit::Again);
        }
        tracing::info!(node = %me.node, lease = format_args!("{lease_id:x}"), shards = leadership.shard_count(), "shards: joined; leading the shards assigned to this node");
        leadership.set_idle_role(Role::Follower);

        let mut changes = self.watch(&streams).await;
        let mut tick = tokio::time::interval(Duration::from_millis(settings.renew_interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let exit = loop {
            tokio::select! {
                _ = &mut renewer.0 => {
                    leadership.step_down(Role::NoQuorum, "lease_lost");
                    self.terms.iter_mut().for_each(|t| *t = None);
                    break Exit::Again;
                }
                _ = shutdown.changed() => {
                    // Stop serving every shard first; revoking the lease then deletes this
                    // node's keys at once, and the other nodes take the shards.
                    leadership.step_down(Role::Follower, "shutdown");
                    break Exit::Shutdown;
                }
                changed = next_change(&mut changes) => {
                    if !changed {
                        changes = None;
                    }
                    self.pass(&ops, &me, lease_id, &clock, timeout).await;
                }
                request = takeovers.recv() => {
                    if let Some(request) = request {
                        self.request_takeover(&ops, request, lease_id, timeout).await;
                        self.pass(&ops, &me, lease_id, &clock, timeout).await;
                    }
                }
                _ = tick.tick() => {
                    if changes.is_none() {
                        changes = self.watch(&streams).await;
                    }
                    // The revoke at the start can fail while etcd is just coming back; the
                    // shard keys of an ended candidacy left behind would keep those shards
                    // from anyone, this node included, for a TTL.
                    unrevoked.revoke_ended(&ops, Some(lease_id), timeout).await;
                    leadership.metrics().cluster.lease_remaining.set(clock.remaining().as_secs_f64());
                    self.pass(&ops, &me, lease_id, &clock, timeout).await;
                }
            }
        };
        // Answer takeovers still waiting with what this node leads (nothing, now).
        for t in self.waiting.drain(..) {
            let _ = t.reply.send(Vec::new());
        }
        unrevoke(unrevoked, &ops, lease_id, timeout).await;
        Ok(exit)
    }

    /// Creates `nodes/<id>` on this node's lease if no key of that name exists; whether it did.
    async fn join(
        &self,
        ops: &Client,
        me: &Holder,
        lease_id: i64,
        timeout: Duration,
    ) -> Result<bool, Failure> {
        let node_key = format!("{}nodes/{}", lead_prefix(self.settings), me.node);
        let join = Txn::new()
            .when([Compare::create_revision(
                node_key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then([TxnOp::put(
                node_key,
                serde_json::to_vec(me).expect("json"),
                Some(PutOptions::new().with_lease(lease_id)),
            )]);
        let joined = with_timeout(timeout, "transaction", ops.clone().txn(join)).await?;
        Ok(joined.succeeded())
    }

    /// Writes the shard count on first use; refuses a different one.
    async fn check_layout(&self, ops: &Client, timeout: Duration) -> Result<(), Failure> {
        let key = format!("{}layout", lead_prefix(self.settings));
        let count = self.leadership.shard_count().to_string();
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), count.clone(), None)])
            .or_else([TxnOp::get(key, None)]);
        let response = with_timeout(timeout, "transaction", ops.clone().txn(txn)).await?;
        if response.succeeded() {
            return Ok(());
        }
        let stored = response.op_responses().into_iter().find_map(|r| match r {
            etcd_client::TxnOpResponse::Get(get) => get
                .kvs()
                .first()
                .and_then(|kv| kv.value_str().ok().map(str::to_string)),
            _ => None,
        });
        match stored {
            Some(stored) if stored == count => Ok(()),
            stored => {
                tracing::error!(configured = %count, stored = ?stored, "shards: this cluster's etcd prefix was created with another shard count; this node refuses to lead. Set cluster.shards to the stored count");
                Err(format!(
                    "cluster.shards = {count} but the cluster under this etcd prefix has {}",
                    stored.unwrap_or_else(|| "an unreadable count".into())
                ))
            }
        }
    }

    async fn watch(&self, streams: &Client) -> Option<WatchStream> {
        let prefix = lead_prefix(self.settings);
        let timeout = Duration::from_millis(self.settings.etcd_timeout_ms);
        let watched = tokio::time::timeout(
            timeout,
            streams
                .clone()
                .watch(prefix, Some(WatchOptions::new().with_prefix())),
        )
        .await;
        match watched {
            Ok(Ok(stream)) => Some(stream),
            _ => None,
        }
    }

    /// Reads the keys, then takes, hands off or forgets shards as the assignment says.
    async fn pass(
        &mut self,
        ops: &Client,
        me: &Holder,
        lease_id: i64,
        clock: &Arc<LeaseClock>,
        timeout: Duration,
    ) {
        let leadership = self.leadership;
        let shards = leadership.shard_count();
        // Keys of stepped-down terms first: until they go, nobody can take those shards.
        let releases = std::mem::take(&mut self.releases);
        for (k, revision) in releases {
            if !self.release(ops, k, revision, timeout).await {
                self.releases.push((k, revision));
            }
        }
        let observed = match self.observe(ops, timeout).await {
            Ok(o) => o,
            Err(reason) => {
                // Serve what this node leads until its lease clock says otherwise.
                tracing::debug!(%reason, "shards: reading the leadership keys failed");
                return;
            }
        };
        let mut nodes = observed.nodes.clone();
        if !nodes.contains_key(&me.node) {
            // This node's key is gone while its lease lives (deleted by hand): without it the
            // others would assign it nothing, so write it again, and meanwhile count this node
            // in (else this pass would hand every shard off).
            if let Err(reason) = self.join(ops, me, lease_id, timeout).await {
                tracing::debug!(%reason, "shards: rejoining failed");
            }
            nodes.insert(me.node.clone(), me.url.clone());
        }
        let desired = assignment(shards, &nodes, &observed.overrides);
        let mut acquire = Vec::new();
        for (k, holder) in observed.holders.iter().enumerate() {
            if let Some(revision) = self.terms[k] {
                let still_mine = holder
                    .as_ref()
                    .is_some_and(|(h, rev)| h.node == me.node && *rev == revision);
                let registry_serving = leadership
                    .registry_for_shard(k)
                    .is_some_and(|r| r.is_serving());
                if !still_mine {
                    leadership.step_down_shard(k, "key_lost");
                    self.terms[k] = None;
                } else if !registry_serving {
                    // A bound write failed or the lease ran out: end the term; a new one
                    // (here or elsewhere) reloads the bounds.
                    leadership.step_down_shard(k, "term_ended");
                    self.terms[k] = None;
                    self.release_or_remember(ops, k, revision, timeout).await;
                } else if desired[k].as_deref().is_some_and(|d| d != me.node) {
                    // A planned move: stop serving first, then let the assignee in.
                    leadership.step_down_shard(k, "handoff");
                    leadership
                        .metrics()
                        .cluster
                        .handoffs
                        .with_label_values(&["out"])
                        .inc();
                    self.terms[k] = None;
                    self.release_or_remember(ops, k, revision, timeout).await;
                }
                continue;
            }
            match holder {
                Some((h, revision)) => leadership.observe_shard(
                    k,
                    ShardView {
                        leader_node: Some(Arc::from(h.node.as_str())),
                        leader_url: Some(Arc::from(h.url.as_str())),
                        revision: *revision,
                        since_unix_ms: 0,
                    },
                ),
                None => {
                    leadership.observe_shard(k, ShardView::default());
                    if desired[k].as_deref() == Some(me.node.as_str())
                        && !self.releases.iter().any(|(r, _)| *r == k)
                    {
                        acquire.push(k);
                    }
                }
            }
        }
        if !acquire.is_empty() {
            self.acquire(ops, me, lease_id, clock, &acquire, timeout)
                .await;
        }
        self.answer_takeovers();
    }

    async fn observe(&self, ops: &Client, timeout: Duration) -> Result<Observed, Failure> {
        let prefix = lead_prefix(self.settings);
        let response = with_timeout(
            timeout,
            "get",
            ops.clone()
                .get(prefix.clone(), Some(GetOptions::new().with_prefix())),
        )
        .await?;
        let shards = self.leadership.shard_count();
        let mut observed = Observed {
            holders: vec![None; shards],
            ..Observed::default()
        };
        for kv in response.kvs() {
            let Some(rest) = kv
                .key_str()
                .ok()
                .and_then(|k| k.strip_prefix(prefix.as_str()))
            else {
                continue;
            };
            if let Some(id) = rest.strip_prefix("nodes/") {
                if let Ok(h) = serde_json::from_slice::<Holder>(kv.value()) {
                    observed.nodes.insert(id.to_string(), h.url);
                }
            } else if let Some(k) = rest.strip_prefix("shards/") {
                let (Ok(k), Ok(h)) = (
                    k.parse::<usize>(),
                    serde_json::from_slice::<Holder>(kv.value()),
                ) else {
                    continue;
                };
                if k < shards {
                    observed.holders[k] = Some((h, kv.create_revision()));
                }
            } else if let Some(k) = rest.strip_prefix("assign/") {
                if let (Ok(k), Ok(node)) = (k.parse::<usize>(), kv.value_str()) {
                    observed.overrides.insert(k, node.to_string());
                }
            }
        }
        Ok(observed)
    }

    /// Takes the free shards `ks`: for each, creates its key if absent (and only while no
    /// single leader campaigns under this prefix), then loads the shard's bounds, read after
    /// the key exists, so above anything an earlier term can still write; all in parallel.
    async fn acquire(
        &mut self,
        ops: &Client,
        me: &Holder,
        lease_id: i64,
        clock: &Arc<LeaseClock>,
        ks: &[usize],
        timeout: Duration,
    ) {
        let mut tasks = tokio::task::JoinSet::new();
        let shards = self.leadership.shard_count();
        let election = format!("{}election", self.settings.etcd_prefix);
        for &k in ks {
            let (ops, clock, factory) = (ops.clone(), clock.clone(), self.factory.clone());
            let key = shard_key(self.settings, k);
            let value = serde_json::to_vec(me).expect("json");
            let election = election.clone();
            let prefix = self.settings.etcd_prefix.clone();
            let endpoints = self.settings.endpoints();
            tasks.spawn(async move {
                let started = Instant::now();
                let txn = Txn::new()
                    .when([
                        Compare::create_revision(key.clone(), CompareOp::Equal, 0),
                        Compare::create_revision(election, CompareOp::Equal, 0).with_prefix(),
                    ])
                    .and_then([TxnOp::put(
                        key.clone(),
                        value,
                        Some(PutOptions::new().with_lease(lease_id)),
                    )]);
                let outcome = match with_timeout(timeout, "transaction", ops.clone().txn(txn)).await
                {
                    Err(reason) => Taking::Failed(reason),
                    Ok(response) if !response.succeeded() => Taking::Lost,
                    Ok(response) => match response.header().map(|h| h.revision()) {
                        None => Taking::Failed("etcd transaction without a header".into()),
                        Some(revision) => {
                            let guard = LeaderGuard {
                                key: key.into_bytes(),
                                revision,
                            };
                            let store: Arc<dyn BoundStore> = Arc::new(
                                EtcdStore::from_client(ops, &prefix, &endpoints)
                                    .with_leader_guard(guard)
                                    .only(Arc::new(move |ns: &str| shard_of(ns, shards) == k)),
                            );
                            let loaded = tokio::time::timeout(
                                timeout * 2,
                                factory.load(store, TermGate::leased(clock)),
                            )
                            .await;
                            match loaded {
                                Ok(Ok(registry)) => Taking::Taken(revision, Box::new(registry)),
                                Ok(Err(e)) => Taking::NotLoaded(revision, e.to_string()),
                                Err(_) => Taking::NotLoaded(revision, "timed out".into()),
                            }
                        }
                    },
                };
                (k, outcome, started)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            let Ok((k, outcome, started)) = joined else {
                continue;
            };
            match outcome {
                Taking::Taken(revision, registry) => {
                    if !clock.is_valid() {
                        self.release_or_remember(ops, k, revision, timeout).await;
                        continue;
                    }
                    self.leadership
                        .install_shard(k, Arc::from(registry), revision);
                    self.terms[k] = Some(revision);
                    let metrics = &self.leadership.metrics().cluster;
                    metrics.handoffs.with_label_values(&["in"]).inc();
                    metrics
                        .takeover_latency
                        .observe(started.elapsed().as_secs_f64());
                    tracing::info!(node = %me.node, shard = k, revision, took_ms = started.elapsed().as_millis() as u64, "shards: leading the shard");
                }
                // Taken by another node first, or a single leader campaigns.
                Taking::Lost => {}
                Taking::Failed(reason) => {
                    tracing::warn!(shard = k, %reason, "shards: taking the shard failed");
                }
                Taking::NotLoaded(revision, reason) => {
                    tracing::warn!(shard = k, %reason, "shards: loading the shard's bounds failed; releasing it");
                    self.release_or_remember(ops, k, revision, timeout).await;
                }
            }
        }
    }

    async fn release_or_remember(
        &mut self,
        ops: &Client,
        k: usize,
        revision: i64,
        timeout: Duration,
    ) {
        if !self.release(ops, k, revision, timeout).await {
            self.releases.push((k, revision));
        }
    }

    /// Deletes shard `k`'s key if it is still this node's term (`revision`). Call only after
    /// the term stopped serving. Returns false if etcd could not be reached (retry).
    async fn release(&self, ops: &Client, k: usize, revision: i64, timeout: Duration) -> bool {
        let key = shard_key(self.settings, k);
        let txn = Txn::new()
            .when([Compare::create_revision(
                key.clone(),
                CompareOp::Equal,
                revision,
            )])
            .and_then([TxnOp::delete(key, None)]);
        match with_timeout(timeout, "transaction", ops.clone().txn(txn)).await {
            Ok(_) => true,
            Err(reason) => {
                tracing::warn!(shard = k, %reason, "shards: releasing the shard failed; retrying");
                false
            }
        }
    }

    /// Records an operator's takeover: `assign/<k>` = this node, on this node's lease (so it
    /// ends with this node's candidacy). The current leaders hand the shards off.
    async fn request_takeover(
        &mut self,
        ops: &Client,
        request: Takeover,
        lease_id: i64,
        timeout: Duration,
    ) {
        let prefix = lead_prefix(self.settings);
        let node = self.leadership.node_id().to_string();
        let puts: Vec<TxnOp> = request
            .shards
            .iter()
            .filter(|&&k| k < self.leadership.shard_count())
            .map(|k| {
                TxnOp::put(
                    format!("{prefix}assign/{k}"),
                    node.clone(),
                    Some(PutOptions::new().with_lease(lease_id)),
                )
            })
            .collect();
        // etcd allows 128 operations per transaction by default (`--max-txn-ops`).
        let mut written = Ok(());
        for chunk in puts.chunks(100) {
            let txn = Txn::new().and_then(chunk.to_vec());
            written = with_timeout(timeout, "transaction", ops.clone().txn(txn))
                .await
                .map(|_| ());
            if written.is_err() {
                break;
            }
        }
        match written {
            Ok(()) => {
                tracing::info!(node = %node, shards = ?request.shards, "shards: takeover requested");
                self.waiting.push(request);
            }
            Err(reason) => {
                tracing::warn!(%reason, "shards: recording a takeover failed");
                let _ = request.reply.send(self.leadership.led_shards());
            }
        }
    }

    /// Answers the takeovers whose shards this node now leads all of.
    fn answer_takeovers(&mut self) {
        let led = self.leadership.led_shards();
        let (done, waiting): (Vec<Takeover>, Vec<Takeover>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|t| t.shards.iter().all(|k| led.contains(k)) || t.reply.is_closed());
        self.waiting = waiting;
        for t in done {
            let _ = t.reply.send(led.clone());
        }
    }
}

/// How taking one shard ended.
enum Taking {
    /// Its key is this node's, created at the revision, and its bounds are loaded.
    Taken(i64, Box<crate::namespaces::Namespaces>),
    /// The key exists: another node leads it (or a single leader campaigns).
    Lost,
    /// etcd did not answer the transaction (the key may exist: it dies with the lease).
    Failed(String),
    /// The key is this node's, but the bounds could not be loaded: release it.
    NotLoaded(i64, String),
}

/// Whether the watch reported a change (true) or broke (false); pending while there is none.
async fn next_change(changes: &mut Option<WatchStream>) -> bool {
    match changes.as_mut() {
        Some(stream) => matches!(stream.message().await, Ok(Some(_))),
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(ids: &[&str]) -> BTreeMap<String, String> {
        ids.iter()
            .map(|id| (id.to_string(), format!("http://{id}")))
            .collect()
    }

    fn shares(a: &[Option<String>]) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for n in a.iter().flatten() {
            *out.entry(n.clone()).or_default() += 1;
        }
        out
    }

    #[test]
    fn shards_are_spread_evenly_and_move_little_when_a_node_joins() {
        let three = assignment(64, &nodes(&["a", "b", "c"]), &BTreeMap::new());
        let s = shares(&three);
        assert_eq!(s.values().sum::<usize>(), 64);
        assert!(s.values().all(|&n| (21..=22).contains(&n)), "{s:?}");
        let four = assignment(64, &nodes(&["a", "b", "c", "d"]), &BTreeMap::new());
        let s4 = shares(&four);
        assert!(s4.values().all(|&n| n == 16), "{s4:?}");
        let moved = three.iter().zip(&four).filter(|(x, y)| x != y).count();
        // The 16 shards the new node takes, and a few more where room runs out in order.
        assert!((16..=32).contains(&moved), "moved {moved}");
        let two = assignment(64, &nodes(&["a", "b"]), &BTreeMap::new());
        assert!(shares(&two).values().all(|&n| n == 32));
    }

    #[test]
    fn a_takeover_wins_only_while_its_node_is_live() {
        let overrides: BTreeMap<usize, String> = [(5, "c".to_string()), (6, "gone".into())].into();
        let a = assignment(8, &nodes(&["a", "b", "c"]), &overrides);
        assert_eq!(a[5].as_deref(), Some("c"));
        // Only the shard taken over moves.
        let before = assignment(8, &nodes(&["a", "b", "c"]), &BTreeMap::new());
        let moved: Vec<usize> = (0..8).filter(|&k| a[k] != before[k]).collect();
        assert!(moved.is_empty() || moved == [5], "{moved:?}");
        assert_eq!(a[5].as_deref(), Some("c"));
        assert!(a[6].is_some() && a[6].as_deref() != Some("gone"));
        assert_eq!(assignment(8, &BTreeMap::new(), &overrides), vec![None; 8]);
    }

    #[test]
    fn every_node_computes_the_same_assignment() {
        let a = assignment(64, &nodes(&["n1", "n2", "n3"]), &BTreeMap::new());
        let b = assignment(64, &nodes(&["n3", "n1", "n2"]), &BTreeMap::new());
        assert_eq!(a, b);
    }
}
