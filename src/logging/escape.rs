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
//!
//! Fields are written `name=value`, separated by one space, the message first and bare.
//! A value that is empty or holds a space, `=` or `"` is written in double quotes with
//! `"` and `\` escaped by a backslash, so a value can never read as further fields
//! (`conversation="cidX kind=Direct"` is one field). Hand-written: tracing-subscriber's
//! default field formatter writes `%`-formatted values bare, and no maintained crate
//! offers a logfmt `FormatFields`.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::FormatFields;

/// The `name=value` field layout with values quoted when needed and control characters
/// escaped (see the module docs).
#[derive(Default)]
pub(crate) struct EscapedFields;

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut visitor = FieldWriter::default();
        fields.record(&mut visitor);
        writer.write_str(&escape_controls(&visitor.out))
    }
}

/// Collects one record's fields as text (control characters are escaped afterwards).
#[derive(Default)]
struct FieldWriter {
    out: String,
}

impl FieldWriter {
    fn push(&mut self, field: &Field, value: &str) {
        let name = field.name();
        if name.starts_with("log.") {
            return; // `log` crate metadata, shown by the formatter itself.
        }
        if !self.out.is_empty() {
            self.out.push(' ');
        }
        if name == "message" {
            self.out.push_str(value);
            return;
        }
        self.out.push_str(name.strip_prefix("r#").unwrap_or(name));
        self.out.push('=');
        push_value(&mut self.out, value);
    }
}

impl Visit for FieldWriter {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.push(field, &format!("{value:?}"));
    }
}

/// Whether a value must be quoted to stay one field.
fn needs_quotes(value: &str) -> bool {
    value.is_empty() || value.contains([' ', '=', '"'])
}

/// Appends `value`, quoted with `"` and `\` escaped when [`needs_quotes`].
fn push_value(out: &mut String, value: &str) {
    if !needs_quotes(value) {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
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

    fn quoted(value: &str) -> String {
        let mut out = String::new();
        push_value(&mut out, value);
        out
    }

    #[test]
    fn values_with_spaces_equals_or_quotes_are_quoted_and_escaped() {
        assert_eq!(quoted("cidPlain=="), "\"cidPlain==\"");
        assert_eq!(quoted("plain"), "plain");
        assert_eq!(quoted(""), "\"\"");
        assert_eq!(
            quoted(r#"mX conversation=cidV kind="D\"#),
            r#""mX conversation=cidV kind=\"D\\""#
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
