//! The store in sled, in the data dir: one process at a time. Trees: devices keyed by
//! their push endpoint, an index that keeps names unique (each name belongs to one member,
//! who may have several devices), how many devices each member has, device codes, banned
//! names, the history keyed by line id (big-endian, so it reads back in order), the
//! queued fan-outs keyed the same way, and the server's VAPID contact. sled's byte types
//! never leave this module, and every change that spans trees is one transaction. The
//! VAPID private key stays a file in the data dir (see `vapid`).

use std::{
    collections::HashSet,
    path::Path,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, RwLock, RwLockReadGuard,
    },
};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sled::{
    transaction::{ConflictableTransactionError, TransactionError},
    Transactional, Tree,
};
use tokio::sync::Notify;

use app::wire::ChatLine;

use super::{
    code_key, name_key, Broadcast, Device, DeviceCode, FanOutLease, NewLine, Removed, Store,
    StoreContents, StoreError, TakenFanOut, FAN_OUT_POLL,
};
use crate::{clock::now_millis, subscription::Subscription};

/// Devices by push endpoint.
const DEVICES: &str = "members";
/// Member ids by [`name_key`] of their name.
const NAMES: &str = "member_names";
/// How many devices each member id has (u32, big-endian): its last leaving frees the name.
const DEVICE_COUNTS: &str = "device_counts";
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
/// Single values: the VAPID contact the server last ran with.
const SETTINGS: &str = "settings";
const VAPID_SUBJECT: &str = "vapid_subject";

impl From<TransactionError<StoreError>> for StoreError {
    fn from(error: TransactionError<StoreError>) -> Self {
        match error {
            TransactionError::Abort(error) => error,
            TransactionError::Storage(error) => StoreError::Sled(error),
        }
    }
}

/// Members and history in a sled database.
pub struct SledStore {
    db: sled::Db,
    devices: Tree,
    names: Tree,
    device_counts: Tree,
    device_codes: Tree,
    history: Tree,
    fan_outs: Tree,
    banned: Tree,
    settings: Tree,
    /// The next chat line's id: above every stored one, restored ones included.
    next_line_id: AtomicU64,
    next_fan_out_id: AtomicU64,
    /// Fan-outs this process is delivering: the queue skips them.
    taken: Arc<Mutex<HashSet<u64>>>,
    /// Wakes the delivery worker once queued fan-outs are on disk (see [`Store::flush`]).
    queued: Notify,
    unannounced: AtomicBool,
    /// Changes hold it shared; [`Store::contents`] holds it alone, so a backup never sees
    /// half of a change that spans trees.
    changing: Arc<RwLock<()>>,
}

impl SledStore {
    /// Opens (or creates) the database in `dir`, with sled's page cache limited to
    /// `cache_bytes` (its default would be 1 GiB).
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .open()?;
        let history = db.open_tree(HISTORY)?;
        let fan_outs = db.open_tree(FAN_OUTS)?;
        let store = SledStore {
            next_line_id: AtomicU64::new(next_id_in(&history)?),
            next_fan_out_id: AtomicU64::new(next_id_in(&fan_outs)?),
            devices: db.open_tree(DEVICES)?,
            names: db.open_tree(NAMES)?,
            device_counts: db.open_tree(DEVICE_COUNTS)?,
            device_codes: db.open_tree(DEVICE_CODES)?,
            banned: db.open_tree(BANNED)?,
            settings: db.open_tree(SETTINGS)?,
            history,
            fan_outs,
            taken: Arc::default(),
            queued: Notify::new(),
            unannounced: AtomicBool::new(false),
            changing: Arc::default(),
            db,
        };
        store.queue_old_outbox()?;
        Ok(store)
    }

    /// Builds before the queue kept the chat lines whose fan-out had not finished in an
    /// outbox, to send them again on the next start: they are queued to every member now.
    fn queue_old_outbox(&self) -> Result<(), StoreError> {
        if !self
            .db
            .tree_names()
            .iter()
            .any(|name| name.as_ref() == OLD_OUTBOX.as_bytes())
        {
            return Ok(());
        }
        let outbox = self.db.open_tree(OLD_OUTBOX)?;
        let lines = outbox
            .iter()
            .values()
            .map(|bytes| decode(&bytes?))
            .collect::<Result<Vec<ChatLine>, _>>()?;
        if !lines.is_empty() {
            let everyone: Vec<Subscription> = self
                .all_devices()?
                .into_iter()
                .map(|device| device.subscription)
                .collect();
            let mut batch = sled::Batch::default();
            for line in &lines {
                for (id, fan_out) in self.fan_out_records(&Broadcast::chat_line(line, &everyone))? {
                    batch.insert(&id, fan_out);
                }
            }
            self.fan_outs.apply_batch(batch)?;
            self.db.flush()?;
            tracing::warn!(
                lines = lines.len(),
                "queued again the chat lines an earlier build had not finished sending"
            );
        }
        self.db.drop_tree(OLD_OUTBOX)?;
        Ok(())
    }

    fn change(&self) -> RwLockReadGuard<'_, ()> {
        self.changing
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn all_devices(&self) -> Result<Vec<Device>, StoreError> {
        self.devices
            .iter()
            .values()
            .map(|bytes| decode(&bytes?))
            .collect()
    }

    fn lines(&self, limit: usize) -> Result<Vec<ChatLine>, StoreError> {
        let mut lines = self
            .history
            .iter()
            .values()
            .rev()
            .take(limit)
            .map(|bytes| decode(&bytes?))
            .collect::<Result<Vec<ChatLine>, _>>()?;
        lines.reverse();
        Ok(lines)
    }

    fn queued_fan_outs(&self) -> Result<Vec<Broadcast>, StoreError> {
        self.fan_outs
            .iter()
            .values()
            .map(|bytes| Ok(decode::<QueuedFanOut>(&bytes?)?.broadcast))
            .collect()
    }

    fn subject(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .settings
            .get(VAPID_SUBJECT)?
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// The records that queue `broadcast`, under fresh ids.
    fn fan_out_records(
        &self,
        broadcast: &Broadcast,
    ) -> Result<Vec<([u8; 8], Vec<u8>)>, StoreError> {
        let queued_at = now_millis();
        broadcast
            .batches()
            .map(|broadcast| {
                let id = self.next_fan_out_id.fetch_add(1, Ordering::Relaxed);
                let record = QueuedFanOut {
                    queued_at,
                    broadcast,
                };
                Ok((id.to_be_bytes(), serde_json::to_vec(&record)?))
            })
            .collect()
    }
}

#[async_trait]
impl Store for SledStore {
    async fn device(&self, endpoint: &str) -> Result<Option<Device>, StoreError> {
        self.devices
            .get(endpoint)?
            .map(|bytes| decode(&bytes))
            .transpose()
    }

    async fn devices(&self) -> Result<Vec<Device>, StoreError> {
        self.all_devices()
    }

    async fn devices_of(&self, name: &str) -> Result<Vec<Device>, StoreError> {
        let Some(member_id) = self.names.get(name_key(name))? else {
            return Ok(Vec::new());
        };
        let mut devices = self.all_devices()?;
        devices.retain(|device| device.member_id.as_bytes() == member_id.as_ref());
        Ok(devices)
    }

    async fn member_count(&self) -> Result<usize, StoreError> {
        Ok(self.names.len())
    }

    async fn has_members(&self) -> Result<bool, StoreError> {
        Ok(self.devices.first()?.is_some())
    }

    async fn put_device(&self, device: &Device) -> Result<(), StoreError> {
        let _change = self.change();
        let endpoint = device.subscription.endpoint.as_bytes();
        let key = name_key(&device.name);
        let member_id = device.member_id.as_bytes();
        let record = serde_json::to_vec(device)?;
        (&self.devices, &self.names, &self.device_counts).transaction(
            |(devices, names, counts)| {
                if names.get(&key)?.is_some_and(|holder| holder != member_id) {
                    return abort(StoreError::NameTaken(device.name.clone()));
                }
                match devices.get(endpoint)? {
                    Some(old) => {
                        let old: Device = decode(&old).or_else(abort)?;
                        if old.member_id != device.member_id {
                            return abort(StoreError::EndpointTaken);
                        }
                    }
                    None => {
                        let count = count_of(counts.get(member_id)?.as_deref());
                        counts.insert(member_id, &(count + 1).to_be_bytes())?;
                    }
                }
                devices.insert(endpoint, record.as_slice())?;
                names.insert(key.as_bytes(), member_id)?;
                Ok(())
            },
        )?;
        Ok(())
    }

    async fn replace_subscription(
        &self,
        old_endpoint: &str,
        new: &Subscription,
    ) -> Result<bool, StoreError> {
        let _change = self.change();
        let endpoint = new.endpoint.as_bytes();
        let moved = self.devices.transaction(|devices| {
            if endpoint != old_endpoint.as_bytes() && devices.get(endpoint)?.is_some() {
                return abort(StoreError::EndpointTaken);
            }
            // Gone meanwhile (its push service said so, say): nothing to move.
            let Some(old) = devices.remove(old_endpoint.as_bytes())? else {
                return Ok(false);
            };
            let mut device: Device = decode(&old).or_else(abort)?;
            device.subscription = new.clone();
            let record = serde_json::to_vec(&device)
                .map_err(StoreError::from)
                .or_else(abort)?;
            devices.insert(endpoint, record)?;
            Ok(true)
        })?;
        Ok(moved)
    }

    async fn set_muted_until(&self, endpoint: &str, until: u64) -> Result<bool, StoreError> {
        let _change = self.change();
        let set = self.devices.transaction(|devices| {
            let Some(record) = devices.get(endpoint)? else {
                return Ok(false);
            };
            let mut device: Device = decode(&record).or_else(abort)?;
            device.muted_until = Some(until);
            let record = serde_json::to_vec(&device)
                .map_err(StoreError::from)
                .or_else(abort)?;
            devices.insert(endpoint.as_bytes(), record)?;
            Ok(true)
        })?;
        Ok(set)
    }

    async fn remove_device(
        &self,
        endpoint: &str,
        auth: &str,
    ) -> Result<Option<Removed>, StoreError> {
        let _change = self.change();
        let removed = (&self.devices, &self.names, &self.device_counts).transaction(
            |(devices, names, counts)| {
                let Some(record) = devices.get(endpoint)? else {
                    return Ok(None);
                };
                let device: Device = decode(&record).or_else(abort)?;
                if !device.subscription.auth_matches(auth) {
                    return Ok(None);
                }
                devices.remove(endpoint.as_bytes())?;
                let member_id = device.member_id.as_bytes();
                let left = count_of(counts.get(member_id)?.as_deref()).saturating_sub(1);
                if left > 0 {
                    counts.insert(member_id, &left.to_be_bytes())?;
                } else {
                    counts.remove(member_id)?;
                    let key = name_key(&device.name);
                    if names.get(&key)?.is_some_and(|holder| holder == member_id) {
                        names.remove(key.as_bytes())?;
                    }
                }
                Ok(Some(Removed {
                    device,
                    member_left: left == 0,
                }))
            },
        )?;
        Ok(removed)
    }

    async fn put_device_code(
        &self,
        code: &str,
        grant: &DeviceCode,
        now: u64,
    ) -> Result<(), StoreError> {
        let _change = self.change();
        for entry in self.device_codes.iter() {
            let (key, value) = entry?;
            if decode::<DeviceCode>(&value).map_or(true, |old| old.expires <= now) {
                self.device_codes.remove(key)?;
            }
        }
        self.device_codes
            .insert(code_key(code), serde_json::to_vec(grant)?)?;
        Ok(())
    }

    async fn take_device_code(
        &self,
        code: &str,
        now: u64,
    ) -> Result<Option<DeviceCode>, StoreError> {
        let _change = self.change();
        let Some(value) = self.device_codes.remove(code_key(code))? else {
            return Ok(None);
        };
        Ok(decode::<DeviceCode>(&value)?.unexpired(now))
    }

    async fn append_line(
        &self,
        line: NewLine<'_>,
        keep: usize,
        recipients: &[Subscription],
    ) -> Result<ChatLine, StoreError> {
        let _change = self.change();
        let line = ChatLine {
            id: self.next_line_id.fetch_add(1, Ordering::Relaxed),
            name: line.name.into(),
            msg: line.msg.into(),
            time: line.time,
        };
        let record = serde_json::to_vec(&line)?;
        let key = line.id.to_be_bytes();
        let fan_outs = self.fan_out_records(&Broadcast::chat_line(&line, recipients))?;
        (&self.history, &self.fan_outs).transaction(|(history, queue)| {
            history.insert(&key, record.as_slice())?;
            for (id, fan_out) in &fan_outs {
                queue.insert(id, fan_out.as_slice())?;
            }
            Ok::<_, ConflictableTransactionError<StoreError>>(())
        })?;
        self.unannounced.store(true, Ordering::Relaxed);
        for old in self.history.iter().keys().rev().skip(keep) {
            self.history.remove(old?)?;
        }
        Ok(line)
    }

    async fn queue_fan_out(&self, broadcast: &Broadcast) -> Result<(), StoreError> {
        let _change = self.change();
        let mut batch = sled::Batch::default();
        for (id, fan_out) in self.fan_out_records(broadcast)? {
            batch.insert(&id, fan_out);
        }
        self.fan_outs.apply_batch(batch)?;
        self.unannounced.store(true, Ordering::Relaxed);
        Ok(())
    }

    async fn take_fan_out(&self) -> Result<Option<TakenFanOut>, StoreError> {
        let mut taken = self
            .taken
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for entry in self.fan_outs.iter() {
            let (key, value) = entry?;
            let id = id_of(&key)?;
            if taken.insert(id) {
                let lease = SledLease {
                    id,
                    fan_outs: self.fan_outs.clone(),
                    taken: Arc::clone(&self.taken),
                    changing: Arc::clone(&self.changing),
                    db: self.db.clone(),
                };
                let queued: QueuedFanOut = decode(&value)?;
                let taken = TakenFanOut::new(queued.broadcast, queued.queued_at, lease);
                return Ok(Some(taken));
            }
        }
        Ok(None)
    }

    async fn fan_out_queued(&self) {
        let _ = tokio::time::timeout(FAN_OUT_POLL, self.queued.notified()).await;
    }

    /// sled lets one process open the data dir.
    fn is_shared(&self) -> bool {
        false
    }

    async fn recent_lines(&self, limit: usize) -> Result<Vec<ChatLine>, StoreError> {
        self.lines(limit)
    }

    async fn ban(&self, name: &str) -> Result<(), StoreError> {
        let _change = self.change();
        self.banned.insert(name_key(name), name.as_bytes())?;
        Ok(())
    }

    async fn unban(&self, name: &str) -> Result<bool, StoreError> {
        let _change = self.change();
        Ok(self.banned.remove(name_key(name))?.is_some())
    }

    async fn is_banned(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.banned.contains_key(name_key(name))?)
    }

    async fn vapid_subject(&self) -> Result<Option<String>, StoreError> {
        self.subject()
    }

    async fn set_vapid_subject(&self, subject: &str) -> Result<(), StoreError> {
        let _change = self.change();
        self.settings.insert(VAPID_SUBJECT, subject.as_bytes())?;
        Ok(())
    }

    async fn contents(&self) -> Result<StoreContents, StoreError> {
        let _alone = self
            .changing
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(StoreContents {
            devices: self.all_devices()?,
            banned: self
                .banned
                .iter()
                .values()
                .map(|name| Ok(String::from_utf8_lossy(&name?).into_owned()))
                .collect::<Result<_, StoreError>>()?,
            history: self.lines(usize::MAX)?,
            fan_outs: self.queued_fan_outs()?,
            vapid_subject: self.subject()?,
        })
    }

    async fn restore(&self, contents: &StoreContents) -> Result<(), StoreError> {
        if self.has_members().await? || !self.history.is_empty() || !self.banned.is_empty() {
            return Err(StoreError::NotEmpty);
        }
        for device in &contents.devices {
            self.put_device(device).await?;
        }
        for name in &contents.banned {
            self.ban(name).await?;
        }
        for fan_out in &contents.fan_outs {
            self.queue_fan_out(fan_out).await?;
        }
        let _change = self.change();
        for line in &contents.history {
            self.history
                .insert(line.id.to_be_bytes(), serde_json::to_vec(line)?)?;
        }
        if let Some(subject) = &contents.vapid_subject {
            self.settings.insert(VAPID_SUBJECT, subject.as_bytes())?;
        }
        self.next_line_id
            .store(next_id_in(&self.history)?, Ordering::Relaxed);
        Ok(())
    }

    /// Uses sled's blocking flush on one of tokio's blocking threads: `flush_async` runs on
    /// sled's own small thread pool, and under concurrent transactions its flushes can take
    /// every thread of that pool while waiting for a write queued behind them (sled issue
    /// #1308; our burst test hung so). Fan-outs queued before it are announced to the
    /// delivery worker only now: nothing is pushed that a crash could still undo.
    async fn flush(&self) -> Result<(), StoreError> {
        // Taken before the flush: what was queued before it is on disk after it.
        let announce = self.unannounced.swap(false, Ordering::Relaxed);
        flush(self.db.clone()).await?;
        if announce {
            self.queued.notify_one();
        }
        Ok(())
    }
}

/// A queued fan-out as stored.
#[derive(Serialize, Deserialize)]
struct QueuedFanOut {
    /// Milliseconds since the Unix epoch.
    queued_at: u64,
    broadcast: Broadcast,
}

/// A fan-out this process took: its id stays in `taken` until it is done or the process
/// stops (then the next start takes it again).
struct SledLease {
    id: u64,
    fan_outs: Tree,
    taken: Arc<Mutex<HashSet<u64>>>,
    changing: Arc<RwLock<()>>,
    db: sled::Db,
}

#[async_trait]
impl FanOutLease for SledLease {
    async fn done(self: Box<Self>) -> Result<(), StoreError> {
        {
            let _change = self
                .changing
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            self.fan_outs.remove(self.id.to_be_bytes())?;
        }
        self.taken
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&self.id);
        // A crash before this flush would send the fan-out once more.
        flush(self.db.clone()).await
    }
}

async fn flush(db: sled::Db) -> Result<(), StoreError> {
    tokio::task::spawn_blocking(move || db.flush())
        .await
        .map_err(|failed| ::sled::Error::Io(std::io::Error::other(failed)))??;
    Ok(())
}

/// One more than the highest id in `tree` (keyed by big-endian ids).
fn next_id_in(tree: &Tree) -> Result<u64, StoreError> {
    match tree.last()? {
        Some((key, _)) => Ok(id_of(&key)? + 1),
        None => Ok(0),
    }
}

fn id_of(key: &[u8]) -> Result<u64, StoreError> {
    let bytes = key
        .try_into()
        .map_err(|_| StoreError::BadValue("a stored id is not 8 bytes"))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn test_an_earlier_builds_unsent_lines_are_queued_to_every_member() {
        let dir = tempfile::tempdir().unwrap();
        let ann = Device {
            name: "Ann".into(),
            member_id: "ann".into(),
            subscription: Subscription {
                endpoint: "https://p.example/1".into(),
                p256dh: "key".into(),
                auth: "BTBZMqHH6r4Tts7J_aSIgg".into(),
            },
            joined: 0,
            joined_from: None,
            muted_until: None,
        };
        let line = ChatLine {
            id: 7,
            name: "Ann".into(),
            msg: "cut short".into(),
            time: 1,
        };
        {
            // What such a build left: the member, and the line in its outbox.
            let db = sled::open(dir.path()).unwrap();
            let devices = db.open_tree(DEVICES).unwrap();
            let record = serde_json::to_vec(&ann).unwrap();
            devices
                .insert(ann.subscription.endpoint.as_bytes(), record)
                .unwrap();
            let outbox = db.open_tree(OLD_OUTBOX).unwrap();
            let record = serde_json::to_vec(&line).unwrap();
            outbox.insert(line.id.to_be_bytes(), record).unwrap();
            db.flush().unwrap();
        }
        let store = crate::store::testing::open_sled_when_free(dir.path()).await;
        let queued = store.take_fan_out().await.unwrap().unwrap();
        assert_eq!(
            queued.broadcast,
            Broadcast::chat_line(&line, &[ann.subscription.clone()])
        );
        assert!(!store
            .db
            .tree_names()
            .iter()
            .any(|name| name.as_ref() == OLD_OUTBOX.as_bytes()));
    }
}
