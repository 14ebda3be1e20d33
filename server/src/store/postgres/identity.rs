//! The server's VAPID identity in PostgreSQL: the contact and the private key are rows of
//! `settings`, so every instance signs with the same key.

use async_trait::async_trait;

use super::{put_setting, PostgresStore, VAPID_SUBJECT};
use crate::store::{ServerIdentity, StoreError};

const VAPID_PRIVATE_KEY: &str = "vapid_private_key";

#[async_trait]
impl ServerIdentity for PostgresStore {
    async fn vapid_subject(&self) -> Result<Option<String>, StoreError> {
        self.setting(VAPID_SUBJECT).await
    }

    async fn set_vapid_subject(&self, subject: &str) -> Result<(), StoreError> {
        put_setting(&mut *self.pool.acquire().await?, VAPID_SUBJECT, subject).await
    }

    async fn vapid_private_key(&self) -> Result<Option<String>, StoreError> {
        self.setting(VAPID_PRIVATE_KEY).await
    }

    async fn offer_vapid_private_key(&self, pem: &str) -> Result<String, StoreError> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(VAPID_PRIVATE_KEY)
        .bind(pem)
        .execute(&self.pool)
        .await?;
        let kept = self.setting(VAPID_PRIVATE_KEY).await?;
        kept.ok_or(StoreError::BadValue(
            "the VAPID private key vanished as it was kept",
        ))
    }

    async fn replace_vapid_private_key(&self, pem: &str) -> Result<(), StoreError> {
        put_setting(&mut *self.pool.acquire().await?, VAPID_PRIVATE_KEY, pem).await
    }

    fn vapid_key_place(&self) -> String {
        "the database's settings table".into()
    }
}
