//! What the page does in the background: restoring a membership on load (and retrying
//! while the server cannot be reached), joining, announcing this browser to the server,
//! leaving, and returning to Subscribe when the server no longer knows this browser.

use std::cell::Cell;

use leptos::{prelude::*, task::spawn_local};

use super::{
    outbox::send_kept,
    state::{CannotJoin, Member, Membership, Page},
};
use crate::{
    api, browser,
    names::clean_name,
    offline,
    wire::{MemberCredentials, NotMember, SubscribeRequest},
};

/// What a press of Subscribe says while the server cannot be reached.
pub(super) const OFFLINE_PRESS: &str =
    "You are offline. Press Subscribe again when the connection is back.";

thread_local! {
    /// Which call of [`wait_for_server`] is the current one; an older one stops looking.
    /// The page is the only one in its wasm instance, so this is the page's.
    static WAITING_RUN: Cell<u32> = const { Cell::new(0) };
}

/// While the page says the server cannot be reached (on load, or since a call failed):
/// looks for it again after a growing pause (see [`offline::retry_delay_ms`]), and
/// restores the page once it answers, which rejoins the chat, opens the relay of pushes
/// and sends what was typed meanwhile, without a reload. A newer call takes over from an
/// older one that is pausing.
pub(super) async fn wait_for_server(page: Page) {
    let run = WAITING_RUN.with(|current| {
        current.set(current.get().wrapping_add(1));
        current.get()
    });
    let mut attempt = 0;
    loop {
        browser::pause(offline::retry_delay_ms(attempt, js_sys::Math::random()) as i32).await;
        if WAITING_RUN.with(Cell::get) != run || !page.unreachable.get_untracked() {
            return;
        }
        if offline::server_reachable().await {
            spawn_local(restore(page));
            return;
        }
        attempt = attempt.saturating_add(1);
    }
}

/// On load, and when the device is back online: a browser that already holds a
/// subscription is a member; ask the server for the room (`init`), which pushes nothing
/// to the others. Without the server, show the room this browser saw last.
pub(super) async fn restore(page: Page) {
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
        membership.set(Membership::Reader(if browser::push_needs_home_screen() {
            CannotJoin::OutsideHomeScreen
        } else {
            CannotJoin::NoPush
        }));
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
        Some(Ok(member)) => {
            membership.set(Membership::Member(member));
            send_kept(page).await;
        }
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
pub(super) async fn join(page: Page) {
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
pub(super) enum Announce {
    /// A new member, or a member's new browser: `subscribe`.
    Subscribe,
    /// A member coming back after a reload: nobody is told.
    Init,
}

/// Announces this browser to the server, shows the room it answers with, and opens the
/// relay from the service worker under the name the server says this browser has.
pub(super) async fn connect(
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
pub(super) async fn leave(member: Member, page: Page) {
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
    page.outbox.clear();
    membership.set(Membership::Visitor);
}

/// The server does not know this browser as a member any more (`why`): the page drops
/// the browser's push subscription (so that Subscribe starts clean), forgets the room and
/// the saved name, and says why. The name stays in its field where joining again under
/// it can work, which a ban rules out.
pub(super) async fn no_longer_member(page: Page, why: NotMember) {
    page.membership.set(Membership::Busy);
    page.problem.set(Some(not_member_sentence(why).to_owned()));
    page.new_device_code.set(None);
    page.room.clear();
    page.outbox.clear();
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
pub(super) fn not_member_sentence(why: NotMember) -> &'static str {
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
