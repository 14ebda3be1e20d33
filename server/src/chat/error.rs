//! Why the chat's rules refuse a request: one error type whose messages a person can act
//! on, and which the HTTP layer turns into statuses.

use std::time::Duration;

use app::{names::NameError, wire::NotMember};

use super::lines::MAX_OLDER_LINES;
use crate::{model::subscription::SubscriptionError, store::StoreError};

/// Why a request was refused. Every variant but `Store` is the client's to fix.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("{0}")]
    InvalidName(#[from] NameError),
    #[error("{0}")]
    InvalidSubscription(#[from] SubscriptionError),
    #[error("{}", name_taken(wanted, holder))]
    NameTaken { wanted: String, holder: String },
    #[error("This browser is already a member as {0:?}; unsubscribe first to change the name.")]
    AlreadyMember(String),
    #[error("{}", not_member(*.0))]
    NotMember(NotMember),
    #[error("No member is called {0:?}.")]
    NoSuchMember(String),
    #[error("The name {0:?} is banned from this chat.")]
    Banned(String),
    #[error("The name {0:?} is not banned.")]
    NotBanned(String),
    #[error(
        "That device code is unknown, used or expired; ask for a new one on your other device."
    )]
    UnknownDeviceCode,
    #[error("This chat needs the passphrase its operator shared; it is missing or wrong.")]
    WrongPassphrase,
    #[error("This chat is for its members only: it has a join passphrase.")]
    MembersOnly,
    #[error("That push subscription belongs to another member.")]
    SubscriptionTaken,
    #[error("The auth secret does not match this member's subscription.")]
    WrongSecret,
    #[error("The message is empty.")]
    EmptyMessage,
    #[error("The message contains a NUL character (U+0000); remove it and send again.")]
    NulInMessage,
    #[error("The message is {0} bytes too long to fit in a push.")]
    MessageTooLong(usize),
    #[error(
        "{0} members have already joined from your network address; one of them must leave \
         before another can join."
    )]
    TooManyFromAddress(usize),
    #[error("Too many {what} in a short time; try again in {} seconds.", wait.as_secs().max(1))]
    TooMany { what: &'static str, wait: Duration },
    #[error("?before= must be a line's id (a whole number): the oldest line the page has.")]
    BadBefore,
    #[error("?limit= must be a whole number from 1 to {MAX_OLDER_LINES}.")]
    BadLimit,
    #[error("the store failed")]
    Store(#[source] StoreError),
}

fn name_taken(wanted: &str, holder: &str) -> String {
    if wanted == holder {
        format!("The name {wanted:?} is taken; please choose another.")
    } else {
        format!(
            "The name {wanted:?} looks like {holder:?}, a member's name; please choose another."
        )
    }
}

fn not_member(why: NotMember) -> &'static str {
    match why {
        NotMember::NotMember => {
            "This browser is not a member of the chat (any more); press Subscribe to join."
        }
        NotMember::Removed => "The chat's operator removed you from the chat.",
        NotMember::Banned => "The chat's operator removed you from the chat and banned your name.",
    }
}

impl From<StoreError> for ChatError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NameTaken(name) => ChatError::NameTaken {
                holder: name.clone(),
                wanted: name,
            },
            StoreError::EndpointTaken => ChatError::SubscriptionTaken,
            other => ChatError::Store(other),
        }
    }
}
