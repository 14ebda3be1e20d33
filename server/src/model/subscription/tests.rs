//! What a subscription must be: endpoints, keys and the special-purpose addresses.

use localpush::crypto::rfc8291_example::{AUTH_SECRET as AUTH, RECEIVER_PUBLIC_KEY as P256DH};

use super::*;

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
    let policy = EndpointPolicy {
        allow_loopback,
        ..EndpointPolicy::default()
    };
    validate(&subscription(endpoint, P256DH, AUTH), &policy)
}

fn check_on(endpoint: &str, policy: &EndpointPolicy) -> Result<Subscription, SubscriptionError> {
    validate(&subscription(endpoint, P256DH, AUTH), policy)
}

fn only(services: &[&str]) -> EndpointPolicy {
    EndpointPolicy {
        push_services: services.iter().map(|&service| service.to_owned()).collect(),
        ..EndpointPolicy::default()
    }
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

/// `ip` is refused both as an endpoint's host and by the delivery client's resolver.
fn assert_refused(ip: &str) {
    let parsed: IpAddr = ip.parse().expect("a test address");
    assert!(!is_public_ip(parsed), "{ip} is public to the resolver");
    let host = match parsed {
        IpAddr::V4(_) => ip.to_owned(),
        IpAddr::V6(_) => format!("[{ip}]"),
    };
    assert!(
        matches!(
            check(&format!("https://{host}/p"), false),
            Err(SubscriptionError::EndpointNotPublic(_))
        ),
        "{ip} is accepted as an endpoint"
    );
}

/// `ip` is accepted both as an endpoint's host and by the delivery client's resolver.
fn assert_accepted(ip: &str) {
    let parsed: IpAddr = ip.parse().expect("a test address");
    assert!(is_public_ip(parsed), "{ip} is refused by the resolver");
    let host = match parsed {
        IpAddr::V4(_) => ip.to_owned(),
        IpAddr::V6(_) => format!("[{ip}]"),
    };
    let endpoint = format!("https://{host}/p");
    assert!(check(&endpoint, false).is_ok(), "{endpoint} is refused");
}

#[test]
fn test_ipv4_blocks_that_are_not_globally_reachable_are_refused() {
    for ip in [
        "0.1.2.3",
        "10.255.255.255",
        "100.64.0.1",
        "100.127.255.255",
        "127.0.0.2",
        "169.254.0.1",
        "172.16.0.1",
        "172.31.255.255",
        "192.0.0.1",
        "192.0.0.9",
        "192.0.0.170",
        "192.0.0.255",
        "192.0.2.1",
        "192.88.99.1",
        "192.88.99.2",
        "192.168.255.255",
        "198.18.0.1",
        "198.19.255.255",
        "198.51.100.1",
        "203.0.113.255",
        "224.0.0.1",
        "239.255.255.255",
        "240.0.0.1",
        "255.255.255.254",
        "255.255.255.255",
    ] {
        assert_refused(ip);
    }
}

#[test]
fn test_ipv4_addresses_just_outside_those_blocks_are_accepted() {
    for ip in [
        "1.0.0.1",
        "100.63.255.255",
        "100.128.0.0",
        "172.15.255.255",
        "172.32.0.0",
        "192.0.1.1",
        "192.0.3.0",
        "192.88.98.255",
        "192.88.100.0",
        "192.31.196.1",
        "198.17.255.255",
        "198.20.0.0",
        "198.51.101.0",
        "203.0.112.255",
        "223.255.255.255",
    ] {
        assert_accepted(ip);
    }
}

#[test]
fn test_ipv6_blocks_that_are_not_globally_reachable_are_refused() {
    for ip in [
        "::",
        "::1",
        "100::1",
        "100::ffff:ffff:ffff:ffff",
        "100:0:0:1::1",
        "2001::1",
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        "2001:1::1",
        "2001:2::1",
        "2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff",
        "2001:db8::1",
        "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
        "3fff::1",
        "3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff",
        "5f00::1",
        "5f00:ffff::1",
        "fc00::1",
        "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "fe80::1",
        "febf:ffff::1",
        "fec0::1",
        "feff:ffff::1",
        "ff02::1",
        "ff0e::1",
    ] {
        assert_refused(ip);
    }
}

#[test]
fn test_ipv6_addresses_just_outside_those_blocks_are_accepted() {
    for ip in [
        "2001:200::1",
        "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff",
        "2001:db9::1",
        "2606:4700::1111",
        "3fff:1000::1",
        "2a00:1450:4001:80b::200a",
    ] {
        assert_accepted(ip);
    }
}

#[test]
fn test_ipv6_forms_that_embed_a_private_ipv4_are_refused() {
    for ip in [
        // IPv4-mapped.
        "::ffff:10.0.0.1",
        "::ffff:198.18.0.1",
        "::ffff:192.0.0.1",
        // NAT64, well-known prefix: judged by the IPv4 address it reaches.
        "64:ff9b::10.0.0.1",
        "64:ff9b::7f00:1",
        "64:ff9b::a9fe:a9fe",
        "64:ff9b::c058:6301",
        // NAT64, local use: refused whatever it embeds.
        "64:ff9b:1::808:808",
        "64:ff9b:1:ffff::1",
        // 6to4: the IPv4 address in bits 16..48.
        "2002:a00:1::1",
        "2002:7f00:1::",
        "2002:a9fe:a9fe:1::1",
        "2002:c612:1::1",
        "2002:c000:201::1",
        // Teredo: not globally reachable, whatever it embeds.
        "2001:0:808:808::1",
        // IPv4-compatible, deprecated: refused whatever it embeds.
        "::10.0.0.1",
        "::8.8.8.8",
    ] {
        assert_refused(ip);
    }
}

#[test]
fn test_ipv6_forms_that_embed_a_public_ipv4_are_accepted() {
    for endpoint in [
        "https://[64:ff9b::808:808]/p",
        "https://[64:ff9b::8.8.4.4]/p",
        "https://[2002:808:808::1]/p",
        "https://[::ffff:8.8.8.8]/p",
    ] {
        assert!(check(endpoint, false).is_ok(), "{endpoint}");
    }
    assert_accepted("64:ff9b::808:808");
    assert_accepted("2002:808:808::1");
}

#[test]
fn test_every_block_in_the_tables_is_a_well_formed_prefix() {
    for &(first, len) in NOT_GLOBAL_V4 {
        assert!(len <= 32, "{first}/{len}");
        let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        assert_eq!(first.to_bits() & !mask, 0, "{first}/{len} has host bits");
    }
    for &(first, len) in NOT_GLOBAL_V6.iter().chain([&NAT64, &SIX_TO_FOUR]) {
        assert!(len <= 128, "{first}/{len}");
        let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
        assert_eq!(first.to_bits() & !mask, 0, "{first}/{len} has host bits");
    }
}

/// The tables against std's own (stable) predicates, over a spread of addresses: the
/// first and last of every IPv4 /16, and a few of every IPv6 /16.
#[test]
fn test_every_address_std_calls_special_is_refused() {
    for high in 0..=u16::MAX {
        for low in [0, 1, 0xff, u16::MAX] {
            let ip = Ipv4Addr::from_bits(u32::from(high) << 16 | u32::from(low));
            let special = ip.is_unspecified()
                || ip.is_loopback()
                || ip.is_private()
                || ip.is_link_local()
                || ip.is_multicast()
                || ip.is_broadcast()
                || ip.is_documentation();
            assert!(!(special && is_public_ipv4(&ip)), "{ip}");
        }
        for tail in [0, 1, u128::from(u64::MAX), u128::MAX >> 16] {
            let ip = Ipv6Addr::from_bits(u128::from(high) << 112 | tail);
            let special = ip.is_unspecified()
                || ip.is_loopback()
                || ip.is_multicast()
                || ip.is_unique_local()
                || ip.is_unicast_link_local();
            assert!(!(special && is_public_ipv6(&ip)), "{ip}");
        }
    }
    assert!(!is_public_ipv6(&Ipv6Addr::LOCALHOST));
    assert!(!is_public_ipv6(&Ipv6Addr::UNSPECIFIED));
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
fn test_without_push_services_any_public_https_host_is_accepted() {
    let policy = EndpointPolicy::default();
    assert!(check_on("https://push.example.com/1", &policy).is_ok());
    assert!(check_on("https://8.8.8.8/1", &policy).is_ok());
}

#[test]
fn test_push_services_admit_their_own_hosts_and_subdomains() {
    let policy = only(&["fcm.googleapis.com", "push.services.mozilla.com"]);
    for endpoint in [
        "https://fcm.googleapis.com/fcm/send/abc",
        "https://FCM.GoogleAPIs.com/fcm/send/abc",
        "https://fcm.googleapis.com./fcm/send/abc",
        "https://updates.push.services.mozilla.com/wpush/v2/abc",
        "https://a.b.push.services.mozilla.com/wpush/v2/abc",
    ] {
        assert!(check_on(endpoint, &policy).is_ok(), "{endpoint}");
    }
    // A service written with a capital or a trailing dot means the same name.
    let policy = only(&["Notify.Windows.com."]);
    assert!(check_on("https://wns2-par02p.notify.windows.com/w/?token=x", &policy).is_ok());
}

#[test]
fn test_push_services_match_whole_name_labels_not_substrings() {
    let policy = only(&["fcm.googleapis.com"]);
    for endpoint in [
        "https://evilfcm.googleapis.com.attacker.example/fcm/send/abc",
        "https://notfcm.googleapis.com/fcm/send/abc",
        "https://fcm.googleapis.com.attacker.example/fcm/send/abc",
        "https://googleapis.com/fcm/send/abc",
        "https://android.googleapis.com/gcm/send/abc",
        "https://8.8.8.8/fcm/send/abc",
        "https://[2a00:1450:4001:80b::200a]/fcm/send/abc",
    ] {
        assert!(
            matches!(
                check_on(endpoint, &policy),
                Err(SubscriptionError::EndpointNotOnPushService { .. })
            ),
            "{endpoint}"
        );
    }
}

#[test]
fn test_an_endpoint_off_the_push_services_is_refused_with_the_list_and_its_host() {
    let policy = only(&["fcm.googleapis.com", "push.apple.com"]);
    let error = check_on("https://push.example.com/1", &policy).unwrap_err();
    assert_eq!(
        error.to_string(),
        "subscription.endpoint must be on one of this chat's push services \
         (fcm.googleapis.com, push.apple.com), not push.example.com"
    );
}

#[test]
fn test_push_services_do_not_relax_the_other_rules() {
    let policy = only(&["example.com"]);
    assert_eq!(
        check_on("http://push.example.com/1", &policy),
        Err(SubscriptionError::EndpointNotHttps)
    );
    assert_eq!(
        check_on("https://push.example.com:8443/1", &policy),
        Err(SubscriptionError::EndpointOddPort(8443))
    );
    let policy = only(&["local"]);
    assert!(matches!(
        check_on("https://printer.local/1", &policy),
        Err(SubscriptionError::EndpointNotPublic(_))
    ));
}

#[test]
fn test_loopback_endpoints_allowed_for_testing_still_need_a_listed_push_service() {
    let mut policy = EndpointPolicy::local_testing();
    assert!(check_on("http://127.0.0.1:8790/push/1", &policy).is_ok());
    policy.push_services = vec!["fcm.googleapis.com".into()];
    for endpoint in [
        "http://127.0.0.1:8790/push/1",
        "http://localhost:8790/push/1",
    ] {
        assert!(
            matches!(
                check_on(endpoint, &policy),
                Err(SubscriptionError::EndpointNotOnPushService { .. })
            ),
            "{endpoint}"
        );
    }
    policy.push_services.push("localhost".into());
    assert!(check_on("http://localhost:8790/push/1", &policy).is_ok());
    assert!(check_on("http://push.localhost:8790/push/1", &policy).is_ok());
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
