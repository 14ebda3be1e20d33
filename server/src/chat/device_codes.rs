//! Device codes: what one looks like, and how a code typed by a person is read.

use std::time::Duration;

use rand::Rng;

/// How long a device code can be used.
pub(super) const DEVICE_CODE_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// Crockford's base32: no I, L, O or U, so a code read aloud or retyped survives.
pub(super) const CODE_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Twelve random symbols (60 bits) in groups of four.
pub(super) fn new_device_code() -> String {
    let mut rng = rand::thread_rng();
    let symbols: Vec<char> = (0..12)
        .map(|_| CODE_ALPHABET[rng.gen_range(0..CODE_ALPHABET.len())] as char)
        .collect();
    symbols
        .chunks(4)
        .map(|group| group.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

/// A code as typed, in the form it was stored: case, dashes and spaces do not matter, and
/// the letters people mistake for digits are read as those digits.
pub(super) fn normal_code(typed: &str) -> String {
    typed
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            other => other,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_codes_survive_the_ways_people_retype_them() {
        assert_eq!(normal_code("k7qx-m2pd r9tb"), "K7QXM2PDR9TB");
        assert_eq!(normal_code("OIL0"), "0110");
        let code = new_device_code();
        assert_eq!(normal_code(&code), code.replace('-', ""));
        assert!(code
            .chars()
            .all(|c| c == '-' || CODE_ALPHABET.contains(&(c as u8))));
    }
}
