//! The `timelock` binary: parses the command line, sets up logging, and runs the server or a
//! client command. Errors are reported once, at this edge, with their full context chain.

use std::process::ExitCode;

use clap::Parser;
use timelock::cli::{run_health, run_timestamp_command, Cli, Command, ServeArgs};
use timelock::config::{LogFormat, Overrides, Settings};
use timelock::operations::write_file_durably;
use timelock::server::{shutdown_signal, Server};

/// mimalloc rather than glibc's malloc: the request paths allocate a handful of small blocks per
/// request (hyper's header map and read buffer, the handler's boxed future, the answer), and
/// glibc's allocate-and-free pairs were a visible share of that path (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match cli.command {
        Command::Serve(_) => server_runtime(),
        // Client commands make a handful of HTTP calls: one thread, nothing to spread.
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    }
    .expect("tokio runtime");
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(args).await.map(|()| None),
            Command::Timestamp(command) => run_timestamp_command(command).await,
            Command::Health { server } => run_health(&server).await.map(Some),
            Command::Backup(command) => timelock::cli::run_backup_command(command).await,
            Command::Migrate(command) => timelock::cli::run_migrate_command(command).await,
            Command::Status(args) => timelock::cli::run_status(args).await,
            Command::Cluster(command) => timelock::cli::run_cluster_command(command).await,
        }
    });
    match result {
        Ok(Some(output)) => {
            println!("{output}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("timelock: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The server's runtime, sized for small machines (the reference deployment has 2 cores):
/// * one worker per CPU the process may use (`available_parallelism` honours cgroup quotas and
///   affinity), at least 2 so a request waiting on a bound write never stalls the only worker;
/// * a small blocking pool: it only runs RocksDB bound writes, loads and backups, which are
///   serialised per namespace anyway, and every idle thread costs memory;
/// * the default event interval and LIFO slot: request/response pairs on keep-alive
///   connections are short tasks, where polling I/O every 61 tasks and the LIFO slot's
///   cache locality both pay.
fn server_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cpus.max(2))
        .max_blocking_threads(16)
        .thread_keep_alive(std::time::Duration::from_secs(10))
        .thread_name("timelock-worker")
        .enable_all()
        .build()
}

fn init_logging(settings: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&settings.log.level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stdout);
    match settings.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Plain => builder.init(),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
        listen: args.listen.clone(),
        data_dir: args.data_dir.clone(),
    };
    let settings = Settings::load(args.config.as_deref(), &overrides)?;
    init_logging(&settings);
    let server = Server::bind(&settings).await?;
    let addr = server.local_addr();
    let data_dir =
        std::path::absolute(server.data_dir()).unwrap_or_else(|_| server.data_dir().to_path_buf());
    if let Some(port_file) = &args.port_file {
        write_file_durably(port_file, &format!("{}\n", addr.port()))?;
    }
    tracing::info!(
        version = timelock::VERSION,
        %addr,
        data_dir = %data_dir.display(),
        store = server.store_description(),
        namespaces = server.state().leadership.registries().iter().map(|r| r.len()).sum::<usize>(),
        role = server.state().leadership.role().as_str(),
        "timelock listening on {}://{addr} with data in {}",
        if settings.tls.enabled() { "https" } else { "http" },
        data_dir.display()
    );
    if let Some(plain) = server.plain_addr() {
        tracing::info!(%plain, "also listening for plain HTTP on {plain} (tls.plain_listen, loopback only)");
    }
    server.serve(shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}
