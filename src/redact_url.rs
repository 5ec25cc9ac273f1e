//! Masking credentials in URLs before they are shown.
//!
//! A URL may carry credentials in its user-info (`http://user:PASS@host/v1`; reqwest
//! sends them as basic auth). [`redact_url`] shows such a URL as
//! `http://user:***@host/v1`: the password is masked, the user name kept so the operator
//! can tell which account is configured. User-info without a password is masked whole
//! (`http://***@host/`), since that form is how tokens are usually passed.
//!
//! Invariant: for every `scheme://` in the text, nothing between it and the end of that
//! URL's authority (the first `/`, `?`, `#` or whitespace) that precedes the last `@` is
//! kept except the user name before a `:` (characters that cannot be in a user-info,
//! such as `"` or `<`, also end it, so a URL quoted in JSON is found). It works on any text (an error message that
//! quotes a URL included), so one call covers a whole line. Hand-written rather than a
//! URL parser's round trip: parsing would reject or normalise the text around the URL.

use std::borrow::Cow;

/// What a masked secret is shown as.
const MASK: &str = "***";

/// `text` with the user-info password of every URL in it masked.
pub(crate) fn redact_url(text: &str) -> Cow<'_, str> {
    if !text.contains("://") || !text.contains('@') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let authority_start = at + 3;
        out.push_str(&rest[..authority_start]);
        rest = &rest[authority_start..];
        let authority_len = rest
            .find(|c: char| {
                matches!(
                    c,
                    '/' | '?' | '#' | '"' | '<' | '>' | '\\' | '`' | '{' | '}' | '|' | '^'
                ) || c.is_whitespace()
            })
            .unwrap_or(rest.len());
        let authority = &rest[..authority_len];
        if let Some(user_info_len) = authority.rfind('@') {
            match authority[..user_info_len].split_once(':') {
                Some((user, _password)) => {
                    out.push_str(user);
                    out.push(':');
                    out.push_str(MASK);
                }
                None => out.push_str(MASK),
            }
            rest = &rest[user_info_len..];
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked_and_the_rest_is_kept() {
        assert_eq!(
            redact_url("http://user:s3cret@127.0.0.1:8000/v1"),
            "http://user:***@127.0.0.1:8000/v1"
        );
        assert_eq!(
            redact_url("try: curl https://tok@h/v1/models?x=a@b"),
            "try: curl https://***@h/v1/models?x=a@b"
        );
        assert_eq!(
            redact_url("GET http://a:b:c@h:1 failed; then ws://u:p@x#f@y"),
            "GET http://a:***@h:1 failed; then ws://u:***@x#f@y"
        );
        assert_eq!(
            redact_url(r#"{"url":"http://u:p@h","detail":"a@b"}"#),
            r#"{"url":"http://u:***@h","detail":"a@b"}"#
        );
        for plain in [
            "http://127.0.0.1:8000/v1",
            "mail me@x",
            "no url",
            "http://h/a@b",
        ] {
            assert_eq!(redact_url(plain), plain);
        }
    }

    proptest::proptest! {
        #[test]
        fn a_password_never_shows(
            before in "[ -~]{0,12}",
            user in "[a-z]{0,6}",
            password in "PW[A-Za-z0-9:@%]{1,10}",
            host in "[a-z0-9.]{1,10}(:[0-9]{1,5})?",
            after in "(/[ -~]{0,12})?",
        ) {
            let line = format!("{before}http://{user}:{password}@{host}{after}");
            let shown = redact_url(&line);
            proptest::prop_assert!(!shown.contains(&password), "{}", shown);
        }
    }
}
