//! The server's VAPID identity (RFC 8292): a P-256 key pair made on first start and kept
//! in the data dir (or, on PostgreSQL, in the database every instance shares), and the
//! signed JWTs that prove each push comes from this server.
//!
//! Promises: the private key file is created with mode 0600 and is never served or
//! logged; a key is never replaced silently (every browser subscription is bound to it);
//! a JWT's `aud` is the endpoint's origin, port included when not the default (`web-push`
//! leaves the port out, which strict push services reject); one JWT per push-service origin
//! is reused until an hour before it expires, instead of one signature per message.

use std::{
    collections::HashMap,
    fs,
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
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
use url::Url;
use web_push::VapidSignature;

use crate::store::{PostgresStore, Store, StoreError};

/// The private key's file name inside the data dir.
pub const KEY_FILE: &str = "vapid_private_key.pem";
/// How long a JWT is valid; RFC 8292 allows at most 24 hours.
const TOKEN_LIFETIME_SECS: u64 = 12 * 3600;
/// A cached JWT is replaced when less than this is left of it.
const TOKEN_RENEW_MARGIN_SECS: u64 = 3600;

#[derive(Debug, thiserror::Error)]
pub enum VapidError {
    #[error("cannot read or write the VAPID key file {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the VAPID key file {path} is not a PKCS#8 PEM P-256 private key")]
    Unreadable { path: PathBuf },
    #[error(
        "the VAPID key file {path} is missing, but the store has members whose subscriptions \
         are bound to that key; restore the file from a backup (a new key would silently \
         cut every member off)"
    )]
    MissingWithMembers { path: PathBuf },
    #[error("the VAPID private key kept in the database is not a PKCS#8 PEM P-256 private key")]
    UnreadableInDatabase,
    #[error(
        "the database has members but no VAPID private key; their subscriptions are bound to \
         the lost key: restore the database from a backup (a new key would silently cut every \
         member off)"
    )]
    MissingFromDatabase,
    #[error("cannot read or keep the VAPID key in the database")]
    Database(#[from] StoreError),
}

struct Token {
    jwt: String,
    expires: u64,
}

/// The key pair and the JWT cache. Shared behind an `Arc`.
pub struct VapidKeys {
    signing: SigningKey,
    /// The public key as an uncompressed point, as browsers take it.
    public_key: Vec<u8>,
    subject: String,
    tokens: Mutex<HashMap<String, Token>>,
    signatures: AtomicU64,
}

impl VapidKeys {
    /// Loads the key pair from `data_dir`, or makes and saves one if there is none and
    /// the store has no members yet.
    pub fn load_or_create(
        data_dir: &Path,
        subject: String,
        store_has_members: bool,
    ) -> Result<Self, VapidError> {
        if let Some(keys) = Self::load(data_dir, subject.clone())? {
            return Ok(keys);
        }
        let path = data_dir.join(KEY_FILE);
        if store_has_members {
            return Err(VapidError::MissingWithMembers { path });
        }
        let keys = Self::generate(data_dir, subject)?;
        tracing::info!(path = %path.display(), "created a new VAPID key pair");
        Ok(keys)
    }

    /// Loads the key pair from `data_dir`, if it has one.
    pub fn load(data_dir: &Path, subject: String) -> Result<Option<Self>, VapidError> {
        let path = data_dir.join(KEY_FILE);
        if !path.exists() {
            return Ok(None);
        }
        tighten_permissions(&path).map_err(|source| VapidError::Io {
            path: path.clone(),
            source,
        })?;
        let secret = parse_pem(&private_key_pem(data_dir)?, &path)?;
        Ok(Some(Self::from_secret(secret, subject)))
    }

    /// Makes a new key pair and saves it in `data_dir`, replacing any key there in one
    /// step (a crash leaves the old key or the new one, never neither).
    pub fn generate(data_dir: &Path, subject: String) -> Result<Self, VapidError> {
        let secret = SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
        let path = data_dir.join(KEY_FILE);
        let pem = secret
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|_| VapidError::Unreadable { path: path.clone() })?;
        install_private_key(data_dir, &pem)?;
        Ok(Self::from_secret(secret, subject))
    }

    /// The key pair kept in PostgreSQL, which every instance on that database signs with:
    /// made and kept by the first instance that finds none, while the chat has no members.
    pub async fn load_or_create_shared(
        store: &PostgresStore,
        subject: String,
    ) -> Result<Self, VapidError> {
        let pem = match store.vapid_private_key().await? {
            Some(pem) => pem,
            None if store.has_members().await? => return Err(VapidError::MissingFromDatabase),
            None => {
                let secret = SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
                let pem = secret
                    .to_pkcs8_pem(LineEnding::LF)
                    .map_err(|_| VapidError::UnreadableInDatabase)?;
                // Another instance may have kept its own key meanwhile: use the kept one.
                store.offer_vapid_private_key(&pem).await?
            }
        };
        let secret =
            SecretKey::from_pkcs8_pem(&pem).map_err(|_| VapidError::UnreadableInDatabase)?;
        Ok(Self::from_secret(secret, subject))
    }

    /// The contact push services see in every JWT.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    fn from_secret(secret: SecretKey, subject: String) -> Self {
        let public_key = secret.public_key().to_sec1_bytes().to_vec();
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
        URL_SAFE_NO_PAD.encode(&self.public_key)
    }

    /// The VAPID credentials for a push to `endpoint`.
    pub fn signature_for(&self, endpoint: &Url) -> VapidSignature {
        let audience = endpoint.origin().ascii_serialization();
        let now = unix_now();
        let mut tokens = self
            .tokens
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let token = tokens
            .entry(audience.clone())
            .or_insert_with(|| self.sign(&audience, now));
        if token.expires < now + TOKEN_RENEW_MARGIN_SECS {
            *token = self.sign(&audience, now);
        }
        VapidSignature {
            auth_t: token.jwt.clone(),
            auth_k: self.public_key.clone(),
        }
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
        Token { jwt, expires }
    }
}

/// The private key file's text (PKCS#8 PEM), for a backup.
pub fn private_key_pem(data_dir: &Path) -> Result<String, VapidError> {
    let path = data_dir.join(KEY_FILE);
    fs::read_to_string(&path).map_err(|source| VapidError::Io { path, source })
}

/// Saves `pem` (checked to be a P-256 private key) as the key file of `data_dir`, mode
/// 0600, replacing any key there in one step.
pub fn install_private_key(data_dir: &Path, pem: &str) -> Result<(), VapidError> {
    let path = data_dir.join(KEY_FILE);
    parse_pem(pem, &path)?;
    let staged = data_dir.join(format!("{KEY_FILE}.new"));
    let io = |source| VapidError::Io {
        path: path.clone(),
        source,
    };
    let _ = fs::remove_file(&staged);
    write_private(&staged, pem.as_bytes()).map_err(io)?;
    fs::rename(&staged, &path).map_err(io)
}

fn parse_pem(pem: &str, path: &Path) -> Result<SecretKey, VapidError> {
    SecretKey::from_pkcs8_pem(pem).map_err(|_| VapidError::Unreadable {
        path: path.to_owned(),
    })
}

fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// A key file others can read (copied by hand, say) is made private again, with a warning.
fn tighten_permissions(path: &Path) -> std::io::Result<()> {
    let mode = fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "VAPID key file was readable by others; setting mode 0600");
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
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

    fn keys(dir: &Path) -> VapidKeys {
        VapidKeys::load_or_create(dir, "mailto:ops@example.org".into(), false).unwrap()
    }

    #[test]
    fn test_key_file_is_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = keys(dir.path()).public_key_base64();
        let mode = fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(keys(dir.path()).public_key_base64(), first);
    }

    #[test]
    fn test_a_lost_key_is_not_replaced_while_members_exist() {
        let dir = tempfile::tempdir().unwrap();
        let refused = VapidKeys::load_or_create(dir.path(), "mailto:a@example.org".into(), true);
        assert!(matches!(
            refused,
            Err(VapidError::MissingWithMembers { .. })
        ));
        assert!(!dir.path().join(KEY_FILE).exists());
    }

    #[test]
    fn test_a_corrupt_key_file_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        write_private(&dir.path().join(KEY_FILE), b"garbage").unwrap();
        let refused = VapidKeys::load_or_create(dir.path(), "mailto:a@example.org".into(), false);
        assert!(matches!(refused, Err(VapidError::Unreadable { .. })));
    }

    #[test]
    fn test_jwt_names_the_endpoint_origin_with_its_port_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let keys = keys(dir.path());
        let endpoint = Url::parse("http://127.0.0.1:8790/push/abc").unwrap();
        let signature = keys.signature_for(&endpoint);
        let parts: Vec<&str> = signature.auth_t.split('.').collect();
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["aud"], "http://127.0.0.1:8790");
        assert_eq!(claims["sub"], "mailto:ops@example.org");
        let exp = claims["exp"].as_u64().unwrap();
        assert!(exp > unix_now() && exp <= unix_now() + 24 * 3600);

        let key = VerifyingKey::from_sec1_bytes(&signature.auth_k).unwrap();
        let sig = Signature::from_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap()).unwrap();
        key.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
            .unwrap();
    }

    #[test]
    fn test_one_jwt_per_origin_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let keys = keys(dir.path());
        let a1 = keys.signature_for(&Url::parse("https://push.example/a").unwrap());
        let a2 = keys.signature_for(&Url::parse("https://push.example/b").unwrap());
        let other = keys.signature_for(&Url::parse("https://push.example:8443/a").unwrap());
        assert_eq!(a1.auth_t, a2.auth_t);
        assert_ne!(a1.auth_t, other.auth_t);
    }
}
