//! The history in PostgreSQL: a line and its fan-out in one transaction.

use async_trait::async_trait;

use app::wire::ChatLine;

use super::{queue::queue, signed, unsigned, PostgresStore};
use crate::{
    model::fan_out::FanOut,
    store::{ChatHistory, NewLine, StoreError},
};

#[async_trait]
impl ChatHistory for PostgresStore {
    async fn append_line(
        &self,
        line: NewLine<'_>,
        keep: usize,
        recipients: &[String],
    ) -> Result<(ChatLine, FanOut), StoreError> {
        let mut tx = self.pool.begin().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO chat_lines (name, msg, time) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(line.name)
        .bind(line.msg)
        .bind(signed(line.time)?)
        .fetch_one(&mut *tx)
        .await?;
        let line = ChatLine {
            id: unsigned(id)?,
            name: line.name.into(),
            msg: line.msg.into(),
            time: line.time,
        };
        let fan_out = FanOut::chat_line(&line, recipients);
        queue(&mut tx, &fan_out).await?;
        sqlx::query(
            "DELETE FROM chat_lines WHERE id <= \
             (SELECT id FROM chat_lines ORDER BY id DESC OFFSET $1 LIMIT 1)",
        )
        .bind(i64::try_from(keep).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((line, fan_out))
    }

    async fn recent_lines(&self, limit: usize) -> Result<Vec<ChatLine>, StoreError> {
        Self::lines(&mut *self.pool.acquire().await?, None, limit).await
    }

    async fn lines_before(&self, before: u64, limit: usize) -> Result<Vec<ChatLine>, StoreError> {
        Self::lines(&mut *self.pool.acquire().await?, Some(before), limit).await
    }
}
