//! The bytes every push carries: a Declarative Web Push message (W3C Push API,
//! "declarative push message") that Safari shows as it is, and that every browser's
//! service worker reads to build its own notification and to tell the open pages.
//!
//! ```json
//! {"web_push": 8030,
//!  "notification": {"title": "Ann", "body": "hello", "navigate": "https://chat.example.org/",
//!                   "tag": "chat:Ann", "mutable": true},
//!  "mutable": true,
//!  "pushchat": {"action": "chatMsg", "id": 17, "name": "Ann", "time": 1795000000000}}
//! ```
//!
//! `notification` is what a person sees; `pushchat` is what the worker and the page need
//! besides it, tagged by `action` as [`PushMessage`] is. Each piece of text travels once:
//! a chat line's text, a notice's text, is the notification's `body` and nowhere else (the
//! body is what Safari shows when no script runs, so it must be the text; the page reads
//! it from there). Names appear in titles and tags, which say who; `pushchat` keeps them
//! as data.
//!
//! `mutable` is written twice. The specification puts it beside `notification`; Safari
//! (WebKit's `NotificationJSONParser`) and Firefox (`dom/push`) read it inside
//! `notification`. Either way the browser then fires the worker's `push` event, and shows
//! the declarative notification only if the worker shows none. Parsers ignore members
//! they do not know, so both places are safe. No `app_badge`: one payload serves a whole
//! fan-out, so it cannot carry one member's count.

use serde::{Deserialize, Serialize};

use crate::wire::{ChatLine, PushMessage};

/// The value of `web_push` that marks a declarative push message.
const DECLARATIVE_WEB_PUSH: u16 = 8030;

/// Tag of every notification about who is in the chat: a newer one replaces an older.
const MEMBERS_TAG: &str = "members";

#[derive(Serialize, Deserialize)]
struct DeclarativePush {
    web_push: u16,
    notification: DeclarativeNotification,
    mutable: bool,
    pushchat: AppPart,
}

/// The notification a browser may show without running the worker.
#[derive(Serialize, Deserialize)]
struct DeclarativeNotification {
    title: String,
    body: String,
    /// Where a click goes: the chat's public URL, absolute.
    navigate: String,
    tag: String,
    mutable: bool,
}

/// What the worker and the page need besides the notification (its text excepted).
#[derive(Serialize, Deserialize)]
#[serde(tag = "action")]
enum AppPart {
    #[serde(rename = "subscribe")]
    Joined { name: String },
    #[serde(rename = "unsubscribe")]
    Left { names: Vec<String> },
    /// A chat line; its text is the notification's body.
    #[serde(rename = "chatMsg")]
    Line { id: u64, name: String, time: u64 },
    /// An operator's notice; its text is the notification's body.
    #[serde(rename = "notice")]
    Notice,
    #[serde(rename = "removed")]
    Removed { banned: bool },
    #[serde(rename = "stale")]
    Stale {
        #[serde(rename = "removeAt")]
        remove_at: u64,
    },
}

impl PushMessage {
    /// The bytes that get encrypted for each member: this update as a declarative push
    /// message whose notification opens `chat_url` (the chat's public URL, absolute).
    pub fn to_payload(&self, chat_url: &str) -> Vec<u8> {
        let (title, body, tag, app) = match self {
            PushMessage::Joined { name } => (
                format!("{name} joined"),
                "Open the chat to say hello.".to_owned(),
                MEMBERS_TAG.to_owned(),
                AppPart::Joined { name: name.clone() },
            ),
            PushMessage::Left { names } => (
                left_title(names),
                "They no longer get the chat.".to_owned(),
                MEMBERS_TAG.to_owned(),
                AppPart::Left {
                    names: names.clone(),
                },
            ),
            PushMessage::Line(line) => (
                line.name.clone(),
                line.msg.clone(),
                format!("chat:{}", line.name),
                AppPart::Line {
                    id: line.id,
                    name: line.name.clone(),
                    time: line.time,
                },
            ),
            PushMessage::Notice { text } => (
                "From the operator".to_owned(),
                text.clone(),
                "notice".to_owned(),
                AppPart::Notice,
            ),
            PushMessage::Removed { banned } => (
                "You were removed from the chat".to_owned(),
                removed_body(*banned).to_owned(),
                MEMBERS_TAG.to_owned(),
                AppPart::Removed { banned: *banned },
            ),
            PushMessage::Stale { remove_at } => (
                "This browser will leave the chat".to_owned(),
                stale_body(*remove_at),
                "stale".to_owned(),
                AppPart::Stale {
                    remove_at: *remove_at,
                },
            ),
        };
        let push = DeclarativePush {
            web_push: DECLARATIVE_WEB_PUSH,
            notification: DeclarativeNotification {
                title,
                body,
                navigate: chat_url.to_owned(),
                tag,
                mutable: true,
            },
            mutable: true,
            pushchat: app,
        };
        serde_json::to_vec(&push).expect("a declarative push always serialises")
    }

    /// The update a payload of [`PushMessage::to_payload`] carries; `None` for anything
    /// else.
    pub fn from_payload(text: &str) -> Option<Self> {
        let push: DeclarativePush = serde_json::from_str(text).ok()?;
        if push.web_push != DECLARATIVE_WEB_PUSH {
            return None;
        }
        let text = push.notification.body;
        Some(match push.pushchat {
            AppPart::Joined { name } => PushMessage::Joined { name },
            AppPart::Left { names } => PushMessage::Left { names },
            AppPart::Line { id, name, time } => PushMessage::Line(ChatLine {
                id,
                name,
                msg: text,
                time,
            }),
            AppPart::Notice => PushMessage::Notice { text },
            AppPart::Removed { banned } => PushMessage::Removed { banned },
            AppPart::Stale { remove_at } => PushMessage::Stale { remove_at },
        })
    }
}

/// "Ann left", "Ann and Bo left", "Ann, Bo and Cy left", "Ann, Bo and 3 others left": up
/// to three names, else the first two and how many more.
fn left_title(names: &[String]) -> String {
    match names {
        [] => "Someone left".to_owned(),
        [one] => format!("{one} left"),
        [first, second, more @ ..] if more.len() > 1 => {
            format!("{first}, {second} and {} others left", more.len())
        }
        [all @ .., last] => format!("{} and {last} left", all.join(", ")),
    }
}

fn removed_body(banned: bool) -> &'static str {
    if banned {
        "The chat's operator removed you and banned your name from this chat."
    } else {
        "The chat's operator removed you. Open the chat and press Subscribe to join again."
    }
}

/// What a stale browser is told: the day it goes, as a date every reader parses alike.
fn stale_body(remove_at: u64) -> String {
    let day = time::OffsetDateTime::from_unix_timestamp((remove_at / 1000) as i64).map_or_else(
        |_| "soon".to_owned(),
        |moment| format!("on {} (UTC)", moment.date()),
    );
    format!(
        "It has not opened the chat for a long time and will be removed {day}. \
         Open the chat before then to keep getting it here."
    )
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    const CHAT: &str = "https://chat.example.org/";

    fn line() -> PushMessage {
        PushMessage::Line(ChatLine {
            id: 17,
            name: "Ann".into(),
            msg: "hello \"you\"".into(),
            time: 1_795_000_000_000,
        })
    }

    fn json_of(message: &PushMessage) -> Value {
        serde_json::from_slice(&message.to_payload(CHAT)).unwrap()
    }

    #[test]
    fn test_a_chat_line_is_a_declarative_push_whose_body_is_its_text() {
        assert_eq!(
            json_of(&line()),
            json!({
                "web_push": 8030,
                "notification": {
                    "title": "Ann",
                    "body": "hello \"you\"",
                    "navigate": CHAT,
                    "tag": "chat:Ann",
                    "mutable": true,
                },
                "mutable": true,
                "pushchat": {"action": "chatMsg", "id": 17, "name": "Ann", "time": 1_795_000_000_000u64},
            })
        );
        let payload = String::from_utf8(line().to_payload(CHAT)).unwrap();
        assert_eq!(payload.matches("hello").count(), 1, "{payload}");
    }

    #[test]
    fn test_every_update_reads_back_from_its_payload() {
        let updates = [
            line(),
            PushMessage::Joined { name: "Bo".into() },
            PushMessage::Left {
                names: vec!["Bo".into(), "Cy".into()],
            },
            PushMessage::Notice {
                text: "maintenance at noon".into(),
            },
            PushMessage::Removed { banned: true },
            PushMessage::Removed { banned: false },
            PushMessage::Stale {
                remove_at: 1_798_761_600_000,
            },
        ];
        for update in updates {
            let payload = String::from_utf8(update.to_payload(CHAT)).unwrap();
            assert_eq!(
                PushMessage::from_payload(&payload),
                Some(update),
                "{payload}"
            );
            let json: Value = serde_json::from_str(&payload).unwrap();
            assert_eq!(json["notification"]["navigate"], CHAT);
            assert!(json["notification"]["title"]
                .as_str()
                .is_some_and(|t| !t.is_empty()));
        }
    }

    #[test]
    fn test_member_changes_share_one_tag_and_notices_their_own() {
        let tag = |message: PushMessage| json_of(&message)["notification"]["tag"].clone();
        assert_eq!(tag(PushMessage::Joined { name: "Bo".into() }), "members");
        assert_eq!(
            tag(PushMessage::Left {
                names: vec!["Bo".into()]
            }),
            "members"
        );
        assert_eq!(tag(PushMessage::Removed { banned: false }), "members");
        assert_eq!(tag(PushMessage::Notice { text: "hi".into() }), "notice");
        let notice = json_of(&PushMessage::Notice { text: "hi".into() });
        assert_eq!(notice["notification"]["title"], "From the operator");
        assert_eq!(notice["pushchat"], json!({"action": "notice"}));
    }

    #[test]
    fn test_a_stale_browser_is_told_the_day_it_goes() {
        // 2027-01-01T00:00:00Z.
        let warning = json_of(&PushMessage::Stale {
            remove_at: 1_798_761_600_000,
        });
        let body = warning["notification"]["body"].as_str().unwrap();
        assert!(body.contains("on 2027-01-01 (UTC)"), "{body}");
        assert_eq!(
            warning["pushchat"],
            json!({"action": "stale", "removeAt": 1_798_761_600_000u64})
        );
    }

    #[test]
    fn test_who_left_is_said_in_at_most_three_names() {
        let names = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(left_title(&names(&[])), "Someone left");
        assert_eq!(left_title(&names(&["Ann"])), "Ann left");
        assert_eq!(left_title(&names(&["Ann", "Bo"])), "Ann and Bo left");
        assert_eq!(
            left_title(&names(&["Ann", "Bo", "Cy"])),
            "Ann, Bo and Cy left"
        );
        assert_eq!(
            left_title(&names(&["Ann", "Bo", "Cy", "Di", "Ed"])),
            "Ann, Bo and 3 others left"
        );
    }

    #[test]
    fn test_other_json_is_not_a_push_message() {
        assert_eq!(PushMessage::from_payload("{}"), None);
        assert_eq!(PushMessage::from_payload("not json"), None);
        let mut other = json_of(&line());
        other["web_push"] = json!(9001);
        assert_eq!(PushMessage::from_payload(&other.to_string()), None);
    }
}
