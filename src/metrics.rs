//! Prometheus metrics, registered once per server in its own registry (so tests can run several
//! servers in one process). Handles are cloned into the code that updates them; the hot path only
//! touches pre-resolved atomic counters.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    /// Unique per `Metrics::new`, so per-thread caches of label handles never mix registries.
    pub id: u64,
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_latency: HistogramVec,
    pub timestamps_issued: IntCounter,
    pub bound_writes: IntCounterVec,
    pub bound_write_latency: Histogram,
    pub namespaces: IntGauge,
    pub fail_stopped: IntGauge,
    /// Namespaces restored from a backup and not yet fast-forwarded (set at each scrape).
    pub fenced: IntGauge,
    /// Unix time at which this process first saw its oldest still-fenced namespace fenced, or 0
    /// when none is (set at each scrape): an alert on `time() - this` needs no `for:` state
    /// that a Prometheus restart or a flapping count could reset.
    pub oldest_fence_start: Gauge,
    pub locks_held: IntGauge,
    pub lock_waiters: IntGauge,
    pub lock_acquisitions: IntCounterVec,
    pub lock_expiries: IntCounter,
    pub lock_wait_latency: Histogram,
    pub cluster: ClusterMetrics,
    pub guard: GuardMetrics,
    pub backup: BackupMetrics,
}

/// Backups: when the newest one was taken, how often they should be, and what failed.
#[derive(Clone)]
pub struct BackupMetrics {
    /// Unix time of the newest successful backup this server knows of (0: none).
    pub last_success: Gauge,
    /// The `backup.schedule` interval in seconds, 0 when there is no schedule.
    pub schedule: Gauge,
    /// Backups that failed, by type (`scheduled`, `on_demand`).
    pub failures: IntCounterVec,
}

impl BackupMetrics {
    fn new(registry: &Registry) -> Self {
        let last_success = Gauge::new(
            "timelock_last_backup_timestamp_seconds",
            "Unix time of the newest successful backup in the backups dir (0: none)",
        )
        .expect("metric");
        let schedule = Gauge::new(
            "timelock_backup_schedule_seconds",
            "The backup.schedule interval in seconds, 0 when no schedule is configured",
        )
        .expect("metric");
        let failures = IntCounterVec::new(
            Opts::new(
                "timelock_backup_failures_total",
                "Backups that failed, by type (scheduled, on_demand)",
            ),
            &["type"],
        )
        .expect("metric");
        // Exported at 0 from the start, so rate() and alerts see a series before any failure.
        for kind in ["scheduled", "on_demand"] {
            failures.with_label_values(&[kind]);
        }
        for m in [
            Box::new(last_success.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(schedule.clone()),
            Box::new(failures.clone()),
        ] {
            registry.register(m).expect("register metric");
        }
        Self {
            last_success,
            schedule,
            failures,
        }
    }

    /// Records a successful backup taken at `created_at_unix_ms`; does not move the gauge back
    /// for an older backup reported later (two backups finishing at once may still race, off by
    /// the time between them: not worth a lock).
    pub fn succeeded(&self, created_at_unix_ms: u64) {
        let at = created_at_unix_ms as f64 / 1000.0;
        if at > self.last_success.get() {
            self.last_success.set(at);
        }
    }
}

/// Overload shedding and access control: what was refused, and why.
#[derive(Clone)]
pub struct GuardMetrics {
    /// Open client connections.
    pub connections: IntGauge,
    /// Requests or connections answered 429 because a configured limit was reached, by limit
    /// (`in_flight`, `connections`).
    pub shed: IntCounterVec,
    /// Requests refused by access control, by status (`401`, `403`).
    pub denied: IntCounterVec,
    /// TLS certificate reloads, by result (`ok`, `error`).
    pub tls_reloads: IntCounterVec,
}

impl GuardMetrics {
    fn new(registry: &Registry) -> Self {
        let connections =
            IntGauge::new("timelock_connections", "Open client connections").expect("metric");
        let shed = IntCounterVec::new(
            Opts::new(
                "timelock_shed_total",
                "Requests or connections answered 429 because a configured limit was reached",
            ),
            &["limit"],
        )
        .expect("metric");
        let denied = IntCounterVec::new(
            Opts::new(
                "timelock_auth_denied_total",
                "Requests refused by access control, by status",
            ),
            &["status"],
        )
        .expect("metric");
        let tls_reloads = IntCounterVec::new(
            Opts::new(
                "timelock_tls_reloads_total",
                "TLS certificate reloads after the files changed, by result",
            ),
            &["result"],
        )
        .expect("metric");
        for m in [
            Box::new(connections.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(shed.clone()),
            Box::new(denied.clone()),
            Box::new(tls_reloads.clone()),
        ] {
            registry.register(m).expect("register metric");
        }
        Self {
            connections,
            shed,
            denied,
            tls_reloads,
        }
    }
}

/// Cluster mode (etcd): who leads, how often that changes, how fresh the lease is, and what
/// non-leaders answered. Bound writes to etcd are counted by `timelock_bound_writes_total` and
/// timed by `timelock_bound_write_duration_seconds`, like any bound store's.
#[derive(Clone)]
pub struct ClusterMetrics {
    /// 1 for this node's current role (`single`, `leader`, `follower`, `no_quorum`), 0 otherwise.
    pub role: IntGaugeVec,
    /// Terms this node has started leading.
    pub terms: IntCounter,
    /// Times this node stopped leading, by reason.
    pub step_downs: IntCounterVec,
    /// Seconds since the last acknowledged lease renewal (updated on every renewal tick).
    pub lease_renewal_age: Gauge,
    /// Seconds this leader may still serve without another renewal.
    pub lease_remaining: Gauge,
    /// The configured lease TTL (`cluster.lease_ttl_secs`), 0 on a single node: what the
    /// renewal age is compared with.
    pub lease_ttl: Gauge,
    /// 308 redirects to the leader served by this node.
    pub redirects: IntCounter,
    /// 503s served because this node is not the leader.
    pub not_leader: IntCounter,
    /// Seconds from winning the election to serving (loading the bounds from etcd).
    pub takeover_latency: Histogram,
    /// Leader per namespace: shards this node leads now.
    pub shards_led: IntGauge,
    /// Leader per namespace: namespaces this node leads now (set at scrape time).
    pub namespaces_led: IntGauge,
    /// Leader per namespace: planned moves of a shard, `out` (stepped down and released the
    /// key for another node) and `in` (took a shard another node released or lost).
    pub handoffs: IntCounterVec,
}

impl ClusterMetrics {
    fn new(registry: &Registry) -> Self {
        let role = IntGaugeVec::new(
            Opts::new(
                "timelock_cluster_role",
                "1 for this node's current role (single, leader, follower, no_quorum)",
            ),
            &["role"],
        )
        .expect("metric");
        let terms = IntCounter::new(
            "timelock_cluster_terms_total",
            "Leadership terms this node has started",
        )
        .expect("metric");
        let step_downs = IntCounterVec::new(
            Opts::new(
                "timelock_cluster_step_downs_total",
                "Times this node stopped leading, by reason",
            ),
            &["reason"],
        )
        .expect("metric");
        let lease_renewal_age = Gauge::new(
            "timelock_cluster_lease_renewal_age_seconds",
            "Seconds since this node's etcd lease was last renewed",
        )
        .expect("metric");
        let lease_remaining = Gauge::new(
            "timelock_cluster_lease_remaining_seconds",
            "Seconds this node may still serve without another lease renewal",
        )
        .expect("metric");
        let lease_ttl = Gauge::new(
            "timelock_cluster_lease_ttl_seconds",
            "The configured etcd lease TTL (cluster.lease_ttl_secs), 0 on a single node",
        )
        .expect("metric");
        let redirects = IntCounter::new(
            "timelock_cluster_redirects_total",
            "308 redirects to the leader served by this node",
        )
        .expect("metric");
        let not_leader = IntCounter::new(
            "timelock_cluster_not_leader_total",
            "503 responses served because this node is not the leader",
        )
        .expect("metric");
        let takeover_latency = Histogram::with_opts(
            HistogramOpts::new(
                "timelock_cluster_takeover_duration_seconds",
                "From winning the election to serving (bounds loaded from etcd)",
            )
            .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
        )
        .expect("metric");
        let shards_led = IntGauge::new(
            "timelock_cluster_shards_led",
            "Leader per namespace: shards this node leads",
        )
        .expect("metric");
        let namespaces_led = IntGauge::new(
            "timelock_cluster_namespaces_led",
            "Namespaces this node leads (all of them on a single node or the single leader)",
        )
        .expect("metric");
        let handoffs = IntCounterVec::new(
            Opts::new(
                "timelock_cluster_handoffs_total",
                "Leader per namespace: shards released to another node (out) or taken (in)",
            ),
            &["direction"],
        )
        .expect("metric");
        // Both series exist from the start (at 0), so that rates over them have data.
        for direction in ["in", "out"] {
            handoffs.with_label_values(&[direction]);
        }
        for m in [
            Box::new(shards_led.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(namespaces_led.clone()),
            Box::new(handoffs.clone()),
            Box::new(role.clone()),
            Box::new(terms.clone()),
            Box::new(step_downs.clone()),
            Box::new(lease_renewal_age.clone()),
            Box::new(lease_remaining.clone()),
            Box::new(lease_ttl.clone()),
            Box::new(redirects.clone()),
            Box::new(not_leader.clone()),
            Box::new(takeover_latency.clone()),
        ] {
            registry.register(m).expect("register metric");
        }
        Self {
            role,
            terms,
            step_downs,
            lease_renewal_age,
            lease_remaining,
            lease_ttl,
            redirects,
            not_leader,
            takeover_latency,
            shards_led,
            namespaces_led,
            handoffs,
        }
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "timelock_http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )
        .expect("metric");
        let http_latency = HistogramVec::new(
            HistogramOpts::new(
                "timelock_http_request_duration_seconds",
                "HTTP request latency by route",
            )
            .buckets(vec![
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                0.1, 0.25, 1.0, 5.0,
            ]),
            &["route"],
        )
        .expect("metric");
        let timestamps_issued = IntCounter::new(
            "timelock_timestamps_issued_total",
            "Timestamps handed out, all namespaces",
        )
        .expect("metric");
        let bound_writes = IntCounterVec::new(
            Opts::new(
                "timelock_bound_writes_total",
                "Durable bound writes by result",
            ),
            &["result"],
        )
        .expect("metric");
        let bound_write_latency = Histogram::with_opts(
            HistogramOpts::new(
                "timelock_bound_write_duration_seconds",
                "Latency of synced bound writes",
            )
            .buckets(vec![
                0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 1.0,
            ]),
        )
        .expect("metric");
        let namespaces = IntGauge::new("timelock_namespaces", "Namespaces known to this server")
            .expect("metric");
        let fail_stopped = IntGauge::new(
            "timelock_fail_stopped_services",
            "Timestamp services stopped because their bound could not be made durable",
        )
        .expect("metric");
        let fenced = IntGauge::new(
            "timelock_fenced_namespaces",
            "Namespaces restored from a backup and fenced until fast-forwarded",
        )
        .expect("metric");
        let oldest_fence_start = Gauge::new(
            "timelock_oldest_fence_start_timestamp_seconds",
            "Unix time this process first saw its oldest still-fenced namespace fenced, 0 when none is",
        )
        .expect("metric");
        let locks_held = IntGauge::new(
            "timelock_locks_held",
            "Lock descriptors currently held (v2 locks)",
        )
        .expect("metric");
        let lock_waiters = IntGauge::new(
            "timelock_lock_waiters",
            "Lock and wait-for-locks requests queued on a lock",
        )
        .expect("metric");
        let lock_acquisitions = IntCounterVec::new(
            Opts::new(
                "timelock_lock_acquisitions_total",
                "Lock and wait-for-locks requests by outcome",
            ),
            &["result"],
        )
        .expect("metric");
        let lock_expiries = IntCounter::new(
            "timelock_lock_expiries_total",
            "Lock tokens reaped because they were not refreshed within the server lease",
        )
        .expect("metric");
        let lock_wait_latency = Histogram::with_opts(
            HistogramOpts::new(
                "timelock_lock_wait_duration_seconds",
                "Time lock requests spent queued",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0,
            ]),
        )
        .expect("metric");
        for m in [
            Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_latency.clone()),
            Box::new(timestamps_issued.clone()),
            Box::new(bound_writes.clone()),
            Box::new(bound_write_latency.clone()),
            Box::new(namespaces.clone()),
            Box::new(fail_stopped.clone()),
            Box::new(fenced.clone()),
            Box::new(oldest_fence_start.clone()),
            Box::new(locks_held.clone()),
            Box::new(lock_waiters.clone()),
            Box::new(lock_acquisitions.clone()),
            Box::new(lock_expiries.clone()),
            Box::new(lock_wait_latency.clone()),
        ] {
            registry.register(m).expect("register metric");
        }
        let cluster = ClusterMetrics::new(&registry);
        let guard = GuardMetrics::new(&registry);
        let backup = BackupMetrics::new(&registry);
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Self {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            registry,
            http_requests,
            http_latency,
            timestamps_issued,
            bound_writes,
            bound_write_latency,
            namespaces,
            fail_stopped,
            fenced,
            oldest_fence_start,
            locks_held,
            lock_waiters,
            lock_acquisitions,
            lock_expiries,
            lock_wait_latency,
            cluster,
            guard,
            backup,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("encode metrics");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
