//! Scroll-back in Firefox: a conversation longer than what the page loads at first is read
//! back by scrolling up, a page of older lines at a time, to its start, while the line the
//! person was reading stays where it was on the screen.

use end2end::{eventually, virtual_browser};

use super::{Browser, Stack, ONE_AT_A_TIME};

/// More lines than the page loads at first (200) and reads back at once (100) together:
/// whatever the page reads by itself before the person scrolls, scrolling up reads more.
const LINES: usize = 450;

/// Safari has no CSS scroll anchoring; switched off here too, what keeps the view in place
/// is the page's own doing.
const WITHOUT_SCROLL_ANCHORING: &str = "const style = document.createElement('style');
    style.textContent = '* { overflow-anchor: none !important; }';
    document.head.append(style);";

/// The person scrolls up to the top of the conversation, in whatever box it scrolls:
/// returns the oldest line shown (its id), and the next one (its id, and how far it is from
/// the top of the window). The next one is what the reader's place is judged by: the
/// oldest may lose its sender's name once older lines of the same sender join its group.
const SCROLL_TO_THE_TOP: &str = "document.querySelector('#older-lines').scrollIntoView();
    const [oldest, next] = document.querySelectorAll('#messages li[data-id]');
    return [oldest.dataset.id, next.dataset.id, next.getBoundingClientRect().top];";

/// The id of the oldest line shown, once no older lines are on their way.
async fn oldest_line_when_idle(browser: &Browser) -> String {
    eventually("older lines to arrive", || async {
        let busy = "const more = document.querySelector('#older-lines');
            return more !== null && more.getAttribute('aria-busy') === 'true'
                ? '' : document.querySelector('#messages li[data-id]').dataset.id;";
        let oldest = browser.script_value(busy).await;
        (!oldest.is_empty()).then_some(oldest)
    })
    .await
}

/// Where the line with `id` is, from the top of the window.
async fn top_of_line(browser: &Browser, id: &str) -> f64 {
    let script = format!(
        "return document.querySelector('#messages li[data-id=\"{id}\"]')
            .getBoundingClientRect().top"
    );
    let top = browser.client.execute(&script, vec![]).await.unwrap();
    top.as_f64().expect("a number")
}

#[tokio::test]
async fn test_scrolling_up_reads_older_lines_and_keeps_the_line_being_read_in_view() {
    let _one = ONE_AT_A_TIME.lock().await;
    let stack = Stack::start_with(&["--chat-lines-per-minute", "1000"]).await;
    let bob = virtual_browser(&stack.server, &stack.pushes()).await;
    stack.server.subscribe("Bob", &bob).await;
    for n in 0..LINES {
        stack.server.chat(&bob, &format!("line {n}")).await;
    }

    let ann = stack.firefox().await;
    ann.open_chat().await;
    ann.client
        .execute(WITHOUT_SCROLL_ANCHORING, vec![])
        .await
        .unwrap();
    ann.join("Ann").await;
    let newest = format!("line {}", LINES - 1);
    eventually("the newest line to show", || async {
        let lines = ann.lines().await;
        (lines.last().map(|(_, text)| text) == Some(&newest)).then_some(())
    })
    .await;
    assert!(
        ann.lines().await.len() < LINES,
        "the page loads fewer at first"
    );

    let mut pages = 0;
    while ann.text_of_any("#history-start").await.is_none() {
        let before = oldest_line_when_idle(&ann).await;
        if ann.text_of_any("#history-start").await.is_some() {
            break;
        }
        let (oldest, reading, top): (String, String, f64) =
            serde_json::from_value(ann.client.execute(SCROLL_TO_THE_TOP, vec![]).await.unwrap())
                .unwrap();
        assert_eq!(oldest, before);
        eventually("an older line to show above", || async {
            (oldest_line_when_idle(&ann).await != oldest).then_some(())
        })
        .await;
        eventually("the line being read to stay where it was", || async {
            ((top_of_line(&ann, &reading).await - top).abs() < 2.0).then_some(())
        })
        .await;
        pages += 1;
    }
    assert!(pages > 0, "scrolling up read older lines");
    assert_eq!(
        ann.text_of("#history-start").await,
        "Start of the conversation"
    );
    let texts: Vec<String> = ann
        .lines()
        .await
        .into_iter()
        .map(|(_, text)| text)
        .collect();
    let sent: Vec<String> = (0..LINES).map(|n| format!("line {n}")).collect();
    assert_eq!(texts, sent);
}
