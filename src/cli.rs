//! The operator's command line. `serve` runs the server; every other command talks to a running
//! server over HTTP, replacing the AtlasDB CLI's `timestamp fetch` / `fast-forward` for the
//! backup, restore and migration procedures.
//!
//! Errors are phrased for the person at the terminal: which server could not be reached, that a
//! node is not the leader (503/308), that a namespace is invalidated. A 308 redirect is followed
//! (its `Location` is the leader's base URL, to which the request path is appended, as AtlasDB
//! clients do).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use clap::{Args, Parser, Subcommand};
use reqwest::Method;

use crate::client::{
    check_namespace, check_servers, check_timestamp, encode_segment, parse_timestamp,
    read_timestamp_file, Client,
};
use crate::operations::write_file_durably;

mod cluster;
mod status;
pub use cluster::{run_cluster_command, ClusterCommand};
pub use status::{run_status, StatusArgs};

#[derive(Parser, Debug)]
#[command(
    name = "timelock",
    version,
    about = "A TimeLock-compatible timestamp server for AtlasDB"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Fetch, fast-forward, invalidate or revalidate a namespace's timestamps on a running server.
    #[command(subcommand)]
    Timestamp(TimestampCommand),
    /// Migrate namespaces between timestamp services, resumably and reversibly.
    #[command(subcommand)]
    Migrate(MigrateCommand),
    /// Back up, list, inspect, verify and restore the server's own state.
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Show what a server or a whole cluster is doing: role and leader, every namespace's
    /// state, last timestamp, durable bound and locks, the last backup, migrations in flight.
    Status(StatusArgs),
    /// A cluster's leadership: who leads which shards and namespaces (`status`), and moving
    /// namespaces to a node (`takeover`).
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Check a running server's readiness (exit 0 when ready); used by the Docker HEALTHCHECK.
    Health {
        /// Base URL of the server.
        #[arg(long, default_value = "http://127.0.0.1:8421")]
        server: String,
    },
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// TOML config file (see config/timelock.toml). Without it, built-in defaults apply.
    #[arg(long, env = "TIMELOCK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Listen address, e.g. 127.0.0.1:8421 (overrides server.listen).
    #[arg(long)]
    pub listen: Option<String>,
    /// RocksDB data directory (overrides storage.data_dir).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Write the port actually bound to this file once listening (useful with port 0).
    #[arg(long)]
    pub port_file: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct Target {
    /// Base URL of the server, e.g. http://localhost:8421 or https://host:8421/timelock/api. For
    /// a cluster, list its nodes separated by commas: a redirect to the leader is followed, and
    /// a node that answers 503 or cannot be reached is skipped.
    #[arg(long)]
    pub server: String,
    /// The namespace (AtlasDB client name).
    #[arg(long)]
    pub namespace: String,
}

#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct TimestampSource {
    /// The timestamp.
    #[arg(long, allow_negative_numbers = true)]
    pub timestamp: Option<i64>,
    /// A file holding the timestamp as one decimal line (as `fetch --file` writes it).
    #[arg(long)]
    pub file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum TimestampCommand {
    /// Fetch a fresh timestamp; print it, or write it to --file.
    Fetch {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Fast-forward the namespace so every later timestamp is greater than T.
    FastForward {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        source: TimestampSource,
    },
    /// Invalidate the namespace and print (or write to --file) the highest timestamp it could
    /// ever have issued. The namespace then refuses timestamps until revalidated.
    Invalidate {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Lift an invalidation and fast-forward past T in one step.
    Revalidate {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        source: TimestampSource,
    },
}

#[derive(Args, Debug, Clone)]
pub struct StateDir {
    /// Directory holding migration state files.
    #[arg(long, default_value = crate::operations::migration::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum MigrateCommand {
    /// Migrate: per namespace, check both ends, block the source (invalidate: returns its bound),
    /// fast-forward the destination past it, and verify. SRC and DST are server URLs or
    /// file:PATH (a file holding a timestamp).
    Start {
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        /// Namespaces to migrate (repeat the flag).
        #[arg(long = "namespace", required = true)]
        namespaces: Vec<String>,
        /// Rename: the destination namespace (with exactly one --namespace).
        #[arg(long)]
        to_namespace: Option<String>,
        /// Allow `migrate reverse` later (both sides must be servers).
        #[arg(long)]
        reversible: bool,
        /// Confirm the source's clients are stopped (needed when it cannot be invalidated).
        #[arg(long)]
        source_is_offline: bool,
        #[command(flatten)]
        dir: StateDir,
    },
    /// Continue a migration (after a crash) from its last recorded step.
    Resume {
        id: String,
        #[command(flatten)]
        dir: StateDir,
    },
    /// Reverse a committed --reversible migration: the old side takes over again.
    Reverse {
        id: String,
        #[command(flatten)]
        dir: StateDir,
    },
    /// Show a migration's state, progress and direction mapping (JSON).
    Status {
        id: String,
        #[command(flatten)]
        dir: StateDir,
    },
}

/// Runs a migrate command; returns what to print.
pub async fn run_migrate_command(command: MigrateCommand) -> anyhow::Result<Option<String>> {
    use crate::operations::migrate::{self, StartRequest};
    use crate::operations::migration;
    let m = match command {
        MigrateCommand::Start {
            from,
            to,
            namespaces,
            to_namespace,
            reversible,
            source_is_offline,
            dir,
        } => {
            let request = StartRequest {
                from: migrate::side(&from)?,
                to: migrate::side(&to)?,
                namespaces,
                to_namespace,
                reversible,
                source_is_offline,
            };
            migrate::start(&dir.state_dir, request).await?
        }
        MigrateCommand::Resume { id, dir } => migrate::resume(&dir.state_dir, &id).await?,
        MigrateCommand::Reverse { id, dir } => migrate::reverse(&dir.state_dir, &id).await?,
        MigrateCommand::Status { id, dir } => migration::load(&dir.state_dir, &id)?,
    };
    Ok(Some(serde_json::to_string_pretty(&m)?))
}

#[derive(Args, Debug, Clone)]
pub struct BackupDir {
    /// Directory holding the backups (the server's backup.dir).
    #[arg(long, default_value = "var/backups")]
    pub backup_dir: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum BackupCommand {
    /// Take a consistent point-in-time backup: of a running server through its admin API
    /// (--server, written to the server's backup.dir), or of a stopped server's data dir
    /// (--data-dir, written to --backup-dir).
    #[command(group(
        clap::ArgGroup::new("source")
            .required(true)
            .multiple(false)
            .args(["server", "data_dir"])
    ))]
    Create {
        /// Base URL of a running server (a /timelock/api path is allowed: admin routes are tried
        /// there, then at the server's root, where they live).
        #[arg(long)]
        server: Option<String>,
        /// Data dir of a stopped server.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[command(flatten)]
        dir: BackupDir,
        /// Name of the backup (default: creation time and type).
        #[arg(long)]
        name: Option<String>,
    },
    /// List backups: name, created, type, version, size.
    List {
        #[command(flatten)]
        dir: BackupDir,
    },
    /// Show a backup's metadata (--json for the raw metadata.json).
    Show {
        name: String,
        #[command(flatten)]
        dir: BackupDir,
        #[arg(long)]
        json: bool,
    },
    /// Check every file's checksum and open the backup read-only.
    Verify {
        name: String,
        #[command(flatten)]
        dir: BackupDir,
    },
    /// Restore a backup into a stopped server's data dir. DESTRUCTIVE: the current data is moved
    /// aside (not deleted). Restored namespaces are fenced until fast-forwarded, unless
    /// --fast-forward-to/--fast-forward-file gives the last timestamp the world may have seen.
    Restore {
        name: String,
        #[arg(long)]
        data_dir: PathBuf,
        #[command(flatten)]
        dir: BackupDir,
        /// Do not ask for confirmation (for scripts).
        #[arg(long)]
        yes: bool,
        /// Raise every namespace past this timestamp (positive) and leave it unfenced; it is
        /// also the floor of every namespace created after the restore.
        #[arg(
            long,
            allow_negative_numbers = true,
            conflicts_with = "fast_forward_file"
        )]
        fast_forward_to: Option<i64>,
        /// A file holding that timestamp (as `timestamp fetch --file` writes it).
        #[arg(long)]
        fast_forward_file: Option<PathBuf>,
    },
}

fn human_bytes(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// The metadata as `key: value` lines, as operators know it from ThingPark's `get-backup-metadatas`.
pub fn describe_backup(m: &crate::operations::backup::BackupMetadata) -> String {
    let mut out = format!(
        "id: {}\ntm: '{}'\ntype: {}\nserverVersion: {}\nformatVersion: {}\nsize: {}\nfiles: {}\nnamespaces:\n",
        m.name,
        m.created_at,
        m.backup_type.as_str(),
        m.server_version,
        m.format_version,
        human_bytes(m.total_bytes()),
        m.files.len()
    );
    for ns in &m.namespaces {
        let mut flags = Vec::new();
        if ns.invalidated {
            flags.push("invalidated");
        }
        if ns.fenced {
            flags.push("fenced");
        }
        out.push_str(&format!(
            "    {}: bound {}{}\n",
            ns.name,
            ns.bound,
            if flags.is_empty() {
                String::new()
            } else {
                format!(" ({})", flags.join(", "))
            }
        ));
    }
    out.trim_end().to_string()
}

/// Runs a backup command; returns what to print on success.
pub async fn run_backup_command(command: BackupCommand) -> anyhow::Result<Option<String>> {
    use crate::operations::backup;
    match command {
        BackupCommand::Create {
            server: Some(server),
            name,
            ..
        } => {
            check_servers(&server)?;
            if let Some(n) = &name {
                backup::validate_backup_name(n)?;
            }
            let client = Client::new()?;
            let path = match &name {
                Some(n) => format!("admin/backups?name={}", encode_segment(n)),
                None => "admin/backups".to_string(),
            };
            let body = client.call_admin(Method::POST, &server, &path).await?;
            let m: backup::BackupMetadata = serde_json::from_str(&body)
                .context("server returned unreadable backup metadata")?;
            Ok(Some(format!(
                "backup {} created by {server}\n{}",
                m.name,
                describe_backup(&m)
            )))
        }
        BackupCommand::Create {
            server: None,
            data_dir,
            dir,
            name,
        } => {
            let data_dir = data_dir.ok_or_else(|| {
                anyhow!("give --server URL (a running server) or --data-dir DIR (a stopped server's data)")
            })?;
            let m = tokio::task::spawn_blocking(move || {
                backup::create_offline(
                    &data_dir,
                    &dir.backup_dir,
                    name.as_deref(),
                    backup::BackupType::OnDemand,
                )
            })
            .await??;
            Ok(Some(format!(
                "backup {} created\n{}",
                m.name,
                describe_backup(&m)
            )))
        }
        BackupCommand::List { dir } => {
            let all = backup::list(&dir.backup_dir)?;
            let mut out = format!(
                "{:<40} {:<22} {:<12} {:<10} {:>10}",
                "NAME", "CREATED", "TYPE", "VERSION", "SIZE"
            );
            for m in &all {
                out.push_str(&format!(
                    "\n{:<40} {:<22} {:<12} {:<10} {:>10}",
                    m.name,
                    m.created_at,
                    m.backup_type.as_str(),
                    m.server_version,
                    human_bytes(m.total_bytes())
                ));
            }
            if all.is_empty() {
                out.push_str(&format!("\n(no backups in {})", dir.backup_dir.display()));
            }
            Ok(Some(out))
        }
        BackupCommand::Show { name, dir, json } => {
            let m = backup::show(&dir.backup_dir, &name)?;
            Ok(Some(if json {
                serde_json::to_string_pretty(&m)?
            } else {
                describe_backup(&m)
            }))
        }
        BackupCommand::Verify { name, dir } => {
            let m = backup::verify(&dir.backup_dir, &name)?;
            Ok(Some(format!(
                "backup {} is intact: {} files, {}, {} namespaces",
                m.name,
                m.files.len(),
                human_bytes(m.total_bytes()),
                m.namespaces.len()
            )))
        }
        BackupCommand::Restore {
            name,
            data_dir,
            dir,
            yes,
            fast_forward_to,
            fast_forward_file,
        } => {
            let fast_forward = match (fast_forward_to, fast_forward_file) {
                (Some(t), _) => Some(t),
                (None, Some(f)) => Some(read_timestamp_file(&f)?),
                (None, None) => None,
            };
            if let Some(t) = fast_forward {
                backup::check_restore_floor(t)?;
            }
            let m = backup::show(&dir.backup_dir, &name)?;
            eprintln!(
                "{} backup will be used to restore {}",
                m.name,
                data_dir.display()
            );
            eprintln!("WARNING: Destructive Operation !!!");
            eprintln!("This replaces the data in {} with the backup taken {}; the current data is moved aside, not deleted.", data_dir.display(), m.created_at);
            if !yes {
                use std::io::IsTerminal;
                if !std::io::stdin().is_terminal() {
                    bail!("refusing to restore without confirmation: no terminal to ask on; pass --yes to confirm");
                }
                eprint!("Are you sure you want to replace the current data? (yes/no) ");
                let mut answer = String::new();
                std::io::stdin().read_line(&mut answer)?;
                if answer.trim() != "yes" {
                    bail!("restore cancelled; nothing was changed");
                }
            }
            let report = tokio::task::spawn_blocking(move || {
                backup::restore(
                    &dir.backup_dir,
                    &name,
                    &data_dir,
                    fast_forward,
                    |done, total| {
                        eprintln!("copied {} of {}", human_bytes(done), human_bytes(total));
                    },
                )
                .map(|r| (r, data_dir))
            })
            .await??;
            let (report, data_dir) = report;
            let mut out = format!(
                "restored backup {} into {}",
                report.metadata.name,
                data_dir.display()
            );
            if let Some(aside) = &report.moved_aside {
                out.push_str(&format!(
                    "\nthe previous data was moved to {}",
                    aside.display()
                ));
            }
            match &report.replaced_bounds {
                backup::ReplacedBounds::NoData => {}
                backup::ReplacedBounds::Floors(n) => out.push_str(&format!(
                    "\nthe replaced data dir could still be read: the bounds of its {n} namespaces were kept as floors (nothing it knew is handed out again)"
                )),
                backup::ReplacedBounds::Unreadable(why) => out.push_str(&format!(
                    "\nthe replaced data dir could not be read ({why}); no floors were taken from it"
                )),
            }
            if report.fenced {
                out.push_str("\nevery namespace is FENCED, and so is every namespace first used after the restore: each refuses timestamps until fast-forwarded past the last timestamp issued before the restore (timelock timestamp fast-forward --server URL --namespace NS --timestamp T)");
            } else if let Some(t) = fast_forward {
                out.push_str(&format!("\nevery namespace was fast-forwarded past {t}, and every namespace first used after the restore starts past it too"));
            }
            Ok(Some(out))
        }
    }
}

/// Runs a client command; returns what to print on success.
pub async fn run_timestamp_command(command: TimestampCommand) -> anyhow::Result<Option<String>> {
    // Every check before the first request: the namespace by the server's own rule, the URLs,
    // the timestamp (or the file holding it).
    match &command {
        TimestampCommand::Fetch { target, file }
        | TimestampCommand::Invalidate { target, file } => {
            target.check()?;
            if let Some(path) = file {
                check_output_file(path)?;
            }
        }
        TimestampCommand::FastForward { target, source }
        | TimestampCommand::Revalidate { target, source } => {
            target.check()?;
            source.resolve()?;
        }
    }
    let client = Client::new()?;
    match command {
        TimestampCommand::Fetch { target, file } => {
            let body = client
                .call(
                    Method::POST,
                    &target.server,
                    &target.path("timestamp/fresh-timestamp"),
                )
                .await?;
            let ts = parse_timestamp(&body)
                .context("server returned something other than a timestamp")?;
            emit(ts, file.as_deref())
        }
        TimestampCommand::FastForward { target, source } => {
            let ts = source.resolve()?;
            client
                .call(
                    Method::POST,
                    &target.server,
                    &target.path(&format!(
                        "timestamp-management/fast-forward?currentTimestamp={ts}"
                    )),
                )
                .await?;
            Ok(Some(format!(
                "fast-forwarded namespace {} to {ts}",
                target.namespace
            )))
        }
        TimestampCommand::Invalidate { target, file } => {
            let body = client
                .call(
                    Method::POST,
                    &target.server,
                    &target.path("timestamp-management/invalidate"),
                )
                .await?;
            let bound =
                parse_timestamp(&body).context("server returned something other than a bound")?;
            eprintln!(
                "namespace {} is now invalidated on {}; the highest timestamp it can have issued is {bound}",
                target.namespace, target.server
            );
            emit(bound, file.as_deref())
        }
        TimestampCommand::Revalidate { target, source } => {
            let ts = source.resolve()?;
            client
                .call(
                    Method::POST,
                    &target.server,
                    &target.path(&format!(
                        "timestamp-management/revalidate?currentTimestamp={ts}"
                    )),
                )
                .await?;
            Ok(Some(format!(
                "revalidated namespace {} past {ts}",
                target.namespace
            )))
        }
    }
}

/// `timelock health`: Ok if `/health/ready` answers 200.
pub async fn run_health(server: &str) -> anyhow::Result<String> {
    check_servers(server)?;
    let client = Client::new()?;
    let body = client.call(Method::GET, server, "health/ready").await?;
    Ok(body)
}

impl Target {
    /// Refuses a namespace the server would refuse (its own rule) and a malformed server list,
    /// before anything is sent.
    pub fn check(&self) -> anyhow::Result<()> {
        check_namespace(&self.namespace)?;
        check_servers(&self.server)
    }

    /// `<namespace>/<rest>`, the namespace percent-encoded as one path segment.
    fn path(&self, rest: &str) -> String {
        format!("{}/{rest}", encode_segment(&self.namespace))
    }
}

impl TimestampSource {
    fn resolve(&self) -> anyhow::Result<i64> {
        match (&self.timestamp, &self.file) {
            (Some(ts), _) => check_timestamp(*ts).context("--timestamp"),
            (None, Some(path)) => read_timestamp_file(path),
            (None, None) => bail!("give --timestamp or --file"),
        }
    }
}

/// Refuses an output file that cannot be written (its directory missing, or a directory in its
/// place) before the request whose answer it is to hold: an invalidation whose bound cannot be
/// written down would leave the operator without it.
fn check_output_file(path: &Path) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        bail!(
            "cannot write {}: directory {} does not exist; nothing was sent",
            path.display(),
            dir.display()
        );
    }
    if path.is_dir() {
        bail!(
            "cannot write {}: it is a directory; nothing was sent",
            path.display()
        );
    }
    Ok(())
}

/// Prints the value, or writes it (durably: write, fsync, rename) to `file`.
fn emit(value: i64, file: Option<&Path>) -> anyhow::Result<Option<String>> {
    match file {
        None => Ok(Some(value.to_string())),
        Some(path) => {
            write_file_durably(path, &format!("{value}\n"))?;
            eprintln!("wrote {value} to {}", path.display());
            Ok(None)
        }
    }
}
