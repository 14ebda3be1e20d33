//! The command line, parsed and nothing more: `config` checks what it means.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

use clap::{Args, Parser, Subcommand};

/// A group chat whose live channel is Web Push.
#[derive(Debug, Parser)]
#[command(name = "pushchat", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the chat: the page, its service worker and the JSON API.
    Serve(ServeArgs),
    /// Measure how fast one chat line fans out to many members, through the real API and
    /// delivery engine, to virtual members on a local push service.
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Member counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    pub members: Vec<usize>,

    /// Send to an external push service instead: endpoints are URL/0, URL/1, …, and it
    /// must answer 2xx to any POST under URL.
    #[arg(long, value_name = "URL")]
    pub push_service: Option<String>,

    /// The local push service decrypts one push in this many (it checks every push's
    /// headers and VAPID), so the receiver does not eat the CPU being measured.
    #[arg(long, default_value_t = 100)]
    pub decrypt_every: u64,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "PUSHCHAT_ADDR", default_value = "127.0.0.1:3000")]
    pub addr: SocketAddr,

    /// Folder for the database and the VAPID key pair; created on first start.
    #[arg(long, env = "PUSHCHAT_DATA_DIR", default_value = "pushchat-data")]
    pub data_dir: PathBuf,

    /// Contact push services can reach the operator at: mailto:you@example.org or an
    /// https: URL. Required.
    #[arg(long, env = "PUSHCHAT_VAPID_SUBJECT", value_name = "CONTACT")]
    pub vapid_subject: Option<String>,

    /// Accept push endpoints on loopback addresses (http or https), for local testing
    /// with the local push service. Never on a public server.
    #[arg(long, env = "PUSHCHAT_ALLOW_LOOPBACK_ENDPOINTS")]
    pub allow_loopback_endpoints: bool,

    /// How many chat lines to keep and show to arriving members.
    #[arg(long, env = "PUSHCHAT_HISTORY_LIMIT", default_value_t = 200)]
    pub history_limit: usize,

    /// How many chat lines one member may post in a minute.
    #[arg(long, env = "PUSHCHAT_CHAT_LINES_PER_MINUTE", default_value_t = 30)]
    pub chat_lines_per_minute: u32,

    /// How many members may have joined from one network address (people behind one
    /// router share one).
    #[arg(long, env = "PUSHCHAT_MEMBERS_PER_ADDRESS", default_value_t = 20)]
    pub members_per_address: usize,

    /// Reverse proxies (IP addresses, comma-separated) whose X-Forwarded-For header names
    /// the client, for per-address limits and logs. Without it the header is ignored.
    #[arg(
        long,
        env = "PUSHCHAT_TRUSTED_PROXY",
        value_delimiter = ',',
        value_name = "IP"
    )]
    pub trusted_proxy: Vec<IpAddr>,

    /// Upper bound of the database's page cache, in MiB.
    #[arg(long, env = "PUSHCHAT_CACHE_MIB", default_value_t = 64)]
    pub cache_mib: u64,
}
