//! What a member's name may be. The page checks a name before it asks for permission; the
//! server checks it again, since any client can call the API.

use std::fmt;

/// The longest name, in characters.
pub const MAX_NAME_CHARS: usize = 32;

/// Why a name was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NameError {
    Empty,
    TooLong { chars: usize },
    ControlCharacter,
    InvisibleCharacter,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => write!(f, "Please type a name."),
            NameError::TooLong { chars } => write!(
                f,
                "That name has {chars} characters; at most {MAX_NAME_CHARS} are allowed."
            ),
            NameError::ControlCharacter => write!(f, "A name cannot contain control characters."),
            NameError::InvisibleCharacter => write!(
                f,
                "A name cannot contain invisible or text-direction characters."
            ),
        }
    }
}

impl std::error::Error for NameError {}

/// The name as it will be shown: trimmed, with each run of whitespace (of any script)
/// made one space.
pub fn clean_name(raw: &str) -> Result<String, NameError> {
    if raw.chars().any(|c| c.is_control() && !c.is_whitespace()) {
        return Err(NameError::ControlCharacter);
    }
    if has_invisible(raw) {
        return Err(NameError::InvisibleCharacter);
    }
    let name = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    let chars = name.chars().count();
    if chars == 0 {
        Err(NameError::Empty)
    } else if chars > MAX_NAME_CHARS {
        Err(NameError::TooLong { chars })
    } else {
        Ok(name)
    }
}

/// Where a member's name sits in a list of names, on the page and from the server alike:
/// by its lowercase form (so "bob" sits beside "Bob", and "émile" beside "Émile"), then
/// by the name itself, so that the order never depends on the order names came in.
pub fn sort_key(name: &str) -> (String, String) {
    (name.to_lowercase(), name.to_owned())
}

/// Whether `raw` has a character that shows nothing or reorders what follows: with one,
/// two names that look the same can differ, and a name can make the text after it read
/// backwards. A variation selector is visible through the character it follows (the
/// emoji form of "❤️"), so it is allowed right after a visible character, once.
fn has_invisible(raw: &str) -> bool {
    let mut previous: Option<char> = None;
    for c in raw.chars() {
        let selects = previous.is_some_and(|p| !p.is_whitespace() && !is_variation_selector(p));
        if is_invisible(c) || (is_variation_selector(c) && !selects) {
            return true;
        }
        previous = Some(c);
    }
    false
}

fn is_variation_selector(c: char) -> bool {
    matches!(c, '\u{FE00}'..='\u{FE0F}')
}

/// Characters that show nothing or reorder what follows.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' // soft hyphen
        | '\u{034F}' // combining grapheme joiner
        | '\u{061C}' // Arabic letter mark
        | '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}' // Hangul fillers
        | '\u{180E}' // Mongolian vowel separator
        | '\u{200B}'..='\u{200F}' // zero-width space, joiners, direction marks
        | '\u{202A}'..='\u{202E}' // direction embeddings and overrides
        | '\u{2060}'..='\u{2064}' // word joiner, invisible operators
        | '\u{2066}'..='\u{2069}' // direction isolates
        | '\u{FEFF}' // zero-width no-break space
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_spaces_collapsed() {
        assert_eq!(
            clean_name("  Ada \t Lovelace \n"),
            Ok("Ada Lovelace".into())
        );
    }

    #[test]
    fn empty_and_blank_names_are_refused() {
        assert_eq!(clean_name(""), Err(NameError::Empty));
        assert_eq!(clean_name(" \t "), Err(NameError::Empty));
    }

    #[test]
    fn long_names_are_refused_by_characters_not_bytes() {
        assert!(clean_name(&"é".repeat(MAX_NAME_CHARS)).is_ok());
        assert_eq!(
            clean_name(&"é".repeat(MAX_NAME_CHARS + 1)),
            Err(NameError::TooLong {
                chars: MAX_NAME_CHARS + 1
            })
        );
    }

    #[test]
    fn control_characters_are_refused() {
        assert_eq!(clean_name("Ann\u{7}"), Err(NameError::ControlCharacter));
        assert_eq!(clean_name("Ann\u{0}Bo"), Err(NameError::ControlCharacter));
    }

    #[test]
    fn other_scripts_whitespace_counts_as_space() {
        assert_eq!(clean_name("Ann\u{3000}\u{00A0}Lee"), Ok("Ann Lee".into()));
    }

    #[test]
    fn emoji_with_a_variation_selector_are_accepted() {
        assert_eq!(
            clean_name("\u{2764}\u{FE0F} Ann"),
            Ok("\u{2764}\u{FE0F} Ann".into())
        );
        assert_eq!(
            clean_name("Ann \u{263A}\u{FE0E}"),
            Ok("Ann \u{263A}\u{FE0E}".into())
        );
    }

    #[test]
    fn names_sort_without_regard_to_case_in_any_script() {
        let mut names = [
            "zoë", "Émile", "bob", "Ærin", "Alice", "émilie", "Ωmega", "ÅSA",
        ]
        .map(String::from);
        names.sort_by_cached_key(|name| sort_key(name));
        assert_eq!(
            names,
            ["Alice", "bob", "zoë", "ÅSA", "Ærin", "Émile", "émilie", "Ωmega"]
        );
    }

    #[test]
    fn names_sort_the_same_whatever_order_they_came_in() {
        let sorted = |names: &[&str]| {
            let mut names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
            names.sort_by_cached_key(|name| sort_key(name));
            names
        };
        // "Ann" and "ann" cannot both join (see `clean_name`'s callers); the order of two
        // such names still never depends on where they started.
        assert_eq!(sorted(&["ann", "Bo", "Ann"]), sorted(&["Ann", "ann", "Bo"]));
    }

    #[test]
    fn invisible_and_direction_characters_are_refused() {
        for name in [
            "An\u{200B}n",
            "Ann\u{202E}eeL",
            "\u{FEFF}Ann",
            "A\u{2066}nn",
            "\u{FE0F}Ann",
            "Ann \u{FE0F}",
            "\u{2764}\u{FE0F}\u{FE0F} Ann",
        ] {
            assert_eq!(
                clean_name(name),
                Err(NameError::InvisibleCharacter),
                "{name:?}"
            );
        }
    }
}
