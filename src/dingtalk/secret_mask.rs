//! Masking a secret that a server echoed back in its answer, before the answer's text can
//! reach an error (and so `status`, `healthcheck` and the log).
//!
//! Invariant: the text [`masked_head`] returns holds no run of [`MIN_PIECE_CHARS`] or more
//! consecutive characters of the secret (the whole secret when it is shorter), in any of
//! the forms an echo writes it: as is, as a JSON string escapes it, with its characters
//! as `\uXXXX` escapes, or with its control characters escaped as our logs write them.
//! Each masked run becomes `***`, and the marker does not rebuild a secret that holds it
//! (one of three characters or fewer aside). So a secret
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

/// At least the first `keep` characters of `text` with every piece of `secret` (see the
/// module invariant) replaced by `***` (an empty secret masks nothing), and whether anything
/// was left out. Only a head of `keep` plus twice the secret's longest
/// form is masked, so a huge text costs no more than a short one; from a head that cut the
/// text, the last longest form's length is dropped too, as a piece of the secret the cut
/// split could lie there.
pub(crate) fn masked_head<'a>(text: &'a str, secret: &str, keep: usize) -> (Cow<'a, str>, bool) {
    let forms = forms(secret);
    let longest = forms.iter().map(|f| f.chars().count()).max().unwrap_or(0);
    let Some((head_end, _)) = text.char_indices().nth(keep + 2 * longest) else {
        return (mask_forms(text, &forms), false);
    };
    let mut masked = mask_forms(&text[..head_end], &forms).into_owned();
    let chars = masked.chars().count();
    let end = masked
        .char_indices()
        .nth(chars.saturating_sub(longest))
        .map_or(masked.len(), |(i, _)| i);
    masked.truncate(end);
    (Cow::Owned(masked), true)
}

/// `text` with every piece of any of `forms` masked (see [`masked_head`]).
fn mask_forms<'a>(text: &'a str, forms: &[String]) -> Cow<'a, str> {
    // Every form's windows, by their length in bytes, found in one pass over the text, so
    // masking one form cannot break up another's occurrence.
    let mut windows: HashMap<usize, HashSet<&[u8]>> = HashMap::new();
    for form in forms {
        add_windows(form, &mut windows);
    }
    // A secret that holds `***` could be rebuilt by the marker from the pieces around a
    // masked run: mask again while anything is found (each pass shortens the text unless
    // the secret is three characters or fewer, hence the bound).
    let mut masked = Cow::Borrowed(text);
    for _ in 0..MASK_PASSES {
        match mask_windows(&masked, &windows) {
            Some(again) => masked = Cow::Owned(again),
            None => break,
        }
    }
    masked
}

/// The most passes [`masked_head`] makes over a text.
const MASK_PASSES: usize = 4;

/// `text` with every run of the given windows replaced by `***`; `None` when none occurs.
fn mask_windows(text: &str, windows: &HashMap<usize, HashSet<&[u8]>>) -> Option<String> {
    let bytes = text.as_bytes();
    // Byte ranges to mask, merged as found (starts only grow). A window found at a
    // character boundary of `text` ends at one too: it is whole UTF-8 characters.
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (start, _) in text.char_indices() {
        for (len, set) in windows {
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
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for (start, end) in runs {
        out.push_str(&text[copied..start]);
        out.push_str(crate::redact_url::MASK);
        copied = end;
    }
    out.push_str(&text[copied..]);
    Some(out)
}

/// The ways an echo may write `secret` (none when it is empty): as is; as a JSON string
/// writes it (serde's rules); with every character but ASCII letters and digits as JSON's
/// `\uXXXX`, in lower- and upper-case hex, as HTML-safe encoders write (.NET's; Go's for
/// `<>&`; Python's default for every non-ASCII character): a window is 8 characters of
/// the escaped text, so an encoder that escapes fewer characters is matched around them;
/// and as our logs escape it.
fn forms(secret: &str) -> Vec<String> {
    let json = serde_json::to_string(secret).unwrap_or_default();
    let json = json
        .strip_prefix('"')
        .and_then(|j| j.strip_suffix('"'))
        .unwrap_or_default();
    let controls = crate::control_chars::escape_controls(secret);
    let escaped = |hex| unicode_escaped(secret, |c| !c.is_ascii_alphanumeric(), hex);
    let mut forms: Vec<String> = Vec::with_capacity(5);
    for form in [
        secret.to_string(),
        json.to_string(),
        controls.into_owned(),
        escaped(Hex::Lower),
        escaped(Hex::Upper),
    ] {
        if !form.is_empty() && !forms.contains(&form) {
            forms.push(form);
        }
    }
    forms
}

/// The case of the hex digits in a `\uXXXX` escape.
#[derive(Clone, Copy)]
enum Hex {
    Lower,
    Upper,
}

/// `text` with each character for which `escape` holds written as JSON's `\uXXXX` (a
/// character outside the BMP as its UTF-16 surrogate pair).
fn unicode_escaped(text: &str, escape: impl Fn(char) -> bool, hex: Hex) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if !escape(c) {
            out.push(c);
            continue;
        }
        let mut units = [0u16; 2];
        for unit in c.encode_utf16(&mut units) {
            match hex {
                Hex::Lower => out.push_str(&format!("\\u{unit:04x}")),
                Hex::Upper => out.push_str(&format!("\\u{unit:04X}")),
            }
        }
    }
    out
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

    /// All of `text`, masked.
    fn mask_secret<'a>(text: &'a str, secret: &str) -> Cow<'a, str> {
        let (masked, cut) = masked_head(text, secret, 1 << 40);
        assert!(!cut);
        masked
    }

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

    /// Encoders that write characters as `\uXXXX`: Python's default (every non-ASCII
    /// one), HTML-safe ones (Go's `<>&`, .NET's punctuation, upper-case hex).
    #[test]
    fn a_secret_is_masked_in_unicode_escapes() {
        let secret = "密钥测试中文字符串安全";
        let python =
            "\\u5bc6\\u94a5\\u6d4b\\u8bd5\\u4e2d\\u6587\\u5b57\\u7b26\\u4e32\\u5b89\\u5168";
        assert_eq!(mask_secret(&format!("[{python}]"), secret), "[***]");
        let go = "a<b>c&d<e>f&g";
        let escaped = "a\\u003cb\\u003ec\\u0026d\\u003ce\\u003ef\\u0026g";
        assert_eq!(mask_secret(&format!("[{escaped}]"), go), "[***]");
        let dotnet = "Sx9+secret+QW";
        assert_eq!(mask_secret("[Sx9\\u002Bsecret\\u002BQW]", dotnet), "[***]");
    }

    /// A head is masked as the whole text is; from a cut one, nothing of a secret the cut
    /// split is shown, and a text far longer than the head is not masked past it.
    #[test]
    fn a_masked_head_shows_no_piece_the_cut_split() {
        let text = format!("a {SECRET} b");
        let (short, cut) = masked_head(&text, SECRET, 300);
        assert_eq!((short.as_ref(), cut), ("a *** b", false));
        let longest = forms(SECRET)
            .iter()
            .map(|f| f.chars().count())
            .max()
            .unwrap();
        let head = 300 + 2 * longest;
        for before in head - SECRET.len()..head {
            let text = format!("{}{SECRET}{}", "-".repeat(before), "-".repeat(1_000_000));
            let (shown, cut) = masked_head(&text, SECRET, 300);
            assert!(cut, "{before}");
            assert!(shown.chars().count() >= 300, "{before}: {}", shown.len());
            assert!(
                shown.chars().all(|c| c == '-' || c == '*'),
                "{before}: {shown}"
            );
        }
    }

    /// The marker cannot rebuild a secret that holds it from the pieces around a run.
    #[test]
    fn a_secret_holding_the_marker_is_not_rebuilt() {
        let secret = "Ab3dE***Fg5hI";
        let text = format!("Ab3dE{secret}Fg5hI");
        let masked = mask_secret(&text, secret);
        assert!(!masked.contains(secret), "{masked}");
        assert_eq!(masked, "***");
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
