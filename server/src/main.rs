//! `pushchat`: parses the command line, then hands off to the server library.

use std::{io::IsTerminal, process::ExitCode};

use anyhow::Context;
use tracing_subscriber::EnvFilter;

use server::{
    config::{
        self,
        cli::{Command, LogFormat},
        Config,
    },
    operator,
};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match config::file::parse(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(error) => {
            eprintln!("pushchat: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    start_logging(cli.log_format);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        // A log reader sees why the server stopped in the log's own format.
        Err(error) if cli.log_format == LogFormat::Json => {
            tracing::error!(error = format!("{error:#}"), "pushchat stopped");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("pushchat: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Log lines go to stderr, at `RUST_LOG`'s levels (`info` without it), coloured only
/// for a terminal (not for journald or a file).
fn start_logging(format: LogFormat) {
    let logs = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
    match command {
        Command::Serve(args) => {
            let config = Config::from_args(*args)?;
            runtime.block_on(server::serve(config, shutdown_signal()))
        }
        Command::Vapid(command) => runtime.block_on(operator::vapid(command)),
        Command::Members(args) => runtime.block_on(operator::members(args)),
        Command::Backup(args) => runtime.block_on(operator::backup(args)),
        Command::Restore(args) => runtime.block_on(operator::restore(args)),
        Command::Send(args) => runtime.block_on(operator::send(args)),
        Command::Bench(args) => runtime.block_on(server::operator::bench::run(args)),
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
