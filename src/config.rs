//! Server configuration: built-in defaults, then an optional TOML file, then `TIMELOCK__*`
//! environment variables, then command-line flags (each layer overrides the one before).
//!
//! Every key has a default so that `timelock serve` with no arguments runs a usable server.
//! `config/timelock.toml` documents every key with exactly these defaults; a test keeps the two in
//! step. Unknown keys are rejected rather than ignored, so a typo in a config file or environment
//! variable is an error at start-up instead of a silently ignored setting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Environment variables with this prefix (followed by `__`) override the file, e.g.
/// `TIMELOCK__SERVER__LISTEN=127.0.0.1:9000` or `TIMELOCK__TIMESTAMP__RESERVATION=5000`.
pub const ENV_PREFIX: &str = "TIMELOCK";

/// The whole configuration.
/// The longest header- or body-read deadline accepted (one hour).
pub const MAX_CLIENT_READ_TIMEOUT_MS: u64 = 3_600_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub server: ServerSettings,
    pub storage: StorageSettings,
    pub timestamp: TimestampSettings,
    pub namespaces: NamespaceSettings,
    pub lock: LockSettings,
    pub lock_v1: LockV1Settings,
    pub backup: BackupSettings,
    pub migration: MigrationSettings,
    pub log: LogSettings,
    pub cluster: ClusterSettings,
    pub auth: AuthSettings,
    pub tls: TlsSettings,
    pub faults: FaultSettings,
}

/// The HTTP listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address to listen on. Port 0 picks a free port (see `--port-file`).
    pub listen: String,
    /// Every route is served at the root and again under this prefix ("" disables the copy).
    pub path_prefix: String,
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// A request that takes longer than this is answered with 408 (milliseconds).
    pub request_timeout_ms: u64,
    /// A connection that does not deliver a complete request head within this long (after
    /// opening, or between requests on a keep-alive connection) is closed: slow or silent
    /// clients cannot hold sockets for ever (milliseconds).
    pub header_read_timeout_ms: u64,
    /// A request whose body has not arrived whole within this long after its head is answered
    /// 408 and its connection closed, on every route: a client that declares a body and never
    /// finishes sending it holds neither a connection nor an in-flight slot for long (the slot
    /// is taken only once the body is read; milliseconds).
    pub body_read_timeout_ms: u64,
    /// Most client requests inside handlers at once (waiting lock requests included); beyond
    /// it, requests are answered 429 with `Retry-After` at once (`/metrics` and `/health/*`
    /// are exempt).
    pub max_in_flight_requests: usize,
    /// Most open client connections; a connection beyond it is answered 429 with
    /// `Retry-After` and closed.
    pub max_connections: usize,
    /// Serve the hot client endpoints (fresh timestamps, start transaction, commit timestamps,
    /// lock, unlock, refresh) without going through the general router: same answers, less
    /// work per request. `false` routes every request through the router.
    pub direct_dispatch: bool,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8421".to_string(),
            path_prefix: "/timelock/api".to_string(),
            max_body_bytes: 16 * 1024 * 1024,
            request_timeout_ms: 120_000,
            header_read_timeout_ms: 30_000,
            body_read_timeout_ms: 30_000,
            max_in_flight_requests: 10_000,
            max_connections: 10_000,
            direct_dispatch: true,
        }
    }
}

/// Where durable state lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSettings {
    /// RocksDB data directory (created if missing).
    pub data_dir: PathBuf,
    /// A bound write is refused (and the namespace fail-stops) when the data dir's file system
    /// has less than this many bytes available. 0 disables the check.
    pub min_free_bytes: u64,
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("var/data"),
            min_free_bytes: 256 * 1024,
        }
    }
}

/// The timestamp allocator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimestampSettings {
    /// How far ahead of the last issued timestamp the durable bound is pushed on each bound write.
    /// TimeLock uses 1,000,000 ("some internal atlas clients have behaviour tied to this value").
    pub reservation: i64,
    /// When fewer than this many reserved timestamps remain, the bound is extended in the
    /// background. Unset means half the reservation.
    pub low_water_mark: Option<i64>,
    /// Largest range handed out by one batch request; larger requests are clamped (TimeLock: 10,000).
    pub max_per_request: i64,
}

impl Default for TimestampSettings {
    fn default() -> Self {
        Self {
            reservation: 1_000_000,
            low_water_mark: None,
            max_per_request: 10_000,
        }
    }
}

/// Namespaces (AtlasDB "clients").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NamespaceSettings {
    /// Most namespaces this server will create (TimeLock's `max-number-of-clients`).
    pub max: usize,
}

impl Default for NamespaceSettings {
    fn default() -> Self {
        Self { max: 500 }
    }
}

/// The v2 lock service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LockSettings {
    /// A lock token not refreshed for this long is released (TimeLock: 20 s).
    pub server_lease_ms: u64,
    /// The lease validity told to clients (TimeLock: 8 s, "PT8S"); must be below the server lease.
    pub client_lease_ms: u64,
    /// How often expired tokens are reaped.
    pub reaper_interval_ms: u64,
    /// Most lock descriptors in one request.
    pub max_descriptors_per_request: usize,
    /// Largest lock descriptor, in bytes.
    pub max_descriptor_bytes: usize,
    /// Most requests queued on locks per namespace; past it, 429.
    pub max_waiters_per_namespace: usize,
}

impl Default for LockSettings {
    fn default() -> Self {
        Self {
            server_lease_ms: 20_000,
            client_lease_ms: 8_000,
            reaper_interval_ms: 1_000,
            max_descriptors_per_request: 100_000,
            max_descriptor_bytes: 65_536,
            max_waiters_per_namespace: 10_000,
        }
    }
}

/// The legacy (v1) lock service (`/lk/*`, `/{ns}/lock/*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LockV1Settings {
    /// A v1 lock request still blocked after this long is cut off with 429 `Retry-After: 0`
    /// (503 for legacy clients) and holds nothing; the client retries (TimeLock: 0.8 x 60 s).
    pub blocking_timeout_ms: u64,
    /// Most v1 lock requests (any blocking mode) served at once, over all namespaces; past it,
    /// 429 (TimeLock's shared lock thread pool of 128).
    pub max_concurrent_lock_requests: usize,
    /// How long past its expiry an unrefreshed v1 token (or grant) stays held before it is
    /// freed: until then it can still be refreshed, unlocked, converted to a grant and counted
    /// by the version queries. TimeLock's reaper allows `LockServerOptions.maxAllowedClockDrift`
    /// (5 s), and AtlasDB clients rely on it: they lock with timeouts as short as 10 ms and
    /// refresh afterwards.
    pub max_clock_drift_ms: u64,
}

/// The largest `lock_v1.max_clock_drift_ms` accepted: a longer allowance would keep abandoned
/// v1 locks away from other clients for longer than the longest lock timeout itself.
pub const MAX_V1_CLOCK_DRIFT_MS: u64 = 600_000;

impl Default for LockV1Settings {
    fn default() -> Self {
        Self {
            blocking_timeout_ms: 48_000,
            max_concurrent_lock_requests: 128,
            max_clock_drift_ms: 5_000,
        }
    }
}

/// Backups of the server's own state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupSettings {
    /// Where backups are written (online backups, pre-upgrade backups).
    pub dir: PathBuf,
    /// Take a `scheduled` backup this often: a number with a unit, `30s`, `15m`, `6h`, `1d`.
    /// Empty: no schedule.
    pub schedule: String,
    /// How many scheduled backups to keep; older ones are deleted (other types never are).
    pub keep: usize,
}

impl Default for BackupSettings {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("var/backups"),
            schedule: String::new(),
            keep: 7,
        }
    }
}

impl BackupSettings {
    /// The schedule interval, if one is configured.
    pub fn schedule_interval(&self) -> Result<Option<std::time::Duration>, ConfigError> {
        let text = self.schedule.trim();
        if text.is_empty() {
            return Ok(None);
        }
        let bad = || {
            ConfigError::Invalid(format!(
                "backup.schedule must look like 30s, 15m, 6h or 1d, got {text:?}"
            ))
        };
        let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (number, unit) = text.split_at(split);
        let n: u64 = number.parse().map_err(|_| bad())?;
        let secs = match unit {
            "s" => n,
            "m" => n.checked_mul(60).ok_or_else(bad)?,
            "h" => n.checked_mul(3600).ok_or_else(bad)?,
            "d" => n.checked_mul(86_400).ok_or_else(bad)?,
            _ => return Err(bad()),
        };
        if secs == 0 {
            return Err(bad());
        }
        Ok(Some(std::time::Duration::from_secs(secs)))
    }
}

/// Migrations between timestamp services.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MigrationSettings {
    /// Where this server keeps the state that `timelock migrate` reports to it, served at
    /// `/admin/migrations`.
    pub dir: PathBuf,
}

impl Default for MigrationSettings {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("var/migrations"),
        }
    }
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `plain` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `timelock=debug,info`; `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Plain,
            level: "info".to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Plain,
    Json,
}

/// How many nodes serve, and how they agree on which one does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterMode {
    /// One node; bounds in the local RocksDB data dir.
    Single,
    /// Several nodes; bounds and the leader election in etcd.
    Etcd,
}

/// Which node of a cluster leads which namespaces (`cluster.leader_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeaderMode {
    /// One elected node leads every namespace (TimeLock's `SINGLE_LEADER`).
    SingleLeader,
    /// Namespaces are spread over the live nodes in shards, each shard with its own leader
    /// and term (TimeLock's `LEADER_PER_CLIENT`). See docs/cluster.md.
    PerNamespace,
}

/// By hand, so that a wrong value is answered with the two right ones.
impl<'de> Deserialize<'de> for LeaderMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_str() {
            "single-leader" => Ok(LeaderMode::SingleLeader),
            "per-namespace" => Ok(LeaderMode::PerNamespace),
            other => Err(serde::de::Error::custom(format!(
                "cluster.leader_mode must be \"single-leader\" or \"per-namespace\", got {other:?}"
            ))),
        }
    }
}

impl LeaderMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaderMode::SingleLeader => "single-leader",
            LeaderMode::PerNamespace => "per-namespace",
        }
    }
}

/// Largest `cluster.shards`: every node keeps one slot per shard, and a cluster start costs
/// one etcd transaction per shard.
pub const MAX_SHARDS: u16 = 1024;

/// Cluster mode (`mode = "etcd"`): the nodes elect one leader through an etcd lease; only the
/// leader serves, with its bounds in etcd. See docs/cluster.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// `single` (the default) or `etcd`.
    pub mode: ClusterMode,
    /// `single-leader` (the default) or `per-namespace`. Every node of a cluster must use the
    /// same mode and shard count: a node refuses to lead while the other mode holds etcd.
    pub leader_mode: LeaderMode,
    /// Leader per namespace: namespaces are hashed into this many shards, the unit of
    /// leadership. Fixed for the life of the cluster's etcd prefix (1 to 1024).
    pub shards: u16,
    /// etcd client URLs, comma-separated: `http://etcd1:2379,http://etcd2:2379`.
    pub etcd_endpoints: String,
    /// Every key this cluster writes in etcd lives under this prefix.
    pub etcd_prefix: String,
    /// This node's name in logs, metrics and the election. Empty: the advertised URL.
    pub node_id: String,
    /// The base URL other nodes redirect clients to when this node leads, e.g.
    /// `http://timelock1:8421`. Empty: `http://<listen address>` (refused for 0.0.0.0).
    pub advertise_url: String,
    /// TTL of the etcd lease behind this node's candidacy (whole seconds, at least 2).
    pub lease_ttl_secs: u64,
    /// How often the lease is renewed.
    pub renew_interval_ms: u64,
    /// The leader stops serving this long before its lease could expire.
    pub safety_margin_ms: u64,
    /// Largest rate difference assumed between this node's clock and etcd's (parts per million).
    pub max_clock_drift_ppm: u64,
    /// Timeout of one etcd request (connect, get, put).
    pub etcd_timeout_ms: u64,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            mode: ClusterMode::Single,
            leader_mode: LeaderMode::SingleLeader,
            shards: 64,
            etcd_endpoints: "http://127.0.0.1:2379".to_string(),
            etcd_prefix: "/timelock/".to_string(),
            node_id: String::new(),
            advertise_url: String::new(),
            lease_ttl_secs: 3,
            renew_interval_ms: 500,
            safety_margin_ms: 500,
            max_clock_drift_ppm: 10_000,
            etcd_timeout_ms: 1_000,
        }
    }
}

impl ClusterSettings {
    /// The etcd endpoints as a list.
    pub fn endpoints(&self) -> Vec<String> {
        self.etcd_endpoints
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// How long after a renewal was *sent* this node may still serve: the lease TTL shrunk by
    /// the clock-drift allowance, minus the safety margin.
    pub fn serving_window(&self) -> std::time::Duration {
        let ttl = std::time::Duration::from_secs(self.lease_ttl_secs);
        let drift = ttl.mul_f64(self.max_clock_drift_ppm as f64 / 1_000_000.0);
        ttl.saturating_sub(drift)
            .saturating_sub(std::time::Duration::from_millis(self.safety_margin_ms))
    }
}

/// Access control (see `crate::auth`). Empty settings leave every route open, as TimeLock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// The admin credential, `file:PATH` or `env:NAME` (never the secret itself). When set,
    /// admin and management routes need `Authorization: Bearer <it>`.
    pub admin_token: String,
    /// A file of `<namespace> <token>` lines: each namespace listed needs one of its tokens.
    pub namespace_tokens_file: PathBuf,
    /// A file of `<identity> <grant>[,<grant>...]` lines mapping client-certificate identities
    /// (subject CN or DNS name) to namespaces, `*` or `admin`. Needs `tls.client_ca_file`.
    pub cert_identities_file: PathBuf,
}

/// TLS on the client port (rustls).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// PEM certificate chain; with `key_file`, `server.listen` serves HTTPS only.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM CA certificates that sign client certificates: enables mutual TLS.
    pub client_ca_file: PathBuf,
    /// With a client CA: "required" (no certificate, no connection) or "optional".
    pub client_auth: String,
    /// An extra plain-HTTP listener for local development; must be a loopback address.
    pub plain_listen: String,
    /// How often the certificate, key and CA files are checked for changes (reloaded without
    /// a restart; a bad new file is logged and the old certificate kept).
    pub reload_interval_ms: u64,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            client_ca_file: PathBuf::new(),
            client_auth: "required".to_string(),
            plain_listen: String::new(),
            reload_interval_ms: 5_000,
        }
    }
}

impl TlsSettings {
    pub fn enabled(&self) -> bool {
        !self.cert_file.as_os_str().is_empty()
    }
}

/// Fault injection, for tests of the fail-stop path only. Never set these in production.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct FaultSettings {
    /// If set, every bound write after the first N successful ones fails with an injected I/O
    /// error, as a full or broken disk would.
    pub fail_bound_writes_after: Option<u64>,
    /// UNSAFE, test-only: bound writes are not fsynced, so a power cut can lose acknowledged
    /// timestamps. The power-cut test's negative control uses it to prove it can see that bug.
    pub skip_sync: bool,
}

/// Command-line values that override everything else.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration: {0}")]
    Invalid(String),
}

impl Settings {
    /// Loads defaults < `file` < environment (`TIMELOCK__SECTION__KEY`) < `overrides`.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        Self::load_with_env(
            file,
            overrides,
            config::Environment::with_prefix(ENV_PREFIX),
        )
    }

    fn load_with_env(
        file: Option<&Path>,
        overrides: &Overrides,
        env: config::Environment,
    ) -> Result<Self, ConfigError> {
        let mut builder =
            config::Config::builder().add_source(config::Config::try_from(&Settings::default())?);
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::Invalid(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
        builder = builder.add_source(env.prefix_separator("__").separator("__").try_parsing(true));
        if let Some(listen) = &overrides.listen {
            builder = builder.set_override("server.listen", listen.as_str())?;
        }
        if let Some(dir) = &overrides.data_dir {
            builder = builder.set_override("storage.data_dir", dir.to_string_lossy().as_ref())?;
        }
        let settings: Settings = builder.build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Rejects values that would make the server unsafe or useless.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(msg));
        if self.server.listen.parse::<SocketAddr>().is_err() {
            return invalid(format!(
                "server.listen must be an address such as 0.0.0.0:8421, got {:?}",
                self.server.listen
            ));
        }
        let prefix = &self.server.path_prefix;
        if !prefix.is_empty() && (!prefix.starts_with('/') || prefix.ends_with('/')) {
            return invalid(format!(
                "server.path_prefix must be empty or start with '/' and not end with '/', got {prefix:?}"
            ));
        }
        if self.server.max_in_flight_requests == 0 || self.server.max_connections == 0 {
            return invalid(
                "server.max_in_flight_requests and server.max_connections must be at least 1"
                    .into(),
            );
        }
        let ts = &self.timestamp;
        if ts.max_per_request < 1 {
            return invalid("timestamp.max_per_request must be at least 1".into());
        }
        if ts.reservation < 1 {
            return invalid("timestamp.reservation must be at least 1".into());
        }
        if ts
            .low_water_mark
            .is_some_and(|low| low < 0 || low >= ts.reservation)
        {
            return invalid(format!(
                "timestamp.low_water_mark ({:?}) must be at least 0 and below the reservation ({})",
                ts.low_water_mark, ts.reservation
            ));
        }
        let lock = &self.lock;
        if lock.client_lease_ms == 0 || lock.client_lease_ms >= lock.server_lease_ms {
            return invalid(format!(
                "lock.client_lease_ms ({}) must be positive and below lock.server_lease_ms ({}): clients must give up a lock before the server frees it",
                lock.client_lease_ms, lock.server_lease_ms
            ));
        }
        if lock.reaper_interval_ms == 0
            || lock.max_descriptors_per_request == 0
            || lock.max_descriptor_bytes == 0
            || lock.max_waiters_per_namespace == 0
        {
            return invalid("lock.reaper_interval_ms and the lock limits must be positive".into());
        }
        if self.lock_v1.blocking_timeout_ms == 0 {
            return invalid("lock_v1.blocking_timeout_ms must be positive".into());
        }
        if self.lock_v1.max_concurrent_lock_requests == 0 {
            return invalid("lock_v1.max_concurrent_lock_requests must be at least 1".into());
        }
        if self.lock_v1.max_clock_drift_ms > MAX_V1_CLOCK_DRIFT_MS {
            return invalid(format!(
                "lock_v1.max_clock_drift_ms ({}) must be between 0 and {MAX_V1_CLOCK_DRIFT_MS} (10 minutes, the longest v1 lock timeout)",
                self.lock_v1.max_clock_drift_ms
            ));
        }
        self.validate_cluster()?;
        self.validate_tls()?;
        self.backup.schedule_interval()?;
        if self.backup.keep == 0 {
            return invalid("backup.keep must be at least 1".into());
        }
        if self.namespaces.max == 0 {
            return invalid("namespaces.max must be at least 1".into());
        }
        if self.server.max_body_bytes == 0
            || self.server.request_timeout_ms == 0
            || self.server.header_read_timeout_ms == 0
            || self.server.body_read_timeout_ms == 0
        {
            return invalid(
                "server.max_body_bytes, server.request_timeout_ms, server.header_read_timeout_ms and server.body_read_timeout_ms must be positive".into(),
            );
        }
        // A deadline for a client's head or body exists to free what a slow client holds; one
        // beyond an hour frees nothing in practice (and 1e20 would be no deadline at all).
        for (name, ms) in [
            (
                "server.header_read_timeout_ms",
                self.server.header_read_timeout_ms,
            ),
            (
                "server.body_read_timeout_ms",
                self.server.body_read_timeout_ms,
            ),
        ] {
            if ms > MAX_CLIENT_READ_TIMEOUT_MS {
                return invalid(format!(
                    "{name} ({ms}) must be at most {MAX_CLIENT_READ_TIMEOUT_MS} (one hour)"
                ));
            }
        }
        Ok(())
    }

    fn validate_tls(&self) -> Result<(), ConfigError> {
        let invalid = |msg: &str| Err(ConfigError::Invalid(msg.to_string()));
        let tls = &self.tls;
        let set = |p: &PathBuf| !p.as_os_str().is_empty();
        if set(&tls.cert_file) != set(&tls.key_file) {
            return invalid("tls.cert_file and tls.key_file go together: set both or neither");
        }
        if set(&tls.client_ca_file) && !tls.enabled() {
            return invalid("tls.client_ca_file (mutual TLS) needs tls.cert_file and tls.key_file");
        }
        if !matches!(tls.client_auth.as_str(), "required" | "optional") {
            return invalid("tls.client_auth must be \"required\" or \"optional\"");
        }
        if set(&self.auth.cert_identities_file) && !set(&tls.client_ca_file) {
            return invalid(
                "auth.cert_identities_file maps client certificates: it needs tls.client_ca_file",
            );
        }
        if !tls.plain_listen.is_empty() {
            if !tls.enabled() {
                return invalid("tls.plain_listen is an extra plain-HTTP listener beside TLS: without TLS use server.listen");
            }
            match tls.plain_listen.parse::<SocketAddr>() {
                Ok(addr) if addr.ip().is_loopback() => {}
                _ => return invalid("tls.plain_listen must be a loopback address such as 127.0.0.1:8420 (plain HTTP is for local development only)"),
            }
        }
        if tls.enabled() && tls.reload_interval_ms == 0 {
            return invalid("tls.reload_interval_ms must be at least 1");
        }
        Ok(())
    }

    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let c = &self.cluster;
        if c.mode == ClusterMode::Single {
            if c.leader_mode == LeaderMode::PerNamespace {
                // Most likely a forgotten `mode = "etcd"`: one node would ignore it silently.
                return Err(ConfigError::Invalid(
                    "cluster.leader_mode = \"per-namespace\" needs cluster.mode = \"etcd\" (a single node leads every namespace)".into(),
                ));
            }
            return Ok(());
        }
        let invalid = |msg: String| Err(ConfigError::Invalid(msg));
        let endpoints = c.endpoints();
        if endpoints.is_empty() {
            return invalid("cluster.etcd_endpoints must name at least one etcd URL".into());
        }
        if let Some(bad) = endpoints
            .iter()
            .find(|e| !(e.starts_with("http://") || e.starts_with("https://")))
        {
            return invalid(format!(
                "cluster.etcd_endpoints: {bad:?} must start with http:// or https://"
            ));
        }
        if !c.etcd_prefix.starts_with('/') || !c.etcd_prefix.ends_with('/') {
            return invalid(format!(
                "cluster.etcd_prefix must start and end with '/', got {:?}",
                c.etcd_prefix
            ));
        }
        if !c.advertise_url.is_empty()
            && (!(c.advertise_url.starts_with("http://")
                || c.advertise_url.starts_with("https://"))
                || c.advertise_url.ends_with('/'))
        {
            return invalid(format!(
                "cluster.advertise_url must be a base URL such as http://timelock1:8421 (no trailing '/'), got {:?}",
                c.advertise_url
            ));
        }
        if c.lease_ttl_secs < 2 {
            return invalid(
                "cluster.lease_ttl_secs must be at least 2 (etcd's minimum lease)".into(),
            );
        }
        if c.renew_interval_ms == 0 || c.etcd_timeout_ms == 0 {
            return invalid(
                "cluster.renew_interval_ms and cluster.etcd_timeout_ms must be positive".into(),
            );
        }
        if c.shards == 0 || c.shards > MAX_SHARDS {
            return invalid(format!(
                "cluster.shards must be between 1 and {MAX_SHARDS}, got {}",
                c.shards
            ));
        }
        if c.max_clock_drift_ppm >= 500_000 {
            return invalid("cluster.max_clock_drift_ppm must be below 500000".into());
        }
        let window = c.serving_window();
        if window <= std::time::Duration::from_millis(c.renew_interval_ms) {
            return invalid(format!(
                "cluster: the serving window (lease_ttl_secs minus drift minus safety_margin_ms = {window:?}) must be longer than renew_interval_ms ({} ms), or the leader would stop serving between renewals",
                c.renew_interval_ms
            ));
        }
        Ok(())
    }

    /// Where backups go.
    pub fn storage_backups_dir(&self) -> PathBuf {
        self.backup.dir.clone()
    }

    /// The listen address (validated by [`Settings::validate`]).
    pub fn listen_addr(&self) -> SocketAddr {
        self.server
            .listen
            .parse()
            .expect("validated listen address")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env() -> config::Environment {
        config::Environment::with_prefix("TIMELOCK_TEST_UNUSED_PREFIX")
    }

    #[test]
    fn shipped_config_file_matches_built_in_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/timelock.toml");
        let from_file = Settings::load_with_env(Some(&path), &Overrides::default(), no_env())
            .expect("shipped config loads");
        assert_eq!(from_file, Settings::default());
    }

    #[test]
    fn env_overrides_file_and_flags_override_env() {
        let env = config::Environment::with_prefix("TIMELOCK").source(Some(
            [
                (
                    "TIMELOCK__SERVER__LISTEN".to_string(),
                    "127.0.0.1:1".to_string(),
                ),
                (
                    "TIMELOCK__TIMESTAMP__RESERVATION".to_string(),
                    "5000".to_string(),
                ),
            ]
            .into_iter()
            .collect(),
        ));
        let overrides = Overrides {
            listen: Some("127.0.0.1:2".into()),
            data_dir: None,
        };
        let s = Settings::load_with_env(None, &overrides, env).unwrap();
        assert_eq!(s.server.listen, "127.0.0.1:2");
        assert_eq!(s.timestamp.reservation, 5000);
    }

    #[test]
    fn cluster_settings_are_checked_in_etcd_mode_only() {
        let with = |f: &dyn Fn(&mut ClusterSettings)| {
            let mut s = Settings::default();
            s.cluster.mode = ClusterMode::Etcd;
            f(&mut s.cluster);
            s.validate()
        };
        assert!(with(&|_| {}).is_ok(), "shipped cluster defaults are valid");
        assert!(with(&|c| c.leader_mode = LeaderMode::PerNamespace).is_ok());
        for bad in [0, MAX_SHARDS + 1] {
            assert!(with(&|c| c.shards = bad).is_err(), "shards {bad}");
        }
        assert!(with(&|c| c.shards = MAX_SHARDS).is_ok());
        let mut single = Settings::default();
        single.cluster.leader_mode = LeaderMode::PerNamespace;
        assert!(single.validate().is_err(), "per-namespace without etcd");
        assert!(with(&|c| c.etcd_endpoints = " , ".into()).is_err());
        assert!(with(&|c| c.etcd_endpoints = "etcd1:2379".into()).is_err());
        assert!(with(&|c| c.etcd_prefix = "timelock".into()).is_err());
        assert!(with(&|c| c.advertise_url = "http://node1:8421/".into()).is_err());
        assert!(with(&|c| c.advertise_url = "node1:8421".into()).is_err());
        assert!(with(&|c| c.lease_ttl_secs = 1).is_err());
        assert!(
            with(&|c| c.safety_margin_ms = 2_500).is_err(),
            "no window left"
        );
        assert!(with(&|c| c.renew_interval_ms = 0).is_err());
        let mut single = Settings::default();
        single.cluster.etcd_endpoints = "not checked".into();
        assert!(single.validate().is_ok());
        let two = ClusterSettings {
            etcd_endpoints: "http://a:2379, http://b:2379".into(),
            ..ClusterSettings::default()
        };
        assert_eq!(two.endpoints(), ["http://a:2379", "http://b:2379"]);
        // 3 s less 1 % drift (30 ms) less the 500 ms margin.
        assert_eq!(
            ClusterSettings::default().serving_window(),
            std::time::Duration::from_millis(2_470)
        );
    }

    #[test]
    fn client_read_timeouts_are_bounded() {
        for (header, body, ok) in [
            (30_000, 30_000, true),
            (MAX_CLIENT_READ_TIMEOUT_MS, MAX_CLIENT_READ_TIMEOUT_MS, true),
            (MAX_CLIENT_READ_TIMEOUT_MS + 1, 30_000, false),
            (30_000, MAX_CLIENT_READ_TIMEOUT_MS + 1, false),
            (30_000, u64::MAX, false),
        ] {
            let mut s = Settings::default();
            s.server.header_read_timeout_ms = header;
            s.server.body_read_timeout_ms = body;
            assert_eq!(s.validate().is_ok(), ok, "{header} {body}");
        }
    }

    #[test]
    fn lock_v1_settings_are_checked() {
        let mut s = Settings::default();
        s.lock_v1.blocking_timeout_ms = 0;
        assert!(s.validate().is_err());
        let mut s = Settings::default();
        s.lock_v1.max_concurrent_lock_requests = 0;
        assert!(s.validate().is_err());
        let mut s = Settings::default();
        s.lock_v1.blocking_timeout_ms = 500;
        assert!(s.validate().is_ok());
        assert_eq!(Settings::default().lock_v1.max_clock_drift_ms, 5_000);
        for (drift, ok) in [
            (0, true),
            (600_000, true),
            (600_001, false),
            (u64::MAX, false),
        ] {
            let mut s = Settings::default();
            s.lock_v1.max_clock_drift_ms = drift;
            let result = s.validate();
            assert_eq!(result.is_ok(), ok, "{drift}: {result:?}");
            if let Err(e) = result {
                assert!(e.to_string().contains("lock_v1.max_clock_drift_ms"), "{e}");
            }
        }
    }

    #[test]
    fn backup_schedules() {
        let with = |schedule: &str| BackupSettings {
            schedule: schedule.into(),
            ..BackupSettings::default()
        };
        assert_eq!(with("").schedule_interval().unwrap(), None);
        assert_eq!(
            with("30s").schedule_interval().unwrap(),
            Some(std::time::Duration::from_secs(30))
        );
        assert_eq!(
            with("6h").schedule_interval().unwrap(),
            Some(std::time::Duration::from_secs(21_600))
        );
        assert_eq!(
            with("1d").schedule_interval().unwrap(),
            Some(std::time::Duration::from_secs(86_400))
        );
        for bad in ["0s", "h", "5", "5 weeks", "-1h", "99999999999999999999d"] {
            assert!(with(bad).schedule_interval().is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected() {
        let env = config::Environment::with_prefix("TIMELOCK").source(Some(
            [("TIMELOCK__SERVER__LISTN".to_string(), "x".to_string())]
                .into_iter()
                .collect(),
        ));
        assert!(Settings::load_with_env(None, &Overrides::default(), env).is_err());
        let bad = Overrides {
            listen: Some("not an address".into()),
            data_dir: None,
        };
        assert!(Settings::load_with_env(None, &bad, no_env()).is_err());
    }
}
