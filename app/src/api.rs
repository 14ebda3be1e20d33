//! The page's client of the server's JSON API, over the browser's `fetch`. Every failure
//! comes back as a sentence the page can show as it is.

use serde::{de::DeserializeOwned, Serialize};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Request, RequestInit, Response};

use crate::wire::{
    ApiError, ChatLine, ChatRequest, DeviceCode, JoinRules, MemberCredentials, RoomState,
    SubscribeRequest, UnsubscribeRequest, VapidPublicKey,
};

pub async fn vapid_public_key() -> Result<VapidPublicKey, String> {
    call("GET", "/api/vapid-public-key", None).await
}

pub async fn join_rules() -> Result<JoinRules, String> {
    call("GET", "/api/join-rules", None).await
}

/// A one-time code that adds another browser to this member.
pub async fn device_code(member: &MemberCredentials) -> Result<DeviceCode, String> {
    post("/api/device-code", member).await
}

/// The room, for a browser that can only read it.
pub async fn room() -> Result<RoomState, String> {
    call("GET", "/api/room", None).await
}

pub async fn subscribe(request: &SubscribeRequest) -> Result<RoomState, String> {
    post("/api/subscribe", request).await
}

pub async fn init(request: &SubscribeRequest) -> Result<RoomState, String> {
    post("/api/init", request).await
}

pub async fn unsubscribe(request: &UnsubscribeRequest) -> Result<(), String> {
    post::<_, serde_json::Value>("/api/unsubscribe", request)
        .await
        .map(drop)
}

pub async fn chat(request: &ChatRequest) -> Result<ChatLine, String> {
    post("/api/chat", request).await
}

async fn post<Req: Serialize, Resp: DeserializeOwned>(
    path: &str,
    body: &Req,
) -> Result<Resp, String> {
    let body = serde_json::to_string(body).map_err(|e| e.to_string())?;
    call("POST", path, Some(&body)).await
}

async fn call<Resp: DeserializeOwned>(
    method: &str,
    path: &str,
    json_body: Option<&str>,
) -> Result<Resp, String> {
    let unreachable = |e: JsValue| format!("Could not reach the server ({}).", describe(&e));
    let init = RequestInit::new();
    init.set_method(method);
    if let Some(body) = json_body {
        init.set_body(&JsValue::from_str(body));
    }
    let request = Request::new_with_str_and_init(path, &init).map_err(unreachable)?;
    if json_body.is_some() {
        request
            .headers()
            .set("Content-Type", "application/json")
            .map_err(unreachable)?;
    }
    let window = web_sys::window().ok_or("This page has no window.")?;
    let response: Response = JsFuture::from(window.fetch_with_request(&request))
        .await
        .map_err(unreachable)?
        .unchecked_into();
    let text = JsFuture::from(response.text().map_err(unreachable)?)
        .await
        .map_err(unreachable)?
        .as_string()
        .unwrap_or_default();
    if response.ok() {
        // A 204 has no body: read it as JSON null, which is what `()` expects.
        let text = if text.is_empty() {
            "null"
        } else {
            text.as_str()
        };
        serde_json::from_str(text)
            .map_err(|e| format!("The server sent an answer this page cannot read ({e})."))
    } else {
        Err(serde_json::from_str::<ApiError>(&text)
            .map(|e| e.error)
            .unwrap_or_else(|_| {
                format!(
                    "The server answered {} {}.",
                    response.status(),
                    response.status_text()
                )
            }))
    }
}

/// A JavaScript error's message, for showing to a person.
pub(crate) fn describe(error: &JsValue) -> String {
    error
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| error.as_string())
        .unwrap_or_else(|| format!("{error:?}"))
}
