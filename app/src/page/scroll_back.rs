//! Scroll-back: the page loads the newest lines only; when the top of the conversation
//! comes into view, it reads the lines before its oldest one (`POST /api/history`) and puts
//! them above, keeping what the person is reading where it is on the screen, until the
//! server says the start is reached ("Start of the conversation").
//!
//! What the person reads stays put by its distance from the bottom of the scrolling box:
//! lines put above it add exactly their height to the box. The page sets that itself
//! rather than trusting CSS scroll anchoring, which Safari lacks.

use leptos::{html, prelude::*, task::spawn_local};
use wasm_bindgen::{closure::Closure, JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Element, IntersectionObserver, IntersectionObserverEntry, IntersectionObserverInit};

use super::state::{Page, Room};
use crate::{api, browser, wire::ChatLine};

/// How far above the view the top of the conversation starts the next read: older lines
/// are there before the person gets to the top.
const READ_AHEAD: &str = "300px 0px 0px 0px";

/// Above the first line of the conversation: for a member, either the start marker or
/// what brings older lines when it comes into view. `active`: the person is a member
/// (only members read the history).
#[component]
pub(super) fn OlderLines(page: Page, #[prop(into)] active: Signal<bool>) -> impl IntoView {
    let room = page.room;
    // The id of the oldest kept line, once the server said so.
    let start = RwSignal::new(None::<u64>);
    let reading = RwSignal::new(false);
    let sentinel = NodeRef::<html::Li>::new();
    let observer = StoredValue::new_local(None::<IntersectionObserver>);

    let at_start = move || room.lines.with(|lines| lines.first().map(|l| l.id)) == start.get();
    let shown = move || active.get() && room.lines.with(|lines| !lines.is_empty());

    // In the browser only: watch each sentinel the page shows.
    Effect::new(move |_| {
        let Some(element) = sentinel.get() else {
            return;
        };
        let read = move || {
            if reading.get_untracked() {
                return;
            }
            reading.set(true);
            spawn_local(async move {
                if read_older(page, start).await {
                    // Asks again whether it is in view: more lines may be needed to fill it.
                    if let (Some(watching), Some(element)) =
                        (observer.get_value(), sentinel.get_untracked())
                    {
                        watching.unobserve(&element);
                        watching.observe(&element);
                    }
                }
                reading.set(false);
            });
        };
        if observer.with_value(Option::is_none) {
            observer.set_value(watch_for_view(read));
        }
        if let Some(watching) = observer.get_value() {
            watching.observe(&element);
        }
    });

    view! {
        <Show when=shown>
            <Show
                when=at_start
                fallback=move || view! {
                    <li
                        id="older-lines"
                        class="older-lines"
                        aria-busy=move || reading.get().to_string()
                        node_ref=sentinel
                    >
                        "Loading older messages…"
                    </li>
                }
            >
                <li id="history-start" class="history-start">"Start of the conversation"</li>
            </Show>
        </Show>
    }
}

/// An observer that calls `read` whenever what it watches comes into view (or near it).
/// It lives as long as the page: its callback is never freed.
fn watch_for_view(read: impl Fn() + 'static) -> Option<IntersectionObserver> {
    let callback = Closure::<dyn Fn(js_sys::Array)>::new(move |entries: js_sys::Array| {
        let in_view = entries.iter().any(|entry| {
            entry
                .unchecked_into::<IntersectionObserverEntry>()
                .is_intersecting()
        });
        if in_view {
            read();
        }
    });
    let options = IntersectionObserverInit::new();
    options.set_root_margin(READ_AHEAD);
    let observer =
        IntersectionObserver::new_with_options(callback.as_ref().unchecked_ref(), &options).ok();
    callback.forget();
    observer
}

/// Reads the lines before the oldest one shown and puts them above it, keeping the view
/// where it was. Returns whether there may be more to read.
async fn read_older(page: Page, start: RwSignal<Option<u64>>) -> bool {
    let room = page.room;
    let Some(oldest) = room
        .lines
        .with_untracked(|lines| lines.first().map(|l| l.id))
    else {
        return false;
    };
    let read = async { api::history(oldest, &browser::member_credentials().await?).await };
    let older = match read.await {
        Ok(older) => older,
        Err(error) => {
            page.member_call_failed(error);
            return false;
        }
    };
    if older.start {
        start.set(Some(older.history.first().map_or(oldest, |line| line.id)));
    }
    let place = page_scroller().map(View::at);
    prepend(room, older.history);
    next_frame().await;
    if let Some(place) = place {
        place.restore();
    }
    !older.start
}

/// Puts `older` lines in the room, each once and in id order (the room may have changed
/// while they were on their way).
fn prepend(room: Room, older: Vec<ChatLine>) {
    room.lines.update(|lines| {
        lines.splice(0..0, older);
        lines.sort_by_key(|line| line.id);
        lines.dedup_by_key(|line| line.id);
    });
}

/// Where a scrolling box shows its content, as a distance from its bottom.
struct View {
    scroller: Element,
    from_bottom: i32,
}

impl View {
    fn at(scroller: Element) -> View {
        let from_bottom = scroller.scroll_height() - scroller.scroll_top();
        View {
            scroller,
            from_bottom,
        }
    }

    /// Scrolls the box back to the same distance from its (new) bottom. Set, not added:
    /// a browser that anchored the view itself already is there.
    fn restore(&self) {
        let scroller = &self.scroller;
        scroller.set_scroll_top(scroller.scroll_height() - self.from_bottom);
    }
}

/// The box the conversation scrolls in: the messages list or the nearest box around it
/// that scrolls, or the page itself.
fn page_scroller() -> Option<Element> {
    let window = web_sys::window()?;
    let document = window.document()?;
    let mut at = document.get_element_by_id("messages");
    while let Some(element) = at {
        let style = window.get_computed_style(&element).ok().flatten();
        let overflow = style.and_then(|style| style.get_property_value("overflow-y").ok());
        if matches!(overflow.as_deref(), Some("auto" | "scroll")) {
            return Some(element);
        }
        at = element.parent_element();
    }
    document.scrolling_element()
}

/// Resolves just before the browser paints next, when the page has laid out what changed.
async fn next_frame() {
    let frame = js_sys::Promise::new(&mut |resolve, _| {
        if let Some(window) = web_sys::window() {
            let _ = window.request_animation_frame(&resolve);
        } else {
            let _ = resolve.call0(&JsValue::NULL);
        }
    });
    let _ = JsFuture::from(frame).await;
}
