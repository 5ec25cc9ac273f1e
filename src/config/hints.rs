//! Turns the YAML loader's terse messages into ones a newcomer can act on.
//!
//! Invariant: a hint only adds words to the loader's own message (which already names the
//! key, line and column); it never quotes a value, so it cannot leak a secret.

/// `message` with a hint appended when one applies: a tab where indentation was expected,
/// or the closest known key for an unknown one. `text` is the document, `byte` the
/// loader's error offset into it (if it has one).
pub(super) fn with_hint(message: String, text: &str, byte: Option<usize>) -> String {
    if let Some(line) = byte.and_then(|at| tab_line(text, at)) {
        return format!(
            "{message} (line {line} is indented with a tab character: YAML indentation must \
             use spaces only)"
        );
    }
    match did_you_mean(&message) {
        Some(known) => format!("{message} (did you mean `{known}`?)"),
        None => message,
    }
}

/// The 1-based number of the line holding byte `at`, when that line's leading whitespace
/// holds a tab (the scanner fails at or after the tab, so the whole indent is checked).
fn tab_line(text: &str, at: usize) -> Option<usize> {
    let at = at.min(text.len());
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].split('\n').next().unwrap_or("");
    let indent = &line[..line.len() - line.trim_start_matches([' ', '\t']).len()];
    indent
        .contains('\t')
        .then(|| text[..start].matches('\n').count() + 1)
}

/// For serde's "unknown field `x`, expected one of `a`, `b`" (or "expected `a` or `b`"),
/// the expected name most like `x`, if any is close enough.
fn did_you_mean(message: &str) -> Option<&str> {
    let rest = message.split("unknown field `").nth(1)?;
    let (unknown, expected) = rest.split_once('`')?;
    let expected = expected.split_once("expected")?.1;
    crate::suggest::closest(unknown, expected.split('`').skip(1).step_by(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_the_closest_known_key_only_when_close() {
        let m = "unknown field `timeuot`, expected one of `kind`, `base_url`, `timeout_ms`";
        assert_eq!(did_you_mean(m), Some("timeout_ms"));
        assert_eq!(
            did_you_mean("unknown field `modle`, expected `model` or `kind`"),
            Some("model")
        );
        assert_eq!(
            did_you_mean("unknown field `colour`, expected `kind` or `base_url`"),
            None
        );
        assert_eq!(did_you_mean("invalid type: string"), None);
    }

    #[test]
    fn finds_a_tab_in_the_indent_of_the_failing_line() {
        let text = "a:\n  b: 1\n\tc: 2\n";
        assert_eq!(tab_line(text, text.find('\t').unwrap()), Some(3));
        assert_eq!(tab_line(text, text.find('c').unwrap()), Some(3));
        assert_eq!(tab_line(text, text.find('b').unwrap()), None);
        assert_eq!(tab_line("x: \"a\tb\"", 5), None, "a tab inside a value");
    }
}
