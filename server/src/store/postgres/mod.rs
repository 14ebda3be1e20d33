//! The store in PostgreSQL, shared by every instance that names the same database: the
//! schema is in `server/migrations` (run at start; sqlx serialises instances that start
//! together). Besides members (`members`), the history (`history`) and the queue of
//! fan-outs (`queue`), the database keeps the VAPID key pair (`identity`), so every
//! instance signs with the same key, and the allowances (`allowances`), so that instances
//! count together. The store's format is a row of `settings`, brought up to date under an
//! advisory lock by the first instance that starts (`format`). A committed change is
//! durable: nothing waits for more.

mod allowances;
mod backups;
mod format;
mod history;
mod identity;
mod members;
mod queue;
#[cfg(test)]
mod tests;

use std::{collections::HashSet, str::FromStr, sync::atomic::AtomicU64, time::Duration};

use sqlx::{
    error::ErrorKind,
    postgres::{PgConnectOptions, PgListener, PgPoolOptions},
    Connection, PgConnection, PgPool,
};

use app::wire::ChatLine;

use self::{
    format::{bring_format_up_to_date, refuse_a_newer_format},
    members::DeviceRow,
};
use super::StoreError;
use crate::model::member::Device;

/// The channel queued fan-outs are announced on.
const FAN_OUTS_CHANNEL: &str = "pushchat_fan_outs";
const VAPID_SUBJECT: &str = "vapid_subject";
const STORE_FORMAT: &str = "store_format";
const WRITTEN_BY_KEY: &str = "written_by";
/// The advisory lock an instance holds while it brings the format up to date ("pushchat").
const FORMAT_LOCK: i64 = 0x7075_7368_6368_6174;
/// Connections beyond those held by fan-outs being delivered: API requests, the listener.
const CONNECTIONS_FOR_REQUESTS: u32 = 8;

const DEVICE_COLUMNS: &str = "d.endpoint, d.p256dh, d.auth, d.joined, d.joined_from, \
     d.muted_until, d.last_seen, d.stale_warned, m.member_id, m.name \
     FROM devices d JOIN members m USING (member_id)";

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

    /// The newest `limit` lines, older than line `before` if given, oldest first.
    async fn lines(
        conn: &mut PgConnection,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<ChatLine>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // An id beyond PostgreSQL's bigint is after every line.
        let before = before.and_then(|id| i64::try_from(id).ok());
        let rows: Vec<(i64, String, String, i64)> = sqlx::query_as(
            "SELECT * FROM (SELECT id, name, msg, time FROM chat_lines \
             WHERE $2::bigint IS NULL OR id < $2 ORDER BY id DESC LIMIT $1) \
             AS newest ORDER BY id",
        )
        .bind(limit)
        .bind(before)
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

/// `error` as `refusal` when it is a unique violation, the ways two members clash.
fn taken(error: sqlx::Error, refusal: StoreError) -> StoreError {
    match &error {
        sqlx::Error::Database(database) if database.kind() == ErrorKind::UniqueViolation => refusal,
        _ => error.into(),
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        StoreError::database(error)
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(error: sqlx::migrate::MigrateError) -> Self {
        StoreError::database(error)
    }
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
