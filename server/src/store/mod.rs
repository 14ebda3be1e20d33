//! The chat's durable state, with two homes chosen by configuration: sled in the data dir
//! (`sled`, the default: one process, nothing else to run) and PostgreSQL (`postgres`,
//! `--database-url`: several instances share one chat). Its parts are traits, one per
//! concern ([`MemberStore`], [`ChatHistory`], [`FanOutQueue`], [`Allowances`],
//! [`ServerIdentity`], [`Backups`]), and [`Store`] is all of them; [`open`] gives one.
//! Nothing outside this folder names a backend: each backend's files implement every part.
//!
//! A store keeps members' devices (see `model::member`), device codes, banned names, the
//! browsers the operator removed, the history, the VAPID identity, the allowances of rate
//! limits (see `allowance`), and the fan-outs not yet sent. A fan-out is queued in the
//! store before the change that caused it answers (a chat line and its fan-out in one
//! transaction), split in batches of at most [`FAN_OUT_BATCH`] recipients of one
//! push-service origin each (the batch records its origin); the queue announces it once it
//! is durable, delivery takes batches with [`FanOutQueue::take_fan_out`] (passing over
//! the origins it is holding back) and gives each back with [`TakenFanOut::done`] once every
//! recipient's push service answered. A batch names its recipients by their devices'
//! endpoints (see `model::fan_out::Recipients`), so it costs the queue an endpoint per
//! member; taking it reads those devices' subscriptions, in one lookup per batch. A batch
//! whose taker stops before that is taken again (by this process after a restart, or at
//! once by another instance on PostgreSQL): at least once, never lost. Every change is
//! durable when its call returns.
//!
//! What a store keeps has a format, [`FORMAT`], recorded in it and checked when it opens:
//! an older one is brought up to date in one transaction (it either finishes or leaves the
//! store as it was), a newer one is refused with the release that wrote it. See
//! `format` for what each format changed.
//!
//! The store only stores; who may do what is decided in `chat`.

mod allowance;
pub mod format;
mod postgres;
mod sled;
/// Stores for tests; never in the release binary.
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use unicode_security::confusable_detection::skeleton;

use app::wire::ChatLine;

use crate::model::{
    fan_out::{FanOut, ResolvedFanOut},
    member::{Device, DeviceCode, Removal, Removed},
    subscription::Subscription,
};

pub use self::{
    allowance::Quota,
    format::{NewerFormat, FORMAT},
};
use self::{postgres::PostgresStore, sled::SledStore};
pub use crate::model::fan_out::FAN_OUT_BATCH;

/// How long an idle delivery worker waits before it looks for fan-outs again without
/// being told of one (another instance's crash frees fan-outs silently).
pub const FAN_OUT_POLL: Duration = Duration::from_secs(1);

/// A chat line before the store gives it its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewLine<'a> {
    pub name: &'a str,
    pub msg: &'a str,
    /// Milliseconds since the Unix epoch.
    pub time: u64,
}

/// A queued fan-out taken by this process: nobody else takes it until it is
/// [`done`](TakenFanOut::done) or this process stops.
pub struct TakenFanOut {
    /// Its recipients' subscriptions as of when it was taken: a device gone by then is not
    /// among them.
    pub fan_out: ResolvedFanOut,
    /// The push-service origin it was queued for (see `model::fan_out::push_origin`).
    pub origin: String,
    /// When it was queued, in milliseconds since the Unix epoch: its pushes' latency
    /// counts from then.
    pub queued_at: u64,
    lease: Box<dyn FanOutLease>,
}

impl TakenFanOut {
    fn new(
        fan_out: ResolvedFanOut,
        origin: String,
        queued_at: u64,
        lease: impl FanOutLease + 'static,
    ) -> Self {
        TakenFanOut {
            fan_out,
            origin,
            queued_at,
            lease: Box::new(lease),
        }
    }

    /// Every recipient's push service answered: the fan-out leaves the queue for good.
    pub async fn done(self) -> Result<(), StoreError> {
        self.lease.done().await
    }
}

/// How a store lets go of a taken fan-out.
#[async_trait]
trait FanOutLease: Send {
    async fn done(self: Box<Self>) -> Result<(), StoreError>;
}

/// Why the store could not do what it was asked. The database's own errors are kept as
/// the source, whichever database it is.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the name {0:?} belongs to another member")]
    NameTaken(String),
    #[error("the endpoint belongs to another member")]
    EndpointTaken,
    #[error("another pushchat (or another program) has the store open")]
    InUse,
    #[error("the database failed")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the VAPID key file {path} cannot be read or written")]
    KeyFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("a stored record is unreadable")]
    Corrupt(#[from] serde_json::Error),
    #[error("a stored value is out of range: {0}")]
    BadValue(&'static str),
    #[error("the store already holds a chat")]
    NotEmpty,
    #[error(transparent)]
    NewerFormat(#[from] NewerFormat),
}

impl StoreError {
    /// The database's own error, whichever database it is.
    fn database(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Database(Box::new(error))
    }
}

/// Everything the store holds, at one moment: what a backup keeps. Read one with
/// [`format::read_contents`], which brings an older format's up to date.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreContents {
    /// The [`FORMAT`] it was written in, and by which release (none in format 1).
    #[serde(default)]
    pub store_format: u32,
    #[serde(default)]
    pub written_by: String,
    pub devices: Vec<Device>,
    pub banned: Vec<String>,
    pub history: Vec<ChatLine>,
    /// Fan-outs not yet sent, oldest first.
    #[serde(default)]
    pub fan_outs: Vec<FanOut>,
    pub vapid_subject: Option<String>,
}

/// Members, their devices, device codes, bans and removals.
#[async_trait]
pub trait MemberStore: Send + Sync {
    async fn device(&self, endpoint: &str) -> Result<Option<Device>, StoreError>;

    /// Every member's devices, in no particular order.
    async fn devices(&self) -> Result<Vec<Device>, StoreError>;

    /// The devices of the member called `name` (compared by [`name_key`]). Reads that
    /// member's devices only, whatever the number of members.
    async fn devices_of(&self, name: &str) -> Result<Vec<Device>, StoreError>;

    /// Every device's endpoint, in no particular order; with `unmuted_at`, only those of
    /// devices whose mute (if any) ends by then: the fan-out to everyone, queued by
    /// reference.
    async fn endpoints(&self, unmuted_at: Option<u64>) -> Result<Vec<String>, StoreError>;

    /// The subscriptions of the devices at `endpoints` that are still there, in one lookup;
    /// reads nothing else of a device.
    async fn subscriptions(&self, endpoints: &[String]) -> Result<Vec<Subscription>, StoreError>;

    /// How many devices joined from `address`, counted from an index (never by reading
    /// every device).
    async fn devices_from(&self, address: IpAddr) -> Result<usize, StoreError>;

    /// Every member's name, each once, in no particular order; read from the members,
    /// not from their devices.
    async fn member_names(&self) -> Result<Vec<String>, StoreError>;

    /// How many members there are (people, not devices).
    async fn member_count(&self) -> Result<usize, StoreError>;

    /// Whether the store holds any member; cheaper than counting.
    async fn has_members(&self) -> Result<bool, StoreError>;

    /// Stores `device`: a new member's first, another of a member's, or the same one
    /// again. Refuses a name (compared by [`name_key`]) that another member holds, and an
    /// endpoint that another member's device holds.
    async fn put_device(&self, device: &Device) -> Result<(), StoreError>;

    /// Moves the device at `old_endpoint` to the `new` subscription, keeping everything
    /// else about it. Refuses a new endpoint that another device holds; returns false when
    /// no device is at `old_endpoint` (it left meanwhile).
    async fn replace_subscription(
        &self,
        old_endpoint: &str,
        new: &Subscription,
    ) -> Result<bool, StoreError>;

    /// Sets until when the device at `endpoint` gets no chat lines. Returns false when no
    /// device is there (it left meanwhile).
    async fn set_muted_until(&self, endpoint: &str, until: u64) -> Result<bool, StoreError>;

    /// Records a sign of life of the device at `endpoint` at `now`, and clears any warning
    /// that its silence will remove it. Returns false when no device is there.
    async fn mark_seen(&self, endpoint: &str, now: u64) -> Result<bool, StoreError>;

    /// Records that the device at `endpoint` was warned at `now` that its silence will
    /// remove it, if it was not warned yet and was last seen before `seen_before`; returns
    /// whether it did. Several instances pruning at once warn a device once.
    async fn mark_warned(
        &self,
        endpoint: &str,
        seen_before: u64,
        now: u64,
    ) -> Result<bool, StoreError>;

    /// Removes, in one transaction, each device at one of `subscriptions`' endpoints whose
    /// auth secret is still that subscription's (it may have been replaced meanwhile);
    /// with a member's last device, the member, its name and its device codes go. With
    /// `removal`, remembers each removed endpoint as removed by the operator. Returns what
    /// it removed.
    async fn remove_devices(
        &self,
        subscriptions: &[Subscription],
        removal: Option<&Removal>,
    ) -> Result<Vec<Removed>, StoreError>;

    /// Whether the operator removed the browser with this endpoint (within
    /// [`REMOVALS_KEPT`](crate::model::member::REMOVALS_KEPT) of `now`).
    async fn removal(&self, endpoint: &str, now: u64) -> Result<Option<Removal>, StoreError>;

    /// Keeps `code` (by its hash) until it is taken or expires; drops expired ones.
    async fn put_device_code(
        &self,
        code: &str,
        grant: &DeviceCode,
        now: u64,
    ) -> Result<(), StoreError>;

    /// Takes `code` once: what it grants, if it exists and has not expired. (A code whose
    /// member left is voided then, but the caller checks that the member is still in.)
    async fn take_device_code(
        &self,
        code: &str,
        now: u64,
    ) -> Result<Option<DeviceCode>, StoreError>;

    /// Bans `name` (compared by [`name_key`]) from joining.
    async fn ban(&self, name: &str) -> Result<(), StoreError>;

    /// Lifts a ban; says whether there was one.
    async fn unban(&self, name: &str) -> Result<bool, StoreError>;

    async fn is_banned(&self, name: &str) -> Result<bool, StoreError>;
}

/// The history of chat lines.
#[async_trait]
pub trait ChatHistory: Send + Sync {
    /// Appends a line to the history and queues its fan-out to the devices at `recipients`
    /// (endpoints), in one transaction; then drops the oldest lines beyond `keep`. Returns
    /// the line, with its id, and the fan-out it queued.
    async fn append_line(
        &self,
        line: NewLine<'_>,
        keep: usize,
        recipients: &[String],
    ) -> Result<(ChatLine, FanOut), StoreError>;

    /// The newest `limit` lines, oldest first.
    async fn recent_lines(&self, limit: usize) -> Result<Vec<ChatLine>, StoreError>;

    /// The newest `limit` lines older than the line with id `before` (which need not be
    /// kept any more), oldest first: a page of scroll-back. Line ids start at 0 on sled and
    /// at 1 on PostgreSQL, so `before` 0 or 1 may find nothing.
    async fn lines_before(&self, before: u64, limit: usize) -> Result<Vec<ChatLine>, StoreError>;
}

/// The fan-outs not yet sent. A queued fan-out is announced to the workers waiting in
/// [`FanOutQueue::fan_out_queued`] once the change that queued it is durable, never
/// before: a crash must not push what the store then forgets.
#[async_trait]
pub trait FanOutQueue: Send + Sync {
    /// Queues a fan-out (in batches); nothing for one without recipients.
    async fn queue_fan_out(&self, fan_out: &FanOut) -> Result<(), StoreError>;

    /// The oldest queued fan-out nobody has taken whose origin is not one of `skip`, taken
    /// by this process, with its recipients' subscriptions read (see [`TakenFanOut`]).
    /// Those of `skip` wait, durable, for a later call.
    async fn take_fan_out(&self, skip: &[String]) -> Result<Option<TakenFanOut>, StoreError>;

    /// Resolves when a fan-out may have been queued since the last call, or after
    /// [`FAN_OUT_POLL`] at the latest.
    async fn fan_out_queued(&self);
}

/// The rate limits' counts.
#[async_trait]
pub trait Allowances: Send + Sync {
    /// Counts one action of `key` against `quota`: `Ok(Err(wait))` when `key` has used its
    /// allowance, and may act again after `wait` (the refused action is not counted).
    /// Counted where every process serving this chat counts (PostgreSQL: in it), so
    /// several instances do not multiply anyone's allowance.
    async fn take_allowance(
        &self,
        quota: &Quota,
        key: &str,
    ) -> Result<Result<(), Duration>, StoreError>;
}

/// The server's VAPID identity: its contact and its private key, which every instance
/// serving the chat signs with (sled: the key file in the data dir, mode 0600;
/// PostgreSQL: a row every instance reads). The store keeps the key's text; `push::vapid`
/// makes and reads keys.
#[async_trait]
pub trait ServerIdentity: Send + Sync {
    /// The VAPID contact the server last ran with, for subcommands run without one.
    async fn vapid_subject(&self) -> Result<Option<String>, StoreError>;

    async fn set_vapid_subject(&self, subject: &str) -> Result<(), StoreError>;

    /// The VAPID private key (PKCS#8 PEM), once one is kept.
    async fn vapid_private_key(&self) -> Result<Option<String>, StoreError>;

    /// Keeps `pem` as the VAPID private key unless one is kept already, and returns the
    /// kept one: instances starting together agree on the first.
    async fn offer_vapid_private_key(&self, pem: &str) -> Result<String, StoreError>;

    /// Keeps `pem` as the VAPID private key in place of any other, in one step (a crash
    /// leaves the old key or the new one, never neither).
    async fn replace_vapid_private_key(&self, pem: &str) -> Result<(), StoreError>;

    /// Where the key is kept, for a person reading an error.
    fn vapid_key_place(&self) -> String;
}

/// Whole-store copies: what `pushchat backup` and `restore` read and write.
#[async_trait]
pub trait Backups: Send + Sync {
    /// Everything, as of one moment: no change is half in it.
    async fn contents(&self) -> Result<StoreContents, StoreError>;

    /// Fills an empty store with `contents` (a backup); refuses a store that holds a chat.
    async fn restore(&self, contents: &StoreContents) -> Result<(), StoreError>;
}

/// Everything the chat keeps, wherever it is kept: one store per chat, shared as
/// `Arc<dyn Store>`; every method is safe to call from many tasks at once, and every
/// change is durable when its call returns. Each part of the server asks for the part it
/// uses (delivery: [`FanOutQueue`]).
pub trait Store:
    MemberStore + ChatHistory + FanOutQueue + Allowances + ServerIdentity + Backups
{
}

impl<T> Store for T where
    T: MemberStore + ChatHistory + FanOutQueue + Allowances + ServerIdentity + Backups
{
}

/// Where the chat is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreLocation {
    /// sled, in the data dir, with a page cache of `cache_bytes`.
    Sled { cache_bytes: u64 },
    /// PostgreSQL at `url`, which other instances may share.
    Postgres { url: String },
}

impl StoreLocation {
    /// Whether other processes may serve the same chat (and take its fan-outs).
    pub fn is_shared(&self) -> bool {
        matches!(self, StoreLocation::Postgres { .. })
    }
}

/// What a person reads in an error: where the chat is kept.
impl std::fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Sled { .. } => f.write_str("the data dir's store"),
            StoreLocation::Postgres { .. } => {
                f.write_str("the PostgreSQL database given by --database-url")
            }
        }
    }
}

/// Opens the store at `location` for the chat whose data dir is `data_dir`, creating it
/// if it does not exist. `max_fan_outs` is how many fan-outs this process delivers at once
/// (on PostgreSQL each holds a connection while it does).
pub async fn open(
    location: &StoreLocation,
    data_dir: &Path,
    max_fan_outs: usize,
) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match location {
        StoreLocation::Sled { cache_bytes } => Arc::new(SledStore::open(data_dir, *cache_bytes)?),
        StoreLocation::Postgres { url } => {
            Arc::new(PostgresStore::connect(url, max_fan_outs).await?)
        }
    })
}

/// Whether `data_dir` has a chat's store at `location` (PostgreSQL: always; it is opened to
/// find out).
pub fn exists(location: &StoreLocation, data_dir: &Path) -> bool {
    match location {
        StoreLocation::Sled { .. } => SledStore::exists(data_dir),
        StoreLocation::Postgres { .. } => true,
    }
}

/// The key two names collide on: names a reader cannot tell apart are the same name,
/// whatever their case. It folds with the Unicode confusable skeleton (UTS #39: Cyrillic
/// "о" is Latin "o", "rn" is "m", full-width "Ａｎｎ" is "Ann", a variation selector is
/// nothing) on both cases: the uppercase skeleton first, where "AI" (capital i) meets "AL",
/// then the lowercase one, where "rn" meets "m". Lowercasing first would part "AI" from
/// "Al"; a skeleton first would part "ALICE" (whose I is an l) from "Alice".
pub fn name_key(name: &str) -> String {
    let upper: String = skeleton(&name.to_uppercase()).collect();
    skeleton(&upper.to_lowercase()).collect()
}

/// Codes are kept hashed: the store never holds a usable code.
fn code_key(code: &str) -> [u8; 32] {
    Sha256::digest(code.as_bytes()).into()
}

/// Removed members' endpoints are kept hashed: the store keeps no address it would not
/// post to any more.
fn endpoint_key(endpoint: &str) -> [u8; 32] {
    Sha256::digest(endpoint.as_bytes()).into()
}

#[cfg(test)]
mod tests;
