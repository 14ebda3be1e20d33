//! Verification of a push request's VAPID credentials (RFC 8292) as a strict push service
//! does it: `Authorization: vapid t=<JWT>, k=<public key>`, an ES256 signature by that
//! key, `aud` equal to the push resource's origin (port included when not the default),
//! `exp` in the future and at most 24 hours away, and a mailto: or https: `sub`.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use p256::ecdsa::{signature::Verifier, Signature, VerifyingKey};
use serde::Deserialize;

/// The longest a JWT may still be valid for (RFC 8292 §2).
const MAX_LIFETIME_SECS: u64 = 24 * 3600;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VapidError {
    #[error("no `Authorization: vapid t=..., k=...` header")]
    Missing,
    #[error("the JWT is malformed")]
    Malformed,
    #[error("the JWT's alg is not ES256")]
    Algorithm,
    #[error("k is not a P-256 public key")]
    Key,
    #[error("the JWT's signature does not verify with k")]
    Signature,
    #[error("aud is {found:?}, expected {expected:?}")]
    Audience { found: String, expected: String },
    #[error("exp is in the past")]
    Expired,
    #[error("exp is more than 24 hours away")]
    TooLong,
    #[error("sub {0:?} is not a mailto: or https: contact")]
    Subject(String),
}

/// What a valid header proved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VapidIdentity {
    /// The sender's public key, uncompressed point.
    pub key: Vec<u8>,
    pub subject: String,
    /// The JWT's `exp`, seconds since the Unix epoch.
    pub expires: u64,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

#[derive(Deserialize)]
struct Claims {
    aud: String,
    exp: u64,
    sub: String,
}

/// Checks an `Authorization` header value for a push to `audience` at time `now`
/// (seconds since the Unix epoch).
pub fn verify(authorization: &str, audience: &str, now: u64) -> Result<VapidIdentity, VapidError> {
    let params = authorization
        .strip_prefix("vapid ")
        .or_else(|| authorization.strip_prefix("Vapid "))
        .ok_or(VapidError::Missing)?;
    let param = |name: &str| {
        params
            .split(',')
            .filter_map(|part| part.trim().split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.trim())
    };
    let (token, key) = param("t").zip(param("k")).ok_or(VapidError::Missing)?;

    let key = decode(key).ok_or(VapidError::Key)?;
    let verifying = VerifyingKey::from_sec1_bytes(&key).map_err(|_| VapidError::Key)?;
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(VapidError::Malformed);
    };
    let header: Header = decode_json(header)?;
    if header.alg != "ES256" {
        return Err(VapidError::Algorithm);
    }
    let signature = decode(signature)
        .and_then(|bytes| Signature::from_slice(&bytes).ok())
        .ok_or(VapidError::Malformed)?;
    let signed = &token[..token.rfind('.').ok_or(VapidError::Malformed)?];
    verifying
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| VapidError::Signature)?;

    let claims: Claims = decode_json(claims)?;
    if claims.aud != audience {
        return Err(VapidError::Audience {
            found: claims.aud,
            expected: audience.to_owned(),
        });
    }
    if claims.exp <= now {
        return Err(VapidError::Expired);
    }
    if claims.exp > now + MAX_LIFETIME_SECS {
        return Err(VapidError::TooLong);
    }
    if !(claims.sub.starts_with("mailto:") || claims.sub.starts_with("https:")) {
        return Err(VapidError::Subject(claims.sub));
    }
    Ok(VapidIdentity {
        key,
        subject: claims.sub,
        expires: claims.exp,
    })
}

fn decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()
}

fn decode_json<T: for<'de> Deserialize<'de>>(part: &str) -> Result<T, VapidError> {
    let bytes = decode(part).ok_or(VapidError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| VapidError::Malformed)
}

#[cfg(test)]
pub(crate) mod tests {
    use p256::{ecdsa::SigningKey, SecretKey};

    use super::*;

    const NOW: u64 = 1_800_000_000;
    const AUD: &str = "http://127.0.0.1:8790";

    /// A VAPID header for `claims`, signed by `signer`, naming `key` as the sender.
    pub(crate) fn header_for(
        claims: serde_json::Value,
        signer: &SigningKey,
        key: &SigningKey,
    ) -> String {
        let head = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
        let body = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signed = format!("{head}.{body}");
        let signature: Signature = p256::ecdsa::signature::Signer::sign(signer, signed.as_bytes());
        let k = URL_SAFE_NO_PAD.encode(key.verifying_key().to_encoded_point(false).as_bytes());
        format!(
            "vapid t={signed}.{}, k={k}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        )
    }

    pub(crate) fn key(seed: u8) -> SigningKey {
        SigningKey::from(SecretKey::from_slice(&[seed; 32]).unwrap())
    }

    pub(crate) fn claims(aud: &str, exp: u64, sub: &str) -> serde_json::Value {
        serde_json::json!({ "aud": aud, "exp": exp, "sub": sub })
    }

    #[test]
    fn test_a_valid_header_verifies() {
        let header = header_for(
            claims(AUD, NOW + 3600, "mailto:a@example.org"),
            &key(1),
            &key(1),
        );
        let identity = verify(&header, AUD, NOW).unwrap();
        assert_eq!(identity.subject, "mailto:a@example.org");
        assert_eq!(identity.key.len(), 65);
    }

    #[test]
    fn test_aud_without_the_port_is_refused() {
        let header = header_for(
            claims("http://127.0.0.1", NOW + 60, "mailto:a@b.org"),
            &key(1),
            &key(1),
        );
        assert!(matches!(
            verify(&header, AUD, NOW),
            Err(VapidError::Audience { .. })
        ));
    }

    #[test]
    fn test_a_signature_by_another_key_is_refused() {
        let header = header_for(claims(AUD, NOW + 60, "mailto:a@b.org"), &key(2), &key(1));
        assert_eq!(verify(&header, AUD, NOW), Err(VapidError::Signature));
    }

    #[test]
    fn test_exp_must_be_future_and_within_a_day() {
        let expired = header_for(claims(AUD, NOW, "mailto:a@b.org"), &key(1), &key(1));
        assert_eq!(verify(&expired, AUD, NOW), Err(VapidError::Expired));
        let long = header_for(
            claims(AUD, NOW + 90_000, "mailto:a@b.org"),
            &key(1),
            &key(1),
        );
        assert_eq!(verify(&long, AUD, NOW), Err(VapidError::TooLong));
    }

    #[test]
    fn test_sub_must_be_a_contact() {
        let header = header_for(claims(AUD, NOW + 60, "someone"), &key(1), &key(1));
        assert!(matches!(
            verify(&header, AUD, NOW),
            Err(VapidError::Subject(_))
        ));
    }

    #[test]
    fn test_missing_or_garbled_headers_are_refused() {
        assert_eq!(verify("Bearer abc", AUD, NOW), Err(VapidError::Missing));
        assert_eq!(verify("vapid t=abc", AUD, NOW), Err(VapidError::Missing));
        let k = URL_SAFE_NO_PAD.encode(key(1).verifying_key().to_encoded_point(false).as_bytes());
        assert_eq!(
            verify(&format!("vapid t=a.b, k={k}"), AUD, NOW),
            Err(VapidError::Malformed)
        );
        assert_eq!(
            verify("vapid t=a.b.c, k=AAAA", AUD, NOW),
            Err(VapidError::Key)
        );
    }
}
