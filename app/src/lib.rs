//! The pushchat page and what it shares with the server: the Leptos components (rendered
//! on the server, hydrated in the browser), the wire types of the JSON API and of every
//! push, the push's size budget, and the rules for names.

pub mod budget;
pub mod names;
pub mod wire;

mod api;
mod browser;
mod linkify;
mod offline;
mod page;
mod payload;
mod unread;

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, HashedStylesheet, Link, Meta, MetaTags, Title};

/// The HTML document around the app; the server renders it for every page request.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    #[cfg(feature = "ssr")]
    send_content_security_policy();
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                <AutoReload options=options.clone() />
                // Named by the server (see server/src/http/site.rs), as the bundle is.
                <HashedStylesheet options=options.clone() id="leptos" />
                <HydrationScripts options />
                <MetaTags />
            </head>
            <body>
                <App />
            </body>
        </html>
    }
}

/// Allows what the page needs and nothing else: its own scripts (the inline hydration
/// scripts by this response's nonce), compiling its own wasm, its own styles, images, API,
/// service worker and manifest. Markup that slipped into a name could run no script.
#[cfg(feature = "ssr")]
fn send_content_security_policy() {
    use http::{header::CONTENT_SECURITY_POLICY, HeaderValue};

    let Some(response) = use_context::<leptos_axum::ResponseOptions>() else {
        return;
    };
    let nonce = leptos::nonce::use_nonce().map(|nonce| format!(" 'nonce-{nonce}'"));
    let policy = format!(
        "default-src 'self'; script-src 'self'{} 'wasm-unsafe-eval'; style-src 'self'; \
         img-src 'self'; connect-src 'self'; worker-src 'self'; manifest-src 'self'; \
         object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        nonce.unwrap_or_default()
    );
    if let Ok(value) = HeaderValue::from_str(&policy) {
        response.insert_header(CONTENT_SECURITY_POLICY, value);
    }
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();

    view! {
        <Link rel="manifest" href="/manifest.webmanifest" />
        <Link rel="icon" href="/icons/icon-192.png" />
        <Meta name="theme-color" content="#2b5797" />
        <Title text="pushchat" />
        <page::ChatPage />
    }
}
