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
//! browser to a member who is still in. `init` (a page load) only restores a member's
//! state: a browser the chat does not know is told why ([`NotMember`]). One way out:
//! whatever ends a membership (leaving, the operator's remove or ban, a push service's
//! 404/410) goes through [`Chat::end`], which removes the browsers (the store voids the
//! codes of members left without one), tells the others who left, one push per batch of
//! names, and tells a removed member's own browsers. A ban holds on every way in.
//!
//! Every way in has an allowance per client address, and every member action one per
//! member (see [`Limits`]); on PostgreSQL the store counts them for all instances at once.
//!
//! Beside the joins, lines and mutes here: `error` (why a request is refused), `limits`
//! (the allowances), `device_codes` (what a code looks like) and `departure` (the one
//! way out).
//!
//! A member may mute chat lines for an hour. Every push must end in a visible
//! notification, so its service worker cannot drop them: the fan-out skips the member
//! instead. Joins and leaves still reach it.

use std::{net::IpAddr, sync::Arc, time::Duration};

use app::{
    names::clean_name,
    wire::{
        self, chat_payload_excess, ChatLine, JoinRules, MemberCredentials, MuteRequest, NotMember,
        PostLineRequest, ResubscribeRequest, RoomState, SubscribeRequest, PUSH_PAYLOAD_LIMIT,
    },
};

use subtle::ConstantTimeEq;

use crate::{
    model::{
        clock::{Clock, SystemClock},
        fan_out::FanOut,
        member::{Device, DeviceCode},
        subscription::{self, EndpointPolicy, Subscription},
    },
    store::{NewLine, Quota, Store, StoreError},
};

mod departure;
mod device_codes;
mod error;
mod limits;

pub use self::{departure::Departure, error::ChatError, limits::Limits};
use self::{
    device_codes::{new_device_code, normal_code, DEVICE_CODE_LIFETIME},
    limits::{address_key, minutely},
};

/// How long a mute lasts: the notification's button says "Mute 1 hour".
pub const MUTE_FOR: Duration = Duration::from_secs(60 * 60);

/// Settings the rules depend on.
#[derive(Clone, Debug)]
pub struct ChatRules {
    /// Which push endpoints members may join with.
    pub endpoints: EndpointPolicy,
    /// How many chat lines the history keeps and `init` returns.
    pub history_limit: usize,
    /// How many chat lines one member may post in a minute.
    pub chat_lines_per_minute: u32,
    /// How many members may have joined from one network address.
    pub members_per_address: usize,
    /// What newcomers must give to join; anyone may join without one.
    pub join_passphrase: Option<String>,
}

impl Default for ChatRules {
    fn default() -> Self {
        ChatRules {
            endpoints: EndpointPolicy::default(),
            history_limit: DEFAULT_HISTORY_LIMIT,
            chat_lines_per_minute: DEFAULT_CHAT_LINES_PER_MINUTE,
            members_per_address: DEFAULT_MEMBERS_PER_ADDRESS,
            join_passphrase: None,
        }
    }
}

pub const DEFAULT_HISTORY_LIMIT: usize = 200;
pub const DEFAULT_CHAT_LINES_PER_MINUTE: u32 = 30;
pub const DEFAULT_MEMBERS_PER_ADDRESS: usize = 20;

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

    fn now(&self) -> u64 {
        self.clock.now_millis()
    }

    /// A browser joins: everyone, the newcomer included, is told. Subscribing again with
    /// the same subscription and name changes nothing and tells nobody. With a device code,
    /// the browser joins the member who made the code instead (see [`Chat::add_device`]).
    pub async fn subscribe(
        &self,
        request: SubscribeRequest,
        from: IpAddr,
    ) -> Result<(RoomState, Option<FanOut>), ChatError> {
        if let Some(code) = &request.device_code {
            return self
                .add_device(&request, code, from)
                .await
                .map(|room| (room, None));
        }
        let device = self.new_member(&request, from)?;
        if let Some(known) = self.known(&device.subscription).await? {
            return if known.name == device.name {
                Ok((self.room_for(&known).await?, None))
            } else {
                Err(ChatError::AlreadyMember(known.name))
            };
        }
        self.check_admission(&device, request.passphrase.as_deref(), from)
            .await?;
        if let Some(holder) = self.store.devices_of(&device.name).await?.first() {
            return Err(ChatError::NameTaken {
                wanted: device.name,
                holder: holder.name.clone(),
            });
        }
        // Counted once everything else let the newcomer in: joining and leaving again and
        // again would cost every member a notification each time.
        self.allow(&self.joins, &address_key(from)).await?;
        if let Err(error) = self.store.put_device(&device).await {
            return Err(self.name_taken_by(error, &device.name).await);
        }
        tracing::info!(name = %device.name, %from, "member joined");
        let everyone = self.recipients(PushKind::Other).await?;
        let joined = self.queue(FanOut::joined(&device.name, everyone)).await?;
        Ok((self.room_for(&device).await?, Some(joined)))
    }

    /// `error` from storing a member called `wanted`; a taken name says whose it looks like.
    async fn name_taken_by(&self, error: StoreError, wanted: &str) -> ChatError {
        if !matches!(error, StoreError::NameTaken(_)) {
            return error.into();
        }
        let holder = match self.store.devices_of(wanted).await {
            Ok(devices) => devices.first().map(|device| device.name.clone()),
            Err(error) => return error.into(),
        };
        ChatError::NameTaken {
            wanted: wanted.to_owned(),
            holder: holder.unwrap_or_else(|| wanted.to_owned()),
        }
    }

    /// A member asks for a code that adds another browser (a phone, say) to it, proving
    /// who it is with one of its devices. The code works once, for 15 minutes, and not
    /// after the member left.
    pub async fn device_code(
        &self,
        credentials: MemberCredentials,
    ) -> Result<wire::DeviceCode, ChatError> {
        let device = self.authenticate(&credentials).await?;
        self.allow(&Limits::DEVICE_CODES, &device.member_id).await?;
        let code = new_device_code();
        let now = self.now();
        let grant = DeviceCode {
            member_id: device.member_id,
            name: device.name,
            expires: now + DEVICE_CODE_LIFETIME.as_millis() as u64,
        };
        self.store
            .put_device_code(&normal_code(&code), &grant, now)
            .await?;
        Ok(wire::DeviceCode {
            code,
            expires: grant.expires,
        })
    }

    /// A browser joins the member whose code it brings, while that member is in and its
    /// name is not banned: the others are not told (nobody new arrived).
    async fn add_device(
        &self,
        request: &SubscribeRequest,
        code: &str,
        from: IpAddr,
    ) -> Result<RoomState, ChatError> {
        let subscription = subscription::validate(&request.subscription, &self.rules.endpoints)?;
        if let Some(known) = self.known(&subscription).await? {
            return Err(ChatError::AlreadyMember(known.name));
        }
        self.allow(&Limits::DEVICE_CODE_TRIES, &address_key(from))
            .await?;
        self.check_room_at(from).await?;
        let grant = self
            .store
            .take_device_code(&normal_code(code), self.now())
            .await?
            .ok_or(ChatError::UnknownDeviceCode)?;
        let member_is_in = (self.store.devices_of(&grant.name).await?)
            .iter()
            .any(|device| device.member_id == grant.member_id);
        if !member_is_in {
            return Err(ChatError::UnknownDeviceCode);
        }
        if self.store.is_banned(&grant.name).await? {
            return Err(ChatError::Banned(grant.name));
        }
        let device = Device {
            name: grant.name,
            member_id: grant.member_id,
            subscription,
            joined: self.now(),
            joined_from: Some(from),
            muted_until: None,
        };
        self.store.put_device(&device).await?;
        tracing::info!(name = %device.name, %from, "member added a device");
        self.room_for(&device).await
    }

    /// A page loads with a subscription from an earlier visit: a member gets the room; a
    /// browser the chat does not know is told why (it never joined, it was removed or
    /// banned, or the server lost it), and is not added: only Subscribe makes a member.
    /// Nobody is told either way: a page load must not cost every member a notification.
    pub async fn init(
        &self,
        request: SubscribeRequest,
        from: IpAddr,
    ) -> Result<RoomState, ChatError> {
        self.allow(&Limits::INITS, &address_key(from)).await?;
        let subscription = subscription::validate(&request.subscription, &self.rules.endpoints)?;
        match self.known(&subscription).await? {
            Some(device) => self.room_for(&device).await,
            None => {
                let why = self
                    .why_not_member(&subscription.endpoint, Some(&request.name))
                    .await?;
                Err(ChatError::NotMember(why))
            }
        }
    }

    /// The browser replaced a member's subscription: the member moves to the new one,
    /// keeping its name. Nobody is told; nothing changed for them.
    pub async fn resubscribe(
        &self,
        request: ResubscribeRequest,
        from: IpAddr,
    ) -> Result<RoomState, ChatError> {
        self.allow(&Limits::RESUBSCRIBES, &address_key(from))
            .await?;
        let member = self.authenticate(&request.member).await?;
        let subscription = subscription::validate(&request.subscription, &self.rules.endpoints)?;
        let moved = self
            .store
            .replace_subscription(&member.subscription.endpoint, &subscription)
            .await?;
        if !moved {
            // It left (or its push service said it was gone) since it was read above.
            return Err(ChatError::NotMember(NotMember::NotMember));
        }
        self.room().await
    }

    /// A browser leaves: it is deleted. When it was the member's last, the others are
    /// told the member left; the member's other browsers stay in.
    pub async fn unsubscribe(&self, request: MemberCredentials) -> Result<Vec<FanOut>, ChatError> {
        let device = self.authenticate(&request).await?;
        self.end(&[device.subscription], Departure::Left).await
    }

    /// A member speaks: the line is stored under the member's stored name and goes to
    /// everyone, the sender's other open pages included.
    pub async fn post_line(
        &self,
        request: PostLineRequest,
    ) -> Result<(ChatLine, FanOut), ChatError> {
        let member = self.authenticate(&request.member).await?;
        check_text(&request.msg)?;
        if let Some(excess) = chat_payload_excess(&member.name, &request.msg) {
            return Err(ChatError::MessageTooLong(excess));
        }
        self.allow(&self.lines, &member.member_id).await?;
        let recipients = self.recipients(PushKind::ChatLine).await?;
        let line = NewLine {
            name: &member.name,
            msg: &request.msg,
            time: self.now(),
        };
        Ok(self
            .store
            .append_line(line, self.rules.history_limit, &recipients)
            .await?)
    }

    /// The operator lets a banned name join again.
    pub async fn unban(&self, name: &str) -> Result<(), ChatError> {
        if !self.store.unban(name).await? {
            return Err(ChatError::NotBanned(name.to_owned()));
        }
        Ok(())
    }

    /// A notice from the operator, to the member called `to` or to everyone. It is not
    /// part of the history.
    pub async fn notice(&self, to: Option<&str>, text: &str) -> Result<FanOut, ChatError> {
        let text = text.trim();
        check_text(text)?;
        let excess = FanOut::notice(text, Vec::new())
            .message
            .to_payload()
            .len()
            .saturating_sub(PUSH_PAYLOAD_LIMIT);
        if excess > 0 {
            return Err(ChatError::MessageTooLong(excess));
        }
        let recipients = match to {
            None => self.recipients(PushKind::Other).await?,
            Some(name) => {
                let devices = self.store.devices_of(name).await?;
                if devices.is_empty() {
                    return Err(ChatError::NoSuchMember(name.to_owned()));
                }
                devices.into_iter().map(|d| d.subscription).collect()
            }
        };
        Ok(FanOut::notice(text, recipients))
    }

    /// A member mutes chat lines for [`MUTE_FOR`] from now, on every one of its browsers
    /// (pressing again starts the hour again). Returns until when, in milliseconds since
    /// the Unix epoch.
    pub async fn mute(&self, request: MuteRequest) -> Result<u64, ChatError> {
        let pressed = self.authenticate(&request).await?;
        self.allow(&Limits::MUTES, &pressed.member_id).await?;
        let until = self.now() + MUTE_FOR.as_millis() as u64;
        for device in self.store.devices_of(&pressed.name).await? {
            self.store
                .set_muted_until(&device.subscription.endpoint, until)
                .await?;
        }
        Ok(until)
    }

    /// The member list (sorted by name, each member once) and the recent history.
    pub async fn room(&self) -> Result<RoomState, ChatError> {
        let mut members: Vec<String> = self
            .store
            .devices()
            .await?
            .into_iter()
            .map(|device| device.name)
            .collect();
        members.sort_by_key(|name| name.to_lowercase());
        members.dedup();
        let history = self.store.recent_lines(self.rules.history_limit).await?;
        Ok(RoomState {
            you: None,
            members,
            history,
        })
    }

    /// The room as `device`'s browser sees it.
    async fn room_for(&self, device: &Device) -> Result<RoomState, ChatError> {
        Ok(RoomState {
            you: Some(device.name.clone()),
            ..self.room().await?
        })
    }

    /// A device of a member who is not in the chat yet.
    fn new_member(&self, request: &SubscribeRequest, from: IpAddr) -> Result<Device, ChatError> {
        let name = clean_name(&request.name)?;
        let subscription = subscription::validate(&request.subscription, &self.rules.endpoints)?;
        Ok(Device {
            name,
            member_id: random_id(),
            subscription,
            joined: self.now(),
            joined_from: Some(from),
            muted_until: None,
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

    /// Refuses a newcomer without the chat's passphrase (past its address's tries), with
    /// a banned name (or one like it), or from an address that already has its share of
    /// members: one machine must not be able to fill the chat (and every fan-out) with
    /// members.
    async fn check_admission(
        &self,
        newcomer: &Device,
        passphrase: Option<&str>,
        from: IpAddr,
    ) -> Result<(), ChatError> {
        if let Some(expected) = &self.rules.join_passphrase {
            self.allow(&Limits::PASSPHRASE_TRIES, &address_key(from))
                .await?;
            let given = passphrase.unwrap_or_default().trim();
            if !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
                tracing::info!(%from, "a wrong join passphrase");
                return Err(ChatError::WrongPassphrase);
            }
        }
        if self.store.is_banned(&newcomer.name).await? {
            return Err(ChatError::Banned(newcomer.name.clone()));
        }
        self.check_room_at(from).await
    }

    /// Refuses another device from `from` when that address already has its share.
    async fn check_room_at(&self, from: IpAddr) -> Result<(), ChatError> {
        let there = self
            .store
            .devices()
            .await?
            .iter()
            .filter(|device| device.joined_from == Some(from))
            .count();
        if there >= self.rules.members_per_address {
            return Err(ChatError::TooManyFromAddress(there));
        }
        Ok(())
    }

    /// Counts one action of `key` against `quota`, or says how long to wait.
    async fn allow(&self, quota: &Quota, key: &str) -> Result<(), ChatError> {
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
    async fn known(&self, subscription: &Subscription) -> Result<Option<Device>, ChatError> {
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

    async fn authenticate(&self, credentials: &MemberCredentials) -> Result<Device, ChatError> {
        let Some(member) = self.store.device(&credentials.endpoint).await? else {
            let why = self.why_not_member(&credentials.endpoint, None).await?;
            return Err(ChatError::NotMember(why));
        };
        if member.subscription.auth_matches(&credentials.auth) {
            Ok(member)
        } else {
            Err(ChatError::WrongSecret)
        }
    }

    /// Why the browser at `endpoint`, perhaps asking under `name`, is not a member.
    async fn why_not_member(
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
    async fn queue(&self, fan_out: FanOut) -> Result<FanOut, ChatError> {
        self.store.queue_fan_out(&fan_out).await?;
        Ok(fan_out)
    }

    /// Every member's devices, but a chat line skips members whose mute lasts past now.
    async fn recipients(&self, kind: PushKind) -> Result<Vec<Subscription>, ChatError> {
        let now = self.now();
        let devices = self.store.devices().await?;
        Ok(devices
            .into_iter()
            .filter(|device| {
                kind != PushKind::ChatLine || device.muted_until.is_none_or(|until| until <= now)
            })
            .map(|device| device.subscription)
            .collect())
    }
}

/// What a push to everyone carries, as far as who gets it is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PushKind {
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
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use app::wire::{PushMessage, PushSubscription, SubscriptionKeys, PUSH_PAYLOAD_LIMIT};

    use super::*;
    use crate::{model::clock::ManualClock, store::testing::TestStore};

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 7));

    // Real P-256 points (RFC 8291 Appendix A's two public keys).
    const KEY_A: &str =
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const KEY_B: &str =
        "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8";

    fn rules() -> ChatRules {
        ChatRules {
            endpoints: EndpointPolicy::default(),
            history_limit: 50,
            chat_lines_per_minute: 3,
            members_per_address: 3,
            join_passphrase: None,
        }
    }

    async fn chat() -> (TestStore, Chat) {
        chat_with(rules()).await
    }

    /// A chat on a fresh store of the kind this run tests (see `store::tests`).
    async fn chat_with(rules: ChatRules) -> (TestStore, Chat) {
        let test = TestStore::new().await;
        let chat = Chat::new(Arc::clone(&test.store), rules);
        (test, chat)
    }

    /// A chat whose time is `clock`'s.
    async fn chat_at(clock: Arc<ManualClock>) -> (TestStore, Chat) {
        let test = TestStore::new().await;
        let chat = Chat::with_clock(Arc::clone(&test.store), rules(), clock);
        (test, chat)
    }

    fn auth(n: u8) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([n; 16])
    }

    fn join_request(name: &str, n: u8) -> SubscribeRequest {
        SubscribeRequest {
            name: name.into(),
            subscription: PushSubscription {
                endpoint: format!("https://push.example.com/{n}"),
                keys: SubscriptionKeys {
                    p256dh: if n % 2 == 0 { KEY_A } else { KEY_B }.into(),
                    auth: auth(n),
                },
            },
            passphrase: None,
            device_code: None,
        }
    }

    fn credentials(n: u8) -> MemberCredentials {
        MemberCredentials {
            endpoint: format!("https://push.example.com/{n}"),
            auth: auth(n),
        }
    }

    fn left(names: &[&str]) -> PushMessage {
        PushMessage::Unsubscribe {
            names: names.iter().map(|&name| name.to_owned()).collect(),
        }
    }

    fn endpoints(broadcast: &FanOut) -> Vec<String> {
        broadcast
            .recipients
            .iter()
            .map(|r| r.endpoint.clone())
            .collect()
    }

    #[tokio::test]
    async fn test_a_join_is_pushed_to_everyone_including_the_newcomer() {
        let (_store, chat) = chat().await;
        chat.subscribe(join_request("Ann", 1), HOME).await.unwrap();
        let (room, broadcast) = chat
            .subscribe(join_request("  Bo ", 2), HOME)
            .await
            .unwrap();
        assert_eq!(room.members, ["Ann", "Bo"]);
        let broadcast = broadcast.unwrap();
        assert_eq!(
            broadcast.message,
            PushMessage::Subscribe { name: "Bo".into() }
        );
        assert_eq!(broadcast.recipients.len(), 2);
    }

    #[tokio::test]
    async fn test_subscribing_twice_the_same_way_tells_nobody() {
        let (_store, chat) = chat().await;
        chat.subscribe(join_request("Ann", 1), HOME).await.unwrap();
        let (room, broadcast) = chat.subscribe(join_request("Ann", 1), HOME).await.unwrap();
        assert!(broadcast.is_none());
        assert_eq!(room.members, ["Ann"]);
        let renamed = chat.subscribe(join_request("Annie", 1), HOME).await;
        assert!(matches!(renamed, Err(ChatError::AlreadyMember(name)) if name == "Ann"));
    }

    #[tokio::test]
    async fn test_a_taken_name_is_refused_whatever_its_case() {
        let (_store, chat) = chat().await;
        chat.subscribe(join_request("Ann", 1), HOME).await.unwrap();
        let clash = chat.subscribe(join_request("aNN", 2), HOME).await;
        assert!(matches!(clash, Err(ChatError::NameTaken { .. })));
        assert_eq!(chat.room().await.unwrap().members, ["Ann"]);
    }

    #[tokio::test]
    async fn test_an_endpoint_replayed_with_another_secret_is_refused() {
        let (_store, chat) = chat().await;
        chat.subscribe(join_request("Ann", 1), HOME).await.unwrap();
        let mut replay = join_request("Mallory", 3);
        replay.subscription.endpoint = credentials(1).endpoint;
        assert!(matches!(
            chat.subscribe(replay.clone(), HOME).await,
            Err(ChatError::WrongSecret)
        ));
        assert!(matches!(
            chat.init(replay, HOME).await,
            Err(ChatError::WrongSecret)
        ));
        assert_eq!(chat.room().await.unwrap().members, ["Ann"]);
    }

    #[tokio::test]
    async fn test_init_restores_a_member_and_never_makes_one() {
        let (_store, chat) = chat().await;
        // A browser the chat lost (a store reset, say) is told so, and stays out.
        for _ in 0..2 {
            assert!(matches!(
                chat.init(join_request("Ann", 1), HOME).await,
                Err(ChatError::NotMember(NotMember::NotMember))
            ));
        }
        assert!(chat.room().await.unwrap().members.is_empty());
        chat.subscribe(join_request("Ann", 1), HOME).await.unwrap();
        let room = chat.init(join_request("Ann", 1), HOME).await.unwrap();
        assert_eq!(room.you.as_deref(), Some("Ann"));
    }

    #[tokio::test]
    async fn test_chat_lines_carry_the_stored_name_and_reach_everyone() {
        let (_store, chat) = chat().await;
        chat.subscribe(join_request("Ann", 1), HOME).await.unwrap();
        chat.subscribe(join_request("Bo", 2), HOME).await.unwrap();
        let request = PostLineRequest {
            member: credentials(2),
            msg: "hello".into(),
        };
        let (line, broadcast) = chat.post_line(request).await.unwrap();
        assert_eq!(line.name, "Bo");
        assert_eq!(broadcast.message, PushMessage::ChatMsg(line.clone()));
        assert_eq!(endpoints(&broadcast).len(), 2);
        assert_eq!(chat.room().await.unwrap().history, vec![line]);
    }

    #[tokio::test]
    async fn test_only_the_secret_holder_can_speak_or_leave() {
        let (_store, chat) = chat().await;
        chat.subscribe(join_request("Ann", 1), HOME).await.unwrap();
        let forged = MemberCredentials {
            endpoint: credentials(1).endpoint,
            auth: auth(9),
        };
        let post = PostLineRequest {
            member: forged.clone(),
            msg: "hi".into(),
        };
        assert!(matches!(
            chat.post_line(post).await,
            Err(ChatError::WrongSecret)
        ));
        assert!(matches!(
            chat.unsubscribe(forged).await,
            Err(ChatError::WrongSecret)
        ));
        assert!(matches!(
            chat.unsubscribe(credentials(5)).await,
            Err(ChatError::NotMember(NotMember::NotMember))
        ));
        assert_eq!(chat.room().await.unwrap().members, ["Ann"]);
        assert!(chat.room().await.unwrap().history.is_empty());
    }

    #[tokio::test]
    async fn test_a_replaced_subscription_keeps_the_member_and_its_name() {
        let (_store, chat) = chat().await;
        chat.subscribe(join_request("Ann", 1), HOME).await.unwrap();
        chat.subscribe(join_request("Bo", 2), HOME).await.unwrap();
        let fresh = join_request("ignored", 3).subscription;
        let request = ResubscribeRequest {
            member: credentials(1),
            subscription: fresh.clone(),
        };
        let room = chat.resubscribe(request.clone(), HOME).await.unwrap();
        assert_eq!(room.members, ["Ann", "Bo"]);
        // The old credentials are spent; the new ones speak as Ann.
        assert!(matches!(
            chat.resubscribe(request, HOME).await,
            Err(ChatError::NotMember(NotMember::NotMember))
        ));
        let line = PostLineRequest {
            member: credentials(3),
            msg: "still me".into(),
        };
        assert_eq!(chat.post_line(line).await.unwrap().0.name, "Ann");
        // Nobody can move onto another member's subscription.
        let stolen = ResubscribeRequest {
            member: credentials(3),
            subscription: join_request("x", 2).subscription,
        };
        assert!(matches!(
            chat.resubscribe(stolen, HOME).await,
            Err(ChatError::SubscriptionTaken)
        ));
        let forged = ResubscribeRequest {
            member: MemberCredentials {
                endpoint: credentials(2).endpoint,
                auth: auth(9),
            },
            subscription: fresh,
        };
        assert!(matches!(
            chat.resubscribe(forged, HOME).await,
            Err(ChatError::WrongSecret)
        ));
    }

    #[tokio::test]
    async fn test_leaving_tells_only_those_who_remain() {
        let (_store, chat) = chat().await;
        chat.subscribe(join_request("Ann", 1), HOME).await.unwrap();
        chat.subscribe(join_request("Bo", 2), HOME).await.unwrap();
        let queued = chat.unsubscribe(credentials(1)).await.unwrap();
        let [broadcast] = queued.as_slice() else {
            panic!("Ann's only device left: one push, not {queued:?}");
        };
        assert_eq!(broadcast.message, left(&["Ann"]));
        assert_eq!(endpoints(broadcast), [credentials(2).endpoint]);
        assert_eq!(chat.room().await.unwrap().members, ["Bo"]);
    }

    #[tokio::test]
    async fn test_a_muted_member_gets_no_chat_lines_for_an_hour_but_still_hears_of_joins() {
        let clock = Arc::new(ManualClock::new());
        let (store, chat) = chat_at(Arc::clone(&clock)).await;
        chat.subscribe(join_request("Ann", 1), HOME).await.unwrap();
        chat.subscribe(join_request("Bo", 2), HOME).await.unwrap();
        let before = clock.now_millis();
        let until = chat.mute(credentials(1)).await.unwrap();
        assert!(until >= before + MUTE_FOR.as_millis() as u64);

        let line = PostLineRequest {
            member: credentials(2),
            msg: "anyone?".into(),
        };
        let (line, broadcast) = chat.post_line(line).await.unwrap();
        assert_eq!(endpoints(&broadcast), [credentials(2).endpoint]);
        let (_, join) = chat.subscribe(join_request("Cy", 3), HOME).await.unwrap();
        assert_eq!(join.unwrap().recipients.len(), 3);
        // What waits in the store to be sent skips Ann too.
        let queue = store.store.contents().await.unwrap().fan_outs;
        let queued = queue
            .iter()
            .find(|fan_out| fan_out.message == PushMessage::ChatMsg(line.clone()))
            .expect("the line's fan-out is queued");
        assert_eq!(endpoints(queued), [credentials(2).endpoint]);

        // The mute ends when the hour does.
        let say = |msg: &str| PostLineRequest {
            member: credentials(2),
            msg: msg.into(),
        };
        clock.set(until - 1);
        let (_, later) = chat.post_line(say("still there?")).await.unwrap();
        assert_eq!(later.recipients.len(), 2);
        clock.set(until);
        let (_, after) = chat.post_line(say("and now?")).await.unwrap();
        assert_eq!(after.recipients.len(), 3);
    }

    #[tokio::test]
    async fn test_only_the_secret_holder_can_mute() {
        let (_store, chat) = chat().await;
        chat.subscribe(join_request("Ann", 1), HOME).await.unwrap();
        let forged = MemberCredentials {
            endpoint: credentials(1).endpoint,
            auth: auth(9),
        };
        assert!(matches!(
            chat.mute(forged).await,
            Err(ChatError::WrongSecret)
        ));
        assert!(matches!(
            chat.mute(credentials(5)).await,
            Err(ChatError::NotMember(NotMember::NotMember))
        ));
        let line = PostLineRequest {
            member: credentials(1),
            msg: "still hearing".into(),
        };
        assert_eq!(endpoints(&chat.post_line(line).await.unwrap().1).len(), 1);
    }

    #[tokio::test]
    async fn test_a_member_posting_too_fast_is_told_to_wait_and_nothing_is_stored() {
        let (_store, chat) = chat().await;
        chat.subscribe(join_request("Ann", 1), HOME).await.unwrap();
        for n in 0..3 {
            let line = PostLineRequest {
                member: credentials(1),
                msg: format!("line {n}"),
            };
            chat.post_line(line).await.unwrap();
        }
        let one_more = PostLineRequest {
            member: credentials(1),
            msg: "one more".into(),
        };
        let refused = chat.post_line(one_more).await;
        assert!(
            matches!(refused, Err(ChatError::TooMany { wait, .. }) if wait <= Duration::from_secs(60))
        );
        assert_eq!(chat.room().await.unwrap().history.len(), 3);
    }

    #[tokio::test]
    async fn test_messages_must_fit_the_push_budget() {
        let (_store, chat) = chat().await;
        chat.subscribe(join_request("Ann", 1), HOME).await.unwrap();
        let empty = PostLineRequest {
            member: credentials(1),
            msg: "  ".into(),
        };
        assert!(matches!(
            chat.post_line(empty).await,
            Err(ChatError::EmptyMessage)
        ));
        let huge = PostLineRequest {
            member: credentials(1),
            msg: "x".repeat(PUSH_PAYLOAD_LIMIT),
        };
        assert!(matches!(
            chat.post_line(huge).await,
            Err(ChatError::MessageTooLong(_))
        ));
        let nul = PostLineRequest {
            member: credentials(1),
            msg: "a\0b".into(),
        };
        assert!(matches!(
            chat.post_line(nul).await,
            Err(ChatError::NulInMessage)
        ));
        assert!(matches!(
            chat.notice(None, "a\0b").await,
            Err(ChatError::NulInMessage)
        ));
        assert!(chat.room().await.unwrap().history.is_empty());
    }

    #[tokio::test]
    async fn test_one_address_can_hold_only_its_share_of_members() {
        let (_store, chat) = chat().await;
        for (n, name) in [(1, "Ann"), (2, "Bo"), (3, "Cy")] {
            chat.subscribe(join_request(name, n), HOME).await.unwrap();
        }
        let elsewhere = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 1));
        assert!(matches!(
            chat.subscribe(join_request("Di", 4), HOME).await,
            Err(ChatError::TooManyFromAddress(3))
        ));
        assert!(matches!(
            chat.init(join_request("Di", 4), HOME).await,
            Err(ChatError::NotMember(NotMember::NotMember))
        ));
        // A member already in is never refused, and a leave frees a place.
        chat.subscribe(join_request("Ann", 1), HOME).await.unwrap();
        chat.init(join_request("Ann", 1), HOME).await.unwrap();
        chat.subscribe(join_request("Di", 4), elsewhere)
            .await
            .unwrap();
        chat.unsubscribe(credentials(1)).await.unwrap();
        chat.subscribe(join_request("Eve", 5), HOME).await.unwrap();
    }

    #[tokio::test]
    async fn test_the_operator_removes_and_bans_by_name_whatever_its_case() {
        let (_store, chat) = chat().await;
        chat.subscribe(join_request("Ann", 1), HOME).await.unwrap();
        chat.subscribe(join_request("Bo", 2), HOME).await.unwrap();
        let queued = chat.remove_named("ANN", true).await.unwrap();
        let [to_ann, to_the_others] = queued.as_slice() else {
            panic!("a push to Ann's browser and one to the others, not {queued:?}");
        };
        assert_eq!(to_ann.message, PushMessage::Removed { banned: true });
        assert_eq!(endpoints(to_ann), [credentials(1).endpoint]);
        assert_eq!(to_the_others.message, left(&["Ann"]));
        assert_eq!(endpoints(to_the_others), [credentials(2).endpoint]);
        assert!(matches!(
            chat.subscribe(join_request("ann", 3), HOME).await,
            Err(ChatError::Banned(_))
        ));
        assert!(matches!(
            chat.init(join_request("Ann", 1), HOME).await,
            Err(ChatError::NotMember(NotMember::Banned))
        ));
        assert!(matches!(
            chat.remove_named("Cy", false).await,
            Err(ChatError::NoSuchMember(_))
        ));
        assert!(matches!(
            chat.unban("Bo").await,
            Err(ChatError::NotBanned(_))
        ));
        chat.unban("ann").await.unwrap();
        chat.subscribe(join_request("Ann", 1), HOME).await.unwrap();
        // Removed without a ban, a name may come back.
        chat.remove_named("Bo", false).await.unwrap();
        chat.subscribe(join_request("Bo", 2), HOME).await.unwrap();
    }

    #[tokio::test]
    async fn test_a_notice_goes_to_one_member_or_to_everyone() {
        let (_store, chat) = chat().await;
        chat.subscribe(join_request("Ann", 1), HOME).await.unwrap();
        chat.subscribe(join_request("Bo", 2), HOME).await.unwrap();
        assert_eq!(
            endpoints(&chat.notice(None, " maintenance at 5 ").await.unwrap()).len(),
            2
        );
        let to_bo = chat.notice(Some("bo"), "hi Bo").await.unwrap();
        assert_eq!(endpoints(&to_bo), [credentials(2).endpoint]);
        assert_eq!(
            to_bo.message,
            PushMessage::Notice {
                text: "hi Bo".into()
            }
        );
        assert!(matches!(
            chat.notice(None, "  ").await,
            Err(ChatError::EmptyMessage)
        ));
        assert!(matches!(
            chat.notice(Some("Cy"), "hi").await,
            Err(ChatError::NoSuchMember(_))
        ));
        let long = "x".repeat(PUSH_PAYLOAD_LIMIT);
        assert!(matches!(
            chat.notice(None, &long).await,
            Err(ChatError::MessageTooLong(_))
        ));
        assert!(chat.room().await.unwrap().history.is_empty());
    }

    #[tokio::test]
    async fn test_newcomers_need_the_passphrase_members_do_not() {
        let rules = ChatRules {
            join_passphrase: Some("open sesame".into()),
            ..ChatRules::default()
        };
        let (_store, chat) = chat_with(rules).await;
        assert!(chat.join_rules().passphrase);
        assert!(matches!(
            chat.public_room().await,
            Err(ChatError::MembersOnly)
        ));
        let with = |name: &str, n: u8, passphrase: Option<&str>| SubscribeRequest {
            passphrase: passphrase.map(str::to_owned),
            ..join_request(name, n)
        };
        for wrong in [None, Some(""), Some("open sesamE")] {
            assert!(matches!(
                chat.subscribe(with("Ann", 1, wrong), HOME).await,
                Err(ChatError::WrongPassphrase)
            ));
        }
        chat.subscribe(with("Ann", 1, Some(" open sesame ")), HOME)
            .await
            .unwrap();
        // A member coming back (a reload) is not asked again.
        chat.init(with("Ann", 1, None), HOME).await.unwrap();
        chat.subscribe(with("Ann", 1, None), HOME).await.unwrap();
        assert!(matches!(
            chat.init(with("Bo", 2, None), HOME).await,
            Err(ChatError::NotMember(NotMember::NotMember))
        ));
    }

    #[tokio::test]
    async fn test_a_device_code_adds_a_browser_to_the_member_who_made_it() {
        let (_store, chat) = chat().await;
        chat.subscribe(join_request("Ann", 1), HOME).await.unwrap();
        chat.subscribe(join_request("Bo", 2), HOME).await.unwrap();
        let code = chat.device_code(credentials(1)).await.unwrap().code;
        assert_eq!(code.len(), 14, "{code}");
        let typed = SubscribeRequest {
            device_code: Some(code.to_lowercase().replace('-', " ")),
            ..join_request("ignored", 3)
        };
        let (room, broadcast) = chat.subscribe(typed.clone(), HOME).await.unwrap();
        assert!(broadcast.is_none(), "nobody new arrived");
        assert_eq!(room.you.as_deref(), Some("Ann"));
        assert_eq!(room.members, ["Ann", "Bo"]);
        // Once only (tried from another address: this one has its three devices).
        let elsewhere = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 1));
        let again = SubscribeRequest {
            device_code: typed.device_code.clone(),
            ..join_request("ignored", 5)
        };
        assert!(matches!(
            chat.subscribe(again, elsewhere).await,
            Err(ChatError::UnknownDeviceCode)
        ));

        // Both of Ann's browsers get what is said, and notices to her.
        let request = PostLineRequest {
            member: credentials(3),
            msg: "from my phone".into(),
        };
        let (line, to_all) = chat.post_line(request).await.unwrap();
        assert_eq!(line.name, "Ann");
        assert_eq!(to_all.recipients.len(), 3);
        assert_eq!(
            chat.notice(Some("ann"), "hi")
                .await
                .unwrap()
                .recipients
                .len(),
            2
        );

        // Leaving from one browser leaves only that one.
        assert!(chat.unsubscribe(credentials(1)).await.unwrap().is_empty());
        assert_eq!(chat.room().await.unwrap().members, ["Ann", "Bo"]);
        let last = chat.unsubscribe(credentials(3)).await.unwrap();
        assert_eq!(last[0].message, left(&["Ann"]));
        assert_eq!(chat.room().await.unwrap().members, ["Bo"]);
        assert!(matches!(
            chat.device_code(credentials(1)).await,
            Err(ChatError::NotMember(NotMember::NotMember))
        ));
    }

    #[tokio::test]
    async fn test_muting_from_one_browser_mutes_the_member_on_all_of_them() {
        let (_store, chat) = chat().await;
        chat.subscribe(join_request("Ann", 1), HOME).await.unwrap();
        chat.subscribe(join_request("Bo", 2), HOME).await.unwrap();
        let code = chat.device_code(credentials(1)).await.unwrap().code;
        let phone = SubscribeRequest {
            device_code: Some(code),
            ..join_request("", 3)
        };
        chat.subscribe(phone, HOME).await.unwrap();
        chat.mute(credentials(3)).await.unwrap();
        let line = PostLineRequest {
            member: credentials(2),
            msg: "anyone?".into(),
        };
        let (_, broadcast) = chat.post_line(line).await.unwrap();
        assert_eq!(endpoints(&broadcast), [credentials(2).endpoint]);
    }

    /// Ann (1), Bo (2) and Cy (3) are members; Cy also on a second browser (4).
    async fn with_three() -> (TestStore, Chat) {
        let (store, chat) = chat_with(ChatRules {
            members_per_address: 10,
            ..ChatRules::default()
        })
        .await;
        for (name, n) in [("Ann", 1), ("Bo", 2), ("Cy", 3)] {
            chat.subscribe(join_request(name, n), HOME).await.unwrap();
        }
        let code = chat.device_code(credentials(3)).await.unwrap().code;
        let second = SubscribeRequest {
            device_code: Some(code),
            ..join_request("", 4)
        };
        chat.subscribe(second, HOME).await.unwrap();
        (store, chat)
    }

    #[tokio::test]
    async fn test_a_removed_member_is_told_and_cannot_come_back_by_init_or_device_code() {
        let (store, chat) = with_three().await;
        let code = chat.device_code(credentials(3)).await.unwrap().code;
        let queued = chat.remove_named("cy", false).await.unwrap();
        assert_eq!(queued[0].message, PushMessage::Removed { banned: false });
        let mut own = endpoints(&queued[0]);
        own.sort();
        assert_eq!(own, [credentials(3).endpoint, credentials(4).endpoint]);
        assert_eq!(queued[1].message, left(&["Cy"]));
        assert_eq!(
            queued.len(),
            2,
            "one push to Cy's browsers, one to the others"
        );

        for n in [3, 4] {
            assert!(matches!(
                chat.init(join_request("Cy", n), HOME).await,
                Err(ChatError::NotMember(NotMember::Removed))
            ));
        }
        let with_code = SubscribeRequest {
            device_code: Some(code),
            ..join_request("", 5)
        };
        assert!(matches!(
            chat.subscribe(with_code, HOME).await,
            Err(ChatError::UnknownDeviceCode)
        ));
        assert_eq!(chat.room().await.unwrap().members, ["Ann", "Bo"]);
        // Removed without a ban, Cy may join again, and everyone hears of it.
        let (_, joined) = chat.subscribe(join_request("Cy", 6), HOME).await.unwrap();
        assert_eq!(joined.unwrap().recipients.len(), 3);
        let fan_outs = store.store.contents().await.unwrap().fan_outs;
        assert!(fan_outs.iter().all(
            |fan_out| fan_out.message != joined_message("Cy") || fan_out.recipients.len() == 3
        ));
    }

    fn joined_message(name: &str) -> PushMessage {
        PushMessage::Subscribe { name: name.into() }
    }

    #[tokio::test]
    async fn test_a_ban_holds_on_every_way_in_and_for_look_alike_names() {
        let (_store, chat) = with_three().await;
        let code = chat.device_code(credentials(1)).await.unwrap().code;
        chat.remove_named("Ann", true).await.unwrap();
        for look_alike in ["Ann", "ANN", "\u{410}nn", "\u{FF21}nn"] {
            assert!(
                matches!(
                    chat.subscribe(join_request(look_alike, 7), HOME).await,
                    Err(ChatError::Banned(_))
                ),
                "{look_alike:?}"
            );
        }
        let with_code = SubscribeRequest {
            device_code: Some(code),
            ..join_request("", 8)
        };
        assert!(chat.subscribe(with_code, HOME).await.is_err());
        assert!(matches!(
            chat.init(join_request("Ann", 1), HOME).await,
            Err(ChatError::NotMember(NotMember::Banned))
        ));
        let renewal = ResubscribeRequest {
            member: credentials(1),
            subscription: join_request("", 9).subscription,
        };
        assert!(matches!(
            chat.resubscribe(renewal, HOME).await,
            Err(ChatError::NotMember(NotMember::Banned))
        ));
        assert_eq!(chat.room().await.unwrap().members, ["Bo", "Cy"]);
    }

    #[tokio::test]
    async fn test_gone_subscriptions_end_memberships_in_one_push_per_batch_of_names() {
        let (_store, chat) = with_three().await;
        // Bo's browser and one of Cy's two went.
        let gone: Vec<Subscription> = [2, 4]
            .into_iter()
            .map(|n| stored(&join_request("", n)))
            .collect();
        let queued = chat.subscriptions_gone(&gone).await.unwrap();
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].message, left(&["Bo"]));
        assert_eq!(chat.room().await.unwrap().members, ["Ann", "Cy"]);
        // A purge: everyone's browsers at once; nobody is left to tell.
        let everyone: Vec<Subscription> = [1, 3]
            .into_iter()
            .map(|n| stored(&join_request("", n)))
            .collect();
        assert!(chat.subscriptions_gone(&everyone).await.unwrap().is_empty());
        assert!(chat.room().await.unwrap().members.is_empty());
    }

    /// The subscription in `request` as the store keeps it.
    fn stored(request: &SubscribeRequest) -> Subscription {
        subscription::validate(&request.subscription, &EndpointPolicy::default()).unwrap()
    }

    #[tokio::test]
    async fn test_a_look_alike_name_is_refused_naming_the_member_it_looks_like() {
        let (_store, chat) = chat().await;
        chat.subscribe(join_request("bob", 1), HOME).await.unwrap();
        chat.subscribe(join_request("Al", 2), HOME).await.unwrap();
        for (look_alike, holder) in [("b\u{43e}b", "bob"), ("BOB", "bob"), ("AI", "Al")] {
            let refused = chat.subscribe(join_request(look_alike, 3), HOME).await;
            let Err(error @ ChatError::NameTaken { .. }) = refused else {
                panic!("{look_alike:?} was let in: {refused:?}");
            };
            assert!(
                error.to_string().contains(&format!("{holder:?}")),
                "{error}"
            );
        }
        chat.subscribe(join_request("\u{2764}\u{FE0F} Ann", 3), HOME)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn test_passphrase_tries_past_the_allowance_are_refused_unread() {
        let rules = ChatRules {
            join_passphrase: Some("open sesame".into()),
            ..ChatRules::default()
        };
        let (_store, chat) = chat_with(rules).await;
        let guess = |n: u8, passphrase: &str| SubscribeRequest {
            passphrase: Some(passphrase.into()),
            ..join_request("Mallory", n)
        };
        let allowance = Limits::PASSPHRASE_TRIES.burst;
        for n in 0..allowance {
            assert!(matches!(
                chat.subscribe(guess(n as u8, "guess"), HOME).await,
                Err(ChatError::WrongPassphrase)
            ));
        }
        // Past the allowance even the right passphrase is not looked at.
        assert!(matches!(
            chat.subscribe(guess(99, "open sesame"), HOME).await,
            Err(ChatError::TooMany { .. })
        ));
        let elsewhere = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 1));
        chat.subscribe(guess(98, "open sesame"), elsewhere)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn test_the_chat_line_allowance_is_the_members_on_all_its_browsers() {
        let (_store, chat) = chat().await;
        chat.subscribe(join_request("Ann", 1), HOME).await.unwrap();
        let code = chat.device_code(credentials(1)).await.unwrap().code;
        let second = SubscribeRequest {
            device_code: Some(code),
            ..join_request("", 2)
        };
        chat.subscribe(second, HOME).await.unwrap();
        let line = |n: u8| PostLineRequest {
            member: credentials(n),
            msg: "hi".into(),
        };
        for n in [1, 2, 1] {
            chat.post_line(line(n)).await.unwrap();
        }
        assert!(matches!(
            chat.post_line(line(2)).await,
            Err(ChatError::TooMany {
                what: "messages",
                ..
            })
        ));
    }
}
