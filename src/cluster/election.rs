//! The election loop of cluster mode: campaign through etcd, lead while the lease lives, step
//! down before it can have expired.
//!
//! One *candidacy* is one etcd lease:
//! 1. grant a lease (TTL `cluster.lease_ttl_secs`) and renew it every `renew_interval_ms` in a
//!    task of its own; each acknowledged renewal moves the [`LeaseClock`] deadline to the
//!    renewal's *send* time plus the TTL, less `max_clock_drift_ppm` and `safety_margin_ms`;
//! 2. campaign on the election `<prefix>election` with this node's advertised URL as the value
//!    (etcd's election API: the candidate key with the lowest creation revision leads); while
//!    waiting, poll the current leader so that non-leaders can redirect to it;
//! 3. on winning, load every bound from etcd into a new registry whose services serve only
//!    while the lease clock is valid ([`TermGate::leased`]) and whose bound writes are etcd
//!    transactions guarded by the election key ([`EtcdStore::with_leader_guard`]);
//! 4. lead until the lease is lost (renewals stop being acknowledged or etcd says it expired),
//!    the election key changes hands, a namespace fail-stops, or the server shuts down; then
//!    step down *first* and revoke the lease *second*, so that the next leader can only start
//!    after this one stopped.
//!
//! A lease whose revoke did not reach etcd (etcd down, or the candidacy ended on an error) is
//! remembered and revoked at the start of the next candidacy, before a new lease is granted.
//! Otherwise its election key outlives etcd's return by a whole TTL and more (etcd extends
//! every lease when it restarts) and blocks the election meanwhile. Revoking it is safe: the
//! candidacy that held it has ended and stepped down, so nothing serves under it.
//!
//! Anything unexpected ends the candidacy; the loop starts a new one (new lease, new term).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use etcd_client::{Client, ConnectOptions, LeaseKeepAliveStream, LeaseKeeper};
use tokio::sync::watch;

use super::{Leadership, Role};
use crate::config::ClusterSettings;
use crate::lock::LockLimits;
use crate::metrics::Metrics;
use crate::namespaces::Namespaces;
use crate::storage::etcd::{EtcdStore, LeaderGuard};
use crate::storage::{BoundStore, NamespaceRecord, StoreError};
use crate::term_gate::{LeaseClock, TermGate};
use crate::timestamp::AllocatorLimits;

/// How to build a term's namespace registry.
#[derive(Clone)]
pub struct TermFactory {
    pub limits: AllocatorLimits,
    pub lock_limits: LockLimits,
    pub max_namespaces: usize,
    /// The count the cap applies to, shared by every registry this node builds: a node holds at
    /// most `max_namespaces` namespaces whatever the number of shards it leads.
    pub census: Arc<std::sync::atomic::AtomicUsize>,
    pub metrics: Metrics,
}

impl TermFactory {
    pub(super) async fn load(
        &self,
        store: Arc<dyn BoundStore>,
        gate: Arc<TermGate>,
    ) -> Result<Namespaces, StoreError> {
        Namespaces::load_term(
            store,
            self.limits,
            self.lock_limits,
            (self.max_namespaces, self.census.clone()),
            self.metrics.clone(),
            gate,
        )
        .await
    }
}

/// How a candidacy ended.
pub(super) enum Exit {
    /// Start a new candidacy (after a short pause).
    Again,
    /// The server is shutting down.
    Shutdown,
}

pub(super) type Failure = String;

pub(super) fn etcd_err(what: &str) -> impl Fn(etcd_client::Error) -> Failure + '_ {
    move |e| format!("etcd {what}: {e}")
}

/// Runs candidacies until `shutdown` turns true. Never returns an error: etcd trouble ends a
/// candidacy, which is retried.
pub async fn run(
    leadership: Arc<Leadership>,
    settings: ClusterSettings,
    factory: TermFactory,
    mut shutdown: watch::Receiver<bool>,
) {
    let pause = Duration::from_millis(settings.renew_interval_ms.min(1_000));
    let mut unrevoked = Unrevoked::default();
    loop {
        if *shutdown.borrow() {
            leadership.step_down(Role::Follower, "shutdown");
            return;
        }
        let ended = candidacy(
            &leadership,
            &settings,
            &factory,
            &mut shutdown,
            &mut unrevoked,
        )
        .await;
        match ended {
            Ok(Exit::Shutdown) => return,
            Ok(Exit::Again) => {}
            Err(reason) => {
                tracing::warn!(node = %leadership.node_id(), %reason, "election: candidacy ended; retrying");
                leadership.step_down(Role::NoQuorum, "etcd_error");
                leadership.observe_leader(Role::NoQuorum, None);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// This node's leases of ended candidacies that may still exist in etcd, oldest first.
#[derive(Default)]
pub(super) struct Unrevoked(Vec<i64>);

impl Unrevoked {
    /// Leases older than this many candidacies have expired by themselves long ago.
    const KEPT: usize = 8;

    pub(super) fn add(&mut self, lease_id: i64) {
        if self.0.len() == Self::KEPT {
            self.0.remove(0);
        }
        self.0.push(lease_id);
    }

    fn remove(&mut self, lease_id: i64) {
        self.0.retain(|l| *l != lease_id);
    }

    /// Revokes every remembered lease but `current` that etcd still knows; keeps those it
    /// could not reach.
    pub(super) async fn revoke_ended(
        &mut self,
        ops: &Client,
        current: Option<i64>,
        timeout: Duration,
    ) {
        let mut kept = Vec::new();
        for lease_id in std::mem::take(&mut self.0) {
            if Some(lease_id) == current || !revoke(ops, lease_id, timeout).await {
                kept.push(lease_id);
            }
        }
        self.0 = kept;
    }
}

/// Aborts a spawned task when dropped.
pub(super) struct Task(pub(super) tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn connect_options(settings: &ClusterSettings) -> ConnectOptions {
    let timeout = Duration::from_millis(settings.etcd_timeout_ms);
    ConnectOptions::new()
        .with_connect_timeout(timeout)
        .with_keep_alive(timeout, timeout)
        .with_keep_alive_while_idle(true)
        .with_require_leader(true)
}

/// How long after sending a renewal that etcd acknowledged with `ttl_secs` this node may serve.
fn serving_window(settings: &ClusterSettings, ttl_secs: i64) -> Duration {
    ClusterSettings {
        lease_ttl_secs: ttl_secs.max(0) as u64,
        ..settings.clone()
    }
    .serving_window()
}

pub(super) async fn with_timeout<T>(
    limit: Duration,
    what: &str,
    f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r.map_err(etcd_err(what)),
        Err(_) => Err(format!("etcd {what}: timed out after {limit:?}")),
    }
}

/// What every candidacy starts with, in either leader mode: two etcd clients and a lease
/// renewed in a task of its own, whose acknowledgements move the lease clock.
pub(super) struct Session {
    /// For requests, each bounded by `etcd_timeout_ms`.
    pub ops: Client,
    /// For streams (keep-alive, campaign, watch), which last as long as the candidacy: no
    /// request timeout (HTTP/2 keep-alive pings still detect a dead connection).
    pub streams: Client,
    pub lease_id: i64,
    /// The TTL etcd granted, in seconds.
    pub ttl: i64,
    pub clock: Arc<LeaseClock>,
    /// Ends when the lease is lost.
    pub renewer: Task,
}

impl Session {
    /// Connects, revokes the leases of earlier candidacies still known to etcd (their keys
    /// would block this one's), grants a lease and starts renewing it.
    pub(super) async fn open(
        leadership: &Leadership,
        settings: &ClusterSettings,
        unrevoked: &mut Unrevoked,
    ) -> Result<Session, Failure> {
        let endpoints = settings.endpoints();
        let timeout = Duration::from_millis(settings.etcd_timeout_ms);
        let options = connect_options(settings);
        let ops = with_timeout(
            timeout * 2,
            "connect",
            Client::connect(&endpoints, Some(options.clone().with_timeout(timeout))),
        )
        .await?;
        let streams = with_timeout(
            timeout * 2,
            "connect",
            Client::connect(&endpoints, Some(options)),
        )
        .await?;
        unrevoked.revoke_ended(&ops, None, timeout).await;

        let clock = LeaseClock::expired();
        let sent = Instant::now();
        let grant = with_timeout(
            timeout,
            "lease grant",
            ops.clone()
                .lease_grant(settings.lease_ttl_secs as i64, None),
        )
        .await?;
        let lease_id = grant.id();
        // Until revoked: an error return leaves it for the next candidacy to revoke.
        unrevoked.add(lease_id);
        clock.extend_to(sent + serving_window(settings, grant.ttl()));
        let (keeper, stream) = with_timeout(
            timeout,
            "lease keep-alive",
            streams.clone().lease_keep_alive(lease_id),
        )
        .await?;
        let renewer = Task(tokio::spawn(renew_lease(
            streams.clone(),
            lease_id,
            keeper,
            stream,
            clock.clone(),
            settings.clone(),
            leadership.metrics().clone(),
        )));
        Ok(Session {
            ops,
            streams,
            lease_id,
            ttl: grant.ttl(),
            clock,
            renewer,
        })
    }
}

async fn candidacy(
    leadership: &Arc<Leadership>,
    settings: &ClusterSettings,
    factory: &TermFactory,
    shutdown: &mut watch::Receiver<bool>,
    unrevoked: &mut Unrevoked,
) -> Result<Exit, Failure> {
    let endpoints = settings.endpoints();
    let timeout = Duration::from_millis(settings.etcd_timeout_ms);
    let election = format!("{}election", settings.etcd_prefix);
    let Session {
        ops,
        streams: campaigner,
        lease_id,
        ttl,
        clock,
        mut renewer,
    } = Session::open(leadership, settings, unrevoked).await?;
    tracing::info!(node = %leadership.node_id(), lease = format_args!("{lease_id:x}"), ttl, "election: campaigning");

    // Campaign, and meanwhile tell clients who leads.
    let mut campaign_client = campaigner.clone();
    let campaign = campaign_client.campaign(
        election.as_bytes().to_vec(),
        leadership.advertise_url().as_bytes().to_vec(),
        lease_id,
    );
    tokio::pin!(campaign);
    let mut poll = tokio::time::interval(Duration::from_millis(settings.renew_interval_ms));
    let won = loop {
        tokio::select! {
            result = &mut campaign => {
                let mut response = result.map_err(etcd_err("campaign"))?;
                break response
                    .take_leader()
                    .ok_or_else(|| "etcd campaign returned no leader key".to_string())?;
            }
            _ = poll.tick() => {
                observe_leader(leadership, &ops, &election).await;
                // The revoke above can fail while etcd is just coming back; an ended
                // candidacy's key left behind would hold this campaign for a TTL.
                unrevoked.revoke_ended(&ops, Some(lease_id), timeout).await;
            }
            _ = &mut renewer.0 => return Err("lease lost while campaigning".into()),
            _ = shutdown.changed() => {
                unrevoke(unrevoked, &ops, lease_id, timeout).await;
                return Ok(Exit::Shutdown);
            }
        }
    };

    // Won. A node in the other leader mode (a leader per namespace) may hold shards: this key
    // now blocks their acquisition, but shards taken before it still serve, so refuse to lead
    // until they are gone (see `shards`: the two modes exclude each other this way).
    if let Err(reason) = super::shards::no_shard_leaders(&ops, settings, timeout).await {
        unrevoke(unrevoked, &ops, lease_id, timeout).await;
        return Err(reason);
    }
    // Load this term's registry from etcd, guarded by the election key.
    let started = Instant::now();
    let guard = LeaderGuard {
        key: won.key().to_vec(),
        revision: won.rev(),
    };
    let store: Arc<dyn BoundStore> = Arc::new(
        EtcdStore::from_client(ops.clone(), &settings.etcd_prefix, &endpoints)
            .with_leader_guard(guard.clone()),
    );
    let gate = TermGate::leased(clock.clone());
    let namespaces = tokio::select! {
        loaded = factory.load(store, gate) => loaded.map_err(|e| format!("loading bounds: {e}"))?,
        _ = &mut renewer.0 => return Err("lease lost while loading bounds".into()),
        _ = shutdown.changed() => {
            unrevoke(unrevoked, &ops, lease_id, timeout).await;
            return Ok(Exit::Shutdown);
        }
    };
    if !clock.is_valid() {
        unrevoke(unrevoked, &ops, lease_id, timeout).await;
        return Err("lease ran out while taking over".into());
    }
    let namespaces = Arc::new(namespaces);
    leadership.install(namespaces.clone());
    let metrics = leadership.metrics().cluster.clone();
    metrics
        .takeover_latency
        .observe(started.elapsed().as_secs_f64());
    tracing::info!(
        node = %leadership.node_id(),
        revision = won.rev(),
        namespaces = namespaces.names().len(),
        took_ms = started.elapsed().as_millis() as u64,
        "election: leading; bounds loaded from etcd"
    );

    let mut check = tokio::time::interval(Duration::from_millis(settings.renew_interval_ms));
    let exit = loop {
        tokio::select! {
            _ = &mut renewer.0 => {
                leadership.step_down(Role::NoQuorum, "lease_lost");
                break Exit::Again;
            }
            _ = check.tick() => {
                metrics.lease_remaining.set(clock.remaining().as_secs_f64());
                if !namespaces.is_serving() {
                    // A bound write failed and closed the term's gate (or the lease ran out
                    // between renewals): a new term, here or elsewhere, reloads the bounds.
                    leadership.step_down(Role::NoQuorum, "term_ended");
                    break Exit::Again;
                }
                match still_leader(&ops, &election, &guard, timeout).await {
                    Ok(true) => {}
                    Ok(false) => {
                        leadership.step_down(Role::NoQuorum, "key_lost");
                        break Exit::Again;
                    }
                    // Unreachable etcd is handled by the lease clock: serve until it runs out.
                    Err(reason) => tracing::debug!(%reason, "election: leader check failed"),
                }
            }
            _ = shutdown.changed() => {
                leadership.step_down(Role::Follower, "shutdown");
                break Exit::Shutdown;
            }
        }
    };
    // Stopped serving above; only now let the next leader in.
    unrevoke(unrevoked, &ops, lease_id, timeout).await;
    Ok(exit)
}

/// Whether the election's leader is still the key this node won with.
async fn still_leader(
    ops: &Client,
    election: &str,
    guard: &LeaderGuard,
    timeout: Duration,
) -> Result<bool, Failure> {
    let response = with_timeout(timeout, "leader", ops.clone().leader(election)).await?;
    Ok(response
        .kv()
        .is_some_and(|kv| kv.key() == guard.key && kv.create_revision() == guard.revision))
}

/// Publishes who leads, for redirects and readiness.
async fn observe_leader(leadership: &Leadership, ops: &Client, election: &str) {
    let timeout = Duration::from_secs(2);
    let observed = tokio::time::timeout(timeout, ops.clone().leader(election)).await;
    let (role, url) = match observed {
        Ok(Ok(response)) => {
            let url = response
                .kv()
                .and_then(|kv| kv.value_str().ok())
                .filter(|url| !url.is_empty() && *url != leadership.advertise_url())
                .map(Arc::<str>::from);
            (Role::Follower, url)
        }
        // etcd answers, but nobody campaigns yet.
        Ok(Err(e)) if e.to_string().contains("no leader") => (Role::Follower, None),
        Ok(Err(_)) | Err(_) => (Role::NoQuorum, None),
    };
    leadership.observe_leader(role, url);
}

/// Revokes this candidacy's lease, and forgets it once etcd has it no longer.
pub(super) async fn unrevoke(
    unrevoked: &mut Unrevoked,
    ops: &Client,
    lease_id: i64,
    timeout: Duration,
) {
    if revoke(ops, lease_id, timeout).await {
        unrevoked.remove(lease_id);
    }
}

/// Revokes the lease (deleting this node's election key) so that another node can lead at
/// once. Returns whether etcd no longer has it (revoked now, or expired before); if etcd
/// cannot be reached, the next candidacy tries again, and meanwhile the lease may expire.
async fn revoke(ops: &Client, lease_id: i64, timeout: Duration) -> bool {
    let lease = format!("{lease_id:x}");
    match tokio::time::timeout(timeout, ops.clone().lease_revoke(lease_id)).await {
        Ok(Ok(_)) => {
            tracing::info!(lease = %lease, "election: lease revoked");
            true
        }
        // etcd's ErrLeaseNotFound (the client does not re-export tonic's status codes).
        Ok(Err(etcd_client::Error::GRpcStatus(status)))
            if status.message().contains("requested lease not found") =>
        {
            tracing::debug!(lease = %lease, "election: lease already gone");
            true
        }
        Ok(Err(e)) => {
            tracing::warn!(lease = %lease, error = %e, "election: revoking the lease failed; retried with the next candidacy");
            false
        }
        Err(_) => {
            tracing::warn!(lease = %lease, "election: revoking the lease timed out; retried with the next candidacy");
            false
        }
    }
}

/// Keeps the lease alive and moves `clock` forward on every acknowledgement. Returns when the
/// lease is lost: etcd reports it expired, or no acknowledgement arrived before the clock ran
/// out.
async fn renew_lease(
    streams: Client,
    lease_id: i64,
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
    clock: Arc<LeaseClock>,
    settings: ClusterSettings,
    metrics: Metrics,
) {
    let timeout = Duration::from_millis(settings.etcd_timeout_ms);
    let mut channel: Option<(LeaseKeeper, LeaseKeepAliveStream)> = Some((keeper, stream));
    // Send times of renewals not yet acknowledged, oldest first. If etcd drops one, later
    // acknowledgements are matched with older send times: the deadline only errs early.
    let mut in_flight: VecDeque<Instant> = VecDeque::new();
    let mut last_ack = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(settings.renew_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let deadline = tokio::time::Instant::from_std(clock.deadline());
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                if !clock.is_valid() {
                    tracing::warn!(lease = format_args!("{lease_id:x}"), since_last_renewal_ms = last_ack.elapsed().as_millis() as u64, "election: lease not renewed in time; it may expire");
                    return;
                }
            }
            _ = tick.tick() => {
                metrics.cluster.lease_renewal_age.set(last_ack.elapsed().as_secs_f64());
                if channel.is_none() {
                    // Reopen the keep-alive stream that broke.
                    in_flight.clear();
                    if let Ok(Ok(pair)) = tokio::time::timeout(timeout, streams.clone().lease_keep_alive(lease_id)).await {
                        channel = Some(pair);
                    }
                }
                if let Some((keeper, _)) = channel.as_mut() {
                    in_flight.push_back(Instant::now());
                    if keeper.keep_alive().await.is_err() {
                        channel = None;
                    }
                }
            }
            message = next_ack(&mut channel) => match message {
                Ok(Some(ttl)) if ttl > 0 => {
                    if let Some(sent) = in_flight.pop_front() {
                        clock.extend_to(sent + serving_window(&settings, ttl));
                        last_ack = Instant::now();
                        metrics.cluster.lease_renewal_age.set(0.0);
                    }
                }
                Ok(Some(_)) => {
                    tracing::warn!(lease = format_args!("{lease_id:x}"), "election: etcd says the lease expired");
                    return;
                }
                Ok(None) | Err(_) => channel = None,
            },
        }
    }
}

/// The TTL of the next keep-alive acknowledgement; pending forever while the stream is broken.
async fn next_ack(
    channel: &mut Option<(LeaseKeeper, LeaseKeepAliveStream)>,
) -> Result<Option<i64>, etcd_client::Error> {
    match channel.as_mut() {
        Some((_, stream)) => Ok(stream.message().await?.map(|r| r.ttl())),
        None => std::future::pending().await,
    }
}

/// The `store` of a cluster node's application state: in cluster mode the bounds live in etcd
/// and are reached only through the leader's term, so file backups are refused with a pointer
/// to etcd's own tooling.
pub struct EtcdBoundsElsewhere {
    pub endpoints: String,
}

#[async_trait]
impl BoundStore for EtcdBoundsElsewhere {
    async fn load_all(&self) -> Result<Vec<(String, NamespaceRecord)>, StoreError> {
        Err(self.refusal())
    }

    async fn put(&self, _: &str, _: NamespaceRecord) -> Result<(), StoreError> {
        Err(self.refusal())
    }

    fn checkpoint(&self, _: &std::path::Path) -> Result<(), StoreError> {
        Err(self.refusal())
    }

    fn describe(&self) -> String {
        format!("etcd at {}", self.endpoints)
    }
}

impl EtcdBoundsElsewhere {
    fn refusal(&self) -> StoreError {
        StoreError(format!(
            "in cluster mode the bounds live in etcd ({}); back them up with `etcdctl snapshot save`",
            self.endpoints
        ))
    }
}
