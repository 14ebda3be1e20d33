//! The delivery client's DNS: a push service's host name may resolve only to public
//! addresses (and loopback, when the operator allowed loopback endpoints for testing).
//! Checked at every new connection, so a name that points, or is later re-pointed, at the
//! server's own network is refused instead of reached. Endpoints given as IP addresses
//! never come here; `subscription` refuses the non-public ones when they are stored.

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::model::subscription::is_public_ip;

pub struct PublicOnly {
    pub allow_loopback: bool,
}

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_loopback = self.allow_loopback;
        Box::pin(async move {
            let host = name.as_str();
            let usable: Vec<_> = tokio::net::lookup_host((host, 0))
                .await?
                .filter(|addr| {
                    is_public_ip(addr.ip()) || (allow_loopback && addr.ip().is_loopback())
                })
                .collect();
            if usable.is_empty() {
                return Err(
                    format!("{host} resolves to no public address; not sending to it").into(),
                );
            }
            Ok(Box::new(usable.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn localhost() -> Name {
        "localhost".parse().expect("a valid name")
    }

    #[tokio::test]
    async fn test_a_name_for_loopback_is_refused_unless_loopback_is_allowed() {
        let refused = PublicOnly {
            allow_loopback: false,
        }
        .resolve(localhost())
        .await;
        assert!(refused.is_err());
        let allowed: Vec<_> = PublicOnly {
            allow_loopback: true,
        }
        .resolve(localhost())
        .await
        .unwrap()
        .collect();
        assert!(!allowed.is_empty() && allowed.iter().all(|addr| addr.ip().is_loopback()));
    }
}
