//! The chat's durable state, in sled: members' devices keyed by their push endpoint, an
//! index that keeps names unique (each name belongs to one member, who may have several
//! devices), how many devices each member has, codes that add a device, banned names, the chat history keyed by line id (big-endian, so it
//! reads back in order), and the server's VAPID contact. The store only stores; who may do
//! what is decided in `chat`. sled's byte types never leave this module, and every change
//! that spans trees is one transaction.

use std::{
    net::IpAddr,
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        RwLock, RwLockReadGuard,
    },
};

use serde::{Deserialize, Serialize};
use sled::{
    transaction::{ConflictableTransactionError, TransactionError},
    Transactional, Tree,
};

use app::wire::ChatLine;
use unicode_normalization::UnicodeNormalization;

use sha2::{Digest, Sha256};

use crate::subscription::Subscription;

/// Devices by push endpoint.
const DEVICES: &str = "members";
/// Member ids by [`name_key`] of their name.
const NAMES: &str = "member_names";
/// How many devices each member id has (u32, big-endian): its last leaving frees the name.
const DEVICE_COUNTS: &str = "device_counts";
/// One-time codes that add a device to a member, by the SHA-256 of the code.
const DEVICE_CODES: &str = "device_codes";
const HISTORY: &str = "history";
/// Chat lines whose fan-out has not finished, by line id: resumed after a crash.
const OUTBOX: &str = "outbox";
/// Banned names, by [`name_key`].
const BANNED: &str = "banned_names";
/// Single values: the VAPID contact the server last ran with.
const SETTINGS: &str = "settings";
const VAPID_SUBJECT: &str = "vapid_subject";

/// One browser of a member, as stored. A member is the devices sharing a `member_id`, and
/// so a name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub name: String,
    /// Random, made when the member first joined; shared by all its devices.
    pub member_id: String,
    pub subscription: Subscription,
    /// When this device joined, in milliseconds since the Unix epoch.
    pub joined: u64,
    /// The address it joined from, for the members-per-address limit (absent in records
    /// older than that limit).
    #[serde(default)]
    pub joined_from: Option<IpAddr>,
    /// Until when the member gets no chat lines (ms since the Unix epoch), if it muted
    /// them. Records from before muting existed have none.
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

/// What removing a device did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removed {
    pub device: Device,
    /// It was the member's last device: the member is gone and its name is free.
    pub member_left: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the name {0:?} belongs to another member")]
    NameTaken(String),
    #[error("the endpoint belongs to another member")]
    EndpointTaken,
    #[error("the database failed")]
    Database(#[from] sled::Error),
    #[error("a stored record is unreadable")]
    Corrupt(#[from] serde_json::Error),
    #[error("a stored line id is not 8 bytes")]
    BadKey,
    #[error("the store already holds a chat")]
    NotEmpty,
}

impl From<TransactionError<StoreError>> for StoreError {
    fn from(error: TransactionError<StoreError>) -> Self {
        match error {
            TransactionError::Abort(error) => error,
            TransactionError::Storage(error) => StoreError::Database(error),
        }
    }
}

/// Everything the store holds, at one moment: what a backup keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreContents {
    pub devices: Vec<Device>,
    pub banned: Vec<String>,
    pub history: Vec<ChatLine>,
    /// Lines whose fan-out had not finished.
    pub unsent: Vec<ChatLine>,
    pub vapid_subject: Option<String>,
}

/// Members and history on disk. Cheap to share behind an `Arc`; sled is thread-safe.
pub struct ChatStore {
    db: sled::Db,
    devices: Tree,
    names: Tree,
    device_counts: Tree,
    device_codes: Tree,
    history: Tree,
    outbox: Tree,
    banned: Tree,
    settings: Tree,
    /// The next chat line's id: above every stored one, restored ones included.
    next_line_id: AtomicU64,
    /// Changes hold it shared; [`ChatStore::contents`] holds it alone, so a backup never
    /// sees half of a change that spans trees.
    changing: RwLock<()>,
}

impl ChatStore {
    /// Opens (or creates) the database in `dir`, with sled's page cache limited to
    /// `cache_bytes` (its default would be 1 GiB).
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .open()?;
        let history = db.open_tree(HISTORY)?;
        let outbox = db.open_tree(OUTBOX)?;
        let next_line_id = AtomicU64::new(next_id_after(&history, &outbox)?);
        Ok(ChatStore {
            devices: db.open_tree(DEVICES)?,
            names: db.open_tree(NAMES)?,
            device_counts: db.open_tree(DEVICE_COUNTS)?,
            device_codes: db.open_tree(DEVICE_CODES)?,
            banned: db.open_tree(BANNED)?,
            settings: db.open_tree(SETTINGS)?,
            history,
            outbox,
            next_line_id,
            changing: RwLock::new(()),
            db,
        })
    }

    fn change(&self) -> RwLockReadGuard<'_, ()> {
        self.changing
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn device(&self, endpoint: &str) -> Result<Option<Device>, StoreError> {
        self.devices
            .get(endpoint)?
            .map(|bytes| decode(&bytes))
            .transpose()
    }

    /// Every member's devices, in no particular order.
    pub fn devices(&self) -> Result<Vec<Device>, StoreError> {
        self.devices
            .iter()
            .values()
            .map(|bytes| decode(&bytes?))
            .collect()
    }

    /// The devices of the member called `name` (compared by [`name_key`]).
    pub fn devices_of(&self, name: &str) -> Result<Vec<Device>, StoreError> {
        let Some(member_id) = self.names.get(name_key(name))? else {
            return Ok(Vec::new());
        };
        let mut devices = self.devices()?;
        devices.retain(|device| device.member_id.as_bytes() == member_id.as_ref());
        Ok(devices)
    }

    /// How many members there are (people, not devices).
    pub fn member_count(&self) -> usize {
        self.names.len()
    }

    /// Whether the store holds any member; cheaper than counting.
    pub fn has_members(&self) -> Result<bool, StoreError> {
        Ok(self.devices.first()?.is_some())
    }

    /// Stores `device`: a new member's first, another of a member's, or the same one
    /// again. Refuses a name (compared by [`name_key`]) that another member holds, and an
    /// endpoint that another member's device holds.
    pub fn put_device(&self, device: &Device) -> Result<(), StoreError> {
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

    /// Moves a device to a new subscription: the record at `old_endpoint` goes, `device`
    /// (same member, new subscription) comes, in one transaction. Refuses a new endpoint
    /// that another device holds.
    pub fn replace_subscription(
        &self,
        old_endpoint: &str,
        device: &Device,
    ) -> Result<(), StoreError> {
        let _change = self.change();
        let endpoint = device.subscription.endpoint.as_bytes();
        let record = serde_json::to_vec(device)?;
        self.devices.transaction(|devices| {
            if endpoint != old_endpoint.as_bytes() && devices.get(endpoint)?.is_some() {
                return abort(StoreError::EndpointTaken);
            }
            devices.remove(old_endpoint.as_bytes())?;
            devices.insert(endpoint, record.as_slice())?;
            Ok(())
        })?;
        Ok(())
    }

    /// Sets until when the device at `endpoint` gets no chat lines. Returns false when no
    /// device is there (it left meanwhile).
    pub fn set_muted_until(&self, endpoint: &str, until: u64) -> Result<bool, StoreError> {
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

    /// Removes the device at `endpoint` if its auth secret is still `auth` (it may have
    /// been replaced meanwhile); with the member's last device, the member and its name go.
    pub fn remove_device(&self, endpoint: &str, auth: &str) -> Result<Option<Removed>, StoreError> {
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

    /// Keeps `code` (by its hash) until it is taken or expires; drops expired ones.
    pub fn put_device_code(
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

    /// Takes `code` once: what it grants, if it exists and has not expired.
    pub fn take_device_code(&self, code: &str, now: u64) -> Result<Option<DeviceCode>, StoreError> {
        let _change = self.change();
        let Some(value) = self.device_codes.remove(code_key(code))? else {
            return Ok(None);
        };
        let grant: DeviceCode = decode(&value)?;
        Ok((grant.expires > now).then_some(grant))
    }

    /// Appends a line to the history, and to the outbox until its fan-out is done, in one
    /// transaction; then drops the oldest lines beyond `keep`.
    pub fn append_line(
        &self,
        name: &str,
        msg: &str,
        time: u64,
        keep: usize,
    ) -> Result<ChatLine, StoreError> {
        let _change = self.change();
        let line = ChatLine {
            id: self.next_line_id.fetch_add(1, Ordering::Relaxed),
            name: name.into(),
            msg: msg.into(),
            time,
        };
        let record = serde_json::to_vec(&line)?;
        let key = line.id.to_be_bytes();
        (&self.history, &self.outbox).transaction(|(history, outbox)| {
            history.insert(&key, record.as_slice())?;
            outbox.insert(&key, record.as_slice())?;
            Ok::<_, ConflictableTransactionError<StoreError>>(())
        })?;
        for old in self.history.iter().keys().rev().skip(keep) {
            self.history.remove(old?)?;
        }
        Ok(line)
    }

    /// Lines whose fan-out had not finished when the server stopped, oldest first.
    pub fn unsent_lines(&self) -> Result<Vec<ChatLine>, StoreError> {
        self.outbox
            .iter()
            .values()
            .map(|bytes| decode(&bytes?))
            .collect()
    }

    /// The fan-out of line `id` is done: every member got an answer from its push service.
    pub fn line_sent(&self, id: u64) -> Result<(), StoreError> {
        let _change = self.change();
        self.outbox.remove(id.to_be_bytes())?;
        Ok(())
    }

    /// The newest `limit` lines, oldest first.
    pub fn recent_lines(&self, limit: usize) -> Result<Vec<ChatLine>, StoreError> {
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

    /// Bans `name` (compared by [`name_key`]) from joining.
    pub fn ban(&self, name: &str) -> Result<(), StoreError> {
        let _change = self.change();
        self.banned.insert(name_key(name), name.as_bytes())?;
        Ok(())
    }

    /// Lifts a ban; says whether there was one.
    pub fn unban(&self, name: &str) -> Result<bool, StoreError> {
        let _change = self.change();
        Ok(self.banned.remove(name_key(name))?.is_some())
    }

    pub fn is_banned(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.banned.contains_key(name_key(name))?)
    }

    /// The VAPID contact the server last ran with, for subcommands run without one.
    pub fn vapid_subject(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .settings
            .get(VAPID_SUBJECT)?
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
    }

    pub fn set_vapid_subject(&self, subject: &str) -> Result<(), StoreError> {
        let _change = self.change();
        self.settings.insert(VAPID_SUBJECT, subject.as_bytes())?;
        Ok(())
    }

    /// Everything, as of one moment: no change is half in it.
    pub fn contents(&self) -> Result<StoreContents, StoreError> {
        let _alone = self
            .changing
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(StoreContents {
            devices: self.devices()?,
            banned: self
                .banned
                .iter()
                .values()
                .map(|name| Ok(String::from_utf8_lossy(&name?).into_owned()))
                .collect::<Result<_, StoreError>>()?,
            history: self.recent_lines(usize::MAX)?,
            unsent: self.unsent_lines()?,
            vapid_subject: self.vapid_subject()?,
        })
    }

    /// Fills an empty store with `contents` (a backup); refuses a store that holds a chat.
    pub fn restore(&self, contents: &StoreContents) -> Result<(), StoreError> {
        if self.has_members()? || !self.history.is_empty() || !self.banned.is_empty() {
            return Err(StoreError::NotEmpty);
        }
        for device in &contents.devices {
            self.put_device(device)?;
        }
        for name in &contents.banned {
            self.ban(name)?;
        }
        let _change = self.change();
        for (tree, lines) in [
            (&self.history, &contents.history),
            (&self.outbox, &contents.unsent),
        ] {
            for line in lines {
                tree.insert(line.id.to_be_bytes(), serde_json::to_vec(line)?)?;
            }
        }
        if let Some(subject) = &contents.vapid_subject {
            self.settings.insert(VAPID_SUBJECT, subject.as_bytes())?;
        }
        self.next_line_id.store(
            next_id_after(&self.history, &self.outbox)?,
            Ordering::Relaxed,
        );
        Ok(())
    }

    /// Waits until every change so far is on disk. Uses sled's blocking flush on one of
    /// tokio's blocking threads: `flush_async` runs on sled's own small thread pool, and
    /// under concurrent transactions its flushes can take every thread of that pool while
    /// waiting for a write queued behind them (sled issue #1308; our burst test hung so).
    pub async fn flush(&self) -> Result<(), StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|failed| sled::Error::Io(std::io::Error::other(failed)))??;
        Ok(())
    }
}

/// The key two names collide on: names a reader cannot tell apart are the same name.
/// Compatibility forms fold together (NFKC: full-width "Ａｎｎ" is "Ann"), and so does case.
/// One more than the highest line id in `history` and `outbox`.
fn next_id_after(history: &Tree, outbox: &Tree) -> Result<u64, StoreError> {
    let mut next = 0;
    for tree in [history, outbox] {
        if let Some((key, _)) = tree.last()? {
            let id = u64::from_be_bytes(key.as_ref().try_into().map_err(|_| StoreError::BadKey)?);
            next = next.max(id + 1);
        }
    }
    Ok(next)
}

fn count_of(bytes: Option<&[u8]>) -> u32 {
    bytes
        .and_then(|bytes| bytes.try_into().ok())
        .map_or(0, u32::from_be_bytes)
}

/// Codes are kept hashed: the store's bytes never hold a usable code.
fn code_key(code: &str) -> [u8; 32] {
    Sha256::digest(code.as_bytes()).into()
}

fn name_key(name: &str) -> String {
    name.nfkc().collect::<String>().to_lowercase()
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

    fn store() -> (tempfile::TempDir, ChatStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = ChatStore::open(dir.path(), 1 << 20).unwrap();
        (dir, store)
    }

    /// A device of the member whose id is its lowercase name.
    fn member(name: &str, endpoint: &str, auth: &str) -> Device {
        Device {
            name: name.into(),
            member_id: name.to_lowercase(),
            subscription: Subscription {
                endpoint: endpoint.into(),
                p256dh: "key".into(),
                auth: auth.into(),
            },
            joined: 1,
            joined_from: None,
            muted_until: None,
        }
    }

    const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";
    const OTHER_AUTH: &str = "AAAAAAAAAAAAAAAAAAAAAA";

    #[test]
    fn test_members_are_stored_and_read_back() {
        let (_dir, store) = store();
        assert!(!store.has_members().unwrap());
        let ann = member("Ann", "https://p.example/1", AUTH);
        store.put_device(&ann).unwrap();
        assert_eq!(
            store.device("https://p.example/1").unwrap(),
            Some(ann.clone())
        );
        assert_eq!(store.devices().unwrap(), vec![ann]);
        assert!(store.has_members().unwrap());
    }

    #[test]
    fn test_a_name_cannot_be_held_by_two_endpoints_whatever_its_case() {
        let (_dir, store) = store();
        store
            .put_device(&member("Ann", "https://p.example/1", AUTH))
            .unwrap();
        let impostor = Device {
            member_id: "someone else".into(),
            ..member("ANN", "https://p.example/2", AUTH)
        };
        let clash = store.put_device(&impostor);
        assert!(matches!(clash, Err(StoreError::NameTaken(name)) if name == "ANN"));
        assert_eq!(store.devices().unwrap().len(), 1);
    }

    #[test]
    fn test_names_a_reader_cannot_tell_apart_collide() {
        assert_eq!(name_key("Ann Lee"), name_key("ANN lee"));
        assert_eq!(name_key("Ａｎｎ"), name_key("ann"));
        assert_eq!(name_key("ﬁona"), name_key("Fiona"));
        assert_ne!(name_key("Ann"), name_key("Anne"));
    }

    #[test]
    fn test_a_members_devices_share_its_name_until_the_last_leaves() {
        let (_dir, store) = store();
        let phone = member("Ann", "https://p.example/1", AUTH);
        let laptop = member("Ann", "https://p.example/2", AUTH);
        store.put_device(&phone).unwrap();
        store.put_device(&laptop).unwrap();
        store.put_device(&laptop).unwrap(); // the same device again counts once
        assert_eq!(store.member_count(), 1);
        assert_eq!(store.devices_of("ann").unwrap().len(), 2);
        let stolen = Device {
            member_id: "bo".into(),
            ..member("Bo", "https://p.example/1", AUTH)
        };
        assert!(matches!(
            store.put_device(&stolen),
            Err(StoreError::EndpointTaken)
        ));

        let first = store.remove_device("https://p.example/1", AUTH).unwrap();
        assert!(!first.unwrap().member_left);
        let last = store.remove_device("https://p.example/2", AUTH).unwrap();
        assert!(last.unwrap().member_left);
        assert_eq!(store.member_count(), 0);
        store.put_device(&stolen).unwrap();
    }

    #[test]
    fn test_removal_needs_the_current_secret_and_frees_the_name() {
        let (_dir, store) = store();
        store
            .put_device(&member("Ann", "https://p.example/1", AUTH))
            .unwrap();
        assert_eq!(
            store
                .remove_device("https://p.example/1", OTHER_AUTH)
                .unwrap(),
            None
        );
        assert_eq!(
            store.remove_device("https://p.example/9", AUTH).unwrap(),
            None
        );
        let removed = store.remove_device("https://p.example/1", AUTH).unwrap();
        assert_eq!(removed.map(|r| r.device.name), Some("Ann".into()));
        assert!(!store.has_members().unwrap());
        store
            .put_device(&member("Ann", "https://p.example/2", AUTH))
            .unwrap();
    }

    #[test]
    fn test_a_mute_is_kept_with_the_member_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = ChatStore::open(dir.path(), 1 << 20).unwrap();
            store
                .put_device(&member("Ann", "https://p.example/1", AUTH))
                .unwrap();
            assert!(store.set_muted_until("https://p.example/1", 99).unwrap());
            assert!(!store.set_muted_until("https://p.example/2", 99).unwrap());
        }
        let store = reopen(dir.path());
        let ann = store.device("https://p.example/1").unwrap().unwrap();
        assert_eq!(ann.muted_until, Some(99));
        assert_eq!(store.devices().unwrap().len(), 1);
    }

    #[test]
    fn test_history_keeps_the_newest_lines_in_order() {
        let (_dir, store) = store();
        for n in 0..5 {
            store
                .append_line("Ann", &format!("line {n}"), n, 3)
                .unwrap();
        }
        let lines = store.recent_lines(10).unwrap();
        let texts: Vec<_> = lines.iter().map(|l| l.msg.as_str()).collect();
        assert_eq!(texts, ["line 2", "line 3", "line 4"]);
        assert!(lines.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(store.recent_lines(2).unwrap()[0].msg, "line 3");
    }

    #[test]
    fn test_a_line_stays_in_the_outbox_until_sent_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = {
            let store = ChatStore::open(dir.path(), 1 << 20).unwrap();
            let first = store.append_line("Ann", "one", 1, 10).unwrap();
            let second = store.append_line("Ann", "two", 2, 10).unwrap();
            store.line_sent(first.id).unwrap();
            (first, second)
        };
        let store = reopen(dir.path());
        assert_eq!(store.unsent_lines().unwrap(), vec![second.clone()]);
        store.line_sent(second.id).unwrap();
        assert!(store.unsent_lines().unwrap().is_empty());
        assert_eq!(store.recent_lines(10).unwrap(), vec![first, second]);
    }

    /// Opens the store a dropped `ChatStore` used. sled's background flusher lets go of
    /// the directory's lock a moment after the drop, so this waits for it (up to 10 s).
    fn reopen(dir: &Path) -> ChatStore {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match ChatStore::open(dir, 1 << 20) {
                Err(StoreError::Database(sled::Error::Io(error)))
                    if error.to_string().contains("lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                result => return result.unwrap(),
            }
        }
    }

    #[test]
    fn test_everything_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let first_id = {
            let store = ChatStore::open(dir.path(), 1 << 20).unwrap();
            store
                .put_device(&member("Ann", "https://p.example/1", AUTH))
                .unwrap();
            store.append_line("Ann", "hello", 7, 10).unwrap().id
        };
        let store = reopen(dir.path());
        assert_eq!(store.devices().unwrap().len(), 1);
        assert_eq!(store.recent_lines(10).unwrap()[0].msg, "hello");
        let next = store.append_line("Ann", "again", 8, 10).unwrap();
        assert!(next.id > first_id);
    }

    #[test]
    fn test_contents_restore_into_an_empty_store_and_new_lines_come_after() {
        let (_dir, store) = store();
        store
            .put_device(&member("Ann", "https://p.example/1", AUTH))
            .unwrap();
        store.ban("Mallory").unwrap();
        store.set_vapid_subject("mailto:ops@example.org").unwrap();
        let sent = store.append_line("Ann", "one", 1, 10).unwrap();
        store.line_sent(sent.id).unwrap();
        store.append_line("Ann", "two", 2, 10).unwrap();
        let contents = store.contents().unwrap();
        assert_eq!(contents.unsent.len(), 1);

        let (_other, fresh) = self::store();
        fresh.restore(&contents).unwrap();
        assert_eq!(fresh.contents().unwrap(), contents);
        assert!(fresh.is_banned("MALLORY").unwrap());
        let next = fresh.append_line("Ann", "three", 3, 10).unwrap();
        assert!(next.id > contents.history[1].id);
        assert!(matches!(
            fresh.restore(&contents),
            Err(StoreError::NotEmpty)
        ));
    }
}
