//! A fan-out: one status update (a push message) and the members' devices it goes to. The
//! chat's rules make them, the store queues them, delivery sends them; every one is made
//! here, so what each kind of update says and to whom reads in one place. It is queued in
//! batches of one push-service origin's recipients each (see [`FanOut::batches`]), so
//! that delivery can hold back one origin's batches while it hangs and send the others'.
//!
//! A queued fan-out names its recipients by their devices' endpoints (see [`Recipients`]),
//! which the store reads the subscriptions of when delivery takes a batch: a chat line
//! costs the queue an endpoint per member, not a copy of every member's subscription.
//! Only the last push to a removed member's browsers, whose devices go in the same change,
//! carries whole subscriptions; the constructors are the only way to make a fan-out, so no
//! removal can be queued by reference. Delivery sends a [`ResolvedFanOut`].

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use url::Url;

use app::wire::{ChatLine, PushMessage};

use crate::model::subscription::Subscription;

/// The most recipients one queued fan-out holds: a chat line to many members is several,
/// which several instances deliver side by side.
pub const FAN_OUT_BATCH: usize = 200;

/// One status update and the members' devices it goes to. Its fields are private: which
/// kind of [`Recipients`] an update may have is decided by its constructor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanOut {
    message: PushMessage,
    recipients: Recipients,
}

/// Whom a fan-out goes to. Stored as `{"devices": [endpoint, …]}` or, as every build
/// before store format 5 stored all of them, as a list of whole subscriptions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Recipients {
    /// Members' devices, by endpoint (a device's key in the store). Their subscriptions
    /// are read when delivery takes the batch; a device gone by then (it left, or was
    /// removed) is not sent to, and counts in no report.
    Devices {
        #[serde(rename = "devices")]
        endpoints: Vec<String>,
    },
    /// Whole subscriptions, of devices the store no longer holds when the batch is taken:
    /// a removed member's browsers, told of their removal. (Also every batch queued before
    /// store format 5.)
    Subscriptions(Vec<Subscription>),
}

impl Recipients {
    /// Each recipient's endpoint, in order.
    pub fn endpoints(&self) -> impl Iterator<Item = &str> {
        (0..self.len()).map(|at| self.endpoint(at))
    }

    fn endpoint(&self, at: usize) -> &str {
        match self {
            Recipients::Devices { endpoints } => &endpoints[at],
            Recipients::Subscriptions(subscriptions) => &subscriptions[at].endpoint,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Recipients::Devices { endpoints } => endpoints.len(),
            Recipients::Subscriptions(subscriptions) => subscriptions.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The same kind of recipients, of `part`'s indexes.
    fn part(&self, part: &[usize]) -> Recipients {
        match self {
            Recipients::Devices { endpoints } => Recipients::Devices {
                endpoints: part.iter().map(|&at| endpoints[at].clone()).collect(),
            },
            Recipients::Subscriptions(subscriptions) => Recipients::Subscriptions(
                part.iter().map(|&at| subscriptions[at].clone()).collect(),
            ),
        }
    }
}

/// A fan-out with each recipient's subscription: what delivery sends. A queued batch
/// becomes one when it is taken (see `store::TakenFanOut`); an operator's notice, sent at
/// once without the queue, is one from the start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedFanOut {
    pub message: PushMessage,
    pub recipients: Vec<Subscription>,
}

impl FanOut {
    fn to_devices(message: PushMessage, endpoints: Vec<String>) -> Self {
        FanOut {
            message,
            recipients: Recipients::Devices { endpoints },
        }
    }

    /// `name` joined, to the devices at `endpoints` (everyone, the newcomer included).
    pub fn joined(name: &str, endpoints: Vec<String>) -> Self {
        FanOut::to_devices(PushMessage::Joined { name: name.into() }, endpoints)
    }

    /// `names` left, to the devices at `endpoints` (those who remain).
    pub fn left(names: Vec<String>, endpoints: Vec<String>) -> Self {
        FanOut::to_devices(PushMessage::Left { names }, endpoints)
    }

    /// A chat line to the devices at `endpoints`.
    pub fn chat_line(line: &ChatLine, endpoints: &[String]) -> Self {
        FanOut::to_devices(PushMessage::Line(line.clone()), endpoints.to_vec())
    }

    /// The warning to the one browser at `endpoint`, silent for long, that it will be
    /// removed at `remove_at` (ms since the Unix epoch) unless the chat is opened there.
    pub fn stale_warning(remove_at: u64, endpoint: String) -> Self {
        FanOut::to_devices(PushMessage::Stale { remove_at }, vec![endpoint])
    }

    /// The last push to the browsers of a member the operator removed: by whole
    /// subscriptions, since their devices are deleted in the same change.
    pub fn removed(banned: bool, subscriptions: Vec<Subscription>) -> Self {
        FanOut {
            message: PushMessage::Removed { banned },
            recipients: Recipients::Subscriptions(subscriptions),
        }
    }

    pub fn message(&self) -> &PushMessage {
        &self.message
    }

    pub fn recipients(&self) -> &Recipients {
        &self.recipients
    }

    /// The same update in batches of one push-service origin's recipients each, at most
    /// [`FAN_OUT_BATCH`] of them: origins in the order their first recipient comes,
    /// recipients in their order. None for none.
    pub fn batches(&self) -> impl Iterator<Item = Batch> {
        let mut by_origin: Vec<(String, Vec<usize>)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for (at, endpoint) in self.recipients.endpoints().enumerate() {
            let origin = push_origin(endpoint);
            let slot = *index.entry(origin).or_insert_with_key(|origin| {
                by_origin.push((origin.clone(), Vec::new()));
                by_origin.len() - 1
            });
            by_origin[slot].1.push(at);
        }
        let mut batches = Vec::new();
        for (origin, recipients) in by_origin {
            for part in recipients.chunks(FAN_OUT_BATCH) {
                batches.push(Batch {
                    origin: origin.clone(),
                    fan_out: FanOut {
                        message: self.message.clone(),
                        recipients: self.recipients.part(part),
                    },
                });
            }
        }
        batches.into_iter()
    }

    /// The origin a queued batch is held back by: its first recipient's. A batch of
    /// [`FanOut::batches`] has one; an older store's batches may mix several.
    pub fn origin(&self) -> String {
        self.recipients
            .endpoints()
            .next()
            .map(push_origin)
            .unwrap_or_default()
    }

    /// Its message and recipients, for the store to resolve when delivery takes it.
    pub fn into_parts(self) -> (PushMessage, Recipients) {
        (self.message, self.recipients)
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
    use serde_json::json;

    use super::*;

    fn line() -> ChatLine {
        ChatLine {
            id: 1,
            name: "Ann".into(),
            msg: "hi".into(),
            time: 0,
        }
    }

    #[test]
    fn test_batches_are_one_origin_each_in_member_order() {
        let mut recipients = Vec::new();
        for n in 0..FAN_OUT_BATCH + 10 {
            recipients.push(format!("https://a.example/{n}"));
            if n % 50 == 0 {
                recipients.push(format!("https://b.example:8443/{n}"));
            }
        }
        let fan_out = FanOut::chat_line(&line(), &recipients);
        let batches: Vec<Batch> = fan_out.batches().collect();
        let shape: Vec<(&str, usize)> = batches
            .iter()
            .map(|batch| (batch.origin.as_str(), batch.fan_out.recipients().len()))
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
            assert!(matches!(
                batch.fan_out.recipients(),
                Recipients::Devices { .. }
            ));
        }
        let a: Vec<&str> = batches[..2]
            .iter()
            .flat_map(|batch| batch.fan_out.recipients().endpoints())
            .collect();
        let number = |endpoint: &str| {
            endpoint
                .rsplit('/')
                .next()
                .unwrap()
                .parse::<usize>()
                .unwrap()
        };
        assert!(a.windows(2).all(|pair| number(pair[0]) < number(pair[1])));
        assert_eq!(FanOut::joined("Ann", Vec::new()).batches().count(), 0);
    }

    #[test]
    fn test_a_removal_keeps_whole_subscriptions_in_its_batches() {
        let own = Subscription {
            endpoint: "https://a.example/1".into(),
            p256dh: "key".into(),
            auth: "auth".into(),
        };
        let removed = FanOut::removed(true, vec![own.clone()]);
        let batches: Vec<Batch> = removed.batches().collect();
        assert_eq!(batches.len(), 1);
        assert_eq!(
            batches[0].fan_out.recipients(),
            &Recipients::Subscriptions(vec![own])
        );
    }

    #[test]
    fn test_recipients_are_stored_as_devices_or_as_the_whole_subscriptions_of_older_builds() {
        let to_devices = FanOut::chat_line(&line(), &["https://a.example/1".into()]);
        let stored = serde_json::to_value(&to_devices).unwrap();
        assert_eq!(
            stored["recipients"],
            json!({"devices": ["https://a.example/1"]})
        );
        assert_eq!(
            serde_json::from_value::<FanOut>(stored).unwrap(),
            to_devices
        );

        let older = json!({
            "message": {"action": "chatMsg", "id": 1, "name": "Ann", "msg": "hi", "time": 0},
            "recipients": [{"endpoint": "https://a.example/1", "p256dh": "key", "auth": "auth"}],
        });
        let read: FanOut = serde_json::from_value(older.clone()).unwrap();
        assert_eq!(read.message(), &PushMessage::Line(line()));
        assert_eq!(
            read.recipients().endpoints().collect::<Vec<_>>(),
            ["https://a.example/1"]
        );
        assert_eq!(serde_json::to_value(&read).unwrap(), older);
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
