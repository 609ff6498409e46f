//! The `timelock` binary: parses the command line, sets up logging, and runs the server or a
//! client command. Errors are reported once, at this edge, with their full context chain.

use std::process::ExitCode;

use clap::Parser;
use timelock::cli::{
    run_health, run_timestamp_command, write_file_durably, Cli, Command, ServeArgs,
};
use timelock::config::{LogFormat, Overrides, Settings};
use timelock::server::{shutdown_signal, Server};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(args).await.map(|()| None),
            Command::Timestamp(command) => run_timestamp_command(command).await,
            Command::Health { server } => run_health(&server).await.map(Some),
            Command::Backup(command) => timelock::cli::run_backup_command(command).await,
            Command::Migrate(command) => timelock::cli::run_migrate_command(command).await,
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
        namespaces = server.state().namespaces().map(|n| n.names().len()).unwrap_or(0),
        role = server.state().leadership.role().as_str(),
        "timelock listening on http://{addr} with data in {}",
        data_dir.display()
    );
    server.serve(shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}
