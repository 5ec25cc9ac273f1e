//! What may be shown of a supervised command line: the values of secret-looking flags
//! and the passwords of URLs in it replaced by `***`.
//!
//! A flag is secret-looking when its name contains `auth`, `key`, `token`, `secret`,
//! `password`, `passwd` or `credential` (any case). Both `--flag VALUE` and
//! `--flag=VALUE` are masked, and so are an environment assignment `NAME=VALUE` whose
//! NAME contains one of those words (`OPENAI_API_KEY=...`) and the word after `Bearer` or
//! `Basic` (an `Authorization` header's credentials), also inside a word that is itself
//! a command line (the script of `sh -c '...'`, a quoted header). A short flag such as
//! `-k` is not masked: its meaning depends on the program (curl's `-k` is "insecure").
//!
//! Invariant: [`redact`] never returns a secret-looking flag's value or a URL password;
//! everything else is kept as written (so a command without such flags is shown
//! unchanged). The command that runs is never redacted: only its display.

use super::{scan_words, shell_quote, single_quoted, Operators, Word};

use crate::redact_url::MASK;

/// Parts of flag names whose values are secrets.
const SECRET_NAME_PARTS: [&str; 7] = [
    "auth",
    "key",
    "token",
    "secret",
    "password",
    "passwd",
    "credential",
];

/// HTTP authorization schemes whose next word is a credential.
const AUTH_SCHEMES: [&str; 2] = ["bearer", "basic"];

/// `text` with every secret-looking flag's value and every URL password masked. A
/// command line that cannot be split is masked whole (it is not run either).
pub(crate) fn redact(text: &str) -> String {
    redact_words(text, Operators::Refuse).unwrap_or_else(|| MASK.to_string())
}

/// Masks the values in a splittable command line; `None` when it cannot be split.
fn redact_words(text: &str, ops: Operators) -> Option<String> {
    let words = scan_words(text, ops).ok()?;
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut value_expected = false;
    for word in &words {
        let replacement = if std::mem::take(&mut value_expected) && !word.value.starts_with("--") {
            Some(MASK.to_string())
        } else {
            match secret_flag(word) {
                Some(SecretFlag::WithValue(name)) => Some(format!("{}={MASK}", shell_quote(name))),
                Some(SecretFlag::ValueNext) => {
                    value_expected = true;
                    None
                }
                None => redact_inner(&word.value),
            }
        };
        if let Some(r) = replacement {
            out.push_str(&text[copied..word.span.start]);
            out.push_str(&r);
            copied = word.span.end;
        }
    }
    out.push_str(&text[copied..]);
    Some(out)
}

/// A secret-looking flag word.
enum SecretFlag<'a> {
    /// `--flag=VALUE`: the name to keep.
    WithValue(&'a str),
    /// `--flag`: the next word is its value.
    ValueNext,
}

fn secret_flag(word: &Word) -> Option<SecretFlag<'_>> {
    let w = word.value.as_str();
    if AUTH_SCHEMES.iter().any(|s| w.eq_ignore_ascii_case(s)) {
        return Some(SecretFlag::ValueNext);
    }
    if !w.starts_with('-') {
        return secret_assignment(w).map(SecretFlag::WithValue);
    }
    let (name, has_value) = match w.split_once('=') {
        Some((name, _)) => (name, true),
        None => (w, false),
    };
    is_secret_name(name).then_some(if has_value {
        SecretFlag::WithValue(name)
    } else {
        SecretFlag::ValueNext
    })
}

/// The NAME of a `NAME=VALUE` environment assignment whose NAME looks secret.
/// (A word with blanks is a script of its own, looked into by [`redact_inner`].)
fn secret_assignment(word: &str) -> Option<&str> {
    if word.contains(char::is_whitespace) {
        return None;
    }
    let (name, _) = word.split_once('=')?;
    let is_env_name = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    (is_env_name && is_secret_name(name)).then_some(name)
}

fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_NAME_PARTS.iter().any(|part| name.contains(part))
}

/// A word holding a command line of its own (`sh -c 'llama-server --api-key K'`), masked
/// and single-quoted; `None` when nothing in it needed masking. A script that cannot be
/// split but mentions a secret-looking name is masked whole.
fn redact_inner(value: &str) -> Option<String> {
    if !value.contains(char::is_whitespace) {
        let masked = crate::redact_url::redact_url(value);
        return (masked != value).then(|| shell_quote(&masked));
    }
    match redact_words(value, Operators::Literal) {
        Some(r) if r == value => None,
        Some(r) => Some(single_quoted(&r)),
        None => is_secret_name(value).then(|| MASK.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_both_flag_forms_and_keeps_the_rest() {
        assert_eq!(
            redact("llama-server -m /m.gguf --api-key K1 --port 8000"),
            "llama-server -m /m.gguf --api-key *** --port 8000"
        );
        assert_eq!(
            redact("vllm serve --hf-token=K2 --Password 'a b' -np 4"),
            "vllm serve --hf-token=*** --Password *** -np 4"
        );
        assert_eq!(
            redact("x --secret-file \"K3\" --passwd=\"p w\""),
            "x --secret-file *** --passwd=***"
        );
        let plain = "sh -c 'sleep 600 & echo $! > /tmp/x; exec sleep 600'";
        assert_eq!(redact(plain), plain);
        assert_eq!(redact("x --api-key --port 1"), "x --api-key --port 1");
    }

    #[test]
    fn masks_inside_sh_c_scripts() {
        let r = redact("sh -c 'echo $0 > /tmp/f; srv --token K4' --api-key K5");
        assert!(!r.contains("K4") && !r.contains("K5"), "{r}");
        assert!(r.starts_with("sh -c '") && r.contains("--token ***"), "{r}");
        assert_eq!(redact("sh -c \"a --key 'K6\""), "sh -c ***");
    }

    #[test]
    fn url_passwords_are_masked_in_words_and_scripts() {
        assert_eq!(
            redact("srv --upstream http://u:K8@h:1/v1 --port 1"),
            "srv --upstream 'http://u:***@h:1/v1' --port 1"
        );
        let r = redact("sh -c 'srv --upstream http://u:K9@h/v1'");
        assert!(!r.contains("K9") && r.contains("u:***@h"), "{r}");
    }

    /// Red-team F7: `--auth`, secret-looking `NAME=VALUE` assignments and the word after
    /// `Bearer`/`Basic` are masked, at the top level and inside `sh -c` scripts.
    #[test]
    fn auth_flags_env_assignments_and_bearer_values_are_masked() {
        assert_eq!(
            redact("srv --auth AUTHK1 --port 1"),
            "srv --auth *** --port 1"
        );
        assert_eq!(redact("srv --credentials=CK2"), "srv --credentials=***");
        let r = redact(
            "sh -c 'OPENAI_API_KEY=ENVKEY1 srv --port 1; curl -k --header \"Authorization: Bearer HDRKEY3\" http://h/'",
        );
        assert!(!r.contains("ENVKEY1") && !r.contains("HDRKEY3"), "{r}");
        assert!(
            r.contains("OPENAI_API_KEY=***") && r.contains("Bearer ***"),
            "{r}"
        );
        assert!(r.contains("curl -k"), "-k is kept: {r}");
        assert_eq!(
            redact("env DB_PASSWORD=PW4 srv -H 'Authorization: basic B64X'"),
            "env DB_PASSWORD=*** srv -H 'Authorization: basic ***'"
        );
        // Ordinary assignments and words are kept.
        let plain = "env RUST_LOG=debug PORT=8000 srv --model m";
        assert_eq!(redact(plain), plain);
    }

    #[test]
    fn an_unsplittable_line_is_masked_whole() {
        assert_eq!(redact("x --token 'K7"), MASK);
    }

    proptest::proptest! {
        #[test]
        fn a_secret_value_never_shows(
            before in "[a-z ]{0,10}",
            flag in "--(api-key|token|client-secret|password|passwd)",
            secret in "S3CR3T[A-Za-z0-9]{1,8}",
            eq in proptest::bool::ANY,
        ) {
            let sep = if eq { "=" } else { " " };
            let line = format!("prog {before} {flag}{sep}{secret} --port 1");
            let shown = redact(&line);
            proptest::prop_assert!(!shown.contains(&secret), "{}", shown);
        }
    }
}
