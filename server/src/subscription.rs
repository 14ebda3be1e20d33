//! Checks a browser's push subscription before the server stores it or ever POSTs to it.
//!
//! The endpoint is a URL this server will send requests to, so it is held to the rules of
//! DESIGN.md: https only, to a public host; plain http to a loopback address only when the
//! operator enabled it for local testing. The keys must be what RFC 8291 needs: a point
//! on P-256 and a 16-byte auth secret. Keys are kept in canonical base64url (no padding).

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
}

impl EndpointPolicy {
    /// Loopback endpoints too: the local push service of the tests and the bench.
    pub fn local_testing() -> Self {
        EndpointPolicy {
            allow_loopback: true,
            ..EndpointPolicy::default()
        }
    }
}

/// Checks `raw` against the rules and `policy`.
pub fn validate(
    raw: &wire::PushSubscription,
    policy: &EndpointPolicy,
) -> Result<Subscription, SubscriptionError> {
    let endpoint = validate_endpoint(&raw.endpoint, policy.allow_loopback)?;
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

fn validate_endpoint(raw: &str, allow_loopback: bool) -> Result<Url, SubscriptionError> {
    if raw.len() > MAX_ENDPOINT_LEN {
        return Err(SubscriptionError::EndpointTooLong);
    }
    let url = Url::parse(raw).map_err(|_| SubscriptionError::EndpointNotUrl)?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(SubscriptionError::EndpointHasCredentials);
    }
    let host = url.host().ok_or(SubscriptionError::EndpointNotUrl)?;
    let loopback = is_loopback(&host);
    match url.scheme() {
        "https" | "http" if loopback && allow_loopback => Ok(url),
        "https" if loopback || !is_public(&host) => {
            Err(SubscriptionError::EndpointNotPublic(host.to_string()))
        }
        // Push services listen on 443; another port on a public host would let members
        // make the server probe that host's other services.
        "https" => match url.port() {
            Some(port) => Err(SubscriptionError::EndpointOddPort(port)),
            None => Ok(url),
        },
        _ => Err(SubscriptionError::EndpointNotHttps),
    }
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

/// Whether the server may send to `ip`: globally routable, not its own networks.
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_ipv4(&v4),
        IpAddr::V6(v6) => is_public_ipv6(&v6),
    }
}

fn is_public_ipv4(ip: &Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    let shared = a == 100 && (64..128).contains(&b); // RFC 6598 carrier-grade NAT
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || shared
        || a == 0
        || a >= 240)
}

fn is_public_ipv6(ip: &Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_ipv4(&v4);
    }
    let first = ip.segments()[0];
    let unique_local = first & 0xfe00 == 0xfc00;
    let link_local = first & 0xffc0 == 0xfe80;
    !(ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || unique_local || link_local)
}

/// base64url with or without padding; browsers send either.
fn decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    // A real P-256 point: the user agent's public key from RFC 8291, Appendix A.
    const P256DH: &str =
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";

    fn subscription(endpoint: &str, p256dh: &str, auth: &str) -> wire::PushSubscription {
        wire::PushSubscription {
            endpoint: endpoint.into(),
            keys: wire::SubscriptionKeys {
                p256dh: p256dh.into(),
                auth: auth.into(),
            },
        }
    }

    fn check(endpoint: &str, allow_loopback: bool) -> Result<Subscription, SubscriptionError> {
        let policy = EndpointPolicy { allow_loopback };
        validate(&subscription(endpoint, P256DH, AUTH), &policy)
    }

    #[test]
    fn https_endpoints_on_public_hosts_are_accepted() {
        let ok = check(
            "https://updates.push.services.mozilla.com/wpush/v2/abc",
            false,
        )
        .unwrap();
        assert_eq!(ok.p256dh, P256DH);
        assert_eq!(ok.auth, AUTH);
        assert!(check("https://8.8.8.8/push/1", false).is_ok());
    }

    #[test]
    fn plain_http_is_refused() {
        assert_eq!(
            check("http://push.example.com/1", false),
            Err(SubscriptionError::EndpointNotHttps)
        );
        assert_eq!(
            check("ftp://push.example.com/1", true),
            Err(SubscriptionError::EndpointNotHttps)
        );
    }

    #[test]
    fn loopback_is_refused_unless_allowed() {
        for endpoint in [
            "http://127.0.0.1:8790/push/1",
            "https://localhost/push/1",
            "http://[::1]/p",
        ] {
            assert!(check(endpoint, false).is_err(), "{endpoint}");
            assert!(check(endpoint, true).is_ok(), "{endpoint}");
        }
    }

    #[test]
    fn private_and_link_local_hosts_are_refused_even_with_loopback_allowed() {
        for endpoint in [
            "https://10.0.0.1/push",
            "https://192.168.1.20/push",
            "https://169.254.169.254/latest/meta-data",
            "https://[fd00::1]/push",
            "https://[::ffff:10.0.0.1]/push",
            "https://printer.local/push",
            "https://intranet/push",
            "http://10.0.0.1/push",
            "https://100.64.0.1/push",
            "https://[::]/push",
            "https://metadata.google.internal/computeMetadata/v1/",
            "https://[fe80::1]/push",
            "https://[::ffff:a9fe:a9fe]/push",
            "https://0xa9.0xfe.0xa9.0xfe/push",
            "https://2852039166/push",
            "https://0.0.0.0/push",
        ] {
            assert!(check(endpoint, true).is_err(), "{endpoint}");
        }
    }

    #[test]
    fn loopback_in_other_spellings_is_still_loopback() {
        for endpoint in [
            "https://2130706433/push",
            "https://0x7f.1/push",
            "https://127.1/push",
            "https://[::ffff:7f00:1]/push",
            "https://LOCALHOST./push",
            "https://a.localhost/push",
        ] {
            assert!(
                matches!(
                    check(endpoint, false),
                    Err(SubscriptionError::EndpointNotPublic(_))
                ),
                "{endpoint}"
            );
        }
    }

    #[test]
    fn ports_other_than_443_are_refused_on_public_hosts() {
        assert_eq!(
            check("https://push.example.com:22/1", false),
            Err(SubscriptionError::EndpointOddPort(22))
        );
        assert!(check("https://push.example.com:443/1", false).is_ok());
        assert!(check("http://127.0.0.1:8790/push/1", true).is_ok());
    }

    #[test]
    fn odd_endpoints_are_refused() {
        assert_eq!(
            check("not a url", false),
            Err(SubscriptionError::EndpointNotUrl)
        );
        assert_eq!(
            check("https://user:pw@push.example.com/1", false),
            Err(SubscriptionError::EndpointHasCredentials)
        );
        let long = format!("https://push.example.com/{}", "a".repeat(MAX_ENDPOINT_LEN));
        assert_eq!(check(&long, false), Err(SubscriptionError::EndpointTooLong));
    }

    #[test]
    fn keys_must_be_a_curve_point_and_a_16_byte_secret() {
        let endpoint = "https://push.example.com/1";
        let off_curve = format!("BA{}", &P256DH[2..]);
        assert_eq!(
            validate(
                &subscription(endpoint, &off_curve, AUTH),
                &EndpointPolicy::default()
            ),
            Err(SubscriptionError::BadP256dh)
        );
        assert_eq!(
            validate(
                &subscription(endpoint, "BAAA", AUTH),
                &EndpointPolicy::default()
            ),
            Err(SubscriptionError::BadP256dh)
        );
        assert_eq!(
            validate(
                &subscription(endpoint, "%%%", AUTH),
                &EndpointPolicy::default()
            ),
            Err(SubscriptionError::BadP256dh)
        );
        assert_eq!(
            validate(
                &subscription(endpoint, P256DH, "AAAA"),
                &EndpointPolicy::default()
            ),
            Err(SubscriptionError::BadAuth)
        );
    }

    #[test]
    fn padded_keys_are_stored_unpadded() {
        let padded = validate(
            &subscription("https://push.example.com/1", P256DH, &format!("{AUTH}==")),
            &EndpointPolicy::default(),
        );
        assert_eq!(padded.unwrap().auth, AUTH);
    }

    #[test]
    fn auth_matches_only_the_same_secret() {
        let sub = check("https://push.example.com/1", false).unwrap();
        assert!(sub.auth_matches(AUTH));
        assert!(sub.auth_matches(&format!("{AUTH}==")));
        assert!(!sub.auth_matches("AAAAAAAAAAAAAAAAAAAAAA"));
        assert!(!sub.auth_matches("not base64!"));
    }
}
