//! The operator's subcommands: `vapid`, `members`, `backup`, `restore`, `send`, and
//! `bench` (in `bench`). A data dir's store is open in one process at a time, so each
//! first looks for a server running on it (its admin socket answers) and asks that
//! server; when none runs, it opens the store itself. Either way the outcome is a
//! sentence, never a lock error.
//!
//! A chat several instances may serve (`--database-url`, PostgreSQL) is backed up,
//! restored and given a new key with PostgreSQL's own tools, every instance stopped: the
//! database holds the whole chat, VAPID key included.

pub mod bench;

use std::{
    fs,
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, UNIX_EPOCH},
};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use app::wire::ChatLine;

use crate::{
    chat::{Chat, ChatRules},
    config::{
        self, chat_url,
        cli::{
            BackupArgs, DataDirArg, MembersAction, MembersArgs, SendArgs, VapidCommand,
            DEFAULT_ADDR,
        },
    },
    http::{
        admin::{
            self, DeliverySummary, MemberSummary, NoticeRequest, RemoveRequest, UnbanRequest,
            VapidIdentity,
        },
        admin_socket::{self, AdminClient},
    },
    model::fan_out::FanOut,
    push::{vapid::VapidKeys, Delivery, DeliverySettings, GONE_BATCHES_WAITING},
    store::{self, format, Store, StoreContents, StoreError, StoreLocation},
};

/// What `backup` writes and `restore` reads.
#[derive(Debug, Serialize, Deserialize)]
struct BackupFile {
    /// Always [`BACKUP_FORMAT`]: says what the file is to someone who opens it.
    format: String,
    vapid_private_key_pem: String,
    /// The store's contents, in the store format they name (see `store::format`).
    #[serde(flatten)]
    contents: serde_json::Map<String, serde_json::Value>,
    /// Chat lines whose fan-out had not finished, as backups before the queue of
    /// fan-outs kept them; restored as fan-outs to every member.
    #[serde(default, skip_serializing)]
    unsent: Vec<ChatLine>,
}

const BACKUP_FORMAT: &str = "pushchat backup 1";

/// What to do instead of `backup`, `restore` or `vapid generate`, for a chat several
/// instances may be serving.
const SHARED_INSTEAD: &str = "back it up and restore it with pg_dump and pg_restore (the \
     VAPID key is in its settings table), and change its key only with every instance stopped";

/// The chat behind a data dir: a running server, or the store opened here.
enum Reached {
    Server(AdminClient),
    Store(Arc<dyn Store>),
}

async fn reach(data: &DataDirArg) -> anyhow::Result<Reached> {
    if let Some(server) = AdminClient::connect(&data.data_dir).await {
        return Ok(Reached::Server(server));
    }
    Ok(Reached::Store(open_stopped(data).await?))
}

/// Refuses what only a chat no other instance may be serving allows: a running instance
/// elsewhere would go on with what it loaded (PostgreSQL is shared; its own tools back it
/// up).
fn unshared_only(data: &DataDirArg, what: &str) -> anyhow::Result<()> {
    if location(data)?.is_shared() {
        bail!(
            "{what} works on a chat one server keeps; this chat is in PostgreSQL: {SHARED_INSTEAD}"
        );
    }
    Ok(())
}

fn location(data: &DataDirArg) -> anyhow::Result<StoreLocation> {
    Ok(config::store_location(data, STOPPED_CACHE_MIB)?)
}

/// The page cache of a store opened for one subcommand.
const STOPPED_CACHE_MIB: u64 = 16;

/// Opens the store of a chat no server runs on (here); refuses a data dir that holds none.
async fn open_stopped(data: &DataDirArg) -> anyhow::Result<Arc<dyn Store>> {
    let data_dir = &data.data_dir;
    let location = location(data)?;
    if !store::exists(&location, data_dir) {
        bail!(
            "{} holds no pushchat data; pass --data-dir, or start `pushchat serve --data-dir {}` once to create it",
            data_dir.display(),
            data_dir.display()
        );
    }
    store::open(&location, data_dir, 1)
        .await
        .map_err(|error| match error {
            StoreError::InUse => anyhow::anyhow!(
                "cannot open {}: another process has it open, and no pushchat server answers on {}",
                data_dir.display(),
                admin_socket::socket_path(data_dir).display()
            ),
            error => anyhow::Error::new(error).context(format!("cannot open {location}")),
        })
}

fn stop_the_server_first(data_dir: &Path, why: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "a pushchat server is running on {}; stop it first: {why}",
        data_dir.display()
    )
}

pub async fn vapid(command: VapidCommand) -> anyhow::Result<()> {
    match command {
        VapidCommand::Show(data) => {
            let data_dir = &data.data_dir;
            let identity = match reach(&data).await? {
                Reached::Server(server) => server.get::<VapidIdentity>("/vapid").await?,
                Reached::Store(store) => {
                    let missing = || {
                        format!(
                            "{} has no VAPID key yet; `pushchat serve` makes one on first start",
                            data_dir.display()
                        )
                    };
                    let subject = store.vapid_subject().await?.unwrap_or_default();
                    let keys = VapidKeys::load(&*store, subject)
                        .await?
                        .with_context(missing)?;
                    VapidIdentity {
                        public_key: keys.public_key_base64(),
                        subject: keys.subject().to_owned(),
                    }
                }
            };
            println!("public key: {}", identity.public_key);
            println!("subject:    {}", identity.subject);
            Ok(())
        }
        VapidCommand::Generate { data, force } => {
            unshared_only(&data, "vapid generate")?;
            let data_dir = &data.data_dir;
            let store = match reach(&data).await? {
                Reached::Server(_) => {
                    return Err(stop_the_server_first(
                        data_dir,
                        "it signs every push with the key it loaded",
                    ))
                }
                Reached::Store(store) => store,
            };
            let members = store.member_count().await?;
            if members > 0 && !force {
                bail!(
                    "{members} members' browser subscriptions are bound to the current key: a \
                     new key stops every one of them from receiving pushes, and they must \
                     subscribe again. Run again with --force to do it anyway."
                );
            }
            stopped_chat(Arc::clone(&store))
                .every_subscription_voided()
                .await?;
            let keys = VapidKeys::generate(&*store, String::new()).await?;
            println!("new public key: {}", keys.public_key_base64());
            if members > 0 {
                println!("removed {members} members; their browsers must subscribe again");
            }
            Ok(())
        }
    }
}

pub async fn members(args: MembersArgs) -> anyhow::Result<()> {
    match (
        args.action.unwrap_or(MembersAction::List),
        reach(&args.data).await?,
    ) {
        (MembersAction::List, Reached::Server(server)) => {
            print_members(&server.get::<Vec<MemberSummary>>("/members").await?, true)
        }
        (MembersAction::List, Reached::Store(store)) => {
            // Delivery results live in a running server's memory.
            print_members(&admin::summarize(store.devices().await?, |_| None), false)
        }
        (MembersAction::Remove { name, ban }, Reached::Server(server)) => {
            let request = RemoveRequest {
                name: name.clone(),
                ban,
            };
            server.post::<()>("/members/remove", &request).await?;
            println!("removed {name}{}; the others were told", banned(ban));
        }
        (MembersAction::Remove { name, ban }, Reached::Store(store)) => {
            stopped_chat(store).remove_named(&name, ban).await?;
            println!(
                "removed {name}{}; the others are told once a server runs",
                banned(ban)
            );
        }
        (MembersAction::Unban { name }, Reached::Server(server)) => {
            let request = UnbanRequest { name: name.clone() };
            server.post::<()>("/members/unban", &request).await?;
            println!("{name} may join again");
        }
        (MembersAction::Unban { name }, Reached::Store(store)) => {
            stopped_chat(store).unban(&name).await?;
            println!("{name} may join again");
        }
    }
    Ok(())
}

fn banned(ban: bool) -> &'static str {
    if ban {
        " and banned the name"
    } else {
        ""
    }
}

fn stopped_chat(store: Arc<dyn Store>) -> Chat {
    Chat::new(store, ChatRules::default())
}

fn print_members(members: &[MemberSummary], server_running: bool) {
    if members.is_empty() {
        println!("no members");
        return;
    }
    let width = members
        .iter()
        .map(|member| member.name.chars().count())
        .max()
        .unwrap_or(0)
        .max(4);
    println!(
        "{:width$}  {:32}  {:29}  last delivery",
        "name", "push service", "joined"
    );
    for member in members {
        let last = match &member.last_delivery {
            Some(last) => format!("{:?} {}", last.outcome, date(last.at)).to_lowercase(),
            None if server_running => "none since the server started".into(),
            None => "unknown (no server is running)".into(),
        };
        println!(
            "{:width$}  {:32}  {:29}  {last}",
            member.name,
            member.push_service,
            date(member.joined)
        );
    }
}

/// A time in milliseconds since the Unix epoch, as an HTTP date (UTC).
fn date(millis: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(millis))
}

pub async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    unshared_only(&args.data, "pushchat backup")?;
    let (contents, vapid_private_key_pem) = match reach(&args.data).await? {
        Reached::Server(server) => (
            server.get::<StoreContents>("/contents").await?,
            server.get::<Option<String>>("/vapid-private-key").await?,
        ),
        Reached::Store(store) => {
            let kept = store.vapid_private_key().await?;
            (store.contents().await?, kept)
        }
    };
    let vapid_private_key_pem = vapid_private_key_pem.with_context(|| {
        format!(
            "{} has no VAPID key to back up",
            args.data.data_dir.display()
        )
    })?;
    let summary = tally(&contents);
    let serde_json::Value::Object(contents) = serde_json::to_value(contents)? else {
        bail!("the store's contents are not a JSON object");
    };
    let backup = BackupFile {
        format: BACKUP_FORMAT.into(),
        vapid_private_key_pem,
        contents,
        unsent: Vec::new(),
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&args.file)
        .with_context(|| {
            format!(
                "cannot create {} (it must not exist yet)",
                args.file.display()
            )
        })?;
    file.write_all(&serde_json::to_vec_pretty(&backup)?)?;
    file.sync_all()?;
    println!(
        "backed up {} and the VAPID key pair to {} (keep it private: it holds the private \
         key)",
        summary,
        args.file.display()
    );
    Ok(())
}

/// "3 members (4 devices), 17 chat lines".
fn tally(contents: &StoreContents) -> String {
    let members: std::collections::HashSet<&str> = contents
        .devices
        .iter()
        .map(|device| device.member_id.as_str())
        .collect();
    format!(
        "{} members ({} devices), {} chat lines",
        members.len(),
        contents.devices.len(),
        contents.history.len()
    )
}

pub async fn restore(args: BackupArgs) -> anyhow::Result<()> {
    unshared_only(&args.data, "pushchat restore")?;
    let data_dir = &args.data.data_dir;
    let text = fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let backup: BackupFile = serde_json::from_str(&text)
        .ok()
        .filter(|backup: &BackupFile| backup.format == BACKUP_FORMAT)
        .with_context(|| format!("{} is not a pushchat backup", args.file.display()))?;
    let mut contents = format::read_contents(serde_json::Value::Object(backup.contents))
        .with_context(|| format!("cannot restore {}", args.file.display()))?;
    let everyone: Vec<String> = (contents.devices.iter())
        .map(|device| device.subscription.endpoint.clone())
        .collect();
    for line in &backup.unsent {
        contents.fan_outs.push(FanOut::chat_line(line, &everyone));
    }
    if AdminClient::connect(data_dir).await.is_some() {
        return Err(stop_the_server_first(
            data_dir,
            "restore fills a data dir no server uses",
        ));
    }
    fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let location = location(&args.data)?;
    let store = store::open(&location, data_dir, 1)
        .await
        .with_context(|| format!("cannot open {location}"))?;
    if store.vapid_private_key().await?.is_some() {
        bail!(
            "{} already holds a chat; restore into a new data dir (--data-dir), or move this one aside",
            data_dir.display()
        );
    }
    store.restore(&contents).await.with_context(|| {
        format!(
            "{} already holds a chat; restore into a new data dir",
            data_dir.display()
        )
    })?;
    VapidKeys::install(&*store, &backup.vapid_private_key_pem).await?;
    println!(
        "restored {} and the VAPID key pair into {}",
        tally(&contents),
        data_dir.display()
    );
    Ok(())
}

pub async fn send(args: SendArgs) -> anyhow::Result<()> {
    let request = NoticeRequest {
        to: args.to,
        text: args.text,
    };
    let summary = match reach(&args.data).await? {
        Reached::Server(server) => server.post::<DeliverySummary>("/push", &request).await?,
        Reached::Store(store) => {
            let data_dir: PathBuf = args.data.data_dir;
            let subject = store.vapid_subject().await?.with_context(|| {
                format!(
                    "{} has no VAPID contact recorded; start `pushchat serve` on it once",
                    data_dir.display()
                )
            })?;
            let keys = VapidKeys::load(&*store, subject)
                .await?
                .with_context(|| format!("{} has no VAPID key", data_dir.display()))?;
            let addr = DEFAULT_ADDR.parse().expect("the default address parses");
            let settings = DeliverySettings {
                allow_loopback_endpoints: args.allow_loopback_endpoints,
                chat_url: chat_url(args.public_url.public_url.as_deref(), addr, false)?,
                ..DeliverySettings::default()
            };
            let (gone, mut gone_heard) = mpsc::channel(GONE_BATCHES_WAITING);
            let delivery = Delivery::new(Arc::new(keys), store.clone(), settings, gone)?;
            let chat = stopped_chat(store);
            let notice = chat.notice(request.to.as_deref(), &request.text).await?;
            let report = Arc::new(delivery).send(notice).await;
            while let Ok(gone) = gone_heard.try_recv() {
                chat.subscriptions_gone(&gone).await?;
            }
            DeliverySummary::from(&report)
        }
    };
    println!(
        "delivered to {}, gone {}, failed {} ({} retries, {} ms)",
        summary.delivered, summary.gone, summary.failed, summary.retried, summary.elapsed_ms
    );
    if summary.failed > 0 {
        bail!(
            "{} pushes failed; the server's log says why",
            summary.failed
        );
    }
    Ok(())
}
