//! iPhone Safari outside the Home Screen: there the Push API does not exist, and the only
//! way to join is the web app added to the Home Screen. Played by a Firefox that says it is
//! an iPhone's Safari and has no service workers or Push API, as Safari there has none.

use super::{eventually_members, Room, Setup, ONE_AT_A_TIME};
use fantoccini::Locator;

const IPHONE_SAFARI: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_4 like Mac OS X) \
    AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.4 Mobile/15E148 Safari/604.1";

#[tokio::test]
async fn test_iphone_safari_outside_the_home_screen_is_told_to_add_the_chat_there() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Room { stack, alice, .. } = &Room::open("Alice").await;
    alice.say("hello from the desktop").await;
    let iphone = stack
        .firefox_with(Setup {
            push: false,
            user_agent: Some(IPHONE_SAFARI),
            ..Setup::default()
        })
        .await;
    iphone.client.goto(&iphone.chat_url).await.unwrap();

    iphone
        .wait_for_lines(&[("Alice", "hello from the desktop")])
        .await;
    eventually_members(&iphone, &["Alice", "Bob"]).await;
    let status = iphone.text_of("#status").await;
    assert!(
        status.contains("Add to Home Screen") && !status.contains("cannot receive push"),
        "{status}"
    );
    // No Subscribe that cannot work.
    for control in ["#name", "#subscribe"] {
        let element = iphone.client.find(Locator::Css(control)).await.unwrap();
        assert!(!element.is_enabled().await.unwrap(), "{control} is enabled");
    }
}
