//! Lines typed while the chat server cannot be reached: kept in localStorage (a reload
//! keeps them too), shown as not sent yet, and sent in order once the page is a member
//! the server answers again.

use leptos::prelude::*;

use super::state::Page;
use crate::{api, browser, browser::local_storage, offline, wire::PostLineRequest};

const OUTBOX_KEY: &str = "pushchat.outbox";

/// The lines waiting for the server. Cheap to copy into closures.
#[derive(Clone, Copy)]
pub(super) struct Outbox {
    pub(super) lines: RwSignal<Vec<String>>,
    /// Whether [`send_kept`] is under way, so that a line is never sent twice.
    sending: StoredValue<bool>,
}

impl Outbox {
    pub(super) fn new() -> Self {
        Outbox {
            lines: RwSignal::new(Vec::new()),
            sending: StoredValue::new(false),
        }
    }

    /// In the browser: the lines an earlier visit could not send.
    pub(super) fn load(&self) {
        let kept = local_storage()
            .and_then(|storage| storage.get_item(OUTBOX_KEY).ok().flatten())
            .and_then(|json| serde_json::from_str(&json).ok())
            .unwrap_or_default();
        self.lines.set(kept);
    }

    pub(super) fn keep(&self, msg: String) {
        self.lines.update(|lines| lines.push(msg));
        self.save();
    }

    /// Forgets the kept lines: whoever leaves the chat sends nothing more.
    pub(super) fn clear(&self) {
        self.lines.set(Vec::new());
        self.save();
    }

    fn save(&self) {
        let Some(storage) = local_storage() else {
            return;
        };
        // Full or disabled storage keeps the lines for this visit only.
        let _ = self.lines.with_untracked(|lines| match lines.is_empty() {
            true => storage.remove_item(OUTBOX_KEY),
            false => match serde_json::to_string(lines) {
                Ok(json) => storage.set_item(OUTBOX_KEY, &json),
                Err(_) => Ok(()),
            },
        });
    }
}

/// What became of a line the page sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Sent {
    /// The server took it; it is in the room.
    Yes,
    /// The server could not be reached: the page now says it is offline.
    Later,
    /// The server refused it; the page shows why.
    Refused,
}

/// Sends one line as this browser's member.
pub(super) async fn send(page: Page, msg: String) -> Sent {
    let posted = async {
        let member = browser::member_credentials().await?;
        api::chat(&PostLineRequest { member, msg }).await
    };
    match posted.await {
        Ok(line) => {
            page.room.add_line(line);
            Sent::Yes
        }
        // A failure without an answer: a refusal comes from a server that answers.
        Err(_) if !offline::server_reachable().await => {
            page.unreachable.set(true);
            Sent::Later
        }
        Err(error) => {
            page.member_call_failed(error);
            Sent::Refused
        }
    }
}

/// Sends the kept lines, oldest first. A line the server refuses is dropped (the page
/// says why); without the server the rest stay kept for the next time it is back.
pub(super) async fn send_kept(page: Page) {
    let outbox = page.outbox;
    if outbox.sending.get_value() {
        return;
    }
    outbox.sending.set_value(true);
    while let Some(msg) = outbox.lines.with_untracked(|lines| lines.first().cloned()) {
        if send(page, msg).await == Sent::Later {
            break;
        }
        outbox.lines.update(|lines| {
            if !lines.is_empty() {
                lines.remove(0);
            }
        });
        outbox.save();
    }
    outbox.sending.set_value(false);
}
