//! The store's promises, checked against the store this run tests: sled by default,
//! PostgreSQL with `PUSHCHAT_TEST_STORE=postgres` (see `end2end::TestDatabase`).

use app::wire::PushMessage;

use super::{
    testing::{ann, member, TestStore, AUTH},
    *,
};
use crate::model::{fan_out::Recipients, member::REMOVALS_KEPT};

/// A store whose one member is Ann, at https://p.example/1.
async fn with_ann() -> TestStore {
    let test = TestStore::new().await;
    test.store.put_device(&ann()).await.unwrap();
    test
}

const OTHER_AUTH: &str = "AAAAAAAAAAAAAAAAAAAAAA";

fn line<'a>(msg: &'a str, time: u64) -> NewLine<'a> {
    NewLine {
        name: "Ann",
        msg,
        time,
    }
}

/// Removes the one device at `endpoint` if `auth` is still its secret.
async fn remove_device(
    store: &dyn Store,
    endpoint: &str,
    auth: &str,
) -> Result<Option<Removed>, StoreError> {
    let subscription = Subscription {
        endpoint: endpoint.into(),
        p256dh: "key".into(),
        auth: auth.into(),
    };
    let mut removed = store.remove_devices(&[subscription], None).await?;
    assert!(removed.len() <= 1);
    Ok(removed.pop())
}

/// What waits in the queue, oldest first.
async fn queued(store: &dyn Store) -> Vec<FanOut> {
    store.contents().await.unwrap().fan_outs
}

#[tokio::test]
async fn test_members_are_stored_and_read_back() {
    let test = TestStore::new().await;
    let store = &test.store;
    assert!(!store.has_members().await.unwrap());
    let ann = Device {
        joined_from: Some("203.0.113.7".parse().unwrap()),
        muted_until: Some(5),
        ..member("Ann", "https://p.example/1")
    };
    store.put_device(&ann).await.unwrap();
    assert_eq!(
        store.device("https://p.example/1").await.unwrap(),
        Some(ann.clone())
    );
    assert_eq!(store.devices().await.unwrap(), vec![ann]);
    assert!(store.has_members().await.unwrap());
}

#[tokio::test]
async fn test_a_name_cannot_be_held_by_two_members_whatever_its_case() {
    let test = with_ann().await;
    let store = &test.store;
    let impostor = Device {
        member_id: "someone else".into(),
        ..member("ＡＮＮ", "https://p.example/2")
    };
    let clash = store.put_device(&impostor).await;
    assert!(matches!(clash, Err(StoreError::NameTaken(name)) if name == "ＡＮＮ"));
    assert_eq!(store.devices().await.unwrap().len(), 1);
}

#[test]
fn test_names_a_reader_cannot_tell_apart_collide() {
    assert_eq!(name_key("Ann Lee"), name_key("ANN lee"));
    assert_eq!(name_key("Ａｎｎ"), name_key("ann"));
    assert_eq!(name_key("ﬁona"), name_key("Fiona"));
    assert_ne!(name_key("Ann"), name_key("Anne"));
    // Confusables (UTS #39), the skeleton taken before case is folded.
    assert_eq!(name_key("bob"), name_key("b\u{43e}b"));
    assert_eq!(name_key("AI"), name_key("Al"));
    assert_eq!(name_key("ALICE"), name_key("Alice"));
    assert_eq!(name_key("rn"), name_key("m"));
    assert_eq!(name_key("0live"), name_key("Olive"));
    assert_eq!(name_key("paypal"), name_key("p\u{430}yp\u{430}l"));
    assert_eq!(name_key("\u{2764}\u{FE0F} Ann"), name_key("\u{2764} ann"));
    assert_ne!(name_key("Ann"), name_key("Ana"));
}

#[tokio::test]
async fn test_a_members_devices_share_its_name_until_the_last_leaves() {
    let test = TestStore::new().await;
    let store = &test.store;
    let phone = member("Ann", "https://p.example/1");
    let laptop = member("Ann", "https://p.example/2");
    store.put_device(&phone).await.unwrap();
    store.put_device(&laptop).await.unwrap();
    store.put_device(&laptop).await.unwrap(); // the same device again counts once
    assert_eq!(store.member_count().await.unwrap(), 1);
    assert_eq!(store.devices_of("ann").await.unwrap().len(), 2);
    let stolen = Device {
        member_id: "bo".into(),
        ..member("Bo", "https://p.example/1")
    };
    assert!(matches!(
        store.put_device(&stolen).await,
        Err(StoreError::EndpointTaken)
    ));

    let first = remove_device(&**store, "https://p.example/1", AUTH)
        .await
        .unwrap();
    assert!(!first.unwrap().member_left);
    let last = remove_device(&**store, "https://p.example/2", AUTH)
        .await
        .unwrap();
    assert!(last.unwrap().member_left);
    assert_eq!(store.member_count().await.unwrap(), 0);
    store.put_device(&stolen).await.unwrap();
}

#[tokio::test]
async fn test_removal_needs_the_current_secret_and_frees_the_name() {
    let test = with_ann().await;
    let store = &test.store;
    let wrong = remove_device(&**store, "https://p.example/1", OTHER_AUTH).await;
    assert_eq!(wrong.unwrap(), None);
    let nobody = remove_device(&**store, "https://p.example/9", AUTH).await;
    assert_eq!(nobody.unwrap(), None);
    let removed = remove_device(&**store, "https://p.example/1", AUTH)
        .await
        .unwrap();
    assert_eq!(removed.map(|r| r.device.name), Some("Ann".into()));
    assert!(!store.has_members().await.unwrap());
    store
        .put_device(&member("Ann", "https://p.example/2"))
        .await
        .unwrap();
}

#[tokio::test]
async fn test_a_moved_subscription_keeps_the_device_and_refuses_a_taken_or_gone_one() {
    let test = with_ann().await;
    let store = &test.store;
    store
        .put_device(&member("Bo", "https://p.example/2"))
        .await
        .unwrap();
    store
        .set_muted_until("https://p.example/1", 42)
        .await
        .unwrap();
    let mut moved = Device {
        muted_until: Some(42),
        ..member("Ann", "https://p.example/3")
    };
    moved.subscription.auth = OTHER_AUTH.into();
    let replaced = store
        .replace_subscription("https://p.example/1", &moved.subscription)
        .await;
    assert!(replaced.unwrap());
    assert_eq!(store.device("https://p.example/1").await.unwrap(), None);
    assert_eq!(
        store.device("https://p.example/3").await.unwrap(),
        Some(moved.clone())
    );
    let onto_bo = member("Ann", "https://p.example/2").subscription;
    assert!(matches!(
        store
            .replace_subscription("https://p.example/3", &onto_bo)
            .await,
        Err(StoreError::EndpointTaken)
    ));
    assert_eq!(store.devices_of("bo").await.unwrap().len(), 1);
    // A device that left meanwhile is not brought back.
    let elsewhere = member("Ann", "https://p.example/4").subscription;
    let gone = store
        .replace_subscription("https://p.example/1", &elsewhere)
        .await;
    assert!(!gone.unwrap());
    assert_eq!(store.devices().await.unwrap().len(), 2);
}

/// `member`'s device at `endpoint`, joined from `address`.
fn member_from(name: &str, endpoint: &str, address: &str) -> Device {
    Device {
        joined_from: Some(address.parse().unwrap()),
        ..member(name, endpoint)
    }
}

/// How many devices joined from each of `addresses`.
async fn from_each(store: &dyn Store, addresses: &[&str]) -> Vec<usize> {
    let mut counts = Vec::new();
    for address in addresses {
        counts.push(store.devices_from(address.parse().unwrap()).await.unwrap());
    }
    counts
}

async fn names(store: &dyn Store) -> Vec<String> {
    let mut names = store.member_names().await.unwrap();
    names.sort();
    names
}

async fn endpoints_of(store: &dyn Store, name: &str) -> Vec<String> {
    let mut endpoints: Vec<String> = (store.devices_of(name).await.unwrap())
        .into_iter()
        .map(|device| device.subscription.endpoint)
        .collect();
    endpoints.sort();
    endpoints
}

#[tokio::test]
async fn test_devices_from_an_address_are_counted_through_every_change() {
    let test = TestStore::new().await;
    let store = &*test.store;
    let (a, b) = ("203.0.113.7", "2001:db8::7");
    let addresses = [a, b, "203.0.113.8"];
    store
        .put_device(&member_from("Ann", "https://p.example/1", a))
        .await
        .unwrap();
    store
        .put_device(&member_from("Ann", "https://p.example/2", a))
        .await
        .unwrap();
    store
        .put_device(&member_from("Bo", "https://p.example/3", b))
        .await
        .unwrap();
    store
        .put_device(&member("Cy", "https://p.example/4"))
        .await
        .unwrap();
    assert_eq!(from_each(store, &addresses).await, [2, 1, 0]);
    // The same device again, from another address, counts there only.
    store
        .put_device(&member_from("Ann", "https://p.example/2", b))
        .await
        .unwrap();
    assert_eq!(from_each(store, &addresses).await, [1, 2, 0]);
    let moved = member("Ann", "https://p.example/5").subscription;
    assert!(store
        .replace_subscription("https://p.example/1", &moved)
        .await
        .unwrap());
    assert_eq!(from_each(store, &addresses).await, [1, 2, 0]);

    let fresh = TestStore::new().await;
    fresh
        .store
        .restore(&store.contents().await.unwrap())
        .await
        .unwrap();
    assert_eq!(from_each(&*fresh.store, &addresses).await, [1, 2, 0]);

    remove_device(store, "https://p.example/5", AUTH)
        .await
        .unwrap();
    remove_device(store, "https://p.example/3", AUTH)
        .await
        .unwrap();
    assert_eq!(from_each(store, &addresses).await, [0, 1, 0]);
}

#[tokio::test]
async fn test_member_names_and_a_members_devices_follow_every_change() {
    let test = TestStore::new().await;
    let store = &*test.store;
    assert!(names(store).await.is_empty());
    for device in [
        member("Ann", "https://p.example/1"),
        member("Ann", "https://p.example/2"),
        member("Bo", "https://p.example/3"),
        member("Anna", "https://p.example/4"),
    ] {
        store.put_device(&device).await.unwrap();
    }
    assert_eq!(names(store).await, ["Ann", "Anna", "Bo"]);
    assert_eq!(
        endpoints_of(store, "ANN").await,
        ["https://p.example/1", "https://p.example/2"]
    );
    let moved = member("Ann", "https://p.example/5").subscription;
    assert!(store
        .replace_subscription("https://p.example/1", &moved)
        .await
        .unwrap());
    assert_eq!(
        endpoints_of(store, "ann").await,
        ["https://p.example/2", "https://p.example/5"]
    );
    assert_eq!(names(store).await, ["Ann", "Anna", "Bo"]);

    let fresh = TestStore::new().await;
    fresh
        .store
        .restore(&store.contents().await.unwrap())
        .await
        .unwrap();
    assert_eq!(names(&*fresh.store).await, ["Ann", "Anna", "Bo"]);
    assert_eq!(
        endpoints_of(&*fresh.store, "ann").await,
        ["https://p.example/2", "https://p.example/5"]
    );

    remove_device(store, "https://p.example/5", AUTH)
        .await
        .unwrap();
    assert_eq!(names(store).await, ["Ann", "Anna", "Bo"]);
    assert_eq!(endpoints_of(store, "ann").await, ["https://p.example/2"]);
    remove_device(store, "https://p.example/2", AUTH)
        .await
        .unwrap();
    assert_eq!(names(store).await, ["Anna", "Bo"]);
    assert!(endpoints_of(store, "ann").await.is_empty());
    assert_eq!(endpoints_of(store, "anna").await, ["https://p.example/4"]);
}

#[tokio::test]
async fn test_endpoints_are_every_devices_but_the_muted_when_asked() {
    let test = TestStore::new().await;
    let store = &*test.store;
    let ann = member("Ann", "https://p.example/1");
    let bo = member("Bo", "https://p.example/2");
    store.put_device(&ann).await.unwrap();
    store.put_device(&bo).await.unwrap();
    store
        .set_muted_until("https://p.example/1", 50)
        .await
        .unwrap();
    let endpoints = |unmuted_at| async move {
        let mut endpoints = store.endpoints(unmuted_at).await.unwrap();
        endpoints.sort();
        endpoints
    };
    assert_eq!(
        endpoints(None).await,
        ["https://p.example/1", "https://p.example/2"]
    );
    assert_eq!(endpoints(Some(49)).await, ["https://p.example/2"]);
    assert_eq!(
        endpoints(Some(50)).await,
        ["https://p.example/1", "https://p.example/2"]
    );
    remove_device(store, "https://p.example/2", AUTH)
        .await
        .unwrap();
    assert!(endpoints(Some(49)).await.is_empty());
}

#[tokio::test]
async fn test_subscriptions_are_read_for_the_devices_still_there() {
    let test = TestStore::new().await;
    let store = &*test.store;
    let ann = member("Ann", "https://p.example/1");
    store.put_device(&ann).await.unwrap();
    let asked = ["https://p.example/1".into(), "https://p.example/2".into()];
    assert_eq!(
        store.subscriptions(&asked).await.unwrap(),
        [ann.subscription]
    );
    assert!(store.subscriptions(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn test_a_device_code_works_once_and_not_after_it_expires() {
    let test = TestStore::new().await;
    let store = &test.store;
    let grant = DeviceCode {
        member_id: "ann".into(),
        name: "Ann".into(),
        expires: 100,
    };
    store.put_device_code("ABCD", &grant, 10).await.unwrap();
    store.put_device_code("EFGH", &grant, 10).await.unwrap();
    assert_eq!(
        store.take_device_code("ABCD", 50).await.unwrap(),
        Some(grant.clone())
    );
    assert_eq!(store.take_device_code("ABCD", 50).await.unwrap(), None);
    assert_eq!(store.take_device_code("EFGH", 100).await.unwrap(), None);
}

#[tokio::test]
async fn test_a_mute_is_kept_with_the_member_across_reopening() {
    let test = with_ann().await;
    assert!(test
        .store
        .set_muted_until("https://p.example/1", 99)
        .await
        .unwrap());
    assert!(!test
        .store
        .set_muted_until("https://p.example/2", 99)
        .await
        .unwrap());
    let test = test.reopen().await;
    let ann = test.store.device("https://p.example/1").await.unwrap();
    assert_eq!(ann.unwrap().muted_until, Some(99));
    assert_eq!(test.store.devices().await.unwrap().len(), 1);
}

#[tokio::test]
async fn test_history_keeps_the_newest_lines_in_order() {
    let test = TestStore::new().await;
    let store = &test.store;
    for n in 0..5 {
        let msg = format!("line {n}");
        store.append_line(line(&msg, n), 3, &[]).await.unwrap();
    }
    let lines = store.recent_lines(10).await.unwrap();
    let texts: Vec<_> = lines.iter().map(|l| l.msg.as_str()).collect();
    assert_eq!(texts, ["line 2", "line 3", "line 4"]);
    assert!(lines.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(store.recent_lines(2).await.unwrap()[0].msg, "line 3");
}

/// Appends lines "line 0" to "line {count - 1}", keeping `keep`; returns their ids.
async fn append_numbered(store: &dyn Store, count: u64, keep: usize) -> Vec<u64> {
    let mut ids = Vec::new();
    for n in 0..count {
        let msg = format!("line {n}");
        let (line, _) = store.append_line(line(&msg, n), keep, &[]).await.unwrap();
        ids.push(line.id);
    }
    ids
}

fn texts(lines: &[ChatLine]) -> Vec<&str> {
    lines.iter().map(|l| l.msg.as_str()).collect()
}

#[tokio::test]
async fn test_lines_before_a_line_are_the_newest_older_ones_in_order() {
    let test = TestStore::new().await;
    let store = &*test.store;
    let ids = append_numbered(store, 6, 10).await;
    let older = store.lines_before(ids[4], 2).await.unwrap();
    assert_eq!(texts(&older), ["line 2", "line 3"]);
    let rest = store.lines_before(older[0].id, 10).await.unwrap();
    assert_eq!(texts(&rest), ["line 0", "line 1"]);
    assert!(store.lines_before(ids[0], 10).await.unwrap().is_empty());
    // An id after every line (one not given yet, or the largest there is) reads the newest.
    let newest = store.lines_before(u64::MAX, 1).await.unwrap();
    assert_eq!(texts(&newest), ["line 5"]);
}

#[tokio::test]
async fn test_the_history_limit_keeps_more_lines_than_a_page_reads() {
    let test = TestStore::new().await;
    let store = &*test.store;
    let ids = append_numbered(store, 8, 5).await;
    assert_eq!(
        texts(&store.recent_lines(2).await.unwrap()),
        ["line 6", "line 7"]
    );
    let older = store.lines_before(ids[6], 10).await.unwrap();
    assert_eq!(texts(&older), ["line 3", "line 4", "line 5"]);
    // A line pruned meanwhile still marks where to read from.
    let gone = store.lines_before(ids[2], 10).await.unwrap();
    assert!(gone.is_empty());
}

#[tokio::test]
async fn test_a_line_and_its_fan_out_in_batches_are_queued_together() {
    let test = TestStore::new().await;
    let store = &test.store;
    let recipients: Vec<String> = (0..FAN_OUT_BATCH + 1)
        .map(|n| format!("https://p.example/{n}"))
        .collect();
    let line = store
        .append_line(line("hello", 1), 10, &recipients)
        .await
        .unwrap()
        .0;
    let queue = queued(store.as_ref()).await;
    assert_eq!(queue.len(), 2);
    assert!(queue
        .iter()
        .all(|fan_out| *fan_out.message() == PushMessage::Line(line.clone())));
    let sizes: Vec<usize> = queue.iter().map(|f| f.recipients().len()).collect();
    assert_eq!(sizes, [FAN_OUT_BATCH, 1]);
    let queued_recipients: Vec<&str> = queue
        .iter()
        .flat_map(|fan_out| fan_out.recipients().endpoints())
        .collect();
    assert_eq!(
        queued_recipients, recipients,
        "every recipient once, in order"
    );
}

#[tokio::test]
async fn test_a_taken_fan_out_is_skipped_until_done_and_taken_again_after_a_restart() {
    let test = with_ann().await;
    let to_ann = vec![ann().subscription.endpoint];
    let first = test
        .store
        .append_line(line("one", 1), 10, &to_ann)
        .await
        .unwrap()
        .0;
    let second = test
        .store
        .append_line(line("two", 2), 10, &to_ann)
        .await
        .unwrap()
        .0;
    let nothing = FanOut::joined("Ann", Vec::new());
    test.store.queue_fan_out(&nothing).await.unwrap();

    let taken = test.store.take_fan_out(&[]).await.unwrap().unwrap();
    assert_eq!(taken.fan_out.message, PushMessage::Line(first.clone()));
    assert_eq!(taken.fan_out.recipients, [ann().subscription]);
    let next = test.store.take_fan_out(&[]).await.unwrap().unwrap();
    assert_eq!(next.fan_out.message, PushMessage::Line(second.clone()));
    assert!(test.store.take_fan_out(&[]).await.unwrap().is_none());
    taken.done().await.unwrap();
    drop(next); // its taker stopped before it was done

    let test = test.reopen().await;
    let again = test.store.take_fan_out(&[]).await.unwrap().unwrap();
    assert_eq!(again.fan_out.message, PushMessage::Line(second.clone()));
    again.done().await.unwrap();
    assert!(test.store.take_fan_out(&[]).await.unwrap().is_none());
    assert_eq!(
        test.store.recent_lines(10).await.unwrap(),
        vec![first, second]
    );
}

#[tokio::test]
async fn test_a_batch_is_queued_by_endpoint_and_taken_with_the_subscriptions_still_there() {
    let test = with_ann().await;
    let bo = member("Bo", "https://p.example/2");
    test.store.put_device(&bo).await.unwrap();
    let everyone = test.store.endpoints(None).await.unwrap();
    let (_, fan_out) = test
        .store
        .append_line(line("hi", 1), 10, &everyone)
        .await
        .unwrap();
    assert!(matches!(fan_out.recipients(), Recipients::Devices { .. }));
    // Bo leaves before the batch is taken: only Ann gets it.
    remove_device(&*test.store, "https://p.example/2", AUTH)
        .await
        .unwrap()
        .unwrap();
    let taken = test.store.take_fan_out(&[]).await.unwrap().unwrap();
    assert_eq!(taken.fan_out.recipients, [ann().subscription]);
    taken.done().await.unwrap();
}

#[tokio::test]
async fn test_a_removed_members_last_push_reaches_its_devices_gone_since() {
    let test = with_ann().await;
    let removed = test
        .store
        .remove_devices(&[ann().subscription], None)
        .await
        .unwrap();
    let own = vec![removed[0].device.subscription.clone()];
    test.store
        .queue_fan_out(&FanOut::removed(false, own.clone()))
        .await
        .unwrap();
    let taken = test.store.take_fan_out(&[]).await.unwrap().unwrap();
    assert_eq!(
        taken.fan_out.message,
        PushMessage::Removed { banned: false }
    );
    assert_eq!(taken.fan_out.recipients, own);
}

#[tokio::test]
async fn test_a_held_back_origin_is_passed_over_and_its_batches_wait_in_the_queue() {
    let test = TestStore::new().await;
    let hung = "https://hung.example:8443";
    let mut devices = Vec::new();
    for n in 0..FAN_OUT_BATCH + 1 {
        devices.push(member(&format!("h{n}"), &format!("{hung}/{n}")));
        if n % 100 == 0 {
            devices.push(member(
                &format!("f{n}"),
                &format!("https://fine.example/{n}"),
            ));
        }
    }
    let recipients: Vec<String> = (devices.iter())
        .map(|device| device.subscription.endpoint.clone())
        .collect();
    let members = StoreContents {
        devices,
        ..StoreContents::default()
    };
    test.store.restore(&members).await.unwrap();
    let (line, _) = test
        .store
        .append_line(line("hi", 1), 10, &recipients)
        .await
        .unwrap();
    let line = PushMessage::Line(line);

    let first = test.store.take_fan_out(&[]).await.unwrap().unwrap();
    assert_eq!(first.origin, hung);
    assert_eq!(first.fan_out.recipients.len(), FAN_OUT_BATCH);
    let held_back = [hung.to_owned()];
    let fine = test.store.take_fan_out(&held_back).await.unwrap().unwrap();
    assert_eq!(
        (fine.origin.as_str(), fine.fan_out.recipients.len()),
        ("https://fine.example", 3)
    );
    assert_eq!(fine.fan_out.message, line);
    assert!(fine
        .fan_out
        .recipients
        .iter()
        .all(|recipient| recipient.endpoint.starts_with("https://fine.example/")));
    fine.done().await.unwrap();
    assert!(test.store.take_fan_out(&held_back).await.unwrap().is_none());

    let rest = test.store.take_fan_out(&[]).await.unwrap().unwrap();
    assert_eq!(
        (rest.origin.as_str(), rest.fan_out.recipients.len()),
        (hung, 1)
    );
    assert_eq!(
        queued(&*test.store).await.len(),
        2,
        "the hung origin's, not yet done"
    );
}

#[tokio::test]
async fn test_everything_survives_reopening() {
    let test = with_ann().await;
    test.store.ban("Mallory").await.unwrap();
    test.store
        .set_vapid_subject("mailto:a@b.example")
        .await
        .unwrap();
    let first_id = test
        .store
        .append_line(line("hello", 7), 10, &[])
        .await
        .unwrap()
        .0
        .id;
    let test = test.reopen().await;
    let store = &test.store;
    assert_eq!(store.devices().await.unwrap().len(), 1);
    assert!(store.is_banned("mallory").await.unwrap());
    assert_eq!(
        store.vapid_subject().await.unwrap().as_deref(),
        Some("mailto:a@b.example")
    );
    assert_eq!(store.recent_lines(10).await.unwrap()[0].msg, "hello");
    let next = store
        .append_line(line("again", 8), 10, &[])
        .await
        .unwrap()
        .0;
    assert!(next.id > first_id);
}

#[tokio::test]
async fn test_contents_restore_into_an_empty_store_and_new_lines_come_after() {
    let test = with_ann().await;
    let store = &test.store;
    store.ban("Mallory").await.unwrap();
    assert!(store.unban("nobody").await.is_ok_and(|was| !was));
    store
        .set_vapid_subject("mailto:ops@example.org")
        .await
        .unwrap();
    let to_ann = vec![ann().subscription.endpoint];
    store
        .append_line(line("one", 1), 10, &to_ann)
        .await
        .unwrap();
    let sent = store.take_fan_out(&[]).await.unwrap().unwrap();
    sent.done().await.unwrap();
    store
        .append_line(line("two", 2), 10, &to_ann)
        .await
        .unwrap();
    let contents = store.contents().await.unwrap();
    assert_eq!(contents.fan_outs.len(), 1);

    let fresh = TestStore::new().await;
    fresh.store.restore(&contents).await.unwrap();
    assert_eq!(fresh.store.contents().await.unwrap(), contents);
    assert!(fresh.store.is_banned("MALLORY").await.unwrap());
    let next = fresh
        .store
        .append_line(line("three", 3), 10, &[])
        .await
        .unwrap()
        .0;
    assert!(next.id > contents.history[1].id);
    assert!(matches!(
        fresh.store.restore(&contents).await,
        Err(StoreError::NotEmpty)
    ));
}

#[tokio::test]
async fn test_a_removal_is_remembered_for_its_browsers_until_it_expires() {
    let test = with_ann().await;
    let store = &test.store;
    let ann = store.device("https://p.example/1").await.unwrap().unwrap();
    let removal = Removal {
        name: "Ann".into(),
        banned: true,
        at: 1_000,
    };
    let removed = store
        .remove_devices(std::slice::from_ref(&ann.subscription), Some(&removal))
        .await
        .unwrap();
    assert_eq!(removed.len(), 1);
    assert!(removed[0].member_left);
    let kept = REMOVALS_KEPT.as_millis() as u64;
    assert_eq!(
        store
            .removal("https://p.example/1", 1_000 + kept - 1)
            .await
            .unwrap(),
        Some(removal)
    );
    assert_eq!(
        store
            .removal("https://p.example/1", 1_000 + kept)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.removal("https://p.example/2", 1_000).await.unwrap(),
        None
    );
    // Leaving of one's own accord leaves no removal behind.
    store
        .put_device(&member("Bo", "https://p.example/3"))
        .await
        .unwrap();
    remove_device(&**store, "https://p.example/3", AUTH)
        .await
        .unwrap();
    assert_eq!(
        store.removal("https://p.example/3", 1_000).await.unwrap(),
        None
    );
}

#[tokio::test]
async fn test_a_members_device_codes_go_with_its_last_device() {
    let test = with_ann().await;
    let store = &test.store;
    store
        .put_device(&member("Ann", "https://p.example/2"))
        .await
        .unwrap();
    let grant = |member_id: &str| DeviceCode {
        member_id: member_id.into(),
        name: "x".into(),
        expires: 100,
    };
    store
        .put_device_code("ANN1", &grant("ann"), 10)
        .await
        .unwrap();
    store
        .put_device_code("ANN2", &grant("ann"), 10)
        .await
        .unwrap();
    store.put_device_code("BO", &grant("bo"), 10).await.unwrap();
    remove_device(&**store, "https://p.example/1", AUTH)
        .await
        .unwrap();
    assert!(store.take_device_code("ANN1", 50).await.unwrap().is_some());
    remove_device(&**store, "https://p.example/2", AUTH)
        .await
        .unwrap();
    assert_eq!(store.take_device_code("ANN2", 50).await.unwrap(), None);
    assert!(store.take_device_code("BO", 50).await.unwrap().is_some());
}

#[tokio::test]
async fn test_an_allowance_is_a_burst_per_key_and_quota() {
    let test = TestStore::new().await;
    let store = &test.store;
    let quota = Quota {
        name: "tries",
        burst: 3,
        every: Duration::from_secs(60),
    };
    for _ in 0..3 {
        assert_eq!(
            store.take_allowance(&quota, "203.0.113.7").await.unwrap(),
            Ok(())
        );
    }
    let wait = store
        .take_allowance(&quota, "203.0.113.7")
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        wait > Duration::from_secs(50) && wait <= Duration::from_secs(60),
        "{wait:?}"
    );
    // The refusal was not counted, and other keys and quotas have their own.
    let again = store
        .take_allowance(&quota, "203.0.113.7")
        .await
        .unwrap()
        .unwrap_err();
    assert!(again <= wait, "{again:?} after {wait:?}");
    assert_eq!(
        store.take_allowance(&quota, "198.51.100.1").await.unwrap(),
        Ok(())
    );
    let other = Quota {
        name: "other",
        ..quota
    };
    assert_eq!(
        store.take_allowance(&other, "203.0.113.7").await.unwrap(),
        Ok(())
    );
}

#[tokio::test]
async fn test_contents_carry_the_format_and_an_older_backup_is_brought_up_to_date() {
    let test = with_ann().await;
    let contents = test.store.contents().await.unwrap();
    assert_eq!(contents.store_format, FORMAT);
    assert_eq!(contents.written_by, format::WRITTEN_BY);
    // A format 1 backup: no format, a "left" push naming one member, two look-alikes.
    let mut older = serde_json::to_value(&contents).unwrap();
    let fields = older.as_object_mut().unwrap();
    fields.remove("store_format");
    fields.remove("written_by");
    let bob = |name: &str, endpoint: &str, joined: u64| Device {
        joined,
        ..member(name, endpoint)
    };
    fields.insert(
        "devices".into(),
        serde_json::json!([
            bob("b\u{43e}b", "https://p.example/7", 9),
            bob("bob", "https://p.example/8", 3)
        ]),
    );
    fields.insert(
        "fan_outs".into(),
        serde_json::json!([{"message": {"action": "unsubscribe", "name": "Cy"}, "recipients": []}]),
    );
    let read = format::read_contents(older).unwrap();
    let names: Vec<&str> = read
        .devices
        .iter()
        .map(|device| device.name.as_str())
        .collect();
    assert_eq!(names, ["b\u{43e}b (2)", "bob"]);
    assert_eq!(
        *read.fan_outs[0].message(),
        PushMessage::Left {
            names: vec!["Cy".into()]
        }
    );
    let fresh = TestStore::new().await;
    fresh.store.restore(&read).await.unwrap();
    assert_eq!(fresh.store.member_count().await.unwrap(), 2);
}
