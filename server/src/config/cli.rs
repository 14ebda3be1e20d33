//! The command line, parsed and nothing more: `config` checks what it means.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::chat::{
    DEFAULT_CHAT_LINES_PER_MINUTE, DEFAULT_HISTORY_LIMIT, DEFAULT_MEMBERS_PER_ADDRESS,
    DEFAULT_STALE_AFTER_DAYS,
};

/// The address `serve` listens on unless told otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:3000";

/// A group chat whose live channel is Web Push.
#[derive(Debug, Parser)]
#[command(name = "pushchat", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// A TOML file of settings: each key is a flag's long name (`data-dir =
    /// "/var/lib/pushchat"`); flags and environment variables override it.
    #[arg(long, global = true, env = "PUSHCHAT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// How log lines are written to stderr: `text` for people, `json` for machines (one
    /// object per line, its fields under "fields").
    #[arg(
        long,
        global = true,
        env = "PUSHCHAT_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the chat: the page, its service worker and the JSON API.
    // Boxed: its flags outweigh every other subcommand's many times over.
    Serve(Box<ServeArgs>),
    /// Show the server's VAPID identity, or make a new key pair.
    #[command(subcommand)]
    Vapid(VapidCommand),
    /// List the members (the default), or remove or unban one.
    Members(MembersArgs),
    /// Write a consistent copy of the members, history, bans and VAPID key pair to FILE
    /// (created with mode 0600: it holds the private key).
    Backup(BackupArgs),
    /// Fill a new, empty data dir from a backup FILE. The server must be stopped.
    Restore(BackupArgs),
    /// Push a notice from the operator to one member or to everyone.
    Send(SendArgs),
    /// Measure how fast one chat line fans out to many members, through the real API and
    /// delivery engine, to virtual members on a local push service.
    Bench(BenchArgs),
}

/// Where the chat lives. While `pushchat serve` runs on it, the other subcommands reach
/// the server through the data dir's admin socket; otherwise they open the store themselves.
#[derive(Debug, Args)]
pub struct DataDirArg {
    /// Folder for the database and the VAPID key pair; `serve` creates it on first start.
    #[arg(
        long,
        env = "PUSHCHAT_DATA_DIR",
        default_value = "pushchat-data",
        global = true
    )]
    pub data_dir: PathBuf,

    /// Keep the chat in PostgreSQL at this URL (postgres://USER:PASSWORD@HOST/DB) instead
    /// of the data dir, so that several instances serve one chat. The data dir still
    /// holds each instance's admin socket.
    #[arg(
        long,
        env = "PUSHCHAT_DATABASE_URL",
        global = true,
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
}

/// The address people open the chat at, which every push's notification links to.
#[derive(Debug, Args)]
pub struct PublicUrlArg {
    /// The chat's public URL as people open it (https://chat.example.org/): every push
    /// carries it, and a click on a notification opens it. At most 128 bytes. [default:
    /// http://ADDR/ of `serve --addr` (https with --tls-cert), localhost for an
    /// unspecified address]
    #[arg(long, env = "PUSHCHAT_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum VapidCommand {
    /// Print the public key (what browsers subscribe with) and the contact.
    Show(DataDirArg),
    /// Make a new key pair. Every browser subscription is bound to the old key, so with
    /// members this needs --force, removes them all, and they must subscribe again.
    Generate {
        #[command(flatten)]
        data: DataDirArg,
        /// Replace the key even though members exist.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Args)]
pub struct MembersArgs {
    #[command(subcommand)]
    pub action: Option<MembersAction>,
    #[command(flatten)]
    pub data: DataDirArg,
}

#[derive(Debug, Subcommand)]
pub enum MembersAction {
    /// Name, push service, when they joined, and how the last push to them went.
    List,
    /// Remove the member called NAME; the others are told NAME left.
    Remove {
        name: String,
        /// Also refuse NAME (in any case) to whoever tries to join with it later.
        #[arg(long)]
        ban: bool,
    },
    /// Let a banned NAME join again.
    Unban { name: String },
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    pub file: PathBuf,
    #[command(flatten)]
    pub data: DataDirArg,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// The text of the notice.
    pub text: String,
    /// The member to send it to; everyone without it.
    #[arg(long, value_name = "NAME")]
    pub to: Option<String>,
    #[command(flatten)]
    pub data: DataDirArg,
    // For a notice sent when no server runs (a running server uses its own).
    #[command(flatten)]
    pub public_url: PublicUrlArg,
    /// Deliver to loopback push endpoints when no server runs (local testing only; a
    /// running server uses its own setting).
    #[arg(long, env = "PUSHCHAT_ALLOW_LOOPBACK_ENDPOINTS")]
    pub allow_loopback_endpoints: bool,
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
    #[arg(long, env = "PUSHCHAT_ADDR", default_value = DEFAULT_ADDR)]
    pub addr: SocketAddr,

    #[command(flatten)]
    pub public_url: PublicUrlArg,

    #[command(flatten)]
    pub data: DataDirArg,

    /// Contact push services can reach the operator at: mailto:you@example.org or an
    /// https: URL. Required.
    #[arg(long, env = "PUSHCHAT_VAPID_SUBJECT", value_name = "CONTACT")]
    pub vapid_subject: Option<String>,

    /// Accept push endpoints on loopback addresses (http or https), for local testing
    /// with the local push service. Never on a public server.
    #[arg(long, env = "PUSHCHAT_ALLOW_LOOPBACK_ENDPOINTS")]
    pub allow_loopback_endpoints: bool,

    /// Accept push endpoints only on these push services: host names, comma-separated,
    /// each also admitting its subdomains (fcm.googleapis.com,push.services.mozilla.com).
    /// A browser whose push service is not listed cannot join. Without it, any public
    /// https host.
    #[arg(
        long,
        env = "PUSHCHAT_PUSH_SERVICES",
        value_delimiter = ',',
        value_name = "HOST"
    )]
    pub push_services: Vec<String>,

    /// How many chat lines to keep: a page loads the newest 200 and members scroll back
    /// through the rest.
    #[arg(long, env = "PUSHCHAT_HISTORY_LIMIT", default_value_t = DEFAULT_HISTORY_LIMIT)]
    pub history_limit: usize,

    /// How many chat lines one member may post in a minute.
    #[arg(
        long,
        env = "PUSHCHAT_CHAT_LINES_PER_MINUTE",
        default_value_t = DEFAULT_CHAT_LINES_PER_MINUTE
    )]
    pub chat_lines_per_minute: u32,

    /// How many members may have joined from one network address (people behind one
    /// router share one).
    #[arg(
        long,
        env = "PUSHCHAT_MEMBERS_PER_ADDRESS",
        default_value_t = DEFAULT_MEMBERS_PER_ADDRESS
    )]
    pub members_per_address: usize,

    /// Days a browser may show no sign of life (its page's calls, its worker's daily
    /// report that pushes arrive) before it is warned, then removed a week later unless
    /// the chat is opened there; "off" never prunes. 60: Mozilla's push service drops a
    /// browser silent that long.
    #[arg(
        long,
        env = "PUSHCHAT_STALE_AFTER",
        value_name = "DAYS",
        default_value_t = DEFAULT_STALE_AFTER_DAYS.to_string()
    )]
    pub stale_after: String,

    /// Reverse proxies (IP addresses, comma-separated) whose X-Forwarded-For header names
    /// the client, for per-address limits and logs. Without it the header is ignored.
    #[arg(
        long,
        env = "PUSHCHAT_TRUSTED_PROXY",
        value_delimiter = ',',
        value_name = "IP"
    )]
    pub trusted_proxy: Vec<IpAddr>,

    /// A passphrase newcomers must give to join (share it with the people you invite).
    /// Without it, anyone who reaches the page can join.
    #[arg(long, env = "PUSHCHAT_JOIN_PASSPHRASE", hide_env_values = true)]
    pub join_passphrase: Option<String>,

    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key. Browsers allow
    /// service workers, and so push, only over HTTPS (or on localhost).
    #[arg(
        long,
        env = "PUSHCHAT_TLS_CERT",
        value_name = "PEM",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(
        long,
        env = "PUSHCHAT_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// Turns on the admin API on this address (`/api/admin/...`) for requests that carry
    /// `Authorization: Bearer TOKEN`; at least 16 characters. Without it, the admin API
    /// is reachable only through the data dir's socket.
    #[arg(
        long,
        env = "PUSHCHAT_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,

    /// How many queued fan-outs (batches of up to 200 pushes) this instance delivers at
    /// once; a batch waiting on a slow push service holds its place. On PostgreSQL each
    /// holds a database connection. [default: 256 on sled, 16 on PostgreSQL]
    #[arg(long, env = "PUSHCHAT_FAN_OUTS_AT_ONCE", value_name = "N")]
    pub fan_outs_at_once: Option<usize>,

    /// Upper bound of the sled database's page cache, in MiB.
    #[arg(long, env = "PUSHCHAT_CACHE_MIB", default_value_t = 64)]
    pub cache_mib: u64,
}
