//! `${VAR}` interpolation inside string values, its escape, and the secret wrapper.
//!
//! Interpolation happens while deserializing each string value, after YAML parsing, so a
//! secret containing `: ` or `#` can never change the document's structure, and an error
//! carries the key path, line and column of the value (see [`super::de::scalar`]).
//!
//! Invariant: no error produced here contains any part of the value being expanded. A
//! variable name may be shown (it names a variable, it is not a value); an unparsable
//! `${...}` is described by its position only.

use std::cell::RefCell;
use std::fmt;

use serde::{Deserialize, Deserializer};

/// Expands `${NAME}` and `${NAME:-default}` in `raw` using `lookup`. `$${` is a literal
/// `${`; any other `$` is literal too. A missing variable without a default is an error
/// naming it.
pub fn expand(raw: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix("${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let at = raw.len() - rest.len() + pos;
            let character = char_number(raw, at);
            let end = body.find('}').ok_or(ExpandError::Unclosed { character })?;
            out.push_str(&substitute(&body[..end], lookup).map_err(|e| e.at(character))?);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Writes `literal` so that [`expand`] gives it back unchanged: every `${` becomes `$${`.
///
/// Invariant (tested): `expand(&escape(s), lookup) == Ok(s)` for every `s` and `lookup`.
pub fn escape(literal: &str) -> String {
    literal.replace("${", "$${")
}

/// Why a value could not be expanded. `character` is the 1-based position of the `${`;
/// a variable name may be shown, the value's text never.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    #[error(
        "unclosed \"${{\" at character {character} of the value (write \"$${{\" for a literal \"${{\")"
    )]
    Unclosed { character: usize },
    #[error(
        "the \"${{...}}\" at character {character} of the value does not hold a variable name (letters, digits and _; write \"$${{\" for a literal \"${{\")"
    )]
    BadName { character: usize },
    #[error("environment variable {name} is not set")]
    Unset { name: String },
}

/// Why one `${...}` could not be substituted.
enum SubstError {
    /// The text between the braces is not `NAME` or `NAME:-default`.
    BadName,
    /// The variable is not set and there is no default.
    Unset(String),
}

impl SubstError {
    /// The error for a `${` at 1-based `character` of the value.
    fn at(self, character: usize) -> ExpandError {
        match self {
            SubstError::BadName => ExpandError::BadName { character },
            SubstError::Unset(name) => ExpandError::Unset { name },
        }
    }
}

/// The value of one `${inner}`: the variable, else the default (also for an empty value).
fn substitute(inner: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, SubstError> {
    let (name, default) = match inner.split_once(":-") {
        Some((n, d)) => (n, Some(d)),
        None => (inner, None),
    };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(SubstError::BadName);
    }
    match (lookup(name), default) {
        (Some(v), Some(d)) if v.is_empty() => Ok(d.to_string()),
        (Some(v), _) => Ok(v),
        (None, Some(d)) => Ok(d.to_string()),
        (None, None) if record_unset(name) => Ok(String::new()),
        (None, None) => Err(SubstError::Unset(name.to_string())),
    }
}

thread_local! {
    /// While [`collect_unset`] runs on this thread: the unset variables met so far (each
    /// expands to nothing instead of failing). Otherwise `None`: an unset variable fails.
    static UNSET: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

/// Records `name` as unset when collecting; false (so it is an error) otherwise.
fn record_unset(name: &str) -> bool {
    UNSET.with_borrow_mut(|u| u.as_mut().map(|u| u.push(name.to_string())).is_some())
}

fn unset_count() -> Option<usize> {
    UNSET.with_borrow(|u| u.as_ref().map(Vec::len))
}

/// Runs `f` with unset variables collected instead of failing; gives back `f`'s result and
/// the distinct unset names in the order met. Used to report every missing variable in one
/// run, not one per attempt.
pub(super) fn collect_unset<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
    /// Back to failing on unset variables even if `f` unwinds.
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            UNSET.with_borrow_mut(|u| *u = None);
        }
    }
    UNSET.with_borrow_mut(|u| *u = Some(Vec::new()));
    let reset = Reset;
    let out = f();
    let mut names = UNSET.with_borrow_mut(Option::take).unwrap_or_default();
    drop(reset);
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    (out, names)
}

/// [`expand`] against the process environment, for the loader. `Ok(None)` means a variable
/// was unset while [`collect_unset`] runs: the value means nothing and must not be checked.
pub(super) fn expand_for_load(raw: &str) -> Result<Option<String>, ExpandError> {
    let before = unset_count();
    let value = expand(raw, &process_env)?;
    Ok((unset_count() == before).then_some(value))
}

/// The 1-based character number of byte offset `at` in `raw`.
fn char_number(raw: &str, at: usize) -> usize {
    raw[..at].chars().count() + 1
}

/// The process environment, for interpolation at load time.
fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// A secret value (API key, client secret). Interpolated like any string; its `Debug` and
/// `Display` never show the value, so it cannot leak through a log line or a status dump.
/// A malformed secret is reported by key, line and column only.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The real value, for the one place that must send it (an HTTP header or body).
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(crate::redact_url::MASK)
    }
}

/// Written as `***`, like `Display`: a serialized config never carries the value.
impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(crate::redact_url::MASK)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::de::interpolated(d).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "KEY" => Some("s3cr3t".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_variables_defaults_and_escapes() {
        assert_eq!(expand("${KEY}", &env).unwrap(), "s3cr3t");
        assert_eq!(expand("a-${KEY}-b", &env).unwrap(), "a-s3cr3t-b");
        assert_eq!(expand("${NOPE:-dflt}", &env).unwrap(), "dflt");
        assert_eq!(expand("${EMPTY:-dflt}", &env).unwrap(), "dflt");
        assert_eq!(expand("${EMPTY}", &env).unwrap(), "");
        assert_eq!(expand("cost $$5 $x $", &env).unwrap(), "cost $$5 $x $");
        assert_eq!(expand("ab$${HOME}cd", &env).unwrap(), "ab${HOME}cd");
        assert_eq!(expand("$$${KEY}", &env).unwrap(), "$${KEY}");
    }

    #[test]
    fn errors_name_the_problem_and_never_the_value() {
        let e = expand("${NOPE}", &env).unwrap_err().to_string();
        assert!(e.contains("NOPE is not set"), "{e}");
        let e = expand("SECRETzz9${Qx7", &env).unwrap_err().to_string();
        assert!(e.contains("unclosed") && e.contains("character 10"), "{e}");
        assert!(!e.contains("SECRET") && !e.contains("Qx7"), "{e}");
        let e = expand("pw${a b}tail", &env).unwrap_err().to_string();
        assert!(
            e.contains("variable name") && e.contains("character 3"),
            "{e}"
        );
        assert!(!e.contains("a b") && !e.contains("tail"), "{e}");
    }

    #[test]
    fn collecting_turns_unset_variables_into_a_list() {
        let (out, names) = collect_unset(|| {
            [
                expand("${NOPE_A}", &env),
                expand("${NOPE_B:-d}", &env),
                expand("${NOPE_C}-${NOPE_A}", &env),
            ]
        });
        assert_eq!(names, ["NOPE_A", "NOPE_C"]);
        assert_eq!(out[1].as_deref(), Ok("d"));
        assert!(
            expand("${NOPE_A}", &env).is_err(),
            "strict again after collecting"
        );
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?} {s}").contains("hunter2"));
    }

    proptest::proptest! {
        #[test]
        fn escaped_text_expands_to_itself(s in "[a-z$\\{\\}:\\-]{0,24}") {
            proptest::prop_assert_eq!(expand(&escape(&s), &env), Ok(s));
        }
    }
}
