//! Field formatting for the text log that keeps every record on one line.
//!
//! Invariant: no field of a text record (the message, every other field of the event and
//! of its spans) can put a control character in the file: they are written as escapes by
//! [`crate::control_chars`]. A value that reaches the log from outside (a conversation
//! id, a model server's error text) therefore cannot start a fake log line or drive a
//! terminal. The JSON format needs none of this: serde_json escapes control characters.
//!
//! Fields are written `name=value`, separated by one space, the message first and bare.
//! A value that is empty or holds a space, `=` or `"` is written in double quotes with
//! `"` and `\` escaped by a backslash, so a value can never read as further fields
//! (`conversation="cidX kind=Direct"` is one field). Hand-written: tracing-subscriber's
//! default field formatter writes `%`-formatted values bare, and no maintained crate
//! offers a logfmt `FormatFields`.

use std::fmt;

use tracing::field::{Field, Visit};

use crate::control_chars::escape_controls;
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
        let mut visitor = FieldWriter {
            // A turn's records are a few hundred bytes: one allocation, not a doubling
            // series as fields are appended.
            out: String::with_capacity(256),
            scratch: String::new(),
        };
        fields.record(&mut visitor);
        writer.write_str(&escape_controls(&visitor.out))
    }
}

/// Collects one record's fields as text (control characters are escaped afterwards).
struct FieldWriter {
    out: String,
    /// A `Debug`/`Display` value as text before it is quoted into `out`, reused across
    /// the record's fields.
    scratch: String,
}

/// Appends one field to a record's text: the message bare, any other as `name=value`.
fn push_field(out: &mut String, field: &Field, value: &str) {
    let name = field.name();
    if name.starts_with("log.") {
        return; // `log` crate metadata, shown by the formatter itself.
    }
    if !out.is_empty() {
        out.push(' ');
    }
    if name == "message" {
        out.push_str(value);
        return;
    }
    out.push_str(name.strip_prefix("r#").unwrap_or(name));
    out.push('=');
    push_value(out, value);
}

impl Visit for FieldWriter {
    fn record_str(&mut self, field: &Field, value: &str) {
        push_field(&mut self.out, field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.scratch.clear();
        // Writing into a String cannot fail.
        let _ = fmt::Write::write_fmt(&mut self.scratch, format_args!("{value:?}"));
        push_field(&mut self.out, field, &self.scratch);
    }
}

/// Whether a value must be quoted to stay one field.
fn needs_quotes(value: &str) -> bool {
    value.is_empty() || value.contains([' ', '=', '"'])
}

/// Appends `value`, quoted with `"` and `\` escaped when [`needs_quotes`].
pub(super) fn push_value(out: &mut String, value: &str) {
    if !needs_quotes(value) {
        out.push_str(value);
        return;
    }
    out.push('"');
    let mut rest = value;
    while let Some(at) = rest.find(['"', '\\']) {
        out.push_str(&rest[..at]);
        out.push('\\');
        out.push_str(&rest[at..at + 1]);
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(quoted(r#"""\中 "#), r#""\"\"\\中 ""#);
        assert_eq!(quoted("中 文"), "\"中 文\"");
    }
}
