//! The store in PostgreSQL, shared by every instance that names the same database: the
//! schema is in `server/migrations` (run at start; sqlx serialises instances that start
//! together). Queued fan-outs are rows an instance takes with `FOR UPDATE SKIP LOCKED` and
//! holds, in an open transaction, until it has delivered them and deletes them: other
//! instances skip a held row, and when an instance dies its transaction ends and the row is
//! free for the next taker. Queuing one sends `NOTIFY pushchat_fan_outs` so idle
//! instances look at once. The VAPID private key is kept here too, so every instance signs
//! with the same key, and so are the allowances (rate limits), so that instances count
//! together. The store's format is a row of `settings`, brought up to date under an
//! advisory lock by the first instance that starts.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    str::FromStr,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use async_trait::async_trait;
use sqlx::{
    error::ErrorKind,
    postgres::{PgConnectOptions, PgListener, PgPoolOptions},
    types::Json,
    Connection, PgConnection, PgPool, Postgres, Transaction,
};

use app::wire::{ChatLine, PushMessage};

use super::{
    allowance::{Quota, SWEEP_EVERY},
    code_key, endpoint_key,
    format::{self, FORMAT, UNRECORDED, WRITTEN_BY},
    name_key, Broadcast, Device, DeviceCode, FanOutLease, NewLine, Removal, Removed, Store,
    StoreContents, StoreError, TakenFanOut, FAN_OUT_POLL,
};
use crate::model::{clock::now_millis, subscription::Subscription};

/// The channel queued fan-outs are announced on.
const FAN_OUTS_CHANNEL: &str = "pushchat_fan_outs";
const VAPID_SUBJECT: &str = "vapid_subject";
const VAPID_PRIVATE_KEY: &str = "vapid_private_key";
const STORE_FORMAT: &str = "store_format";
const WRITTEN_BY_KEY: &str = "written_by";
/// The advisory lock an instance holds while it brings the format up to date ("pushchat").
const FORMAT_LOCK: i64 = 0x7075_7368_6368_6174;
/// Connections beyond those held by fan-outs being delivered: API requests, the listener.
const CONNECTIONS_FOR_REQUESTS: u32 = 8;

const DEVICE_COLUMNS: &str = "d.endpoint, d.p256dh, d.auth, d.joined, d.joined_from, \
     d.muted_until, m.member_id, m.name FROM devices d JOIN members m USING (member_id)";

/// Members, history and queued fan-outs in a PostgreSQL database.
pub struct PostgresStore {
    pool: PgPool,
    /// Hears of fan-outs queued by any instance; made again after a failure.
    listener: tokio::sync::Mutex<Option<PgListener>>,
    /// Queued fan-outs this version cannot read, by id: skipped, not retried forever.
    unreadable: std::sync::Mutex<HashSet<i64>>,
    /// Allowances taken by this instance, for sweeping the table now and then.
    allowances_taken: AtomicU64,
}

impl PostgresStore {
    /// Connects to `url` and brings the schema up to date. `max_fan_outs` is how many
    /// fan-outs this process delivers at once: each holds a connection while it does.
    pub async fn connect(url: &str, max_fan_outs: usize) -> Result<Self, StoreError> {
        // Named, so `pg_stat_activity` tells the instances apart.
        let options = PgConnectOptions::from_str(url)?
            .application_name(&format!("pushchat/{}", std::process::id()));
        // One connection first, on its own: a database that is down or a wrong password
        // is then reported as such, where the pool would only say it timed out.
        PgConnection::connect_with(&options).await?.close().await?;
        let pool = PgPoolOptions::new()
            .max_connections(max_fan_outs as u32 + CONNECTIONS_FOR_REQUESTS)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        // A newer release's schema is refused before this one's migrations run.
        refuse_a_newer_format(&pool).await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        bring_format_up_to_date(&pool).await?;
        let store = PostgresStore {
            pool,
            listener: tokio::sync::Mutex::new(None),
            unreadable: std::sync::Mutex::default(),
            allowances_taken: AtomicU64::new(0),
        };
        // Listening from the start, so no fan-out queued from now on goes unheard.
        *store.listener.lock().await = store.listen().await;
        Ok(store)
    }

    /// The VAPID private key (PEM) every instance signs with, once one is kept.
    pub async fn vapid_private_key(&self) -> Result<Option<String>, StoreError> {
        self.setting(VAPID_PRIVATE_KEY).await
    }

    /// Keeps `pem` as the VAPID private key unless one is kept already, and returns the
    /// kept one: instances starting together agree on the first.
    pub async fn offer_vapid_private_key(&self, pem: &str) -> Result<String, StoreError> {
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

    async fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn all_devices(conn: &mut PgConnection) -> Result<Vec<Device>, StoreError> {
        let rows: Vec<DeviceRow> = sqlx::query_as(&format!("SELECT {DEVICE_COLUMNS}"))
            .fetch_all(conn)
            .await?;
        rows.into_iter().map(Device::try_from).collect()
    }

    async fn lines(conn: &mut PgConnection, limit: usize) -> Result<Vec<ChatLine>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<(i64, String, String, i64)> = sqlx::query_as(
            "SELECT * FROM (SELECT id, name, msg, time FROM chat_lines ORDER BY id DESC LIMIT $1) \
             AS newest ORDER BY id",
        )
        .bind(limit)
        .fetch_all(conn)
        .await?;
        rows.into_iter()
            .map(|(id, name, msg, time)| {
                Ok(ChatLine {
                    id: unsigned(id)?,
                    name,
                    msg,
                    time: unsigned(time)?,
                })
            })
            .collect()
    }

    /// Listens for queued fan-outs, if it can; a failure is logged and the caller polls.
    async fn listen(&self) -> Option<PgListener> {
        let listening = async {
            let mut listener = PgListener::connect_with(&self.pool).await?;
            listener.listen(FAN_OUTS_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match listening.await {
            Ok(listener) => Some(listener),
            Err(error) => {
                tracing::warn!(%error, "cannot listen for queued fan-outs; polling");
                None
            }
        }
    }
}

#[async_trait]
impl Store for PostgresStore {
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
            let forgotten = removal
                .at
                .saturating_sub(super::REMOVALS_KEPT.as_millis() as u64);
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

    async fn append_line(
        &self,
        line: NewLine<'_>,
        keep: usize,
        recipients: &[Subscription],
    ) -> Result<ChatLine, StoreError> {
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
        queue(&mut tx, &Broadcast::chat_line(&line, recipients)).await?;
        sqlx::query(
            "DELETE FROM chat_lines WHERE id <= \
             (SELECT id FROM chat_lines ORDER BY id DESC OFFSET $1 LIMIT 1)",
        )
        .bind(i64::try_from(keep).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(line)
    }

    async fn queue_fan_out(&self, broadcast: &Broadcast) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        queue(&mut tx, broadcast).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn take_fan_out(&self) -> Result<Option<TakenFanOut>, StoreError> {
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
        let row: Option<(i64, Json<serde_json::Value>, Json<serde_json::Value>, i64)> =
            sqlx::query_as(
                "SELECT id, message, recipients, queued_at FROM fan_outs WHERE id <> ALL($1) \
                 ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
            )
            .bind(&unreadable)
            .fetch_optional(&mut *tx)
            .await?;
        let Some((id, Json(message), Json(recipients), queued_at)) = row else {
            return Ok(None);
        };
        let decoded = serde_json::from_value(message)
            .and_then(|message| Ok((message, serde_json::from_value(recipients)?)));
        let (message, recipients) = match decoded {
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
        let broadcast = Broadcast {
            message,
            recipients,
        };
        let lease = PostgresLease { id, tx };
        Ok(Some(TakenFanOut::new(
            broadcast,
            unsigned(queued_at)?,
            lease,
        )))
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

    fn is_shared(&self) -> bool {
        true
    }

    async fn recent_lines(&self, limit: usize) -> Result<Vec<ChatLine>, StoreError> {
        Self::lines(&mut *self.pool.acquire().await?, limit).await
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

    async fn vapid_subject(&self) -> Result<Option<String>, StoreError> {
        self.setting(VAPID_SUBJECT).await
    }

    async fn set_vapid_subject(&self, subject: &str) -> Result<(), StoreError> {
        put_setting(&mut *self.pool.acquire().await?, VAPID_SUBJECT, subject).await
    }

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
        let history = Self::lines(&mut tx, usize::MAX).await?;
        let fan_outs: Vec<(Json<PushMessage>, Json<Vec<Subscription>>)> =
            sqlx::query_as("SELECT message, recipients FROM fan_outs ORDER BY id")
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
            fan_outs: fan_outs
                .into_iter()
                .map(|(Json(message), Json(recipients))| Broadcast {
                    message,
                    recipients,
                })
                .collect(),
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
            sqlx::query(
                "INSERT INTO banned_names (name_key, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(name_key(name))
            .bind(name)
            .execute(&mut *tx)
            .await?;
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

    /// A committed change is durable already.
    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

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

/// Stores `device` and, for a new member, the member: the one piece of SQL behind
/// [`Store::put_device`] and [`Store::restore`].
async fn insert_device(conn: &mut PgConnection, device: &Device) -> Result<(), StoreError> {
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
        "INSERT INTO devices (endpoint, member_id, p256dh, auth, joined, joined_from, muted_until) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (endpoint) DO UPDATE SET p256dh = EXCLUDED.p256dh, auth = EXCLUDED.auth, \
         joined = EXCLUDED.joined, joined_from = EXCLUDED.joined_from, \
         muted_until = EXCLUDED.muted_until \
         WHERE devices.member_id = EXCLUDED.member_id",
    )
    .bind(&subscription.endpoint)
    .bind(&device.member_id)
    .bind(&subscription.p256dh)
    .bind(&subscription.auth)
    .bind(signed(device.joined)?)
    .bind(device.joined_from.map(|address| address.to_string()))
    .bind(device.muted_until.map(signed).transpose()?)
    .execute(&mut *conn)
    .await?;
    if stored.rows_affected() == 0 {
        return Err(StoreError::EndpointTaken);
    }
    Ok(())
}

/// Queues `broadcast` in batches and tells every instance, when `conn`'s transaction
/// commits.
async fn queue(conn: &mut PgConnection, broadcast: &Broadcast) -> Result<(), StoreError> {
    let batches: Vec<Vec<Subscription>> =
        broadcast.batches().map(|batch| batch.recipients).collect();
    if batches.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO fan_outs (message, recipients, queued_at) \
         SELECT $1, batch, $3 FROM jsonb_array_elements($2) AS batch",
    )
    .bind(Json(&broadcast.message))
    .bind(Json(&batches))
    .bind(signed(now_millis())?)
    .execute(&mut *conn)
    .await?;
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(FAN_OUTS_CHANNEL)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// `error` as `refusal` when it is a unique violation, the ways two members clash.
fn taken(error: sqlx::Error, refusal: StoreError) -> StoreError {
    match &error {
        sqlx::Error::Database(database) if database.kind() == ErrorKind::UniqueViolation => refusal,
        _ => StoreError::Postgres(error),
    }
}

/// A device as a row of [`DEVICE_COLUMNS`].
#[derive(sqlx::FromRow)]
struct DeviceRow {
    endpoint: String,
    p256dh: String,
    auth: String,
    joined: i64,
    joined_from: Option<String>,
    muted_until: Option<i64>,
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
        })
    }
}

/// The recorded format, and who wrote it, unless this database holds no pushchat yet.
async fn recorded_format(
    conn: &mut PgConnection,
) -> Result<Option<(u32, Option<String>)>, StoreError> {
    let has_settings: bool = sqlx::query_scalar("SELECT to_regclass('settings') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await?;
    if !has_settings {
        return Ok(None);
    }
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT key, value FROM settings WHERE key = ANY($1)")
            .bind(&[STORE_FORMAT, WRITTEN_BY_KEY][..])
            .fetch_all(&mut *conn)
            .await?;
    let mut values: HashMap<String, String> = rows.into_iter().collect();
    let Some(recorded) = values.remove(STORE_FORMAT) else {
        return Ok(None);
    };
    let found = recorded
        .parse()
        .map_err(|_| StoreError::BadValue("the recorded store format is not a number"))?;
    Ok(Some((found, values.remove(WRITTEN_BY_KEY))))
}

async fn refuse_a_newer_format(pool: &PgPool) -> Result<(), StoreError> {
    if let Some((found, written_by)) = recorded_format(&mut *pool.acquire().await?).await? {
        format::check(found, written_by)?;
    }
    Ok(())
}

/// Records this build's format in a new chat, or migrates an older one, in one
/// transaction that instances starting together take in turn.
async fn bring_format_up_to_date(pool: &PgPool) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(FORMAT_LOCK)
        .execute(&mut *tx)
        .await?;
    let found = match recorded_format(&mut tx).await? {
        Some((found, written_by)) => {
            format::check(found, written_by)?;
            found
        }
        None if holds_a_chat(&mut tx).await? => UNRECORDED,
        None => FORMAT,
    };
    if found < FORMAT {
        migrate_to_format_2(&mut tx).await?;
        tracing::warn!(
            from = found,
            to = FORMAT,
            "brought the store's format up to date"
        );
    }
    put_setting(&mut tx, STORE_FORMAT, &FORMAT.to_string()).await?;
    put_setting(&mut tx, WRITTEN_BY_KEY, WRITTEN_BY).await?;
    tx.commit().await?;
    Ok(())
}

/// Sets the single value `key` of the settings table.
async fn put_setting(conn: &mut PgConnection, key: &str, value: &str) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO settings (key, value) VALUES ($1, $2) \
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
    )
    .bind(key)
    .bind(value)
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether the database holds members, lines, bans or queued fan-outs.
async fn holds_a_chat(conn: &mut PgConnection) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM members) OR EXISTS (SELECT 1 FROM chat_lines) \
         OR EXISTS (SELECT 1 FROM banned_names) OR EXISTS (SELECT 1 FROM fan_outs)",
    )
    .fetch_one(conn)
    .await?)
}

/// Format 1 to 2 (see `format`): names and banned names keyed by their skeleton, members
/// whose names now collide renamed, device codes void, queued "left" pushes naming their
/// members in a list.
async fn migrate_to_format_2(tx: &mut PgConnection) -> Result<(), StoreError> {
    let members: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT m.member_id, m.name, COALESCE(min(d.joined), 0) FROM members m \
         LEFT JOIN devices d USING (member_id) GROUP BY m.member_id, m.name",
    )
    .fetch_all(&mut *tx)
    .await?;
    let named: Vec<format::NamedMember<'_>> = members
        .iter()
        .map(|(member_id, name, joined)| format::NamedMember {
            member_id,
            name,
            joined: (*joined).max(0) as u64,
        })
        .collect();
    let renamed = format::distinct_names(&named);
    // Out of the way first, so that no new key meets an old one on the unique index.
    sqlx::query("UPDATE members SET name_key = 'format 1: ' || member_id")
        .execute(&mut *tx)
        .await?;
    for (member_id, name, _) in &members {
        let name = renamed.get(member_id).unwrap_or(name);
        sqlx::query("UPDATE members SET name = $2, name_key = $3 WHERE member_id = $1")
            .bind(member_id)
            .bind(name)
            .bind(name_key(name))
            .execute(&mut *tx)
            .await?;
    }
    let banned: Vec<String> = sqlx::query_scalar("DELETE FROM banned_names RETURNING name")
        .fetch_all(&mut *tx)
        .await?;
    for name in &banned {
        sqlx::query(
            "INSERT INTO banned_names (name_key, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(name_key(name))
        .bind(name)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query("DELETE FROM device_codes")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE fan_outs SET message = (message - 'name') || \
         jsonb_build_object('names', jsonb_build_array(message -> 'name')) \
         WHERE message ->> 'action' = 'unsubscribe' AND message ? 'name'",
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// PostgreSQL has no unsigned integers: ids and times are kept as bigint.
fn signed(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::BadValue("a number above 2^63"))
}

fn unsigned(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::BadValue("a negative stored number"))
}

#[cfg(test)]
mod tests {
    use end2end::TestDatabase;

    use super::*;

    /// A database as pushchat 0.1 (store format 1, no format recorded) left it: its one
    /// migration, "bob" and a later "b\u{43e}b" (Cyrillic о) under their NFKC + lowercase
    /// keys, two banned names that now look alike, a device code, and a queued "left" push
    /// naming one member.
    async fn format_1_database() -> TestDatabase {
        let database = TestDatabase::create().await;
        let mut conn = PgConnection::connect(&database.url).await.unwrap();
        let first = tempfile::tempdir().unwrap();
        let migration = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/0001_chat.sql");
        std::fs::copy(migration, first.path().join("0001_chat.sql")).unwrap();
        let migrator = sqlx::migrate::Migrator::new(first.path()).await.unwrap();
        migrator.run(&mut conn).await.unwrap();
        sqlx::raw_sql(
            "INSERT INTO members VALUES ('first', 'bob', 'bob'), \
                 ('second', 'b\u{43e}b', 'b\u{43e}b'); \
             INSERT INTO devices VALUES \
                 ('https://p.example/1', 'first', 'key', 'BTBZMqHH6r4Tts7J_aSIgg', 10, NULL, NULL), \
                 ('https://p.example/2', 'second', 'key', 'BTBZMqHH6r4Tts7J_aSIgg', 20, NULL, NULL); \
             INSERT INTO banned_names VALUES ('eve', 'Eve'), ('\u{435}ve', '\u{415}ve'); \
             INSERT INTO device_codes VALUES ('\\x00', 'first', 'bob', 9000000000000); \
             INSERT INTO fan_outs (message, recipients, queued_at) \
                 VALUES ('{\"action\": \"unsubscribe\", \"name\": \"Cy\"}', '[]', 5);",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        database
    }

    #[tokio::test]
    async fn test_a_format_1_database_is_brought_up_to_date_when_connected() {
        let database = format_1_database().await;
        let store = PostgresStore::connect(&database.url, 2).await.unwrap();
        let first = store.devices_of("BOB").await.unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].member_id, "first");
        let second = store.device("https://p.example/2").await.unwrap().unwrap();
        assert_eq!(second.name, "b\u{43e}b (2)");
        assert!(store.is_banned("EVE").await.unwrap());
        assert_eq!(store.contents().await.unwrap().banned.len(), 1);
        let codes: i64 = sqlx::query_scalar("SELECT count(*) FROM device_codes")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(codes, 0);
        let queued = store.take_fan_out().await.unwrap().unwrap();
        assert_eq!(
            queued.broadcast.message,
            PushMessage::Unsubscribe {
                names: vec!["Cy".into()]
            }
        );
        drop(queued);
        assert_eq!(
            store.setting(STORE_FORMAT).await.unwrap(),
            Some(FORMAT.to_string())
        );
        // A second instance finds it up to date.
        let again = PostgresStore::connect(&database.url, 2).await.unwrap();
        assert_eq!(again.member_count().await.unwrap(), 2);
    }

    #[tokio::test]
    async fn test_a_database_of_a_newer_format_is_refused_and_left_as_it_is() {
        let database = TestDatabase::create().await;
        let store = PostgresStore::connect(&database.url, 2).await.unwrap();
        sqlx::query("UPDATE settings SET value = $1 WHERE key = $2")
            .bind((FORMAT + 1).to_string())
            .bind(STORE_FORMAT)
            .execute(&store.pool)
            .await
            .unwrap();
        sqlx::query("UPDATE settings SET value = 'pushchat 9.9.9' WHERE key = $1")
            .bind(WRITTEN_BY_KEY)
            .execute(&store.pool)
            .await
            .unwrap();
        let refused = PostgresStore::connect(&database.url, 2).await;
        let Err(StoreError::NewerFormat(newer)) = refused else {
            panic!("a newer format was opened");
        };
        assert!(newer.to_string().contains("pushchat 9.9.9"), "{newer}");
        assert_eq!(
            store.setting(STORE_FORMAT).await.unwrap(),
            Some((FORMAT + 1).to_string())
        );
    }
}
