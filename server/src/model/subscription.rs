//! Checks a browser's push subscription before the server stores it or ever POSTs to it.
//!
//! The endpoint is a URL this server will send requests to, so it is held to the rules of
//! DESIGN.md: https only, to a public host; plain http to a loopback address only when the
//! operator enabled it for local testing; and, when the operator listed the push services
//! the chat accepts (`--push-services`), on one of them, loopback included. A public
//! address is one the IANA IPv4 and IPv6 Special-Purpose Address Registries do not mark
//! as not globally reachable (nor multicast or deprecated); an IPv6 form that reaches an
//! IPv4 address (mapped, NAT64, 6to4) is judged by that address. `is_public_ip` is that
//! rule, which the delivery client's resolver (`public_dns`) applies to every address a
//! push service's name resolves to. The keys must be what RFC 8291 needs: a point on
//! P-256 and a 16-byte auth secret. Keys are kept in canonical base64url (no padding).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use url::{Host, Url};

use app::wire;

/// Longer endpoints than this are not push services' (theirs are a few hundred bytes).
pub const MAX_ENDPOINT_LEN: usize = 1024;
const AUTH_SECRET_LEN: usize = 16;

/// A push subscription that passed every check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub endpoint: String,
    /// The browser's P-256 public key, 65 bytes, base64url without padding.
    pub p256dh: String,
    /// The browser's auth secret, 16 bytes, base64url without padding.
    pub auth: String,
}

impl Subscription {
    /// Whether `auth` (in any base64url form) is this subscription's secret; compared in
    /// constant time, since it is the member's password.
    pub fn auth_matches(&self, auth: &str) -> bool {
        match (decode(&self.auth), decode(auth)) {
            (Some(ours), Some(theirs)) => ours.ct_eq(&theirs).into(),
            _ => false,
        }
    }
}

/// Why a subscription was refused; each message names the field at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubscriptionError {
    #[error("subscription.endpoint is not a URL")]
    EndpointNotUrl,
    #[error("subscription.endpoint is longer than {MAX_ENDPOINT_LEN} bytes")]
    EndpointTooLong,
    #[error("subscription.endpoint must be an https URL")]
    EndpointNotHttps,
    #[error("subscription.endpoint must use the https port, 443, not {0}")]
    EndpointOddPort(u16),
    #[error("subscription.endpoint must not carry a user name or password")]
    EndpointHasCredentials,
    #[error("subscription.endpoint must be a public host, not {0}")]
    EndpointNotPublic(String),
    #[error(
        "subscription.endpoint must be on one of this chat's push services ({}), not {host}",
        .services.join(", ")
    )]
    EndpointNotOnPushService { host: String, services: Vec<String> },
    #[error("subscription.keys.p256dh must be a base64url P-256 public key (65 bytes)")]
    BadP256dh,
    #[error("subscription.keys.auth must be a base64url 16-byte secret")]
    BadAuth,
}

/// Which push endpoints the server accepts, besides the rules every endpoint meets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointPolicy {
    /// Also admit http and https endpoints on loopback hosts (local testing only).
    pub allow_loopback: bool,
    /// When not empty, the only push services admitted: an endpoint's host must be one of
    /// these names or end in "." and one of them (`fcm.googleapis.com`). Loopback
    /// endpoints too, when `allow_loopback` admits them.
    pub push_services: Vec<String>,
}

impl EndpointPolicy {
    /// Loopback endpoints too: the local push service of the tests and the bench.
    pub fn local_testing() -> Self {
        EndpointPolicy {
            allow_loopback: true,
            ..EndpointPolicy::default()
        }
    }

    /// Whether `host` is on one of the push services, or any host when none are listed.
    /// Names are compared in any case and with or without a trailing dot; a service's
    /// subdomains are on it, other names that merely end in its text are not.
    fn admits_host(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.push_services.is_empty()
            || self.push_services.iter().any(|service| {
                let service = service.trim_end_matches('.').to_ascii_lowercase();
                host == service
                    || host
                        .strip_suffix(&service)
                        .is_some_and(|subdomain| subdomain.ends_with('.'))
            })
    }
}

/// Checks `raw` against the rules and `policy`.
pub fn validate(
    raw: &wire::PushSubscription,
    policy: &EndpointPolicy,
) -> Result<Subscription, SubscriptionError> {
    let endpoint = validate_endpoint(&raw.endpoint, policy)?;
    let p256dh = decode(&raw.keys.p256dh)
        .filter(|key| key.len() == 65 && p256::PublicKey::from_sec1_bytes(key).is_ok())
        .ok_or(SubscriptionError::BadP256dh)?;
    let auth = decode(&raw.keys.auth)
        .filter(|secret| secret.len() == AUTH_SECRET_LEN)
        .ok_or(SubscriptionError::BadAuth)?;
    Ok(Subscription {
        endpoint: endpoint.into(),
        p256dh: URL_SAFE_NO_PAD.encode(p256dh),
        auth: URL_SAFE_NO_PAD.encode(auth),
    })
}

fn validate_endpoint(raw: &str, policy: &EndpointPolicy) -> Result<Url, SubscriptionError> {
    if raw.len() > MAX_ENDPOINT_LEN {
        return Err(SubscriptionError::EndpointTooLong);
    }
    let url = Url::parse(raw).map_err(|_| SubscriptionError::EndpointNotUrl)?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(SubscriptionError::EndpointHasCredentials);
    }
    let host = url.host().ok_or(SubscriptionError::EndpointNotUrl)?;
    let host_name = host.to_string();
    let loopback = is_loopback(&host);
    match url.scheme() {
        "https" | "http" if loopback && policy.allow_loopback => {}
        "https" if loopback || !is_public(&host) => {
            return Err(SubscriptionError::EndpointNotPublic(host_name));
        }
        // Push services listen on 443; another port on a public host would let members
        // make the server probe that host's other services.
        "https" => {
            if let Some(port) = url.port() {
                return Err(SubscriptionError::EndpointOddPort(port));
            }
        }
        _ => return Err(SubscriptionError::EndpointNotHttps),
    }
    if !policy.admits_host(&host_name) {
        return Err(SubscriptionError::EndpointNotOnPushService {
            host: host_name,
            services: policy.push_services.clone(),
        });
    }
    Ok(url)
}

fn is_loopback(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
        Host::Ipv4(ip) => ip.is_loopback(),
        Host::Ipv6(ip) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Whether a host is one a push service may live on. Names are judged by their form only
/// (no DNS look-up here); addresses must be globally routable.
fn is_public(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name.contains('.') && !name.ends_with(".local") && !name.ends_with(".internal")
        }
        Host::Ipv4(ip) => is_public_ipv4(ip),
        Host::Ipv6(ip) => is_public_ipv6(ip),
    }
}

/// Whether the server may send to `ip`: globally reachable, not its own networks.
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_ipv4(&v4),
        IpAddr::V6(v6) => is_public_ipv6(&v6),
    }
}

/// An address block: its first address and the length of the prefix all its addresses share.
type Block<A> = (A, u8);

/// IPv4 blocks no push service is on: every entry of the IANA IPv4 Special-Purpose Address
/// Registry that is not globally reachable, and multicast (which has its own registry).
const NOT_GLOBAL_V4: &[Block<Ipv4Addr>] = &[
    // "This network" (RFC 791); holds "this host on this network", 0.0.0.0/32.
    (Ipv4Addr::new(0, 0, 0, 0), 8),
    // Private-Use (RFC 1918).
    (Ipv4Addr::new(10, 0, 0, 0), 8),
    // Shared Address Space, carrier-grade NAT (RFC 6598).
    (Ipv4Addr::new(100, 64, 0, 0), 10),
    // Loopback (RFC 1122).
    (Ipv4Addr::new(127, 0, 0, 0), 8),
    // Link Local (RFC 3927), where clouds keep their metadata services.
    (Ipv4Addr::new(169, 254, 0, 0), 16),
    // Private-Use (RFC 1918).
    (Ipv4Addr::new(172, 16, 0, 0), 12),
    // IETF Protocol Assignments (RFC 6890), refused whole: it holds the DS-Lite, dummy and
    // NAT64-discovery entries, and its two anycast addresses (.9, .10) are no push service.
    (Ipv4Addr::new(192, 0, 0, 0), 24),
    // Documentation, TEST-NET-1 (RFC 5737).
    (Ipv4Addr::new(192, 0, 2, 0), 24),
    // Deprecated 6to4 Relay Anycast (RFC 7526), with the 6a44 relay 192.88.99.2.
    (Ipv4Addr::new(192, 88, 99, 0), 24),
    // Private-Use (RFC 1918).
    (Ipv4Addr::new(192, 168, 0, 0), 16),
    // Benchmarking (RFC 2544).
    (Ipv4Addr::new(198, 18, 0, 0), 15),
    // Documentation, TEST-NET-2 (RFC 5737).
    (Ipv4Addr::new(198, 51, 100, 0), 24),
    // Documentation, TEST-NET-3 (RFC 5737).
    (Ipv4Addr::new(203, 0, 113, 0), 24),
    // Multicast (RFC 5771).
    (Ipv4Addr::new(224, 0, 0, 0), 4),
    // Reserved (RFC 1112).
    (Ipv4Addr::new(240, 0, 0, 0), 4),
    // Limited Broadcast (RFC 919), inside the block above; listed to match the registry.
    (Ipv4Addr::BROADCAST, 32),
];

/// IPv6 blocks no push service is on: every entry of the IANA IPv6 Special-Purpose Address
/// Registry that is not globally reachable, and the deprecated or multicast blocks beside
/// it. The forms that stand for an IPv4 address are judged by it instead (`embedded_ipv4`).
const NOT_GLOBAL_V6: &[Block<Ipv6Addr>] = &[
    // Unspecified Address (RFC 4291).
    (Ipv6Addr::UNSPECIFIED, 128),
    // Loopback Address (RFC 4291).
    (Ipv6Addr::LOCALHOST, 128),
    // IPv4-compatible ::a.b.c.d, deprecated (RFC 4291, 2.5.5.1) and routed nowhere; holds
    // the two above.
    (Ipv6Addr::UNSPECIFIED, 96),
    // IPv4-IPv6 Translation, local use (RFC 8215): a NAT64 of the operator's own.
    (Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48),
    // Discard-Only Address Block (RFC 6666).
    (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64),
    // Dummy IPv6 Prefix (RFC 9780).
    (Ipv6Addr::new(0x100, 0, 0, 1, 0, 0, 0, 0), 64),
    // IETF Protocol Assignments (RFC 2928), refused whole: it holds TEREDO (2001::/32),
    // Benchmarking and the deprecated ORCHID, and its few globally reachable entries
    // (anycast, AMT, AS112, ORCHIDv2, drone IDs) are no push service.
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23),
    // Documentation (RFC 3849).
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32),
    // Documentation (RFC 9637).
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20),
    // Segment Routing (SRv6) SIDs (RFC 9602).
    (Ipv6Addr::new(0x5f00, 0, 0, 0, 0, 0, 0, 0), 16),
    // Unique-Local (RFC 4193).
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7),
    // Link-Local Unicast (RFC 4291).
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),
    // Site-local, deprecated (RFC 3879); no longer in the registry, still not global.
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10),
    // Multicast (RFC 4291).
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8),
];

/// The well-known NAT64 prefix (RFC 6052): 64:ff9b::a.b.c.d reaches a.b.c.d.
const NAT64: Block<Ipv6Addr> = (Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96);
/// 6to4 (RFC 3056): 2002:AABB:CCDD::/48 is the site behind the IPv4 address AA.BB.CC.DD.
const SIX_TO_FOUR: Block<Ipv6Addr> = (Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16);

fn is_public_ipv4(ip: &Ipv4Addr) -> bool {
    !NOT_GLOBAL_V4.iter().any(|&block| in_v4_block(ip, block))
}

fn is_public_ipv6(ip: &Ipv6Addr) -> bool {
    if let Some(v4) = embedded_ipv4(ip) {
        return is_public_ipv4(&v4);
    }
    !NOT_GLOBAL_V6.iter().any(|&block| in_v6_block(ip, block))
}

/// The IPv4 address `ip` reaches, in the forms that carry one: IPv4-mapped
/// (::ffff:a.b.c.d), NAT64 (64:ff9b::a.b.c.d) and 6to4 (2002:AABB:CCDD::/48).
fn embedded_ipv4(ip: &Ipv6Addr) -> Option<Ipv4Addr> {
    let o = ip.octets();
    if let Some(v4) = ip.to_ipv4_mapped() {
        Some(v4)
    } else if in_v6_block(ip, NAT64) {
        Some(Ipv4Addr::new(o[12], o[13], o[14], o[15]))
    } else if in_v6_block(ip, SIX_TO_FOUR) {
        Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]))
    } else {
        None
    }
}

fn in_v4_block(ip: &Ipv4Addr, (first, len): Block<Ipv4Addr>) -> bool {
    let mask = u32::MAX
        .checked_shl(32u32.saturating_sub(len.into()))
        .unwrap_or(0);
    ip.to_bits() & mask == first.to_bits()
}

fn in_v6_block(ip: &Ipv6Addr, (first, len): Block<Ipv6Addr>) -> bool {
    let mask = u128::MAX
        .checked_shl(128u32.saturating_sub(len.into()))
        .unwrap_or(0);
    ip.to_bits() & mask == first.to_bits()
}

/// base64url with or without padding; browsers send either.
fn decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()
}

#[cfg(test)]
mod tests;
