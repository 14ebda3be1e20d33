//! The page's client of the server's JSON API, over the browser's `fetch`. Every failure
//! comes back as a sentence the page can show as it is ([`Error`]), and says when the
//! server does not know this browser as a member.

use std::fmt;

use serde::{de::DeserializeOwned, Serialize};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Request, RequestInit, Response};

use crate::wire::{
    ApiError, ChatLine, DeviceCode, HistoryPage, JoinRules, MemberCredentials, NotMember,
    PostLineRequest, RoomState, SubscribeRequest, UnsubscribeRequest, VapidPublicKey,
};

/// A call that failed: a sentence for the person and, on the 404 the server answers a
/// member's call with when it does not know the credentials, why this browser is not a
/// member. Shown, it is the sentence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub sentence: String,
    pub not_member: Option<NotMember>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.sentence)
    }
}

/// A failure before the server answered (the browser's, or the network's).
impl From<String> for Error {
    fn from(sentence: String) -> Self {
        Error {
            sentence,
            not_member: None,
        }
    }
}

/// Where only the sentence matters.
impl From<Error> for String {
    fn from(error: Error) -> Self {
        error.sentence
    }
}

pub async fn vapid_public_key() -> Result<VapidPublicKey, Error> {
    call("GET", "/api/vapid-public-key", None).await
}

pub async fn join_rules() -> Result<JoinRules, Error> {
    call("GET", "/api/join-rules", None).await
}

/// A one-time code that adds another browser to this member.
pub async fn device_code(member: &MemberCredentials) -> Result<DeviceCode, Error> {
    post("/api/device-code", member).await
}

/// The room, for a browser that can only read it.
pub async fn room() -> Result<RoomState, Error> {
    call("GET", "/api/room", None).await
}

pub async fn subscribe(request: &SubscribeRequest) -> Result<RoomState, Error> {
    post("/api/subscribe", request).await
}

/// The room, for a browser whose subscription is a member's; a 404 with
/// [`Error::not_member`] otherwise.
pub async fn init(request: &SubscribeRequest) -> Result<RoomState, Error> {
    post("/api/init", request).await
}

pub async fn unsubscribe(request: &UnsubscribeRequest) -> Result<(), Error> {
    post::<_, serde_json::Value>("/api/unsubscribe", request)
        .await
        .map(drop)
}

pub async fn chat(request: &PostLineRequest) -> Result<ChatLine, Error> {
    post("/api/chat", request).await
}

/// The member's scroll-back: the page of lines just older than line `before`.
pub async fn history(before: u64, member: &MemberCredentials) -> Result<HistoryPage, Error> {
    post(&format!("/api/history?before={before}"), member).await
}

async fn post<Req: Serialize, Resp: DeserializeOwned>(
    path: &str,
    body: &Req,
) -> Result<Resp, Error> {
    let body = serde_json::to_string(body).map_err(|e| e.to_string())?;
    call("POST", path, Some(&body)).await
}

async fn call<Resp: DeserializeOwned>(
    method: &str,
    path: &str,
    json_body: Option<&str>,
) -> Result<Resp, Error> {
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
    let window = web_sys::window().ok_or_else(|| "This page has no window.".to_string())?;
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
            .map_err(|e| format!("The server sent an answer this page cannot read ({e}).").into())
    } else {
        Err(refusal(response.status(), &response.status_text(), &text))
    }
}

/// The error an answer with a failing `status` and this `body` stands for: the API's
/// [`ApiError`], or (from something else on the way, a proxy say) the status itself.
fn refusal(status: u16, status_text: &str, body: &str) -> Error {
    match serde_json::from_str::<ApiError>(body) {
        Ok(refused) => Error {
            sentence: refused.error,
            not_member: refused.code,
        },
        Err(_) => format!("The server answered {status} {status_text}.").into(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_404_for_a_browser_that_is_no_member_says_why() {
        let body = r#"{"error":"The operator removed you.","code":"removed"}"#;
        let error = refusal(404, "Not Found", body);
        assert_eq!(error.not_member, Some(NotMember::Removed));
        assert_eq!(error.to_string(), "The operator removed you.");
        let banned = refusal(404, "Not Found", r#"{"error":"x","code":"banned"}"#);
        assert_eq!(banned.not_member, Some(NotMember::Banned));
        let unknown = refusal(404, "Not Found", r#"{"error":"x","code":"not_member"}"#);
        assert_eq!(unknown.not_member, Some(NotMember::NotMember));
    }

    #[test]
    fn other_refusals_carry_only_their_sentence() {
        let taken = refusal(409, "Conflict", r#"{"error":"That name is taken."}"#);
        assert_eq!(taken, Error::from("That name is taken.".to_owned()));
        let proxy = refusal(502, "Bad Gateway", "<html>bad gateway</html>");
        assert_eq!(proxy.sentence, "The server answered 502 Bad Gateway.");
        assert_eq!(proxy.not_member, None);
    }
}
