//! Allowances in PostgreSQL: the generic cell rate algorithm on the database's clock, one
//! row per quota and key, so that every instance counts together.

use std::{sync::atomic::Ordering, time::Duration};

use async_trait::async_trait;

use super::{millis, PostgresStore};
use crate::store::{
    allowance::{Quota, SWEEP_EVERY},
    Allowances, StoreError,
};

#[async_trait]
impl Allowances for PostgresStore {
    /// The generic cell rate algorithm on the database's clock, one row per quota and key:
    /// the row lock makes instances taking the same allowance at once wait for each other.
    async fn take_allowance(
        &self,
        quota: &Quota,
        key: &str,
    ) -> Result<Result<(), Duration>, StoreError> {
        let key = format!("{}:{key}", quota.name);
        let pace = millis(quota.pace());
        let tolerance = millis(quota.tolerance());
        let mut tx = self.pool.begin().await?;
        let now: i64 =
            sqlx::query_scalar("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint")
                .fetch_one(&mut *tx)
                .await?;
        let taken: Option<i64> = sqlx::query_scalar(
            "INSERT INTO allowances AS a (key, tat) VALUES ($1, $2 + $3) \
             ON CONFLICT (key) DO UPDATE SET tat = GREATEST(a.tat, $2) + $3 \
             WHERE GREATEST(a.tat, $2) - $2 <= $4 RETURNING tat",
        )
        .bind(&key)
        .bind(now)
        .bind(pace)
        .bind(tolerance)
        .fetch_optional(&mut *tx)
        .await?;
        let answer = match taken {
            Some(_) => Ok(()),
            None => {
                let tat: i64 = sqlx::query_scalar("SELECT tat FROM allowances WHERE key = $1")
                    .bind(&key)
                    .fetch_one(&mut *tx)
                    .await?;
                let wait = tat.saturating_sub(tolerance).saturating_sub(now).max(0);
                Err(Duration::from_millis(wait as u64))
            }
        };
        if self.allowances_taken.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            // Keys whose next allowed time has passed have their whole allowance back.
            sqlx::query("DELETE FROM allowances WHERE tat < $1")
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(answer)
    }
}
