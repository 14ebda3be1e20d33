//! The store in sled, in the data dir: one process at a time. Trees: devices keyed by
//! their push endpoint, an index that keeps names unique (each name belongs to one member,
//! who may have several devices), how many devices each member has, device codes, banned
//! names, the history keyed by line id (big-endian, so it reads back in order), the
//! queued fan-outs keyed the same way, the endpoints of members the operator removed, and
//! single values (the store's format, the server's VAPID contact). sled's byte types never
//! leave this module, and every change that spans trees is one transaction. The VAPID
//! private key stays a file in the data dir (see `vapid`). Allowances are counted in
//! memory: sled lets one process open the data dir.

use std::{
    collections::HashSet,
    path::Path,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, RwLock, RwLockReadGuard,
    },
    time::Duration,
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
    allowance::{LocalAllowances, Quota},
    code_key, endpoint_key,
    format::{self, FORMAT, UNRECORDED, WRITTEN_BY},
    name_key, Broadcast, Device, DeviceCode, FanOutLease, NewLine, Removal, Removed, Store,
    StoreContents, StoreError, TakenFanOut, FAN_OUT_POLL,
};
use crate::model::{clock::now_millis, subscription::Subscription};

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
    removals: Tree,
    settings: Tree,
    allowances: LocalAllowances,
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
            removals: db.open_tree(REMOVALS)?,
            settings: db.open_tree(SETTINGS)?,
            allowances: LocalAllowances::default(),
            history,
            fan_outs,
            taken: Arc::default(),
            queued: Notify::new(),
            unannounced: AtomicBool::new(false),
            changing: Arc::default(),
            db,
        };
        store.queue_old_outbox()?;
        store.bring_format_up_to_date()?;
        Ok(store)
    }

    /// Checks the recorded format: a fresh store gets this build's, an older one is
    /// migrated (see `format`), a newer one refused.
    fn bring_format_up_to_date(&self) -> Result<(), StoreError> {
        let recorded = match self.settings.get(STORE_FORMAT)? {
            Some(bytes) => Some(u32::from_be_bytes(bytes.as_ref().try_into().map_err(
                |_| StoreError::BadValue("the recorded store format is not 4 bytes"),
            )?)),
            None => None,
        };
        let found = match recorded {
            Some(found) => found,
            None if self.holds_a_chat()? => UNRECORDED,
            None => FORMAT,
        };
        let written_by = self
            .settings
            .get(WRITTEN_BY_KEY)?
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
        format::check(found, written_by)?;
        if found < FORMAT {
            self.migrate_to_format_2()?;
            tracing::warn!(
                from = found,
                to = FORMAT,
                "brought the store's format up to date"
            );
        } else if recorded.is_none() {
            self.settings.insert(STORE_FORMAT, &FORMAT.to_be_bytes())?;
            self.settings
                .insert(WRITTEN_BY_KEY, WRITTEN_BY.as_bytes())?;
        }
        self.db.flush()?;
        Ok(())
    }

    fn holds_a_chat(&self) -> Result<bool, StoreError> {
        Ok(!(self.devices.is_empty()
            && self.history.is_empty()
            && self.banned.is_empty()
            && self.fan_outs.is_empty()))
    }

    /// Format 1 to 2, in one transaction: names keyed by their skeleton (members whose
    /// names now collide renamed), banned names too, device codes void, queued "left"
    /// pushes naming their members in a list.
    fn migrate_to_format_2(&self) -> Result<(), StoreError> {
        let devices = self.all_devices()?;
        let renamed = format::distinct_device_names(&devices);
        let old_names: Vec<sled::IVec> = self.names.iter().keys().collect::<Result<_, _>>()?;
        let banned: Vec<(sled::IVec, sled::IVec)> = self.banned.iter().collect::<Result<_, _>>()?;
        let codes: Vec<sled::IVec> = self.device_codes.iter().keys().collect::<Result<_, _>>()?;
        let mut fan_outs = Vec::new();
        for entry in self.fan_outs.iter() {
            let (id, bytes) = entry?;
            let mut record: serde_json::Value = decode(&bytes)?;
            if record
                .pointer_mut("/broadcast/message")
                .is_some_and(format::upgrade_message)
            {
                fan_outs.push((id, serde_json::to_vec(&record)?));
            }
        }
        let mut renamed_devices = Vec::new();
        let mut names = Vec::new();
        for mut device in devices {
            if let Some(new_name) = renamed.get(&device.member_id) {
                device.name.clone_from(new_name);
                renamed_devices.push((
                    device.subscription.endpoint.clone(),
                    serde_json::to_vec(&device)?,
                ));
            }
            names.push((name_key(&device.name), device.member_id));
        }
        (
            &self.devices,
            &self.names,
            &self.banned,
            &self.device_codes,
            &self.fan_outs,
            &self.settings,
        )
            .transaction(
                |(devices, names_tree, banned_tree, codes_tree, queue, settings)| {
                    for key in &old_names {
                        names_tree.remove(key)?;
                    }
                    for (key, member_id) in &names {
                        names_tree.insert(key.as_bytes(), member_id.as_bytes())?;
                    }
                    for (endpoint, record) in &renamed_devices {
                        devices.insert(endpoint.as_bytes(), record.as_slice())?;
                    }
                    for (key, _) in &banned {
                        banned_tree.remove(key)?;
                    }
                    for (_, name) in &banned {
                        banned_tree
                            .insert(name_key(&String::from_utf8_lossy(name)).as_bytes(), name)?;
                    }
                    for code in &codes {
                        codes_tree.remove(code)?;
                    }
                    for (id, record) in &fan_outs {
                        queue.insert(id, record.as_slice())?;
                    }
                    settings.insert(STORE_FORMAT, &FORMAT.to_be_bytes())?;
                    settings.insert(WRITTEN_BY_KEY, WRITTEN_BY.as_bytes())?;
                    Ok::<_, ConflictableTransactionError<StoreError>>(())
                },
            )?;
        Ok(())
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
    fn fan_out_records(&self, broadcast: &Broadcast) -> Result<Vec<QueueRecord>, StoreError> {
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

    async fn remove_devices(
        &self,
        subscriptions: &[Subscription],
        removal: Option<&Removal>,
    ) -> Result<Vec<Removed>, StoreError> {
        let _change = self.change();
        let removal = removal.map(serde_json::to_vec).transpose()?;
        let removed = (
            &self.devices,
            &self.names,
            &self.device_counts,
            &self.removals,
        )
            .transaction(|(devices, names, counts, removals)| {
                let mut removed = Vec::new();
                for subscription in subscriptions {
                    let endpoint = subscription.endpoint.as_bytes();
                    let Some(record) = devices.get(endpoint)? else {
                        continue;
                    };
                    let device: Device = decode(&record).or_else(abort)?;
                    if !device.subscription.auth_matches(&subscription.auth) {
                        continue;
                    }
                    devices.remove(endpoint)?;
                    if let Some(removal) = &removal {
                        removals
                            .insert(&endpoint_key(&subscription.endpoint), removal.as_slice())?;
                    }
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
                    removed.push(Removed {
                        device,
                        member_left: left == 0,
                    });
                }
                Ok(removed)
            })?;
        let gone: HashSet<&str> = removed
            .iter()
            .filter(|removed| removed.member_left)
            .map(|removed| removed.device.member_id.as_str())
            .collect();
        if !gone.is_empty() {
            for entry in self.device_codes.iter() {
                let (key, value) = entry?;
                if decode::<DeviceCode>(&value)
                    .is_ok_and(|code| gone.contains(code.member_id.as_str()))
                {
                    self.device_codes.remove(key)?;
                }
            }
        }
        Ok(removed)
    }

    async fn removal(&self, endpoint: &str, now: u64) -> Result<Option<Removal>, StoreError> {
        let Some(bytes) = self.removals.get(endpoint_key(endpoint))? else {
            return Ok(None);
        };
        Ok(Some(decode::<Removal>(&bytes)?).filter(|removal| removal.kept_at(now)))
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

    async fn take_allowance(
        &self,
        quota: &Quota,
        key: &str,
    ) -> Result<Result<(), Duration>, StoreError> {
        Ok(self.allowances.take(quota, key))
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
            store_format: FORMAT,
            written_by: WRITTEN_BY.into(),
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
        if self.holds_a_chat()? {
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

/// A queued fan-out's key (its id, big-endian) and value (a [`QueuedFanOut`]).
type QueueRecord = ([u8; 8], Vec<u8>);

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
    use app::wire::PushMessage;

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
            Broadcast::chat_line(&line, std::slice::from_ref(&ann.subscription))
        );
        assert!(!store
            .db
            .tree_names()
            .iter()
            .any(|name| name.as_ref() == OLD_OUTBOX.as_bytes()));
    }

    /// A data dir as pushchat 0.1 (store format 1, no format recorded) left it: "bob"
    /// and a later "b\u{43e}b" (Cyrillic о) under their NFKC + lowercase keys, two banned
    /// names that now look alike, a device code, and a queued "left" push naming one member.
    fn write_format_1(dir: &Path) {
        let db = sled::open(dir).unwrap();
        let device = |name: &str, member_id: &str, n: u8, joined: u64| Device {
            name: name.into(),
            member_id: member_id.into(),
            subscription: Subscription {
                endpoint: format!("https://p.example/{n}"),
                p256dh: "key".into(),
                auth: "BTBZMqHH6r4Tts7J_aSIgg".into(),
            },
            joined,
            joined_from: None,
            muted_until: None,
        };
        let devices = db.open_tree(DEVICES).unwrap();
        let names = db.open_tree(NAMES).unwrap();
        let counts = db.open_tree(DEVICE_COUNTS).unwrap();
        for device in [
            device("bob", "first", 1, 10),
            device("b\u{43e}b", "second", 2, 20),
        ] {
            let endpoint = device.subscription.endpoint.as_bytes();
            devices
                .insert(endpoint, serde_json::to_vec(&device).unwrap())
                .unwrap();
            names
                .insert(device.name.as_bytes(), device.member_id.as_bytes())
                .unwrap();
            counts
                .insert(device.member_id.as_bytes(), &1u32.to_be_bytes())
                .unwrap();
        }
        let banned = db.open_tree(BANNED).unwrap();
        banned.insert("eve", "Eve").unwrap();
        banned.insert("\u{435}ve", "\u{415}ve").unwrap();
        let code = DeviceCode {
            member_id: "first".into(),
            name: "bob".into(),
            expires: u64::MAX,
        };
        db.open_tree(DEVICE_CODES)
            .unwrap()
            .insert(code_key("CODE"), serde_json::to_vec(&code).unwrap())
            .unwrap();
        let queued = serde_json::json!({
            "queued_at": 5,
            "broadcast": {"message": {"action": "unsubscribe", "name": "Cy"}, "recipients": []}
        });
        db.open_tree(FAN_OUTS)
            .unwrap()
            .insert(7u64.to_be_bytes(), serde_json::to_vec(&queued).unwrap())
            .unwrap();
        db.flush().unwrap();
    }

    #[tokio::test]
    async fn test_a_format_1_data_dir_is_brought_up_to_date_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        write_format_1(dir.path());
        let store = crate::store::testing::open_sled_when_free(dir.path()).await;
        let first = store.devices_of("BOB").await.unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].member_id, "first");
        let second = store.device("https://p.example/2").await.unwrap().unwrap();
        assert_eq!(second.name, "b\u{43e}b (2)");
        assert_eq!(
            store.devices_of("b\u{43e}b (2)").await.unwrap(),
            vec![second]
        );
        assert!(store.is_banned("EVE").await.unwrap());
        assert_eq!(store.contents().await.unwrap().banned.len(), 1);
        assert_eq!(store.take_device_code("CODE", 0).await.unwrap(), None);
        let queued = store.take_fan_out().await.unwrap().unwrap();
        assert_eq!(
            queued.broadcast.message,
            PushMessage::Unsubscribe {
                names: vec!["Cy".into()]
            }
        );
        let recorded = store.settings.get(STORE_FORMAT).unwrap().unwrap();
        assert_eq!(recorded.as_ref(), FORMAT.to_be_bytes());
        drop(queued);
        drop(store);
        // Opened again, it is up to date already: nothing moves.
        let again = crate::store::testing::open_sled_when_free(dir.path()).await;
        assert_eq!(again.member_count().await.unwrap(), 2);
    }

    #[tokio::test]
    async fn test_a_data_dir_of_a_newer_format_is_refused_and_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = crate::store::testing::open_sled_when_free(dir.path()).await;
            store
                .settings
                .insert(STORE_FORMAT, &(FORMAT + 1).to_be_bytes())
                .unwrap();
            store
                .settings
                .insert(WRITTEN_BY_KEY, "pushchat 9.9.9")
                .unwrap();
            store.db.flush().unwrap();
        }
        let refused = loop {
            match SledStore::open(dir.path(), 1 << 20) {
                Err(StoreError::Sled(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
                opened => break opened,
            }
        };
        let Err(StoreError::NewerFormat(newer)) = refused else {
            panic!("a newer format was opened");
        };
        assert!(newer.to_string().contains("pushchat 9.9.9"), "{newer}");
        let db = sled::open(dir.path()).unwrap();
        let kept = db
            .open_tree(SETTINGS)
            .unwrap()
            .get(STORE_FORMAT)
            .unwrap()
            .unwrap();
        assert_eq!(kept.as_ref(), (FORMAT + 1).to_be_bytes());
    }
}
