//! `localpush`: runs the local push service until Ctrl-C, for local use of pushchat
//! (`pushchat serve --allow-loopback-endpoints`) and for poking at it by hand.

use std::net::SocketAddr;

use clap::Parser;
use localpush::LocalPush;

/// A local Web Push service (RFC 8030) with virtual subscribers, for testing pushchat.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "LOCALPUSH_ADDR", default_value = "127.0.0.1:8790")]
    addr: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let service = LocalPush::start(args.addr)
        .await
        .map_err(|error| anyhow::anyhow!("cannot listen on {}: {error}", args.addr))?;
    println!("localpush listening on {}", service.url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
