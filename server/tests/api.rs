//! The JSON API end to end: the real `pushchat` binary on a temporary data dir, talking
//! to the local push service on loopback, with virtual members whose pushes the service
//! decrypts. Every wait has a deadline; nothing sleeps a fixed time.

mod support;

use support::*;

use app::{
    budget::{chat_line_excess, MAX_CHAT_URL_LEN, PUSH_BODY_LIMIT, PUSH_PAYLOAD_LIMIT},
    names::MAX_NAME_CHARS,
    wire::{ChatLine, HistoryPage, Muted, PostLineRequest, PushMessage, RoomState},
};
use end2end::{
    chat_body, credentials, eventually, join_body, joined, left, messages, received, sample,
    Fixture, Server, ADMIN_TOKEN, DEADLINE, SUBJECT,
};
use localpush::{Fault, ReceivedPush, VirtualSubscription};
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test]
async fn test_joins_and_chat_lines_reach_every_member_encrypted_for_each() {
    let fx = Fixture::new(PUSHCHAT).await;
    let [ann, bo, cy] = fx.members(["Ann", "Bo", "Cy"]).await;
    let pushes = fx.pushes();

    // Each member hears its own join and every later one.
    let ann_got = received(&pushes, &ann, 3).await;
    assert_eq!(
        messages(&ann_got),
        vec![joined("Ann"), joined("Bo"), joined("Cy")]
    );
    assert_eq!(
        messages(&received(&pushes, &bo, 2).await),
        vec![joined("Bo"), joined("Cy")]
    );
    assert_eq!(
        messages(&received(&pushes, &cy, 1).await),
        vec![joined("Cy")]
    );
    let join = &ann_got[0];
    assert_eq!(join.vapid_subject, SUBJECT);
    assert_eq!(join.topic.as_deref(), Some("members"));
    assert!(join.ttl > 0);

    // The request carries no name: the line goes out under the sender's stored name.
    let line = fx.server.chat(&bo, "hello <b>all</b>").await;
    assert_eq!(
        (line.name.as_str(), line.msg.as_str()),
        ("Bo", "hello <b>all</b>")
    );
    for (member, before) in [(&ann, 3), (&bo, 2), (&cy, 1)] {
        let got = received(&pushes, member, before + 1).await;
        let last = got.iter().find_map(|push| match push.message() {
            Some(PushMessage::Line(line)) => Some((line, push.urgency.clone())),
            _ => None,
        });
        assert_eq!(last, Some((line.clone(), Some("high".into()))));
    }
}

#[tokio::test]
async fn test_init_returns_the_room_and_pushes_nothing() {
    let fx = Fixture::new(PUSHCHAT).await;
    let [ann, bo] = fx.members(["Ann", "Bo"]).await;
    let pushes = fx.pushes();
    received(&pushes, &ann, 2).await;
    received(&pushes, &bo, 1).await;
    fx.server.chat(&ann, "first").await;
    received(&pushes, &bo, 2).await;

    let room = fx.server.init("Bo", &bo).await;
    assert_eq!(room.members, ["Ann", "Bo"]);
    assert_eq!(
        room.history
            .iter()
            .map(|l| l.msg.as_str())
            .collect::<Vec<_>>(),
        ["first"]
    );

    // Had init pushed, this line would not be each member's only new push.
    fx.server.chat(&bo, "second").await;
    received(&pushes, &ann, 4).await;
    received(&pushes, &bo, 3).await;
    assert_eq!(pushes.stats().await.unwrap().accepted, 7);
}

#[tokio::test]
async fn test_anyone_can_read_the_room_and_reading_pushes_nothing() {
    let fx = Fixture::new(PUSHCHAT).await;
    let [ann, bo] = fx.members(["Ann", "Bo"]).await;
    let line = fx.server.chat(&bo, "for the readers").await;
    let pushes = fx.pushes();
    received(&pushes, &ann, 3).await;
    received(&pushes, &bo, 2).await;

    let room: RoomState = fx.server.get_ok("/api/room").await;
    assert_eq!(room.members, ["Ann", "Bo"]);
    assert_eq!(room.history, vec![line]);
    fx.server.wait_for_fan_outs(3.0).await;
    assert_eq!(pushes.stats().await.unwrap().accepted, 5);
}

#[tokio::test]
async fn test_a_wrong_auth_can_neither_post_nor_unsubscribe() {
    let fx = Fixture::new(PUSHCHAT).await;
    let [ann, bo] = fx.members(["Ann", "Bo"]).await;
    let pushes = fx.pushes();
    received(&pushes, &ann, 2).await;
    received(&pushes, &bo, 1).await;
    let mut forged = credentials(&ann);
    forged.auth = bo.subscription.keys.auth.clone();

    let (status, _) = fx
        .server
        .post(
            "/api/chat",
            &json!(PostLineRequest {
                member: forged.clone(),
                msg: "I am Ann".into()
            }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = fx.server.post("/api/unsubscribe", &json!(forged)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let room = fx.server.init("Ann", &ann).await;
    assert_eq!(room.members, ["Ann", "Bo"]);
    assert!(room.history.is_empty());
    assert_eq!(pushes.stats().await.unwrap().accepted, 3);
}

#[tokio::test]
async fn test_unsubscribe_tells_the_others_and_removes_the_member() {
    let fx = Fixture::new(PUSHCHAT).await;
    let [ann, bo] = fx.members(["Ann", "Bo"]).await;
    let pushes = fx.pushes();
    received(&pushes, &ann, 2).await;
    received(&pushes, &bo, 1).await;

    let (status, _) = fx
        .server
        .post("/api/unsubscribe", &json!(credentials(&ann)))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let bo_got = received(&pushes, &bo, 2).await;
    assert!(messages(&bo_got).contains(&left(&["Ann"])));
    assert_eq!(fx.server.init("Bo", &bo).await.members, ["Bo"]);
    // Ann is not told of her own leaving, and may no longer speak.
    received(&pushes, &ann, 2).await;
    let (status, _) = fx
        .server
        .post("/api/chat", &chat_body(&ann, "still here?"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn test_a_member_whose_endpoint_answers_410_is_deleted() {
    let fx = Fixture::new(PUSHCHAT).await;
    let [ann, bo] = fx.members(["Ann", "Bo"]).await;
    let pushes = fx.pushes();
    received(&pushes, &bo, 1).await;
    pushes.expire(&bo.id).await.unwrap();

    fx.server.chat(&ann, "anyone?").await;
    eventually("Bo to be deleted", || async {
        let room = fx.server.init("Ann", &ann).await;
        (room.members == ["Ann"]).then_some(())
    })
    .await;
    assert_eq!(pushes.stats().await.unwrap().refused, 1);
}

#[tokio::test]
async fn test_members_history_and_keys_survive_a_killed_server() {
    let fx = Fixture::new(PUSHCHAT).await;
    let [ann, bo] = fx.members(["Ann", "Bo"]).await;
    let line = fx.server.chat(&ann, "remember me").await;
    let key = fx.server.vapid_key().await;
    if fx.home.database.is_none() {
        // On sled the key is a file of the data dir; on PostgreSQL, a row of the database.
        let key_file = fx.data_dir.path().join("vapid_private_key.pem");
        assert_eq!(mode(&key_file) & 0o777, 0o600);
    }
    // Let the fan-outs finish first: a line still in the outbox would be sent again after
    // the restart (another test covers that), and this one is about what the store keeps.
    fx.server.wait_for_fan_outs(3.0).await;

    let fx = fx.restarted().await;

    assert_eq!(fx.server.vapid_key().await, key);
    let room = fx.server.init("Bo", &bo).await;
    assert_eq!(room.members, ["Ann", "Bo"]);
    assert_eq!(room.history, vec![line.clone()]);
    let next = fx.server.chat(&bo, "back").await;
    assert!(next.id > line.id);
    // Pushes after the restart are still signed with the key the browsers subscribed with.
    let ann_got = received(&fx.pushes(), &ann, 4).await;
    assert!(messages(&ann_got).contains(&PushMessage::Line(next)));
}

#[tokio::test]
async fn test_a_line_cut_short_by_a_crash_is_sent_after_the_restart() {
    let fx = Fixture::new(PUSHCHAT).await;
    let [ann, bo, cy] = fx.members(["Ann", "Bo", "Cy"]).await;
    let pushes = fx.pushes();
    received(&pushes, &ann, 3).await;
    received(&pushes, &bo, 2).await;
    received(&pushes, &cy, 1).await;
    // The joins' fan-outs are off the queue (a kill before that would send them again).
    fx.server.wait_for_fan_outs(3.0).await;

    // Cy's push service goes dark: the fan-out cannot finish.
    pushes.set_fault(&cy.id, Some(Fault::Hang)).await.unwrap();
    let line = fx.server.chat(&ann, "do not lose me").await;
    // Two of the three pushes arrived: the server dies in the middle of the fan-out.
    received(&pushes, &ann, 4).await;
    received(&pushes, &bo, 3).await;
    pushes.set_fault(&cy.id, None).await.unwrap();
    let fx = fx.restarted().await;

    // The restarted server sends the line again, to everyone: Cy gets it at last.
    let copies = |pushes: Vec<ReceivedPush>| {
        let line = PushMessage::Line(line.clone());
        pushes
            .iter()
            .filter(|push| push.message().as_ref() == Some(&line))
            .count()
    };
    received(&pushes, &cy, 2).await;
    assert_eq!(copies(pushes.received(&cy.id).await.unwrap()), 1);
    assert_eq!(copies(received(&pushes, &ann, 5).await), 2);
    assert_eq!(fx.server.init("Cy", &cy).await.history, vec![line.clone()]);

    // Once the engine had every member's answer, the line left the outbox: another
    // restart sends nothing.
    received(&pushes, &bo, 4).await;
    fx.server.wait_for_fan_outs(1.0).await;
    let fx = fx.restarted().await;
    fx.server.chat(&bo, "after").await;
    let ann_got = received(&pushes, &ann, 6).await;
    assert_eq!(copies(ann_got), 2);
}

/// What one request of a burst achieved, if its answer was a success.
enum Acknowledged {
    Joined(String),
    Said(ChatLine),
}

#[tokio::test(flavor = "multi_thread")]
async fn test_every_acknowledged_join_and_line_survives_a_kill_during_a_burst() {
    const SPEAKERS: usize = 3;
    const LINES_EACH: usize = 40;
    const NEWCOMERS: usize = 40;
    const KILL_AFTER: usize = 25;
    let fx = Fixture::with_args(
        PUSHCHAT,
        &[
            "--chat-lines-per-minute",
            "1000",
            "--members-per-address",
            "1000",
        ],
    )
    .await;
    let speakers = fx.members(["Ann", "Bo", "Cy"]).await;
    let mut newcomers = Vec::new();
    for _ in 0..NEWCOMERS {
        newcomers.push(fx.browser().await);
    }

    // Every request at once; each success is reported as it arrives.
    let (acks, mut acked) = tokio::sync::mpsc::unbounded_channel();
    let mut burst = tokio::task::JoinSet::new();
    let post = |path: &'static str, body: Value| {
        let (http, url, acks) = (
            fx.server.http.clone(),
            format!("{}{path}", fx.server.base),
            acks.clone(),
        );
        async move {
            let response = http.post(url).json(&body).send().await.ok()?;
            let answer = response
                .status()
                .is_success()
                .then_some(response.json::<Value>())?;
            let answer = answer.await.ok()?;
            let ack = match path {
                "/api/chat" => Acknowledged::Said(serde_json::from_value(answer).unwrap()),
                _ => Acknowledged::Joined(body["name"].as_str().unwrap().to_owned()),
            };
            acks.send(ack).ok()
        }
    };
    for (n, member) in newcomers.iter().enumerate() {
        let body = join_body(&format!("newcomer {n}"), &member.subscription);
        burst.spawn(post("/api/subscribe", body));
    }
    for speaker in &speakers {
        for n in 0..LINES_EACH {
            burst.spawn(post("/api/chat", chat_body(speaker, &format!("line {n}"))));
        }
    }
    drop(acks);

    // The server dies once KILL_AFTER requests were acknowledged, others still in flight.
    let mut acknowledged = Vec::new();
    while acknowledged.len() < KILL_AFTER {
        let ack = tokio::time::timeout(DEADLINE, acked.recv()).await;
        acknowledged.push(
            ack.expect("the server answers the burst")
                .expect("acknowledged"),
        );
    }
    let fx = fx.restarted().await;
    burst.join_all().await;
    while let Some(ack) = acked.recv().await {
        acknowledged.push(ack);
    }

    let room = fx.server.init("Ann", &speakers[0]).await;
    let mut lines = 0;
    for ack in &acknowledged {
        match ack {
            Acknowledged::Joined(name) => assert!(room.members.contains(name), "{name} lost"),
            Acknowledged::Said(line) => {
                lines += 1;
                assert!(room.history.contains(line), "{line:?} lost");
            }
        }
    }
    println!(
        "burst: {} of {} requests acknowledged before or while the server was killed \
         ({lines} chat lines, {} joins); all of them found after the restart",
        acknowledged.len(),
        NEWCOMERS + SPEAKERS * LINES_EACH,
        acknowledged.len() - lines,
    );
    let health = fx.server.http.get(format!("{}/healthz", fx.server.base));
    assert_eq!(health.send().await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn test_a_muted_member_gets_no_chat_lines_but_hears_of_joins_across_a_restart() {
    let fx = Fixture::new(PUSHCHAT).await;
    let [ann, bo] = fx.members(["Ann", "Bo"]).await;
    let pushes = fx.pushes();
    received(&pushes, &ann, 2).await;
    received(&pushes, &bo, 1).await;

    let before = now_millis();
    let muted: Muted = fx
        .server
        .post_ok("/api/mute", &json!(credentials(&ann)))
        .await;
    let hour = 60 * 60 * 1000;
    assert!((before + hour..=now_millis() + hour).contains(&muted.muted_until));

    fx.server.chat(&bo, "quiet please").await;
    received(&pushes, &bo, 2).await;
    fx.server.wait_for_fan_outs(3.0).await;
    received(&pushes, &ann, 2).await;
    // Member-list changes still reach Ann.
    let [_cy] = fx.members(["Cy"]).await;
    let ann_got = received(&pushes, &ann, 3).await;
    assert!(messages(&ann_got).contains(&joined("Cy")));
    fx.server.wait_for_fan_outs(4.0).await;

    // The mute is on disk.
    let fx = fx.restarted().await;
    fx.server.chat(&bo, "still quiet").await;
    received(&pushes, &bo, 4).await;
    fx.server.wait_for_fan_outs(1.0).await;
    received(&pushes, &ann, 3).await;

    // Only the member itself can mute.
    let mut forged = credentials(&ann);
    forged.auth = bo.subscription.keys.auth.clone();
    let (status, _) = fx.server.post("/api/mute", &json!(forged)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let stranger = fx.browser().await;
    let (status, answer) = fx
        .server
        .post("/api/mute", &json!(credentials(&stranger)))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    let (status, answer) = fx
        .server
        .post("/api/mute", &json!({"endpoint": ann.subscription.endpoint}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
}

#[tokio::test]
async fn test_the_workers_report_that_pushes_arrive_is_a_members_and_pushes_nothing() {
    let fx = Fixture::new(PUSHCHAT).await;
    let [ann, bo] = fx.members(["Ann", "Bo"]).await;
    let pushes = fx.pushes();
    received(&pushes, &ann, 2).await;
    received(&pushes, &bo, 1).await;

    let (status, answer) = fx
        .server
        .post("/api/alive", &json!(credentials(&ann)))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
    let mut forged = credentials(&ann);
    forged.auth = bo.subscription.keys.auth.clone();
    let (status, _) = fx.server.post("/api/alive", &json!(forged)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let stranger = fx.browser().await;
    let (status, answer) = fx
        .server
        .post("/api/alive", &json!(credentials(&stranger)))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    assert_eq!(answer["code"], "not_member", "{answer}");
    let (status, answer) = fx
        .server
        .post(
            "/api/alive",
            &json!({"endpoint": ann.subscription.endpoint}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");

    // A line after the reports is the next push each gets: they pushed nothing.
    fx.server.chat(&bo, "still here").await;
    let ann_got = received(&pushes, &ann, 3).await;
    assert!(matches!(ann_got[2].message(), Some(PushMessage::Line(_))));
}

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn test_bad_input_gets_a_readable_4xx_and_changes_nothing() {
    let fx = Fixture::new(PUSHCHAT).await;
    let [ann, bo] = fx.members(["Ann", "Bo"]).await;
    let pushes = fx.pushes();
    // Every join has arrived before the counts are taken.
    received(&pushes, &ann, 2).await;
    received(&pushes, &bo, 1).await;
    let newcomer = fx.browser().await;
    let sub = serde_json::to_value(&newcomer.subscription).unwrap();
    let with = |field: &str, value: Value| {
        let mut sub = sub.clone();
        match field {
            "endpoint" => sub["endpoint"] = value,
            key => sub["keys"][key] = value,
        }
        json!({"name": "Newcomer", "subscription": sub})
    };
    let ann_creds = credentials(&ann);
    let off_curve = off_curve(&newcomer.subscription.keys.p256dh);
    let over_budget = "x".repeat(PUSH_PAYLOAD_LIMIT);

    let cases: Vec<(&str, &str, Value, StatusCode)> = vec![
        (
            "missing name",
            "/api/subscribe",
            json!({"subscription": sub}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "missing subscription",
            "/api/subscribe",
            json!({"name": "X"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "empty name",
            "/api/subscribe",
            json!({"name": "  ", "subscription": sub}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "long name",
            "/api/subscribe",
            json!({"name": "n".repeat(33), "subscription": sub}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "control character",
            "/api/subscribe",
            json!({"name": "A\u{1b}[31m", "subscription": sub}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "taken name",
            "/api/subscribe",
            json!({"name": "ann", "subscription": sub}),
            StatusCode::CONFLICT,
        ),
        (
            "taken name in full-width letters",
            "/api/subscribe",
            json!({"name": "Ａｎｎ", "subscription": sub}),
            StatusCode::CONFLICT,
        ),
        (
            "name with a right-to-left override",
            "/api/subscribe",
            json!({"name": "Ann\u{202e}", "subscription": sub}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "a browser that never joined, on init (only subscribe makes a member)",
            "/api/init",
            json!({"name": "ANN", "subscription": sub}),
            StatusCode::NOT_FOUND,
        ),
        (
            "short p256dh",
            "/api/subscribe",
            with("p256dh", json!("BAAA")),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "p256dh off the curve",
            "/api/subscribe",
            with("p256dh", json!(off_curve)),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "auth of 4 bytes",
            "/api/subscribe",
            with("auth", json!("AAAAAA")),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "plain http endpoint",
            "/api/subscribe",
            with("endpoint", json!("http://push.example.com/1")),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "private endpoint",
            "/api/subscribe",
            with("endpoint", json!("https://10.1.2.3/push")),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "endpoint not a URL",
            "/api/subscribe",
            with("endpoint", json!("push me")),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "unknown member",
            "/api/chat",
            chat_body(&newcomer, "hi"),
            StatusCode::NOT_FOUND,
        ),
        (
            "unknown member leaving",
            "/api/unsubscribe",
            json!(credentials(&newcomer)),
            StatusCode::NOT_FOUND,
        ),
        (
            "wrong auth",
            "/api/chat",
            json!({"endpoint": ann_creds.endpoint, "auth": newcomer.subscription.keys.auth, "msg": "hi"}),
            StatusCode::FORBIDDEN,
        ),
        (
            "empty message",
            "/api/chat",
            chat_body(&ann, " \n "),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "message over budget",
            "/api/chat",
            chat_body(&ann, &over_budget),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "msg is a number",
            "/api/chat",
            json!({"endpoint": ann_creds.endpoint, "auth": ann_creds.auth, "msg": 5}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];

    let room_before = fx.server.init("Ann", &ann).await;
    let stats_before = pushes.stats().await.unwrap();
    for (what, path, body, expected) in cases {
        let (status, answer) = fx.server.post(path, &body).await;
        assert_eq!(status, expected, "{what}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(
            error.len() > 10,
            "{what}: the error should explain itself, got {answer}"
        );
    }
    for (what, body, content_type, expected) in [
        (
            "malformed JSON",
            "{\"name\": ",
            "application/json",
            StatusCode::BAD_REQUEST,
        ),
        (
            "not JSON",
            "name=Ann",
            "application/x-www-form-urlencoded",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
    ] {
        let response = fx
            .server
            .http
            .post(format!("{}/api/subscribe", fx.server.base))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected, "{what}");
        let answer: Value = response.json().await.unwrap();
        assert!(
            answer["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: {answer}"
        );
    }

    assert_eq!(fx.server.init("Ann", &ann).await, room_before);
    assert_eq!(pushes.stats().await.unwrap(), stats_before);
}

#[tokio::test]
async fn test_the_longest_line_the_page_accepts_from_the_widest_name_reaches_the_push_service() {
    // The longest public URL the budget allows, so the push is as wide as it can be.
    let url = "http://localhost/";
    let longest_url = format!("{url}{}", "c".repeat(MAX_CHAT_URL_LEN - url.len()));
    let fx = Fixture::with_args(PUSHCHAT, &["--public-url", &longest_url]).await;
    // The widest name: as many characters as a name may have, of four bytes each.
    let widest = "😀".repeat(MAX_NAME_CHARS);
    let [ann] = fx.members([widest.as_str()]).await;
    let pushes = fx.pushes();
    received(&pushes, &ann, 1).await;
    // The longest line the page's check (the server's too) lets this name send:
    // characters of two, three and four bytes, then ASCII up to the last byte.
    let mut fits = String::new();
    for c in ['é', '€', '😀'].into_iter().cycle() {
        if chat_line_excess(&widest, &format!("{fits}{c}")).is_some() {
            break;
        }
        fits.push(c);
    }
    while chat_line_excess(&widest, &format!("{fits}m")).is_none() {
        fits.push('m');
    }

    let line = fx.server.chat(&ann, &fits).await;
    let got = received(&pushes, &ann, 2).await;
    let pushed = got
        .iter()
        .find(|push| push.message() == Some(PushMessage::Line(line.clone())))
        .expect("the line arrived whole");
    // The local push service refuses bodies over 3070 bytes, as autopush does; this one
    // took the line, padded to its largest size.
    assert_eq!(pushed.body_len, PUSH_BODY_LIMIT);
    assert_eq!(pushes.stats().await.unwrap().refused, 0);

    let (status, answer) = fx
        .server
        .post("/api/chat", &chat_body(&ann, &format!("{fits}m")))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert_eq!(fx.server.init(&widest, &ann).await.history, vec![line]);
}

#[tokio::test]
async fn test_a_member_posting_too_fast_gets_429_with_retry_after() {
    let fx = Fixture::with_args(PUSHCHAT, &["--chat-lines-per-minute", "2"]).await;
    let [ann] = fx.members(["Ann"]).await;
    fx.server.chat(&ann, "one").await;
    fx.server.chat(&ann, "two").await;

    let response = fx
        .server
        .http
        .post(format!("{}/api/chat", fx.server.base))
        .json(&chat_body(&ann, "three"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "Retry-After: {wait}");
    let answer: Value = response.json().await.unwrap();
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("Too many messages"),
        "{answer}"
    );
    assert_eq!(fx.server.init("Ann", &ann).await.history.len(), 2);
}

/// `POST /api/history?QUERY` as `member`: the status and the answer.
async fn history(fx: &Fixture, member: &VirtualSubscription, query: &str) -> (StatusCode, Value) {
    let path = format!("/api/history?{query}");
    fx.server.post(&path, &json!(credentials(member))).await
}

#[tokio::test]
async fn test_scrolling_back_through_250_lines_reads_each_once_in_order() {
    let fx = Fixture::with_args(PUSHCHAT, &["--chat-lines-per-minute", "1000"]).await;
    let [ann] = fx.members(["Ann"]).await;
    let mut sent = Vec::new();
    for n in 0..250 {
        sent.push(fx.server.chat(&ann, &format!("line {n}")).await);
    }

    // The page loads the newest 200, and reads back from the oldest of them.
    let first = fx.server.init("Ann", &ann).await.history;
    assert_eq!(first, sent[50..]);
    let mut read = first;
    loop {
        let query = format!("before={}&limit=30", read[0].id);
        let (status, answer) = history(&fx, &ann, &query).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let page: HistoryPage = serde_json::from_value(answer).unwrap();
        assert!(page.history.len() <= 30);
        let start = page.start;
        read.splice(..0, page.history);
        if start {
            break;
        }
    }
    assert_eq!(read, sent);

    // Without a limit, a page is 100 lines.
    let (_, answer) = history(&fx, &ann, &format!("before={}", sent[249].id)).await;
    let page: HistoryPage = serde_json::from_value(answer).unwrap();
    assert_eq!(page.history, sent[149..249]);
    assert!(!page.start);
}

#[tokio::test]
async fn test_only_members_scroll_back_and_a_bad_line_id_gets_400() {
    let fx = Fixture::with_args(PUSHCHAT, &["--history-limit", "5"]).await;
    let [ann, bo] = fx.members(["Ann", "Bo"]).await;
    for n in 0..7 {
        fx.server.chat(&ann, &format!("line {n}")).await;
    }
    // Only the newest five are kept, though the page loads more at first.
    let kept = fx.server.init("Ann", &ann).await.history;
    assert_eq!(kept.len(), 5);
    let (status, answer) = history(&fx, &ann, &format!("before={}", kept[2].id)).await;
    assert_eq!(status, StatusCode::OK);
    let page: HistoryPage = serde_json::from_value(answer).unwrap();
    assert_eq!((page.history, page.start), (kept[..2].to_vec(), true));

    let stranger = fx.browser().await;
    let (status, answer) = history(&fx, &stranger, "before=9").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    assert_eq!(answer["code"], "not_member");
    assert!(answer.get("history").is_none());
    let mut forged = bo.clone();
    forged.subscription.keys.auth = ann.subscription.keys.auth.clone();
    let (status, answer) = history(&fx, &forged, "before=9").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");

    for query in ["before=abc", "before=-1", "", "limit=5"] {
        let (status, answer) = history(&fx, &ann, query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query:?}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains("?before= must be a line's id"), "{error}");
    }
    let (status, answer) = history(&fx, &ann, "before=9&limit=501").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(answer["error"].as_str().unwrap().contains("from 1 to 500"));
}

/// Subscribes `member` as `name`, the request arriving with `X-Forwarded-For: forwarded_for`.
async fn subscribe_via_proxy(
    fx: &Fixture,
    name: &str,
    member: &VirtualSubscription,
    forwarded_for: &str,
) -> (StatusCode, Value) {
    let response = fx
        .server
        .http
        .post(format!("{}/api/subscribe", fx.server.base))
        .header("x-forwarded-for", forwarded_for)
        .json(&join_body(name, &member.subscription))
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

#[tokio::test]
async fn test_members_per_address_count_the_client_a_trusted_proxy_names() {
    // The test client is the "proxy": it connects from 127.0.0.1 and names the client.
    let fx = Fixture::with_args(
        PUSHCHAT,
        &["--members-per-address", "2", "--trusted-proxy", "127.0.0.1"],
    )
    .await;
    for name in ["Ann", "Bo"] {
        let member = fx.browser().await;
        let (status, answer) = subscribe_via_proxy(&fx, name, &member, "203.0.113.5").await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    let third = fx.browser().await;
    let (status, answer) = subscribe_via_proxy(&fx, "Cy", &third, "203.0.113.5").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("must leave"),
        "{answer}"
    );
    let (status, answer) = subscribe_via_proxy(&fx, "Cy", &third, "198.51.100.8").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["members"], json!(["Ann", "Bo", "Cy"]));
}

#[tokio::test]
async fn test_an_untrusted_client_cannot_pick_its_address() {
    let fx = Fixture::with_args(PUSHCHAT, &["--members-per-address", "1"]).await;
    let ann = fx.browser().await;
    let (status, answer) = subscribe_via_proxy(&fx, "Ann", &ann, "203.0.113.5").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let bo = fx.browser().await;
    let (status, answer) = subscribe_via_proxy(&fx, "Bo", &bo, "198.51.100.8").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answer}");
}

#[tokio::test]
async fn test_the_page_carries_a_policy_that_admits_only_its_own_scripts() {
    let fx = Fixture::new(PUSHCHAT).await;
    let response = fx
        .server
        .http
        .get(format!("{}/", fx.server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    assert_eq!(response.headers()["referrer-policy"], "no-referrer");
    let policy = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    let html = response.text().await.unwrap();
    // The page renders on the server: the chat's controls are in the HTML.
    assert!(html.contains(r#"id="subscribe""#) && html.contains(r#"id="members""#));

    let nonce = policy
        .split("'nonce-")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap();
    assert!(policy.contains("default-src 'self'") && policy.contains("object-src 'none'"));
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    // Every inline script carries this response's nonce; nothing else may run.
    let scripts = html.matches("<script").count();
    assert!(scripts > 0);
    assert_eq!(
        html.matches(&format!(r#"nonce="{nonce}""#)).count(),
        scripts,
        "{html}"
    );
}

#[tokio::test]
async fn test_health_and_metrics_count_exactly_the_pushes_of_each_fan_out() {
    let fx = Fixture::new(PUSHCHAT).await;
    let get = |path: &str| {
        fx.server
            .http
            .get(format!("{}{path}", fx.server.base))
            .send()
    };
    let health = get("/healthz").await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(health.text().await.unwrap(), "ok\n");

    // Ann's join goes to Ann, Bo's to both, the line to both: 5 pushes in 3 fan-outs.
    let [ann, bo] = fx.members(["Ann", "Bo"]).await;
    fx.server.chat(&ann, "count me").await;
    let delivered = r#"pushchat_pushes_total{result="delivered"}"#;
    let text = eventually("the metrics to count 5 pushes", || async {
        let text = get("/metrics").await.ok()?.text().await.ok()?;
        (sample(&text, delivered) == Some(5.0)).then_some(text)
    })
    .await;
    assert_eq!(sample(&text, "pushchat_members"), Some(2.0));
    assert_eq!(sample(&text, "pushchat_fan_outs_total"), Some(3.0));
    assert_eq!(
        sample(&text, r#"pushchat_pushes_total{result="failed"}"#),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, r#"pushchat_push_latency_seconds_bucket{le="+Inf"}"#),
        Some(5.0)
    );
    assert_eq!(
        sample(&text, "pushchat_push_latency_seconds_count"),
        Some(5.0)
    );
    let chats = r#"pushchat_http_requests_total{route="/api/chat",status="200"}"#;
    assert_eq!(sample(&text, chats), Some(1.0));
    let joins = r#"pushchat_http_requests_total{route="/api/subscribe",status="200"}"#;
    assert_eq!(sample(&text, joins), Some(2.0));
    assert_eq!(fx.pushes().received(&bo.id).await.unwrap().len(), 2);
}

/// The same point with one bit of y flipped: no longer on P-256.
fn off_curve(p256dh: &str) -> String {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
    let mut point = URL_SAFE_NO_PAD.decode(p256dh).unwrap();
    *point.last_mut().unwrap() ^= 1;
    URL_SAFE_NO_PAD.encode(point)
}

#[tokio::test]
async fn test_https_with_a_generated_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir(&data_dir).unwrap();
    let tls_args = [
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    let server = Server::start(PUSHCHAT, &data_dir, &tls_args).await;
    assert!(
        server.base.starts_with("https://127.0.0.1:"),
        "{}",
        server.base
    );

    let trusting = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap(),
        )
        .build()
        .unwrap();
    let health = trusting
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(health.version(), reqwest::Version::HTTP_2);
    // Plain HTTP on the same port gets no page, and a client that does not trust the
    // certificate gets nothing either.
    let plain = server.base.replacen("https://", "http://", 1);
    let answer = reqwest::get(format!("{plain}/healthz")).await;
    assert!(answer.map_or(true, |response| !response.status().is_success()));
    assert!(reqwest::get(format!("{}/healthz", server.base))
        .await
        .is_err());
}

#[tokio::test]
async fn test_a_join_passphrase_keeps_out_those_without_it() {
    let fx = Fixture::with_args(PUSHCHAT, &["--join-passphrase", "open sesame"]).await;
    let rules = fx
        .server
        .http
        .get(format!("{}/api/join-rules", fx.server.base));
    let rules: Value = rules.send().await.unwrap().json().await.unwrap();
    assert_eq!(rules, json!({"passphrase": true}));
    let ann = fx.browser().await;
    let mut join = join_body("Ann", &ann.subscription);
    let (status, answer) = fx.server.post("/api/subscribe", &join).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("passphrase"),
        "{answer}"
    );
    join["passphrase"] = json!("open sesame");
    let (status, answer) = fx.server.post("/api/subscribe", &join).await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    let open = Fixture::new(PUSHCHAT).await;
    let rules = open
        .server
        .http
        .get(format!("{}/api/join-rules", open.server.base));
    let rules: Value = rules.send().await.unwrap().json().await.unwrap();
    assert_eq!(rules, json!({"passphrase": false}));
}

#[tokio::test]
async fn test_a_second_browser_joins_with_a_device_code_and_leaves_alone() {
    let fx = Fixture::new(PUSHCHAT).await;
    let [ann_laptop, bo] = fx.members(["Ann", "Bo"]).await;
    let pushes = fx.pushes();
    received(&pushes, &bo, 1).await;
    let code: Value = fx
        .server
        .post_ok("/api/device-code", &json!(credentials(&ann_laptop)))
        .await;
    let ann_phone = fx.browser().await;
    let mut join = join_body("", &ann_phone.subscription);
    join["deviceCode"] = code["code"].clone();
    let (status, room) = fx.server.post("/api/subscribe", &join).await;
    assert_eq!(status, StatusCode::OK, "{room}");
    assert_eq!(room["you"], "Ann");
    assert_eq!(room["members"], json!(["Ann", "Bo"]));

    let line = fx.server.chat(&bo, "both of you?").await;
    let said = PushMessage::Line(line);
    assert!(messages(&received(&pushes, &ann_phone, 1).await).contains(&said));
    assert!(messages(&received(&pushes, &ann_laptop, 3).await).contains(&said));
    // The phone leaves; Ann is still in on the laptop and Bo is not told.
    let (status, _) = fx
        .server
        .post("/api/unsubscribe", &json!(credentials(&ann_phone)))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let line = fx.server.chat(&ann_laptop, "still here").await;
    let bo_got = messages(&received(&pushes, &bo, 3).await);
    assert!(bo_got.contains(&PushMessage::Line(line)));
    assert_eq!(fx.server.init("Bo", &bo).await.members, ["Ann", "Bo"]);
    // A used code is refused, with a sentence.
    let again = fx.browser().await;
    let mut join = join_body("", &again.subscription);
    join["deviceCode"] = code["code"].clone();
    let (status, answer) = fx.server.post("/api/subscribe", &join).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("device code"),
        "{answer}"
    );
}

// Membership the operator can rely on: the five ways in or past it that used to work.

async fn room_members(fx: &Fixture) -> Value {
    let room: Value = fx.server.get_ok("/api/room").await;
    room["members"].clone()
}

#[tokio::test]
async fn test_a_removed_member_reloading_its_page_is_told_so_and_stays_out() {
    let fx = Fixture::with_args(PUSHCHAT, &["--admin-token", ADMIN_TOKEN]).await;
    let [alice, carol] = fx.members(["Alice", "Carol"]).await;
    let pushes = fx.pushes();
    let removal = json!({"name": "carol"});
    let status = fx.server.as_operator("members/remove", &removal).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // Carol's browser hears it was removed; Alice that Carol left.
    let carol_got = messages(&received(&pushes, &carol, 2).await);
    assert!(carol_got.contains(&PushMessage::Removed { banned: false }));
    assert!(messages(&received(&pushes, &alice, 3).await).contains(&left(&["Carol"])));

    // The page reloads with the old subscription: a 404 that says why, nothing stored.
    let (status, answer) = fx
        .server
        .post("/api/init", &join_body("Carol", &carol.subscription))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    assert_eq!(answer["code"], "removed", "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("removed"),
        "{answer}"
    );
    let (status, answer) = fx.server.post("/api/chat", &chat_body(&carol, "hi?")).await;
    assert_eq!(
        (status, &answer["code"]),
        (StatusCode::NOT_FOUND, &json!("removed"))
    );
    assert_eq!(room_members(&fx).await, json!(["Alice"]));
    // Nobody was told of a join: Alice's next push is her own line.
    let line = fx.server.chat(&alice, "just us").await;
    let alice_got = received(&pushes, &alice, 4).await;
    assert_eq!(alice_got[3].message(), Some(PushMessage::Line(line)));
    assert_eq!(pushes.received(&carol.id).await.unwrap().len(), 2);
}

#[tokio::test]
async fn test_a_device_code_made_before_a_ban_lets_nobody_in() {
    let fx = Fixture::with_args(PUSHCHAT, &["--admin-token", ADMIN_TOKEN]).await;
    let [alice, bob] = fx.members(["Alice", "Bob"]).await;
    let pushes = fx.pushes();
    let code: Value = fx
        .server
        .post_ok("/api/device-code", &json!(credentials(&alice)))
        .await;
    let removal = json!({"name": "alice", "ban": true});
    let status = fx.server.as_operator("members/remove", &removal).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(messages(&received(&pushes, &alice, 3).await)
        .contains(&PushMessage::Removed { banned: true }));

    let newcomer = fx.browser().await;
    let mut join = join_body("", &newcomer.subscription);
    join["deviceCode"] = code["code"].clone();
    let (status, answer) = fx.server.post("/api/subscribe", &join).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    // Nor under the name, or one like it (Cyrillic а), nor by reloading.
    for name in ["alice", "\u{430}lice", "ALICE"] {
        let (status, answer) = fx
            .server
            .post("/api/subscribe", &join_body(name, &newcomer.subscription))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{name}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains("banned"),
            "{answer}"
        );
    }
    let (status, answer) = fx
        .server
        .post("/api/init", &join_body("Alice", &alice.subscription))
        .await;
    assert_eq!(
        (status, &answer["code"]),
        (StatusCode::NOT_FOUND, &json!("banned"))
    );
    assert_eq!(room_members(&fx).await, json!(["Bob"]));
    // Bob heard of Alice, himself, and Alice leaving: nobody joined as Alice again.
    let line = fx.server.chat(&bob, "alone").await;
    let bob_got = messages(&received(&pushes, &bob, 3).await);
    for expected in [joined("Bob"), left(&["Alice"]), PushMessage::Line(line)] {
        assert!(bob_got.contains(&expected), "{bob_got:?}");
    }
}

#[tokio::test]
async fn test_a_gone_subscription_ends_the_membership_and_everyone_is_told() {
    let fx = Fixture::new(PUSHCHAT).await;
    let [alice, bob, dave] = fx.members(["Alice", "Bob", "Dave"]).await;
    let pushes = fx.pushes();
    received(&pushes, &dave, 1).await;
    pushes.expire(&dave.id).await.unwrap();
    let line = fx.server.chat(&alice, "anyone?").await;
    // Alice heard of three joins, Bob of two; both of the line and of Dave leaving.
    for (member, count) in [(&alice, 5), (&bob, 4)] {
        let got = messages(&received(&pushes, member, count).await);
        assert!(got.contains(&PushMessage::Line(line.clone())), "{got:?}");
        assert!(got.contains(&left(&["Dave"])), "{got:?}");
    }
    assert_eq!(room_members(&fx).await, json!(["Alice", "Bob"]));
    let (status, answer) = fx
        .server
        .post("/api/chat", &chat_body(&dave, "hello?"))
        .await;
    assert_eq!(
        (status, &answer["code"]),
        (StatusCode::NOT_FOUND, &json!("not_member"))
    );
}

#[tokio::test]
async fn test_fifty_wrong_passphrases_from_one_address_are_slowed_down() {
    let fx = Fixture::with_args(PUSHCHAT, &["--join-passphrase", "open sesame"]).await;
    let guesser = fx.browser().await;
    let mut statuses = std::collections::BTreeMap::new();
    let mut waits = Vec::new();
    for n in 0..50 {
        let mut join = join_body("Mallory", &guesser.subscription);
        join["passphrase"] = json!(format!("guess {n}"));
        let url = format!("{}/api/subscribe", fx.server.base);
        let response = fx.server.http.post(url).json(&join).send().await.unwrap();
        if let Some(wait) = response.headers().get("retry-after") {
            waits.push(wait.to_str().unwrap().parse::<u64>().unwrap());
        }
        *statuses.entry(response.status().as_u16()).or_insert(0) += 1;
    }
    assert_eq!(statuses, [(403, 10), (429, 40)].into());
    assert_eq!(waits.len(), 40);
    assert!(
        waits.iter().all(|&wait| (1..=60).contains(&wait)),
        "{waits:?}"
    );
    // The right passphrase from there waits too; from elsewhere it is let in.
    let mut join = join_body("Ann", &guesser.subscription);
    join["passphrase"] = json!("open sesame");
    let (status, _) = fx.server.post("/api/subscribe", &join).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn test_a_name_that_looks_like_a_members_is_refused_naming_it() {
    let fx = Fixture::new(PUSHCHAT).await;
    let [bob] = fx.members(["bob"]).await;
    let newcomer = fx.browser().await;
    for look_alike in ["b\u{43e}b", "BOB", "b\u{1d698}b"] {
        let (status, answer) = fx
            .server
            .post(
                "/api/subscribe",
                &join_body(look_alike, &newcomer.subscription),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{look_alike}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains("\"bob\""),
            "{answer}"
        );
    }
    assert_eq!(room_members(&fx).await, json!(["bob"]));
    let room = fx.server.subscribe("\u{2764}\u{fe0f} Ann", &newcomer).await;
    assert_eq!(room.members, ["bob", "\u{2764}\u{fe0f} Ann"]);
    received(&fx.pushes(), &bob, 2).await;
}
