//! Whether everyone can use the page, checked in real Firefox: axe-core (the rule engine
//! behind most accessibility audits) runs on each state of the page (before joining,
//! joined, with messages, removed by the operator, offline) in light and dark themes, at
//! desktop and phone widths, and any serious or critical violation fails the test; the
//! whole flow works by keyboard alone, with the focus visible; member changes are
//! announced politely to screen readers. The same states are saved as screenshots when
//! `PUSHCHAT_SCREENSHOTS` names a folder (`.ci/test` sets `target/screenshots`).
//!
//! axe-core's script comes from npm, pinned in `.ci/tools.sh`, which also says where it
//! is (`PUSHCHAT_AXE_JS`); each check injects it into the page through WebDriver.

use std::path::PathBuf;

use end2end::eventually;
use fantoccini::{
    actions::{InputSource, KeyAction, KeyActions},
    key::Key,
};
use serde::Deserialize;
use serde_json::Value;

use super::{eventually_members, Browser, Setup, Stack, ONE_AT_A_TIME};

/// Window sizes the page is checked and photographed at: a laptop, and a phone held
/// upright (an iPhone's CSS pixels).
const WIDTHS: [(&str, u32, u32); 2] = [("desktop", 1280, 800), ("phone", 390, 844)];

/// Firefox keeps a window at least this wide (in CSS pixels).
const NARROWEST_WINDOW: u32 = 500;

/// What the page's `prefers-color-scheme` media query reports.
#[derive(Clone, Copy, Debug)]
enum Theme {
    Light,
    Dark,
}

impl Theme {
    fn name(self) -> &'static str {
        match self {
            Theme::Light => "light",
            Theme::Dark => "dark",
        }
    }

    /// Firefox's `layout.css.prefers-color-scheme.content-override`: 0 dark, 1 light.
    fn firefox_override(self) -> u8 {
        match self {
            Theme::Light => 1,
            Theme::Dark => 0,
        }
    }
}

/// One rule axe-core found broken, and where.
#[derive(Debug, Deserialize)]
struct Violation {
    id: String,
    /// minor, moderate, serious or critical.
    impact: Option<String>,
    help: String,
    /// CSS selectors of the offending elements.
    nodes: Vec<String>,
}

impl Violation {
    fn blocks_people(&self) -> bool {
        matches!(self.impact.as_deref(), Some("serious" | "critical"))
    }
}

/// Runs axe-core on the page, answering its violations in the shape of [`Violation`].
const RUN_AXE: &str = "const done = arguments[arguments.length - 1];
    axe.run(document, { resultTypes: ['violations'] })
        .then(results => done(results.violations.map(v => ({
            id: v.id,
            impact: v.impact,
            help: v.help,
            nodes: v.nodes.map(node => node.target.join(' ')),
        }))))
        .catch(error => done(String(error)));";

/// axe-core's script, as `.ci/tools.sh` installs it.
fn axe_script() -> String {
    let path = std::env::var_os("PUSHCHAT_AXE_JS")
        .map(PathBuf::from)
        .expect("PUSHCHAT_AXE_JS names axe-core's script: source .ci/tools.sh first");
    std::fs::read_to_string(&path).unwrap_or_else(|error| {
        panic!(
            "cannot read axe-core's script {} ({error}): run install_browser_test_tools \
            from .ci/tools.sh (bash .ci/test does)",
            path.display()
        )
    })
}

impl Browser {
    /// Checks the page as it is now with axe-core, in both themes and at both widths,
    /// and saves a screenshot of each as `STATE-WIDTH-THEME.png`. Fails on any serious
    /// or critical violation; prints every violation found.
    async fn check_and_photograph(&self, state: &str, axe: &str) {
        for theme in [Theme::Light, Theme::Dark] {
            self.use_theme(theme).await;
            for (width_name, width, height) in WIDTHS {
                self.use_viewport(width, height).await;
                let seen = format!("{state}-{width_name}-{}", theme.name());
                self.assert_accessible(&seen, axe).await;
                self.screenshot(&seen).await;
            }
        }
        self.use_theme(Theme::Light).await;
        let (_, width, height) = WIDTHS[0];
        self.use_viewport(width, height).await;
    }

    /// Gives the page a viewport `width` CSS pixels wide (about `height` high). Narrower
    /// than Firefox's narrowest window, the page is zoomed to fit, as a phone's browser
    /// scales its pixels (needs [`Setup::system_access`]).
    async fn use_viewport(&self, width: u32, height: u32) {
        let zoom = f64::from(width.max(NARROWEST_WINDOW)) / f64::from(width);
        let scaled = |pixels: u32| (f64::from(pixels) * zoom).round() as u32;
        self.client
            .set_window_size(scaled(width), scaled(height))
            .await
            .unwrap();
        self.run_as_firefox(&format!("gBrowser.selectedBrowser.fullZoom = {zoom}"))
            .await;
        eventually(&format!("a viewport {width} pixels wide"), || async {
            let inner = self
                .client
                .execute("return innerWidth", vec![])
                .await
                .ok()?;
            (inner.as_u64()?.abs_diff(u64::from(width)) <= 2).then_some(())
        })
        .await;
    }

    async fn assert_accessible(&self, seen: &str, axe: &str) {
        let loaded = self
            .client
            .execute("return typeof axe !== 'undefined'", vec![])
            .await
            .unwrap();
        if loaded != Value::Bool(true) {
            self.client.execute(axe, vec![]).await.unwrap();
        }
        let answer = self.client.execute_async(RUN_AXE, vec![]).await.unwrap();
        let violations: Vec<Violation> = serde_json::from_value(answer.clone())
            .unwrap_or_else(|_| panic!("axe-core failed on {seen}: {answer}"));
        for violation in &violations {
            println!(
                "axe, {seen}: {} ({}): {} at {:?}",
                violation.id,
                violation.impact.as_deref().unwrap_or("no impact"),
                violation.help,
                violation.nodes
            );
        }
        let blocking: Vec<&Violation> = violations.iter().filter(|v| v.blocks_people()).collect();
        assert!(
            blocking.is_empty(),
            "serious or critical accessibility violations on {seen}: {blocking:#?}"
        );
    }

    /// Makes the page see `theme` as the system's, as a person's setting would (needs
    /// [`Setup::system_access`]).
    async fn use_theme(&self, theme: Theme) {
        let script = format!(
            "Services.prefs.setIntPref('layout.css.prefers-color-scheme.content-override', {})",
            theme.firefox_override()
        );
        self.run_as_firefox(&script).await;
        let query = format!(
            "return matchMedia('(prefers-color-scheme: {})').matches",
            theme.name()
        );
        eventually(
            &format!("the page to see a {} theme", theme.name()),
            || async {
                let matches = self.client.execute(&query, vec![]).await.ok()?;
                (matches == Value::Bool(true)).then_some(())
            },
        )
        .await;
    }

    /// Presses each key of `keys` (text, or a [`Key`] such as Tab) on the keyboard, on
    /// whatever has the focus.
    async fn press(&self, keys: &str) {
        let mut typing = KeyActions::new("keyboard".to_owned());
        for key in keys.chars() {
            typing = typing
                .then(KeyAction::Down { value: key })
                .then(KeyAction::Up { value: key });
        }
        self.client.perform_actions(typing).await.unwrap();
    }

    /// Presses Tab until the element `#id` has the focus, and checks that every element
    /// the focus passes shows it with an outline a person can see.
    async fn tab_to(&self, id: &str) {
        const MOST_TABS: usize = 12;
        for _ in 0..MOST_TABS {
            self.take_focus_back().await;
            self.press(&Key::Tab).await;
            let focused = self.focused().await;
            assert!(
                focused.visible_focus,
                "on the way to #{id}, the focus on #{} does not show (outline {})",
                focused.id, focused.outline
            );
            if focused.id == id {
                return;
            }
        }
        panic!("{MOST_TABS} presses of Tab never reached #{id}");
    }

    /// Brings the page's window to the front again if a notification took the focus (in
    /// headless Firefox its alerts are windows of their own, unlike a desktop's).
    async fn take_focus_back(&self) {
        let focused = self.client.execute("return document.hasFocus()", vec![]);
        if focused.await.unwrap() != Value::Bool(true) {
            let window = self.client.window().await.unwrap();
            self.client.switch_to_window(window).await.unwrap();
        }
    }

    async fn focused(&self) -> Focused {
        let script = "const element = document.activeElement;
            const style = getComputedStyle(element);
            return {
                id: element.id,
                visible_focus: element.matches(':focus-visible')
                    && !['none', 'auto'].includes(style.outlineStyle)
                    && parseFloat(style.outlineWidth) >= 2,
                outline: `${style.outlineStyle} ${style.outlineWidth}`,
            };";
        serde_json::from_value(self.client.execute(script, vec![]).await.unwrap()).unwrap()
    }
}

/// The element that has the keyboard's focus.
#[derive(Deserialize)]
struct Focused {
    id: String,
    /// Whether it matches `:focus-visible` and shows an outline of the page's own (not
    /// the browser's thin default ring) at least 2 px wide.
    visible_focus: bool,
    /// Its outline's style and width, for the failure message.
    outline: String,
}

#[tokio::test]
async fn test_every_state_of_the_page_passes_axe_and_member_changes_are_announced_politely() {
    let _one = ONE_AT_A_TIME.lock().await;
    let axe = axe_script();
    let stack = Stack::start_with_admin_api().await;
    // Both let the test switch the theme, as a person's system setting would.
    let themed = Setup {
        system_access: true,
        ..Setup::default()
    };
    let (alice, bob) = tokio::join!(stack.firefox_with(themed), stack.firefox_with(themed));

    alice.open_chat().await;
    alice.check_and_photograph("before-joining", &axe).await;
    alice.join("Alice").await;
    alice.check_and_photograph("joined", &axe).await;

    // Member changes reach screen readers through a polite live region: announced when
    // the reader pauses, never cutting in.
    let news = alice
        .client
        .find(fantoccini::Locator::Css("#member-news"))
        .await
        .unwrap();
    assert_eq!(
        news.attr("aria-live").await.unwrap().as_deref(),
        Some("polite")
    );
    bob.open_chat().await;
    bob.join("Bob").await;
    eventually_members(&alice, &["Alice", "Bob"]).await;
    assert_eq!(alice.text_of("#member-news").await, "Bob joined the chat.");

    alice.say("Hi Bob! Did last night's build pass?").await;
    bob.say("It did, all green. I'll ship it after lunch.")
        .await;
    alice.say("Great, thanks!").await;
    let conversation = [
        ("Alice", "Hi Bob! Did last night's build pass?"),
        ("Bob", "It did, all green. I'll ship it after lunch."),
        ("Alice", "Great, thanks!"),
    ];
    alice.wait_for_lines(&conversation).await;
    bob.wait_for_lines(&conversation).await;
    alice.check_and_photograph("with-messages", &axe).await;

    stack.remove_member("Bob", false).await;
    let problem = bob.problem().await;
    assert!(problem.contains("operator removed you"), "{problem}");
    bob.wait_for_button("Subscribe").await;
    bob.check_and_photograph("removed", &axe).await;
    eventually_members(&alice, &["Alice"]).await;
    assert_eq!(alice.text_of("#member-news").await, "Bob left the chat.");

    // The server goes away; Alice's reload comes from her worker's cache.
    stack.server.process.kill().await;
    alice.reload_offline().await;
    alice.check_and_photograph("offline", &axe).await;
}

#[tokio::test]
async fn test_a_person_joins_and_sends_a_line_with_the_keyboard_alone() {
    let _one = ONE_AT_A_TIME.lock().await;
    let stack = Stack::start().await;
    let alice = stack
        .firefox_with(Setup {
            system_access: true,
            ..Setup::default()
        })
        .await;
    // WebDriver's key presses do not count as a keyboard user's for `:focus-visible` in
    // Firefox; this setting has Firefox show focus as it does for one.
    alice
        .run_as_firefox("Services.prefs.setBoolPref('browser.display.show_focus_rings', true)")
        .await;
    alice.open_chat().await;

    alice.tab_to("name").await;
    alice.press("Alice").await;
    alice.tab_to("subscribe").await;
    alice.press(&Key::Enter).await;
    alice.wait_for_label("Unsubscribe").await;

    alice.tab_to("message").await;
    alice.press("Typed, not clicked").await;
    alice.press(&Key::Enter).await;
    alice
        .wait_for_lines(&[("Alice", "Typed, not clicked")])
        .await;
}
