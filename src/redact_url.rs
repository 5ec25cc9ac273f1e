//! Masking credentials in URLs before they are shown.
//!
//! A URL may carry credentials in its user-info (`http://user:PASS@host/v1`; reqwest
//! sends them as basic auth) or in its query string (`/health?token=T`, `/v1?key=K`).
//! [`redact_url`] shows such a URL as `http://user:***@host/v1?token=***`:
//! - the user-info password is masked, the user name kept so the operator can tell which
//!   account is configured; user-info without a password is masked whole
//!   (`http://***@host/`), since that form is how tokens are usually passed;
//! - a query value is masked when its key looks like a secret: the key, lower-cased,
//!   contains one of [`SECRET_KEY_PARTS`] (`key`, `token`, `secret`, `pass`, `auth`, `sig`,
//!   `credential`...). Other query values are kept (`?model=x&timeout=5` stays readable),
//!   but a URL nested in one is itself redacted;
//! - a fragment (`#...`) is masked whole (`#***`): it is never sent to the server and may
//!   hold a token.
//!
//! Invariant: for every `scheme://` in the text, nothing between it and the end of that
//! URL's authority (the first `/`, `?`, `#` or whitespace) that precedes the last `@` is
//! kept except the user name before a `:`, and no value of a secret-looking query key
//! nor any fragment is kept (a URL ends at whitespace or a character that cannot be in a URL, such as `"` or
//! `<`, so a URL quoted in JSON is found). It works on any text (an error message that
//! quotes a URL included), so one call covers a whole line. Hand-written rather than a
//! URL parser's round trip: parsing would reject or normalise the text around the URL.

use std::borrow::Cow;

/// What a masked secret is shown as, everywhere: URLs, command lines, config values and
/// secrets a server echoed.
pub(crate) const MASK: &str = "***";

/// Parts of a query key that mark its value as a secret (matched lower-cased, anywhere in
/// the key, so `api_key`, `access_token`, `X-Amz-Signature` and `passwd` all match).
const SECRET_KEY_PARTS: &[&str] = &[
    "key",
    "token",
    "secret",
    "pass",
    "pwd",
    "auth",
    "sig",
    "credential",
    "session",
    "cookie",
    "bearer",
];

/// Whether a character ends a URL embedded in text.
fn ends_url(c: char) -> bool {
    matches!(c, '"' | '<' | '>' | '\\' | '`' | '{' | '}' | '|' | '^') || c.is_whitespace()
}

/// Whether a query value under `key` is masked.
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_KEY_PARTS.iter().any(|part| key.contains(part))
}

/// `text` with the user-info password and the secret query values of every URL in it
/// masked.
pub(crate) fn redact_url(text: &str) -> Cow<'_, str> {
    if !text.contains("://") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let authority_start = at + 3;
        out.push_str(&rest[..authority_start]);
        rest = &rest[authority_start..];
        let url_len = rest.find(ends_url).unwrap_or(rest.len());
        let url = &rest[..url_len];
        let authority_len = url.find(['/', '?', '#']).unwrap_or(url.len());
        let authority = &url[..authority_len];
        match authority.rfind('@') {
            Some(user_info_len) => {
                match authority[..user_info_len].split_once(':') {
                    Some((user, _password)) => {
                        out.push_str(user);
                        out.push(':');
                        out.push_str(MASK);
                    }
                    None => out.push_str(MASK),
                }
                out.push_str(&authority[user_info_len..]);
            }
            None => out.push_str(authority),
        }
        push_redacted_tail(&mut out, &url[authority_len..]);
        rest = &rest[url_len..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Pushes a URL's path, query and fragment with secret query values and the whole
/// fragment masked; the path and kept values are themselves redacted (a URL may be
/// nested in them).
fn push_redacted_tail(out: &mut String, tail: &str) {
    let (before_fragment, fragment) = match tail.find('#') {
        Some(i) => tail.split_at(i),
        None => (tail, ""),
    };
    let (path, query) = match before_fragment.find('?') {
        Some(i) => (&before_fragment[..i], Some(&before_fragment[i + 1..])),
        None => (before_fragment, None),
    };
    out.push_str(&redact_url(path));
    if let Some(query) = query {
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((key, _value)) if is_secret_key(key) => {
                    out.push_str(key);
                    out.push('=');
                    out.push_str(MASK);
                }
                _ => out.push_str(&redact_url(pair)),
            }
        }
    }
    // A fragment is never sent to the server, so it tells the reader nothing, and it is
    // where a token ends up in an OAuth-style callback (`#access_token=...`): masked whole.
    if !fragment.is_empty() {
        out.push('#');
        out.push_str(MASK);
    }
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
            "GET http://a:***@h:1 failed; then ws://u:***@x#***"
        );
        assert_eq!(
            redact_url(r#"{"url":"http://u:p@h","detail":"a@b"}"#),
            r#"{"url":"http://u:***@h","detail":"a@b"}"#
        );
        // Issue 14 red team: a fragment was shown in status and healthcheck.
        assert_eq!(
            redact_url("http://127.0.0.1:18002/v1#s3cretH and http://h/#a=1"),
            "http://127.0.0.1:18002/v1#*** and http://h/#***"
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

    #[test]
    fn secret_query_values_are_masked_and_others_kept() {
        assert_eq!(
            redact_url("GET http://hu:HPASS@127.0.0.1:8000/health?token=HTOKEN -> 200"),
            "GET http://hu:***@127.0.0.1:8000/health?token=*** -> 200"
        );
        assert_eq!(
            redact_url("curl http://h/v1/models?key=QSECRET&model=m&X-Amz-Signature=S#top"),
            "curl http://h/v1/models?key=***&model=m&X-Amz-Signature=***#***"
        );
        assert_eq!(
            redact_url(r#"{"u":"https://h/?api_key=A&access_token=B&passwd=C&timeout=5"}"#),
            r#"{"u":"https://h/?api_key=***&access_token=***&passwd=***&timeout=5"}"#
        );
        assert_eq!(
            redact_url("http://h/cb?next=http://u:p@x/y?auth=Z&n=1"),
            "http://h/cb?next=http://u:***@x/y?auth=***&n=1"
        );
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

        #[test]
        fn a_secret_query_value_never_shows(
            before in "[ -~]{0,12}",
            path in "(/[a-z]{0,6}){0,2}",
            others in "([a-z]{1,4}=[a-z0-9]{0,4}&){0,2}",
            key in "(api_key|token|access_token|Signature|password|auth)",
            secret in "SV[A-Za-z0-9%.~-]{1,10}",
            after in "(&[a-z]{1,4}=[a-z0-9]{0,4})?( [ -~]{0,8})?",
        ) {
            let line = format!("{before}https://h.example:8000{path}?{others}{key}={secret}{after}");
            let shown = redact_url(&line);
            proptest::prop_assert!(!shown.contains(&secret), "{}", shown);
        }
    }
}
