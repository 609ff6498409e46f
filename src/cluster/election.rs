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
//! The lease, its renewal and the revocation of ended candidacies' leases are in
//! [`super::lease`], shared with the leader-per-namespace loop ([`super::shards`]).
//!
//! Anything unexpected ends the candidacy; the loop starts a new one (new lease, new term).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use etcd_client::Client;
use tokio::sync::watch;

use super::lease::{
    etcd_err, unrevoke, with_timeout, Exit, Failure, Session, TermFactory, Unrevoked,
};
use super::{Leadership, Role};
use crate::config::ClusterSettings;
use crate::storage::etcd::{EtcdStore, LeaderGuard};
use crate::storage::{BoundStore, NamespaceRecord, StoreError};
use crate::term_gate::TermGate;

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
