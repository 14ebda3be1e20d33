//! The server's VAPID identity (RFC 8292): a P-256 key pair made on first start and kept
//! by the store (see `store::ServerIdentity`: on sled a private file in the data dir, on
//! PostgreSQL a row every instance shares), and the signed JWTs that prove each push
//! comes from this server.
//!
//! Promises: the private key is never served or logged; a key is never replaced silently
//! (every browser subscription is bound to it); a JWT's `aud` is the endpoint's origin,
//! port included when not the default (strict push services reject it without); one JWT
//! per push-service origin, as a ready `Authorization: vapid t=…, k=…` header value, is
//! reused until an hour before it expires, instead of one signature per message.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::{SystemTime, UNIX_EPOCH},
};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use p256::{
    ecdsa::{signature::Signer, Signature, SigningKey},
    pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding},
    SecretKey,
};
use reqwest::header::HeaderValue;

use crate::store::{MemberStore, ServerIdentity, StoreError};

/// How long a JWT is valid; RFC 8292 allows at most 24 hours.
const TOKEN_LIFETIME_SECS: u64 = 12 * 3600;
/// A cached JWT is replaced when less than this is left of it.
const TOKEN_RENEW_MARGIN_SECS: u64 = 3600;

#[derive(Debug, thiserror::Error)]
pub enum VapidError {
    #[error("the VAPID private key in {place} is not a PKCS#8 PEM P-256 private key")]
    Unreadable { place: String },
    #[error(
        "the VAPID private key is missing from {place}, but the store has members whose \
         subscriptions are bound to that key; restore it from a backup (a new key would \
         silently cut every member off)"
    )]
    MissingWithMembers { place: String },
    #[error("cannot read or keep the VAPID key")]
    Store(#[from] StoreError),
}

struct Token {
    /// `vapid t=JWT, k=PUBLIC_KEY` (RFC 8292 §3).
    header: HeaderValue,
    expires: u64,
}

/// The key pair and the JWT cache. Shared behind an `Arc`.
pub struct VapidKeys {
    signing: SigningKey,
    /// The public key as an uncompressed point, base64url, as browsers take it.
    public_key: String,
    subject: String,
    tokens: Mutex<HashMap<String, Token>>,
    signatures: AtomicU64,
}

impl VapidKeys {
    /// The key pair `store` keeps, or a new one kept there if it has none and the chat has
    /// no members yet.
    pub async fn load_or_create<S>(store: &S, subject: String) -> Result<Self, VapidError>
    where
        S: ServerIdentity + MemberStore + ?Sized,
    {
        if let Some(keys) = Self::load(store, subject.clone()).await? {
            return Ok(keys);
        }
        if store.has_members().await? {
            return Err(VapidError::MissingWithMembers {
                place: store.vapid_key_place(),
            });
        }
        // Another instance may have kept its own key meanwhile: use the kept one.
        let kept = store.offer_vapid_private_key(&new_private_key()?).await?;
        tracing::info!(place = %store.vapid_key_place(), "created a new VAPID key pair");
        Self::from_pem(&kept, subject, store)
    }

    /// The key pair `store` keeps, if it keeps one.
    pub async fn load<S>(store: &S, subject: String) -> Result<Option<Self>, VapidError>
    where
        S: ServerIdentity + ?Sized,
    {
        match store.vapid_private_key().await? {
            Some(pem) => Self::from_pem(&pem, subject, store).map(Some),
            None => Ok(None),
        }
    }

    /// Makes a new key pair and keeps it in `store` in place of any other.
    pub async fn generate<S>(store: &S, subject: String) -> Result<Self, VapidError>
    where
        S: ServerIdentity + ?Sized,
    {
        let pem = new_private_key()?;
        store.replace_vapid_private_key(&pem).await?;
        Self::from_pem(&pem, subject, store)
    }

    /// Keeps `pem` (a backup's key, checked to be a P-256 private key) in `store`.
    pub async fn install<S>(store: &S, pem: &str) -> Result<(), VapidError>
    where
        S: ServerIdentity + ?Sized,
    {
        Self::from_pem(pem, String::new(), store)?;
        Ok(store.replace_vapid_private_key(pem).await?)
    }

    fn from_pem<S>(pem: &str, subject: String, store: &S) -> Result<Self, VapidError>
    where
        S: ServerIdentity + ?Sized,
    {
        let secret = SecretKey::from_pkcs8_pem(pem).map_err(|_| VapidError::Unreadable {
            place: store.vapid_key_place(),
        })?;
        Ok(Self::from_secret(secret, subject))
    }

    /// The contact push services see in every JWT.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    fn from_secret(secret: SecretKey, subject: String) -> Self {
        let public_key = URL_SAFE_NO_PAD.encode(secret.public_key().to_sec1_bytes());
        VapidKeys {
            signing: SigningKey::from(&secret),
            public_key,
            subject,
            tokens: Mutex::new(HashMap::new()),
            signatures: AtomicU64::new(0),
        }
    }

    /// The public key, base64url: what pages pass to `pushManager.subscribe()`.
    pub fn public_key_base64(&self) -> String {
        self.public_key.clone()
    }

    /// The `Authorization` header value for a push to an endpoint of `origin` (its
    /// `push_origin`: scheme, host and port, the default port left out), cheap to clone:
    /// it shares the cached bytes.
    pub fn authorization_for(&self, origin: &str) -> HeaderValue {
        let now = unix_now();
        let mut tokens = self
            .tokens
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Looked up by `&str` first: the usual hit allocates nothing.
        match tokens.get_mut(origin) {
            Some(token) if token.expires >= now + TOKEN_RENEW_MARGIN_SECS => {}
            Some(token) => *token = self.sign(origin, now),
            None => {
                tokens.insert(origin.to_owned(), self.sign(origin, now));
            }
        }
        tokens[origin].header.clone()
    }

    /// How many JWTs this key pair has signed since it was loaded.
    pub fn signatures_made(&self) -> u64 {
        self.signatures.load(Ordering::Relaxed)
    }

    fn sign(&self, audience: &str, now: u64) -> Token {
        self.signatures.fetch_add(1, Ordering::Relaxed);
        let expires = now + TOKEN_LIFETIME_SECS;
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
        let claims = serde_json::json!({ "aud": audience, "exp": expires, "sub": self.subject });
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signed = format!("{header}.{claims}");
        let signature: Signature = self.signing.sign(signed.as_bytes());
        let jwt = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()));
        let header = HeaderValue::try_from(format!("vapid t={jwt}, k={}", self.public_key))
            .expect("base64url, dots, commas and spaces make a valid header value");
        Token { header, expires }
    }
}

/// A new P-256 private key, as PKCS#8 PEM.
fn new_private_key() -> Result<String, VapidError> {
    let secret = SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    let pem = secret
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|_| VapidError::Unreadable {
            place: "a new key".into(),
        })?;
    Ok(pem.to_string())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

#[cfg(test)]
mod tests {
    use p256::ecdsa::{signature::Verifier, VerifyingKey};

    use super::*;

    use crate::{
        model::fan_out::push_origin,
        store::testing::{ann, TestStore},
    };

    async fn keys(store: &TestStore) -> VapidKeys {
        VapidKeys::load_or_create(&*store.store, "mailto:ops@example.org".into())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn test_the_key_is_kept_and_reused() {
        let store = TestStore::new().await;
        let first = keys(&store).await.public_key_base64();
        let store = store.reopen().await;
        assert_eq!(keys(&store).await.public_key_base64(), first);
    }

    #[tokio::test]
    async fn test_a_lost_key_is_not_replaced_while_members_exist() {
        let store = TestStore::new().await;
        store.store.put_device(&ann()).await.unwrap();
        let refused = VapidKeys::load_or_create(&*store.store, "mailto:a@example.org".into()).await;
        assert!(matches!(
            refused,
            Err(VapidError::MissingWithMembers { .. })
        ));
        assert_eq!(store.store.vapid_private_key().await.unwrap(), None);
    }

    #[tokio::test]
    async fn test_a_corrupt_key_is_an_error_not_a_new_key() {
        let store = TestStore::new().await;
        store
            .store
            .replace_vapid_private_key("garbage")
            .await
            .unwrap();
        let refused = VapidKeys::load_or_create(&*store.store, "mailto:a@example.org".into()).await;
        assert!(matches!(refused, Err(VapidError::Unreadable { .. })));
    }

    #[tokio::test]
    async fn test_jwt_names_the_endpoint_origin_with_its_port_and_verifies() {
        let store = TestStore::new().await;
        let keys = keys(&store).await;
        let origin = push_origin("http://127.0.0.1:8790/push/abc");
        let header = keys.authorization_for(&origin);
        let (jwt, key) = t_and_k(&header);
        let parts: Vec<&str> = jwt.split('.').collect();
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["aud"], "http://127.0.0.1:8790");
        assert_eq!(claims["sub"], "mailto:ops@example.org");
        let exp = claims["exp"].as_u64().unwrap();
        assert!(exp > unix_now() && exp <= unix_now() + 24 * 3600);

        assert_eq!(key, keys.public_key_base64());
        let key = VerifyingKey::from_sec1_bytes(&URL_SAFE_NO_PAD.decode(key).unwrap()).unwrap();
        let sig = Signature::from_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap()).unwrap();
        key.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
            .unwrap();
    }

    #[tokio::test]
    async fn test_one_jwt_per_origin_is_reused() {
        let store = TestStore::new().await;
        let keys = keys(&store).await;
        let a1 = keys.authorization_for(&push_origin("https://push.example/a"));
        let a2 = keys.authorization_for(&push_origin("https://push.example/b"));
        let other = keys.authorization_for(&push_origin("https://push.example:8443/a"));
        assert_eq!(a1, a2);
        assert_ne!(a1, other);
        assert_eq!(keys.signatures_made(), 2);
    }

    /// The JWT and the key of an `Authorization: vapid t=…, k=…` value.
    fn t_and_k(header: &HeaderValue) -> (&str, &str) {
        let text = header.to_str().unwrap();
        let (t, k) = text
            .strip_prefix("vapid t=")
            .and_then(|rest| rest.split_once(", k="))
            .unwrap();
        (t, k)
    }
}
