//! The chat's durable state behind one trait, [`Store`], with two homes chosen by
//! configuration: sled in the data dir (`sled`, the default: one process, nothing else to
//! run) and PostgreSQL (`postgres`, `--database-url`: several instances share one chat).
//!
//! A store keeps members' devices (a member is the devices sharing a member id, and so a
//! name), device codes, banned names, the browsers the operator removed, the history, the
//! VAPID contact, the allowances of rate limits (see `allowance`), and the fan-outs not
//! yet sent. A fan-out is queued in the store before the change that caused it answers (a
//! chat line and its fan-out in one transaction), split in batches of at most
//! [`FAN_OUT_BATCH`] recipients; delivery takes batches with [`Store::take_fan_out`] and
//! gives each back with [`TakenFanOut::done`] once every recipient's push service answered.
//! A batch whose taker stops before that is taken again (by this process after a restart,
//! or at once by another instance on PostgreSQL): at least once, never lost.
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

use std::{net::IpAddr, time::Duration};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use unicode_security::confusable_detection::skeleton;

use app::wire::{ChatLine, PushMessage};

use crate::model::subscription::Subscription;

pub use self::{
    allowance::Quota,
    format::{NewerFormat, FORMAT},
    postgres::PostgresStore,
    sled::SledStore,
};

/// The most recipients one queued fan-out holds: a chat line to many members is several,
/// which several instances deliver side by side.
pub const FAN_OUT_BATCH: usize = 200;

/// How long an idle delivery worker waits before it looks for fan-outs again without
/// being told of one (another instance's crash frees fan-outs silently).
pub const FAN_OUT_POLL: Duration = Duration::from_secs(1);

/// One browser of a member, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub name: String,
    /// Random, made when the member first joined; shared by all its devices.
    pub member_id: String,
    pub subscription: Subscription,
    /// When this device joined, in milliseconds since the Unix epoch.
    pub joined: u64,
    /// The address it joined from, for the members-per-address limit.
    #[serde(default)]
    pub joined_from: Option<IpAddr>,
    /// Until when the member gets no chat lines (ms since the Unix epoch), if it muted
    /// them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub muted_until: Option<u64>,
}

/// What a device code stands for until it is used or expires.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCode {
    pub member_id: String,
    pub name: String,
    /// Milliseconds since the Unix epoch.
    pub expires: u64,
}

impl DeviceCode {
    /// The grant, unless it expired by `now`.
    fn unexpired(self, now: u64) -> Option<DeviceCode> {
        (self.expires > now).then_some(self)
    }
}

/// What removing a device did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removed {
    pub device: Device,
    /// It was the member's last device: the member is gone and its name is free.
    pub member_left: bool,
}

/// The operator removed the member whose browser this was: what `init` answers a browser
/// that comes back with it, for [`REMOVALS_KEPT`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removal {
    pub name: String,
    /// The name was banned too.
    pub banned: bool,
    /// Milliseconds since the Unix epoch.
    pub at: u64,
}

/// How long a removal is remembered: past it, a browser coming back is only "not a member".
pub const REMOVALS_KEPT: Duration = Duration::from_secs(90 * 24 * 3600);

impl Removal {
    /// Whether it is still remembered at `now`.
    fn kept_at(&self, now: u64) -> bool {
        now.saturating_sub(self.at) < REMOVALS_KEPT.as_millis() as u64
    }
}

/// A chat line before the store gives it its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewLine<'a> {
    pub name: &'a str,
    pub msg: &'a str,
    /// Milliseconds since the Unix epoch.
    pub time: u64,
}

/// One status update and the members' devices it goes to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Broadcast {
    pub message: PushMessage,
    pub recipients: Vec<Subscription>,
}

impl Broadcast {
    /// A chat line to `recipients`.
    pub fn chat_line(line: &ChatLine, recipients: &[Subscription]) -> Self {
        Broadcast {
            message: PushMessage::ChatMsg(line.clone()),
            recipients: recipients.to_vec(),
        }
    }

    /// The same update in batches of at most [`FAN_OUT_BATCH`] recipients; none for none.
    pub fn batches(&self) -> impl Iterator<Item = Broadcast> + '_ {
        self.recipients
            .chunks(FAN_OUT_BATCH)
            .map(|recipients| Broadcast {
                message: self.message.clone(),
                recipients: recipients.to_vec(),
            })
    }
}

/// A queued fan-out taken by this process: nobody else takes it until it is
/// [`done`](TakenFanOut::done) or this process stops.
pub struct TakenFanOut {
    pub broadcast: Broadcast,
    /// When it was queued, in milliseconds since the Unix epoch: its pushes' latency
    /// counts from then.
    pub queued_at: u64,
    lease: Box<dyn FanOutLease>,
}

impl TakenFanOut {
    fn new(broadcast: Broadcast, queued_at: u64, lease: impl FanOutLease + 'static) -> Self {
        TakenFanOut {
            broadcast,
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

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the name {0:?} belongs to another member")]
    NameTaken(String),
    #[error("the endpoint belongs to another member")]
    EndpointTaken,
    #[error("the sled database failed")]
    Sled(#[from] ::sled::Error),
    #[error("the PostgreSQL database failed")]
    Postgres(#[from] sqlx::Error),
    #[error("the PostgreSQL schema could not be brought up to date")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("a stored record is unreadable")]
    Corrupt(#[from] serde_json::Error),
    #[error("a stored value is out of range: {0}")]
    BadValue(&'static str),
    #[error("the store already holds a chat")]
    NotEmpty,
    #[error(transparent)]
    NewerFormat(#[from] NewerFormat),
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
    pub fan_outs: Vec<Broadcast>,
    pub vapid_subject: Option<String>,
}

/// Members, history and queued fan-outs, wherever they are kept. Shared as
/// `Arc<dyn Store>`; every method is safe to call from many tasks at once.
#[async_trait]
pub trait Store: Send + Sync {
    async fn device(&self, endpoint: &str) -> Result<Option<Device>, StoreError>;

    /// Every member's devices, in no particular order.
    async fn devices(&self) -> Result<Vec<Device>, StoreError>;

    /// The devices of the member called `name` (compared by [`name_key`]).
    async fn devices_of(&self, name: &str) -> Result<Vec<Device>, StoreError>;

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
    /// [`REMOVALS_KEPT`] of `now`).
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

    /// Appends a line to the history and queues its fan-out to `recipients`, in one
    /// transaction; then drops the oldest lines beyond `keep`.
    async fn append_line(
        &self,
        line: NewLine<'_>,
        keep: usize,
        recipients: &[Subscription],
    ) -> Result<ChatLine, StoreError>;

    /// Queues a fan-out (in batches); nothing for a broadcast without recipients. Like
    /// every change, it is durable, and so taken, after [`Store::flush`].
    async fn queue_fan_out(&self, broadcast: &Broadcast) -> Result<(), StoreError>;

    /// The oldest queued fan-out nobody has taken, taken by this process.
    async fn take_fan_out(&self) -> Result<Option<TakenFanOut>, StoreError>;

    /// Resolves when a fan-out may have been queued since the last call, or after
    /// [`FAN_OUT_POLL`] at the latest.
    async fn fan_out_queued(&self);

    /// Whether other processes take fan-outs from this store too (PostgreSQL), so that
    /// one that stops may leave queued fan-outs to them.
    fn is_shared(&self) -> bool;

    /// The newest `limit` lines, oldest first.
    async fn recent_lines(&self, limit: usize) -> Result<Vec<ChatLine>, StoreError>;

    /// Bans `name` (compared by [`name_key`]) from joining.
    async fn ban(&self, name: &str) -> Result<(), StoreError>;

    /// Lifts a ban; says whether there was one.
    async fn unban(&self, name: &str) -> Result<bool, StoreError>;

    async fn is_banned(&self, name: &str) -> Result<bool, StoreError>;

    /// Counts one action of `key` against `quota`: `Ok(Err(wait))` when `key` has used its
    /// allowance, and may act again after `wait` (the refused action is not counted).
    /// Counted where every process serving this chat counts (PostgreSQL: in it), so
    /// several instances do not multiply anyone's allowance.
    async fn take_allowance(
        &self,
        quota: &Quota,
        key: &str,
    ) -> Result<Result<(), Duration>, StoreError>;

    /// The VAPID contact the server last ran with, for subcommands run without one.
    async fn vapid_subject(&self) -> Result<Option<String>, StoreError>;

    async fn set_vapid_subject(&self, subject: &str) -> Result<(), StoreError>;

    /// Everything, as of one moment: no change is half in it.
    async fn contents(&self) -> Result<StoreContents, StoreError>;

    /// Fills an empty store with `contents` (a backup); refuses a store that holds a chat.
    async fn restore(&self, contents: &StoreContents) -> Result<(), StoreError>;

    /// Waits until every change so far is durable.
    async fn flush(&self) -> Result<(), StoreError>;
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
