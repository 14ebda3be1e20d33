//! The chat's rules: who may join under which name, who may speak or leave, and who is
//! told what. Each operation checks its input, changes the store and queues in it the
//! [`FanOut`] that tells members (delivery takes it from there): when it answers, a success
//! and its fan-out are durable. It returns what it queued. Nothing here touches the
//! network, and time comes from a [`Clock`], so the rules are tested without either.
//!
//! A member is its push endpoint, proven by its `auth` secret (which push services never
//! see). Names come from the store, never from the request of a member who speaks; two
//! names a reader cannot tell apart are one name (see `store::name_key`).
//!
//! One way in: only `subscribe` makes a member, and everyone is told; a device code adds a
//! browser to a member who is still in. [`Chat::reopen`] (a page load) only restores a
//! member's state: a browser the chat does not know is told why ([`NotMember`]). One way
//! out: whatever ends a membership (leaving, the operator's remove or ban, a push
//! service's 404/410, a browser's long silence) goes through [`Chat::end`], which removes the browsers (the store
//! voids the codes of members left without one), tells the others who left, one push per
//! batch of names, and tells a removed member's own browsers. A ban holds on every way in.
//!
//! Every way in has an allowance per client address, and every member action one per
//! member (see [`Limits`]); on PostgreSQL the store counts them for all instances at once.
//!
//! One file per part of the rules: `admission` (the way in), `device_codes` (another
//! browser for a member), `lines` (chat lines and reading back through them, notices,
//! mutes), `departure` (the one way out), `pruning` (stale browsers warned, then removed),
//! `limits` (the allowances) and `error` (why a request is refused); this file holds what
//! they share: who a request comes from, the room, and who a push goes to.
//!
//! A member may mute chat lines for an hour. Every push must end in a visible
//! notification, so its service worker cannot drop them: the fan-out skips the member
//! instead. Joins and leaves still reach it.

use std::{sync::Arc, time::Duration};

use app::wire::{JoinRules, MemberCredentials, NotMember, RoomState};

use crate::{
    model::{
        clock::{Clock, SystemClock},
        fan_out::FanOut,
        member::Device,
        subscription::{EndpointPolicy, Subscription},
    },
    store::{Quota, Store},
};

mod admission;
mod departure;
mod device_codes;
mod error;
mod limits;
mod lines;
pub mod pruning;

use self::limits::minutely;
pub use self::{
    departure::Departure,
    error::ChatError,
    limits::Limits,
    lines::{OlderLines, FIRST_LINES, MAX_OLDER_LINES},
    pruning::{DEFAULT_STALE_AFTER_DAYS, STALE_GRACE},
};

/// How long a mute lasts: the notification's button says "Mute 1 hour".
pub const MUTE_FOR: Duration = Duration::from_secs(60 * 60);

/// Settings the rules depend on.
#[derive(Clone, Debug)]
pub struct ChatRules {
    /// Which push endpoints members may join with.
    pub endpoints: EndpointPolicy,
    /// How many chat lines the history keeps: a page loads [`FIRST_LINES`] of them and
    /// reads further back as the person scrolls up.
    pub history_limit: usize,
    /// How many chat lines one member may post in a minute.
    pub chat_lines_per_minute: u32,
    /// How many members may have joined from one network address.
    pub members_per_address: usize,
    /// What newcomers must give to join; anyone may join without one.
    pub join_passphrase: Option<String>,
    /// How long a browser may stay silent before it is warned, then removed (see
    /// `pruning`); never, without.
    pub stale_after: Option<Duration>,
}

impl Default for ChatRules {
    fn default() -> Self {
        ChatRules {
            endpoints: EndpointPolicy::default(),
            history_limit: DEFAULT_HISTORY_LIMIT,
            chat_lines_per_minute: DEFAULT_CHAT_LINES_PER_MINUTE,
            members_per_address: DEFAULT_MEMBERS_PER_ADDRESS,
            join_passphrase: None,
            stale_after: Some(DEFAULT_STALE_AFTER),
        }
    }
}

/// Scroll-back reaches this far unless the operator says otherwise: five first pages'
/// worth, while the store (and each backup) stays small. A line is at most a push's
/// payload, about 3 KB, so 1000 lines are at most about 3 MB.
pub const DEFAULT_HISTORY_LIMIT: usize = 1000;
pub const DEFAULT_CHAT_LINES_PER_MINUTE: u32 = 30;
pub const DEFAULT_MEMBERS_PER_ADDRESS: usize = 20;
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(DEFAULT_STALE_AFTER_DAYS * 24 * 3600);

pub struct Chat {
    store: Arc<dyn Store>,
    /// Chat lines one member may post.
    lines: Quota,
    /// Newcomers joining (with a name, not a device code) from one address.
    joins: Quota,
    rules: ChatRules,
    clock: Arc<dyn Clock>,
}

impl Chat {
    pub fn new(store: Arc<dyn Store>, rules: ChatRules) -> Self {
        Self::with_clock(store, rules, Arc::new(SystemClock))
    }

    /// The rules on `store`, reading the time from `clock`.
    pub fn with_clock(store: Arc<dyn Store>, rules: ChatRules, clock: Arc<dyn Clock>) -> Self {
        // Capped so that the burst's minutes still fit the allowance's arithmetic.
        let joins_at_once = rules.members_per_address.saturating_mul(2).min(1_000_000) as u32;
        Chat {
            store,
            lines: Quota::per_minute("messages", rules.chat_lines_per_minute),
            joins: minutely("joins from your network address", joins_at_once),
            rules,
            clock,
        }
    }

    pub(super) fn now(&self) -> u64 {
        self.clock.now_millis()
    }

    /// The member list (sorted by name, each member once) and the recent history.
    pub async fn room(&self) -> Result<RoomState, ChatError> {
        let mut members = self.store.member_names().await?;
        members.sort_by_cached_key(|name| app::names::sort_key(name));
        let history = self.store.recent_lines(FIRST_LINES).await?;
        Ok(RoomState {
            you: None,
            members,
            history,
        })
    }

    /// The room as `device`'s browser sees it.
    pub(super) async fn room_for(&self, device: &Device) -> Result<RoomState, ChatError> {
        Ok(RoomState {
            you: Some(device.name.clone()),
            ..self.room().await?
        })
    }

    /// The room for readers who cannot join (their browser has no push): a chat anyone
    /// may join may be read by anyone; one with a passphrase may not.
    pub async fn public_room(&self) -> Result<RoomState, ChatError> {
        if self.rules.join_passphrase.is_some() {
            return Err(ChatError::MembersOnly);
        }
        self.room().await
    }

    /// What newcomers must bring.
    pub fn join_rules(&self) -> JoinRules {
        JoinRules {
            passphrase: self.rules.join_passphrase.is_some(),
        }
    }

    /// Counts one action of `key` against `quota`, or says how long to wait.
    pub(super) async fn allow(&self, quota: &Quota, key: &str) -> Result<(), ChatError> {
        self.store
            .take_allowance(quota, key)
            .await?
            .map_err(|wait| ChatError::TooMany {
                what: quota.name,
                wait,
            })
    }

    /// The stored device with `subscription`'s endpoint, if any; an error if that endpoint
    /// belongs to a device with another secret.
    pub(super) async fn known(
        &self,
        subscription: &Subscription,
    ) -> Result<Option<Device>, ChatError> {
        let credentials = MemberCredentials {
            endpoint: subscription.endpoint.clone(),
            auth: subscription.auth.clone(),
        };
        match self.authenticate(&credentials).await {
            Ok(member) => Ok(Some(member)),
            Err(ChatError::NotMember(_)) => Ok(None),
            Err(error) => Err(error),
        }
    }

    pub(super) async fn authenticate(
        &self,
        credentials: &MemberCredentials,
    ) -> Result<Device, ChatError> {
        let Some(member) = self.store.device(&credentials.endpoint).await? else {
            let why = self.why_not_member(&credentials.endpoint, None).await?;
            return Err(ChatError::NotMember(why));
        };
        if !member.subscription.auth_matches(&credentials.auth) {
            return Err(ChatError::WrongSecret);
        }
        // A member's own request: a sign of life of its browser (see `pruning`).
        self.note_alive(&member).await?;
        Ok(member)
    }

    /// Why the browser at `endpoint`, perhaps asking under `name`, is not a member.
    pub(super) async fn why_not_member(
        &self,
        endpoint: &str,
        name: Option<&str>,
    ) -> Result<NotMember, ChatError> {
        let removal = self.store.removal(endpoint, self.now()).await?;
        let name = removal
            .as_ref()
            .map(|removal| removal.name.as_str())
            .or(name);
        if let Some(name) = name {
            if self.store.is_banned(name).await? {
                return Ok(NotMember::Banned);
            }
        }
        Ok(match removal {
            Some(_) => NotMember::Removed,
            None => NotMember::NotMember,
        })
    }

    /// Queues `fan_out` and returns it.
    pub(super) async fn queue(&self, fan_out: FanOut) -> Result<FanOut, ChatError> {
        self.store.queue_fan_out(&fan_out).await?;
        Ok(fan_out)
    }

    /// Every member's devices, by endpoint, but a chat line skips members whose mute lasts
    /// past now.
    pub(super) async fn recipients(&self, kind: PushKind) -> Result<Vec<String>, ChatError> {
        let unmuted_at = match kind {
            PushKind::ChatLine => Some(self.now()),
            PushKind::Other => None,
        };
        Ok(self.store.endpoints(unmuted_at).await?)
    }
}

/// What a push to everyone carries, as far as who gets it is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PushKind {
    /// Skips members who muted chat lines.
    ChatLine,
    /// Joins, leaves and notices reach everyone.
    Other,
}

/// Refuses a message or notice with nothing to read, or with a NUL (which PostgreSQL
/// cannot store, and no person types).
fn check_text(text: &str) -> Result<(), ChatError> {
    if text.trim().is_empty() {
        return Err(ChatError::EmptyMessage);
    }
    if text.contains('\0') {
        return Err(ChatError::NulInMessage);
    }
    Ok(())
}

/// A member id: 128 random bits, hex.
fn random_id() -> String {
    let bytes: [u8; 16] = rand::random();
    hex::encode(bytes)
}

#[cfg(test)]
mod tests;
