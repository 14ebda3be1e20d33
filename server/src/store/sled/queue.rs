//! The queue of fan-outs in sled, keyed by id (big-endian, oldest first) followed by the
//! batch's push-service origin, so that a taker passes over an origin it holds back
//! without reading the batch (a batch queued before store format 4 has the id alone, and
//! its first recipient's origin). A batch names its recipients by endpoint, and taking it
//! gets each one's device (see `model::fan_out::Recipients`). A fan-out this process took
//! is skipped until it is done, or the process stops (the next start takes it again); one
//! queued is announced once it is on disk.

use std::{
    collections::HashSet,
    sync::{atomic::Ordering, Arc, Mutex, RwLock},
};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sled::{IVec, Tree};

use super::{decode, flush, id_of, SledStore};
use crate::{
    model::{
        clock::now_millis,
        fan_out::{Batch, FanOut, Recipients, ResolvedFanOut},
    },
    store::{FanOutLease, FanOutQueue, StoreError, TakenFanOut, FAN_OUT_POLL},
};

#[async_trait]
impl FanOutQueue for SledStore {
    async fn queue_fan_out(&self, fan_out: &FanOut) -> Result<(), StoreError> {
        self.commit(|| self.enqueue(fan_out)).await
    }

    async fn take_fan_out(&self, skip: &[String]) -> Result<Option<TakenFanOut>, StoreError> {
        let mut taken = self
            .taken
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for entry in self.fan_outs.iter() {
            let (key, value) = entry?;
            let id = id_of(&key)?;
            if taken.contains(&id) {
                continue;
            }
            let mut queued = None;
            let origin = match key.get(8..) {
                Some(origin) if !origin.is_empty() => String::from_utf8_lossy(origin).into_owned(),
                _ => queued
                    .insert(decode::<QueuedFanOut>(&value)?)
                    .fan_out
                    .origin(),
            };
            if skip.contains(&origin) {
                continue;
            }
            let queued = match queued {
                Some(queued) => queued,
                None => decode(&value)?,
            };
            // Read before it counts as taken: a failed read leaves it in the queue.
            let (message, recipients) = queued.fan_out.into_parts();
            let recipients = match recipients {
                Recipients::Devices { endpoints } => self.subscriptions_at(&endpoints)?,
                Recipients::Subscriptions(subscriptions) => subscriptions,
            };
            let fan_out = ResolvedFanOut {
                message,
                recipients,
            };
            taken.insert(id);
            let lease = SledLease {
                id,
                key,
                fan_outs: self.fan_outs.clone(),
                taken: Arc::clone(&self.taken),
                changing: Arc::clone(&self.changing),
                db: self.db.clone(),
            };
            let taken = TakenFanOut::new(fan_out, origin, queued.queued_at, lease);
            return Ok(Some(taken));
        }
        Ok(None)
    }

    async fn fan_out_queued(&self) {
        let _ = tokio::time::timeout(FAN_OUT_POLL, self.queued.notified()).await;
    }
}

impl SledStore {
    /// Queues `fan_out` in batches, to be announced by the change's commit.
    pub(super) fn enqueue(&self, fan_out: &FanOut) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (id, record) in self.fan_out_records(fan_out)? {
            batch.insert(&id, record);
        }
        self.fan_outs.apply_batch(batch)?;
        self.unannounced.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Every queued fan-out, oldest first.
    pub(super) fn queued_fan_outs(&self) -> Result<Vec<FanOut>, StoreError> {
        self.fan_outs
            .iter()
            .values()
            .map(|bytes| Ok(decode::<QueuedFanOut>(&bytes?)?.fan_out))
            .collect()
    }

    /// The records that queue `fan_out`, under fresh ids.
    pub(super) fn fan_out_records(&self, fan_out: &FanOut) -> Result<Vec<QueueRecord>, StoreError> {
        let queued_at = now_millis();
        fan_out
            .batches()
            .map(|Batch { origin, fan_out }| {
                let id = self.next_fan_out_id.fetch_add(1, Ordering::Relaxed);
                let key = IVec::from([&id.to_be_bytes()[..], origin.as_bytes()].concat());
                let record = QueuedFanOut { queued_at, fan_out };
                Ok((key, serde_json::to_vec(&record)?))
            })
            .collect()
    }
}

/// A queued fan-out's key (its id, big-endian, then its origin) and value (a
/// [`QueuedFanOut`]).
type QueueRecord = (IVec, Vec<u8>);

/// A queued fan-out as stored.
#[derive(Serialize, Deserialize)]
struct QueuedFanOut {
    /// Milliseconds since the Unix epoch.
    queued_at: u64,
    /// Named so on disk since the first queue.
    #[serde(rename = "broadcast")]
    fan_out: FanOut,
}

/// A fan-out this process took: its id stays in `taken` until it is done or the process
/// stops (then the next start takes it again).
struct SledLease {
    id: u64,
    key: IVec,
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
            self.fan_outs.remove(&self.key)?;
        }
        self.taken
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&self.id);
        // A crash before this flush would send the fan-out once more.
        flush(self.db.clone()).await
    }
}
