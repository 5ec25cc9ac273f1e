//! Masking a secret that a server echoed back in its answer, before the answer's text can
//! reach an error (and so `status`, `healthcheck` and the log).
//!
//! Invariant: after [`mask_secret`], the text holds no run of [`MIN_PIECE_CHARS`] or more
//! consecutive characters of the secret (the whole secret when it is shorter), in any of
//! the forms an echo writes it: as is, as a JSON string escapes it, or with its control
//! characters escaped as our logs write them. Each masked run becomes `***`. So a secret
//! echoed whole, cut short, or split across two fields is masked. Pieces shorter than
//! [`MIN_PIECE_CHARS`], other encodings (base64, upper case) are not recognized.
//!
//! The text is read decoded (after JSON), so `\u0053`-style escapes in the answer cannot
//! hide the secret. The cost is linear in the text: each character position is looked up
//! in a set of the secret's windows, so a large error body is not quadratic work.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

/// The shortest piece of a secret that is masked on its own.
pub(crate) const MIN_PIECE_CHARS: usize = 8;

/// `text` with every piece of `secret` (see the module invariant) replaced by `***`; an
/// empty secret masks nothing.
pub(crate) fn mask_secret<'a>(text: &'a str, secret: &str) -> Cow<'a, str> {
    let forms = forms(secret);
    // Every form's windows, by their length in bytes, found in one pass over the text, so
    // masking one form cannot break up another's occurrence.
    let mut windows: HashMap<usize, HashSet<&[u8]>> = HashMap::new();
    for form in &forms {
        add_windows(form, &mut windows);
    }
    let bytes = text.as_bytes();
    // Byte ranges to mask, merged as found (starts only grow). A window found at a
    // character boundary of `text` ends at one too: it is whole UTF-8 characters.
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (start, _) in text.char_indices() {
        for (len, set) in &windows {
            let end = start + len;
            if !bytes.get(start..end).is_some_and(|w| set.contains(w)) {
                continue;
            }
            match runs.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => runs.push((start, end)),
            }
        }
    }
    if runs.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for (start, end) in runs {
        out.push_str(&text[copied..start]);
        out.push_str("***");
        copied = end;
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// The ways an echo may write `secret`: as is, JSON-escaped, control characters escaped
/// (none when it is empty).
fn forms(secret: &str) -> Vec<String> {
    let json = serde_json::to_string(secret).unwrap_or_default();
    let json = json
        .strip_prefix('"')
        .and_then(|j| j.strip_suffix('"'))
        .unwrap_or_default();
    let controls = crate::control_chars::escape_controls(secret);
    let mut forms: Vec<String> = Vec::with_capacity(3);
    for form in [secret, json, &controls] {
        if !form.is_empty() && !forms.iter().any(|f| f == form) {
            forms.push(form.to_string());
        }
    }
    forms
}

/// Adds `form`'s windows of [`MIN_PIECE_CHARS`] characters (all of it when shorter), as
/// bytes, to `windows`, keyed by their length in bytes.
fn add_windows<'f>(form: &'f str, windows: &mut HashMap<usize, HashSet<&'f [u8]>>) {
    let bounds: Vec<usize> = form
        .char_indices()
        .map(|(i, _)| i)
        .chain([form.len()])
        .collect();
    let chars = bounds.len() - 1;
    let width = MIN_PIECE_CHARS.min(chars);
    for k in 0..=chars - width {
        let window = &form.as_bytes()[bounds[k]..bounds[k + width]];
        windows.entry(window.len()).or_default().insert(window);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "Sx9secretQWERTYzz1234567890abcdefXY";

    #[test]
    fn a_secret_echoed_whole_cut_short_or_split_is_masked() {
        assert_eq!(mask_secret(&format!("echo {SECRET}!"), SECRET), "echo ***!");
        // A truncated echo keeps a prefix; a split one leaves a half in each field.
        assert_eq!(
            mask_secret("\"clientSecret\":\"Sx9secretQWERTY", SECRET),
            "\"clientSecret\":\"***"
        );
        assert_eq!(mask_secret("Sx9secretQWERTYzz", SECRET), "***");
        assert_eq!(mask_secret("1234567890abcdefXY tail", SECRET), "*** tail");
        // Seven characters of it are not a piece; ordinary text is left alone.
        assert_eq!(
            mask_secret("Sx9secr and 1234567", SECRET),
            "Sx9secr and 1234567"
        );
        assert_eq!(mask_secret("text", ""), "text");
    }

    #[test]
    fn a_secret_is_masked_as_json_and_our_logs_escape_it() {
        let secret = "pa\"ss\\word/\u{1b}x";
        let echoed = serde_json::to_string(&serde_json::json!({"message": secret})).unwrap();
        assert_eq!(mask_secret(&echoed, secret), r#"{"message":"***"}"#);
        let escaped = crate::control_chars::escape_controls(secret);
        assert_eq!(mask_secret(&format!("[{escaped}]"), secret), "[***]");
        assert_eq!(mask_secret(&format!("[{secret}]"), secret), "[***]");
    }

    #[test]
    fn short_and_multibyte_secrets_are_masked_at_character_boundaries() {
        assert_eq!(mask_secret("a abc b", "abc"), "a *** b");
        let secret = "密钥密钥密钥密钥密钥";
        assert_eq!(mask_secret("前密钥密钥密钥密钥后", secret), "前***后");
        assert_eq!(mask_secret("前密钥密钥密钥后", secret), "前密钥密钥密钥后");
    }

    proptest::proptest! {
        /// Whatever surrounds it, no window of the secret survives.
        #[test]
        fn no_piece_of_the_secret_survives(
            secret in "[a-zA-Z0-9é中\"]{1,24}",
            before in "[a-z中 ]{0,20}",
            after in "[a-z中 ]{0,20}",
            cut in 0usize..24,
        ) {
            let piece: String = secret.chars().skip(cut).collect();
            let text = format!("{before}{piece}{after}{secret}");
            let masked = mask_secret(&text, &secret);
            let chars: Vec<char> = secret.chars().collect();
            let width = MIN_PIECE_CHARS.min(chars.len());
            for window in chars.windows(width) {
                let window: String = window.iter().collect();
                proptest::prop_assert!(!masked.contains(&window), "{masked:?} holds {window:?}");
            }
        }
    }
}
