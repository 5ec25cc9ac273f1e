//! Takes the file's values out of the loader's messages. serde words a value of the wrong
//! type or an unknown enum value by quoting it (`invalid type: string "hunter2", expected
//! u64`, ``unknown variant `hunter2`, expected one of ...``), and a value in a config may
//! be a secret (or, for a file that is not a config at all, `/etc/passwd`, its whole
//! text). The messages keep the key, line, column and what was expected; what was given
//! is named by its type only.
//!
//! Hand-written: serde_yaml hands its errors over as text only (no structured
//! `Unexpected`), and no crate rewrites them; the shapes matched are serde's own
//! `Unexpected` and `unknown_variant` wordings.

/// Quoted values, by the words serde puts before them, and what replaces each: the value
/// goes, its type stays.
const BACKTICKED: [(&str, &str); 5] = [
    ("unknown variant `", "unknown value"),
    ("integer `", "an integer"),
    ("floating point `", "a number"),
    ("boolean `", "a boolean"),
    ("character `", "a character"),
];

/// `message` with every value serde quoted in it replaced by the value's type.
pub(super) fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some((at, len, replacement)) = next_value(rest) {
        out.push_str(&rest[..at]);
        out.push_str(replacement);
        rest = &rest[at + len..];
    }
    out.push_str(rest);
    out
}

/// The first quoted value in `text`: where its words start, how long words and value
/// are together, and what replaces them.
fn next_value(text: &str) -> Option<(usize, usize, &'static str)> {
    let string = text.find("string \"").map(|at| {
        let value = &text[at + "string \"".len()..];
        (at, "string \"".len() + debug_string_len(value), "a string")
    });
    let backticked = BACKTICKED.iter().filter_map(|(words, replacement)| {
        let at = text.find(words)?;
        let value = &text[at + words.len()..];
        let len = value.find('`').map_or(value.len(), |end| end + 1);
        Some((at, words.len() + len, *replacement))
    });
    string
        .into_iter()
        .chain(backticked)
        .min_by_key(|(at, _, _)| *at)
}

/// The length of a `{:?}`-quoted string's body up to and including its closing quote
/// (a `\"` inside is escaped); the whole text when it is not closed.
fn debug_string_len(value: &str) -> usize {
    let mut escaped = false;
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return i + 1,
            _ => {}
        }
    }
    value.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_values_of_every_shape_are_replaced_by_their_type() {
        let cases = [
            (
                r#"line 1, column 1: invalid type: string "DINGTALK_CLIENT_SECRET=hunter2", expected struct Config"#,
                "line 1, column 1: invalid type: a string, expected struct Config",
            ),
            (
                r#"models.m.timeout_ms: invalid type: string "hun\"ter2", expected u64"#,
                "models.m.timeout_ms: invalid type: a string, expected u64",
            ),
            (
                "access.mode: unknown variant `hunter2`, expected one of `open`, `allowlist`",
                "access.mode: unknown value, expected one of `open`, `allowlist`",
            ),
            (
                "x: invalid value: integer `4242`, expected a port; y: floating point `1.5`",
                "x: invalid value: an integer, expected a port; y: a number",
            ),
            (
                "z: invalid type: boolean `true`",
                "z: invalid type: a boolean",
            ),
            ("unclosed: string \"hunter2", "unclosed: a string"),
        ];
        for (given, wanted) in cases {
            assert_eq!(without_values(given), wanted);
            assert!(!without_values(given).contains("hunter2"));
        }
    }

    #[test]
    fn messages_without_values_stay_as_they_are() {
        let m = "line 3, column 5: unknown field `mode`, expected one of `models`, `routing`";
        assert_eq!(without_values(m), m);
    }
}
