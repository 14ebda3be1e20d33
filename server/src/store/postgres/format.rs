//! Bringing a PostgreSQL store's format up to date when an instance connects (see
//! `store::format`): under an advisory lock, by the first instance that starts.

use std::collections::HashMap;

use sqlx::{PgConnection, PgPool};

use super::{members::keep_ban, put_setting, FORMAT_LOCK, STORE_FORMAT, WRITTEN_BY_KEY};
use crate::store::{
    format::{self, FORMAT, SKELETON_NAMES, UNRECORDED, WRITTEN_BY},
    name_key, StoreError,
};

/// The recorded format, and who wrote it, unless this database holds no pushchat yet.
pub(super) async fn recorded_format(
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

pub(super) async fn refuse_a_newer_format(pool: &PgPool) -> Result<(), StoreError> {
    if let Some((found, written_by)) = recorded_format(&mut *pool.acquire().await?).await? {
        format::check(found, written_by)?;
    }
    Ok(())
}

/// Records this build's format in a new chat, or migrates an older one, in one
/// transaction that instances starting together take in turn.
pub(super) async fn bring_format_up_to_date(pool: &PgPool) -> Result<(), StoreError> {
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
    if found < SKELETON_NAMES {
        migrate_to_format_2(&mut tx).await?;
    }
    // Format 3 (`INDEXED_DEVICES`) only adds an index, which migration 0003 makes.
    // Format 4 (`FAN_OUT_ORIGINS`) moves nothing: migration 0004 added a column.
    // Format 5 (`DEVICE_RECIPIENTS`) moves nothing: batches queued before are read as they
    // are, and a batch by reference is a `recipients` value older releases cannot read.
    // Format 6 (`SEEN_DEVICES`) moves nothing: migration 0005's default dated every device
    // seen when it ran.
    if found < FORMAT {
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

/// Whether the database holds members, lines, bans or queued fan-outs.
pub(super) async fn holds_a_chat(conn: &mut PgConnection) -> Result<bool, StoreError> {
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
        keep_ban(&mut *tx, name).await?;
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
