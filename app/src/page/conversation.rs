//! The conversation: the room's lines in one scrolling list, with day separators, lines
//! grouped by sender, this member's own lines told apart, links made anchors, and the
//! lines still waiting for the server. It opens at the newest line and follows new ones
//! while the reader is at the bottom; scrolled up to read, the reader keeps their place.

use leptos::{html, prelude::*};
use wasm_bindgen::JsValue;

use super::{
    outbox::Outbox,
    timeline::{rows, LocalTime, Row},
};
use crate::{
    linkify::{pieces, Piece},
    wire::ChatLine,
};

/// How close to the bottom (in CSS pixels) still counts as reading the newest lines.
const NEAR_BOTTOM: i32 = 48;

#[component]
pub(super) fn Conversation(
    lines: RwSignal<Vec<ChatLine>>,
    outbox: Outbox,
    /// This browser's member name, if it is a member.
    #[prop(into)]
    you: Signal<Option<String>>,
    /// Set to follow the newest line again (after this member sends one).
    follow: StoredValue<bool>,
    /// What goes above the first line (scroll-back's way to older lines).
    #[prop(optional)]
    children: Option<Children>,
) -> impl IntoView {
    let list = NodeRef::<html::Ol>::new();
    let rows = Memo::new(move |_| {
        lines.with(|lines| match lines.is_empty() {
            // Also what the server renders: it has no clock of the reader's.
            true => Vec::new(),
            false => rows(lines, js_sys::Date::now() as u64, zone_offset_at),
        })
    });
    let on_scroll = move |_| {
        if let Some(list) = list.get_untracked() {
            let below = list.scroll_height() - list.scroll_top() - list.client_height();
            follow.set_value(below <= NEAR_BOTTOM);
        }
    };
    // After the list changed, and once the browser laid it out: back to the newest line,
    // unless the reader scrolled up.
    Effect::new(move |_| {
        rows.track();
        outbox.lines.track();
        request_animation_frame(move || {
            if let Some(list) = list.get_untracked() {
                if follow.get_value() {
                    list.set_scroll_top(list.scroll_height());
                }
            }
        });
    });
    let is_you = move |name: &str| you.with(|you| you.as_deref() == Some(name));

    view! {
        <ol id="messages" node_ref=list on:scroll=on_scroll tabindex="0" aria-label="Messages"
            aria-live="polite" aria-relevant="additions">
            {children.map(|children| children())}
            <For
                each=move || rows.get()
                key=row_key
                children=move |row| match row {
                    Row::Day { label, .. } => view! {
                        <li class="day"><span>{label}</span></li>
                    }
                    .into_any(),
                    Row::Line { line, first_of_group, time } => {
                        let mine = {
                            let name = line.name.clone();
                            move || is_you(&name)
                        };
                        view! { <Line line first_of_group time mine /> }.into_any()
                    }
                }
            />
            <For
                each=move || outbox.lines.get().into_iter().enumerate()
                key=|(at, msg)| format!("{at}:{msg}")
                children=move |(_, msg)| view! {
                    <li class="line first mine waiting">
                        <span class="who">{move || you.get().unwrap_or_default()}</span>
                        <p class="text">{linked(&msg)}</p>
                        <span class="state">"Not sent yet: it goes when the chat is back"</span>
                    </li>
                }
            />
        </ol>
    }
}

/// One chat line. A press shows its full date and time, as hovering does.
#[component]
fn Line(
    line: ChatLine,
    first_of_group: bool,
    time: LocalTime,
    mine: impl Fn() -> bool + Send + Sync + 'static,
) -> impl IntoView {
    let pressed = RwSignal::new(false);
    let full = time.in_full();
    let title = full.clone();
    let short = time.clock();
    view! {
        <li
            class="line"
            class:first=first_of_group
            class:mine=mine
            data-id=line.id.to_string()
            title=title
            on:click=move |_| pressed.update(|pressed| *pressed = !*pressed)
        >
            <span class="who">{line.name}</span>
            <p class="text">{linked(&line.msg)}</p>
            <time datetime=time.iso()>
                {move || if pressed.get() { full.clone() } else { short.clone() }}
            </time>
        </li>
    }
}

/// `msg` as text nodes and anchors: every link opens in a new tab, and tells the page it
/// opens nothing about this one.
fn linked(msg: &str) -> Vec<AnyView> {
    pieces(msg)
        .into_iter()
        .map(|piece| match piece {
            Piece::Text(text) => text.to_owned().into_any(),
            Piece::Link(address) => {
                let href = address.to_owned();
                let text = address.to_owned();
                view! {
                    <a href=href target="_blank" rel="noopener noreferrer">
                        {text}
                    </a>
                }
                .into_any()
            }
        })
        .collect()
}

/// Keys that change when a row must be drawn anew: a line that starts or joins a group,
/// a day whose label changed.
fn row_key(row: &Row) -> String {
    match row {
        Row::Day { day, label } => format!("day {day} {label}"),
        Row::Line {
            line,
            first_of_group,
            ..
        } => format!("line {} {first_of_group}", line.id),
    }
}

/// How many minutes the reader's clock was behind UTC at `millis`.
fn zone_offset_at(millis: u64) -> i32 {
    js_sys::Date::new(&JsValue::from_f64(millis as f64)).get_timezone_offset() as i32
}
