//! Upgrades keep the data. Each folder of `tests/fixtures` holds a chat that an earlier
//! release wrote (`make-fixtures.sh` there says how): a sled data dir, a backup of it, and
//! a PostgreSQL dump. This build opens a copy of each and finds every member, browser, chat
//! line, ban and mute the script made, and the VAPID key, with the store at this build's
//! format; `pushchat` started on it serves the old history to the old members and signs
//! with the old key. A store or backup of a newer format is refused with a message naming
//! both formats, and left as it was.
//!
//! On sled by default; on PostgreSQL (the dump) with `PUSHCHAT_TEST_STORE=postgres`.

mod support;

use std::{
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use app::wire::{ChatLine, PushMessage, PushSubscription, SubscriptionKeys};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use end2end::{eventually, join_body, suites_use_postgres, Server, TestDatabase, SUBJECT};
use localpush::{LocalPush, NewSubscriber};
use server::{
    chat::{pruning::Pruned, Chat, ChatRules},
    model::{clock::now_millis, member::Device},
    push::vapid::VapidKeys,
    store::{self, format::FORMAT, Store, StoreError, StoreLocation},
};
use sqlx::{Connection, PgConnection};

use support::PUSHCHAT;

/// One release's fixtures, and what `make-fixtures.sh` got back from it that differs
/// between its two runs (times, the key pair).
struct Fixture {
    /// Under `tests/fixtures`.
    folder: &'static str,
    sled: Written,
    postgres: Written,
}

struct Written {
    vapid_public_key: &'static str,
    /// When bob's mute ends.
    muted_until: u64,
    /// When each of [`LINES`] was said.
    line_times: [u64; 4],
}

/// pushchat 0.1 at ffaaa7a, store format 1 (none recorded): the commit #17 starts from.
const FORMAT_1: Fixture = Fixture {
    folder: "format-1",
    sled: Written {
        vapid_public_key: "BAKenLR1lfqbu6Xv0sGcTPrfi-fhNcAHGlYMs40HuXgcYgYj-_o5eLXDcT_txG8X53C6zWIc4Z0piwiUnhoL3QM",
        muted_until: 1796436151612,
        line_times: [1796432551196, 1796432551335, 1796432551427, 1796432551509],
    },
    postgres: Written {
        vapid_public_key: "BMDMMjVEuPGwVhUvvYSy6lL5TAzoBIdFvu8F9jo6jY0swTdlYLfCK0Le-2xmdpOvlzRaE7f1CRp2Zxgo84uOrYs",
        muted_until: 1796436165127,
        line_times: [1796432564423, 1796432564573, 1796432564723, 1796432564979],
    },
};

/// Every fixture, oldest first.
const FIXTURES: [&Fixture; 1] = [&FORMAT_1];

/// The browsers the script left in the chat, and their member's name after the upgrade:
/// "bоb" (Cyrillic о) was a name of its own in format 1; since format 2 it looks like
/// "bob", who joined first, so it is "bоb (2)". Mallory was removed, with a ban.
const BROWSERS: [(&str, &str); 7] = [
    ("ann-phone", "Ann"),
    ("ann-laptop", "Ann"),
    ("ann-tablet", "Ann"),
    ("bob-phone", "bob"),
    ("zoe-phone", "Zoë 🌸"),
    ("zoe-laptop", "Zoë 🌸"),
    ("bob-cyrillic", "b\u{43e}b (2)"),
];

/// The chat lines, oldest first: who said them (as they were called then) and what.
const LINES: [(&str, &str); 4] = [
    ("Ann", "Hello, everyone!"),
    ("Zoë 🌸", "Grüße aus Köln — 你好 👋"),
    ("bob", "<b>not bold</b> & \"quoted\""),
    ("b\u{43e}b", "Привет, это другой боб"),
];

/// Fan-outs a test takes at once (on PostgreSQL each holds a connection): every queued
/// one of a fixture.
const FAN_OUTS_AT_ONCE: usize = 16;

/// Every browser's P-256 key in the fixtures (RFC 8291's example receiver).
const P256DH: &str =
    "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";

/// A browser's subscription as the script made it: its endpoint on the push service that
/// never answered, and an auth secret of 16 bytes spelling its name.
fn subscription(browser: &str) -> PushSubscription {
    PushSubscription {
        endpoint: format!("http://127.0.0.1:64999/push/{browser}"),
        keys: SubscriptionKeys {
            p256dh: P256DH.into(),
            auth: URL_SAFE_NO_PAD.encode(format!("{browser:<16}")),
        },
    }
}

fn fixture_path(folder: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(folder)
}

/// A copy of one fixture's chat, for this run's store: the sled data dir, or the dump
/// loaded into a database of its own (with an empty data dir beside it).
struct OldChat {
    data_dir: tempfile::TempDir,
    database: Option<TestDatabase>,
}

impl OldChat {
    async fn copy_of(fixture: &Fixture) -> OldChat {
        let data_dir = tempfile::tempdir().unwrap();
        let source = fixture_path(fixture.folder);
        if !suites_use_postgres() {
            let copied = std::process::Command::new("cp")
                .arg("-r")
                .arg(source.join("sled/."))
                .arg(data_dir.path())
                .status()
                .unwrap();
            assert!(copied.success(), "cannot copy {}", source.display());
            return OldChat {
                data_dir,
                database: None,
            };
        }
        let database = TestDatabase::create().await;
        let dump = std::fs::read_to_string(source.join("postgres.sql")).unwrap();
        let mut conn = PgConnection::connect(&database.url).await.unwrap();
        sqlx::raw_sql(&dump).execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();
        OldChat {
            data_dir,
            database: Some(database),
        }
    }

    fn written<'a>(&self, fixture: &'a Fixture) -> &'a Written {
        match self.database {
            Some(_) => &fixture.postgres,
            None => &fixture.sled,
        }
    }

    fn location(&self) -> StoreLocation {
        match &self.database {
            Some(database) => StoreLocation::Postgres {
                url: database.url.clone(),
            },
            None => StoreLocation::Sled {
                cache_bytes: 1 << 20,
            },
        }
    }

    async fn open(&self) -> Result<Arc<dyn Store>, StoreError> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            // sled's flusher lets go of the lock a moment after the last handle is dropped.
            let location = self.location();
            match store::open(&location, self.data_dir.path(), FAN_OUTS_AT_ONCE).await {
                Err(StoreError::InUse) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                opened => return opened,
            }
        }
    }

    /// `pushchat serve` on this chat.
    async fn serve(&self) -> Server {
        let mut args = vec![];
        if let Some(database) = &self.database {
            args.extend(["--database-url", database.url.as_str()]);
        }
        Server::start(PUSHCHAT, self.data_dir.path(), &args).await
    }

    /// The store's recorded format (0 for none), and how many device codes it keeps, read
    /// past the store.
    async fn raw_format_and_codes(&self) -> (u32, usize) {
        match &self.database {
            Some(database) => {
                let mut conn = PgConnection::connect(&database.url).await.unwrap();
                let format: Option<String> =
                    sqlx::query_scalar("SELECT value FROM settings WHERE key = 'store_format'")
                        .fetch_optional(&mut conn)
                        .await
                        .unwrap();
                let codes: i64 = sqlx::query_scalar("SELECT count(*) FROM device_codes")
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
                (
                    format.map_or(0, |format| format.parse().unwrap()),
                    codes as usize,
                )
            }
            None => {
                let db = raw_sled(self.data_dir.path()).await;
                let settings = db.open_tree("settings").unwrap();
                let format = settings.get("store_format").unwrap().map_or(0, |bytes| {
                    u32::from_be_bytes(bytes.as_ref().try_into().unwrap())
                });
                (format, db.open_tree("device_codes").unwrap().len())
            }
        }
    }
}

/// The sled database in `data_dir`, opened past the store, once no store holds it.
async fn raw_sled(data_dir: &Path) -> sled::Db {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match sled::open(data_dir.join("db")) {
            Err(sled::Error::Io(error))
                if error.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            opened => return opened.unwrap(),
        }
    }
}

/// Everything the script wrote, as `store` holds it now.
async fn assert_everything_written_is_there(store: &dyn Store, written: &Written) {
    let mut devices = store.devices().await.unwrap();
    devices.sort_by(|a, b| a.subscription.endpoint.cmp(&b.subscription.endpoint));
    let mut expected: Vec<(PushSubscription, &str)> = BROWSERS
        .iter()
        .map(|&(browser, name)| (subscription(browser), name))
        .collect();
    expected.sort_by(|a, b| a.0.endpoint.cmp(&b.0.endpoint));
    let found: Vec<(PushSubscription, &str)> = devices
        .iter()
        .map(|device| {
            let kept = &device.subscription;
            let keys = SubscriptionKeys {
                p256dh: kept.p256dh.clone(),
                auth: kept.auth.clone(),
            };
            let subscription = PushSubscription {
                endpoint: kept.endpoint.clone(),
                keys,
            };
            (subscription, device.name.as_str())
        })
        .collect();
    assert_eq!(found, expected);
    for device in &devices {
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert_eq!(device.joined_from, Some(localhost), "{device:?}");
        let muted = device.subscription.endpoint.ends_with("/bob-phone");
        let muted_until = muted.then_some(written.muted_until);
        assert_eq!(device.muted_until, muted_until, "{device:?}");
    }
    assert_one_member_per_name(&devices);

    let mut names = store.member_names().await.unwrap();
    names.sort();
    let mut expected_names: Vec<&str> = BROWSERS.iter().map(|&(_, name)| name).collect();
    expected_names.sort();
    expected_names.dedup();
    assert_eq!(names, expected_names);

    let lines = store.recent_lines(100).await.unwrap();
    let said: Vec<(&str, &str, u64)> = lines
        .iter()
        .map(|line| (line.name.as_str(), line.msg.as_str(), line.time))
        .collect();
    let expected_lines: Vec<(&str, &str, u64)> = LINES
        .iter()
        .zip(written.line_times)
        .map(|(&(name, msg), time)| (name, msg, time))
        .collect();
    assert_eq!(said, expected_lines);

    // The ban holds on every spelling that looks like it (format 2 keyed bans so).
    for name in ["Mallory", "MALLORY", "M\u{430}llory"] {
        assert!(store.is_banned(name).await.unwrap(), "{name} is not banned");
    }
    assert!(!store.is_banned("Ann").await.unwrap());

    let keys = VapidKeys::load(store, SUBJECT.into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(keys.public_key_base64(), written.vapid_public_key);
}

/// The pushes the script's server had not sent when it stopped, oldest first, each to
/// the members of then: every join, every line, and Mallory's departure (which format 1
/// wrote naming one member, and format 2 in a list).
async fn assert_the_queued_pushes_are_there(store: &dyn Store) {
    let mut expected: Vec<PushMessage> = ["Ann", "bob", "Zoë 🌸", "b\u{43e}b", "Mallory"]
        .into_iter()
        .map(|name| PushMessage::Joined { name: name.into() })
        .collect();
    let lines = store.recent_lines(100).await.unwrap();
    expected.extend(lines.into_iter().map(PushMessage::Line));
    expected.push(PushMessage::Left {
        names: vec!["Mallory".into()],
    });
    let mut queued = Vec::new();
    // Held until the end, so that each is taken once.
    let mut taken = Vec::new();
    while let Some(fan_out) = store.take_fan_out(&[]).await.unwrap() {
        assert!(
            !fan_out.fan_out.recipients.is_empty(),
            "{:?}",
            fan_out.fan_out
        );
        queued.push(fan_out.fan_out.message.clone());
        taken.push(fan_out);
    }
    assert_eq!(queued, expected);
}

/// Format 6: every browser of an older store counts as seen when it was upgraded (at
/// `upgraded_at` or after), so pruning then warns and removes nobody, however long ago the
/// fixture was written.
async fn assert_nobody_is_pruned_for_the_upgrade(store: Arc<dyn Store>, upgraded_at: u64) {
    for device in store.devices().await.unwrap() {
        assert!(device.last_seen >= upgraded_at, "{device:?}");
        assert_eq!(device.stale_warned, None, "{device:?}");
    }
    let chat = Chat::new(store, ChatRules::default());
    assert_eq!(chat.prune_stale().await.unwrap(), Pruned::default());
}

/// Devices of one name share one member id, and no two names do.
fn assert_one_member_per_name(devices: &[Device]) {
    for a in devices {
        for b in devices {
            assert_eq!(
                a.name == b.name,
                a.member_id == b.member_id,
                "{a:?} / {b:?}"
            );
        }
    }
}

#[tokio::test]
async fn test_every_fixture_opens_with_everything_written_at_todays_format() {
    for fixture in FIXTURES {
        let chat = OldChat::copy_of(fixture).await;
        let (_, codes_before) = chat.raw_format_and_codes().await;
        assert_eq!(
            codes_before, 1,
            "bob's unused device code in {}",
            fixture.folder
        );
        let upgraded_at = now_millis();
        {
            let store = chat.open().await.unwrap();
            assert_everything_written_is_there(&*store, chat.written(fixture)).await;
            assert_the_queued_pushes_are_there(&*store).await;
            assert_nobody_is_pruned_for_the_upgrade(store, upgraded_at).await;
        }
        // Format 2 voided the device codes made before (they named members by old names).
        assert_eq!(chat.raw_format_and_codes().await, (FORMAT, 0));
        // Opened again, at today's format, nothing more changes.
        let store = chat.open().await.unwrap();
        assert_everything_written_is_there(&*store, chat.written(fixture)).await;
    }
}

#[tokio::test]
async fn test_pushchat_on_a_fixture_serves_the_old_history_and_signs_with_the_old_key() {
    for fixture in FIXTURES {
        let chat = OldChat::copy_of(fixture).await;
        let written = chat.written(fixture);
        let server = chat.serve().await;
        assert_eq!(server.vapid_key().await, written.vapid_public_key);

        // Ann's phone comes back as a page does on load, with its old subscription.
        let ann = subscription("ann-phone");
        let room: app::wire::RoomState = server.post_ok("/api/init", &join_body("Ann", &ann)).await;
        assert_eq!(room.you.as_deref(), Some("Ann"));
        let history: Vec<(&str, &str)> = (room.history.iter())
            .map(|line| (line.name.as_str(), line.msg.as_str()))
            .collect();
        assert_eq!(history, LINES);
        let mut members: Vec<&str> = BROWSERS.iter().map(|&(_, name)| name).collect();
        members.dedup();
        let mut listed = room.members.clone();
        listed.sort();
        members.sort();
        assert_eq!(listed, members);

        // A newcomer's browser subscribes with the key the server serves: a push the old
        // key did not sign is refused by its push service (403), so a line reaching it
        // was signed with the old key.
        let push = LocalPush::start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let newcomer = push
            .client()
            .subscribe(&NewSubscriber {
                application_server_key: Some(written.vapid_public_key.into()),
                fault: None,
            })
            .await
            .unwrap();
        server.subscribe("Yan", &newcomer).await;
        let said: ChatLine = server
            .post_ok(
                "/api/chat",
                &serde_json::json!({
                    "endpoint": ann.endpoint,
                    "auth": ann.keys.auth,
                    "msg": "after the upgrade",
                }),
            )
            .await;
        eventually("Ann's line to reach the newcomer", || async {
            let pushes = push.client().received(&newcomer.id).await.unwrap();
            pushes
                .iter()
                .any(|got| got.message() == Some(PushMessage::Line(said.clone())))
                .then_some(())
        })
        .await;
    }
}

impl OldChat {
    /// Makes this chat look written by a newer release, "pushchat 9.9.9", in the format
    /// after this build's, with what this build cannot read: on sled a queued batch under
    /// a key of a layout it does not know, on PostgreSQL a migration it does not have.
    async fn make_newer(&self) {
        let newer = (FORMAT + 1).to_string();
        match &self.database {
            Some(database) => {
                let mut conn = PgConnection::connect(&database.url).await.unwrap();
                sqlx::raw_sql(&format!(
                    "INSERT INTO settings VALUES ('store_format', '{newer}'), \
                     ('written_by', 'pushchat 9.9.9'); \
                     INSERT INTO _sqlx_migrations (version, description, success, checksum, \
                     execution_time) VALUES (9999, 'newer', true, '\\x00', 1);"
                ))
                .execute(&mut conn)
                .await
                .unwrap();
            }
            None => {
                let db = raw_sled(self.data_dir.path()).await;
                let settings = db.open_tree("settings").unwrap();
                settings
                    .insert("store_format", &(FORMAT + 1).to_be_bytes())
                    .unwrap();
                settings.insert("written_by", "pushchat 9.9.9").unwrap();
                db.open_tree("fan_outs").unwrap().insert([9], "?").unwrap();
                db.flush().unwrap();
            }
        }
    }

    /// Everything the store keeps, as text, read past the store: on sled every entry of
    /// every tree; on PostgreSQL the tables, the settings and the migrations run.
    async fn snapshot(&self) -> Vec<String> {
        match &self.database {
            Some(database) => {
                let mut conn = PgConnection::connect(&database.url).await.unwrap();
                let query = "SELECT table_name::text FROM information_schema.tables \
                     WHERE table_schema = 'public' \
                     UNION ALL SELECT key || '=' || value FROM settings \
                     UNION ALL SELECT version::text FROM _sqlx_migrations \
                     UNION ALL SELECT endpoint FROM devices ORDER BY 1";
                sqlx::query_scalar(query)
                    .fetch_all(&mut conn)
                    .await
                    .unwrap()
            }
            None => {
                let db = raw_sled(self.data_dir.path()).await;
                let mut entries = Vec::new();
                for name in db.tree_names() {
                    for entry in db.open_tree(&name).unwrap().iter() {
                        let (key, value) = entry.unwrap();
                        entries.push(format!("{name:?} {key:?} {value:?}"));
                    }
                }
                entries
            }
        }
    }
}

/// What a refusal of a newer format says: who wrote it, in which format, and the formats
/// this build reads.
fn assert_names_both_formats(refusal: &str) {
    for part in [
        "pushchat 9.9.9".to_owned(),
        format!("store format {}", FORMAT + 1),
        format!("formats up to {FORMAT}"),
    ] {
        assert!(refusal.contains(&part), "{part:?} is not in {refusal:?}");
    }
}

#[tokio::test]
async fn test_a_store_of_a_newer_format_is_refused_before_anything_is_read_or_changed() {
    let chat = OldChat::copy_of(&FORMAT_1).await;
    chat.make_newer().await;
    let before = chat.snapshot().await;
    let refusal = match chat.open().await {
        Err(StoreError::NewerFormat(newer)) => newer.to_string(),
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a newer format was opened"),
    };
    assert_names_both_formats(&refusal);
    assert_eq!(chat.snapshot().await, before);
}

/// `pushchat restore FILE` into `data_dir`.
fn restore(file: &Path, data_dir: &Path) -> std::process::Output {
    std::process::Command::new(PUSHCHAT)
        .arg("restore")
        .arg(file)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .unwrap()
}

#[tokio::test]
async fn test_every_fixtures_backup_restores_with_everything_written() {
    for fixture in FIXTURES {
        let data_dir = tempfile::tempdir().unwrap();
        let backup = fixture_path(fixture.folder).join("backup.json");
        let restored = restore(&backup, data_dir.path());
        let said = String::from_utf8_lossy(&restored.stderr);
        assert!(restored.status.success(), "{said}");
        let location = StoreLocation::Sled {
            cache_bytes: 1 << 20,
        };
        let opened = store::open(&location, data_dir.path(), FAN_OUTS_AT_ONCE).await;
        let store = opened.unwrap();
        assert_everything_written_is_there(&*store, &fixture.sled).await;
    }
}

#[tokio::test]
async fn test_a_backup_of_a_newer_format_is_refused_and_nothing_is_restored() {
    let backup = fixture_path(FORMAT_1.folder).join("backup.json");
    let mut contents: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(backup).unwrap()).unwrap();
    contents["store_format"] = (FORMAT + 1).into();
    contents["written_by"] = "pushchat 9.9.9".into();
    let folder = tempfile::tempdir().unwrap();
    let newer = folder.path().join("newer.json");
    std::fs::write(&newer, contents.to_string()).unwrap();
    let data_dir = folder.path().join("data");

    let refused = restore(&newer, &data_dir);
    assert!(!refused.status.success());
    assert_names_both_formats(&String::from_utf8_lossy(&refused.stderr));
    assert!(!data_dir.exists(), "restore made {}", data_dir.display());
}
