//! The chat's rules, checked on the store this run tests (see `store::tests`).

use std::net::IpAddr;

// Real P-256 points: RFC 8291 Appendix A's two public keys.
use localpush::crypto::rfc8291_example::{
    RECEIVER_PUBLIC_KEY as KEY_A, SENDER_PUBLIC_KEY as KEY_B,
};

use app::{
    budget::PUSH_PAYLOAD_LIMIT,
    wire::{
        PostLineRequest, PushMessage, PushSubscription, ResubscribeRequest, SubscribeRequest,
        SubscriptionKeys,
    },
};

use super::*;
use crate::{
    model::{clock::ManualClock, fan_out::ResolvedFanOut, subscription},
    store::testing::TestStore,
};

pub(super) const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 7));

fn rules() -> ChatRules {
    ChatRules {
        endpoints: EndpointPolicy::default(),
        history_limit: 50,
        chat_lines_per_minute: 3,
        members_per_address: 3,
        join_passphrase: None,
        stale_after: Some(DEFAULT_STALE_AFTER),
    }
}

async fn chat() -> (TestStore, Chat) {
    chat_with(rules()).await
}

/// A chat on a fresh store of the kind this run tests (see `store::tests`).
async fn chat_with(rules: ChatRules) -> (TestStore, Chat) {
    let test = TestStore::new().await;
    let chat = Chat::new(Arc::clone(&test.store), rules);
    (test, chat)
}

/// A chat whose time is `clock`'s.
pub(super) async fn chat_at(clock: Arc<ManualClock>) -> (TestStore, Chat) {
    let test = TestStore::new().await;
    let chat = Chat::with_clock(Arc::clone(&test.store), rules(), clock);
    (test, chat)
}

fn auth(n: u8) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([n; 16])
}

pub(super) fn join_request(name: &str, n: u8) -> SubscribeRequest {
    SubscribeRequest {
        name: name.into(),
        subscription: PushSubscription {
            endpoint: format!("https://push.example.com/{n}"),
            keys: SubscriptionKeys {
                p256dh: if n % 2 == 0 { KEY_A } else { KEY_B }.into(),
                auth: auth(n),
            },
        },
        passphrase: None,
        device_code: None,
    }
}

pub(super) fn credentials(n: u8) -> MemberCredentials {
    MemberCredentials {
        endpoint: format!("https://push.example.com/{n}"),
        auth: auth(n),
    }
}

pub(super) fn left(names: &[&str]) -> PushMessage {
    PushMessage::Left {
        names: names.iter().map(|&name| name.to_owned()).collect(),
    }
}

pub(super) fn endpoints(broadcast: &FanOut) -> Vec<String> {
    broadcast
        .recipients()
        .endpoints()
        .map(str::to_owned)
        .collect()
}

fn notice_endpoints(notice: &ResolvedFanOut) -> Vec<String> {
    notice
        .recipients
        .iter()
        .map(|r| r.endpoint.clone())
        .collect()
}

#[tokio::test]
async fn test_a_join_is_pushed_to_everyone_including_the_newcomer() {
    let (_store, chat) = chat().await;
    chat.subscribe(join_request("Ann", 1), HOME).await.unwrap();
    let (room, broadcast) = chat
        .subscribe(join_request("  Bo ", 2), HOME)
        .await
        .unwrap();
    assert_eq!(room.members, ["Ann", "Bo"]);
    let broadcast = broadcast.unwrap();
    assert_eq!(
        *broadcast.message(),
        PushMessage::Joined { name: "Bo".into() }
    );
    assert_eq!(broadcast.recipients().len(), 2);
}

#[tokio::test]
async fn test_subscribing_twice_the_same_way_tells_nobody() {
    let (_store, chat) = chat().await;
    chat.subscribe(join_request("Ann", 1), HOME).await.unwrap();
    let (room, broadcast) = chat.subscribe(join_request("Ann", 1), HOME).await.unwrap();
    assert!(broadcast.is_none());
    assert_eq!(room.members, ["Ann"]);
    let renamed = chat.subscribe(join_request("Annie", 1), HOME).await;
    assert!(matches!(renamed, Err(ChatError::AlreadyMember(name)) if name == "Ann"));
}

#[tokio::test]
async fn test_a_taken_name_is_refused_whatever_its_case() {
    let (_store, chat) = chat().await;
    chat.subscribe(join_request("Ann", 1), HOME).await.unwrap();
    let clash = chat.subscribe(join_request("aNN", 2), HOME).await;
    assert!(matches!(clash, Err(ChatError::NameTaken { .. })));
    assert_eq!(chat.room().await.unwrap().members, ["Ann"]);
}

#[tokio::test]
async fn test_an_endpoint_replayed_with_another_secret_is_refused() {
    let (_store, chat) = chat().await;
    chat.subscribe(join_request("Ann", 1), HOME).await.unwrap();
    let mut replay = join_request("Mallory", 3);
    replay.subscription.endpoint = credentials(1).endpoint;
    assert!(matches!(
        chat.subscribe(replay.clone(), HOME).await,
        Err(ChatError::WrongSecret)
    ));
    assert!(matches!(
        chat.reopen(replay, HOME).await,
        Err(ChatError::WrongSecret)
    ));
    assert_eq!(chat.room().await.unwrap().members, ["Ann"]);
}

#[tokio::test]
async fn test_init_restores_a_member_and_never_makes_one() {
    let (_store, chat) = chat().await;
    // A browser the chat lost (a store reset, say) is told so, and stays out.
    for _ in 0..2 {
        assert!(matches!(
            chat.reopen(join_request("Ann", 1), HOME).await,
            Err(ChatError::NotMember(NotMember::NotMember))
        ));
    }
    assert!(chat.room().await.unwrap().members.is_empty());
    chat.subscribe(join_request("Ann", 1), HOME).await.unwrap();
    let room = chat.reopen(join_request("Ann", 1), HOME).await.unwrap();
    assert_eq!(room.you.as_deref(), Some("Ann"));
}

#[tokio::test]
async fn test_chat_lines_carry_the_stored_name_and_reach_everyone() {
    let (_store, chat) = chat().await;
    chat.subscribe(join_request("Ann", 1), HOME).await.unwrap();
    chat.subscribe(join_request("Bo", 2), HOME).await.unwrap();
    let request = PostLineRequest {
        member: credentials(2),
        msg: "hello".into(),
    };
    let (line, broadcast) = chat.post_line(request).await.unwrap();
    assert_eq!(line.name, "Bo");
    assert_eq!(*broadcast.message(), PushMessage::Line(line.clone()));
    assert_eq!(endpoints(&broadcast).len(), 2);
    assert_eq!(chat.room().await.unwrap().history, vec![line]);
}

#[tokio::test]
async fn test_only_the_secret_holder_can_speak_or_leave() {
    let (_store, chat) = chat().await;
    chat.subscribe(join_request("Ann", 1), HOME).await.unwrap();
    let forged = MemberCredentials {
        endpoint: credentials(1).endpoint,
        auth: auth(9),
    };
    let post = PostLineRequest {
        member: forged.clone(),
        msg: "hi".into(),
    };
    assert!(matches!(
        chat.post_line(post).await,
        Err(ChatError::WrongSecret)
    ));
    assert!(matches!(
        chat.unsubscribe(forged).await,
        Err(ChatError::WrongSecret)
    ));
    assert!(matches!(
        chat.unsubscribe(credentials(5)).await,
        Err(ChatError::NotMember(NotMember::NotMember))
    ));
    assert_eq!(chat.room().await.unwrap().members, ["Ann"]);
    assert!(chat.room().await.unwrap().history.is_empty());
}

#[tokio::test]
async fn test_a_replaced_subscription_keeps_the_member_and_its_name() {
    let (_store, chat) = chat().await;
    chat.subscribe(join_request("Ann", 1), HOME).await.unwrap();
    chat.subscribe(join_request("Bo", 2), HOME).await.unwrap();
    let fresh = join_request("ignored", 3).subscription;
    let request = ResubscribeRequest {
        member: credentials(1),
        subscription: fresh.clone(),
    };
    let room = chat.resubscribe(request.clone(), HOME).await.unwrap();
    assert_eq!(room.members, ["Ann", "Bo"]);
    // The old credentials are spent; the new ones speak as Ann.
    assert!(matches!(
        chat.resubscribe(request, HOME).await,
        Err(ChatError::NotMember(NotMember::NotMember))
    ));
    let line = PostLineRequest {
        member: credentials(3),
        msg: "still me".into(),
    };
    assert_eq!(chat.post_line(line).await.unwrap().0.name, "Ann");
    // Nobody can move onto another member's subscription.
    let stolen = ResubscribeRequest {
        member: credentials(3),
        subscription: join_request("x", 2).subscription,
    };
    assert!(matches!(
        chat.resubscribe(stolen, HOME).await,
        Err(ChatError::SubscriptionTaken)
    ));
    let forged = ResubscribeRequest {
        member: MemberCredentials {
            endpoint: credentials(2).endpoint,
            auth: auth(9),
        },
        subscription: fresh,
    };
    assert!(matches!(
        chat.resubscribe(forged, HOME).await,
        Err(ChatError::WrongSecret)
    ));
}

#[tokio::test]
async fn test_leaving_tells_only_those_who_remain() {
    let (_store, chat) = chat().await;
    chat.subscribe(join_request("Ann", 1), HOME).await.unwrap();
    chat.subscribe(join_request("Bo", 2), HOME).await.unwrap();
    let queued = chat.unsubscribe(credentials(1)).await.unwrap();
    let [broadcast] = queued.as_slice() else {
        panic!("Ann's only device left: one push, not {queued:?}");
    };
    assert_eq!(*broadcast.message(), left(&["Ann"]));
    assert_eq!(endpoints(broadcast), [credentials(2).endpoint]);
    assert_eq!(chat.room().await.unwrap().members, ["Bo"]);
}

#[tokio::test]
async fn test_a_muted_member_gets_no_chat_lines_for_an_hour_but_still_hears_of_joins() {
    let clock = Arc::new(ManualClock::new());
    let (store, chat) = chat_at(Arc::clone(&clock)).await;
    chat.subscribe(join_request("Ann", 1), HOME).await.unwrap();
    chat.subscribe(join_request("Bo", 2), HOME).await.unwrap();
    let before = clock.now_millis();
    let until = chat.mute(credentials(1)).await.unwrap();
    assert!(until >= before + MUTE_FOR.as_millis() as u64);

    let line = PostLineRequest {
        member: credentials(2),
        msg: "anyone?".into(),
    };
    let (line, broadcast) = chat.post_line(line).await.unwrap();
    assert_eq!(endpoints(&broadcast), [credentials(2).endpoint]);
    let (_, join) = chat.subscribe(join_request("Cy", 3), HOME).await.unwrap();
    assert_eq!(join.unwrap().recipients().len(), 3);
    // What waits in the store to be sent skips Ann too.
    let queue = store.store.contents().await.unwrap().fan_outs;
    let queued = queue
        .iter()
        .find(|fan_out| fan_out.message() == &PushMessage::Line(line.clone()))
        .expect("the line's fan-out is queued");
    assert_eq!(endpoints(queued), [credentials(2).endpoint]);

    // The mute ends when the hour does.
    let say = |msg: &str| PostLineRequest {
        member: credentials(2),
        msg: msg.into(),
    };
    clock.set(until - 1);
    let (_, later) = chat.post_line(say("still there?")).await.unwrap();
    assert_eq!(later.recipients().len(), 2);
    clock.set(until);
    let (_, after) = chat.post_line(say("and now?")).await.unwrap();
    assert_eq!(after.recipients().len(), 3);
}

#[tokio::test]
async fn test_only_the_secret_holder_can_mute() {
    let (_store, chat) = chat().await;
    chat.subscribe(join_request("Ann", 1), HOME).await.unwrap();
    let forged = MemberCredentials {
        endpoint: credentials(1).endpoint,
        auth: auth(9),
    };
    assert!(matches!(
        chat.mute(forged).await,
        Err(ChatError::WrongSecret)
    ));
    assert!(matches!(
        chat.mute(credentials(5)).await,
        Err(ChatError::NotMember(NotMember::NotMember))
    ));
    let line = PostLineRequest {
        member: credentials(1),
        msg: "still hearing".into(),
    };
    assert_eq!(endpoints(&chat.post_line(line).await.unwrap().1).len(), 1);
}

#[tokio::test]
async fn test_a_member_posting_too_fast_is_told_to_wait_and_nothing_is_stored() {
    let (_store, chat) = chat().await;
    chat.subscribe(join_request("Ann", 1), HOME).await.unwrap();
    for n in 0..3 {
        let line = PostLineRequest {
            member: credentials(1),
            msg: format!("line {n}"),
        };
        chat.post_line(line).await.unwrap();
    }
    let one_more = PostLineRequest {
        member: credentials(1),
        msg: "one more".into(),
    };
    let refused = chat.post_line(one_more).await;
    assert!(
        matches!(refused, Err(ChatError::TooMany { wait, .. }) if wait <= Duration::from_secs(60))
    );
    assert_eq!(chat.room().await.unwrap().history.len(), 3);
}

#[tokio::test]
async fn test_messages_must_fit_the_push_budget() {
    let (_store, chat) = chat().await;
    chat.subscribe(join_request("Ann", 1), HOME).await.unwrap();
    let empty = PostLineRequest {
        member: credentials(1),
        msg: "  ".into(),
    };
    assert!(matches!(
        chat.post_line(empty).await,
        Err(ChatError::EmptyMessage)
    ));
    let huge = PostLineRequest {
        member: credentials(1),
        msg: "x".repeat(PUSH_PAYLOAD_LIMIT),
    };
    assert!(matches!(
        chat.post_line(huge).await,
        Err(ChatError::MessageTooLong(_))
    ));
    let nul = PostLineRequest {
        member: credentials(1),
        msg: "a\0b".into(),
    };
    assert!(matches!(
        chat.post_line(nul).await,
        Err(ChatError::NulInMessage)
    ));
    assert!(matches!(
        chat.notice(None, "a\0b").await,
        Err(ChatError::NulInMessage)
    ));
    assert!(chat.room().await.unwrap().history.is_empty());
}

#[tokio::test]
async fn test_one_address_can_hold_only_its_share_of_members() {
    let (_store, chat) = chat().await;
    for (n, name) in [(1, "Ann"), (2, "Bo"), (3, "Cy")] {
        chat.subscribe(join_request(name, n), HOME).await.unwrap();
    }
    let elsewhere = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 1));
    assert!(matches!(
        chat.subscribe(join_request("Di", 4), HOME).await,
        Err(ChatError::TooManyFromAddress(3))
    ));
    assert!(matches!(
        chat.reopen(join_request("Di", 4), HOME).await,
        Err(ChatError::NotMember(NotMember::NotMember))
    ));
    // A member already in is never refused, and a leave frees a place.
    chat.subscribe(join_request("Ann", 1), HOME).await.unwrap();
    chat.reopen(join_request("Ann", 1), HOME).await.unwrap();
    chat.subscribe(join_request("Di", 4), elsewhere)
        .await
        .unwrap();
    chat.unsubscribe(credentials(1)).await.unwrap();
    chat.subscribe(join_request("Eve", 5), HOME).await.unwrap();
}

#[tokio::test]
async fn test_the_operator_removes_and_bans_by_name_whatever_its_case() {
    let (_store, chat) = chat().await;
    chat.subscribe(join_request("Ann", 1), HOME).await.unwrap();
    chat.subscribe(join_request("Bo", 2), HOME).await.unwrap();
    let queued = chat.remove_named("ANN", true).await.unwrap();
    let [to_ann, to_the_others] = queued.as_slice() else {
        panic!("a push to Ann's browser and one to the others, not {queued:?}");
    };
    assert_eq!(*to_ann.message(), PushMessage::Removed { banned: true });
    assert_eq!(endpoints(to_ann), [credentials(1).endpoint]);
    assert_eq!(*to_the_others.message(), left(&["Ann"]));
    assert_eq!(endpoints(to_the_others), [credentials(2).endpoint]);
    assert!(matches!(
        chat.subscribe(join_request("ann", 3), HOME).await,
        Err(ChatError::Banned(_))
    ));
    assert!(matches!(
        chat.reopen(join_request("Ann", 1), HOME).await,
        Err(ChatError::NotMember(NotMember::Banned))
    ));
    assert!(matches!(
        chat.remove_named("Cy", false).await,
        Err(ChatError::NoSuchMember(_))
    ));
    assert!(matches!(
        chat.unban("Bo").await,
        Err(ChatError::NotBanned(_))
    ));
    chat.unban("ann").await.unwrap();
    chat.subscribe(join_request("Ann", 1), HOME).await.unwrap();
    // Removed without a ban, a name may come back.
    chat.remove_named("Bo", false).await.unwrap();
    chat.subscribe(join_request("Bo", 2), HOME).await.unwrap();
}

#[tokio::test]
async fn test_a_notice_goes_to_one_member_or_to_everyone() {
    let (_store, chat) = chat().await;
    chat.subscribe(join_request("Ann", 1), HOME).await.unwrap();
    chat.subscribe(join_request("Bo", 2), HOME).await.unwrap();
    assert_eq!(
        notice_endpoints(&chat.notice(None, " maintenance at 5 ").await.unwrap()).len(),
        2
    );
    let to_bo = chat.notice(Some("bo"), "hi Bo").await.unwrap();
    assert_eq!(notice_endpoints(&to_bo), [credentials(2).endpoint]);
    assert_eq!(
        to_bo.message,
        PushMessage::Notice {
            text: "hi Bo".into()
        }
    );
    assert!(matches!(
        chat.notice(None, "  ").await,
        Err(ChatError::EmptyMessage)
    ));
    assert!(matches!(
        chat.notice(Some("Cy"), "hi").await,
        Err(ChatError::NoSuchMember(_))
    ));
    let long = "x".repeat(PUSH_PAYLOAD_LIMIT);
    assert!(matches!(
        chat.notice(None, &long).await,
        Err(ChatError::MessageTooLong(_))
    ));
    assert!(chat.room().await.unwrap().history.is_empty());
}

#[tokio::test]
async fn test_newcomers_need_the_passphrase_members_do_not() {
    let rules = ChatRules {
        join_passphrase: Some("open sesame".into()),
        ..ChatRules::default()
    };
    let (_store, chat) = chat_with(rules).await;
    assert!(chat.join_rules().passphrase);
    assert!(matches!(
        chat.public_room().await,
        Err(ChatError::MembersOnly)
    ));
    let with = |name: &str, n: u8, passphrase: Option<&str>| SubscribeRequest {
        passphrase: passphrase.map(str::to_owned),
        ..join_request(name, n)
    };
    for wrong in [None, Some(""), Some("open sesamE")] {
        assert!(matches!(
            chat.subscribe(with("Ann", 1, wrong), HOME).await,
            Err(ChatError::WrongPassphrase)
        ));
    }
    chat.subscribe(with("Ann", 1, Some(" open sesame ")), HOME)
        .await
        .unwrap();
    // A member coming back (a reload) is not asked again.
    chat.reopen(with("Ann", 1, None), HOME).await.unwrap();
    chat.subscribe(with("Ann", 1, None), HOME).await.unwrap();
    assert!(matches!(
        chat.reopen(with("Bo", 2, None), HOME).await,
        Err(ChatError::NotMember(NotMember::NotMember))
    ));
}

#[tokio::test]
async fn test_a_device_code_adds_a_browser_to_the_member_who_made_it() {
    let (_store, chat) = chat().await;
    chat.subscribe(join_request("Ann", 1), HOME).await.unwrap();
    chat.subscribe(join_request("Bo", 2), HOME).await.unwrap();
    let code = chat.device_code(credentials(1)).await.unwrap().code;
    assert_eq!(code.len(), 14, "{code}");
    let typed = SubscribeRequest {
        device_code: Some(code.to_lowercase().replace('-', " ")),
        ..join_request("ignored", 3)
    };
    let (room, broadcast) = chat.subscribe(typed.clone(), HOME).await.unwrap();
    assert!(broadcast.is_none(), "nobody new arrived");
    assert_eq!(room.you.as_deref(), Some("Ann"));
    assert_eq!(room.members, ["Ann", "Bo"]);
    // Once only (tried from another address: this one has its three devices).
    let elsewhere = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 1));
    let again = SubscribeRequest {
        device_code: typed.device_code.clone(),
        ..join_request("ignored", 5)
    };
    assert!(matches!(
        chat.subscribe(again, elsewhere).await,
        Err(ChatError::UnknownDeviceCode)
    ));

    // Both of Ann's browsers get what is said, and notices to her.
    let request = PostLineRequest {
        member: credentials(3),
        msg: "from my phone".into(),
    };
    let (line, to_all) = chat.post_line(request).await.unwrap();
    assert_eq!(line.name, "Ann");
    assert_eq!(to_all.recipients().len(), 3);
    assert_eq!(
        chat.notice(Some("ann"), "hi")
            .await
            .unwrap()
            .recipients
            .len(),
        2
    );

    // Leaving from one browser leaves only that one.
    assert!(chat.unsubscribe(credentials(1)).await.unwrap().is_empty());
    assert_eq!(chat.room().await.unwrap().members, ["Ann", "Bo"]);
    let last = chat.unsubscribe(credentials(3)).await.unwrap();
    assert_eq!(*last[0].message(), left(&["Ann"]));
    assert_eq!(chat.room().await.unwrap().members, ["Bo"]);
    assert!(matches!(
        chat.device_code(credentials(1)).await,
        Err(ChatError::NotMember(NotMember::NotMember))
    ));
}

#[tokio::test]
async fn test_muting_from_one_browser_mutes_the_member_on_all_of_them() {
    let (_store, chat) = chat().await;
    chat.subscribe(join_request("Ann", 1), HOME).await.unwrap();
    chat.subscribe(join_request("Bo", 2), HOME).await.unwrap();
    let code = chat.device_code(credentials(1)).await.unwrap().code;
    let phone = SubscribeRequest {
        device_code: Some(code),
        ..join_request("", 3)
    };
    chat.subscribe(phone, HOME).await.unwrap();
    chat.mute(credentials(3)).await.unwrap();
    let line = PostLineRequest {
        member: credentials(2),
        msg: "anyone?".into(),
    };
    let (_, broadcast) = chat.post_line(line).await.unwrap();
    assert_eq!(endpoints(&broadcast), [credentials(2).endpoint]);
}

/// Ann (1), Bo (2) and Cy (3) are members; Cy also on a second browser (4).
async fn with_three() -> (TestStore, Chat) {
    let (store, chat) = chat_with(ChatRules {
        members_per_address: 10,
        ..ChatRules::default()
    })
    .await;
    for (name, n) in [("Ann", 1), ("Bo", 2), ("Cy", 3)] {
        chat.subscribe(join_request(name, n), HOME).await.unwrap();
    }
    let code = chat.device_code(credentials(3)).await.unwrap().code;
    let second = SubscribeRequest {
        device_code: Some(code),
        ..join_request("", 4)
    };
    chat.subscribe(second, HOME).await.unwrap();
    (store, chat)
}

#[tokio::test]
async fn test_a_removed_member_is_told_and_cannot_come_back_by_init_or_device_code() {
    let (store, chat) = with_three().await;
    let code = chat.device_code(credentials(3)).await.unwrap().code;
    let queued = chat.remove_named("cy", false).await.unwrap();
    assert_eq!(*queued[0].message(), PushMessage::Removed { banned: false });
    let mut own = endpoints(&queued[0]);
    own.sort();
    assert_eq!(own, [credentials(3).endpoint, credentials(4).endpoint]);
    assert_eq!(*queued[1].message(), left(&["Cy"]));
    assert_eq!(
        queued.len(),
        2,
        "one push to Cy's browsers, one to the others"
    );

    for n in [3, 4] {
        assert!(matches!(
            chat.reopen(join_request("Cy", n), HOME).await,
            Err(ChatError::NotMember(NotMember::Removed))
        ));
    }
    let with_code = SubscribeRequest {
        device_code: Some(code),
        ..join_request("", 5)
    };
    assert!(matches!(
        chat.subscribe(with_code, HOME).await,
        Err(ChatError::UnknownDeviceCode)
    ));
    assert_eq!(chat.room().await.unwrap().members, ["Ann", "Bo"]);
    // Removed without a ban, Cy may join again, and everyone hears of it.
    let (_, joined) = chat.subscribe(join_request("Cy", 6), HOME).await.unwrap();
    assert_eq!(joined.unwrap().recipients().len(), 3);
    let fan_outs = store.store.contents().await.unwrap().fan_outs;
    assert!(fan_outs.iter().all(
        |fan_out| *fan_out.message() != joined_message("Cy") || fan_out.recipients().len() == 3
    ));
}

fn joined_message(name: &str) -> PushMessage {
    PushMessage::Joined { name: name.into() }
}

#[tokio::test]
async fn test_a_ban_holds_on_every_way_in_and_for_look_alike_names() {
    let (_store, chat) = with_three().await;
    let code = chat.device_code(credentials(1)).await.unwrap().code;
    chat.remove_named("Ann", true).await.unwrap();
    for look_alike in ["Ann", "ANN", "\u{410}nn", "\u{FF21}nn"] {
        assert!(
            matches!(
                chat.subscribe(join_request(look_alike, 7), HOME).await,
                Err(ChatError::Banned(_))
            ),
            "{look_alike:?}"
        );
    }
    let with_code = SubscribeRequest {
        device_code: Some(code),
        ..join_request("", 8)
    };
    assert!(chat.subscribe(with_code, HOME).await.is_err());
    assert!(matches!(
        chat.reopen(join_request("Ann", 1), HOME).await,
        Err(ChatError::NotMember(NotMember::Banned))
    ));
    let renewal = ResubscribeRequest {
        member: credentials(1),
        subscription: join_request("", 9).subscription,
    };
    assert!(matches!(
        chat.resubscribe(renewal, HOME).await,
        Err(ChatError::NotMember(NotMember::Banned))
    ));
    assert_eq!(chat.room().await.unwrap().members, ["Bo", "Cy"]);
}

#[tokio::test]
async fn test_gone_subscriptions_end_memberships_in_one_push_per_batch_of_names() {
    let (_store, chat) = with_three().await;
    // Bo's browser and one of Cy's two went.
    let gone: Vec<Subscription> = [2, 4]
        .into_iter()
        .map(|n| stored(&join_request("", n)))
        .collect();
    let queued = chat.subscriptions_gone(&gone).await.unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(*queued[0].message(), left(&["Bo"]));
    assert_eq!(chat.room().await.unwrap().members, ["Ann", "Cy"]);
    // A purge: everyone's browsers at once; nobody is left to tell.
    let everyone: Vec<Subscription> = [1, 3]
        .into_iter()
        .map(|n| stored(&join_request("", n)))
        .collect();
    assert!(chat.subscriptions_gone(&everyone).await.unwrap().is_empty());
    assert!(chat.room().await.unwrap().members.is_empty());
}

/// The subscription in `request` as the store keeps it.
fn stored(request: &SubscribeRequest) -> Subscription {
    subscription::validate(&request.subscription, &EndpointPolicy::default()).unwrap()
}

#[tokio::test]
async fn test_a_look_alike_name_is_refused_naming_the_member_it_looks_like() {
    let (_store, chat) = chat().await;
    chat.subscribe(join_request("bob", 1), HOME).await.unwrap();
    chat.subscribe(join_request("Al", 2), HOME).await.unwrap();
    for (look_alike, holder) in [("b\u{43e}b", "bob"), ("BOB", "bob"), ("AI", "Al")] {
        let refused = chat.subscribe(join_request(look_alike, 3), HOME).await;
        let Err(error @ ChatError::NameTaken { .. }) = refused else {
            panic!("{look_alike:?} was let in: {refused:?}");
        };
        assert!(
            error.to_string().contains(&format!("{holder:?}")),
            "{error}"
        );
    }
    chat.subscribe(join_request("\u{2764}\u{FE0F} Ann", 3), HOME)
        .await
        .unwrap();
}

#[tokio::test]
async fn test_passphrase_tries_past_the_allowance_are_refused_unread() {
    let rules = ChatRules {
        join_passphrase: Some("open sesame".into()),
        ..ChatRules::default()
    };
    let (_store, chat) = chat_with(rules).await;
    let guess = |n: u8, passphrase: &str| SubscribeRequest {
        passphrase: Some(passphrase.into()),
        ..join_request("Mallory", n)
    };
    let allowance = Limits::PASSPHRASE_TRIES.burst;
    for n in 0..allowance {
        assert!(matches!(
            chat.subscribe(guess(n as u8, "guess"), HOME).await,
            Err(ChatError::WrongPassphrase)
        ));
    }
    // Past the allowance even the right passphrase is not looked at.
    assert!(matches!(
        chat.subscribe(guess(99, "open sesame"), HOME).await,
        Err(ChatError::TooMany { .. })
    ));
    let elsewhere = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 1));
    chat.subscribe(guess(98, "open sesame"), elsewhere)
        .await
        .unwrap();
}

#[tokio::test]
async fn test_the_chat_line_allowance_is_the_members_on_all_its_browsers() {
    let (_store, chat) = chat().await;
    chat.subscribe(join_request("Ann", 1), HOME).await.unwrap();
    let code = chat.device_code(credentials(1)).await.unwrap().code;
    let second = SubscribeRequest {
        device_code: Some(code),
        ..join_request("", 2)
    };
    chat.subscribe(second, HOME).await.unwrap();
    let line = |n: u8| PostLineRequest {
        member: credentials(n),
        msg: "hi".into(),
    };
    for n in [1, 2, 1] {
        chat.post_line(line(n)).await.unwrap();
    }
    assert!(matches!(
        chat.post_line(line(2)).await,
        Err(ChatError::TooMany {
            what: "messages",
            ..
        })
    ));
}
