//! Finds the web addresses in a chat line, so the page can make them links. Only `http`
//! and `https` addresses count: anything else (`javascript:`, `data:`) stays text. The
//! page builds each piece as a DOM node (a text node, or an `<a>` holding a text node),
//! never as HTML from the text.

/// A run of a chat line: plain text, or an address to link to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    Text(&'a str),
    Link(&'a str),
}

const SCHEMES: [&str; 2] = ["https://", "http://"];

/// Punctuation that ends a sentence rather than an address when it comes last.
const TRAILING: &[char] = &['.', ',', ';', ':', '!', '?', '\'', '"', '*', '_'];

/// Splits `text` into text and links, in order; joined, the pieces are `text` again.
pub fn pieces(text: &str) -> Vec<Piece<'_>> {
    let mut pieces = Vec::new();
    let mut text_from = 0;
    let mut at = 0;
    while let Some(start) = next_address_start(text, at) {
        let end = start + address_len(&text[start..]);
        if end - start > scheme_len(&text[start..]) {
            if text_from < start {
                pieces.push(Piece::Text(&text[text_from..start]));
            }
            pieces.push(Piece::Link(&text[start..end]));
            text_from = end;
        }
        at = end.max(start + 1);
    }
    if text_from < text.len() {
        pieces.push(Piece::Text(&text[text_from..]));
    }
    pieces
}

/// Where the next `http://` or `https://` starting a word is, from byte `from` on.
fn next_address_start(text: &str, from: usize) -> Option<usize> {
    text.char_indices()
        .skip_while(|&(index, _)| index < from)
        .map(|(index, _)| index)
        .find(|&index| {
            scheme_len(&text[index..]) > 0
                && text[..index]
                    .chars()
                    .next_back()
                    .is_none_or(|before| !before.is_alphanumeric())
        })
}

/// The length of the scheme and `://` that `text` starts with, any case; 0 if none.
fn scheme_len(text: &str) -> usize {
    SCHEMES
        .iter()
        .find(|scheme| {
            text.get(..scheme.len())
                .is_some_and(|start| start.eq_ignore_ascii_case(scheme))
        })
        .map_or(0, |scheme| scheme.len())
}

/// How much of `text`, which starts with an address, the address takes: up to a space or
/// a character no address holds unescaped, less the punctuation and closing brackets
/// that end the sentence around it.
fn address_len(text: &str) -> usize {
    let mut address = text
        .find(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"' | '`'))
        .map_or(text, |end| &text[..end]);
    loop {
        let trimmed = address.trim_end_matches(TRAILING);
        let trimmed = match trimmed.chars().next_back() {
            Some(close @ (')' | ']' | '}')) if unbalanced(trimmed, close) => {
                &trimmed[..trimmed.len() - 1]
            }
            _ => trimmed,
        };
        if trimmed.len() == address.len() {
            return address.len();
        }
        address = trimmed;
    }
}

/// Whether `address` closes `close` more often than it opens it: then the last one
/// closes a bracket around the address ("(see https://a.example/x)").
fn unbalanced(address: &str, close: char) -> bool {
    let open = match close {
        ')' => '(',
        ']' => '[',
        _ => '{',
    };
    address.matches(close).count() > address.matches(open).count()
}

#[cfg(test)]
mod tests {
    use super::{pieces, Piece::*};

    #[test]
    fn text_without_an_address_is_one_piece() {
        assert_eq!(pieces("hello there"), [Text("hello there")]);
        assert_eq!(pieces(""), []);
    }

    #[test]
    fn an_address_between_words_is_a_link() {
        assert_eq!(
            pieces("see https://example.org/a?b=1#c now"),
            [
                Text("see "),
                Link("https://example.org/a?b=1#c"),
                Text(" now")
            ]
        );
        assert_eq!(
            pieces("http://a.example"),
            [Link("http://a.example")],
            "a line that is only an address"
        );
        assert_eq!(pieces("HTTPS://A.EXAMPLE/"), [Link("HTTPS://A.EXAMPLE/")]);
    }

    #[test]
    fn only_http_and_https_are_links() {
        for text in [
            "javascript:alert(1)",
            "data:text/html,<b>x</b>",
            "ftp://files.example/x",
            "mailto:a@example.org",
        ] {
            assert_eq!(pieces(text), [Text(text)], "{text}");
        }
        assert_eq!(
            pieces("javascript:location='http://evil.example/'"),
            [
                Text("javascript:location='"),
                Link("http://evil.example/"),
                Text("'")
            ],
            "the http address inside is a link of its own, not the script"
        );
    }

    #[test]
    fn trailing_punctuation_ends_the_sentence_not_the_address() {
        assert_eq!(
            pieces("go to https://example.org/page."),
            [Text("go to "), Link("https://example.org/page"), Text(".")]
        );
        assert_eq!(
            pieces("really? https://example.org/?!"),
            [Text("really? "), Link("https://example.org/"), Text("?!")]
        );
        assert_eq!(
            pieces("\"https://example.org/q\","),
            [Text("\""), Link("https://example.org/q"), Text("\",")]
        );
    }

    #[test]
    fn a_closing_bracket_belongs_to_the_address_only_if_it_opened_one() {
        assert_eq!(
            pieces("(see https://example.org/x)"),
            [Text("(see "), Link("https://example.org/x"), Text(")")]
        );
        assert_eq!(
            pieces("https://en.wikipedia.org/wiki/Rust_(language)"),
            [Link("https://en.wikipedia.org/wiki/Rust_(language)")]
        );
        assert_eq!(
            pieces("(https://en.wikipedia.org/wiki/Rust_(language))."),
            [
                Text("("),
                Link("https://en.wikipedia.org/wiki/Rust_(language)"),
                Text(").")
            ]
        );
        assert_eq!(
            pieces("[https://example.org/a]"),
            [Text("["), Link("https://example.org/a"), Text("]")]
        );
    }

    #[test]
    fn markup_characters_end_an_address() {
        assert_eq!(
            pieces("<https://example.org/a>"),
            [Text("<"), Link("https://example.org/a"), Text(">")]
        );
        assert_eq!(
            pieces("https://example.org/\"onmouseover=\"x"),
            [Link("https://example.org/"), Text("\"onmouseover=\"x")]
        );
    }

    #[test]
    fn a_scheme_alone_or_inside_a_word_is_text() {
        assert_eq!(
            pieces("https:// is a prefix"),
            [Text("https:// is a prefix")]
        );
        assert_eq!(pieces("https://."), [Text("https://.")]);
        assert_eq!(
            pieces("xhttps://example.org"),
            [Text("xhttps://example.org")]
        );
    }

    #[test]
    fn several_addresses_and_other_scripts() {
        assert_eq!(
            pieces("ä https://a.example/ü,http://b.example\nok"),
            [
                Text("ä "),
                Link("https://a.example/ü,http://b.example"),
                Text("\nok")
            ]
        );
        assert_eq!(
            pieces("1 https://a.example 2 http://b.example/p 3"),
            [
                Text("1 "),
                Link("https://a.example"),
                Text(" 2 "),
                Link("http://b.example/p"),
                Text(" 3")
            ]
        );
    }
}
