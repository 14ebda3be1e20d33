//! The service worker's push path in Chromium, the browser most people open the chat in.
//!
//! Chromium's push service is Google's, out of reach here: offline its
//! `pushManager.subscribe()` never settles. So the test stands in for that push service
//! at both ends, and for nothing else:
//! - the page's `PushManager` hands out a subscription the test made on the local push
//!   service (a virtual subscriber, which decrypts what it receives), so the person's own
//!   Subscribe press makes the page a member through the real `/api/subscribe`, and the
//!   page then listens for pushes as it does in any browser. A member is needed: only a
//!   member's page opens the relay from its worker. The stub lives in the page alone
//!   (`Page.addScriptToEvaluateOnNewDocument`); the worker and everything else is
//!   Chromium's own.
//! - every push the server sends to that subscription (encrypted, signed and padded for
//!   real) is decrypted by the local push service, and the test hands exactly that
//!   plaintext to the page's service worker with DevTools'
//!   `ServiceWorker.deliverPushMessage`, which fires the worker's `push` event as Chromium
//!   does with a message from its push service. So the worker gets what the server
//!   pushed, whatever shape the payload has, and no test writes a payload by hand.
//!
//! Notifications are read through the worker's registration (`getNotifications()`). No
//! headless browser can click a notification, and Chromium has no notification backend
//! a test can stand in for, so the click handler gets a synthetic `notificationclick`
//! dispatched inside the worker (`Runtime.evaluate` on its DevTools target).

use end2end::{eventually, received, virtual_browser, DevTools};
use localpush::{LocalPushClient, VirtualSubscription};
use serde_json::{json, Value};
use tempfile::TempDir;

use super::{eventually_members, Browser, Stack, ONE_AT_A_TIME};

/// Takes the place of Chromium's push service in the page: after `subscribe()`,
/// `getSubscription()` too gives the subscription `SUBSCRIPTION` (its `toJSON()`), as an
/// object the page's code takes for a `PushSubscription` (`instanceof` holds).
const STAND_IN_SUBSCRIPTION: &str = r#"
    (() => {
      const json = SUBSCRIPTION;
      let subscribed = false;
      const subscription = Object.create(PushSubscription.prototype, {
        endpoint: { value: json.endpoint },
        expirationTime: { value: null },
        toJSON: { value: () => json },
        unsubscribe: { value: async () => { subscribed = false; return true; } },
      });
      PushManager.prototype.subscribe = async function () {
        subscribed = true;
        return subscription;
      };
      PushManager.prototype.getSubscription = async function () {
        return subscribed ? subscription : null;
      };
    })();
"#;

/// Run in the worker: a synthetic `notificationclick` on the notification tagged `TAG`;
/// resolves with the first window request the handler makes, or null when no such
/// notification is shown.
const CLICK_NOTIFICATION: &str = r#"
    (async () => {
      const [shown] = await self.registration.getNotifications({ tag: TAG });
      if (!shown) return null;
      const { focus } = WindowClient.prototype;
      const { openWindow } = Clients.prototype;
      const asked = await new Promise((resolve) => {
        WindowClient.prototype.focus = function () {
          resolve(['focus', this.url]);
          return focus.call(this);
        };
        Clients.prototype.openWindow = function (url) {
          resolve(['openWindow', new URL(url, self.location.href).href]);
          return openWindow.call(this, url);
        };
        self.dispatchEvent(new NotificationEvent('notificationclick', { notification: shown }));
      });
      WindowClient.prototype.focus = focus;
      Clients.prototype.openWindow = openWindow;
      return asked;
    })()
"#;

/// Headless Chromium on the chat, with DevTools sessions on the browser and on the chat's
/// tab, and the subscription its page holds on the local push service.
struct Chromium {
    browser: Browser,
    devtools: DevTools,
    page: DevTools,
    /// The chat's origin, `http://127.0.0.1:PORT`.
    origin: String,
    subscription: VirtualSubscription,
    pushes: LocalPushClient,
    /// How many of the pushes to `subscription` were handed to the worker so far.
    delivered: usize,
    _profile: TempDir,
}

impl Chromium {
    /// Chromium on `stack`'s chat, allowed to show notifications, whose page holds a
    /// subscription on the local push service; the chat is not opened yet.
    async fn start(stack: &Stack) -> Chromium {
        let profile = tempfile::tempdir().unwrap();
        let origin = stack.server.base.clone();
        let browser = Browser::chromium(&origin, profile.path()).await;
        let address = browser
            .client
            .capabilities()
            .and_then(|capabilities| capabilities.get("goog:chromeOptions"))
            .and_then(|options| options["debuggerAddress"].as_str())
            .expect("chromedriver names Chromium's DevTools address")
            .to_owned();
        let devtools = DevTools::connect(&address).await.unwrap();
        let grant = json!({ "origin": origin, "permissions": ["notifications"] });
        devtools
            .call("Browser.grantPermissions", grant)
            .await
            .unwrap();
        let tabs: Vec<Value> = devtools
            .targets()
            .await
            .unwrap()
            .into_iter()
            .filter(|target| target["type"] == "page")
            .collect();
        let [tab] = tabs.as_slice() else {
            panic!("a new Chromium has one tab: {tabs:?}")
        };
        let page = devtools
            .attach(tab["targetId"].as_str().unwrap())
            .await
            .unwrap();

        let subscription = virtual_browser(&stack.server, &stack.pushes()).await;
        let stand_in = STAND_IN_SUBSCRIPTION.replace(
            "SUBSCRIPTION",
            &json!(subscription.subscription).to_string(),
        );
        page.call("Page.enable", json!({})).await.unwrap();
        page.call(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({ "source": stand_in }),
        )
        .await
        .unwrap();
        page.call("ServiceWorker.enable", json!({})).await.unwrap();
        // Chromium logs the end of every push event it dispatches (once the worker's
        // `waitUntil` settles) to DevTools' background-service log: the test's sign that
        // the worker is done with a push before it reads the notifications.
        page.call(
            "BackgroundService.startObserving",
            json!({ "service": "pushMessaging" }),
        )
        .await
        .unwrap();
        page.call(
            "BackgroundService.setRecording",
            json!({ "service": "pushMessaging", "shouldRecord": true }),
        )
        .await
        .unwrap();
        Chromium {
            browser,
            devtools,
            page,
            origin,
            subscription,
            pushes: stack.pushes(),
            delivered: 0,
            _profile: profile,
        }
    }

    /// The id DevTools gives the site's worker registration, once it reported it.
    async fn registration_id(&self) -> String {
        let scope = format!("{}/", self.origin);
        eventually("Chromium to report the worker's registration", || async {
            let updates = self.page.events("ServiceWorker.workerRegistrationUpdated");
            let registrations = updates.iter().flat_map(|update| {
                update["registrations"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            });
            let ours = registrations
                .rev()
                .find(|registration| registration["scopeURL"] == scope.as_str())?;
            (ours["isDeleted"] == false)
                .then(|| ours["registrationId"].as_str().map(str::to_owned))?
        })
        .await
    }

    /// Waits until a version of the worker `registration` is activated: the page's
    /// `serviceWorker.ready` resolves while it is still activating, and DevTools drops a
    /// push handed to a registration with no activated worker without a word.
    async fn wait_until_activated(&self, registration: &str) {
        eventually("the worker to be activated", || async {
            let updates = self.page.events("ServiceWorker.workerVersionUpdated");
            let activated = updates.iter().any(|update| {
                update["versions"].as_array().is_some_and(|versions| {
                    versions.iter().any(|version| {
                        version["registrationId"] == registration
                            && version["status"] == "activated"
                    })
                })
            });
            activated.then_some(())
        })
        .await;
    }

    /// Waits for the next `count` pushes the server sent to this page's subscription and
    /// hands each, as the local push service decrypted it, to the worker.
    async fn relay_pushes(&mut self, count: usize) {
        let pushes = received(&self.pushes, &self.subscription, self.delivered + count).await;
        let registration = self.registration_id().await;
        self.wait_until_activated(&registration).await;
        for push in &pushes[self.delivered..] {
            let data = push.payload.as_deref().expect("a push with a payload");
            let delivery = json!({
                "origin": self.origin,
                "registrationId": registration,
                "data": data,
            });
            self.page
                .call("ServiceWorker.deliverPushMessage", delivery)
                .await
                .unwrap();
        }
        self.delivered = pushes.len();
        self.wait_until_handled().await;
    }

    /// Waits until the worker finished the push event of every push handed to it.
    ///
    /// Reading the notifications before then loses them: Chromium's
    /// `getNotifications()` deletes from its database every notification its display
    /// does not list yet, so a read while the worker's `showNotification` is on its way
    /// forgets that notification for good.
    async fn wait_until_handled(&self) {
        eventually(
            "Chromium's worker to finish every push handed to it",
            || async {
                let completed = self
                    .page
                    .events("BackgroundService.backgroundServiceEventReceived")
                    .iter()
                    .filter(|event| {
                        event["backgroundServiceEvent"]["eventName"] == "Push event completed"
                    })
                    .count();
                (completed >= self.delivered).then_some(())
            },
        )
        .await;
    }

    /// The worker's state, as DevTools last reported each of its versions: `runningStatus`
    /// ("starting", "running", "stopping", "stopped") by version id.
    fn running_statuses(&self) -> Vec<(String, String)> {
        let mut latest: Vec<(String, String)> = Vec::new();
        for update in self.page.events("ServiceWorker.workerVersionUpdated") {
            for version in update["versions"].as_array().cloned().unwrap_or_default() {
                let id = version["versionId"].as_str().unwrap_or_default().to_owned();
                let status = version["runningStatus"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                latest.retain(|(known, _)| *known != id);
                latest.push((id, status));
            }
        }
        latest
    }

    /// Stops every service worker, as the browser does with idle ones, and waits until
    /// DevTools reports the site's worker stopped.
    async fn stop_workers(&self) {
        self.page
            .call("ServiceWorker.stopAllWorkers", json!({}))
            .await
            .unwrap();
        eventually("the worker to stop", || async {
            let statuses = self.running_statuses();
            let stopped =
                !statuses.is_empty() && statuses.iter().all(|(_, status)| status == "stopped");
            stopped.then_some(())
        })
        .await;
    }

    /// Runs `expression` (a promise) inside the site's service worker; its value.
    async fn in_worker(&self, expression: &str) -> Value {
        let worker_url = format!("{}/sw.js", self.origin);
        let target = eventually("the site's service worker to run", || async {
            let targets = self.devtools.targets().await.ok()?;
            targets.into_iter().find(|target| {
                target["type"] == "service_worker" && target["url"] == worker_url.as_str()
            })
        })
        .await;
        let worker = self
            .devtools
            .attach(target["targetId"].as_str().unwrap())
            .await
            .unwrap();
        let evaluation = json!({
            "expression": expression,
            "awaitPromise": true,
            "returnByValue": true,
        });
        let answer = worker.call("Runtime.evaluate", evaluation).await.unwrap();
        assert!(
            answer.get("exceptionDetails").is_none(),
            "the worker threw: {answer}"
        );
        answer["result"]["value"].clone()
    }

    /// Dispatches a `notificationclick` on the notification tagged `tag` inside the
    /// worker, as a person's click would, and returns what the handler asked of the
    /// browser: `("focus", URL of the window)` or `("openWindow", URL)`; `None` while no
    /// such notification is shown.
    ///
    /// Chromium lets a worker focus or open a window only during a click the browser
    /// itself dispatched, and refuses a synthetic one ("Not allowed to focus a window"):
    /// so the test watches the handler's request, on its way to Chromium's own
    /// `focus()` and `openWindow()`.
    async fn click_notification(&self, tag: &str) -> Option<(String, String)> {
        let script = CLICK_NOTIFICATION.replace("TAG", &json!(tag).to_string());
        serde_json::from_value(self.in_worker(&script).await).unwrap()
    }
}

/// Cy in Chromium, a member by the page's own Subscribe press, and then Alice, a member
/// through the API from a browser the local push service holds. Chromium's worker was
/// handed both joins.
struct ChromiumRoom {
    stack: Stack,
    cy: Chromium,
    alice: VirtualSubscription,
}

impl ChromiumRoom {
    async fn open() -> ChromiumRoom {
        let stack = Stack::start().await;
        let mut cy = Chromium::start(&stack).await;
        cy.browser.open_chat().await;
        cy.browser.join("Cy").await;
        cy.relay_pushes(1).await;
        // DevTools hands a push over without waiting for the worker to finish the one
        // before, and the worker builds a notification on the one the push before left
        // (a replaced join, a count of lines): so each push is handed over once the one
        // before has shown its notification.
        notification_titled(&cy.browser, "Cy joined").await;
        let alice = virtual_browser(&stack.server, &stack.pushes()).await;
        stack.server.subscribe("Alice", &alice).await;
        cy.relay_pushes(1).await;
        ChromiumRoom { stack, cy, alice }
    }

    /// Alice says `lines`, one after the other; Chromium's worker is handed each.
    async fn alice_says(&mut self, lines: &[&str]) {
        for line in lines {
            self.stack.server.chat(&self.alice, line).await;
        }
        self.cy.relay_pushes(lines.len()).await;
    }
}

/// Waits until `browser`'s worker shows a notification titled `title`; returns every
/// notification it shows, as (title, body).
async fn notification_titled(browser: &Browser, title: &str) -> Vec<(String, String)> {
    eventually(&format!("a notification titled {title:?}"), || async {
        let shown = browser.notifications().await;
        shown
            .iter()
            .any(|(shown, _)| shown == title)
            .then_some(shown)
    })
    .await
}

#[tokio::test]
async fn test_chromium_shows_a_join_and_its_open_page_adds_the_member() {
    let _one = ONE_AT_A_TIME.lock().await;
    let ChromiumRoom { cy, .. } = &ChromiumRoom::open().await;
    // Cy's page had only Cy when it joined: Alice comes from the relayed push.
    eventually_members(&cy.browser, &["Alice", "Cy"]).await;
    let shown = notification_titled(&cy.browser, "Alice joined").await;
    // A newer member change replaces the older one.
    assert!(
        !shown.iter().any(|(title, _)| title == "Cy joined"),
        "{shown:?}"
    );
}

#[tokio::test]
async fn test_chromium_relays_a_line_to_the_open_page_and_notifies_it_only_when_no_window_is_focused(
) {
    let _one = ONE_AT_A_TIME.lock().await;
    let room = &mut ChromiumRoom::open().await;
    let cy = &room.cy.browser;
    assert_eq!(
        cy.script_value("return String(document.hasFocus())").await,
        "true"
    );

    room.alice_says(&["are you there?"]).await;
    let cy = &room.cy.browser;
    cy.wait_for_lines(&[("Alice", "are you there?")]).await;

    // Cy looks at another tab: the next line is relayed and notified too.
    cy.hide_behind_a_new_tab().await;
    room.alice_says(&["hello?"]).await;
    let cy = &room.cy.browser;
    cy.wait_for_lines(&[("Alice", "are you there?"), ("Alice", "hello?")])
        .await;
    let shown = notification_titled(cy, "Alice").await;
    // Had the first line been notified, this one would read "2 new messages from Alice".
    let lines: Vec<_> = shown.iter().filter(|(title, _)| title == "Alice").collect();
    assert_eq!(
        lines,
        [&("Alice".to_owned(), "hello?".to_owned())],
        "{shown:?}"
    );
}

#[tokio::test]
async fn test_chromium_collapses_three_lines_from_one_sender_into_one_notification() {
    let _one = ONE_AT_A_TIME.lock().await;
    let room = &mut ChromiumRoom::open().await;
    room.cy.browser.hide_behind_a_new_tab().await;

    // Each line once the one before is shown (see `ChromiumRoom::open`).
    let counted = [
        ("Alice", "one"),
        ("pushchat", "2 new messages from Alice"),
        ("pushchat", "3 new messages from Alice"),
    ];
    let mut shown = Vec::new();
    for (line, (title, body)) in ["one", "two", "three"].into_iter().zip(counted) {
        room.alice_says(&[line]).await;
        let cy = &room.cy.browser;
        shown = eventually(&format!("the notification to read {body:?}"), || async {
            let shown = cy.notifications().await;
            let counted = (title.to_owned(), body.to_owned());
            shown.contains(&counted).then_some(shown)
        })
        .await;
    }
    let from_alice = shown
        .iter()
        .filter(|(title, body)| title == "Alice" || body.contains("from Alice"))
        .count();
    assert_eq!(from_alice, 1, "{shown:?}");
}

#[tokio::test]
async fn test_chromium_relays_a_push_to_the_open_page_after_its_worker_was_stopped() {
    let _one = ONE_AT_A_TIME.lock().await;
    let room = &mut ChromiumRoom::open().await;
    // The browser stops an idle worker; the port the page handed it is lost with it.
    room.cy.stop_workers().await;

    room.alice_says(&["still there?"]).await;
    room.cy
        .browser
        .wait_for_lines(&[("Alice", "still there?")])
        .await;
    // The push started the worker again.
    let statuses = room.cy.running_statuses();
    assert!(
        statuses.iter().any(|(_, status)| status == "running"),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn test_chromium_notificationclick_focuses_an_open_window_or_opens_one() {
    let _one = ONE_AT_A_TIME.lock().await;
    let room = &mut ChromiumRoom::open().await;
    let cy = &room.cy;
    let chat = format!("{}/", cy.origin);
    // Cy looks at another tab; a click on the join's notification asks for the chat's.
    cy.browser.hide_behind_a_new_tab().await;
    let asked = eventually("the join's notification, to click it", || {
        cy.click_notification("members")
    })
    .await;
    assert_eq!(asked, ("focus".to_owned(), chat.clone()));
    eventually("the clicked notification to close", || async {
        let shown = cy.browser.notifications().await;
        (!shown.iter().any(|(title, _)| title == "Alice joined")).then_some(())
    })
    .await;

    // Cy leaves the chat for another page; a click on a line's notification opens it.
    cy.browser.close_the_new_tab().await;
    cy.browser.client.goto("about:blank").await.unwrap();
    room.alice_says(&["come back"]).await;
    let cy = &room.cy;
    let asked = eventually("the line's notification, to click it", || {
        cy.click_notification("chat:Alice")
    })
    .await;
    assert_eq!(asked, ("openWindow".to_owned(), chat));
}
