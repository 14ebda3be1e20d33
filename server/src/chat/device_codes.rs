//! Device codes: a member makes one to add another browser (a phone, say) to it, and a
//! new browser brings it instead of a name; what a code looks like, and how a code typed
//! by a person is read.

use std::{net::IpAddr, time::Duration};

use rand::Rng;

use app::wire::{self, MemberCredentials, RoomState, SubscribeRequest};

use super::{
    limits::{address_key, Limits},
    Chat, ChatError,
};
use crate::model::{
    member::{Device, DeviceCode},
    subscription,
};

/// How long a device code can be used.
const DEVICE_CODE_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// Crockford's base32: no I, L, O or U, so a code read aloud or retyped survives.
pub(super) const CODE_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Twelve random symbols (60 bits) in groups of four.
fn new_device_code() -> String {
    let mut rng = rand::thread_rng();
    let symbols: Vec<char> = (0..12)
        .map(|_| CODE_ALPHABET[rng.gen_range(0..CODE_ALPHABET.len())] as char)
        .collect();
    symbols
        .chunks(4)
        .map(|group| group.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

/// A code as typed, in the form it was stored: case, dashes and spaces do not matter, and
/// the letters people mistake for digits are read as those digits.
fn normal_code(typed: &str) -> String {
    typed
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            other => other,
        })
        .collect()
}

impl Chat {
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
    pub(super) async fn add_device(
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
        let now = self.now();
        let device = Device {
            name: grant.name,
            member_id: grant.member_id,
            subscription,
            joined: now,
            joined_from: Some(from),
            muted_until: None,
            last_seen: now,
            stale_warned: None,
        };
        self.store.put_device(&device).await?;
        tracing::info!(name = %device.name, %from, "member added a device");
        self.room_for(&device).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_codes_survive_the_ways_people_retype_them() {
        assert_eq!(normal_code("k7qx-m2pd r9tb"), "K7QXM2PDR9TB");
        assert_eq!(normal_code("OIL0"), "0110");
        let code = new_device_code();
        assert_eq!(normal_code(&code), code.replace('-', ""));
        assert!(code
            .chars()
            .all(|c| c == '-' || CODE_ALPHABET.contains(&(c as u8))));
    }
}
