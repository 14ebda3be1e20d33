//! A fan-out: one status update (a push message) and the members' devices it goes to. The
//! chat's rules make them, the store queues them, delivery sends them; every one is made
//! here, so what each kind of update says and to whom reads in one place. It is queued in
//! batches of one push-service origin's recipients each (see [`FanOut::batches`]), so
//! that delivery can hold back one origin's batches while it hangs and send the others'.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use url::Url;

use app::wire::{ChatLine, PushMessage};

use crate::model::subscription::Subscription;

/// The most recipients one queued fan-out holds: a chat line to many members is several,
/// which several instances deliver side by side.
pub const FAN_OUT_BATCH: usize = 200;

/// One status update and the members' devices it goes to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanOut {
    pub message: PushMessage,
    pub recipients: Vec<Subscription>,
}

impl FanOut {
    fn new(message: PushMessage, recipients: Vec<Subscription>) -> Self {
        FanOut {
            message,
            recipients,
        }
    }

    /// `name` joined, to `recipients` (everyone, the newcomer included).
    pub fn joined(name: &str, recipients: Vec<Subscription>) -> Self {
        FanOut::new(PushMessage::Joined { name: name.into() }, recipients)
    }

    /// `names` left, to `recipients` (those who remain).
    pub fn left(names: Vec<String>, recipients: Vec<Subscription>) -> Self {
        FanOut::new(PushMessage::Left { names }, recipients)
    }

    /// A chat line to `recipients`.
    pub fn chat_line(line: &ChatLine, recipients: &[Subscription]) -> Self {
        FanOut::new(PushMessage::Line(line.clone()), recipients.to_vec())
    }

    /// The operator's notice, to `recipients`.
    pub fn notice(text: &str, recipients: Vec<Subscription>) -> Self {
        FanOut::new(PushMessage::Notice { text: text.into() }, recipients)
    }

    /// The last push to the browsers of a member the operator removed.
    pub fn removed(banned: bool, recipients: Vec<Subscription>) -> Self {
        FanOut::new(PushMessage::Removed { banned }, recipients)
    }

    /// The same update in batches of one push-service origin's recipients each, at most
    /// [`FAN_OUT_BATCH`] of them: origins in the order their first recipient comes,
    /// recipients in their order. None for none.
    pub fn batches(&self) -> impl Iterator<Item = Batch> {
        let mut by_origin: Vec<(String, Vec<&Subscription>)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for recipient in &self.recipients {
            let origin = push_origin(&recipient.endpoint);
            let at = *index.entry(origin).or_insert_with_key(|origin| {
                by_origin.push((origin.clone(), Vec::new()));
                by_origin.len() - 1
            });
            by_origin[at].1.push(recipient);
        }
        let mut batches = Vec::new();
        for (origin, recipients) in by_origin {
            for part in recipients.chunks(FAN_OUT_BATCH) {
                batches.push(Batch {
                    origin: origin.clone(),
                    fan_out: FanOut::new(
                        self.message.clone(),
                        part.iter().copied().cloned().collect(),
                    ),
                });
            }
        }
        batches.into_iter()
    }

    /// The origin a queued batch is held back by: its first recipient's. A batch of
    /// [`FanOut::batches`] has one; an older store's batches may mix several.
    pub fn origin(&self) -> String {
        self.recipients
            .first()
            .map(|recipient| push_origin(&recipient.endpoint))
            .unwrap_or_default()
    }
}

/// One queued part of a fan-out: recipients of one push-service origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// See [`push_origin`].
    pub origin: String,
    pub fan_out: FanOut,
}

/// The push service an endpoint belongs to, as scheme, host and port
/// (`https://fcm.googleapis.com`, the default port left out): what delivery shares its
/// slots by. Stored endpoints are URLs; anything else is the origin "".
pub fn push_origin(endpoint: &str) -> String {
    Url::parse(endpoint)
        .map(|url| url.origin().ascii_serialization())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(endpoint: &str) -> Subscription {
        Subscription {
            endpoint: endpoint.into(),
            p256dh: "key".into(),
            auth: "auth".into(),
        }
    }

    #[test]
    fn test_batches_are_one_origin_each_in_member_order() {
        let mut recipients = Vec::new();
        for n in 0..FAN_OUT_BATCH + 10 {
            recipients.push(at(&format!("https://a.example/{n}")));
            if n % 50 == 0 {
                recipients.push(at(&format!("https://b.example:8443/{n}")));
            }
        }
        let line = ChatLine {
            id: 1,
            name: "Ann".into(),
            msg: "hi".into(),
            time: 0,
        };
        let fan_out = FanOut::chat_line(&line, &recipients);
        let batches: Vec<Batch> = fan_out.batches().collect();
        let shape: Vec<(&str, usize)> = batches
            .iter()
            .map(|batch| (batch.origin.as_str(), batch.fan_out.recipients.len()))
            .collect();
        assert_eq!(
            shape,
            [
                ("https://a.example", FAN_OUT_BATCH),
                ("https://a.example", 10),
                ("https://b.example:8443", 5),
            ]
        );
        for batch in &batches {
            assert_eq!(batch.fan_out.origin(), batch.origin);
        }
        let a: Vec<&Subscription> = batches[..2]
            .iter()
            .flat_map(|batch| &batch.fan_out.recipients)
            .collect();
        assert!(a.windows(2).all(|pair| {
            let number = |s: &Subscription| {
                s.endpoint
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .parse::<usize>()
                    .unwrap()
            };
            number(pair[0]) < number(pair[1])
        }));
        assert_eq!(FanOut::notice("hi", Vec::new()).batches().count(), 0);
    }

    #[test]
    fn test_the_origin_is_scheme_host_and_port_without_the_default_port() {
        assert_eq!(
            push_origin("https://fcm.googleapis.com:443/fcm/send/x"),
            "https://fcm.googleapis.com"
        );
        assert_eq!(
            push_origin("http://127.0.0.1:9000/push/1"),
            "http://127.0.0.1:9000"
        );
        assert_eq!(push_origin("not a url"), "");
    }
}
