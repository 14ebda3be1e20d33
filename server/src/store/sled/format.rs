//! Bringing a sled store's format up to date when it opens (see `store::format`), and
//! the outbox of builds before the queue of fan-outs.

use sled::{
    transaction::{ConflictableTransactionError, TransactionalTree, UnabortableTransactionError},
    Transactional, Tree,
};

use app::wire::ChatLine;

use super::{decode, indexes::Entries, SledStore, OLD_OUTBOX, STORE_FORMAT, WRITTEN_BY_KEY};
use crate::{
    model::{clock::now_millis, fan_out::FanOut, member::Device},
    store::{
        format::{
            self, FORMAT, INDEXED_DEVICES, SEEN_DEVICES, SKELETON_NAMES, UNRECORDED, WRITTEN_BY,
        },
        name_key, StoreError,
    },
};

/// The format recorded in `settings`, if any (none in a new store, or one from before
/// formats were recorded); a newer format than this build's is refused. It reads nothing
/// else, so it is what opening a store does first.
pub(super) fn recorded_format(settings: &Tree) -> Result<Option<u32>, StoreError> {
    let Some(bytes) = settings.get(STORE_FORMAT)? else {
        return Ok(None);
    };
    let found = u32::from_be_bytes(
        bytes
            .as_ref()
            .try_into()
            .map_err(|_| StoreError::BadValue("the recorded store format is not 4 bytes"))?,
    );
    let written_by = settings
        .get(WRITTEN_BY_KEY)?
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
    format::check(found, written_by)?;
    Ok(Some(found))
}

impl SledStore {
    /// Brings the store from its `recorded` format (see [`recorded_format`]) to this
    /// build's: a fresh store gets this build's, an older one is migrated (see `format`).
    pub(super) fn bring_format_up_to_date(&self, recorded: Option<u32>) -> Result<(), StoreError> {
        let found = match recorded {
            Some(found) => found,
            None if self.holds_a_chat()? => UNRECORDED,
            None => FORMAT,
        };
        if found < SKELETON_NAMES {
            self.migrate_to_format_2()?;
        }
        if found < INDEXED_DEVICES {
            self.index_devices()?;
        }
        // Formats 4 (`FAN_OUT_ORIGINS`) and 5 (`DEVICE_RECIPIENTS`) move nothing: batches
        // queued before are read as they are.
        if found < SEEN_DEVICES {
            self.date_unseen_devices()?;
        }
        if found < FORMAT {
            tracing::warn!(
                from = found,
                to = FORMAT,
                "brought the store's format up to date"
            );
        }
        if recorded != Some(FORMAT) {
            self.settings.insert(STORE_FORMAT, &FORMAT.to_be_bytes())?;
            self.settings
                .insert(WRITTEN_BY_KEY, WRITTEN_BY.as_bytes())?;
        }
        self.db.flush()?;
        Ok(())
    }

    pub(super) fn holds_a_chat(&self) -> Result<bool, StoreError> {
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
                    record_format(settings, SKELETON_NAMES)?;
                    Ok::<_, ConflictableTransactionError<StoreError>>(())
                },
            )?;
        Ok(())
    }

    /// Format 2 to 3: the indexes of devices (see `indexes`), built from the devices
    /// (which format 2 did not index). Not in one transaction: sled's keeps every write
    /// in memory (2 GB for 100,000 devices). The indexes, which nothing reads before the
    /// format is recorded, are emptied, filled from one device at a time and flushed, and
    /// only then is format 3 recorded: an interrupted build begins again at the next open.
    fn index_devices(&self) -> Result<(), StoreError> {
        let trees = (&self.by_member, &self.by_address, &self.member_names);
        for tree in [trees.0, trees.1, trees.2] {
            tree.clear()?;
        }
        for record in self.devices.iter().values() {
            let device: Device = decode(&record?)?;
            Entries::of(&device).insert_into(trees.0, trees.1, trees.2)?;
        }
        self.step_done(INDEXED_DEVICES)
    }

    /// Format 5 to 6: every device that recorded no sign of life counts as seen now, so an
    /// upgrade prunes nobody at once. Not in one transaction, for the memory reason of
    /// [`Self::index_devices`]: one device at a time (only those still undated, so an
    /// interrupted step goes on where it stopped), flushed, then format 6 recorded.
    fn date_unseen_devices(&self) -> Result<(), StoreError> {
        let now = now_millis();
        for entry in self.devices.iter() {
            let (endpoint, record) = entry?;
            let mut device: Device = decode(&record)?;
            if format::date_unseen(&mut device, now) {
                self.devices
                    .insert(endpoint, serde_json::to_vec(&device)?)?;
            }
        }
        self.step_done(SEEN_DEVICES)
    }

    /// A step done outside a transaction is on disk: flushes it, then records the
    /// `format` it reached.
    fn step_done(&self, format: u32) -> Result<(), StoreError> {
        self.db.flush()?;
        self.settings.transaction(|settings| {
            record_format(settings, format)?;
            Ok::<_, ConflictableTransactionError<StoreError>>(())
        })?;
        Ok(())
    }

    /// Builds before the queue kept the chat lines whose fan-out had not finished in an
    /// outbox, to send them again on the next start: they are queued to every member now.
    pub(super) fn queue_old_outbox(&self) -> Result<(), StoreError> {
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
            let everyone: Vec<String> = self
                .all_devices()?
                .into_iter()
                .map(|device| device.subscription.endpoint)
                .collect();
            let mut batch = sled::Batch::default();
            for line in &lines {
                for (id, fan_out) in self.fan_out_records(&FanOut::chat_line(line, &everyone))? {
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
}

/// Records that the store is in `format`, written by this build.
fn record_format(
    settings: &TransactionalTree,
    format: u32,
) -> Result<(), UnabortableTransactionError> {
    settings.insert(STORE_FORMAT, &format.to_be_bytes())?;
    settings.insert(WRITTEN_BY_KEY, WRITTEN_BY.as_bytes())?;
    Ok(())
}
