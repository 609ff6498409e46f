//! The operator's command line. `serve` runs the server; every other command talks to a running
//! server over HTTP, replacing the AtlasDB CLI's `timestamp fetch` / `fast-forward` for the
//! backup, restore and migration procedures.
//!
//! Errors are phrased for the person at the terminal: which server could not be reached, that a
//! node is not the leader (503/308), that a namespace is invalidated. A 308 redirect is followed
//! (its `Location` is the leader's base URL, to which the request path is appended, as AtlasDB
//! clients do).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Parser, Subcommand};
use reqwest::{Method, StatusCode};

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
    /// Base URL of the server, e.g. http://localhost:8421 or https://host:8421/timelock/api.
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

/// Runs a client command; returns what to print on success.
pub async fn run_timestamp_command(command: TimestampCommand) -> anyhow::Result<Option<String>> {
    let client = Client::new()?;
    match command {
        TimestampCommand::Fetch { target, file } => {
            let body = client
                .call(
                    Method::POST,
                    &target.server,
                    &format!("{}/timestamp/fresh-timestamp", target.namespace),
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
                    &format!(
                        "{}/timestamp-management/fast-forward?currentTimestamp={ts}",
                        target.namespace
                    ),
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
                    &format!("{}/timestamp-management/invalidate", target.namespace),
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
                    &format!(
                        "{}/timestamp-management/revalidate?currentTimestamp={ts}",
                        target.namespace
                    ),
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
    let client = Client::new()?;
    let body = client.call(Method::GET, server, "health/ready").await?;
    Ok(body)
}

impl TimestampSource {
    fn resolve(&self) -> anyhow::Result<i64> {
        match (&self.timestamp, &self.file) {
            (Some(ts), _) => Ok(*ts),
            (None, Some(path)) => read_timestamp_file(path),
            (None, None) => bail!("give --timestamp or --file"),
        }
    }
}

/// Reads a single-line decimal timestamp.
pub fn read_timestamp_file(path: &Path) -> anyhow::Result<i64> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read timestamp file {}", path.display()))?;
    parse_timestamp(&text).with_context(|| {
        format!(
            "timestamp file {} does not hold one decimal timestamp",
            path.display()
        )
    })
}

fn parse_timestamp(text: &str) -> anyhow::Result<i64> {
    text.trim()
        .parse::<i64>()
        .map_err(|_| anyhow!("expected a decimal timestamp, got {:?}", text.trim()))
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

/// Writes `contents` to `path` atomically and durably.
pub fn write_file_durably(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

struct Client {
    http: reqwest::Client,
}

impl Client {
    fn new() -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build()?;
        Ok(Self { http })
    }

    /// Sends the request to `base`/`path`, following up to 3 leader redirects. Returns the body
    /// of a 2xx response; anything else becomes an error that says what happened.
    async fn call(&self, method: Method, base: &str, path: &str) -> anyhow::Result<String> {
        let mut base = base.trim_end_matches('/').to_string();
        for _ in 0..4 {
            let url = format!("{base}/{path}");
            let response = self
                .http
                .request(method.clone(), &url)
                .header("Content-Type", "application/json")
                .header(
                    "User-Agent",
                    concat!("timelock-cli/", env!("CARGO_PKG_VERSION")),
                )
                .send()
                .await
                .map_err(|e| {
                    anyhow!(
                        "cannot reach timelock server at {base}: {}",
                        describe_reqwest(&e)
                    )
                })?;
            let status = response.status();
            if status == StatusCode::PERMANENT_REDIRECT || status == StatusCode::TEMPORARY_REDIRECT
            {
                let location = response
                    .headers()
                    .get("Location")
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| anyhow!("{base} is not the leader and did not say which node is (HTTP {status} without Location)"))?;
                eprintln!("{base} is not the leader; following redirect to {location}");
                base = location.trim_end_matches('/').to_string();
                continue;
            }
            let body = response.text().await.unwrap_or_default();
            if status.is_success() {
                return Ok(body);
            }
            return Err(explain_failure(&base, status, &body));
        }
        bail!("too many leader redirects; the cluster may be electing a leader, try again")
    }
}

fn describe_reqwest(e: &reqwest::Error) -> String {
    if e.is_connect() {
        "connection refused or host unreachable (is the server running, and is the URL right?)"
            .into()
    } else if e.is_timeout() {
        "timed out".into()
    } else {
        e.to_string()
    }
}

fn explain_failure(base: &str, status: StatusCode, body: &str) -> anyhow::Error {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let message = parsed
        .as_ref()
        .and_then(|v| v.pointer("/parameters/message"))
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| body.trim().to_string());
    match (status, field("errorName").as_deref()) {
        (_, Some("TimeLock:NamespaceInvalidated")) => anyhow!("refused: {message}"),
        (StatusCode::SERVICE_UNAVAILABLE, Some(_)) => {
            anyhow!("{base} cannot serve this (HTTP 503): {message}")
        }
        (StatusCode::SERVICE_UNAVAILABLE, None) => anyhow!(
            "{base} answered HTTP 503: it is not the leader (try another node) or is unavailable"
        ),
        (StatusCode::TOO_MANY_REQUESTS, _) => {
            anyhow!("{base} is overloaded (HTTP 429); try again shortly")
        }
        (status, Some(name)) => {
            anyhow!("{base} refused the request (HTTP {status}, {name}): {message}")
        }
        (status, None) => anyhow!("{base} answered HTTP {status}: {message}"),
    }
}
