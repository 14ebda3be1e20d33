//! The chat page, laid out as the chats people use: a bar with the chat's name and its
//! members, the conversation filling the window, and at the bottom the line being typed
//! (or, before joining, the name and Subscribe). The server renders it empty; in the
//! browser it restores an earlier membership (`init`) and then changes only on pushes
//! relayed by the service worker and on the answers to this page's own requests. When the
//! server cannot be reached, it says so, shows the last room this browser saw, keeps what
//! is typed, and looks for the server again. When the server no longer knows this browser
//! as a member (a 404 with a code, or a `removed` push), the page drops the browser's
//! subscription, returns to Subscribe and says why.

use leptos::{prelude::*, task::spawn_local};
use leptos_meta::Title;

use crate::{
    api, browser,
    budget::{chat_line_excess, PUSH_PAYLOAD_LIMIT},
    offline,
    wire::DeviceCode,
};

mod conversation;
mod flows;
mod outbox;
mod scroll_back;
mod state;
mod timeline;

use self::{
    conversation::Conversation,
    flows::{join, leave, restore, wait_for_server, OFFLINE_PRESS},
    outbox::{send, Outbox, Sent},
    scroll_back::OlderLines,
    state::{CannotJoin, Joining, Membership, Page, Room},
};

#[component]
pub fn ChatPage() -> impl IntoView {
    let membership = RwSignal::new(Membership::Restoring);
    let problem = RwSignal::new(None::<String>);
    let room = Room::new();
    let name_input = RwSignal::new(String::new());
    let draft = RwSignal::new(String::new());
    let unreachable = RwSignal::new(false);
    let outbox = Outbox::new();
    let joining = Joining {
        passphrase_needed: RwSignal::new(false),
        passphrase: RwSignal::new(String::new()),
        device_code: RwSignal::new(String::new()),
    };
    let new_device_code = RwSignal::new(None::<DeviceCode>);
    let members_open = RwSignal::new(false);
    let follow = StoredValue::new(true);
    let page = Page {
        membership,
        room,
        name_input,
        problem,
        unreachable,
        outbox,
        joining,
        new_device_code,
    };

    // Effects run in the browser only, once hydrated.
    Effect::new(move |_| {
        room.unread.clear_when_shown();
        outbox.load();
        offline::watch_connectivity(move |online| {
            if !online {
                unreachable.set(true);
            } else if unreachable.get_untracked() {
                spawn_local(restore(page));
            }
        });
        spawn_local(restore(page));
    });
    Effect::new(move |_| room.unread.show_on_badge());
    Effect::new(move |_| {
        if unreachable.get() {
            spawn_local(wait_for_server(page));
        }
    });

    let on_subscribe = move || {
        let current = membership.get_untracked();
        problem.set(None);
        if unreachable.get_untracked() {
            problem.set(Some(OFFLINE_PRESS.into()));
            return;
        }
        match current {
            Membership::Visitor => spawn_local(join(page)),
            Membership::Member(member) => {
                new_device_code.set(None);
                spawn_local(leave(member, page))
            }
            Membership::Restoring | Membership::Busy | Membership::Reader(_) => {}
        }
    };

    let on_add_device = move |_| {
        problem.set(None);
        spawn_local(async move {
            let made = async { api::device_code(&browser::member_credentials().await?).await };
            match made.await {
                Ok(code) => new_device_code.set(Some(code)),
                Err(error) => page.member_call_failed(error),
            }
        });
    };
    let device_link = move || {
        new_device_code.get().map(|made| {
            let origin = browser::origin().unwrap_or_default();
            format!("{origin}/?device={}", made.code)
        })
    };

    let send_draft = move || {
        let Membership::Member(member) = membership.get_untracked() else {
            return;
        };
        let msg = draft.get_untracked();
        if msg.trim().is_empty() {
            return;
        }
        if let Some(excess) = chat_line_excess(&member.name, &msg) {
            problem.set(Some(format!(
                "That message is {excess} bytes too long to push."
            )));
            return;
        }
        problem.set(None);
        // Whoever sends wants to see their line.
        follow.set_value(true);
        if unreachable.get_untracked() {
            draft.set(String::new());
            return outbox.keep(msg);
        }
        spawn_local(async move {
            match send(page, msg.clone()).await {
                Sent::Yes => draft.set(String::new()),
                Sent::Later => {
                    draft.set(String::new());
                    outbox.keep(msg);
                }
                // The line stays in the box, to change and send again.
                Sent::Refused => {}
            }
        });
    };
    let on_message_key = move |event: leptos::ev::KeyboardEvent| {
        // Enter sends; Shift+Enter is a new line; Enter that ends an input method's
        // composition (Japanese, say) only ends it.
        if event.key() == "Enter" && !event.shift_key() && !event.is_composing() {
            event.prevent_default();
            send_draft();
        }
    };

    let you = Signal::derive(move || match membership.get() {
        Membership::Member(member) => Some(member.name),
        _ => None,
    });
    let is_member = move || you.with(Option::is_some);
    let busy = move || matches!(membership.get(), Membership::Restoring | Membership::Busy);
    let reader = move || matches!(membership.get(), Membership::Reader(_));
    let button_label = move || {
        if is_member() {
            "Unsubscribe"
        } else {
            "Subscribe"
        }
    };
    let status = move || match membership.get() {
        Membership::Member(member) => format!(
            "You are in as {}. New lines reach you as notifications while this tab is closed.",
            member.name
        ),
        Membership::Busy => "One moment…".to_owned(),
        Membership::Reader(CannotJoin::NoPush) => "This browser cannot receive push messages \
            (it lacks service workers or the Push API), so it can read the chat but not join \
            it. Reload the page for new messages, or open the chat in a browser that supports \
            them."
            .to_owned(),
        Membership::Reader(CannotJoin::OutsideHomeScreen) => "On iPhone and iPad the chat \
            can reach you only from your Home Screen: tap Share, choose Add to Home Screen, \
            then open pushchat from there and press Subscribe. Here you can read along; \
            reload for new messages."
            .to_owned(),
        Membership::Restoring | Membership::Visitor => String::new(),
    };
    let empty_history = move || {
        if is_member() {
            "No messages yet. Say hello!"
        } else if reader() {
            "No messages yet."
        } else {
            "Type a name and press Subscribe to read and send messages."
        }
    };
    let empty_members = move || {
        if reader() {
            "Nobody has joined yet."
        } else {
            "Subscribe to see who is here."
        }
    };
    let member_count = move || room.members.with(Vec::len);
    let message_rows = move || draft.with(|draft| draft.split('\n').count().clamp(1, 6));

    // Separate views keep the page's type shallow enough for the compiler.
    let join_section = view! {
        <section class="join" aria-label="Membership">
            <form
                class="join-form"
                on:submit=move |event| {
                    event.prevent_default();
                    on_subscribe();
                }
            >
                <label for="name">"Your name"</label>
                <input
                    id="name"
                    type="text"
                    autocomplete="nickname"
                    enterkeyhint="go"
                    maxlength="64"
                    prop:value=move || name_input.get()
                    on:input=move |ev| name_input.set(event_target_value(&ev))
                    disabled=move || is_member() || busy() || reader()
                />
                <Show when=move || joining.passphrase_needed.get() && !is_member()>
                    <label for="passphrase">"Passphrase"</label>
                    <input
                        id="passphrase"
                        type="password"
                        autocomplete="off"
                        prop:value=move || joining.passphrase.get()
                        on:input=move |ev| joining.passphrase.set(event_target_value(&ev))
                        disabled=busy
                    />
                </Show>
                <Show when=is_member>
                    <button id="add-device" class="quiet" type="button" on:click=on_add_device>
                        "Add a device"
                    </button>
                </Show>
                <button
                    id="subscribe"
                    type="submit"
                    class:quiet=is_member
                    disabled=move || busy() || reader()
                >
                    {button_label}
                </button>
                <Show when=move || !is_member() && !reader()>
                    <details class="device" open=move || !joining.device_code.get().is_empty()>
                        <summary>"Already in the chat on another device?"</summary>
                        <label for="device-code-input">
                            "Its code (from \"Add a device\" there), instead of a name:"
                        </label>
                        <input
                            id="device-code-input"
                            type="text"
                            autocomplete="off"
                            spellcheck="false"
                            prop:value=move || joining.device_code.get()
                            on:input=move |ev| joining.device_code.set(event_target_value(&ev))
                            disabled=busy
                        />
                    </details>
                </Show>
            </form>
            <Show when=move || is_member() && new_device_code.with(Option::is_some)>
                <p id="device-code" class="device-code" role="status">
                    "On your other device, open "
                    <a href=device_link>{device_link}</a>
                    " or enter the code "
                    <strong class="code">
                        {move || new_device_code.get().map(|made| made.code)}
                    </strong>
                    " within 15 minutes. It works once."
                </p>
            </Show>
            <p id="status" class="status">{status}</p>
        </section>
    }
    .into_any();
    let room_view = view! {
        <div class="room">
            <section
                id="members-panel"
                class="members"
                class:open=move || members_open.get()
                aria-labelledby="members-title"
            >
                <h2 id="members-title">"Members"</h2>
                <ul id="members">
                    <For
                        each=move || room.members.get()
                        key=|name| name.clone()
                        children=|name| view! { <li>{name}</li> }
                    />
                </ul>
                <Show when=move || room.members.with(Vec::is_empty)>
                    <p class="empty">{empty_members}</p>
                </Show>
            </section>
            <main class="messages">
                <h2 class="visually-hidden">"Messages"</h2>
                <Conversation lines=room.lines outbox you follow>
                    <OlderLines page active=Signal::derive(is_member) />
                </Conversation>
                <Show when=move || {
                    room.lines.with(Vec::is_empty) && outbox.lines.with(Vec::is_empty)
                }>
                    <p class="empty">{empty_history}</p>
                </Show>
                <Show when=is_member>
                    <form
                        id="send-form"
                        class="send"
                        on:submit=move |event| {
                            event.prevent_default();
                            send_draft();
                        }
                    >
                        <label for="message" class="visually-hidden">"Message"</label>
                        <textarea
                            id="message"
                            rows=message_rows
                            autocomplete="off"
                            enterkeyhint="send"
                            placeholder="Message"
                            maxlength=PUSH_PAYLOAD_LIMIT
                            prop:value=move || draft.get()
                            on:input=move |ev| draft.set(event_target_value(&ev))
                            on:keydown=on_message_key
                        ></textarea>
                        <button id="send" type="submit">"Send"</button>
                    </form>
                </Show>
            </main>
        </div>
    }
    .into_any();
    view! {
        <Title text=move || room.unread.title() />
        <div class="chat" class:joined=is_member>
            <header class="bar">
                <h1>"pushchat"</h1>
                <button
                    id="members-toggle"
                    class="quiet"
                    type="button"
                    aria-controls="members-panel"
                    aria-expanded=move || members_open.get().to_string()
                    on:click=move |_| members_open.update(|open| *open = !*open)
                >
                    "Members "
                    <span class="count">{member_count}</span>
                </button>
            </header>
            <Show when=move || unreachable.get()>
                <p id="offline" class="offline" role="status">
                    "You are offline: the chat server cannot be reached. These are the last \
                    messages this browser saw. Reconnecting: what you send now is kept and goes \
                    when the connection is back."
                </p>
            </Show>
            {join_section}
            <p id="problem" class="problem" role="alert">{move || problem.get()}</p>
            <Show when=move || room.notice.with(Option::is_some)>
                <p id="notice" class="notice" role="status">
                    <strong>"From the operator: "</strong>
                    {move || room.notice.get()}
                </p>
            </Show>
            <p id="member-news" class="visually-hidden" aria-live="polite">
                {move || room.announcement.get()}
            </p>
            {room_view}
        </div>
    }
}
