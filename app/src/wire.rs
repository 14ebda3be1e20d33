//! The JSON that crosses the network: the HTTP API's requests and answers, and the
//! status updates every member is pushed (their bytes on the wire are `payload`'s). Server,
//! page and tests all use these types, so the two sides cannot drift apart.

use serde::{Deserialize, Serialize};

/// The keys of a browser's push subscription, as `PushSubscription.toJSON()` gives them
/// (base64url).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionKeys {
    /// The browser's P-256 public key (uncompressed point).
    pub p256dh: String,
    /// The 16-byte secret shared with the browser; the push service never sees it.
    pub auth: String,
}

/// A browser's push subscription, as `PushSubscription.toJSON()` gives it (other fields
/// such as `expirationTime` are ignored).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushSubscription {
    pub endpoint: String,
    pub keys: SubscriptionKeys,
}

/// `POST /api/subscribe` and `POST /api/init`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribeRequest {
    pub name: String,
    pub subscription: PushSubscription,
    /// The chat's join passphrase, when its operator set one (see [`JoinRules`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase: Option<String>,
    /// A code from `POST /api/device-code` on another of the member's browsers: this
    /// browser joins that member (its name is taken from the code; `name` is ignored).
    #[serde(
        default,
        rename = "deviceCode",
        skip_serializing_if = "Option::is_none"
    )]
    pub device_code: Option<String>,
}

/// `POST /api/device-code`'s answer: a one-time code that adds a browser to the member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCode {
    /// Twelve letters and digits in groups of four, e.g. `K7QX-M2PD-R9TB`.
    pub code: String,
    /// Milliseconds since the Unix epoch; the code is refused after.
    pub expires: u64,
}

/// `GET /api/join-rules`: what a newcomer must bring.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRules {
    /// Newcomers must give the passphrase the operator shared.
    pub passphrase: bool,
}

/// Who is asking: a member is its endpoint, proven by its `auth` secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberCredentials {
    pub endpoint: String,
    pub auth: String,
}

/// `POST /api/unsubscribe`.
pub type UnsubscribeRequest = MemberCredentials;

/// `POST /api/chat`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostLineRequest {
    #[serde(flatten)]
    pub member: MemberCredentials,
    pub msg: String,
}

/// `POST /api/resubscribe`: the browser replaced a member's push subscription (the
/// service worker's `pushsubscriptionchange`); the old credentials prove who it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResubscribeRequest {
    #[serde(flatten)]
    pub member: MemberCredentials,
    pub subscription: PushSubscription,
}

/// `POST /api/alive`: the service worker says its browser still receives the chat's pushes
/// (at most once a day), a sign of life like the page's own calls.
pub type AliveRequest = MemberCredentials;

/// `POST /api/mute`: the member's "Mute 1 hour" (a notification's action button).
pub type MuteRequest = MemberCredentials;

/// The answer to `POST /api/mute`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Muted {
    /// Until when the member gets no chat lines, in milliseconds since the Unix epoch.
    #[serde(rename = "mutedUntil")]
    pub muted_until: u64,
}

/// One line of the chat, as stored and as pushed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatLine {
    /// Increases with every line, across restarts.
    pub id: u64,
    /// The sender's name, taken from the server's store.
    pub name: String,
    pub msg: String,
    /// When the server accepted the line, in milliseconds since the Unix epoch.
    pub time: u64,
}

/// What a member sees on arrival: the answer to `subscribe` and `init`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomState {
    /// The name this browser is a member under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub you: Option<String>,
    /// Member names, sorted.
    pub members: Vec<String>,
    /// The most recent lines, oldest first.
    pub history: Vec<ChatLine>,
}

/// The answer to `POST /api/history?before=ID` (the member's credentials in the body): the
/// lines just older than line ID, oldest first, as in [`RoomState::history`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryPage {
    pub history: Vec<ChatLine>,
    /// No line older than these is kept: the page has reached the start.
    pub start: bool,
}

/// `GET /api/vapid-public-key`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VapidPublicKey {
    /// The server's VAPID public key: an uncompressed P-256 point, base64url.
    #[serde(rename = "publicKey")]
    pub public_key: String,
}

/// The body of every 4xx/5xx answer of the API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// A sentence for a person.
    pub error: String,
    /// For a program: why a browser is not a member, on the 404 that `init`,
    /// `resubscribe` and the members' other calls answer an unknown subscription with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<NotMember>,
}

/// Why a browser is not a member of the chat (the `code` of [`ApiError`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotMember {
    /// The chat does not know this subscription: it never joined, it left, its push
    /// service dropped it, or the server's store was reset or restored. Subscribe joins.
    NotMember,
    /// The operator removed this member; Subscribe joins again, and everyone is told.
    Removed,
    /// The operator removed this member and banned its name (and names like it).
    Banned,
}

/// A status update the server fans out: what happened, as the chat's queue stores it and
/// as the page applies it. On the wire it is a declarative push message (see
/// [`PushMessage::to_payload`]); the service worker shows it and relays the same JSON text
/// to open pages. Its `action` tags are the status names of MDN's push-api-demo; the
/// variants say what happened.
///
/// `init` is a request, not a push: every push must end in a visible notification, so a
/// page load never pushes anything to the others.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action")]
pub enum PushMessage {
    /// NAME joined.
    #[serde(rename = "subscribe")]
    Joined { name: String },
    /// NAMES left (several when many went at once, a push service's purge say).
    #[serde(rename = "unsubscribe")]
    Left { names: Vec<String> },
    /// A chat line.
    #[serde(rename = "chatMsg")]
    Line(ChatLine),
    /// A notice from the server's operator (`pushchat send`); not part of the history.
    #[serde(rename = "notice")]
    Notice { text: String },
    /// The last push to a member the operator removed, sent to that member's own
    /// browsers: their worker forgets the membership and unsubscribes.
    #[serde(rename = "removed")]
    Removed { banned: bool },
    /// To one browser that has shown no sign of life for long (see the server's
    /// `--stale-after`): it is removed at `remove_at` (ms since the Unix epoch) unless the
    /// chat is opened there first.
    #[serde(rename = "stale")]
    Stale {
        #[serde(rename = "removeAt")]
        remove_at: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_messages_are_tagged_by_action() {
        let line = ChatLine {
            id: 7,
            name: "Ann".into(),
            msg: "hi".into(),
            time: 5,
        };
        let json = serde_json::to_value(PushMessage::Line(line)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"action": "chatMsg", "id": 7, "name": "Ann", "msg": "hi", "time": 5})
        );
        let join = serde_json::to_value(PushMessage::Joined { name: "Bo".into() }).unwrap();
        assert_eq!(
            join,
            serde_json::json!({"action": "subscribe", "name": "Bo"})
        );
    }

    #[test]
    fn chat_request_is_flat() {
        let req: PostLineRequest =
            serde_json::from_str(r#"{"endpoint":"https://p/1","auth":"a","msg":"m"}"#).unwrap();
        assert_eq!(req.member.endpoint, "https://p/1");
        assert_eq!(req.msg, "m");
    }
}
