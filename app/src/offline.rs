//! Working without the server: whether it can be reached, and the last room this browser
//! saw, kept in localStorage so the page (served from the service worker's cache) can
//! show it when the server cannot be reached.
//!
//! `navigator.onLine` alone is not enough: it only says the device has a network, not
//! that the chat server answers, so the page also asks the server's `/healthz`.

use wasm_bindgen::{closure::Closure, JsCast};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Request, RequestCache, RequestInit, Response};

use crate::{browser::local_storage, wire::RoomState};

const ROOM_KEY: &str = "pushchat.room";

/// Whether the device is online and the chat server answers.
pub async fn server_reachable() -> bool {
    let Some(window) = web_sys::window() else {
        return false;
    };
    if !window.navigator().on_line() {
        return false;
    }
    let init = RequestInit::new();
    // Past the browser's HTTP cache: the question is whether the server answers now.
    init.set_cache(RequestCache::NoStore);
    let Ok(request) = Request::new_with_str_and_init("/healthz", &init) else {
        return false;
    };
    match JsFuture::from(window.fetch_with_request(&request)).await {
        Ok(response) => response.unchecked_into::<Response>().ok(),
        Err(_) => false,
    }
}

/// Calls `on_change(online)` whenever the device goes offline or comes back online. The
/// listeners live as long as the page.
pub fn watch_connectivity(on_change: impl Fn(bool) + Clone + 'static) {
    let Some(window) = web_sys::window() else {
        return;
    };
    for (event, online) in [("online", true), ("offline", false)] {
        let on_change = on_change.clone();
        let listener = Closure::<dyn Fn()>::new(move || on_change(online));
        if window
            .add_event_listener_with_callback(event, listener.as_ref().unchecked_ref())
            .is_ok()
        {
            listener.forget();
        }
    }
}

/// Keeps `room` as the last room this browser saw, or forgets it (`None`, on leaving).
pub fn save_room(room: Option<&RoomState>) {
    let Some(storage) = local_storage() else {
        return;
    };
    // Storage can be full or disabled; then only the offline view has less to show.
    let _ = match room.and_then(|room| serde_json::to_string(room).ok()) {
        Some(json) => storage.set_item(ROOM_KEY, &json),
        None => storage.remove_item(ROOM_KEY),
    };
}

/// The last room this browser saw, if it kept one.
pub fn saved_room() -> Option<RoomState> {
    let json = local_storage()?.get_item(ROOM_KEY).ok().flatten()?;
    serde_json::from_str(&json).ok()
}
