//! What the page knows: where this browser stands ([`Membership`]), the room as pushes
//! and answers left it ([`Room`]), and the signals its background tasks change ([`Page`]).

use leptos::{prelude::*, task::spawn_local};

use super::{flows::no_longer_member, outbox::Outbox};
use crate::{
    api,
    names::sort_key,
    offline,
    unread::Unread,
    wire::{ChatLine, DeviceCode, NotMember, PushMessage, RoomState},
};

/// Where this browser stands in the chat.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Membership {
    /// The page is looking for a subscription from an earlier visit.
    Restoring,
    /// Not a member; the Subscribe button is offered.
    Visitor,
    /// A Subscribe or Unsubscribe press is being carried out.
    Busy,
    /// This browser cannot receive pushes: it shows the room but cannot join.
    Reader(CannotJoin),
    Member(Member),
}

/// Why a browser can read the chat but not join it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum CannotJoin {
    /// It lacks service workers or the Push API.
    NoPush,
    /// iOS or iPadOS Safari: the Push API exists only in a web app on the Home Screen.
    OutsideHomeScreen,
}

/// This browser as a member. Its credentials are not kept here: the service worker may
/// replace the push subscription behind the page's back (`pushsubscriptionchange`), so
/// they are read from the browser for each request.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Member {
    pub(super) name: String,
}

/// The live state of the room as this page knows it.
#[derive(Clone, Copy)]
pub(super) struct Room {
    pub(super) members: RwSignal<Vec<String>>,
    pub(super) lines: RwSignal<Vec<ChatLine>>,
    /// The operator's latest notice; not part of the history.
    pub(super) notice: RwSignal<Option<String>>,
    /// The latest change to the member list, in words, for screen readers to announce.
    pub(super) announcement: RwSignal<String>,
    /// Lines pushed while the page was hidden.
    pub(super) unread: Unread,
}

impl Room {
    pub(super) fn new() -> Self {
        Room {
            members: RwSignal::new(Vec::new()),
            lines: RwSignal::new(Vec::new()),
            notice: RwSignal::new(None),
            announcement: RwSignal::new(String::new()),
            unread: Unread::new(),
        }
    }

    pub(super) fn replace(&self, state: RoomState) {
        self.members.set(state.members);
        self.lines.set(state.history);
        self.keep();
    }

    /// Empties the room and forgets it: whoever leaves takes no history along.
    pub(super) fn clear(&self) {
        self.members.set(Vec::new());
        self.lines.set(Vec::new());
        offline::save_room(None);
    }

    /// Keeps the room as this browser last saw it, for when the server cannot be reached.
    pub(super) fn keep(&self) {
        offline::save_room(Some(&RoomState {
            you: None,
            members: self.members.get_untracked(),
            history: self.lines.get_untracked(),
        }));
    }

    pub(super) fn apply(&self, message: PushMessage) {
        match message {
            PushMessage::Joined { name } => {
                if self
                    .members
                    .with_untracked(|members| members.contains(&name))
                {
                    return;
                }
                self.announcement.set(format!("{name} joined the chat."));
                self.members.update(|members| {
                    members.push(name);
                    members.sort_by_cached_key(|name| sort_key(name));
                });
            }
            PushMessage::Left { names } => {
                self.announcement
                    .set(format!("{} left the chat.", names.join(", ")));
                self.members
                    .update(|members| members.retain(|member| !names.contains(member)));
            }
            PushMessage::Line(line) => {
                if self.add_line(line) {
                    self.unread.line_arrived();
                }
            }
            PushMessage::Notice { text } => self.notice.set(Some(text)),
            // About this browser's membership, not the room: see `Page::on_push`. A
            // warning that this browser is stale needs nothing: this page's own calls are
            // the sign of life that keeps it.
            PushMessage::Removed { .. } | PushMessage::Stale { .. } => return,
        }
        self.keep();
    }

    /// Adds a line once, in id order: a line can arrive both as a push and as the answer
    /// to this page's own send. Returns whether the line was new.
    pub(super) fn add_line(&self, line: ChatLine) -> bool {
        let added = self
            .lines
            .try_maybe_update(|lines| {
                let Err(at) = lines.binary_search_by_key(&line.id, |l| l.id) else {
                    return (false, false);
                };
                lines.insert(at, line);
                (true, true)
            })
            .unwrap_or(false);
        if added {
            self.keep();
        }
        added
    }
}

/// The page's state that its background tasks change.
#[derive(Clone, Copy)]
pub(super) struct Page {
    pub(super) membership: RwSignal<Membership>,
    pub(super) room: Room,
    pub(super) name_input: RwSignal<String>,
    pub(super) problem: RwSignal<Option<String>>,
    /// The server could not be reached: the page shows the room it kept.
    pub(super) unreachable: RwSignal<bool>,
    /// Lines typed while the server could not be reached.
    pub(super) outbox: Outbox,
    pub(super) joining: Joining,
    /// The code "Add a device" made, while it is shown.
    pub(super) new_device_code: RwSignal<Option<DeviceCode>>,
}

impl Page {
    /// A push the service worker relayed: news of the room, or that the operator removed
    /// this member.
    pub(super) fn on_push(self, message: PushMessage) {
        match message {
            PushMessage::Removed { banned } => {
                let why = if banned {
                    NotMember::Banned
                } else {
                    NotMember::Removed
                };
                spawn_local(no_longer_member(self, why));
            }
            news => self.room.apply(news),
        }
    }

    /// A member's call failed: if the server does not know this browser as a member, the
    /// page stops being one; otherwise it shows why.
    pub(super) fn member_call_failed(self, error: api::Error) {
        match error.not_member {
            Some(why) => spawn_local(no_longer_member(self, why)),
            None => self.problem.set(Some(error.sentence)),
        }
    }
}

/// What a visitor gives to join besides a name.
#[derive(Clone, Copy)]
pub(super) struct Joining {
    /// The chat has a join passphrase (`GET /api/join-rules`).
    pub(super) passphrase_needed: RwSignal<bool>,
    pub(super) passphrase: RwSignal<String>,
    /// A code from another of the member's browsers; with it, no name is needed.
    pub(super) device_code: RwSignal<String>,
}
