//! `${VAR}` interpolation inside string values, and the secret wrapper.
//!
//! Interpolation happens while deserializing each string value, after YAML parsing, so a
//! secret containing `: ` or `#` can never change the document's structure, and an error
//! carries the line and column of the value that named the missing variable.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// Expands `${NAME}` and `${NAME:-default}` in `raw` using `lookup`. `$$` is a literal `$`.
/// A missing variable without a default is an error naming it.
pub fn expand(raw: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| format!("unclosed \"${{\" in {raw:?}"))?;
            let inner = &body[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "invalid environment variable name {name:?} in ${{...}}"
                ));
            }
            match (lookup(name), default) {
                (Some(v), _) if !v.is_empty() || default.is_none() => out.push_str(&v),
                (_, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!("environment variable {name} is not set"));
                }
                (Some(v), None) => out.push_str(&v),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Deserializes a string with `${VAR}` expanded from the process environment.
pub fn interpolated<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let raw = String::deserialize(d)?;
    expand(&raw, &process_env).map_err(serde::de::Error::custom)
}

/// Same as [`interpolated`] for optional values.
pub fn interpolated_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(raw) => expand(&raw, &process_env)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

/// A secret value (API key, client secret). Interpolated like any string; its `Debug` and
/// `Display` never show the value, so it cannot leak through a log line or a status dump.
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
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        interpolated(d).map(Secret)
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
    fn expands_variables_defaults_and_dollars() {
        assert_eq!(expand("${KEY}", &env).unwrap(), "s3cr3t");
        assert_eq!(expand("a-${KEY}-b", &env).unwrap(), "a-s3cr3t-b");
        assert_eq!(expand("${NOPE:-dflt}", &env).unwrap(), "dflt");
        assert_eq!(expand("${EMPTY:-dflt}", &env).unwrap(), "dflt");
        assert_eq!(expand("${EMPTY}", &env).unwrap(), "");
        assert_eq!(expand("cost $$5 $x", &env).unwrap(), "cost $5 $x");
    }

    #[test]
    fn missing_and_malformed_are_errors_that_name_the_problem() {
        assert!(expand("${NOPE}", &env)
            .unwrap_err()
            .contains("NOPE is not set"));
        assert!(expand("${KEY", &env).unwrap_err().contains("unclosed"));
        assert!(expand("${A-B}", &env).unwrap_err().contains("invalid"));
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?} {s}").contains("hunter2"));
    }
}
