//! Wiring and lifecycle: open the store, load namespaces, bind the listener, serve until a
//! shutdown signal, then drain in-flight requests (graceful shutdown).
//!
//! Split in two steps — [`Server::bind`] then [`Server::serve`] — so that callers (the binary,
//! tests, benches) learn the bound address before serving, which makes `--listen 127.0.0.1:0`
//! usable.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::cluster::election::EtcdBoundsElsewhere;
use crate::cluster::lease::TermFactory;
use crate::cluster::Leadership;
use crate::config::{ClusterMode, ClusterSettings, LeaderMode, Settings};
use crate::http::direct::Dispatch;
use crate::http::{service, AppState, Shared};
use crate::lock::LockLimits;
use crate::metrics::Metrics;
use crate::namespaces::Namespaces;
use crate::storage::faults::FaultInjectingStore;
use crate::storage::rocks::RocksStore;
use crate::storage::BoundStore;
use crate::timestamp::AllocatorLimits;

/// A server that has opened its store and bound its socket but not yet started serving.
pub struct Server {
    listener: TcpListener,
    state: AppState,
    service: Dispatch,
    data_dir: PathBuf,
    store_description: String,
    reaper_interval: std::time::Duration,
    connections: ConnectionPolicy,
    /// `[tls]`: the certificate source for `listener`, and the optional loopback plain-HTTP
    /// listener beside it.
    tls: Option<Arc<crate::transport::tls::TlsSource>>,
    plain_listener: Option<TcpListener>,
    backup_schedule: Option<(std::time::Duration, usize)>,
    /// Cluster mode: the election loop to run while serving.
    election: Option<(ClusterSettings, TermFactory)>,
}

impl Server {
    /// Opens the RocksDB data dir named by `settings` and binds `settings.server.listen`.
    pub async fn bind(settings: &Settings) -> anyhow::Result<Self> {
        if settings.cluster.mode == ClusterMode::Etcd {
            return Self::bind_cluster(settings).await;
        }
        let data_dir = settings.storage.data_dir.clone();
        let open_dir = data_dir.clone();
        let min_free = settings.storage.min_free_bytes;
        let backups_dir = settings.storage_backups_dir();
        let hook_dir = backups_dir.clone();
        let rocks = tokio::task::spawn_blocking(move || {
            let pre_upgrade = |db: &rocksdb::DB, from: u32| {
                tracing::warn!(from, "older on-disk format: taking a pre-upgrade backup first");
                crate::operations::backup::create(&hook_dir, None, crate::operations::backup::BackupType::PreUpgrade, |target| {
                    crate::storage::rocks::checkpoint(db, target)
                })
                .map(|m| tracing::warn!(backup = %m.name, dir = %hook_dir.display(), "pre-upgrade backup taken"))
                .map_err(|e| crate::storage::StoreError(format!("pre-upgrade backup failed, not upgrading: {e}")))
            };
            RocksStore::open(&open_dir, min_free, Some(&pre_upgrade)).map_err(|e| {
                // Rolling back to an older binary: name the backup that restores the old format.
                match crate::operations::backup::latest_pre_upgrade(&hook_dir) {
                    Some(b) if e.0.contains("newer than this binary") => crate::storage::StoreError(format!(
                        "{}. To roll back, restore the newest pre-upgrade backup {:?} (taken {}, data in format {} written by timelock {}): timelock backup restore {} --backup-dir {} --data-dir {} ; the restored namespaces, and any first used after, come up FENCED until fast-forwarded past the last timestamp they issued (or add --fast-forward-to T)",
                        e.0, b.name, b.created_at, b.format_version, b.server_version, b.name, hook_dir.display(), open_dir.display()
                    )),
                    _ => e,
                }
            })
        })
            .await
            .context("store opener task")??;
        if settings.faults.skip_sync {
            tracing::error!("FAULT INJECTION: faults.skip_sync is set: bound writes are NOT fsynced and a power cut can lose acknowledged timestamps (test setting)");
            crate::storage::rocks::SKIP_SYNC.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let mut store: Arc<dyn BoundStore> = Arc::new(rocks);
        if let Some(n) = settings.faults.fail_bound_writes_after {
            tracing::warn!(
                after = n,
                "FAULT INJECTION enabled: bound writes will fail (test setting)"
            );
            store = Arc::new(FaultInjectingStore::new(store, n));
        }
        Self::bind_with_store(settings, store, data_dir).await
    }

    /// Like [`Server::bind`] with a caller-supplied store (tests, benches).
    pub async fn bind_with_store(
        settings: &Settings,
        store: Arc<dyn BoundStore>,
        data_dir: PathBuf,
    ) -> anyhow::Result<Self> {
        settings.validate()?;
        let metrics = Metrics::new();
        let namespaces = InMemoryApp::registry(settings, store.clone(), &metrics).await?;
        let leadership = Arc::new(Leadership::single(namespaces, metrics.clone()));
        let backup_schedule = settings.backup.schedule_interval()?;
        init_backup_metrics(&metrics, &settings.storage_backups_dir(), backup_schedule).await;
        let state = app_state(settings, leadership, store.clone(), metrics)?;
        let service = service(state.clone(), settings);
        let connections = ConnectionPolicy::new(settings, &state.metrics);
        let (tls, plain_listener) = tls_setup(settings, &state.metrics).await?;
        let listener = listen(settings).await?;
        Ok(Self {
            listener,
            state,
            service,
            data_dir,
            store_description: store.describe(),
            reaper_interval: std::time::Duration::from_millis(settings.lock.reaper_interval_ms),
            connections,
            tls,
            plain_listener,
            backup_schedule: backup_schedule.map(|every| (every, settings.backup.keep)),
            election: None,
        })
    }

    /// Cluster mode: binds the listener and prepares the election; nothing is served until this
    /// node wins it (see [`crate::cluster`]). Bounds live in etcd, not in the data dir.
    async fn bind_cluster(settings: &Settings) -> anyhow::Result<Self> {
        settings.validate()?;
        let cluster = settings.cluster.clone();
        let metrics = Metrics::new();
        metrics.cluster.lease_ttl.set(cluster.lease_ttl_secs as f64);
        let listener = listen(settings).await?;
        let local = listener.local_addr()?;
        let advertise_url = if cluster.advertise_url.is_empty() {
            anyhow::ensure!(
                !local.ip().is_unspecified(),
                "cluster mode: set cluster.advertise_url (the URL other nodes redirect clients to); it cannot be derived from the listen address {local}"
            );
            format!("http://{local}")
        } else {
            cluster.advertise_url.clone()
        };
        let node_id = if cluster.node_id.is_empty() {
            advertise_url.clone()
        } else {
            cluster.node_id.clone()
        };
        let leadership = Arc::new(match cluster.leader_mode {
            LeaderMode::SingleLeader => {
                Leadership::clustered(node_id, advertise_url, metrics.clone())
            }
            LeaderMode::PerNamespace => Leadership::sharded(
                usize::from(cluster.shards),
                node_id,
                advertise_url,
                metrics.clone(),
            ),
        });
        let store: Arc<dyn BoundStore> = Arc::new(EtcdBoundsElsewhere {
            endpoints: cluster.etcd_endpoints.clone(),
        });
        let state = app_state(settings, leadership, store, metrics.clone())?;
        let service = service(state.clone(), settings);
        let connections = ConnectionPolicy::new(settings, &metrics);
        let (tls, plain_listener) = tls_setup(settings, &metrics).await?;
        let factory = TermFactory {
            limits: AllocatorLimits::from(&settings.timestamp),
            lock_limits: LockLimits::from(settings),
            max_namespaces: settings.namespaces.max,
            census: Arc::default(),
            metrics,
        };
        let store_description = format!(
            "etcd at {} under {:?} (cluster mode, {}, node {})",
            cluster.etcd_endpoints,
            cluster.etcd_prefix,
            cluster.leader_mode.as_str(),
            state.leadership.node_id()
        );
        Ok(Self {
            listener,
            state,
            service,
            data_dir: settings.storage.data_dir.clone(),
            store_description,
            reaper_interval: std::time::Duration::from_millis(settings.lock.reaper_interval_ms),
            connections,
            tls,
            plain_listener,
            backup_schedule: None,
            election: Some((cluster, factory)),
        })
    }

    /// The address of the plain-HTTP listener beside TLS (`tls.plain_listen`), if any.
    pub fn plain_addr(&self) -> Option<SocketAddr> {
        self.plain_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    pub fn store_description(&self) -> &str {
        &self.store_description
    }

    /// Serves until `shutdown` completes, then finishes in-flight requests and returns.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let shutting_down = self.state.shutting_down.clone();
        // Lease reaper: unlocks tokens not refreshed within the server lease.
        let leadership = self.state.leadership.clone();
        let interval = self.reaper_interval;
        let reaper = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                for registry in leadership.registries() {
                    registry.reap();
                }
            }
        });
        let _stop_reaper = AbortOnDrop(reaper);
        let _stop_backups = self.backup_schedule.map(|(every, keep)| {
            let state = self.state.clone();
            AbortOnDrop(tokio::spawn(scheduled_backups(state, every, keep)))
        });
        let (stop_election, election_stopped) = tokio::sync::watch::channel(false);
        let election = self.election.map(|(cluster, factory)| {
            let leadership = self.state.leadership.clone();
            match cluster.leader_mode {
                LeaderMode::SingleLeader => tokio::spawn(crate::cluster::election::run(
                    leadership,
                    cluster,
                    factory,
                    election_stopped,
                )),
                LeaderMode::PerNamespace => tokio::spawn(crate::cluster::shards::run(
                    leadership,
                    cluster,
                    factory,
                    election_stopped,
                )),
            }
        });
        // Cluster mode: a force-killed leader stops campaigning and revokes its lease, so that
        // another node takes over now (its own clients are refused from the kill on).
        let stop_election = Arc::new(stop_election);
        let _hand_over_when_killed = election.is_some().then(|| {
            let (killed, stop) = (self.state.killed.clone(), stop_election.clone());
            AbortOnDrop(tokio::spawn(async move {
                killed.killed().await;
                let _ = stop.send(true);
            }))
        });
        let closing = self.state.leadership.clone();
        let shutdown = async move {
            shutdown.await;
            shutting_down.store(true, Ordering::Release);
            if let Some(election) = election {
                // Cluster mode: stop leading and revoke the lease, so that another node
                // takes over now rather than when the lease expires.
                let _ = stop_election.send(true);
                let _ = tokio::time::timeout(std::time::Duration::from_secs(5), election).await;
            }
            // Lock waits can last as long as a client asked; end this term's lock services so
            // they answer 503 (clients retry elsewhere) instead of holding up the shutdown.
            closing.close();
            tracing::info!("shutting down: finishing in-flight requests");
        };
        let _reload_certificates = self
            .tls
            .clone()
            .map(|tls| AbortOnDrop(tokio::spawn(tls.watch())));
        // Every listener stops accepting when the shutdown completes.
        let (stopped, stop) = tokio::sync::watch::channel(false);
        let stop_signal = move || {
            let mut stop = stop.clone();
            async move {
                let _ = stop.wait_for(|s| *s).await;
            }
        };
        let main = accept_loop(
            self.listener,
            self.service.clone(),
            self.connections.clone(),
            self.tls,
            stop_signal(),
        );
        let plain = async {
            if let Some(listener) = self.plain_listener {
                accept_loop(
                    listener,
                    self.service,
                    self.connections,
                    None,
                    stop_signal(),
                )
                .await;
            }
        };
        let signal = async move {
            shutdown.await;
            let _ = stopped.send(true);
        };
        tokio::join!(main, plain, signal);
        Ok(())
    }
}

/// The complete application over an in-memory store, with no listener and no background tasks
/// (lease reaper, backups): the service (hot endpoints dispatched directly, the rest through the
/// router) and state [`Server::bind_with_store`] would serve. For the fuzz targets in `fuzz/`,
/// which drive it in-process.
pub struct InMemoryApp {
    pub service: Dispatch,
    pub state: AppState,
    settings: Settings,
}

impl InMemoryApp {
    pub async fn new(settings: &Settings) -> anyhow::Result<Self> {
        settings.validate()?;
        let metrics = Metrics::new();
        let store: Arc<dyn BoundStore> = Arc::new(crate::storage::memory::MemoryStore::new());
        let namespaces = Self::registry(settings, store.clone(), &metrics).await?;
        let leadership = Arc::new(Leadership::single(namespaces, metrics.clone()));
        let state = app_state(settings, leadership, store, metrics)?;
        Ok(Self {
            service: service(state.clone(), settings),
            state,
            settings: settings.clone(),
        })
    }

    /// Starts over behind the same service (building one costs far more than a request): a new,
    /// empty in-memory store and registry, so no namespace, timestamp, lock or lock watch of
    /// earlier requests remains. Metrics keep counting.
    pub async fn reset(&self) -> anyhow::Result<()> {
        let store: Arc<dyn BoundStore> = Arc::new(crate::storage::memory::MemoryStore::new());
        let namespaces = Self::registry(&self.settings, store, &self.state.metrics).await?;
        self.state.leadership.replace(namespaces);
        Ok(())
    }

    /// The namespace registry over `store` with the configured limits (the single-node server's
    /// too, see [`Server::bind_with_store`]).
    async fn registry(
        settings: &Settings,
        store: Arc<dyn BoundStore>,
        metrics: &Metrics,
    ) -> anyhow::Result<Arc<Namespaces>> {
        let namespaces = Namespaces::load(
            store,
            AllocatorLimits::from(&settings.timestamp),
            LockLimits::from(settings),
            settings.namespaces.max,
            metrics.clone(),
        )
        .await
        .context("loading namespaces")?;
        Ok(Arc::new(namespaces))
    }
}

/// The state every handler shares, for either mode.
fn app_state(
    settings: &Settings,
    leadership: Arc<Leadership>,
    store: Arc<dyn BoundStore>,
    metrics: Metrics,
) -> anyhow::Result<AppState> {
    let access = crate::auth::AccessPolicy::load(&settings.auth).map_err(anyhow::Error::msg)?;
    if access.is_enforcing() {
        tracing::info!(policy = ?access, "access control enabled");
    } else if !settings.listen_addr().ip().is_loopback() {
        tracing::warn!(
            "no [auth] settings: admin and management routes are open to anyone who can reach {}",
            settings.server.listen
        );
    }
    Ok(AppState::new(Shared {
        leadership,
        store,
        backups_dir: settings.storage_backups_dir(),
        migrations_dir: settings.migration.dir.clone(),
        max_body_bytes: settings.server.max_body_bytes,
        metrics,
        lifecycle_id: uuid::Uuid::new_v4(),
        shutting_down: Arc::new(AtomicBool::new(false)),
        killed: Default::default(),
        access: Arc::new(access),
        lock_v1: crate::http::lock_v1::V1Limits::from(&settings.lock_v1),
        status: Default::default(),
    }))
}

/// `[tls]`: loads the certificate source and binds the optional loopback plain listener.
async fn tls_setup(
    settings: &Settings,
    metrics: &Metrics,
) -> anyhow::Result<(
    Option<Arc<crate::transport::tls::TlsSource>>,
    Option<TcpListener>,
)> {
    if !settings.tls.enabled() {
        return Ok((None, None));
    }
    let tls = crate::transport::tls::TlsSource::load(&settings.tls, metrics.guard.clone())
        .context("loading the TLS certificate")?;
    let plain = if settings.tls.plain_listen.is_empty() {
        None
    } else {
        let addr = settings.tls.plain_listen.as_str();
        Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (tls.plain_listen)"))?,
        )
    };
    Ok((Some(tls), plain))
}

/// Binds `server.listen`.
async fn listen(settings: &Settings) -> anyhow::Result<TcpListener> {
    let addr = settings.listen_addr();
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// How connections are served: limits that apply to each and to all of them.
#[derive(Clone)]
struct ConnectionPolicy {
    header_read_timeout: std::time::Duration,
    /// Free connection slots (`server.max_connections`), shared by every listener.
    slots: Arc<tokio::sync::Semaphore>,
    guard: crate::metrics::GuardMetrics,
}

impl ConnectionPolicy {
    fn new(settings: &Settings, metrics: &Metrics) -> Self {
        Self {
            header_read_timeout: std::time::Duration::from_millis(
                settings.server.header_read_timeout_ms,
            ),
            slots: Arc::new(tokio::sync::Semaphore::new(settings.server.max_connections)),
            guard: metrics.guard.clone(),
        }
    }
}

/// Accepts connections until `shutdown` completes, then lets in-flight requests finish.
///
/// Each connection is served by hyper's HTTP/1.1 connection (keep-alive, pipelining) with a
/// header-read timeout: a client that does not send a complete request head within
/// `header_read_timeout` (a slowloris, or a silent or idle connection) is disconnected, so
/// sockets and memory cannot be pinned for ever. Beyond `max_connections` open connections a
/// new one is answered 429 and closed (see [`refuse_connection`]; with TLS, closed at once).
/// Accept errors (out of file descriptors, say) are logged and retried after a pause instead of
/// ending the server.
///
/// The header-read timeout runs on tokio's timer and graceful shutdown is hyper-util's: our own
/// versions of both were measured end to end against these and their gain did not stand clear
/// of the run-to-run spread (docs/performance.md, "Transport"). The self-waking poll
/// ([`crate::transport::self_wake`]) did, on every request with a body, and stays.
async fn accept_loop(
    listener: TcpListener,
    router: Dispatch,
    policy: ConnectionPolicy,
    tls: Option<Arc<crate::transport::tls::TlsSource>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    use crate::transport::self_wake::repolled;
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let mut http = hyper::server::conn::http1::Builder::new();
    http.header_read_timeout(policy.header_read_timeout)
        .timer(TokioTimer::new())
        .keep_alive(true);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = policy.slots.clone();
    let shed_connections = policy.guard.shed.with_label_values(&["connections"]);
    tokio::pin!(shutdown);
    loop {
        let (tcp, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            shed_connections.inc();
            if tls.is_none() {
                tokio::spawn(refuse_connection(tcp));
            }
            // On a TLS port nothing can be said before a handshake, which is the work being
            // shed: the connection is just closed.
            continue;
        };
        // Small request/response pairs on keep-alive connections: never wait for Nagle.
        let _ = tcp.set_nodelay(true);
        let open = policy.guard.connections.clone();
        open.inc();
        let Some(tls) = &tls else {
            let service = TowerToHyperService::new(router.for_connection());
            let connection =
                repolled(graceful.watch(http.serve_connection(TokioIo::new(tcp), service)));
            tokio::spawn(async move {
                let _ = repolled(connection).await;
                open.dec();
                drop(slot);
            });
            continue;
        };
        // TLS: the handshake runs in the connection's own task (a slow client cannot stall
        // the accept loop) and must finish within the header-read timeout.
        let acceptor = tls.acceptor();
        let (http, router) = (http.clone(), router.for_connection());
        let handshake_deadline = policy.header_read_timeout;
        // Counted as open from now: shutdown waits for the handshake as for a request.
        let hold = graceful.watcher();
        tokio::spawn(async move {
            if let Ok(Ok(stream)) =
                tokio::time::timeout(handshake_deadline, acceptor.accept(tcp)).await
            {
                let identity = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|cert| {
                        crate::auth::CertificateIdentity(
                            crate::transport::tls::identities(cert).into(),
                        )
                    });
                let service = tower::ServiceBuilder::new()
                    .map_request(
                        move |mut request: axum::http::Request<hyper::body::Incoming>| {
                            if let Some(identity) = &identity {
                                request.extensions_mut().insert(identity.clone());
                            }
                            request
                        },
                    )
                    .service(router);
                let connection = hold.watch(
                    http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service)),
                );
                let _ = connection.await;
            }
            open.dec();
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Answers a connection beyond `server.max_connections` with `429 Too Many Requests`
/// (`Retry-After: 1`, no body, as a QoS answer) and closes it. Whatever the client sent first
/// is read (briefly) so that closing does not reset the connection before the answer arrives;
/// the whole exchange is bounded to half a second.
async fn refuse_connection(mut tcp: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const ANSWER: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 1\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
    let exchange = async {
        let mut buf = [0u8; 4096];
        let _ =
            tokio::time::timeout(std::time::Duration::from_millis(100), tcp.read(&mut buf)).await;
        tcp.write_all(ANSWER).await?;
        tcp.shutdown().await?;
        // Drain until the client closes, so our close does not turn into a reset.
        while tcp.read(&mut buf).await? > 0 {}
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(std::time::Duration::from_millis(500), exchange).await;
}

/// Starts the backup gauges from what is on disk, so a restart does not make the newest
/// backup look missing (and the age alert fire) until the next one is taken.
async fn init_backup_metrics(
    metrics: &Metrics,
    backups_dir: &std::path::Path,
    schedule: Option<std::time::Duration>,
) {
    metrics
        .backup
        .schedule
        .set(schedule.map_or(0.0, |every| every.as_secs_f64()));
    let dir = backups_dir.to_path_buf();
    let listed = tokio::task::spawn_blocking(move || crate::operations::backup::list(&dir)).await;
    match listed {
        Ok(Ok(backups)) => {
            if let Some(newest) = backups.iter().map(|b| b.created_at_unix_ms).max() {
                metrics.backup.succeeded(newest);
            }
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, dir = %backups_dir.display(), "could not list backups: timelock_last_backup_timestamp_seconds starts at 0")
        }
        Err(e) => tracing::warn!(error = %e, "backup listing task failed"),
    }
}

/// Takes a `scheduled` backup every `every` and keeps the newest `keep` of them. A failed backup
/// is logged and retried at the next tick; it never affects serving.
async fn scheduled_backups(state: AppState, every: std::time::Duration, keep: usize) {
    let failed = state
        .metrics
        .backup
        .failures
        .with_label_values(&["scheduled"]);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (store, dir) = (state.store.clone(), state.backups_dir.clone());
        let result = tokio::task::spawn_blocking(move || {
            let made = crate::operations::backup::create(
                &dir,
                None,
                crate::operations::backup::BackupType::Scheduled,
                |t| store.checkpoint(t),
            )?;
            let pruned = crate::operations::backup::prune_scheduled(&dir, keep)?;
            Ok::<_, crate::operations::backup::BackupError>((made, pruned))
        })
        .await;
        match result {
            Ok(Ok((made, pruned))) => {
                state.metrics.backup.succeeded(made.created_at_unix_ms);
                tracing::info!(backup = %made.name, ?pruned, "scheduled backup taken")
            }
            Ok(Err(e)) => {
                failed.inc();
                tracing::error!(error = %e, "scheduled backup failed")
            }
            Err(e) => {
                failed.inc();
                tracing::error!(error = %e, "scheduled backup task failed")
            }
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Completes on SIGTERM or ctrl-c.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
