//! The store in sled, in the data dir (`db/`): one process at a time. Trees: devices keyed
//! by their push endpoint, an index that keeps names unique (each name belongs to one
//! member, who may have several devices), how many devices each member has, the indexes
//! that spare requests reading every device (see `indexes`), device codes,
//! banned names, the history keyed by line id (big-endian, so it reads back in order), the
//! queued fan-outs keyed the same way, the endpoints of members the operator removed, and
//! single values (the store's format, the server's VAPID contact). The VAPID private key
//! is a file beside `db/` (see `identity`). sled's byte types never leave this folder, and
//! every change that spans trees is one transaction, on disk before its call returns.
//! Allowances are counted in memory: sled lets one process open the data dir.
//!
//! One file per part of the store: `members` (with `indexes`), `history`, `queue`,
//! `identity`, `backups`, and `format` (bringing an older store up to date).

mod backups;
mod format;
mod history;
mod identity;
mod indexes;
mod members;
mod queue;
#[cfg(test)]
mod tests;

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, RwLock,
    },
    time::Duration,
};

use async_trait::async_trait;
use serde::Deserialize;
use sled::{
    transaction::{ConflictableTransactionError, TransactionError},
    Tree,
};
use tokio::sync::Notify;

use app::wire::ChatLine;

use super::{
    allowance::{LocalAllowances, Quota},
    Allowances, StoreError,
};
use crate::model::member::Device;

use self::{format::recorded_format, identity::KEY_FILE};

/// The database's folder in the data dir.
const DB_DIR: &str = "db";
/// Devices by push endpoint.
const DEVICES: &str = "members";
/// Member ids by [`name_key`] of their name.
const NAMES: &str = "member_names";
/// How many devices each member id has (u32, big-endian): its last leaving frees the name.
const DEVICE_COUNTS: &str = "device_counts";
/// Each member's devices, by member id (see `indexes`).
const DEVICES_BY_MEMBER: &str = "devices_by_member";
/// The devices that joined from each address (see `indexes`).
const DEVICES_BY_ADDRESS: &str = "devices_by_address";
/// Each member's name, by member id.
const MEMBER_NAMES: &str = "names_by_member";
/// One-time codes that add a device to a member, by the SHA-256 of the code.
const DEVICE_CODES: &str = "device_codes";
const HISTORY: &str = "history";
/// Fan-outs not yet sent, by id: taken again after a restart.
const FAN_OUTS: &str = "fan_outs";
/// Where builds before the queue of fan-outs kept chat lines whose fan-out had not
/// finished, by line id; read once, into the queue, and dropped.
const OLD_OUTBOX: &str = "outbox";
/// Banned names, by [`name_key`].
const BANNED: &str = "banned_names";
/// Members the operator removed, by the SHA-256 of each of their endpoints.
const REMOVALS: &str = "removals";
/// Single values: the store's format and who wrote it, the VAPID contact the server last
/// ran with.
const SETTINGS: &str = "settings";
const STORE_FORMAT: &str = "store_format";
const WRITTEN_BY_KEY: &str = "written_by";
const VAPID_SUBJECT: &str = "vapid_subject";

impl From<TransactionError<StoreError>> for StoreError {
    fn from(error: TransactionError<StoreError>) -> Self {
        match error {
            TransactionError::Abort(error) => error,
            TransactionError::Storage(error) => error.into(),
        }
    }
}

impl From<sled::Error> for StoreError {
    fn from(error: sled::Error) -> Self {
        match error {
            // sled locks its folder, and says so only in its message (an `Other` I/O error
            // wrapping the lock's): another process (a running server) has it open.
            sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
                StoreError::InUse
            }
            error => StoreError::database(error),
        }
    }
}

/// Members and history in a sled database.
pub struct SledStore {
    db: sled::Db,
    devices: Tree,
    names: Tree,
    device_counts: Tree,
    by_member: Tree,
    by_address: Tree,
    member_names: Tree,
    device_codes: Tree,
    history: Tree,
    fan_outs: Tree,
    banned: Tree,
    removals: Tree,
    settings: Tree,
    allowances: LocalAllowances,
    /// The next chat line's id: above every stored one, restored ones included.
    next_line_id: AtomicU64,
    next_fan_out_id: AtomicU64,
    /// Fan-outs this process is delivering: the queue skips them.
    taken: Arc<Mutex<HashSet<u64>>>,
    /// Wakes the delivery worker once queued fan-outs are on disk (see
    /// [`SledStore::commit`]).
    queued: Notify,
    unannounced: AtomicBool,
    /// Changes hold it shared; [`Backups::contents`](super::Backups::contents) holds it
    /// alone, so a backup never sees half of a change that spans trees.
    changing: Arc<RwLock<()>>,
    /// The VAPID private key's file.
    key_file: PathBuf,
}

impl SledStore {
    /// Opens (or creates) the store in `data_dir`, with sled's page cache limited to
    /// `cache_bytes` (its default would be 1 GiB).
    pub fn open(data_dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(data_dir.join(DB_DIR))
            .cache_capacity(cache_bytes)
            .open()?;
        // The format first: a newer release's store is refused before anything else of it
        // is read (its keys and records need not be this build's) or written.
        let settings = db.open_tree(SETTINGS)?;
        let recorded = recorded_format(&settings)?;
        let history = db.open_tree(HISTORY)?;
        let fan_outs = db.open_tree(FAN_OUTS)?;
        let store = SledStore {
            next_line_id: AtomicU64::new(next_id_in(&history)?),
            next_fan_out_id: AtomicU64::new(next_id_in(&fan_outs)?),
            devices: db.open_tree(DEVICES)?,
            names: db.open_tree(NAMES)?,
            device_counts: db.open_tree(DEVICE_COUNTS)?,
            by_member: db.open_tree(DEVICES_BY_MEMBER)?,
            by_address: db.open_tree(DEVICES_BY_ADDRESS)?,
            member_names: db.open_tree(MEMBER_NAMES)?,
            device_codes: db.open_tree(DEVICE_CODES)?,
            banned: db.open_tree(BANNED)?,
            removals: db.open_tree(REMOVALS)?,
            settings,
            allowances: LocalAllowances::default(),
            history,
            fan_outs,
            taken: Arc::default(),
            queued: Notify::new(),
            unannounced: AtomicBool::new(false),
            changing: Arc::default(),
            key_file: data_dir.join(KEY_FILE),
            db,
        };
        store.queue_old_outbox()?;
        store.bring_format_up_to_date(recorded)?;
        Ok(store)
    }

    /// Whether `data_dir` holds a store.
    pub fn exists(data_dir: &Path) -> bool {
        data_dir.join(DB_DIR).exists()
    }

    /// Makes a change (which holds [`SledStore::changing`] shared while it runs) and waits
    /// until it is on disk; then announces the fan-outs queued so far, and not before:
    /// nothing is pushed that a crash could still undo.
    async fn commit<T>(
        &self,
        change: impl FnOnce() -> Result<T, StoreError> + Send,
    ) -> Result<T, StoreError> {
        let made = {
            let _change = self
                .changing
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            change()?
        };
        // Taken before the flush: what was queued before it is on disk after it.
        let announce = self.unannounced.swap(false, Ordering::Relaxed);
        flush(self.db.clone()).await?;
        if announce {
            self.queued.notify_one();
        }
        Ok(made)
    }

    fn all_devices(&self) -> Result<Vec<Device>, StoreError> {
        self.devices
            .iter()
            .values()
            .map(|bytes| decode(&bytes?))
            .collect()
    }

    fn lines(&self, limit: usize) -> Result<Vec<ChatLine>, StoreError> {
        history::newest_lines(self.history.iter(), limit)
    }

    fn subject(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .settings
            .get(VAPID_SUBJECT)?
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
    }
}

#[async_trait]
impl Allowances for SledStore {
    async fn take_allowance(
        &self,
        quota: &Quota,
        key: &str,
    ) -> Result<Result<(), Duration>, StoreError> {
        Ok(self.allowances.take(quota, key))
    }
}

/// Waits until everything written so far is on disk. Uses sled's blocking flush on one of
/// tokio's blocking threads: `flush_async` runs on sled's own small thread pool, and under
/// concurrent transactions its flushes can take every thread of that pool while waiting
/// for a write queued behind them (sled issue #1308; our burst test hung so).
async fn flush(db: sled::Db) -> Result<(), StoreError> {
    tokio::task::spawn_blocking(move || db.flush())
        .await
        .map_err(StoreError::database)??;
    Ok(())
}

/// One more than the highest id in `tree` (keyed by big-endian ids, first).
fn next_id_in(tree: &Tree) -> Result<u64, StoreError> {
    match tree.last()? {
        Some((key, _)) => Ok(id_of(&key)? + 1),
        None => Ok(0),
    }
}

/// The id a key starts with (a queued fan-out's key goes on with its origin).
fn id_of(key: &[u8]) -> Result<u64, StoreError> {
    let bytes = key
        .get(..8)
        .and_then(|id| id.try_into().ok())
        .ok_or(StoreError::BadValue("a stored key is shorter than an id"))?;
    Ok(u64::from_be_bytes(bytes))
}

fn count_of(bytes: Option<&[u8]>) -> u32 {
    bytes
        .and_then(|bytes| bytes.try_into().ok())
        .map_or(0, u32::from_be_bytes)
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StoreError> {
    Ok(serde_json::from_slice(bytes)?)
}

fn abort<T>(error: StoreError) -> Result<T, ConflictableTransactionError<StoreError>> {
    Err(ConflictableTransactionError::Abort(error))
}
