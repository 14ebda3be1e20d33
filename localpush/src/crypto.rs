//! Decryption of Web Push messages as a browser does it: aes128gcm content coding
//! (RFC 8188) with the Web Push key derivation (RFC 8291). Written independently of the
//! sender's encoder (the server's `push::encryption`, over OpenSSL), so each checks the
//! other; pinned by the RFC 8291 Appendix A known-answer vector, which [`rfc8291_example`]
//! gives to every test that wants real keys.

use aes_gcm::{aead::Aead, Aes128Gcm, KeyInit, Nonce};
use hkdf::Hkdf;
use p256::{ecdh::diffie_hellman, PublicKey, SecretKey};
use sha2::Sha256;

const SALT_LEN: usize = 16;
const TAG_LEN: usize = 16;
const HEADER_FIXED_LEN: usize = SALT_LEN + 4 + 1;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecryptError {
    #[error("the body is shorter than an aes128gcm header")]
    Truncated,
    #[error("the record size {0} is below the minimum of 18")]
    RecordSize(u32),
    #[error("the key id is not the sender's P-256 public key")]
    SenderKey,
    #[error("a record does not authenticate with this subscription's keys")]
    Authentication,
    #[error("a record's padding is malformed")]
    Padding,
}

/// A subscriber's key material: what a browser keeps for one push subscription.
pub struct SubscriberKeys {
    pub secret: SecretKey,
    pub auth: [u8; 16],
}

impl SubscriberKeys {
    /// The public key as an uncompressed point (what `p256dh` carries).
    pub fn public_key(&self) -> Vec<u8> {
        self.secret.public_key().to_sec1_bytes().to_vec()
    }

    /// Decrypts an aes128gcm Web Push body sent to these keys.
    pub fn decrypt(&self, body: &[u8]) -> Result<Vec<u8>, DecryptError> {
        let header = body
            .get(..HEADER_FIXED_LEN)
            .ok_or(DecryptError::Truncated)?;
        let salt = &header[..SALT_LEN];
        let record_size = u32::from_be_bytes([header[16], header[17], header[18], header[19]]);
        let key_id_len = usize::from(header[20]);
        if record_size < 18 {
            return Err(DecryptError::RecordSize(record_size));
        }
        let key_id = body
            .get(HEADER_FIXED_LEN..HEADER_FIXED_LEN + key_id_len)
            .ok_or(DecryptError::Truncated)?;
        let sender = PublicKey::from_sec1_bytes(key_id).map_err(|_| DecryptError::SenderKey)?;
        let (key, nonce) = self.derive(&sender, key_id, salt);

        let cipher = Aes128Gcm::new(&key.into());
        let records: Vec<&[u8]> = body[HEADER_FIXED_LEN + key_id_len..]
            .chunks(record_size as usize)
            .collect();
        let mut plaintext = Vec::new();
        for (seq, record) in records.iter().enumerate() {
            if record.len() <= TAG_LEN {
                return Err(DecryptError::Truncated);
            }
            let mut record_nonce = nonce;
            for (byte, seq_byte) in record_nonce[4..].iter_mut().zip((seq as u64).to_be_bytes()) {
                *byte ^= seq_byte;
            }
            let padded = cipher
                .decrypt(&Nonce::from(record_nonce), *record)
                .map_err(|_| DecryptError::Authentication)?;
            let last = seq + 1 == records.len();
            plaintext.extend_from_slice(unpad(&padded, last)?);
        }
        Ok(plaintext)
    }

    /// RFC 8291 §3.4: the content-encryption key and nonce for one message.
    fn derive(&self, sender: &PublicKey, sender_raw: &[u8], salt: &[u8]) -> ([u8; 16], [u8; 12]) {
        let shared = diffie_hellman(self.secret.to_nonzero_scalar(), sender.as_affine());
        let mut key_info = b"WebPush: info\0".to_vec();
        key_info.extend_from_slice(&self.public_key());
        key_info.extend_from_slice(sender_raw);
        let mut ikm = [0u8; 32];
        Hkdf::<Sha256>::new(Some(&self.auth), shared.raw_secret_bytes())
            .expand(&key_info, &mut ikm)
            .expect("32 bytes is a valid HKDF-SHA-256 length");

        let content = Hkdf::<Sha256>::new(Some(salt), &ikm);
        let mut key = [0u8; 16];
        let mut nonce = [0u8; 12];
        content
            .expand(b"Content-Encoding: aes128gcm\0", &mut key)
            .expect("valid length");
        content
            .expand(b"Content-Encoding: nonce\0", &mut nonce)
            .expect("valid length");
        (key, nonce)
    }
}

/// RFC 8188 §2: a record ends in a delimiter (2 for the last record, 1 otherwise) and zeros.
fn unpad(padded: &[u8], last: bool) -> Result<&[u8], DecryptError> {
    let end = padded
        .iter()
        .rposition(|&byte| byte != 0)
        .ok_or(DecryptError::Padding)?;
    let expected = if last { 2 } else { 1 };
    if padded[end] == expected {
        Ok(&padded[..end])
    } else {
        Err(DecryptError::Padding)
    }
}

/// RFC 8291 Appendix A, the example Web Push implementations check themselves against:
/// the receiving user agent's keys and authentication secret, and the message it receives,
/// base64url without padding as the RFC gives them. A subscription made of these has a
/// real P-256 point and a 16-byte secret.
pub mod rfc8291_example {
    /// The receiver's private key (`ua_private`).
    pub const RECEIVER_PRIVATE_KEY: &str = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94";
    /// The receiver's public key (`ua_public`): its subscription's `p256dh`.
    pub const RECEIVER_PUBLIC_KEY: &str =
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    /// The authentication secret (`auth_secret`): its subscription's `auth`.
    pub const AUTH_SECRET: &str = "BTBZMqHH6r4Tts7J_aSIgg";
    /// The application server's public key for this message (`as_public`): another real
    /// P-256 point.
    pub const SENDER_PUBLIC_KEY: &str =
        "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8";
    /// The application server's private key for this message (`as_private`): what a
    /// sender's known-answer test fixes in place of a fresh key.
    pub const SENDER_PRIVATE_KEY: &str = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw";
    /// The message's salt, which [`BODY`] starts with.
    pub const SALT: &str = "DGv6ra1nlYgDCS1FRnbzlw";
    /// The push message body the application server sends: an aes128gcm header and one
    /// record.
    pub const BODY: &str = "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN";
    /// What the receiver reads once it decrypted [`BODY`].
    pub const PLAINTEXT: &str = "When I grow up, I want to be a watermelon";
}

#[cfg(test)]
pub(crate) mod tests {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};

    use super::{rfc8291_example::*, *};

    fn b64(text: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(text).unwrap()
    }

    /// The receiving user agent of RFC 8291's example, with its keys.
    pub(crate) fn rfc8291_receiver() -> SubscriberKeys {
        let secret = SecretKey::from_slice(&b64(RECEIVER_PRIVATE_KEY)).unwrap();
        let auth = b64(AUTH_SECRET).try_into().unwrap();
        SubscriberKeys { secret, auth }
    }

    #[test]
    fn test_rfc8291_appendix_a_vector_decrypts() {
        let keys = rfc8291_receiver();
        assert_eq!(
            URL_SAFE_NO_PAD.encode(keys.public_key()),
            RECEIVER_PUBLIC_KEY
        );
        let plaintext = keys.decrypt(&b64(BODY)).unwrap();
        assert_eq!(plaintext, PLAINTEXT.as_bytes());
    }

    #[test]
    fn test_a_flipped_bit_fails_authentication() {
        let mut body = b64(BODY);
        let last = body.len() - 1;
        body[last] ^= 1;
        assert_eq!(
            rfc8291_receiver().decrypt(&body),
            Err(DecryptError::Authentication)
        );
    }

    #[test]
    fn test_another_auth_secret_cannot_decrypt() {
        let mut keys = rfc8291_receiver();
        keys.auth = [7; 16];
        assert_eq!(keys.decrypt(&b64(BODY)), Err(DecryptError::Authentication));
    }

    #[test]
    fn test_truncated_bodies_are_refused() {
        let keys = rfc8291_receiver();
        assert_eq!(keys.decrypt(&[0; 10]), Err(DecryptError::Truncated));
        assert_eq!(keys.decrypt(&b64(BODY)[..80]), Err(DecryptError::Truncated));
    }
}
