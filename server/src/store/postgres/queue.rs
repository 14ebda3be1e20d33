//! The queue of fan-outs in PostgreSQL: rows an instance takes with `FOR UPDATE SKIP
//! LOCKED` and holds, in an open transaction, until it has delivered them and deletes
//! them. Other instances skip a held row; when an instance dies its transaction ends and
//! the row is free for the next taker. A row names its recipients by endpoint (see
//! `model::fan_out::Recipients`), and taking it reads their devices' subscriptions in the
//! same transaction, in one query. Queuing one sends `NOTIFY pushchat_fan_outs`, which
//! PostgreSQL delivers when the transaction commits, so idle instances look at once.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::{types::Json, PgConnection, Postgres, Transaction};

use super::{members::subscriptions_at, signed, unsigned, PostgresStore, FAN_OUTS_CHANNEL};
use crate::{
    model::{
        clock::now_millis,
        fan_out::{FanOut, Recipients, ResolvedFanOut},
    },
    store::{FanOutLease, FanOutQueue, StoreError, TakenFanOut, FAN_OUT_POLL},
};

#[async_trait]
impl FanOutQueue for PostgresStore {
    async fn queue_fan_out(&self, fan_out: &FanOut) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        queue(&mut tx, fan_out).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn take_fan_out(&self, skip: &[String]) -> Result<Option<TakenFanOut>, StoreError> {
        let unreadable: Vec<i64> = self
            .unreadable
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .copied()
            .collect();
        let mut tx = self.pool.begin().await?;
        // The row stays locked while this transaction waits on push services, however
        // long: a server-wide idle timeout would free it and have it sent twice.
        sqlx::query("SET LOCAL idle_in_transaction_session_timeout = 0")
            .execute(&mut *tx)
            .await?;
        // A batch without an origin (queued before format 4) is taken whatever `skip`
        // says: its first recipient's origin would need its recipients read.
        let row: Option<QueuedRow> = sqlx::query_as(
            "SELECT id, jsonb_build_object('message', message, 'recipients', recipients), \
             origin, queued_at FROM fan_outs \
             WHERE id <> ALL($1) AND (origin IS NULL OR origin <> ALL($2)) \
             ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
        )
        .bind(&unreadable)
        .bind(skip)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((id, Json(fan_out), origin, queued_at)) = row else {
            return Ok(None);
        };
        let fan_out: FanOut = match serde_json::from_value(fan_out) {
            Ok(decoded) => decoded,
            Err(error) => {
                // Queued by another version of pushchat, say: left for an instance that
                // can read it, and skipped here from now on.
                self.unreadable
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .insert(id);
                tracing::error!(id, %error, "a queued fan-out is unreadable by this version; skipping it");
                return Err(StoreError::Corrupt(error));
            }
        };
        let origin = origin.unwrap_or_else(|| fan_out.origin());
        let (message, recipients) = fan_out.into_parts();
        let recipients = match recipients {
            Recipients::Devices { endpoints } => subscriptions_at(&mut tx, &endpoints).await?,
            Recipients::Subscriptions(subscriptions) => subscriptions,
        };
        let fan_out = ResolvedFanOut {
            message,
            recipients,
        };
        let lease = PostgresLease { id, tx };
        let taken = TakenFanOut::new(fan_out, origin, unsigned(queued_at)?, lease);
        Ok(Some(taken))
    }

    async fn fan_out_queued(&self) {
        let mut listener = self.listener.lock().await;
        if listener.is_none() {
            *listener = self.listen().await;
        }
        let Some(listening) = listener.as_mut() else {
            tokio::time::sleep(FAN_OUT_POLL).await;
            return;
        };
        let mut heard = tokio::time::timeout(FAN_OUT_POLL, listening.recv()).await;
        // One look at the queue answers every notification already here.
        while let Ok(Ok(_)) = heard {
            heard = tokio::time::timeout(Duration::ZERO, listening.recv()).await;
        }
        if let Ok(Err(error)) = heard {
            tracing::warn!(%error, "lost the fan-out notifications; listening again");
            *listener = None;
        }
    }
}

/// A queued fan-out's row: id, the fan-out (its message and recipients), origin, when it
/// was queued.
type QueuedRow = (i64, Json<serde_json::Value>, Option<String>, i64);

/// A fan-out this instance holds: its row stays locked until `done` deletes it, or the
/// transaction ends with the instance (then another takes it).
struct PostgresLease {
    id: i64,
    tx: Transaction<'static, Postgres>,
}

#[async_trait]
impl FanOutLease for PostgresLease {
    async fn done(self: Box<Self>) -> Result<(), StoreError> {
        let PostgresLease { id, mut tx } = *self;
        sqlx::query("DELETE FROM fan_outs WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Queues `fan_out` in batches and tells every instance, when `conn`'s transaction
/// commits.
pub(super) async fn queue(conn: &mut PgConnection, fan_out: &FanOut) -> Result<(), StoreError> {
    let (origins, batches): (Vec<String>, Vec<Recipients>) = fan_out
        .batches()
        .map(|batch| (batch.origin, batch.fan_out.into_parts().1))
        .unzip();
    if batches.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO fan_outs (message, recipients, origin, queued_at) \
         SELECT $1, batch.recipients, origins.origin, $4 \
         FROM jsonb_array_elements($2) WITH ORDINALITY AS batch (recipients, n) \
         JOIN unnest($3::text[]) WITH ORDINALITY AS origins (origin, n) USING (n) \
         ORDER BY n",
    )
    .bind(Json(fan_out.message()))
    .bind(Json(&batches))
    .bind(&origins)
    .bind(signed(now_millis())?)
    .execute(&mut *conn)
    .await?;
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(FAN_OUTS_CHANNEL)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
