//! What a candidacy stands on in either leader mode ([`super::election`], one leader;
//! [`super::shards`], a leader per namespace): an etcd lease renewed in a task of its own, whose
//! acknowledgements move the [`LeaseClock`] deadline (the renewal's send time plus the TTL, less
//! `max_clock_drift_ppm` and `safety_margin_ms`), and the revocation of leases whose candidacy
//! ended.
//!
//! A lease whose revoke did not reach etcd (etcd down, or the candidacy ended on an error) is
//! remembered ([`Unrevoked`]) and revoked at the start of the next candidacy and on its ticks.
//! Otherwise its keys outlive etcd's return by a whole TTL and more (etcd extends every lease
//! when it restarts) and block the election or the shards meanwhile. Revoking it is safe: the
//! candidacy that held it has ended and stepped down, so nothing serves under it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, LeaseKeepAliveStream, LeaseKeeper};

use super::Leadership;
use crate::config::ClusterSettings;
use crate::lock::LockLimits;
use crate::metrics::Metrics;
use crate::namespaces::Namespaces;
use crate::storage::{BoundStore, StoreError};
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
