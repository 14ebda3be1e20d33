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
        }
    }
}

impl std::error::Error for NameError {}

/// The name as it will be shown: trimmed, with each run of whitespace made one space.
pub fn clean_name(raw: &str) -> Result<String, NameError> {
    if raw.chars().any(|c| c.is_control() && !c.is_whitespace()) {
        return Err(NameError::ControlCharacter);
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

/// The key two names collide on: names that differ only by case are the same person to
/// a reader, so they are the same name here.
pub fn name_key(clean: &str) -> String {
    clean.to_lowercase()
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
    fn names_collide_regardless_of_case() {
        assert_eq!(name_key("Ann Lee"), name_key("ANN lee"));
    }
}
