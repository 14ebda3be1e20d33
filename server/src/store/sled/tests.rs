//! What only the sled store does: its old outbox and its format migration.

use app::wire::PushMessage;

use super::*;
use crate::{
    model::{
        clock::now_millis, fan_out::ResolvedFanOut, member::DeviceCode, subscription::Subscription,
    },
    store::{
        code_key,
        format::{self, FORMAT},
        name_key,
        testing::{ann, open_sled_when_free},
        Backups, FanOutQueue, MemberStore,
    },
};

#[tokio::test]
async fn test_an_earlier_builds_unsent_lines_are_queued_to_every_member() {
    let dir = tempfile::tempdir().unwrap();
    let ann = ann();
    let line = ChatLine {
        id: 7,
        name: "Ann".into(),
        msg: "cut short".into(),
        time: 1,
    };
    {
        // What such a build left: the member, and the line in its outbox.
        let db = sled::open(dir.path().join(DB_DIR)).unwrap();
        let devices = db.open_tree(DEVICES).unwrap();
        let record = serde_json::to_vec(&ann).unwrap();
        devices
            .insert(ann.subscription.endpoint.as_bytes(), record)
            .unwrap();
        let outbox = db.open_tree(OLD_OUTBOX).unwrap();
        let record = serde_json::to_vec(&line).unwrap();
        outbox.insert(line.id.to_be_bytes(), record).unwrap();
        db.flush().unwrap();
    }
    let store = open_sled_when_free(dir.path()).await;
    let queued = store.take_fan_out(&[]).await.unwrap().unwrap();
    assert_eq!(
        queued.fan_out,
        ResolvedFanOut {
            message: PushMessage::Line(line),
            recipients: vec![ann.subscription],
        }
    );
    assert!(!store
        .db
        .tree_names()
        .iter()
        .any(|name| name.as_ref() == OLD_OUTBOX.as_bytes()));
}

/// A device of a member as an earlier build stored it, at https://p.example/N.
fn old_device(name: &str, member_id: &str, n: u8, joined: u64) -> Device {
    Device {
        name: name.into(),
        member_id: member_id.into(),
        subscription: Subscription {
            endpoint: format!("https://p.example/{n}"),
            p256dh: "key".into(),
            auth: crate::store::testing::AUTH.into(),
        },
        joined,
        joined_from: None,
        muted_until: None,
        last_seen: 0,
        stale_warned: None,
    }
}

/// Stores `devices` as builds before format 3 did: the devices, the names (under `key`
/// of each) and the device counts, no other index.
fn write_old_devices(db: &sled::Db, devices: &[Device], key: impl Fn(&str) -> String) {
    let records = db.open_tree(DEVICES).unwrap();
    let names = db.open_tree(NAMES).unwrap();
    let counts = db.open_tree(DEVICE_COUNTS).unwrap();
    for device in devices {
        let endpoint = device.subscription.endpoint.as_bytes();
        records
            .insert(endpoint, serde_json::to_vec(device).unwrap())
            .unwrap();
        names
            .insert(key(&device.name).as_bytes(), device.member_id.as_bytes())
            .unwrap();
        let count = count_of(counts.get(&device.member_id).unwrap().as_deref());
        counts
            .insert(device.member_id.as_bytes(), &(count + 1).to_be_bytes())
            .unwrap();
    }
}

/// A data dir as pushchat 0.1 (store format 1, no format recorded) left it: "bob"
/// and a later "b\u{43e}b" (Cyrillic о) under their NFKC + lowercase keys, two banned
/// names that now look alike, a device code, and a queued "left" push naming one member.
fn write_format_1(dir: &Path) {
    let db = sled::open(dir.join(DB_DIR)).unwrap();
    let devices = [
        old_device("bob", "first", 1, 10),
        old_device("b\u{43e}b", "second", 2, 20),
    ];
    write_old_devices(&db, &devices, str::to_owned);
    let banned = db.open_tree(BANNED).unwrap();
    banned.insert("eve", "Eve").unwrap();
    banned.insert("\u{435}ve", "\u{415}ve").unwrap();
    let code = DeviceCode {
        member_id: "first".into(),
        name: "bob".into(),
        expires: u64::MAX,
    };
    db.open_tree(DEVICE_CODES)
        .unwrap()
        .insert(code_key("CODE"), serde_json::to_vec(&code).unwrap())
        .unwrap();
    let queued = serde_json::json!({
        "queued_at": 5,
        "broadcast": {"message": {"action": "unsubscribe", "name": "Cy"}, "recipients": []}
    });
    db.open_tree(FAN_OUTS)
        .unwrap()
        .insert(7u64.to_be_bytes(), serde_json::to_vec(&queued).unwrap())
        .unwrap();
    db.flush().unwrap();
}

#[tokio::test]
async fn test_a_format_1_data_dir_is_brought_up_to_date_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    write_format_1(dir.path());
    let store = open_sled_when_free(dir.path()).await;
    let first = store.devices_of("BOB").await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].member_id, "first");
    let second = store.device("https://p.example/2").await.unwrap().unwrap();
    assert_eq!(second.name, "b\u{43e}b (2)");
    assert_eq!(
        store.devices_of("b\u{43e}b (2)").await.unwrap(),
        vec![second]
    );
    let mut names = store.member_names().await.unwrap();
    names.sort();
    assert_eq!(names, ["bob", "b\u{43e}b (2)"]);
    assert!(store.is_banned("EVE").await.unwrap());
    assert_eq!(store.contents().await.unwrap().banned.len(), 1);
    assert_eq!(store.take_device_code("CODE", 0).await.unwrap(), None);
    let queued = store.take_fan_out(&[]).await.unwrap().unwrap();
    assert_eq!(
        queued.fan_out.message,
        PushMessage::Left {
            names: vec!["Cy".into()]
        }
    );
    let recorded = store.settings.get(STORE_FORMAT).unwrap().unwrap();
    assert_eq!(recorded.as_ref(), FORMAT.to_be_bytes());
    drop(queued);
    drop(store);
    // Opened again, it is up to date already: nothing moves.
    let again = open_sled_when_free(dir.path()).await;
    assert_eq!(again.member_count().await.unwrap(), 2);
}

#[tokio::test]
async fn test_a_batch_queued_with_whole_subscriptions_by_format_4_is_sent_to_them() {
    let dir = tempfile::tempdir().unwrap();
    let to = Subscription {
        endpoint: "https://p.example/9".into(),
        p256dh: "key".into(),
        auth: "auth".into(),
    };
    {
        // A format 4 queue: the batch's origin after its id, every recipient whole (and
        // its device gone since, which does not matter to such a batch).
        let db = sled::open(dir.path().join(DB_DIR)).unwrap();
        let settings = db.open_tree(SETTINGS).unwrap();
        settings
            .insert(STORE_FORMAT, &format::FAN_OUT_ORIGINS.to_be_bytes())
            .unwrap();
        let record = serde_json::json!({
            "queued_at": 5,
            "broadcast": {
                "message": {"action": "notice", "text": "hi"},
                "recipients": [to],
            },
        });
        let key = [&1u64.to_be_bytes()[..], b"https://p.example"].concat();
        let fan_outs = db.open_tree(FAN_OUTS).unwrap();
        fan_outs
            .insert(key, serde_json::to_vec(&record).unwrap())
            .unwrap();
        db.flush().unwrap();
    }
    let store = open_sled_when_free(dir.path()).await;
    let queued = store.take_fan_out(&[]).await.unwrap().unwrap();
    assert_eq!(queued.origin, "https://p.example");
    assert_eq!(
        queued.fan_out,
        ResolvedFanOut {
            message: PushMessage::Notice { text: "hi".into() },
            recipients: vec![to],
        }
    );
    queued.done().await.unwrap();
    let recorded = store.settings.get(STORE_FORMAT).unwrap().unwrap();
    assert_eq!(recorded.as_ref(), FORMAT.to_be_bytes());
}

#[tokio::test]
async fn test_a_data_dir_of_a_newer_format_is_refused_and_left_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open_sled_when_free(dir.path()).await;
        store
            .settings
            .insert(STORE_FORMAT, &(FORMAT + 1).to_be_bytes())
            .unwrap();
        store
            .settings
            .insert(WRITTEN_BY_KEY, "pushchat 9.9.9")
            .unwrap();
        store.db.flush().unwrap();
    }
    let refused = loop {
        match SledStore::open(dir.path(), 1 << 20) {
            Err(StoreError::InUse) => tokio::time::sleep(Duration::from_millis(20)).await,
            opened => break opened,
        }
    };
    let Err(StoreError::NewerFormat(newer)) = refused else {
        panic!("a newer format was opened");
    };
    assert!(newer.to_string().contains("pushchat 9.9.9"), "{newer}");
    let db = sled::open(dir.path().join(DB_DIR)).unwrap();
    let kept = db
        .open_tree(SETTINGS)
        .unwrap()
        .get(STORE_FORMAT)
        .unwrap()
        .unwrap();
    assert_eq!(kept.as_ref(), (FORMAT + 1).to_be_bytes());
}

/// A data dir as format 2 left it: Ann's two devices (from one address) and Bo's, their
/// names and counts, and what a build of the indexes cut short left (a name nobody has).
fn write_format_2(dir: &Path) {
    let db = sled::open(dir.join(DB_DIR)).unwrap();
    let from = Some("203.0.113.7".parse().unwrap());
    let devices = [
        Device {
            joined_from: from,
            ..old_device("Ann", "ann", 1, 10)
        },
        Device {
            joined_from: from,
            ..old_device("Ann", "ann", 2, 11)
        },
        old_device("Bo", "bo", 3, 12),
    ];
    write_old_devices(&db, &devices, name_key);
    db.open_tree(MEMBER_NAMES)
        .unwrap()
        .insert("ghost", "Ghost")
        .unwrap();
    let settings = db.open_tree(SETTINGS).unwrap();
    settings
        .insert(STORE_FORMAT, &format::SKELETON_NAMES.to_be_bytes())
        .unwrap();
    settings.insert(WRITTEN_BY_KEY, "pushchat 0.2.0").unwrap();
    db.flush().unwrap();
}

#[tokio::test]
async fn test_the_devices_of_a_data_dir_before_format_6_count_as_seen_when_it_is_opened() {
    let dir = tempfile::tempdir().unwrap();
    write_format_2(dir.path());
    let upgraded_at = now_millis();
    let store = open_sled_when_free(dir.path()).await;
    let devices = store.devices().await.unwrap();
    assert_eq!(devices.len(), 3);
    for device in devices {
        assert!(device.last_seen >= upgraded_at, "{device:?}");
        assert_eq!(device.stale_warned, None);
    }
    // Opened again, nothing moves: they keep the time of the upgrade.
    let seen = store.device("https://p.example/1").await.unwrap().unwrap();
    drop(store);
    let again = open_sled_when_free(dir.path()).await;
    assert_eq!(
        again.device("https://p.example/1").await.unwrap(),
        Some(seen)
    );
}

#[tokio::test]
async fn test_a_format_2_data_dir_gets_its_indexes_of_devices_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    write_format_2(dir.path());
    let store = open_sled_when_free(dir.path()).await;
    let mut names = store.member_names().await.unwrap();
    names.sort();
    assert_eq!(names, ["Ann", "Bo"]);
    assert_eq!(store.devices_of("ANN").await.unwrap().len(), 2);
    assert_eq!(store.devices_of("bo").await.unwrap().len(), 1);
    let from = "203.0.113.7".parse().unwrap();
    assert_eq!(store.devices_from(from).await.unwrap(), 2);
    let recorded = store.settings.get(STORE_FORMAT).unwrap().unwrap();
    assert_eq!(recorded.as_ref(), FORMAT.to_be_bytes());
    // Kept up from now on: Ann's last device leaving takes her name and address with it.
    let ann = store.devices_of("ann").await.unwrap();
    let subscriptions: Vec<Subscription> =
        ann.into_iter().map(|device| device.subscription).collect();
    store.remove_devices(&subscriptions, None).await.unwrap();
    assert_eq!(store.member_names().await.unwrap(), ["Bo"]);
    assert_eq!(store.devices_from(from).await.unwrap(), 0);
}
