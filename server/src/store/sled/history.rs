//! The history in sled, keyed by line id (big-endian, so it reads back in order); a line
//! and its fan-out are one transaction.

use std::sync::atomic::Ordering;

use async_trait::async_trait;
use sled::{transaction::ConflictableTransactionError, Transactional};

use app::wire::ChatLine;

use super::{decode, SledStore};
use crate::{
    model::fan_out::FanOut,
    store::{ChatHistory, NewLine, StoreError},
};

#[async_trait]
impl ChatHistory for SledStore {
    async fn append_line(
        &self,
        line: NewLine<'_>,
        keep: usize,
        recipients: &[String],
    ) -> Result<(ChatLine, FanOut), StoreError> {
        self.commit(|| {
            let line = ChatLine {
                id: self.next_line_id.fetch_add(1, Ordering::Relaxed),
                name: line.name.into(),
                msg: line.msg.into(),
                time: line.time,
            };
            let record = serde_json::to_vec(&line)?;
            let key = line.id.to_be_bytes();
            let fan_out = FanOut::chat_line(&line, recipients);
            let fan_outs = self.fan_out_records(&fan_out)?;
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
            Ok((line, fan_out))
        })
        .await
    }

    async fn recent_lines(&self, limit: usize) -> Result<Vec<ChatLine>, StoreError> {
        self.lines(limit)
    }

    async fn lines_before(&self, before: u64, limit: usize) -> Result<Vec<ChatLine>, StoreError> {
        newest_lines(self.history.range(..before.to_be_bytes()), limit)
    }
}

/// The newest `limit` of `lines` (a range of the history tree), oldest first.
pub(super) fn newest_lines(lines: sled::Iter, limit: usize) -> Result<Vec<ChatLine>, StoreError> {
    let mut newest = lines
        .values()
        .rev()
        .take(limit)
        .map(|bytes| decode(&bytes?))
        .collect::<Result<Vec<ChatLine>, _>>()?;
    newest.reverse();
    Ok(newest)
}
