//! The browser's side of Web Push: notification permission, the service worker, the push
//! subscription, and the channel over which the worker relays every push to this page.
//! Each function turns the browser's exceptions into a sentence for the person.

use std::future::Future;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use futures::future::{select, Either};
use js_sys::{Array, Promise, Reflect, Uint8Array, JSON};
use wasm_bindgen::{closure::Closure, JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    MessageChannel, MessageEvent, Notification, NotificationPermission,
    PushSubscriptionOptionsInit, ServiceWorkerContainer, ServiceWorkerRegistration,
};

use crate::{api::describe, wire};

const WORKER_URL: &str = "/sw.js";
const NAME_KEY: &str = "pushchat.name";
/// Firefox can leave `subscribe()` pending forever while its push service is unreachable.
const SUBSCRIBE_DEADLINE_MS: i32 = 20_000;

/// Whether this browser can receive pushes at all (service workers, Push API, notifications).
pub fn push_supported() -> bool {
    let Some(window) = web_sys::window() else {
        return false;
    };
    let has = |target: &JsValue, name: &str| Reflect::has(target, &name.into()).unwrap_or(false);
    has(&window.navigator(), "serviceWorker")
        && has(&window, "PushManager")
        && has(&window, "Notification")
}

/// Whether this is iOS or iPadOS Safari outside a web app added to the Home Screen:
/// there the Push API does not exist, and adding the chat to the Home Screen is the way
/// in.
pub fn push_needs_home_screen() -> bool {
    let Some(window) = web_sys::window() else {
        return false;
    };
    let navigator = window.navigator();
    let has = |target: &JsValue, name: &str| Reflect::has(target, &name.into()).unwrap_or(false);
    let number = |name: &str| {
        Reflect::get(&navigator, &name.into())
            .ok()
            .and_then(|value| value.as_f64())
            .unwrap_or(0.0)
    };
    let standalone_display = window
        .match_media("(display-mode: standalone)")
        .ok()
        .flatten()
        .is_some_and(|query| query.matches());
    // Safari's own flag for a Home Screen web app.
    let standalone = Reflect::get(&navigator, &"standalone".into())
        .ok()
        .and_then(|value| value.as_bool())
        .unwrap_or(false);
    ios_outside_home_screen(
        &navigator.user_agent().unwrap_or_default(),
        number("maxTouchPoints") as u32,
        standalone || standalone_display,
        has(&window, "PushManager"),
    )
}

/// iOS outside a Home Screen web app, from what the browser says of itself: no Push API,
/// an iPhone, iPod or iPad user agent (an iPad asking for desktop sites says "Macintosh"
/// but has a touch screen), and not running standalone.
fn ios_outside_home_screen(
    user_agent: &str,
    max_touch_points: u32,
    standalone: bool,
    has_push_manager: bool,
) -> bool {
    let ios = ["iPhone", "iPod", "iPad"]
        .iter()
        .any(|device| user_agent.contains(device))
        || (user_agent.contains("Macintosh") && max_touch_points > 1);
    ios && !standalone && !has_push_manager
}

/// Asks for permission to show notifications; only ever called from a button press.
pub async fn request_permission() -> Result<(), String> {
    let asked = Notification::request_permission().map_err(|e| describe(&e))?;
    JsFuture::from(asked).await.map_err(|e| describe(&e))?;
    match Notification::permission() {
        NotificationPermission::Granted => Ok(()),
        NotificationPermission::Denied => Err("Notifications are blocked for this site, so the \
            chat cannot reach you. Allow them in the site settings (the icon beside the address \
            bar), reload, and press Subscribe again."
            .into()),
        _ => Err(
            "The chat needs permission to show notifications. Press Subscribe again and \
            choose Allow."
                .into(),
        ),
    }
}

fn service_workers() -> Result<ServiceWorkerContainer, String> {
    if !push_supported() {
        return Err(
            "This browser cannot receive push messages, so you can read but not join.".into(),
        );
    }
    Ok(web_sys::window()
        .ok_or("This page has no window.")?
        .navigator()
        .service_worker())
}

/// Registers the service worker and waits until it is active (push needs an active worker).
pub async fn register_worker() -> Result<ServiceWorkerRegistration, String> {
    let container = service_workers()?;
    let failed = |e: JsValue| format!("The service worker could not start ({}).", describe(&e));
    JsFuture::from(container.register(WORKER_URL))
        .await
        .map_err(failed)?;
    let ready = JsFuture::from(container.ready().map_err(failed)?)
        .await
        .map_err(failed)?;
    Ok(ready.unchecked_into())
}

/// The worker registered by an earlier visit, if any; registers nothing.
pub async fn existing_registration() -> Option<ServiceWorkerRegistration> {
    let container = service_workers().ok()?;
    let found = JsFuture::from(container.get_registration()).await.ok()?;
    found.dyn_into().ok()
}

/// The push subscription the browser already holds for this site, if any.
pub async fn current_subscription(
    registration: &ServiceWorkerRegistration,
) -> Option<web_sys::PushSubscription> {
    let pending = registration.push_manager().ok()?.get_subscription().ok()?;
    JsFuture::from(pending).await.ok()?.dyn_into().ok()
}

/// Subscribes this browser to pushes signed with the server's VAPID public key.
pub async fn subscribe(
    registration: &ServiceWorkerRegistration,
    server_key: &str,
) -> Result<web_sys::PushSubscription, String> {
    let failed = |e: JsValue| {
        format!(
            "The browser could not subscribe to push ({}).",
            describe(&e)
        )
    };
    let key = URL_SAFE_NO_PAD
        .decode(server_key.trim_end_matches('='))
        .map_err(|_| "The server sent an unreadable VAPID key.".to_string())?;
    let options = PushSubscriptionOptionsInit::new();
    options.set_user_visible_only(true);
    options.set_application_server_key(&Uint8Array::from(key.as_slice()));
    let manager = registration.push_manager().map_err(failed)?;
    let pending = manager.subscribe_with_options(&options).map_err(failed)?;
    match within(SUBSCRIBE_DEADLINE_MS, JsFuture::from(pending)).await {
        Some(subscribed) => Ok(subscribed.map_err(failed)?.unchecked_into()),
        None => Err(
            "The browser's push service did not answer. Check the connection and press \
            Subscribe again."
                .into(),
        ),
    }
}

/// The subscription as the server's API takes it.
pub fn subscription_json(
    subscription: &web_sys::PushSubscription,
) -> Result<wire::PushSubscription, String> {
    let text = JSON::stringify(subscription).map_err(|e| describe(&e))?;
    serde_json::from_str(&String::from(text))
        .map_err(|e| format!("The browser gave a push subscription without keys ({e})."))
}

/// The credentials of this browser's current subscription: who it is in the chat.
pub async fn member_credentials() -> Result<wire::MemberCredentials, String> {
    let registration = existing_registration()
        .await
        .ok_or("This browser has no service worker for the chat; reload the page.")?;
    let subscription = current_subscription(&registration)
        .await
        .ok_or("This browser is no longer subscribed; press Subscribe to join again.")?;
    let subscription = subscription_json(&subscription)?;
    Ok(wire::MemberCredentials {
        endpoint: subscription.endpoint,
        auth: subscription.keys.auth,
    })
}

/// Removes the browser's subscription; the push service then answers 410 for it.
pub async fn unsubscribe(subscription: &web_sys::PushSubscription) -> Result<(), String> {
    let pending = subscription.unsubscribe().map_err(|e| describe(&e))?;
    JsFuture::from(pending)
        .await
        .map(drop)
        .map_err(|e| describe(&e))
}

/// Ends this browser's side of a membership: the service worker forgets the member it
/// keeps, and the browser's push subscription is removed (Subscribe then starts clean).
pub async fn end_membership() -> Result<(), String> {
    let Some(registration) = existing_registration().await else {
        return Ok(());
    };
    if let Some(worker) = registration.active() {
        // Best effort: a worker that keeps a stale member only fails its requests with it.
        let forget = js_sys::Object::new();
        if Reflect::set(&forget, &"type".into(), &"forget".into()).is_ok() {
            let _ = worker.post_message(&forget);
        }
    }
    match current_subscription(&registration).await {
        Some(subscription) => unsubscribe(&subscription).await,
        None => Ok(()),
    }
}

/// Calls `on_push` with every push the service worker relays to this page: over a
/// MessageChannel handed to the worker, and over the worker's own `postMessage` when a
/// restarted worker lost that channel. The worker also keeps the member's name and
/// credentials, to prove who it is if the browser replaces the subscription. The listeners live as long
/// as the page.
pub fn listen_for_pushes(
    registration: &ServiceWorkerRegistration,
    name: &str,
    member: &wire::MemberCredentials,
    on_push: impl Fn(wire::PushMessage) + 'static,
) -> Result<(), String> {
    let handler = Closure::<dyn Fn(MessageEvent)>::new(move |event: MessageEvent| {
        let parsed = event
            .data()
            .as_string()
            .and_then(|text| wire::PushMessage::from_payload(&text));
        if let Some(message) = parsed {
            on_push(message);
        }
    });
    let handler_fn: &js_sys::Function = handler.as_ref().unchecked_ref();
    service_workers()?.set_onmessage(Some(handler_fn));

    let channel = MessageChannel::new().map_err(|e| describe(&e))?;
    channel.port1().set_onmessage(Some(handler_fn));
    let worker = registration
        .active()
        .ok_or("The service worker is not active.")?;
    let hello = js_sys::Object::new();
    Reflect::set(&hello, &"type".into(), &"connect".into()).map_err(|e| describe(&e))?;
    let member =
        serde_json::json!({ "name": name, "endpoint": member.endpoint, "auth": member.auth });
    let member = JSON::parse(&member.to_string()).map_err(|e| describe(&e))?;
    Reflect::set(&hello, &"member".into(), &member).map_err(|e| describe(&e))?;
    worker
        .post_message_with_transferable(&hello, &Array::of1(&channel.port2()))
        .map_err(|e| describe(&e))?;
    handler.forget();
    Ok(())
}

/// The device code in this page's address (`?device=CODE`): a member's other browser made
/// a link to join it.
pub fn device_code_in_address() -> Option<String> {
    let search = web_sys::window()?.location().search().ok()?;
    let params = web_sys::UrlSearchParams::new_with_str(&search).ok()?;
    params.get("device").filter(|code| !code.trim().is_empty())
}

/// This page's origin, e.g. `https://chat.example.org`, for links to it.
pub fn origin() -> Option<String> {
    web_sys::window()?.location().origin().ok()
}

/// The name this browser joined with, kept so a reload can restore the membership.
pub fn saved_name() -> Option<String> {
    local_storage()?.get_item(NAME_KEY).ok().flatten()
}

pub fn save_name(name: Option<&str>) {
    if let Some(storage) = local_storage() {
        // Storage can be full or disabled; the chat still works, only reload forgets the name.
        let _ = match name {
            Some(name) => storage.set_item(NAME_KEY, name),
            None => storage.remove_item(NAME_KEY),
        };
    }
}

pub(crate) fn local_storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok().flatten()
}

/// Waits `ms` milliseconds.
pub(crate) async fn pause(ms: i32) {
    let timer = Promise::new(&mut |resolve, _| {
        if let Some(window) = web_sys::window() {
            let _ = window.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
        }
    });
    let _ = JsFuture::from(timer).await;
}

/// Runs `future` for at most `ms` milliseconds.
async fn within<T>(ms: i32, future: impl Future<Output = T>) -> Option<T> {
    let future = std::pin::pin!(future);
    match select(future, std::pin::pin!(pause(ms))).await {
        Either::Left((value, _)) => Some(value),
        Either::Right(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::ios_outside_home_screen;

    const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_4 like Mac OS X) \
        AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.4 Mobile/15E148 Safari/604.1";
    const IPAD_AS_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) \
        AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.4 Safari/605.1.15";
    const ANDROID: &str = "Mozilla/5.0 (Linux; Android 15) AppleWebKit/537.36 (KHTML, like \
        Gecko) Chrome/140.0 Mobile Safari/537.36";

    #[test]
    fn test_ios_safari_outside_the_home_screen_is_told_to_add_the_chat_first() {
        assert!(ios_outside_home_screen(IPHONE, 5, false, false));
        assert!(ios_outside_home_screen(IPAD_AS_MAC, 5, false, false));
    }

    #[test]
    fn test_a_home_screen_app_a_mac_and_other_browsers_are_not() {
        // Added to the Home Screen: standalone, and the Push API is there.
        assert!(!ios_outside_home_screen(IPHONE, 5, true, false));
        assert!(!ios_outside_home_screen(IPHONE, 5, false, true));
        // A Mac has no touch screen; Safari on macOS has the Push API.
        assert!(!ios_outside_home_screen(IPAD_AS_MAC, 0, false, false));
        assert!(!ios_outside_home_screen(ANDROID, 5, false, false));
    }
}
