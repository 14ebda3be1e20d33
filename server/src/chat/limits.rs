//! How often each way in may be used: the quotas of the allowances the store counts, and
//! the key a client address counts under.

use std::{net::IpAddr, time::Duration};

use crate::store::Quota;

/// The allowances on every way in, per client address (an IPv6 client by its /64, the
/// block one household or office gets), and on members' actions, per member. Sized so an
/// office behind one address, everyone reloading at once, is not refused; a guesser is
/// slowed to one try a minute after a short burst. Two more follow the rules: chat lines
/// (`chat_lines_per_minute`, per member) and joins (twice as many at once as an address
/// may hold members, `members_per_address`, so that it can fill its share and replace
/// each once; then one a minute).
pub struct Limits;

impl Limits {
    /// Tries at the join passphrase, right or wrong: counted before the passphrase is
    /// compared, so a guesser learns nothing from the answers past the allowance.
    pub const PASSPHRASE_TRIES: Quota = minutely("passphrase tries from your network address", 10);
    /// Tries at a device code, right or wrong.
    pub const DEVICE_CODE_TRIES: Quota =
        minutely("device code tries from your network address", 10);
    /// Device codes one member makes.
    pub const DEVICE_CODES: Quota = minutely("new device codes", 5);
    /// Page loads of members and visitors alike.
    pub const INITS: Quota = Quota {
        name: "page loads from your network address",
        burst: 120,
        every: Duration::from_millis(500),
    };
    /// Browsers replacing their push subscription.
    pub const RESUBSCRIBES: Quota = Quota {
        name: "subscription renewals from your network address",
        burst: 60,
        every: Duration::from_secs(1),
    };
    /// Mute presses of one member.
    pub const MUTES: Quota = minutely("mutes", 10);
}

/// `burst` at once, then one a minute.
pub(super) const fn minutely(name: &'static str, burst: u32) -> Quota {
    Quota {
        name,
        burst,
        every: Duration::from_secs(60),
    }
}

/// The key of a client address's allowances: an IPv4 address, or an IPv6 address's /64
/// (one household's or office's block: its hosts pick the rest freely).
pub(super) fn address_key(address: IpAddr) -> String {
    match address.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let [a, b, c, d, ..] = v6.segments();
            format!("{a:x}:{b:x}:{c:x}:{d:x}::/64")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_an_ipv6_client_is_counted_by_its_64_block() {
        let one: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let same_block: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let other_block: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(one), address_key(same_block));
        assert_ne!(address_key(one), address_key(other_block));
        let mapped: IpAddr = "::ffff:203.0.113.7".parse().unwrap();
        assert_eq!(address_key(mapped), "203.0.113.7");
    }
}
