//! Checks of single values, shared by the config loader and `onboard` (which checks its
//! flags with the same rules before writing anything).
//!
//! Invariant: a message never contains the value it judges (values may be secrets or
//! URLs with credentials); the caller adds the key or flag name and, for the loader, the
//! line and column.

use std::net::SocketAddr;

/// Why a single value is refused. The text never contains the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidValue {
    #[error("must be an http:// or https:// URL with a host, e.g. http://127.0.0.1:8000/v1")]
    HttpUrl,
    #[error("must not be empty")]
    Empty,
    #[error("must not contain control characters (newlines, tabs)")]
    ControlCharacters,
    #[error("must be 1 to {MAX_MODEL_NAME_CHARS} letters, digits, `_`, `-` or `.`")]
    ModelName,
    #[error("must be an IP:PORT socket address, e.g. 127.0.0.1:8787")]
    SocketAddr,
    #[error(
        "{host:?} is a host name; a listen address takes an IP (e.g. 127.0.0.1:{port}) or localhost:{port}, so that no DNS answer decides where the bot listens"
    )]
    ListenHostName { host: String, port: u16 },
    #[error("must be a conversation id (cid...) or user:STAFFID")]
    TargetId,
}

/// The smallest `prompt.max_chars`: room for a short policy prompt and a question.
pub const MIN_PROMPT_CHARS: u64 = 200;

/// An `http://` or `https://` URL with a host.
pub fn http_url(v: &str) -> Result<(), InvalidValue> {
    let ok = reqwest::Url::parse(v).is_ok_and(|u| {
        matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
    });
    if ok {
        Ok(())
    } else {
        Err(InvalidValue::HttpUrl)
    }
}

/// A name or id: not empty, no control characters (newlines, tabs).
pub fn name(v: &str) -> Result<(), InvalidValue> {
    if v.trim().is_empty() {
        Err(InvalidValue::Empty)
    } else if v.chars().any(char::is_control) {
        Err(InvalidValue::ControlCharacters)
    } else {
        Ok(())
    }
}

/// The longest model name.
pub const MAX_MODEL_NAME_CHARS: usize = 64;

/// A model name (a key under `models:`), shown raw by status, healthcheck and chat
/// `/status`: 1 to [`MAX_MODEL_NAME_CHARS`] ASCII letters, digits, `_`, `-` or `.`.
pub fn model_name(v: &str) -> Result<(), InvalidValue> {
    let plain = v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if plain && (1..=MAX_MODEL_NAME_CHARS).contains(&v.len()) {
        Ok(())
    } else {
        Err(InvalidValue::ModelName)
    }
}

/// A listen address: `IP:PORT` (`127.0.0.1:8787`, `0.0.0.0:8787`, `[::1]:8787`) or
/// `localhost:PORT`. `localhost` is the one name accepted: it is loopback by definition
/// (RFC 6761), so no DNS answer can move the listener onto the network; any other name
/// is refused, saying so.
pub fn socket_addr(v: &str) -> Result<(), InvalidValue> {
    let v = v.trim();
    if v.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    match v.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>())) {
        Some((host, Ok(_))) if host.eq_ignore_ascii_case("localhost") => Ok(()),
        Some((host, Ok(port))) if !host.is_empty() => Err(InvalidValue::ListenHostName {
            host: host.to_string(),
            port,
        }),
        _ => Err(InvalidValue::SocketAddr),
    }
}

/// A send target: a conversation id (`cid...`) or `user:STAFFID`, the forms
/// `clawdbot send --to` accepts.
pub fn target_id(v: &str) -> Result<(), InvalidValue> {
    let v = v.trim();
    let conversation = v.strip_prefix("cid").is_some_and(|rest| !rest.is_empty());
    let user = v
        .strip_prefix("user:")
        .is_some_and(|u| !u.trim().is_empty());
    if (conversation || user) && !v.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(InvalidValue::TargetId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(http_url("http://127.0.0.1:8000/v1").is_ok());
        assert!(http_url("https://api.dingtalk.com").is_ok());
        for bad in ["not a url", "ftp://x/v1", "http://", "127.0.0.1:8000", ""] {
            assert!(http_url(bad).is_err(), "{bad:?}");
        }
        assert_eq!(http_url("not a url"), Err(InvalidValue::HttpUrl));
        assert!(!InvalidValue::HttpUrl.to_string().contains("not a url"));
    }

    #[test]
    fn names_addresses_and_targets() {
        assert!(name("local-chat").is_ok());
        assert!(name(" ").is_err() && name("a\nb").is_err());
        assert!(socket_addr("127.0.0.1:8787").is_ok() && socket_addr("[::1]:1").is_ok());
        assert!(socket_addr("notanaddr").is_err() && socket_addr("127.0.0.1").is_err());
        assert!(socket_addr("localhost:8787").is_ok() && socket_addr("LocalHost:1").is_ok());
        let e = socket_addr("example.com:8787").unwrap_err().to_string();
        assert!(
            e.contains("host name") && e.contains("localhost:8787"),
            "{e}"
        );
        assert!(target_id("cidAbc==").is_ok() && target_id("user:0423001").is_ok());
        for bad in ["garbage", "cid", "user:", "user: ", "", "123"] {
            assert!(target_id(bad).is_err(), "{bad:?}");
        }
    }
}
