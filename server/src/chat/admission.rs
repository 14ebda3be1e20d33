//! The way in: a newcomer joins under a name (with the passphrase, if the chat has one,
//! past bans and the address's share of members), a known browser's page load restores
//! its state, and a browser that replaced its subscription moves its membership to the
//! new one. Only a join makes a member; a device code adds a browser (`device_codes`).

use std::net::IpAddr;

use app::{
    names::clean_name,
    wire::{NotMember, ResubscribeRequest, RoomState, SubscribeRequest},
};
use subtle::ConstantTimeEq;

use super::{
    limits::{address_key, Limits},
    random_id, Chat, ChatError, PushKind,
};
use crate::{
    model::{fan_out::FanOut, member::Device, subscription},
    store::StoreError,
};

impl Chat {
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

    /// A page reopens with a subscription from an earlier visit (`POST /api/init`): a
    /// member gets the room; a browser the chat does not know is told why (it never
    /// joined, it was removed or banned, or the server lost it), and is not added: only
    /// Subscribe makes a member. Nobody is told either way: a page load must not cost
    /// every member a notification.
    pub async fn reopen(
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

    /// A device of a member who is not in the chat yet.
    fn new_member(&self, request: &SubscribeRequest, from: IpAddr) -> Result<Device, ChatError> {
        let name = clean_name(&request.name)?;
        let subscription = subscription::validate(&request.subscription, &self.rules.endpoints)?;
        let now = self.now();
        Ok(Device {
            name,
            member_id: random_id(),
            subscription,
            joined: now,
            joined_from: Some(from),
            muted_until: None,
            last_seen: now,
            stale_warned: None,
        })
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
    pub(super) async fn check_room_at(&self, from: IpAddr) -> Result<(), ChatError> {
        let there = self.store.devices_from(from).await?;
        if there >= self.rules.members_per_address {
            return Err(ChatError::TooManyFromAddress(there));
        }
        Ok(())
    }
}
