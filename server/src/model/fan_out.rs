//! A fan-out: one status update (a push message) and the members' devices it goes to. The
//! chat's rules make them, the store queues them, delivery sends them; every one is made
//! here, so what each kind of update says and to whom reads in one place.

use serde::{Deserialize, Serialize};

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

    /// The same update in batches of at most [`FAN_OUT_BATCH`] recipients; none for none.
    pub fn batches(&self) -> impl Iterator<Item = FanOut> + '_ {
        self.recipients
            .chunks(FAN_OUT_BATCH)
            .map(|recipients| FanOut::new(self.message.clone(), recipients.to_vec()))
    }
}
