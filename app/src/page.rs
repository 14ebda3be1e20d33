//! The chat page: a name field and a Subscribe button, the member list, the message list
//! and, for members, a send box. The server renders it empty; in the browser it restores
//! an earlier membership (`init`) and then changes only on pushes relayed by the service
//! worker and on the answers to this page's own requests. When the server cannot be
//! reached, it says so and shows the last room this browser saw. When the server no
//! longer knows this browser as a member (a 404 with a code, or a `removed` push), the
//! page drops the browser's subscription, returns to Subscribe and says why.

use leptos::{prelude::*, task::spawn_local};
use leptos_meta::Title;

use crate::{
    api, browser,
    names::clean_name,
    offline,
    unread::Unread,
    wire::{
        chat_payload_excess, ChatLine, DeviceCode, MemberCredentials, NotMember, PostLineRequest,
        PushMessage, RoomState, SubscribeRequest, PUSH_PAYLOAD_LIMIT,
    },
};

/// Where this browser stands in the chat.
#[derive(Clone, Debug, PartialEq)]
enum Membership {
    /// The page is looking for a subscription from an earlier visit.
    Restoring,
    /// Not a member; the Subscribe button is offered.
    Visitor,
    /// A Subscribe or Unsubscribe press is being carried out.
    Busy,
    /// This browser cannot receive pushes: it shows the room but cannot join.
    Reader,
    Member(Member),
}

/// This browser as a member. Its credentials are not kept here: the service worker may
/// replace the push subscription behind the page's back (`pushsubscriptionchange`), so
/// they are read from the browser for each request.
#[derive(Clone, Debug, PartialEq)]
struct Member {
    name: String,
}

/// The live state of the room as this page knows it.
#[derive(Clone, Copy)]
struct Room {
    members: RwSignal<Vec<String>>,
    lines: RwSignal<Vec<ChatLine>>,
    /// The operator's latest notice; not part of the history.
    notice: RwSignal<Option<String>>,
    /// Lines pushed while the page was hidden.
    unread: Unread,
}

impl Room {
    fn new() -> Self {
        Room {
            members: RwSignal::new(Vec::new()),
            lines: RwSignal::new(Vec::new()),
            notice: RwSignal::new(None),
            unread: Unread::new(),
        }
    }

    fn replace(&self, state: RoomState) {
        self.members.set(state.members);
        self.lines.set(state.history);
        self.keep();
    }

    /// Empties the room and forgets it: whoever leaves takes no history along.
    fn clear(&self) {
        self.members.set(Vec::new());
        self.lines.set(Vec::new());
        offline::save_room(None);
    }

    /// Keeps the room as this browser last saw it, for when the server cannot be reached.
    fn keep(&self) {
        offline::save_room(Some(&RoomState {
            you: None,
            members: self.members.get_untracked(),
            history: self.lines.get_untracked(),
        }));
    }

    fn apply(&self, message: PushMessage) {
        match message {
            PushMessage::Subscribe { name } => self.members.update(|members| {
                if !members.contains(&name) {
                    members.push(name);
                    // As the server sorts them.
                    members.sort_by_cached_key(|name| name.to_lowercase());
                }
            }),
            PushMessage::Unsubscribe { names } => self
                .members
                .update(|members| members.retain(|member| !names.contains(member))),
            PushMessage::ChatMsg(line) => {
                if self.add_line(line) {
                    self.unread.line_arrived();
                }
            }
            PushMessage::Notice { text } => self.notice.set(Some(text)),
            // About this browser's membership, not the room: see `Page::on_push`.
            PushMessage::Removed { .. } => return,
        }
        self.keep();
    }

    /// Adds a line once, in id order: a line can arrive both as a push and as the answer
    /// to this page's own send. Returns whether the line was new.
    fn add_line(&self, line: ChatLine) -> bool {
        let added = self
            .lines
            .try_maybe_update(|lines| {
                let Err(at) = lines.binary_search_by_key(&line.id, |l| l.id) else {
                    return (false, false);
                };
                lines.insert(at, line);
                (true, true)
            })
            .unwrap_or(false);
        if added {
            self.keep();
        }
        added
    }
}

#[component]
pub fn ChatPage() -> impl IntoView {
    let membership = RwSignal::new(Membership::Restoring);
    let problem = RwSignal::new(None::<String>);
    let room = Room::new();
    let name_input = RwSignal::new(String::new());
    let draft = RwSignal::new(String::new());
    let unreachable = RwSignal::new(false);
    let joining = Joining {
        passphrase_needed: RwSignal::new(false),
        passphrase: RwSignal::new(String::new()),
        device_code: RwSignal::new(String::new()),
    };
    let new_device_code = RwSignal::new(None::<DeviceCode>);
    let page = Page {
        membership,
        room,
        name_input,
        problem,
        unreachable,
        joining,
        new_device_code,
    };

    // Effects run in the browser only, once hydrated.
    Effect::new(move |_| {
        room.unread.clear_when_shown();
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

    let on_subscribe = move |_| {
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
            Membership::Restoring | Membership::Busy | Membership::Reader => {}
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

    let on_send = move |event: leptos::ev::SubmitEvent| {
        event.prevent_default();
        let Membership::Member(member) = membership.get_untracked() else {
            return;
        };
        let msg = draft.get_untracked();
        if msg.trim().is_empty() {
            return;
        }
        if let Some(excess) = chat_payload_excess(&member.name, &msg) {
            problem.set(Some(format!(
                "That message is {excess} bytes too long to push."
            )));
            return;
        }
        problem.set(None);
        spawn_local(async move {
            let sent = async {
                let member = browser::member_credentials().await?;
                api::chat(&PostLineRequest { member, msg }).await
            };
            match sent.await {
                Ok(line) => {
                    draft.set(String::new());
                    room.add_line(line);
                }
                Err(error) => page.member_call_failed(error),
            }
        });
    };

    let is_member = move || matches!(membership.get(), Membership::Member(_));
    let busy = move || matches!(membership.get(), Membership::Restoring | Membership::Busy);
    let reader = move || membership.get() == Membership::Reader;
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
        Membership::Reader => "This browser cannot receive push messages (it lacks service \
            workers or the Push API), so it can read the chat but not join it. Reload the page \
            for new messages, or open the chat in a browser that supports them."
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

    view! {
        <Title text=move || room.unread.title() />
        <main class="chat">
            <header>
                <h1>"pushchat"</h1>
                <p class="tagline">"A group chat that reaches you even when this tab is closed."</p>
            </header>
            <Show when=move || unreachable.get()>
                <p id="offline" class="offline" role="status">
                    "You are offline: the chat server cannot be reached. These are the last \
                    messages this browser saw; the chat goes on when the connection is back."
                </p>
            </Show>
            <section class="join" aria-label="Membership">
                <label for="name">"Your name"</label>
                <input
                    id="name"
                    type="text"
                    autocomplete="nickname"
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
                <button
                    id="subscribe"
                    type="button"
                    on:click=on_subscribe
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
                <Show when=is_member>
                    <button id="add-device" type="button" on:click=on_add_device>
                        "Add a device"
                    </button>
                </Show>
            </section>
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
            <p id="problem" class="problem" role="alert">{move || problem.get()}</p>
            <Show when=move || room.notice.with(Option::is_some)>
                <p id="notice" class="notice" role="status">
                    <strong>"From the operator: "</strong>
                    {move || room.notice.get()}
                </p>
            </Show>
            <div class="room">
                <section class="members" aria-labelledby="members-title">
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
                <section class="messages" aria-labelledby="messages-title">
                    <h2 id="messages-title">"Messages"</h2>
                    <ol id="messages" aria-live="polite">
                        <For
                            each=move || room.lines.get()
                            key=|line| line.id
                            children=|line| view! {
                                <li data-id=line.id.to_string()>
                                    <span class="who">{line.name}</span>
                                    <span class="text">{line.msg}</span>
                                    <time>{clock_time(line.time)}</time>
                                </li>
                            }
                        />
                    </ol>
                    <Show when=move || room.lines.with(Vec::is_empty)>
                        <p class="empty">{empty_history}</p>
                    </Show>
                    <Show when=is_member>
                        <form id="send-form" class="send" on:submit=on_send>
                            <label for="message">"Message"</label>
                            <input
                                id="message"
                                type="text"
                                autocomplete="off"
                                maxlength=PUSH_PAYLOAD_LIMIT
                                prop:value=move || draft.get()
                                on:input=move |ev| draft.set(event_target_value(&ev))
                            />
                            <button id="send" type="submit">"Send"</button>
                        </form>
                    </Show>
                </section>
            </div>
        </main>
    }
}

/// What a press of Subscribe says while the server cannot be reached.
const OFFLINE_PRESS: &str = "You are offline. Press Subscribe again when the connection is back.";

/// The page's state that its background tasks change.
#[derive(Clone, Copy)]
struct Page {
    membership: RwSignal<Membership>,
    room: Room,
    name_input: RwSignal<String>,
    problem: RwSignal<Option<String>>,
    /// The server could not be reached: the page shows the room it kept.
    unreachable: RwSignal<bool>,
    joining: Joining,
    /// The code "Add a device" made, while it is shown.
    new_device_code: RwSignal<Option<DeviceCode>>,
}

impl Page {
    /// A push the service worker relayed: news of the room, or that the operator removed
    /// this member.
    fn on_push(self, message: PushMessage) {
        match message {
            PushMessage::Removed { banned } => {
                let why = if banned {
                    NotMember::Banned
                } else {
                    NotMember::Removed
                };
                spawn_local(no_longer_member(self, why));
            }
            news => self.room.apply(news),
        }
    }

    /// A member's call failed: if the server does not know this browser as a member, the
    /// page stops being one; otherwise it shows why.
    fn member_call_failed(self, error: api::Error) {
        match error.not_member {
            Some(why) => spawn_local(no_longer_member(self, why)),
            None => self.problem.set(Some(error.sentence)),
        }
    }
}

/// What a visitor gives to join besides a name.
#[derive(Clone, Copy)]
struct Joining {
    /// The chat has a join passphrase (`GET /api/join-rules`).
    passphrase_needed: RwSignal<bool>,
    passphrase: RwSignal<String>,
    /// A code from another of the member's browsers; with it, no name is needed.
    device_code: RwSignal<String>,
}

/// On load, and when the device is back online: a browser that already holds a
/// subscription is a member; ask the server for the room (`init`), which pushes nothing
/// to the others. Without the server, show the room this browser saw last.
async fn restore(page: Page) {
    let Page {
        membership,
        room,
        name_input,
        problem,
        unreachable,
        joining,
        ..
    } = page;
    if !browser::push_supported() {
        membership.set(Membership::Reader);
        match api::room().await {
            Ok(state) => room.replace(state),
            Err(error) => problem.set(Some(error.sentence)),
        }
        return;
    }
    if !offline::server_reachable().await {
        unreachable.set(true);
        if let Some(name) = browser::saved_name() {
            name_input.set(name);
        }
        if let Some(saved) = offline::saved_room() {
            room.replace(saved);
        }
        membership.set(Membership::Visitor);
        return;
    }
    unreachable.set(false);
    if let Some(code) = browser::device_code_in_address() {
        joining.device_code.set(code);
    }
    match api::join_rules().await {
        Ok(rules) => joining.passphrase_needed.set(rules.passphrase),
        Err(error) => problem.set(Some(error.sentence)),
    }
    // The worker also keeps the app shell for offline use, so every visit registers it;
    // this asks the person nothing.
    if let Err(error) = browser::register_worker().await {
        problem.set(Some(error));
        membership.set(Membership::Visitor);
        return;
    }
    let restored = async {
        let registration = browser::existing_registration().await?;
        let subscription = browser::current_subscription(&registration).await?;
        let Some(name) = browser::saved_name() else {
            // A subscription without a name cannot rejoin; drop it so Subscribe starts clean.
            let _ = browser::unsubscribe(&subscription).await;
            return None;
        };
        name_input.set(name.clone());
        let request = SubscribeRequest {
            name,
            subscription: browser::subscription_json(&subscription).ok()?,
            passphrase: None,
            device_code: None,
        };
        Some(connect(&registration, request, page, Announce::Init).await)
    };
    match restored.await {
        Some(Ok(member)) => membership.set(Membership::Member(member)),
        Some(Err(api::Error {
            not_member: Some(why),
            ..
        })) => no_longer_member(page, why).await,
        Some(Err(error)) => {
            problem.set(Some(error.sentence));
            membership.set(Membership::Visitor);
        }
        None => membership.set(Membership::Visitor),
    }
}

/// The Subscribe press: permission, worker, push subscription, then the server. With a
/// device code the browser joins the member who made it, under that member's name.
async fn join(page: Page) {
    let Page {
        membership,
        name_input,
        problem,
        joining,
        ..
    } = page;
    let device_code =
        Some(joining.device_code.get_untracked()).filter(|code| !code.trim().is_empty());
    let name = match (&device_code, clean_name(&name_input.get_untracked())) {
        (Some(_), _) => String::new(),
        (None, Ok(name)) => name,
        (None, Err(error)) => return problem.set(Some(error.to_string())),
    };
    let passphrase = Some(joining.passphrase.get_untracked())
        .filter(|_| joining.passphrase_needed.get_untracked());
    membership.set(Membership::Busy);
    let joined = async {
        browser::request_permission().await?;
        let registration = browser::register_worker().await?;
        let key = api::vapid_public_key().await?;
        let subscription = browser::subscribe(&registration, &key.public_key).await?;
        let request = SubscribeRequest {
            name,
            subscription: browser::subscription_json(&subscription)?,
            passphrase,
            device_code,
        };
        let member = connect(&registration, request, page, Announce::Subscribe).await;
        if member.is_err() {
            // The server said no (a taken name, say): leave no orphan subscription behind.
            let _ = browser::unsubscribe(&subscription).await;
        }
        member
    };
    match joined.await {
        Ok(member) => {
            browser::save_name(Some(&member.name));
            name_input.set(member.name.clone());
            joining.device_code.set(String::new());
            membership.set(Membership::Member(member));
        }
        Err(error) => {
            problem.set(Some(error.sentence));
            membership.set(Membership::Visitor);
        }
    }
}

/// How the page tells the server about this browser.
enum Announce {
    /// A new member, or a member's new browser: `subscribe`.
    Subscribe,
    /// A member coming back after a reload: nobody is told.
    Init,
}

/// Announces this browser to the server, shows the room it answers with, and opens the
/// relay from the service worker under the name the server says this browser has.
async fn connect(
    registration: &web_sys::ServiceWorkerRegistration,
    request: SubscribeRequest,
    page: Page,
    announce: Announce,
) -> Result<Member, api::Error> {
    let credentials = MemberCredentials {
        endpoint: request.subscription.endpoint.clone(),
        auth: request.subscription.keys.auth.clone(),
    };
    // A browser joining with a device code learns its name only from the answer, so the
    // relay opens right after it; the answer holds the room up to then.
    let listen = |name: &str| {
        browser::listen_for_pushes(registration, name, &credentials, move |message| {
            page.on_push(message)
        })
    };
    let known_name = request.device_code.is_none().then(|| request.name.clone());
    if let Some(name) = &known_name {
        // Listen before announcing, so no push sent in between is missed.
        listen(name)?;
    }
    let state = match announce {
        Announce::Subscribe => api::subscribe(&request).await?,
        Announce::Init => api::init(&request).await?,
    };
    let name = state.you.clone().unwrap_or(request.name);
    if known_name.is_none() {
        listen(&name)?;
    }
    page.room.replace(state);
    Ok(Member { name })
}

/// The Unsubscribe press: the server first (so the others hear of it), then the browser.
async fn leave(member: Member, page: Page) {
    let Page {
        membership,
        room,
        problem,
        ..
    } = page;
    membership.set(Membership::Busy);
    let left = async { api::unsubscribe(&browser::member_credentials().await?).await };
    if let Err(error) = left.await {
        membership.set(Membership::Member(member));
        return page.member_call_failed(error);
    }
    if let Err(error) = browser::end_membership().await {
        problem.set(Some(format!(
            "You left, but the browser kept its subscription: {error}"
        )));
    }
    browser::save_name(None);
    room.clear();
    membership.set(Membership::Visitor);
}

/// The server does not know this browser as a member any more (`why`): the page drops
/// the browser's push subscription (so that Subscribe starts clean), forgets the room and
/// the saved name, and says why. The name stays in its field where joining again under
/// it can work, which a ban rules out.
async fn no_longer_member(page: Page, why: NotMember) {
    page.membership.set(Membership::Busy);
    page.problem.set(Some(not_member_sentence(why).to_owned()));
    page.new_device_code.set(None);
    page.room.clear();
    browser::save_name(None);
    if why == NotMember::Banned {
        page.name_input.set(String::new());
    }
    // Best effort: a subscription that stays behind is one the server no longer pushes to,
    // and Subscribe makes a new member of it all the same.
    let _ = browser::end_membership().await;
    page.membership.set(Membership::Visitor);
}

/// Why this browser is no longer a member, for the person.
fn not_member_sentence(why: NotMember) -> &'static str {
    match why {
        NotMember::NotMember => {
            "This chat no longer knows this browser (its server may have been reset). Press \
            Subscribe to join again; the others will see you join."
        }
        NotMember::Removed => {
            "The chat's operator removed you from the chat. Press Subscribe to join again."
        }
        NotMember::Banned => "The chat's operator removed you and banned your name from this chat.",
    }
}

/// "14:05" in the reader's time zone.
fn clock_time(millis: u64) -> String {
    let date = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(millis as f64));
    format!("{:02}:{:02}", date.get_hours(), date.get_minutes())
}
