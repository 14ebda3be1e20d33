//! Members in PostgreSQL: members with a unique `name_key`, their devices referencing
//! them, device codes, banned names and removals. A member's last device leaving deletes
//! the member in the same transaction, with the member row locked so two devices leaving
//! at once cannot both miss it.

use std::{net::IpAddr, str::FromStr};

use async_trait::async_trait;
use sqlx::PgConnection;

use super::{signed, taken, unsigned, PostgresStore, DEVICE_COLUMNS};
use crate::{
    model::{
        member::{Device, DeviceCode, Removal, Removed, REMOVALS_KEPT},
        subscription::Subscription,
    },
    store::{code_key, endpoint_key, name_key, MemberStore, StoreError},
};

#[async_trait]
impl MemberStore for PostgresStore {
    async fn device(&self, endpoint: &str) -> Result<Option<Device>, StoreError> {
        let row: Option<DeviceRow> =
            sqlx::query_as(&format!("SELECT {DEVICE_COLUMNS} WHERE d.endpoint = $1"))
                .bind(endpoint)
                .fetch_optional(&self.pool)
                .await?;
        row.map(Device::try_from).transpose()
    }

    async fn devices(&self) -> Result<Vec<Device>, StoreError> {
        Self::all_devices(&mut *self.pool.acquire().await?).await
    }

    async fn devices_of(&self, name: &str) -> Result<Vec<Device>, StoreError> {
        let rows: Vec<DeviceRow> =
            sqlx::query_as(&format!("SELECT {DEVICE_COLUMNS} WHERE m.name_key = $1"))
                .bind(name_key(name))
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter().map(Device::try_from).collect()
    }

    async fn endpoints(&self, unmuted_at: Option<u64>) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT endpoint FROM devices \
             WHERE $1::bigint IS NULL OR muted_until IS NULL OR muted_until <= $1",
        )
        .bind(unmuted_at.map(signed).transpose()?)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn subscriptions(&self, endpoints: &[String]) -> Result<Vec<Subscription>, StoreError> {
        subscriptions_at(&mut *self.pool.acquire().await?, endpoints).await
    }

    async fn devices_from(&self, address: IpAddr) -> Result<usize, StoreError> {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM devices WHERE joined_from = $1")
            .bind(address.to_string())
            .fetch_one(&self.pool)
            .await?;
        Ok(unsigned(count)? as usize)
    }

    async fn member_names(&self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT name FROM members")
            .fetch_all(&self.pool)
            .await?)
    }

    async fn member_count(&self) -> Result<usize, StoreError> {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM members")
            .fetch_one(&self.pool)
            .await?;
        Ok(unsigned(count)? as usize)
    }

    async fn has_members(&self) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM devices)")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn put_device(&self, device: &Device) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        insert_device(&mut tx, device).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn replace_subscription(
        &self,
        old_endpoint: &str,
        new: &Subscription,
    ) -> Result<bool, StoreError> {
        let moved = sqlx::query(
            "UPDATE devices SET endpoint = $1, p256dh = $2, auth = $3 WHERE endpoint = $4",
        )
        .bind(&new.endpoint)
        .bind(&new.p256dh)
        .bind(&new.auth)
        .bind(old_endpoint)
        .execute(&self.pool)
        .await
        .map_err(|error| taken(error, StoreError::EndpointTaken))?;
        Ok(moved.rows_affected() > 0)
    }

    async fn set_muted_until(&self, endpoint: &str, until: u64) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE devices SET muted_until = $1 WHERE endpoint = $2")
            .bind(signed(until)?)
            .bind(endpoint)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn mark_seen(&self, endpoint: &str, now: u64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE devices SET last_seen = $1, stale_warned = NULL WHERE endpoint = $2",
        )
        .bind(signed(now)?)
        .bind(endpoint)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn mark_warned(
        &self,
        endpoint: &str,
        seen_before: u64,
        now: u64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE devices SET stale_warned = $1 \
             WHERE endpoint = $2 AND stale_warned IS NULL AND last_seen < $3",
        )
        .bind(signed(now)?)
        .bind(endpoint)
        .bind(signed(seen_before)?)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn remove_devices(
        &self,
        subscriptions: &[Subscription],
        removal: Option<&Removal>,
    ) -> Result<Vec<Removed>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut removed = Vec::new();
        for subscription in subscriptions {
            // Locks the member's row too: two of its devices leaving at once must not each
            // see the other still there and leave the name held by nobody.
            let row: Option<DeviceRow> = sqlx::query_as(&format!(
                "SELECT {DEVICE_COLUMNS} WHERE d.endpoint = $1 FOR UPDATE"
            ))
            .bind(&subscription.endpoint)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(device) = row.map(Device::try_from).transpose()? else {
                continue;
            };
            if !device.subscription.auth_matches(&subscription.auth) {
                continue;
            }
            sqlx::query("DELETE FROM devices WHERE endpoint = $1")
                .bind(&subscription.endpoint)
                .execute(&mut *tx)
                .await?;
            if let Some(removal) = removal {
                sqlx::query(
                    "INSERT INTO removals (endpoint_hash, name, banned, at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (endpoint_hash) DO UPDATE SET name = EXCLUDED.name, \
                     banned = EXCLUDED.banned, at = EXCLUDED.at",
                )
                .bind(&endpoint_key(&subscription.endpoint)[..])
                .bind(&removal.name)
                .bind(removal.banned)
                .bind(signed(removal.at)?)
                .execute(&mut *tx)
                .await?;
            }
            let left = sqlx::query(
                "DELETE FROM members m WHERE member_id = $1 \
                 AND NOT EXISTS (SELECT 1 FROM devices d WHERE d.member_id = m.member_id)",
            )
            .bind(&device.member_id)
            .execute(&mut *tx)
            .await?;
            let member_left = left.rows_affected() > 0;
            if member_left {
                sqlx::query("DELETE FROM device_codes WHERE member_id = $1")
                    .bind(&device.member_id)
                    .execute(&mut *tx)
                    .await?;
            }
            removed.push(Removed {
                device,
                member_left,
            });
        }
        if let Some(removal) = removal {
            let forgotten = removal.at.saturating_sub(REMOVALS_KEPT.as_millis() as u64);
            sqlx::query("DELETE FROM removals WHERE at < $1")
                .bind(signed(forgotten)?)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(removed)
    }

    async fn removal(&self, endpoint: &str, now: u64) -> Result<Option<Removal>, StoreError> {
        let row: Option<(String, bool, i64)> =
            sqlx::query_as("SELECT name, banned, at FROM removals WHERE endpoint_hash = $1")
                .bind(&endpoint_key(endpoint)[..])
                .fetch_optional(&self.pool)
                .await?;
        let Some((name, banned, at)) = row else {
            return Ok(None);
        };
        let removal = Removal {
            name,
            banned,
            at: unsigned(at)?,
        };
        Ok(Some(removal).filter(|removal| removal.kept_at(now)))
    }

    async fn put_device_code(
        &self,
        code: &str,
        grant: &DeviceCode,
        now: u64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM device_codes WHERE expires <= $1")
            .bind(signed(now)?)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO device_codes (code_hash, member_id, name, expires) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (code_hash) DO UPDATE SET member_id = EXCLUDED.member_id, \
             name = EXCLUDED.name, expires = EXCLUDED.expires",
        )
        .bind(&code_key(code)[..])
        .bind(&grant.member_id)
        .bind(&grant.name)
        .bind(signed(grant.expires)?)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn take_device_code(
        &self,
        code: &str,
        now: u64,
    ) -> Result<Option<DeviceCode>, StoreError> {
        let row: Option<(String, String, i64)> = sqlx::query_as(
            "DELETE FROM device_codes WHERE code_hash = $1 RETURNING member_id, name, expires",
        )
        .bind(&code_key(code)[..])
        .fetch_optional(&self.pool)
        .await?;
        let Some((member_id, name, expires)) = row else {
            return Ok(None);
        };
        let grant = DeviceCode {
            member_id,
            name,
            expires: unsigned(expires)?,
        };
        Ok(grant.unexpired(now))
    }

    async fn ban(&self, name: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO banned_names (name_key, name) VALUES ($1, $2) \
             ON CONFLICT (name_key) DO UPDATE SET name = EXCLUDED.name",
        )
        .bind(name_key(name))
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn unban(&self, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM banned_names WHERE name_key = $1")
            .bind(name_key(name))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn is_banned(&self, name: &str) -> Result<bool, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM banned_names WHERE name_key = $1)")
                .bind(name_key(name))
                .fetch_one(&self.pool)
                .await?,
        )
    }
}

/// The subscriptions of the devices at `endpoints` that are still there, in one query.
pub(super) async fn subscriptions_at(
    conn: &mut PgConnection,
    endpoints: &[String],
) -> Result<Vec<Subscription>, StoreError> {
    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT endpoint, p256dh, auth FROM devices WHERE endpoint = ANY($1)")
            .bind(endpoints)
            .fetch_all(conn)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(endpoint, p256dh, auth)| Subscription {
            endpoint,
            p256dh,
            auth,
        })
        .collect())
}

/// Stores `device` and, for a new member, the member: the one piece of SQL behind
/// [`Store::put_device`] and [`Store::restore`].
pub(super) async fn insert_device(
    conn: &mut PgConnection,
    device: &Device,
) -> Result<(), StoreError> {
    // DO UPDATE (changing nothing) rather than DO NOTHING: it waits for, and locks, a
    // member row that a leaving device holds, instead of racing its deletion.
    sqlx::query(
        "INSERT INTO members (member_id, name, name_key) VALUES ($1, $2, $3) \
         ON CONFLICT (member_id) DO UPDATE SET name = members.name",
    )
    .bind(&device.member_id)
    .bind(&device.name)
    .bind(name_key(&device.name))
    .execute(&mut *conn)
    .await
    .map_err(|error| taken(error, StoreError::NameTaken(device.name.clone())))?;
    let subscription = &device.subscription;
    let stored = sqlx::query(
        "INSERT INTO devices (endpoint, member_id, p256dh, auth, joined, joined_from, muted_until, \
         last_seen, stale_warned) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (endpoint) DO UPDATE SET p256dh = EXCLUDED.p256dh, auth = EXCLUDED.auth, \
         joined = EXCLUDED.joined, joined_from = EXCLUDED.joined_from, \
         muted_until = EXCLUDED.muted_until, last_seen = EXCLUDED.last_seen, \
         stale_warned = EXCLUDED.stale_warned \
         WHERE devices.member_id = EXCLUDED.member_id",
    )
    .bind(&subscription.endpoint)
    .bind(&device.member_id)
    .bind(&subscription.p256dh)
    .bind(&subscription.auth)
    .bind(signed(device.joined)?)
    .bind(device.joined_from.map(|address| address.to_string()))
    .bind(device.muted_until.map(signed).transpose()?)
    .bind(signed(device.last_seen)?)
    .bind(device.stale_warned.map(signed).transpose()?)
    .execute(&mut *conn)
    .await?;
    if stored.rows_affected() == 0 {
        return Err(StoreError::EndpointTaken);
    }
    Ok(())
}

/// A device as a row of [`DEVICE_COLUMNS`].
#[derive(sqlx::FromRow)]
pub(super) struct DeviceRow {
    endpoint: String,
    p256dh: String,
    auth: String,
    joined: i64,
    joined_from: Option<String>,
    muted_until: Option<i64>,
    last_seen: i64,
    stale_warned: Option<i64>,
    member_id: String,
    name: String,
}

impl TryFrom<DeviceRow> for Device {
    type Error = StoreError;

    fn try_from(row: DeviceRow) -> Result<Self, StoreError> {
        Ok(Device {
            name: row.name,
            member_id: row.member_id,
            subscription: Subscription {
                endpoint: row.endpoint,
                p256dh: row.p256dh,
                auth: row.auth,
            },
            joined: unsigned(row.joined)?,
            joined_from: row
                .joined_from
                .map(|address| IpAddr::from_str(&address))
                .transpose()
                .map_err(|_| StoreError::BadValue("a stored address is not an IP address"))?,
            muted_until: row.muted_until.map(unsigned).transpose()?,
            last_seen: unsigned(row.last_seen)?,
            stale_warned: row.stale_warned.map(unsigned).transpose()?,
        })
    }
}

/// Bans `name` unless a name like it is banned already: how a backup and an older format
/// bring their bans in.
pub(super) async fn keep_ban(conn: &mut PgConnection, name: &str) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO banned_names (name_key, name) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(name_key(name))
        .bind(name)
        .execute(conn)
        .await?;
    Ok(())
}
