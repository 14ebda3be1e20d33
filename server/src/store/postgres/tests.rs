//! What only the PostgreSQL store does: its format migration, and its refusal of a newer
//! format.

use end2end::TestDatabase;

use app::wire::PushMessage;

use super::*;
use crate::{
    model::{clock::now_millis, subscription::Subscription},
    store::{format::FORMAT, Backups, FanOutQueue, MemberStore},
};

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
    let upgraded_at = now_millis();
    let store = PostgresStore::connect(&database.url, 2).await.unwrap();
    // Format 6: they count as seen at the upgrade, not in 1970.
    for device in store.devices().await.unwrap() {
        assert!(device.last_seen >= upgraded_at, "{device:?}");
    }
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
    let queued = store.take_fan_out(&[]).await.unwrap().unwrap();
    assert_eq!(
        queued.fan_out.message,
        PushMessage::Left {
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
async fn test_a_batch_queued_with_whole_subscriptions_by_format_4_is_sent_to_them() {
    let database = TestDatabase::create().await;
    let store = PostgresStore::connect(&database.url, 2).await.unwrap();
    // As format 4 queued it: every recipient whole (its device gone since, which does not
    // matter to such a batch).
    sqlx::query(
        "INSERT INTO fan_outs (message, recipients, origin, queued_at) VALUES \
         ('{\"action\": \"notice\", \"text\": \"hi\"}', \
          '[{\"endpoint\": \"https://p.example/9\", \"p256dh\": \"key\", \"auth\": \"auth\"}]', \
          'https://p.example', 5)",
    )
    .execute(&store.pool)
    .await
    .unwrap();
    let queued = store.take_fan_out(&[]).await.unwrap().unwrap();
    assert_eq!(queued.origin, "https://p.example");
    assert_eq!(
        queued.fan_out.message,
        PushMessage::Notice { text: "hi".into() }
    );
    let to = Subscription {
        endpoint: "https://p.example/9".into(),
        p256dh: "key".into(),
        auth: "auth".into(),
    };
    assert_eq!(queued.fan_out.recipients, [to]);
    queued.done().await.unwrap();
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
