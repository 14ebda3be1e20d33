//! Stale browsers warned and removed, with the time set by hand, on the store this run
//! tests (see `store::tests`).

use app::wire::PushMessage;

use super::*;
use crate::{
    chat::{
        tests::{chat_at, credentials, endpoints, join_request, left, HOME},
        ChatRules, DEFAULT_STALE_AFTER,
    },
    model::clock::{Clock, ManualClock},
    store::testing::TestStore,
};

const HOUR: u64 = 3600 * 1000;
const DAY: u64 = 24 * HOUR;
/// The default `--stale-after`, in milliseconds.
const STALE_AFTER: u64 = 60 * DAY;
const GRACE: u64 = 7 * DAY;

/// Ann (1) and Bo (2) joined at the clock's time, which is returned.
async fn ann_and_bo(clock: &Arc<ManualClock>) -> (TestStore, Chat, u64) {
    let joined = clock.now_millis();
    let (store, chat) = chat_at(Arc::clone(clock)).await;
    chat.subscribe(join_request("Ann", 1), HOME).await.unwrap();
    chat.subscribe(join_request("Bo", 2), HOME).await.unwrap();
    (store, chat, joined)
}

/// Ann's page calls at `at`: she stays alive while Bo is silent.
async fn ann_opens_the_chat(chat: &Chat, clock: &ManualClock, at: u64) {
    clock.set(at);
    chat.reopen(join_request("Ann", 1), HOME).await.unwrap();
}

/// Bo, silent since he joined, is warned one hour after his silence passed
/// `--stale-after`; returns that time.
async fn bo_is_warned(chat: &Chat, clock: &ManualClock, joined: u64) -> u64 {
    ann_opens_the_chat(chat, clock, joined + STALE_AFTER - DAY).await;
    let warned_at = joined + STALE_AFTER + HOUR;
    clock.set(warned_at);
    let pruned = chat.prune_stale().await.unwrap();
    assert_eq!(pruned.removed, []);
    let [warning] = &pruned.warned[..] else {
        panic!("one warning, to Bo: {pruned:?}");
    };
    assert_eq!(
        *warning.message(),
        PushMessage::Stale {
            remove_at: warned_at + GRACE
        }
    );
    assert_eq!(endpoints(warning), [credentials(2).endpoint]);
    warned_at
}

#[tokio::test]
async fn test_a_silent_browser_is_warned_once_then_removed_and_the_others_told() {
    let clock = Arc::new(ManualClock::new());
    let (_store, chat, joined) = ann_and_bo(&clock).await;
    // Silent for exactly --stale-after is not yet stale.
    ann_opens_the_chat(&chat, &clock, joined + STALE_AFTER - DAY).await;
    clock.set(joined + STALE_AFTER);
    assert_eq!(chat.prune_stale().await.unwrap(), Pruned::default());

    let warned_at = bo_is_warned(&chat, &clock, joined).await;
    // Another instance that read Bo before the warning does not warn him again.
    let bo = credentials(2).endpoint;
    let seen_before = warned_at - STALE_AFTER;
    let again = chat.store.mark_warned(&bo, seen_before, warned_at);
    assert!(!again.await.unwrap());
    // Warned once, not at every round.
    clock.set(warned_at + HOUR);
    assert_eq!(chat.prune_stale().await.unwrap(), Pruned::default());
    clock.set(warned_at + GRACE - HOUR);
    assert_eq!(chat.prune_stale().await.unwrap(), Pruned::default());
    assert!(chat
        .store
        .device(&credentials(2).endpoint)
        .await
        .unwrap()
        .is_some());

    clock.set(warned_at + GRACE);
    let pruned = chat.prune_stale().await.unwrap();
    assert_eq!(pruned.warned, []);
    let [told] = &pruned.removed[..] else {
        panic!("one \"left\" push: {pruned:?}");
    };
    assert_eq!(*told.message(), left(&["Bo"]));
    assert_eq!(endpoints(told), [credentials(1).endpoint]);
    assert_eq!(
        chat.store.device(&credentials(2).endpoint).await.unwrap(),
        None
    );
    assert_eq!(chat.room().await.unwrap().members, ["Ann"]);
}

#[tokio::test]
async fn test_a_page_call_after_the_warning_keeps_the_browser() {
    a_sign_of_life_after_the_warning_keeps_the_browser(SignOfLife::PageLoad).await;
}

#[tokio::test]
async fn test_the_workers_report_after_the_warning_keeps_the_browser() {
    a_sign_of_life_after_the_warning_keeps_the_browser(SignOfLife::WorkerReport).await;
}

/// How Bo's browser shows it is alive.
enum SignOfLife {
    /// The chat opened: its page's `init`.
    PageLoad,
    /// A push arrived: its worker's report.
    WorkerReport,
}

/// Bo, warned, shows `sign` of life a day later: he is neither removed when his grace
/// would have run out nor warned again until his new silence passes `--stale-after`.
async fn a_sign_of_life_after_the_warning_keeps_the_browser(sign: SignOfLife) {
    let clock = Arc::new(ManualClock::new());
    let (_store, chat, joined) = ann_and_bo(&clock).await;
    let warned_at = bo_is_warned(&chat, &clock, joined).await;
    let seen = warned_at + DAY;
    clock.set(seen);
    match sign {
        SignOfLife::PageLoad => drop(chat.reopen(join_request("Bo", 2), HOME).await.unwrap()),
        SignOfLife::WorkerReport => chat.alive(credentials(2)).await.unwrap(),
    }
    let bo = chat
        .store
        .device(&credentials(2).endpoint)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((bo.last_seen, bo.stale_warned), (seen, None));
    clock.set(seen + GRACE);
    assert_eq!(chat.prune_stale().await.unwrap(), Pruned::default());
    ann_opens_the_chat(&chat, &clock, seen + STALE_AFTER).await;
    clock.set(seen + STALE_AFTER + HOUR);
    let pruned = chat.prune_stale().await.unwrap();
    assert_eq!(pruned.warned.len(), 1, "{pruned:?}");
    assert_eq!(endpoints(&pruned.warned[0]), [credentials(2).endpoint]);
}

#[tokio::test]
async fn test_a_sign_of_life_is_written_at_most_every_six_hours() {
    let clock = Arc::new(ManualClock::new());
    let (_store, chat, joined) = ann_and_bo(&clock).await;
    let last_seen = || async {
        let ann = chat.store.device(&credentials(1).endpoint).await.unwrap();
        ann.unwrap().last_seen
    };
    assert_eq!(last_seen().await, joined);
    clock.set(joined + 5 * HOUR);
    chat.alive(credentials(1)).await.unwrap();
    assert_eq!(last_seen().await, joined);
    clock.set(joined + 6 * HOUR);
    chat.alive(credentials(1)).await.unwrap();
    assert_eq!(last_seen().await, joined + 6 * HOUR);
}

#[tokio::test]
async fn test_the_report_of_a_browser_that_is_no_member_is_refused() {
    let clock = Arc::new(ManualClock::new());
    let (_store, chat, _joined) = ann_and_bo(&clock).await;
    assert!(matches!(
        chat.alive(credentials(3)).await,
        Err(ChatError::NotMember(_))
    ));
    let mut wrong = credentials(1);
    wrong.auth = credentials(2).auth;
    assert!(matches!(
        chat.alive(wrong).await,
        Err(ChatError::WrongSecret)
    ));
}

#[tokio::test]
async fn test_a_member_keeps_its_name_while_one_of_its_browsers_is_alive() {
    let clock = Arc::new(ManualClock::new());
    let (_store, chat, joined) = ann_and_bo(&clock).await;
    // Bo's second browser (3) joins from a device code and stays alive.
    let code = chat.device_code(credentials(2)).await.unwrap();
    let second = app::wire::SubscribeRequest {
        device_code: Some(code.code),
        ..join_request("", 3)
    };
    chat.subscribe(second, HOME).await.unwrap();
    let stay_alive = |day: u64| {
        clock.set(joined + day * DAY);
        async {
            chat.alive(credentials(1)).await.unwrap();
            chat.alive(credentials(3)).await.unwrap();
        }
    };
    stay_alive(30).await;
    stay_alive(59).await;
    // The device code's request was Bo's first browser's last sign of life.
    let warned_at = joined + STALE_AFTER + HOUR;
    clock.set(warned_at);
    let pruned = chat.prune_stale().await.unwrap();
    assert_eq!(endpoints(&pruned.warned[0]), [credentials(2).endpoint]);
    stay_alive(66).await;
    clock.set(warned_at + GRACE);
    let pruned = chat.prune_stale().await.unwrap();
    assert_eq!(pruned, Pruned::default(), "Bo is still in: nobody is told");
    assert_eq!(
        chat.store.device(&credentials(2).endpoint).await.unwrap(),
        None
    );
    assert_eq!(chat.room().await.unwrap().members, ["Ann", "Bo"]);
}

#[tokio::test]
async fn test_with_pruning_off_nobody_is_pruned() {
    let clock = Arc::new(ManualClock::new());
    let joined = clock.now_millis();
    let test = TestStore::new().await;
    let rules = ChatRules {
        stale_after: None,
        ..ChatRules::default()
    };
    let chat = Chat::with_clock(Arc::clone(&test.store), rules, clock.clone());
    chat.subscribe(join_request("Ann", 1), HOME).await.unwrap();
    clock.set(joined + 10 * 365 * DAY);
    assert_eq!(chat.prune_stale().await.unwrap(), Pruned::default());
    assert_eq!(DEFAULT_STALE_AFTER.as_millis() as u64, STALE_AFTER);
}

#[test]
fn test_staleness_follows_the_silence_and_the_warning() {
    let mut device = crate::store::testing::ann();
    device.last_seen = 1_000;
    let stale_after = Duration::from_millis(STALE_AFTER);
    let at = |now| staleness(&device, now, stale_after);
    assert_eq!(at(1_000 + STALE_AFTER), Staleness::Alive);
    assert_eq!(at(1_001 + STALE_AFTER), Staleness::Warn);
    device.stale_warned = Some(2_000 + STALE_AFTER);
    let at = |now| staleness(&device, now, stale_after);
    assert_eq!(at(2_000 + STALE_AFTER + GRACE - 1), Staleness::Warned);
    assert_eq!(at(2_000 + STALE_AFTER + GRACE), Staleness::Remove);
}
