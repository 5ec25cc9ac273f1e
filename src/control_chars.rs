//! Showing untrusted text safely on one line: every control character is written as an
//! escape, so the text cannot start a fake line or drive a terminal.
//!
//! Invariant: [`escape_controls`] leaves no character for which [`is_unsafe`] holds: C0
//! controls (line feed, carriage return, tab, ESC...), DEL, C1 controls (U+0085 NEL
//! included), the Unicode line and paragraph separators (U+2028, U+2029) and the
//! bidirectional controls (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069, which
//! can make a terminal show a line in another order than it reads) become `\n`, `\r`,
//! `\t` or `\u{1b}`-style escapes. Backslashes are kept as they are: the
//! escapes make injection impossible, not the text reversible. Used by the text log
//! (`logging`), config errors (`config`, which quote the keys a file holds) and the
//! CLI's tables.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` may not appear raw in a line of output.
pub(crate) fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `text` with every control character (see the module invariant) escaped.
pub(crate) fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.contains(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unsafe(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_breaking_or_terminal_character_is_escaped() {
        assert_eq!(escape_controls("plain text, 中文"), "plain text, 中文");
        assert_eq!(
            escape_controls("a\u{202e}b\u{2066}c\u{200f}d"),
            "a\\u{202e}b\\u{2066}c\\u{200f}d"
        );
        assert_eq!(
            escape_controls("a\nb\rc\td\u{1b}[2Je\u{7f}f\u{85}g\u{2028}h\u{2029}i\0"),
            "a\\nb\\rc\\td\\u{1b}[2Je\\u{7f}f\\u{85}g\\u{2028}h\\u{2029}i\\u{0}"
        );
    }

    proptest::proptest! {
        #[test]
        fn no_escaped_text_holds_a_control_character(text in "\\PC*|[\\x00-\\x1f\\u{80}-\\u{9f}\\u{2028}\\u{2029}\\u{202a}-\\u{202e}\\u{2066}-\\u{2069}\\u{200e}\\u{200f}\\u{61c}a]{0,40}") {
            let escaped = escape_controls(&text);
            proptest::prop_assert!(!escaped.contains(is_unsafe), "{:?}", escaped);
        }
    }
}
