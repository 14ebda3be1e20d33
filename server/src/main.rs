//! `pushchat`: parses the command line, then hands off to the server library.

use std::process::ExitCode;

use anyhow::Context;
use tracing_subscriber::EnvFilter;

use server::{
    config::{self, cli::Command, Config},
    operator,
};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pushchat: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let cli = config::file::parse(std::env::args_os().collect())?;
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
    match cli.command {
        Command::Serve(args) => {
            let config = Config::from_args(args)?;
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
