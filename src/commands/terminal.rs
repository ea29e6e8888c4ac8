//! Text a tenant or a receiver controls (call ids, URLs, error messages, tenant names), made safe to print on an
//! operator's terminal: control characters (escape sequences, line breaks, C1 controls) and the bidirectional
//! overrides that reorder what is shown are written as `\u{…}` escapes, so they are seen, never obeyed.

use std::borrow::Cow;

fn is_unsafe(c: char) -> bool {
    c.is_control() || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` as it may be printed.
pub fn shown(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars().map(|c| if is_unsafe(c) { c.escape_unicode().to_string() } else { c.to_string() }).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn escapes_are_shown_not_obeyed() {
        assert_eq!(shown("call-42"), "call-42");
        assert_eq!(shown("a\u{1b}]0;owned\u{7}b"), "a\\u{1b}]0;owned\\u{7}b");
        assert_eq!(shown("x\r\ny\u{9b}2J"), "x\\u{d}\\u{a}y\\u{9b}2J");
        assert_eq!(shown("gpj.\u{202e}exe"), "gpj.\\u{202e}exe");
        assert_eq!(shown("Zoë"), "Zoë", "printable text is untouched");
    }
}
