//! The delivery engine against the local push service's fault modes: real encryption,
//! real VAPID, real HTTP on loopback, a real store (sled, or PostgreSQL with
//! `PUSHCHAT_TEST_STORE=postgres`). Each fault is one the engine's
//! status policy (see `server::push::delivery`) must survive; and a push service over TLS
//! with HTTP/2, as real ones answer, reached only when its certificate is trusted.

mod support;

use std::{sync::Arc, time::Duration};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use app::{
    budget::PUSH_BODY_SIZES,
    wire::{ChatLine, PushMessage},
};
use end2end::{eventually, suites_use_postgres, DEADLINE};
use localpush::{Fault, LocalPush, LocalPushClient, NewSubscriber, Transport, VirtualSubscription};
use server::{
    model::{
        fan_out::{FanOut, ResolvedFanOut},
        subscription::Subscription,
    },
    push::{vapid::VapidKeys, Delivery, DeliveryReport, DeliverySettings, GONE_BATCHES_WAITING},
    store::{testing::TestStore, Store, StoreContents},
};
use support::device;

/// An engine with its own store and key, and a push service of its own.
struct Engine {
    delivery: Arc<Delivery>,
    /// What delivery reported gone, batch by batch.
    gone: tokio::sync::Mutex<mpsc::Receiver<Vec<Subscription>>>,
    vapid: Arc<VapidKeys>,
    store: Arc<dyn Store>,
    push: LocalPush,
    _store: TestStore,
}

impl Engine {
    /// An engine with a push service of its own in the clear.
    async fn new(settings: DeliverySettings) -> Engine {
        let push = LocalPush::start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        Engine::on(TestStore::new().await, push, settings).await
    }

    /// An engine delivering from `test_store` to members on `push`.
    async fn on(test_store: TestStore, push: LocalPush, settings: DeliverySettings) -> Engine {
        let store = Arc::clone(&test_store.store);
        let vapid = VapidKeys::load_or_create(&*store, "mailto:ops@example.org".into()).await;
        let vapid = Arc::new(vapid.unwrap());
        let (gone, gone_heard) = mpsc::channel(GONE_BATCHES_WAITING);
        let delivery = Delivery::new(Arc::clone(&vapid), store.clone(), settings, gone).unwrap();
        Engine {
            delivery: Arc::new(delivery),
            gone: tokio::sync::Mutex::new(gone_heard),
            vapid,
            store,
            push,
            _store: test_store,
        }
    }

    /// An engine whose push service answers over TLS and HTTP/2, its root trusted.
    async fn over_tls() -> Engine {
        let addr = "127.0.0.1:0".parse().unwrap();
        let push = LocalPush::start_with(addr, Transport::Http2Tls, 1)
            .await
            .unwrap();
        let root = push.certificate().expect("a certificate over TLS").to_vec();
        let settings = DeliverySettings {
            extra_trusted_roots: vec![root],
            ..quick()
        };
        Engine::on(TestStore::new().await, push, settings).await
    }

    fn pushes(&self) -> LocalPushClient {
        self.push.client()
    }

    /// A member whose push service behaves as `fault` says, stored as a member.
    async fn member(&self, name: &str, fault: Option<Fault>) -> VirtualSubscription {
        self.member_at(&self.pushes(), name, fault).await
    }

    async fn member_at(
        &self,
        pushes: &LocalPushClient,
        name: &str,
        fault: Option<Fault>,
    ) -> VirtualSubscription {
        let key = self.vapid.public_key_base64();
        let request = NewSubscriber {
            application_server_key: Some(key),
            fault,
        };
        let created = pushes.subscribe(&request).await.unwrap();
        self.store
            .put_device(&device(name, &created))
            .await
            .unwrap();
        created
    }

    /// A chat line to every stored member.
    async fn chat_line(&self, msg: &str) -> ResolvedFanOut {
        let line = line_from_ann(msg);
        let recipients: Vec<Subscription> = self
            .store
            .devices()
            .await
            .unwrap()
            .into_iter()
            .map(|member| member.subscription)
            .collect();
        ResolvedFanOut {
            message: PushMessage::Line(line),
            recipients,
        }
    }

    /// Queues a chat line to every stored member, by reference, as the chat does.
    async fn queue_chat_line(&self, msg: &str) {
        let everyone = self.store.endpoints(None).await.unwrap();
        let line = line_from_ann(msg);
        let fan_out = FanOut::chat_line(&line, &everyone);
        self.store.queue_fan_out(&fan_out).await.unwrap();
    }

    async fn deliver(&self, fan_out: ResolvedFanOut) -> DeliveryReport {
        tokio::time::timeout(DEADLINE, self.delivery.send(fan_out))
            .await
            .expect("the fan-out finishes")
    }

    async fn is_member(&self, member: &VirtualSubscription) -> bool {
        self.store
            .device(&member.subscription.endpoint)
            .await
            .unwrap()
            .is_some()
    }
}

/// Ann's chat line `msg`, the one every test sends.
fn line_from_ann(msg: &str) -> ChatLine {
    ChatLine {
        id: 1,
        name: "Ann".into(),
        msg: msg.into(),
        time: 0,
    }
}

/// Quick retries, so tests of the policy do not wait on its production delays.
fn quick() -> DeliverySettings {
    DeliverySettings {
        first_backoff: Duration::from_millis(10),
        ..DeliverySettings::default()
    }
}

fn report(
    delivered: usize,
    gone: usize,
    failed: usize,
    retried: usize,
) -> (usize, usize, usize, usize) {
    (delivered, gone, failed, retried)
}

fn counts(report: &DeliveryReport) -> (usize, usize, usize, usize) {
    (report.delivered, report.gone, report.failed, report.retried)
}

#[tokio::test]
async fn test_a_member_who_left_before_its_batch_was_taken_is_neither_sent_to_nor_counted() {
    let engine = Engine::new(quick()).await;
    let stays = engine.member("Ann", None).await;
    let leaves = engine.member("Bo", None).await;
    engine.queue_chat_line("still here?").await;
    let gone = engine.store.device(&leaves.subscription.endpoint).await;
    let gone = gone.unwrap().unwrap().subscription;
    engine.store.remove_devices(&[gone], None).await.unwrap();

    let mut reports = engine.delivery.reports();
    let stop = CancellationToken::new();
    engine.delivery.start(stop.clone());
    let done = tokio::time::timeout(DEADLINE, reports.recv()).await;
    assert_eq!(counts(&done.unwrap().unwrap()), report(1, 0, 0, 0));
    stop.cancel();
    assert!(engine.delivery.drain(DEADLINE).await);
    assert_eq!(engine.push.received_by(&stays.id).len(), 1);
    assert!(engine.push.received_by(&leaves.id).is_empty());
}

#[tokio::test]
async fn test_429_with_retry_after_is_retried_after_the_delay() {
    let engine = Engine::new(quick()).await;
    let fault = Fault::RateLimited {
        retry_after_secs: 1,
        times: 1,
    };
    let member = engine.member("Ann", Some(fault)).await;

    let done = engine.deliver(engine.chat_line("hi").await).await;
    assert_eq!(counts(&done), report(1, 0, 0, 1));
    let attempts = engine.pushes().attempts(&member.id).await.unwrap();
    assert_eq!(attempts.len(), 2);
    // The quick backoff is 10 ms: only Retry-After explains a wait of a second.
    assert!(
        attempts[1] - attempts[0] >= 990,
        "retried after {} ms",
        attempts[1] - attempts[0]
    );
}

#[tokio::test]
async fn test_500_then_201_ends_delivered() {
    let engine = Engine::new(quick()).await;
    let member = engine
        .member("Ann", Some(Fault::ServerError { times: 2 }))
        .await;
    let done = engine.deliver(engine.chat_line("hi").await).await;
    assert_eq!(counts(&done), report(1, 0, 0, 2));
    let received = engine.pushes().received(&member.id).await.unwrap();
    assert_eq!(received.len(), 1);
}

#[tokio::test]
async fn test_retries_are_bounded_and_a_failing_member_is_kept() {
    let settings = DeliverySettings {
        max_retries: 2,
        ..quick()
    };
    let engine = Engine::new(settings).await;
    let member = engine
        .member("Ann", Some(Fault::ServerError { times: 100 }))
        .await;
    let done = engine.deliver(engine.chat_line("hi").await).await;
    assert_eq!(counts(&done), report(0, 0, 1, 2));
    assert_eq!(engine.pushes().attempts(&member.id).await.unwrap().len(), 3);
    assert!(engine.is_member(&member).await);
}

#[tokio::test]
async fn test_a_dropped_connection_is_retried() {
    let engine = Engine::new(quick()).await;
    let member = engine
        .member("Ann", Some(Fault::DropConnection { times: 1 }))
        .await;
    let done = engine.deliver(engine.chat_line("hi").await).await;
    assert_eq!(counts(&done), report(1, 0, 0, 1));
    assert_eq!(engine.pushes().received(&member.id).await.unwrap().len(), 1);
}

#[tokio::test]
async fn test_410_and_404_are_reported_gone_in_one_batch_and_nothing_is_deleted() {
    let engine = Engine::new(quick()).await;
    let healthy = engine.member("Ann", None).await;
    let expired = engine.member("Bo", None).await;
    engine.pushes().expire(&expired.id).await.unwrap();
    let unknown = engine.member("Cy", Some(Fault::NotFound)).await;

    let done = engine.deliver(engine.chat_line("hi").await).await;
    assert_eq!(counts(&done), report(1, 2, 0, 0));
    let mut gone = engine.gone.lock().await;
    let mut reported: Vec<String> = gone
        .try_recv()
        .unwrap()
        .into_iter()
        .map(|s| s.endpoint)
        .collect();
    reported.sort();
    let mut expected = vec![
        expired.subscription.endpoint.clone(),
        unknown.subscription.endpoint.clone(),
    ];
    expected.sort();
    assert_eq!(reported, expected);
    assert!(gone.try_recv().is_err(), "one event for the batch");
    // Ending the memberships is the chat's rule, not delivery's.
    for member in [&healthy, &expired, &unknown] {
        assert!(engine.is_member(member).await);
    }
}

#[tokio::test]
async fn test_413_is_a_bug_not_retried_and_the_member_is_kept() {
    let engine = Engine::new(quick()).await;
    let member = engine.member("Ann", Some(Fault::TooLarge)).await;
    let done = engine.deliver(engine.chat_line("hi").await).await;
    assert_eq!(counts(&done), report(0, 0, 1, 0));
    assert!(engine.is_member(&member).await);
}

#[tokio::test]
async fn test_a_hanging_endpoint_does_not_hold_the_others_back() {
    // Fewer slots than members: a hang that held the others' slots would deadlock.
    let settings = DeliverySettings {
        max_in_flight: 4,
        ..quick()
    };
    let engine = Engine::new(settings).await;
    let others = 20;
    // The hanging push is answered only once every other member's push has arrived.
    let fault = Fault::HangUntilAccepted { accepted: others };
    let hanging = engine.member("Hang", Some(fault)).await;
    for n in 0..others {
        engine.member(&format!("member {n}"), None).await;
    }
    let done = engine.deliver(engine.chat_line("hi").await).await;
    assert_eq!(counts(&done), report(others as usize + 1, 0, 0, 0));
    assert_eq!(
        engine.pushes().received(&hanging.id).await.unwrap().len(),
        1
    );
}

#[tokio::test]
async fn test_queued_fan_outs_are_taken_no_more_at_once_than_allowed() {
    let settings = DeliverySettings {
        max_fan_outs: 1,
        ..quick()
    };
    let engine = Engine::new(settings).await;
    let slow = engine
        .member("Slow", Some(Fault::Slow { millis: 300 }))
        .await;
    for msg in ["first", "second"] {
        engine.queue_chat_line(msg).await;
    }

    let stop = CancellationToken::new();
    engine.delivery.start(stop.clone());
    let pushes = engine.pushes();
    let received = eventually("both fan-outs to arrive", || async {
        let received = pushes.received(&slow.id).await.unwrap();
        (received.len() == 2).then_some(received)
    })
    .await;
    stop.cancel();
    assert!(engine.delivery.drain(DEADLINE).await);
    let texts: Vec<_> = received
        .iter()
        .map(|push| match push.message() {
            Some(PushMessage::Line(line)) => line.msg,
            other => panic!("not a chat line: {other:?}"),
        })
        .collect();
    assert_eq!(texts, ["first", "second"]);
    // One at a time: the second push left only once the first had its (slow) answer.
    let attempts = pushes.attempts(&slow.id).await.unwrap();
    assert!(attempts[1] >= attempts[0] + 300, "{attempts:?}");
    assert!(engine.store.take_fan_out(&[]).await.unwrap().is_none());
}

#[tokio::test]
async fn test_a_stopping_engine_sends_what_is_queued_unless_other_instances_will() {
    for finish_queue_on_stop in [true, false] {
        let engine = Engine::new(DeliverySettings {
            finish_queue_on_stop,
            ..quick()
        })
        .await;
        let ann = engine.member("Ann", None).await;
        for msg in ["one", "two"] {
            engine.queue_chat_line(msg).await;
        }
        // Stopped before it took anything, as when the last requests queue fan-outs.
        let stop = CancellationToken::new();
        stop.cancel();
        engine.delivery.start(stop);
        assert!(engine.delivery.drain(DEADLINE).await);

        let got = engine.pushes().received(&ann.id).await.unwrap().len();
        let left = engine.store.contents().await.unwrap().fan_outs.len();
        if finish_queue_on_stop {
            // One process per store (sled): nobody else would send them.
            assert_eq!((got, left), (2, 0));
        } else {
            // Other instances (PostgreSQL) take them; this one takes no more.
            assert_eq!((got, left), (0, 2));
        }
    }
}

#[tokio::test]
async fn test_the_jwt_is_signed_once_per_origin_over_many_pushes() {
    let engine = Engine::new(quick()).await;
    for n in 0..30 {
        engine.member(&format!("member {n}"), None).await;
    }
    let started = tokio::time::Instant::now();
    let mut delivered = 0;
    while started.elapsed() < Duration::from_millis(1200) {
        delivered += engine
            .deliver(engine.chat_line("tick").await)
            .await
            .delivered;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(delivered >= 30 * 2, "{delivered}");
    assert_eq!(engine.vapid.signatures_made(), 1);

    let elsewhere = LocalPush::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    engine
        .member_at(&elsewhere.client(), "far away", None)
        .await;
    engine.deliver(engine.chat_line("tock").await).await;
    assert_eq!(engine.vapid.signatures_made(), 2);
}

#[tokio::test]
async fn test_a_redirect_is_not_followed() {
    let engine = Engine::new(quick()).await;
    let bo = engine.member("Bo", None).await;
    // Ann's push service sends the push on to Bo's endpoint (it could be anywhere).
    let redirect = Fault::Redirect {
        location: bo.subscription.endpoint.clone(),
    };
    let ann = engine.member("Ann", Some(redirect)).await;

    let done = engine.deliver(engine.chat_line("hi").await).await;
    assert_eq!(counts(&done), report(1, 0, 1, 0));
    let pushes = engine.pushes();
    assert_eq!(pushes.received(&bo.id).await.unwrap().len(), 1);
    assert_eq!(pushes.attempts(&ann.id).await.unwrap().len(), 1);
    assert!(engine.is_member(&ann).await);
}

#[tokio::test]
async fn test_a_tls_push_service_gets_every_push_over_http2_only_once_its_root_is_trusted() {
    let engine = Engine::over_tls().await;
    let mut members = Vec::new();
    for name in ["Ann", "Bo", "Cy"] {
        members.push(engine.member(name, None).await);
    }
    let fan_out = engine.chat_line("over h2").await;

    // The same key, store and fan-out, without the root: the public roots alone do not
    // make the certificate trusted, so nothing arrives.
    let (gone, _gone_heard) = mpsc::channel(GONE_BATCHES_WAITING);
    let store = Arc::clone(&engine.store);
    let untrusting = Delivery::new(Arc::clone(&engine.vapid), store, quick(), gone).unwrap();
    let refused = tokio::time::timeout(DEADLINE, Arc::new(untrusting).send(fan_out.clone()))
        .await
        .expect("the fan-out finishes");
    assert_eq!((refused.delivered, refused.gone, refused.failed), (0, 0, 3));
    assert_eq!(engine.pushes().stats().await.unwrap().accepted, 0);

    let done = engine.deliver(fan_out).await;
    assert_eq!(counts(&done), report(3, 0, 0, 0));
    for member in &members {
        let received = engine.pushes().received(&member.id).await.unwrap();
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].http_version, "HTTP/2.0");
        assert!(
            matches!(received[0].message(), Some(PushMessage::Line(line)) if line.msg == "over h2")
        );
    }
    let stats = engine.pushes().stats().await.unwrap();
    assert_eq!((stats.accepted, stats.accepted_http2), (3, 3));
}

#[tokio::test]
async fn test_over_http2_the_status_policy_holds_on_one_shared_connection() {
    let engine = Engine::over_tls().await;
    let ann = engine.member("Ann", None).await;
    let flaky = engine.member("Bo", Some(Fault::Flaky)).await;
    let gone = engine.member("Cy", Some(Fault::NotFound)).await;
    let too_large = engine.member("Di", Some(Fault::TooLarge)).await;
    // Its stream is reset without an answer: retried like a dropped connection.
    let reset = engine
        .member("Ed", Some(Fault::DropConnection { times: 1 }))
        .await;
    let busy = NewSubscriber {
        application_server_key: Some(engine.vapid.public_key_base64()),
        fault: Some(Fault::RateLimited {
            retry_after_secs: 1,
            times: 1,
        }),
    };
    let limited = engine.pushes().subscribe(&busy).await.unwrap();
    engine
        .store
        .put_device(&device("Flo", &limited))
        .await
        .unwrap();

    let done = engine.deliver(engine.chat_line("over h2").await).await;
    assert_eq!(counts(&done), report(4, 1, 1, 3));
    let reported = engine.gone.lock().await.try_recv().unwrap();
    let reported: Vec<&str> = reported.iter().map(|s| s.endpoint.as_str()).collect();
    assert_eq!(reported, [gone.subscription.endpoint.as_str()]);
    let pushes = engine.pushes();
    for member in [&ann, &flaky, &reset, &limited] {
        let received = pushes.received(&member.id).await.unwrap();
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].http_version, "HTTP/2.0");
    }
    let attempts = pushes.attempts(&limited.id).await.unwrap();
    // The quick backoff is 10 ms: only Retry-After explains a wait of a second.
    assert!(attempts[1] - attempts[0] >= 990, "Retry-After honoured");
    assert_eq!(pushes.attempts(&too_large.id).await.unwrap().len(), 1);
    assert!(engine.is_member(&too_large).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_hung_origin_holds_none_of_another_origins_pushes() {
    // As configured: PostgreSQL holds a connection per fan-out, so it takes 16 at once.
    let settings = DeliverySettings {
        max_fan_outs: if suites_use_postgres() { 16 } else { 256 },
        ..DeliverySettings::default()
    };
    let test_store = TestStore::with_fan_outs(settings.max_fan_outs).await;
    let share = settings.max_in_flight_per_origin;
    let fine = LocalPush::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let engine = Engine::on(test_store, fine, settings.clone()).await;
    // A decrypts one push in 50 (it still checks each), so that this debug build spends
    // its time on the engine.
    let hung = LocalPush::start_sampling("127.0.0.1:0".parse().unwrap(), 50)
        .await
        .unwrap();
    let (hung, fine) = (&hung, &engine.push);
    let key = Some(engine.vapid.public_key_base64());
    // Origin A holds every push until it has accepted one: none of the chat's will be
    // accepted before the releasing push below.
    let hold = NewSubscriber {
        application_server_key: key.clone(),
        fault: Some(Fault::HangUntilAccepted { accepted: 1 }),
    };
    let healthy = NewSubscriber {
        application_server_key: key,
        fault: None,
    };
    let (hung_count, fine_count) = (5000, 300);
    let (mut on_hung, mut on_fine, mut devices) = (Vec::new(), Vec::new(), Vec::new());
    // In the members' order A comes first, and B's members are spread among A's.
    for n in 0..hung_count + fine_count {
        let (service, request, members, name) = if n % 17 == 16 && on_fine.len() < fine_count {
            (fine, &healthy, &mut on_fine, format!("b{n}"))
        } else {
            (hung, &hold, &mut on_hung, format!("a{n}"))
        };
        let member = service.add_subscriber(request.clone()).unwrap();
        devices.push(device(&name, &member));
        members.push(member);
    }
    assert_eq!((on_hung.len(), on_fine.len()), (hung_count, fine_count));
    let recipients: Vec<String> = (devices.iter())
        .map(|d| d.subscription.endpoint.clone())
        .collect();
    let seeded = StoreContents {
        devices,
        ..StoreContents::default()
    };
    engine.store.restore(&seeded).await.unwrap();
    let line = line_from_ann("to everyone");
    // More of A's batches (25) than PostgreSQL's fan-out slots, which A must not fill.
    let fan_out = FanOut::chat_line(&line, &recipients);
    engine.store.queue_fan_out(&fan_out).await.unwrap();

    let stop = CancellationToken::new();
    engine.delivery.start(stop.clone());
    eventually("every push to B answered", || async {
        on_fine
            .iter()
            .all(|member| !fine.received_by(&member.id).is_empty())
            .then_some(())
    })
    .await;
    // A has answered nothing yet, and holds no more than its share.
    assert_eq!(hung.client().stats().await.unwrap().accepted, 0);
    for member in &on_fine {
        assert_eq!(
            fine.received_by(&member.id).len(),
            1,
            "B's pushes once each"
        );
    }
    let pushes = hung.client();
    let mut attempted = 0;
    for member in &on_hung {
        attempted += pushes.attempts(&member.id).await.unwrap().len();
    }
    assert!(attempted <= share, "{attempted} pushes to A at once");

    // A answers again once it accepted one push: one a second engine sends (this one's
    // share of A is full).
    let releaser = hung.add_subscriber(healthy.clone()).unwrap();
    let (gone, _gone_heard) = mpsc::channel(GONE_BATCHES_WAITING);
    let other = Delivery::new(
        Arc::clone(&engine.vapid),
        engine.store.clone(),
        settings,
        gone,
    );
    let to_releaser = vec![device("releaser", &releaser).subscription];
    let released = Arc::new(other.unwrap())
        .send(ResolvedFanOut {
            message: PushMessage::Line(line),
            recipients: to_releaser,
        })
        .await;
    assert_eq!(released.delivered, 1);
    eventually("every push to A answered", || async {
        on_hung
            .iter()
            .all(|member| !hung.received_by(&member.id).is_empty())
            .then_some(())
    })
    .await;
    stop.cancel();
    assert!(engine.delivery.drain(DEADLINE).await);
    assert!(engine.store.take_fan_out(&[]).await.unwrap().is_none());
}

#[tokio::test]
async fn test_lines_of_very_different_length_arrive_as_the_same_few_sizes() {
    let engine = Engine::new(quick()).await;
    let member = engine.member("Ann", None).await;
    // Lines of 2 to 600 bytes: one size. A long and a very long line: one more each.
    let chars = [1, 5, 20, 60, 150, 300, 600, 1_200];
    for n in chars {
        let done = engine.deliver(engine.chat_line(&"é".repeat(n)).await);
        assert_eq!(counts(&done.await), report(1, 0, 0, 0), "{n} characters");
    }

    let received = engine.pushes().received(&member.id).await.unwrap();
    let sizes: Vec<usize> = received.iter().map(|push| push.body_len).collect();
    assert_eq!(sizes, [1024, 1024, 1024, 1024, 1024, 1024, 2048, 3070]);
    assert!(sizes.iter().all(|size| PUSH_BODY_SIZES.contains(size)));
    // The padding is inside the encryption: each still decrypts to its whole line.
    let lengths: Vec<usize> = received
        .iter()
        .map(|push| match push.message() {
            Some(PushMessage::Line(line)) => line.msg.chars().count(),
            other => panic!("not a chat line: {other:?}"),
        })
        .collect();
    assert_eq!(lengths, chars);
}

#[tokio::test]
async fn test_a_push_decrypted_by_the_push_service_is_a_declarative_push_message() {
    let settings = DeliverySettings {
        chat_url: "https://chat.example.org/".into(),
        ..quick()
    };
    let engine = Engine::new(settings).await;
    let member = engine.member("Ann", None).await;
    engine.deliver(engine.chat_line("hello").await).await;

    let received = engine.pushes().received(&member.id).await.unwrap();
    let payload = received[0].payload.as_deref().expect("decrypted");
    let push: serde_json::Value = serde_json::from_str(payload).unwrap();
    // The W3C Push API's declarative push message: `web_push` the integer 8030, a
    // `notification` map with a string `title` and an absolute URL to `navigate` to.
    assert_eq!(push["web_push"].as_u64(), Some(8030), "{payload}");
    let notification = push["notification"]
        .as_object()
        .expect("a notification map");
    assert_eq!(notification["title"].as_str(), Some("Ann"));
    let navigate = notification["navigate"].as_str().expect("navigate");
    let navigate = url::Url::parse(navigate).expect("navigate is an absolute URL");
    assert_eq!(navigate.as_str(), "https://chat.example.org/");
    // Its other members, with the spec's types: the text once, as the body.
    assert_eq!(notification["body"].as_str(), Some("hello"));
    assert_eq!(notification["tag"].as_str(), Some("chat:Ann"));
    assert_eq!(notification["mutable"].as_bool(), Some(true));
    assert_eq!(push["mutable"].as_bool(), Some(true));
    assert_eq!(payload.matches("hello").count(), 1, "{payload}");
    // No app badge: one payload serves the whole fan-out.
    assert!(push.get("app_badge").is_none() && notification.get("app_badge").is_none());
    assert_eq!(push["pushchat"]["action"], "chatMsg");
}
