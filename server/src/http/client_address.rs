//! The address a request comes from: the TCP peer, or, when the peer is a reverse proxy
//! the operator trusts (`--trusted-proxy`), the client that proxy names in
//! `X-Forwarded-For`. Per-address limits and logs use it. A header from anyone else is
//! ignored, since any client can write one.

use std::net::{IpAddr, SocketAddr};

use axum::{
    extract::{ConnectInfo, FromRef, FromRequestParts},
    http::{request::Parts, HeaderMap, StatusCode},
};

use crate::http::error::ApiError;

/// The reverse proxies whose `X-Forwarded-For` is believed.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(pub Vec<IpAddr>);

impl TrustedProxies {
    fn trusts(&self, address: IpAddr) -> bool {
        self.0.contains(&address.to_canonical())
    }

    /// The client behind `peer`: walks `X-Forwarded-For` from the right (each proxy
    /// appends the address it saw) past the trusted proxies; the first other address is
    /// the client. A malformed entry stops the walk at the last address we can vouch for.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .collect::<Vec<_>>();
        for hop in forwarded.iter().rev() {
            if !self.trusts(client) {
                break;
            }
            match hop.trim().parse::<IpAddr>() {
                Ok(address) => client = address.to_canonical(),
                Err(_) => break,
            }
        }
        client
    }
}

/// Extracts the request's client address (see the module docs).
pub struct ClientAddress(pub IpAddr);

impl<S> FromRequestParts<S> for ClientAddress
where
    S: Send + Sync,
    TrustedProxies: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let ConnectInfo(peer) = ConnectInfo::<SocketAddr>::from_request_parts(parts, state)
            .await
            .map_err(|_| {
                tracing::error!("the router was served without connection info");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "The server is misconfigured.",
                )
            })?;
        let trusted = TrustedProxies::from_ref(state);
        Ok(ClientAddress(trusted.client(peer.ip(), &parts.headers)))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn test_without_trusted_proxies_the_header_is_ignored() {
        let proxies = TrustedProxies::default();
        let headers = forwarded(&["203.0.113.9"]);
        assert_eq!(
            proxies.client(ip("198.51.100.1"), &headers),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn test_a_trusted_proxy_names_the_client() {
        let proxies = TrustedProxies(vec![ip("10.0.0.2")]);
        let headers = forwarded(&["203.0.113.9"]);
        assert_eq!(proxies.client(ip("10.0.0.2"), &headers), ip("203.0.113.9"));
        // Someone who is not the proxy cannot pick an address.
        assert_eq!(
            proxies.client(ip("198.51.100.1"), &headers),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn test_addresses_a_client_wrote_before_the_proxy_are_not_believed() {
        // The client sent "X-Forwarded-For: 1.2.3.4"; the proxy appended what it saw.
        let proxies = TrustedProxies(vec![ip("10.0.0.2"), ip("10.0.0.3")]);
        let headers = forwarded(&["1.2.3.4, 203.0.113.9", "10.0.0.3"]);
        assert_eq!(proxies.client(ip("10.0.0.2"), &headers), ip("203.0.113.9"));
    }

    #[test]
    fn test_a_malformed_entry_stops_at_the_last_trusted_hop() {
        let proxies = TrustedProxies(vec![ip("10.0.0.2")]);
        let headers = forwarded(&["203.0.113.9, not-an-address"]);
        assert_eq!(proxies.client(ip("10.0.0.2"), &headers), ip("10.0.0.2"));
    }

    #[test]
    fn test_ipv4_mapped_peers_match_their_ipv4_proxy() {
        let proxies = TrustedProxies(vec![ip("10.0.0.2")]);
        let headers = forwarded(&["2001:db8::7"]);
        assert_eq!(
            proxies.client(ip("::ffff:10.0.0.2"), &headers),
            ip("2001:db8::7")
        );
    }
}
