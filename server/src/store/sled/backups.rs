//! A whole sled store as one value, read while no change is half done, and written into
//! an empty store in one step.

use std::sync::atomic::Ordering;

use async_trait::async_trait;

use super::{next_id_in, SledStore, VAPID_SUBJECT};
use crate::store::{
    format::{FORMAT, WRITTEN_BY},
    name_key, Backups, StoreContents, StoreError,
};

#[async_trait]
impl Backups for SledStore {
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
        self.commit(|| {
            for device in &contents.devices {
                self.insert_device(device)?;
            }
            for name in &contents.banned {
                self.banned.insert(name_key(name), name.as_bytes())?;
            }
            for fan_out in &contents.fan_outs {
                self.enqueue(fan_out)?;
            }
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
        })
        .await
    }
}
