//! A whole PostgreSQL store as one value, read in one snapshot, and written into an empty
//! store in one transaction.

use async_trait::async_trait;
use sqlx::types::Json;

use super::{
    format::holds_a_chat,
    members::{insert_device, keep_ban},
    put_setting,
    queue::queue,
    signed, PostgresStore, VAPID_SUBJECT,
};
use crate::{
    model::fan_out::FanOut,
    store::{
        format::{FORMAT, WRITTEN_BY},
        Backups, StoreContents, StoreError,
    },
};

#[async_trait]
impl Backups for PostgresStore {
    async fn contents(&self) -> Result<StoreContents, StoreError> {
        let mut tx = self.pool.begin().await?;
        // One snapshot for every read below.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        let devices = Self::all_devices(&mut tx).await?;
        let banned = sqlx::query_scalar("SELECT name FROM banned_names ORDER BY name_key")
            .fetch_all(&mut *tx)
            .await?;
        let history = Self::lines(&mut tx, None, usize::MAX).await?;
        let fan_outs: Vec<Json<FanOut>> = sqlx::query_scalar(
            "SELECT jsonb_build_object('message', message, 'recipients', recipients) \
             FROM fan_outs ORDER BY id",
        )
        .fetch_all(&mut *tx)
        .await?;
        let vapid_subject = sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(VAPID_SUBJECT)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(StoreContents {
            store_format: FORMAT,
            written_by: WRITTEN_BY.into(),
            devices,
            banned,
            history,
            fan_outs: fan_outs.into_iter().map(|Json(fan_out)| fan_out).collect(),
            vapid_subject,
        })
    }

    async fn restore(&self, contents: &StoreContents) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        if holds_a_chat(&mut tx).await? {
            return Err(StoreError::NotEmpty);
        }
        for device in &contents.devices {
            insert_device(&mut tx, device).await?;
        }
        for name in &contents.banned {
            keep_ban(&mut tx, name).await?;
        }
        for line in &contents.history {
            sqlx::query("INSERT INTO chat_lines (id, name, msg, time) VALUES ($1, $2, $3, $4)")
                .bind(signed(line.id)?)
                .bind(&line.name)
                .bind(&line.msg)
                .bind(signed(line.time)?)
                .execute(&mut *tx)
                .await?;
        }
        // New lines come after the restored ones.
        sqlx::query(
            "SELECT setval(pg_get_serial_sequence('chat_lines', 'id'), \
             (SELECT COALESCE(max(id), 0) + 1 FROM chat_lines), false)",
        )
        .execute(&mut *tx)
        .await?;
        for fan_out in &contents.fan_outs {
            queue(&mut tx, fan_out).await?;
        }
        if let Some(subject) = &contents.vapid_subject {
            put_setting(&mut tx, VAPID_SUBJECT, subject).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
