//! Field formatting for the text log that keeps every record on one line.
//!
//! Invariant: no field of a text record (the message, every other field of the event and
//! of its spans) can put a control character in the file: C0 controls (line feed,
//! carriage return, tab, ESC...), DEL, C1 controls (U+0085 NEL included) and the Unicode
//! line and paragraph separators (U+2028, U+2029) are written as escapes (`\n`, `\r`,
//! `\t`, `\u{1b}`). A value that reaches the log from outside (a conversation id, a model
//! server's error text) therefore cannot start a fake log line or drive a terminal.
//! Backslashes are kept as they are: the escapes make injection impossible, not the text
//! reversible. The JSON format needs none of this: serde_json escapes control characters.

use std::borrow::Cow;
use std::fmt::Write as _;

use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::fmt::FormatFields;

/// The default `name=value` field layout with control characters escaped.
#[derive(Default)]
pub(crate) struct EscapedFields {
    inner: DefaultFields,
}

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> std::fmt::Result {
        let mut plain = String::new();
        self.inner.format_fields(Writer::new(&mut plain), fields)?;
        writer.write_str(&escape_controls(&plain))
    }
}

/// Whether `c` may not appear raw in a log line.
fn is_unsafe(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
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
            escape_controls("a\nb\rc\td\u{1b}[2Je\u{7f}f\u{85}g\u{2028}h\u{2029}i\0"),
            "a\\nb\\rc\\td\\u{1b}[2Je\\u{7f}f\\u{85}g\\u{2028}h\\u{2029}i\\u{0}"
        );
    }

    proptest::proptest! {
        #[test]
        fn no_escaped_text_holds_a_control_character(text in "\\PC*|[\\x00-\\x1f\\u{80}-\\u{9f}\\u{2028}\\u{2029}a]{0,40}") {
            let escaped = escape_controls(&text);
            proptest::prop_assert!(!escaped.contains(is_unsafe), "{:?}", escaped);
        }
    }
}
