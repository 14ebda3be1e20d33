//! Working without the server: whether it can be reached, and the last room this browser
//! saw, kept in localStorage so the page (served from the service worker's cache) can
//! show it when the server cannot be reached.
//!
//! `navigator.onLine` alone is not enough: it only says the device has a network, not
//! that the chat server answers, so the page also asks the server's `/healthz`, and
//! asks again after a growing pause ([`retry_delay_ms`]) until it answers.

use wasm_bindgen::{closure::Closure, JsCast};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Request, RequestCache, RequestInit, Response};

use crate::{browser::local_storage, wire::RoomState};

const ROOM_KEY: &str = "pushchat.room";

/// The pause before the first retry, and the longest pause between two.
const FIRST_RETRY_MS: u32 = 1_000;
const LONGEST_RETRY_MS: u32 = 30_000;

/// How long to wait before retry number `attempt` (0 for the first) to reach the server:
/// 1 s doubling up to 30 s, so a brief outage is over quickly and a long one costs the
/// server little. `jitter` (a random number in 0..1) picks a point in the upper half of
/// that pause, so that pages cut off together do not all return in the same instant.
pub fn retry_delay_ms(attempt: u32, jitter: f64) -> u32 {
    let ceiling = FIRST_RETRY_MS
        .saturating_mul(1 << attempt.min(16))
        .min(LONGEST_RETRY_MS);
    let spread = f64::from(ceiling / 2) * jitter.clamp(0.0, 1.0);
    ceiling / 2 + spread as u32
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_start_within_a_second_and_double() {
        assert_eq!(retry_delay_ms(0, 0.0), 500);
        assert_eq!(retry_delay_ms(0, 1.0), 1_000);
        assert_eq!(retry_delay_ms(1, 1.0), 2_000);
        assert_eq!(retry_delay_ms(2, 0.5), 3_000);
    }

    #[test]
    fn retries_never_wait_longer_than_thirty_seconds() {
        for attempt in [5, 6, 20, u32::MAX] {
            assert_eq!(retry_delay_ms(attempt, 1.0), LONGEST_RETRY_MS, "{attempt}");
            assert_eq!(
                retry_delay_ms(attempt, 0.0),
                LONGEST_RETRY_MS / 2,
                "{attempt}"
            );
        }
    }

    #[test]
    fn jitter_outside_its_range_is_held_to_it() {
        assert_eq!(retry_delay_ms(0, -3.0), 500);
        assert_eq!(retry_delay_ms(0, 7.0), 1_000);
        assert_eq!(retry_delay_ms(0, f64::NAN), 500);
    }
}
