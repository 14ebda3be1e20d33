//! Message encryption for Web Push (RFC 8291 over the aes128gcm content coding of
//! RFC 8188): per message one fresh P-256 key pair and one ECDH with the receiver's key
//! ([`fresh_agreement`], OpenSSL through the `openssl` crate), HKDF-SHA-256 for the key
//! and nonce, AES-128-GCM for the one record, sealed in place in the body's buffer.
//!
//! Promises: every body is a single record (rs = 4096, key id = the sender's public key,
//! delimiter 0x02) that any RFC 8291 receiver decrypts; it can be padded with zeros to a
//! chosen size, so that the size does not tell which message it is; a payload that does
//! not fit one record is an error, never a panic. Receiver keys are parsed once
//! ([`ReceiverKeys`]) and can encrypt any number of messages.
//!
//! Where the time goes, measured on this project's machine (OpenSSL 3.0): the ECDH is
//! OpenSSL's scalar multiplication of the receiver's point (`EC_POINT_mul`, the x
//! coordinate as SEC 1 §3.3.1 defines it), about 44 µs, rather than `EVP_PKEY_derive`,
//! which adds about 45 µs re-validating the peer key on every message and 18 µs
//! exporting both keys to its provider; the receiver's point is checked once, when
//! parsed. HKDF comes from the `hkdf` and `sha2` crates: 1 µs for the three steps, where
//! OpenSSL 3's KDF contexts take 16 µs to set up. AES-GCM comes from the `aes-gcm` crate
//! (AES-NI and CLMUL, detected at run time) and the salt from `rand`'s thread-local
//! CSPRNG: OpenSSL's cipher context and its locked DRBG cost about 3 µs a message, where
//! these cost a fraction of one.

use std::sync::LazyLock;

use aes_gcm::{aead::AeadInPlace, Aes128Gcm, KeyInit};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use hkdf::Hkdf;
use openssl::{
    bn::BigNum,
    bn::BigNumContext,
    ec::{EcGroup, EcKey, EcPoint, PointConversionForm},
    error::ErrorStack,
    nid::Nid,
    pkey::Private,
};
use rand::RngCore;
use sha2::Sha256;

use crate::model::subscription::Subscription;

/// The record size every body announces: the largest record a receiver must accept.
pub const RECORD_SIZE: usize = 4096;
/// An uncompressed P-256 point.
const PUBLIC_KEY_LEN: usize = 65;
/// A P-256 ECDH secret: the x coordinate of the shared point.
const SHARED_SECRET_LEN: usize = 32;
const AUTH_LEN: usize = 16;
const SALT_LEN: usize = 16;
const TAG_LEN: usize = 16;
/// salt, rs, idlen, key id.
const HEADER_LEN: usize = SALT_LEN + 4 + 1 + PUBLIC_KEY_LEN;
/// The delimiter that ends the last (here: only) record's data.
const LAST_RECORD_DELIMITER: u8 = 0x02;

/// P-256, made once: building the group is a measurable part of a message otherwise.
static P256: LazyLock<EcGroup> =
    LazyLock::new(|| EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("OpenSSL knows P-256"));

/// Why a subscription's keys cannot be encrypted to.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeysError {
    #[error("p256dh is not base64url")]
    P256dhNotBase64,
    #[error("p256dh is not an uncompressed P-256 point ({0} bytes, must be 65)")]
    P256dhLength(usize),
    #[error("p256dh is not a point on P-256")]
    P256dhNotOnCurve,
    #[error("auth is not base64url")]
    AuthNotBase64,
    #[error("auth is {0} bytes, must be 16")]
    AuthLength(usize),
}

/// Why a message could not be encrypted.
#[derive(Debug, thiserror::Error)]
pub enum EncryptionError {
    #[error("the record would be {record} bytes, over the {RECORD_SIZE} a push may carry")]
    TooLong { record: usize },
    #[error("OpenSSL failed")]
    OpenSsl(#[from] ErrorStack),
    #[error("AES-GCM refused the record")]
    Seal,
}

/// A receiver's keys, as its subscription gives them, parsed for encryption.
pub struct ReceiverKeys {
    /// On the curve: checked when parsed.
    public: EcPoint,
    /// `public` as an uncompressed point: part of the key derivation's info.
    public_raw: [u8; PUBLIC_KEY_LEN],
    auth: [u8; AUTH_LEN],
}

impl ReceiverKeys {
    /// The keys of `subscription` (`p256dh` and `auth`, base64url).
    pub fn from_subscription(subscription: &Subscription) -> Result<Self, KeysError> {
        Self::from_base64(&subscription.p256dh, &subscription.auth)
    }

    /// Keys from `p256dh` and `auth` in base64url (padding allowed, as browsers vary).
    pub fn from_base64(p256dh: &str, auth: &str) -> Result<Self, KeysError> {
        let p256dh = decode(p256dh).ok_or(KeysError::P256dhNotBase64)?;
        let public_raw: [u8; PUBLIC_KEY_LEN] = p256dh
            .as_slice()
            .try_into()
            .map_err(|_| KeysError::P256dhLength(p256dh.len()))?;
        let auth = decode(auth).ok_or(KeysError::AuthNotBase64)?;
        let auth: [u8; AUTH_LEN] = auth
            .as_slice()
            .try_into()
            .map_err(|_| KeysError::AuthLength(auth.len()))?;
        let public = public_key(&public_raw).map_err(|_| KeysError::P256dhNotOnCurve)?;
        Ok(ReceiverKeys {
            public,
            public_raw,
            auth,
        })
    }
}

/// A sender key pair and the secret it shares with one receiver.
pub struct Agreement {
    sender: EcKey<Private>,
    shared: [u8; SHARED_SECRET_LEN],
}

/// The public-key work of one message: a fresh P-256 key pair and its ECDH with
/// `receiver` (what `pushchat bench` measures as the primitives).
pub fn fresh_agreement(receiver: &ReceiverKeys) -> Result<Agreement, ErrorStack> {
    agree(EcKey::generate(&P256)?, receiver)
}

fn agree(sender: EcKey<Private>, receiver: &ReceiverKeys) -> Result<Agreement, ErrorStack> {
    let mut context = BigNumContext::new()?;
    let mut point = EcPoint::new(&P256)?;
    point.mul2(&P256, &receiver.public, sender.private_key(), &mut context)?;
    let (mut x, mut y) = (BigNum::new()?, BigNum::new()?);
    point.affine_coordinates(&P256, &mut x, &mut y, &mut context)?;
    let mut shared = [0u8; SHARED_SECRET_LEN];
    shared.copy_from_slice(&x.to_vec_padded(SHARED_SECRET_LEN as i32)?);
    Ok(Agreement { sender, shared })
}

/// Encrypts `plaintext` for `receiver` as one aes128gcm body, with a fresh sender key and
/// salt. When `pad_to` is above the unpadded body's size the record is padded with zeros
/// so that the body is exactly `pad_to` bytes; otherwise it is not padded.
pub fn encrypt(
    receiver: &ReceiverKeys,
    plaintext: &[u8],
    pad_to: usize,
) -> Result<Vec<u8>, EncryptionError> {
    let agreement = fresh_agreement(receiver)?;
    let mut salt = [0u8; SALT_LEN];
    rand::thread_rng().fill_bytes(&mut salt);
    seal(receiver, &agreement, &salt, plaintext, pad_to)
}

/// The body for `plaintext` under `agreement` and `salt` (RFC 8291's example fixes both).
fn seal(
    receiver: &ReceiverKeys,
    agreement: &Agreement,
    salt: &[u8; SALT_LEN],
    plaintext: &[u8],
    pad_to: usize,
) -> Result<Vec<u8>, EncryptionError> {
    let unpadded = HEADER_LEN + plaintext.len() + 1 + TAG_LEN;
    let padding = pad_to.saturating_sub(unpadded);
    let record = plaintext.len() + 1 + padding + TAG_LEN;
    if record > RECORD_SIZE {
        return Err(EncryptionError::TooLong { record });
    }

    let mut sender_raw = [0u8; PUBLIC_KEY_LEN];
    let mut context = BigNumContext::new()?;
    sender_raw.copy_from_slice(&agreement.sender.public_key().to_bytes(
        &P256,
        PointConversionForm::UNCOMPRESSED,
        &mut context,
    )?);
    let (key, nonce) = derive(receiver, &sender_raw, &agreement.shared, salt);

    // One buffer, encrypted in place: the header, then the record's data and its tag.
    let mut body = Vec::with_capacity(HEADER_LEN + record);
    body.extend_from_slice(salt);
    body.extend_from_slice(&(RECORD_SIZE as u32).to_be_bytes());
    body.push(PUBLIC_KEY_LEN as u8);
    body.extend_from_slice(&sender_raw);
    body.extend_from_slice(plaintext);
    body.push(LAST_RECORD_DELIMITER);
    body.resize(HEADER_LEN + record - TAG_LEN, 0);
    let tag = Aes128Gcm::new(&key.into())
        .encrypt_in_place_detached(&nonce.into(), &[], &mut body[HEADER_LEN..])
        .map_err(|_| EncryptionError::Seal)?;
    body.extend_from_slice(&tag);
    Ok(body)
}

/// RFC 8291 §3.3–3.4: the content-encryption key and nonce from the shared secret.
fn derive(
    receiver: &ReceiverKeys,
    sender_raw: &[u8; PUBLIC_KEY_LEN],
    shared: &[u8; SHARED_SECRET_LEN],
    salt: &[u8; SALT_LEN],
) -> ([u8; 16], [u8; 12]) {
    let mut key_info = [0u8; 14 + 2 * PUBLIC_KEY_LEN];
    key_info[..14].copy_from_slice(b"WebPush: info\0");
    key_info[14..14 + PUBLIC_KEY_LEN].copy_from_slice(&receiver.public_raw);
    key_info[14 + PUBLIC_KEY_LEN..].copy_from_slice(sender_raw);
    let mut ikm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(&receiver.auth), shared)
        .expand(&key_info, &mut ikm)
        .expect("32 bytes is a valid HKDF-SHA-256 length");
    let content = Hkdf::<Sha256>::new(Some(salt), &ikm);
    let mut key = [0u8; 16];
    let mut nonce = [0u8; 12];
    content
        .expand(b"Content-Encoding: aes128gcm\0", &mut key)
        .expect("16 bytes is a valid HKDF-SHA-256 length");
    content
        .expand(b"Content-Encoding: nonce\0", &mut nonce)
        .expect("12 bytes is a valid HKDF-SHA-256 length");
    (key, nonce)
}

/// An uncompressed P-256 point; OpenSSL refuses one off the curve (and P-256's cofactor
/// is 1, so a point on it is a valid public key).
fn public_key(raw: &[u8]) -> Result<EcPoint, ErrorStack> {
    let mut context = BigNumContext::new()?;
    EcPoint::from_bytes(&P256, raw, &mut context)
}

fn decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()
}

#[cfg(test)]
mod tests {
    use localpush::crypto::{rfc8291_example as example, SubscriberKeys};

    use super::*;

    fn b64(text: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(text).unwrap()
    }

    fn example_receiver() -> ReceiverKeys {
        ReceiverKeys::from_base64(example::RECEIVER_PUBLIC_KEY, example::AUTH_SECRET).unwrap()
    }

    /// The example's receiver as the independent decryptor holds it.
    fn example_decryptor() -> SubscriberKeys {
        SubscriberKeys {
            secret: p256::SecretKey::from_slice(&b64(example::RECEIVER_PRIVATE_KEY)).unwrap(),
            auth: b64(example::AUTH_SECRET).try_into().unwrap(),
        }
    }

    fn example_sender() -> EcKey<Private> {
        let private = BigNum::from_slice(&b64(example::SENDER_PRIVATE_KEY)).unwrap();
        let mut public = EcPoint::new(&P256).unwrap();
        let mut context = BigNumContext::new().unwrap();
        public
            .mul_generator2(&P256, &private, &mut context)
            .unwrap();
        EcKey::from_private_components(&P256, &private, &public).unwrap()
    }

    #[test]
    fn test_rfc8291_appendix_a_vector_is_reproduced() {
        let salt: [u8; SALT_LEN] = b64(example::SALT).try_into().unwrap();
        let receiver = example_receiver();
        let agreement = agree(example_sender(), &receiver).unwrap();
        let body = seal(
            &receiver,
            &agreement,
            &salt,
            example::PLAINTEXT.as_bytes(),
            0,
        )
        .unwrap();
        assert_eq!(URL_SAFE_NO_PAD.encode(body), example::BODY);
    }

    #[test]
    fn test_a_fresh_message_decrypts_with_the_independent_decryptor() {
        let plaintext = b"a chat line for one member";
        let first = encrypt(&example_receiver(), plaintext, 0).unwrap();
        let second = encrypt(&example_receiver(), plaintext, 0).unwrap();
        assert_ne!(first, second, "a fresh key and salt per message");
        for body in [first, second] {
            assert_eq!(example_decryptor().decrypt(&body).unwrap(), plaintext);
        }
    }

    #[test]
    fn test_padded_bodies_have_the_asked_size_and_the_same_plaintext() {
        let plaintext = b"short";
        let unpadded = encrypt(&example_receiver(), plaintext, 0).unwrap().len();
        assert_eq!(unpadded, HEADER_LEN + plaintext.len() + 1 + TAG_LEN);
        for pad_to in [unpadded + 1, 1024, HEADER_LEN + RECORD_SIZE] {
            let body = encrypt(&example_receiver(), plaintext, pad_to).unwrap();
            assert_eq!(body.len(), pad_to);
            assert_eq!(example_decryptor().decrypt(&body).unwrap(), plaintext);
        }
        // A size at or below the unpadded one leaves the body unpadded.
        for pad_to in [1, unpadded] {
            let body = encrypt(&example_receiver(), plaintext, pad_to).unwrap();
            assert_eq!(body.len(), unpadded);
        }
    }

    #[test]
    fn test_more_than_one_record_is_an_error() {
        let too_long = encrypt(&example_receiver(), b"x", HEADER_LEN + RECORD_SIZE + 1);
        assert!(
            matches!(too_long, Err(EncryptionError::TooLong { record }) if record == RECORD_SIZE + 1)
        );
        let fits = vec![7u8; RECORD_SIZE - 1 - TAG_LEN];
        assert!(encrypt(&example_receiver(), &fits, 0).is_ok());
        let over = vec![7u8; RECORD_SIZE - TAG_LEN];
        assert!(matches!(
            encrypt(&example_receiver(), &over, 0),
            Err(EncryptionError::TooLong { .. })
        ));
    }

    #[test]
    fn test_bad_keys_are_named() {
        let auth = example::AUTH_SECRET;
        let p256dh = example::RECEIVER_PUBLIC_KEY;
        let error = |p256dh: &str, auth: &str| ReceiverKeys::from_base64(p256dh, auth).err();
        assert_eq!(error("not base64!", auth), Some(KeysError::P256dhNotBase64));
        assert_eq!(error("AAAA", auth), Some(KeysError::P256dhLength(3)));
        let mut off_curve = b64(p256dh);
        off_curve[64] ^= 1;
        assert_eq!(
            error(&URL_SAFE_NO_PAD.encode(off_curve), auth),
            Some(KeysError::P256dhNotOnCurve)
        );
        assert_eq!(error(p256dh, "*"), Some(KeysError::AuthNotBase64));
        assert_eq!(error(p256dh, "AAAA"), Some(KeysError::AuthLength(3)));
        assert!(error(&format!("{p256dh}="), &format!("{auth}==")).is_none());
    }
}
