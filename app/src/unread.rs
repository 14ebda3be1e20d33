//! The unread count: chat lines that arrived while the page was hidden (another tab in
//! front, a minimised window, a locked screen). It shows in the title, "(3) pushchat",
//! and on the installed app's icon where the browser has the Badging API
//! (`navigator.setAppBadge`); both clear as soon as the page is visible again.

use js_sys::{Function, Promise, Reflect};
use leptos::{prelude::*, task::spawn_local};
use wasm_bindgen::{closure::Closure, JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::VisibilityState;

const TITLE: &str = "pushchat";

/// Lines nobody has seen yet. Cheap to copy into closures.
#[derive(Clone, Copy)]
pub struct Unread {
    count: RwSignal<usize>,
}

impl Unread {
    pub fn new() -> Self {
        Unread {
            count: RwSignal::new(0),
        }
    }

    /// The page's title: the count first, so it shows in a narrow tab.
    pub fn title(&self) -> String {
        match self.count.get() {
            0 => TITLE.to_owned(),
            count => format!("({count}) {TITLE}"),
        }
    }

    /// A new line reached the page: it is unread if nobody can see the page.
    pub fn line_arrived(&self) {
        if page_hidden() {
            self.count.update(|count| *count += 1);
        }
    }

    /// In the browser, once: clears the count whenever the page is shown. The listener
    /// lives as long as the page.
    pub fn clear_when_shown(&self) {
        let Some(document) = web_sys::window().and_then(|window| window.document()) else {
            return;
        };
        let count = self.count;
        let shown = Closure::<dyn Fn()>::new(move || {
            if !page_hidden() {
                count.set(0);
            }
        });
        if document
            .add_event_listener_with_callback("visibilitychange", shown.as_ref().unchecked_ref())
            .is_ok()
        {
            shown.forget();
        }
    }

    /// In the browser: puts the count on the app's icon, or takes it off at zero (which
    /// also clears a badge an earlier visit left).
    pub fn show_on_badge(&self) {
        match self.count.get() {
            0 => call_badging("clearAppBadge", &[]),
            count => call_badging("setAppBadge", &[JsValue::from_f64(count as f64)]),
        }
    }
}

fn page_hidden() -> bool {
    web_sys::window()
        .and_then(|window| window.document())
        .is_some_and(|document| document.visibility_state() == VisibilityState::Hidden)
}

/// Calls `navigator[method](...args)` where the browser has it (Chromium does, Firefox
/// does not). A refusal (the site is not installed, say) is ignored: the title still
/// carries the count.
fn call_badging(method: &str, args: &[JsValue]) {
    let Some(navigator) = web_sys::window().map(|window| window.navigator()) else {
        return;
    };
    let Ok(function) = Reflect::get(&navigator, &method.into()) else {
        return;
    };
    let Some(function) = function.dyn_ref::<Function>() else {
        return;
    };
    let args: js_sys::Array = args.iter().collect();
    if let Ok(pending) = function.apply(&navigator, &args) {
        if let Ok(pending) = pending.dyn_into::<Promise>() {
            spawn_local(async move {
                let _ = JsFuture::from(pending).await;
            });
        }
    }
}
