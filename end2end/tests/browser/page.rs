//! The page as people use a chat: the keyboard (Enter sends, Shift+Enter is a new line,
//! Enter in the name field subscribes), links made safe anchors, day separators, and a
//! line typed while the server cannot be reached, sent once it is back. Each runs in
//! headless Firefox against the real server, as the other browser tests do.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use end2end::eventually;
use fantoccini::Locator;
use serde_json::{json, Value};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};

use super::{Browser, Setup, Stack, ONE_AT_A_TIME};

/// WebDriver's keys for Enter and Shift.
const ENTER: &str = "\u{E007}";
const SHIFT: &str = "\u{E008}";

/// A browser that joined as `name` by pressing Enter in the name field.
async fn joined_by_enter(stack: &Stack, name: &str) -> Browser {
    let browser = stack.firefox().await;
    browser.open_chat().await;
    browser.screenshot("page-visitor").await;
    browser
        .client
        .find(Locator::Css("#name"))
        .await
        .unwrap()
        .send_keys(&format!("{name}{ENTER}"))
        .await
        .unwrap();
    browser.wait_for_label("Unsubscribe").await;
    browser
}

impl Browser {
    /// Types `keys` into the message box, as a person's keyboard would.
    async fn type_message(&self, keys: &str) {
        self.client
            .find(Locator::Css("#message"))
            .await
            .unwrap()
            .send_keys(keys)
            .await
            .unwrap();
    }

    /// Runs `script`, which returns JSON, and reads its answer.
    async fn json_of(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }
}

#[tokio::test]
async fn test_enter_in_the_name_field_subscribes_enter_sends_and_shift_enter_breaks_the_line() {
    let _one = ONE_AT_A_TIME.lock().await;
    let stack = Stack::start().await;
    let ann = joined_by_enter(&stack, "Ann").await;
    assert_eq!(ann.members().await, ["Ann"]);

    // Each Send Keys releases the modifiers it pressed when it ends.
    ann.type_message(&format!("first{SHIFT}{ENTER}")).await;
    ann.type_message("second").await;
    // Shift+Enter made a new line in the box and sent nothing.
    let held = ann
        .json_of("return document.querySelector('#message').value")
        .await;
    assert_eq!(held, json!("first\nsecond"));
    assert!(ann.lines().await.is_empty());

    ann.type_message(ENTER).await;
    ann.wait_for_lines(&[("Ann", "first\nsecond")]).await;
    let box_after = ann
        .json_of("return document.querySelector('#message').value")
        .await;
    assert_eq!(
        box_after,
        json!(""),
        "Enter sent the line and emptied the box"
    );
    ann.screenshot("page-one-line").await;
}

#[tokio::test]
async fn test_http_addresses_in_a_line_are_anchors_opening_a_new_tab_and_a_script_url_stays_text() {
    let _one = ONE_AT_A_TIME.lock().await;
    let stack = Stack::start().await;
    let ann = joined_by_enter(&stack, "Ann").await;

    let msg = "see https://example.org/a?b=1. or (http://example.net/x) \
        not javascript:window.canary=1 nor data:text/html,<b>hi</b>";
    ann.say(msg).await;
    ann.wait_for_lines(&[("Ann", msg)]).await;
    let anchors = ann
        .json_of(
            "return [...document.querySelectorAll('#messages .text a')].map(a => ({
                href: a.getAttribute('href'), text: a.textContent, rel: a.rel,
                target: a.target, children: a.children.length }))",
        )
        .await;
    let anchor = |href: &str| {
        json!({ "href": href, "text": href, "rel": "noopener noreferrer",
            "target": "_blank", "children": 0 })
    };
    assert_eq!(
        anchors,
        json!([
            anchor("https://example.org/a?b=1"),
            anchor("http://example.net/x")
        ])
    );
    // The rest is text: no other element inside the line's text.
    let elements = ann
        .json_of("return document.querySelectorAll('#messages .text *').length")
        .await;
    assert_eq!(elements, json!(2));
    assert_eq!(ann.canary().await, Value::Null);
    ann.screenshot("page-links").await;
    // On a phone the members are a panel the bar opens, over the conversation.
    ann.client.set_window_size(390, 844).await.unwrap();
    ann.screenshot("page-links-phone").await;
    ann.client
        .find(Locator::Css("#members-toggle"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let members = ann.client.find(Locator::Css("#members")).await.unwrap();
    assert!(members.is_displayed().await.unwrap());
    ann.screenshot("page-members-phone").await;
}

#[tokio::test]
async fn test_lines_of_other_days_sit_under_their_day_separator() {
    let _one = ONE_AT_A_TIME.lock().await;
    let stack = Stack::start().await;
    let ann = joined_by_enter(&stack, "Ann").await;
    ann.say("now").await;
    eventually("the worker to keep the page for offline use", || async {
        (!ann.shell_caches().await.is_empty()).then_some(())
    })
    .await;

    // The room this browser keeps for when the server cannot be reached gets lines of
    // yesterday noon and of ten days ago, in the reader's time zone; the page shows that
    // room when it loads without the server.
    let ten_days_ago = ann
        .json_of(
            "const room = JSON.parse(localStorage.getItem('pushchat.room'));
            const at = (days) => { const d = new Date(); d.setDate(d.getDate() - days);
                d.setHours(12, 0, 0, 0); return d; };
            const old = at(10);
            room.history.unshift(
                { id: 0, name: 'Bo', msg: 'long ago', time: old.getTime() },
                { id: 1, name: 'Bo', msg: 'yesterday', time: at(1).getTime() });
            room.history = room.history.map((line, at) => ({ ...line, id: at + 1 }));
            localStorage.setItem('pushchat.room', JSON.stringify(room));
            return [old.getDate(), old.toLocaleString('en-US', { month: 'long' })];",
        )
        .await;
    let (day, month) = (&ten_days_ago[0], ten_days_ago[1].as_str().unwrap());
    stack.server.process.kill().await;
    ann.client
        .execute("location.reload()", vec![])
        .await
        .unwrap();
    eventually("the offline banner", || ann.text_of_any("#offline")).await;

    ann.wait_for_lines(&[("Bo", "long ago"), ("Bo", "yesterday"), ("Ann", "now")])
        .await;
    let rows: Vec<String> = serde_json::from_value(
        ann.json_of(
            "return [...document.querySelectorAll('#messages li')]
                .map(li => li.classList.contains('day') ? '[' + li.textContent + ']'
                    : li.querySelector('.text').textContent)",
        )
        .await,
    )
    .unwrap();
    let long_ago = format!(" {day} {month}");
    assert_eq!(rows.len(), 6, "{rows:?}");
    assert!(
        rows[0].starts_with('[') && rows[0].contains(&long_ago),
        "{rows:?}"
    );
    assert_eq!(
        rows[1..],
        ["long ago", "[Yesterday]", "yesterday", "[Today]", "now"]
    );
    // Hovering a line shows when it was sent in full.
    let full = ann
        .json_of("return document.querySelector('#messages li.line').title")
        .await;
    assert!(
        full.as_str()
            .is_some_and(|full| full.contains(&long_ago) && full.contains("12:00")),
        "{full}"
    );
}

#[tokio::test]
async fn test_a_line_typed_while_the_server_is_unreachable_is_kept_and_sent_when_it_is_back() {
    let _one = ONE_AT_A_TIME.lock().await;
    let stack = Stack::start().await;
    let gate = Gate::start(&stack.server.base).await;
    let bob = joined_by_enter(&stack, "Bob").await;
    let ann = stack.firefox_at(&gate.url, Setup::default()).await;
    ann.open_chat().await;
    ann.join("Ann").await;

    // The way to the server breaks while Ann's page is open; she sends a line.
    gate.close();
    ann.type_message(&format!("are you there?{ENTER}")).await;
    let banner = eventually("the offline banner", || ann.text_of_any("#offline")).await;
    assert!(banner.contains("kept"), "{banner}");
    let waiting = eventually("the line shown as not sent yet", || {
        ann.text_of_any("#messages li.waiting")
    })
    .await;
    assert!(
        waiting.contains("are you there?") && waiting.contains("Not sent"),
        "{waiting}"
    );
    ann.screenshot("page-offline-line-kept").await;

    // The way is back: the page finds the server again by itself and sends the line.
    gate.open();
    bob.wait_for_lines(&[("Ann", "are you there?")]).await;
    ann.wait_for_lines(&[("Ann", "are you there?")]).await;
    eventually("the offline banner to go", || async {
        ann.text_of_any("#offline").await.is_none().then_some(())
    })
    .await;
    let kept = ann
        .json_of("return localStorage.getItem('pushchat.outbox')")
        .await;
    assert_eq!(kept, Value::Null, "nothing is left to send");
}

/// A TCP relay in front of the server that can be shut, as a broken network is: shut, it
/// drops the connections it carries and every new one.
struct Gate {
    url: String,
    open: Arc<AtomicBool>,
    opened: watch::Sender<bool>,
}

impl Gate {
    async fn start(server: &str) -> Gate {
        let upstream = server.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let open = Arc::new(AtomicBool::new(true));
        let (opened, _) = watch::channel(true);
        let (is_open, state) = (Arc::clone(&open), opened.clone());
        tokio::spawn(async move {
            while let Ok((browser, _)) = listener.accept().await {
                if !is_open.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let mut shut = state.subscribe();
                tokio::spawn(async move {
                    let (mut browser, mut server) = (browser, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut browser, &mut server) => {}
                        _ = shut.wait_for(|open| !open) => {}
                    }
                });
            }
        });
        Gate { url, open, opened }
    }

    fn close(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.opened.send_replace(false);
    }

    fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
        self.opened.send_replace(true);
    }
}
