//! What may be shown of a supervised command line: the values of secret-looking flags
//! and the passwords of URLs in it replaced by `***`.
//!
//! A flag is secret-looking when its name contains `key`, `token`, `secret`, `password`
//! or `passwd` (any case). Both `--flag VALUE` and `--flag=VALUE` are masked, also inside
//! a word that is itself a command line (the script of `sh -c '...'`).
//!
//! Invariant: [`redact`] never returns a secret-looking flag's value or a URL password;
//! everything else is kept as written (so a command without such flags is shown
//! unchanged). The command that runs is never redacted: only its display.

use super::cmdline::{scan_words, shell_quote, single_quoted, Operators, Word};

/// What a masked value is shown as.
pub const MASK: &str = "***";

/// Parts of flag names whose values are secrets.
const SECRET_NAME_PARTS: [&str; 5] = ["key", "token", "secret", "password", "passwd"];

/// `text` with every secret-looking flag's value and every URL password masked. A
/// command line that cannot be split is masked whole (it is not run either).
pub fn redact(text: &str) -> String {
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
    if !w.starts_with('-') {
        return None;
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
