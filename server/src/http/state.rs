//! What every request handler shares; cheap to clone.

use std::sync::Arc;

use axum::extract::FromRef;
use leptos::config::LeptosOptions;

use crate::{
    chat::Chat,
    http::{client_address::TrustedProxies, metrics::Metrics, site::Site},
    push::{vapid::VapidKeys, Delivery},
    store::Store,
};

#[derive(Clone)]
pub struct AppState {
    pub chat: Arc<Chat>,
    pub delivery: Arc<Delivery>,
    pub vapid: Arc<VapidKeys>,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    pub trusted_proxies: TrustedProxies,
    /// The bearer token of the admin API on the public listener; none turns that off.
    pub admin_token: Option<String>,
    pub leptos: LeptosOptions,
    /// The site's files (wasm, script, styles, worker, manifest, icons).
    pub site: Arc<Site>,
}

impl FromRef<AppState> for TrustedProxies {
    fn from_ref(state: &AppState) -> Self {
        state.trusted_proxies.clone()
    }
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> Self {
        state.leptos.clone()
    }
}
