//! A member as the chat keeps it: each of its browsers is a [`Device`] (a member is the
//! devices sharing a member id, and so a name), a [`DeviceCode`] adds one more, and a
//! [`Removal`] is what is remembered of a browser the operator removed.

use std::{net::IpAddr, time::Duration};

use serde::{Deserialize, Serialize};

use crate::model::subscription::Subscription;

/// One browser of a member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub name: String,
    /// Random, made when the member first joined; shared by all its devices.
    pub member_id: String,
    pub subscription: Subscription,
    /// When this device joined, in milliseconds since the Unix epoch.
    pub joined: u64,
    /// The address it joined from, for the members-per-address limit.
    #[serde(default)]
    pub joined_from: Option<IpAddr>,
    /// Until when the member gets no chat lines (ms since the Unix epoch), if it muted
    /// them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub muted_until: Option<u64>,
    /// When the browser last showed a sign of life (ms since the Unix epoch): a request of
    /// its own, its page's or its worker's (see `chat::pruning`). 0 in a record from
    /// before store format 6, which the format's step dates to the migration.
    #[serde(default)]
    pub last_seen: u64,
    /// When it was told it will be removed for its silence (ms since the Unix epoch);
    /// a sign of life clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_warned: Option<u64>,
}

/// What a device code stands for until it is used or expires.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCode {
    pub member_id: String,
    pub name: String,
    /// Milliseconds since the Unix epoch.
    pub expires: u64,
}

impl DeviceCode {
    /// The grant, unless it expired by `now`.
    pub fn unexpired(self, now: u64) -> Option<DeviceCode> {
        (self.expires > now).then_some(self)
    }
}

/// What removing a device did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removed {
    pub device: Device,
    /// It was the member's last device: the member is gone and its name is free.
    pub member_left: bool,
}

/// The operator removed the member whose browser this was: what `init` answers a browser
/// that comes back with it, for [`REMOVALS_KEPT`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removal {
    pub name: String,
    /// The name was banned too.
    pub banned: bool,
    /// Milliseconds since the Unix epoch.
    pub at: u64,
}

/// How long a removal is remembered: past it, a browser coming back is only "not a member".
pub const REMOVALS_KEPT: Duration = Duration::from_secs(90 * 24 * 3600);

impl Removal {
    /// Whether it is still remembered at `now`.
    pub fn kept_at(&self, now: u64) -> bool {
        now.saturating_sub(self.at) < REMOVALS_KEPT.as_millis() as u64
    }
}
