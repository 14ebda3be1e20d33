//! How big a push may be, and the few sizes every push is padded to. The page checks a
//! chat line against [`chat_line_excess`] before sending it and the server checks it
//! again with the same function, so no line the page accepts is refused by the server,
//! nor by any push service on the way.
//!
//! The smallest limit in the chain is Firefox for Android's push service (Mozilla's
//! autopush): it refuses encrypted bodies over [`PUSH_BODY_LIMIT`] bytes. An aes128gcm
//! body (RFC 8188, one record) is its header (salt, record size, key id: 86 bytes), the
//! payload, the padding delimiter (1) and the AES-GCM tag (16), which leaves
//! [`PUSH_PAYLOAD_LIMIT`] bytes for the payload.
//!
//! A payload is measured in its widest form: the largest id and time a line can carry,
//! and a public URL of the longest length the server accepts ([`MAX_CHAT_URL_LEN`]), so
//! whether a message fits depends only on its text and its sender's name.

use crate::wire::{ChatLine, PushMessage};

/// The largest encrypted body every push service takes (autopush's limit, error 104).
pub const PUSH_BODY_LIMIT: usize = 3070;

/// What aes128gcm adds to a payload: header (salt 16, record size 4, key id length 1,
/// key id 65), the padding delimiter, and the tag.
pub const ENCRYPTION_OVERHEAD: usize = 86 + 1 + 16;

/// The largest payload (plaintext) one push may carry.
pub const PUSH_PAYLOAD_LIMIT: usize = PUSH_BODY_LIMIT - ENCRYPTION_OVERHEAD;

/// The encrypted sizes every push is padded to (RFC 8188 padding, inside the encryption):
/// each push goes out as the smallest that holds it.
///
/// Why these: a push service sees every body's size, and without padding it reads a
/// line's length from it. Three sizes, 1 KiB apart, tell it only "short", "long" or "very
/// long": every line of up to about 700 ASCII characters (most lines), every join and
/// removal, and a leave of a few names, is 1024 bytes. Padding costs little: at most 1 KiB more per push on
/// the wire, next to its HTTP headers and VAPID token, and AES-GCM over 1 KiB is a
/// microsecond next to the 60 µs of the key agreement every push needs. One size only
/// (3070) would triple every short push's bytes to hide only whether a line is long.
pub const PUSH_BODY_SIZES: [usize; 3] = [1024, 2048, PUSH_BODY_LIMIT];

/// The longest public URL of the chat (`--public-url`), in bytes: every push carries it,
/// so the budget reserves this much for it.
pub const MAX_CHAT_URL_LEN: usize = 128;

/// The size a push of `payload_len` bytes is padded to: the smallest of
/// [`PUSH_BODY_SIZES`] that holds it, or `None` when it exceeds the budget.
pub fn padded_body_size(payload_len: usize) -> Option<usize> {
    let body = payload_len + ENCRYPTION_OVERHEAD;
    PUSH_BODY_SIZES.into_iter().find(|&size| body <= size)
}

/// How far `message`'s payload in its widest form exceeds [`PUSH_PAYLOAD_LIMIT`], in
/// bytes; `None` when it fits.
pub fn payload_excess(message: &PushMessage) -> Option<usize> {
    let widest_url = "x".repeat(MAX_CHAT_URL_LEN);
    let len = message.to_payload(&widest_url).len();
    len.checked_sub(PUSH_PAYLOAD_LIMIT)
        .filter(|&excess| excess > 0)
}

/// How far a chat line `msg` from `name` would exceed the push budget, in bytes; `None`
/// when it fits. Measured with the largest id and time a line can carry, so the answer
/// never depends on when the line is sent.
pub fn chat_line_excess(name: &str, msg: &str) -> Option<usize> {
    payload_excess(&PushMessage::Line(ChatLine {
        id: u64::MAX,
        name: name.to_owned(),
        msg: msg.to_owned(),
        time: u64::MAX,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::MAX_NAME_CHARS;

    /// The longest ASCII line `name` may send.
    fn longest_line(name: &str) -> String {
        let mut line = String::new();
        while chat_line_excess(name, &format!("{line}m")).is_none() {
            line.push('m');
        }
        line
    }

    #[test]
    fn test_a_line_fits_up_to_the_byte_and_escaping_counts() {
        let fits = longest_line("Ann");
        assert_eq!(chat_line_excess("Ann", &fits), None);
        assert_eq!(chat_line_excess("Ann", &format!("{fits}m")), Some(1));
        // A quote costs two bytes on the wire.
        assert_eq!(
            chat_line_excess("Ann", &format!("{}\"", &fits[1..])),
            Some(1)
        );
        let widest = PushMessage::Line(ChatLine {
            id: u64::MAX,
            name: "Ann".into(),
            msg: fits,
            time: u64::MAX,
        });
        let payload = widest.to_payload(&"x".repeat(MAX_CHAT_URL_LEN));
        assert_eq!(payload.len(), PUSH_PAYLOAD_LIMIT);
        assert_eq!(padded_body_size(payload.len()), Some(PUSH_BODY_LIMIT));
    }

    #[test]
    fn test_the_widest_name_leaves_most_of_the_budget_to_the_line() {
        // What the README promises.
        assert_eq!(longest_line("Ann").len(), 2_621);
        assert_eq!(longest_line(&"😀".repeat(MAX_NAME_CHARS)).len(), 2_246);
    }

    #[test]
    fn test_bodies_are_padded_to_the_smallest_size_that_holds_them() {
        assert_eq!(padded_body_size(0), Some(1024));
        assert_eq!(padded_body_size(1024 - ENCRYPTION_OVERHEAD), Some(1024));
        assert_eq!(padded_body_size(1025 - ENCRYPTION_OVERHEAD), Some(2048));
        assert_eq!(padded_body_size(PUSH_PAYLOAD_LIMIT), Some(PUSH_BODY_LIMIT));
        assert_eq!(padded_body_size(PUSH_PAYLOAD_LIMIT + 1), None);
        assert_eq!(PUSH_PAYLOAD_LIMIT, 2967);
    }
}
