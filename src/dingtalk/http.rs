//! Shared HTTP helpers: the client, and reading DingTalk answers into values or
//! [`ChannelError`]s (new-API `{code,message}` shape, old-API `errcode`).
//!
//! Invariant: the text an error quotes from an answer (`code`, `message`, `errmsg`) is one
//! line of at most [`QUOTED_CHARS`] characters with every control character escaped, and
//! in an answer to a call that carried a secret (the app secret, an access token) that
//! secret is masked (see `secret_mask`): status, the health check and the log show these
//! errors, and a gateway or look-alike that echoes its request must not put the secret or
//! a forged line there.

use std::time::Duration;

use serde_json::Value;

use super::error::ChannelError;
use super::secret_mask::masked_head;

/// The HTTP client for every DingTalk call (bounded connect and total time; TCP_NODELAY,
/// no redirects and a bounded idle pool: see `crate::http_client`). DingTalk's APIs do not
/// redirect, and a redirect followed would carry a reply past the session-webhook allowlist.
pub fn client() -> reqwest::Client {
    crate::http_client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .user_agent(concat!("clawdbot/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

/// A transport error, stripped of its URL (which may hold a session id or token).
pub fn transport(api: &str, e: reqwest::Error) -> ChannelError {
    let e = e.without_url();
    let mut detail = e.to_string();
    if let Some(src) = std::error::Error::source(&e) {
        detail.push_str(&format!(": {src}"));
    }
    ChannelError::Transport {
        api: api.to_string(),
        detail,
    }
}

/// The most characters of an answer's `code`, `message` or `errmsg` an error quotes.
pub const QUOTED_CHARS: usize = 300;

/// The most bytes of a DingTalk answer read. Its answers are a few hundred bytes (a card's
/// delivery results a few KiB); a longer one, from a look-alike or a broken gateway, is
/// `Unreadable` rather than memory the daemon is made to hold (the client's total
/// timeout bounds a slow one).
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// An answer's HTTP status and body text (at most [`MAX_ANSWER_BYTES`]; bytes that are
/// not UTF-8 replaced).
pub async fn read_answer(
    api: &str,
    resp: reqwest::Response,
) -> Result<(u16, String), ChannelError> {
    use crate::http_client::{read_capped, CappedBodyError};
    let status = resp.status().as_u16();
    match read_capped(resp, MAX_ANSWER_BYTES).await {
        // A UTF-8 body (every answer) becomes the text without a copy.
        Ok(body) => Ok((
            status,
            String::from_utf8(body)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        )),
        Err(CappedBodyError::Broken(e)) => Err(transport(api, e)),
        Err(CappedBodyError::TooLarge(limit)) => Err(ChannelError::Unreadable {
            api: api.into(),
            detail: format!("HTTP {status}, answer longer than {limit} bytes"),
        }),
    }
}

/// Reads a new-API answer to a call that carried `sent_secret`: 2xx → JSON body; else
/// `ChannelError::Api` from `{code,message}` (see [`api_answer`]).
pub async fn read_api_response(
    api: &str,
    resp: reqwest::Response,
    sent_secret: &str,
) -> Result<Value, ChannelError> {
    let (status, text) = read_answer(api, resp).await?;
    api_answer(api, status, &text, sent_secret)
}

/// The string (or number) at `key` of an answer to a call that carried `sent_secret`, as
/// an error may quote it (see the module invariant; empty when absent or of another kind). The secret is
/// masked in the decoded text before the cut: a JSON escape cannot hide it and the cut
/// cannot leave a piece of it; only a bounded head of a long text is read.
fn quoted_field(answer: &Value, key: &str, sent_secret: &str) -> String {
    let number;
    let raw = match answer.get(key) {
        Some(Value::String(text)) => text.as_str(),
        Some(Value::Number(n)) => {
            number = n.to_string();
            number.as_str()
        }
        _ => "",
    };
    let (masked, mut cut) = masked_head(raw, sent_secret, QUOTED_CHARS);
    let mut quoted = crate::control_chars::escape_controls(&masked).into_owned();
    if let Some((end, _)) = quoted.char_indices().nth(QUOTED_CHARS) {
        quoted.truncate(end);
        cut = true;
    }
    if cut {
        quoted.push('…');
    }
    quoted
}

/// Reads an old-API/webhook answer: `errcode` 0 → body; else `ChannelError::Errcode` (or
/// `Unreadable`, see [`errcode_answer`]).
pub async fn read_errcode_response(
    api: &str,
    resp: reqwest::Response,
) -> Result<Value, ChannelError> {
    let (status, text) = read_answer(api, resp).await?;
    errcode_answer(api, status, &text)
}

/// What a new-API answer (docs/dingtalk-protocol.md §4.4) means, from its HTTP status and
/// body alone. A 2xx is the JSON body (`Null` for an empty body; a body that is not JSON is
/// `Unreadable`) unless it holds a refusal (see [`refusal_despite_success`]); any
/// other status is `ChannelError::Api` with DingTalk's `code` and `message` (empty when
/// absent or neither strings nor numbers; quoted as the module invariant says, with
/// `sent_secret`, what the call carried, masked).
pub fn api_answer(
    api: &str,
    status: u16,
    body: &str,
    sent_secret: &str,
) -> Result<Value, ChannelError> {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    if (200..300).contains(&status) {
        if v.is_null() && !body.trim().is_empty() {
            return Err(ChannelError::Unreadable {
                api: api.into(),
                detail: "answer is not JSON".into(),
            });
        }
        return match refusal_despite_success(api, status, &v, sent_secret) {
            Some(refusal) => Err(refusal),
            None => Ok(v),
        };
    }
    Err(api_refusal(api, status, &v, sent_secret))
}

/// The `Api` error for a refusal: DingTalk's `code` and `message` as the module invariant
/// quotes them, or, when the answer holds neither (a proxy's HTML page, an empty body, a
/// `code` of another kind), a message that says so rather than nothing.
fn api_refusal(api: &str, status: u16, answer: &Value, sent_secret: &str) -> ChannelError {
    let code = quoted_field(answer, "code", sent_secret);
    let mut message = quoted_field(answer, "message", sent_secret);
    if code.is_empty() && message.is_empty() {
        message = if answer.is_object() {
            NO_CODE_OR_MESSAGE
        } else {
            NOT_AN_OBJECT
        }
        .to_string();
    }
    ChannelError::Api {
        api: api.into(),
        status,
        code,
        message,
    }
}

/// The message of an `Api` error whose answer is a JSON object without a readable `code`
/// or `message`.
pub const NO_CODE_OR_MESSAGE: &str = "(the answer has no code or message)";
/// The message of an `Api` error whose answer is not a JSON object (not JSON, or empty).
pub const NOT_AN_OBJECT: &str = "(the answer is not a JSON object)";

/// The refusal in a 2xx new-API answer, as a gateway or proxy in front of DingTalk may
/// write one. DingTalk's success bodies carry neither `code` nor `errcode` (§4.4), so a
/// non-empty `code` is an `Api` error and an `errcode` other than 0 an `Errcode` (or, not a
/// number, `Unreadable`): read as success, a refused send would count as delivered.
fn refusal_despite_success(
    api: &str,
    status: u16,
    answer: &Value,
    sent_secret: &str,
) -> Option<ChannelError> {
    let code_given = match answer.get("code") {
        None | Some(Value::Null) => false,
        Some(Value::String(code)) => !code.is_empty(),
        Some(_) => true,
    };
    if code_given {
        return Some(api_refusal(api, status, answer, sent_secret));
    }
    let raw = answer.get("errcode").filter(|e| !e.is_null())?;
    match read_errcode(api, status, raw) {
        Ok(0) => None,
        Ok(errcode) => Some(errcode_refusal(api, errcode, answer, sent_secret)),
        Err(unreadable) => Some(unreadable),
    }
}

/// What an old-API or webhook answer (§3, §5) means, from its HTTP status and body alone.
///
/// Success only for a 2xx whose `errcode` is 0 or absent. An `errcode` is an integer, as
/// a JSON number or a string of digits; any other value (a fraction, `null`, a word) says
/// nothing about delivery, so it is `Unreadable` and never success, as is an error status
/// without an errcode (never read as "busy" either).
/// `errmsg` is quoted as [`api_answer`] quotes `message` (no call of this kind carries a
/// secret to mask).
pub fn errcode_answer(api: &str, status: u16, body: &str) -> Result<Value, ChannelError> {
    let unknown = |detail: String| ChannelError::Unreadable {
        api: api.into(),
        detail,
    };
    let v: Value = serde_json::from_str(body)
        .map_err(|_| unknown(format!("HTTP {status}, answer is not JSON")))?;
    let success_status = (200..300).contains(&status);
    let errcode = match v.get("errcode") {
        None if success_status => 0,
        None => return Err(unknown(format!("HTTP {status} without an errcode"))),
        Some(raw) => read_errcode(api, status, raw)?,
    };
    if errcode == 0 && success_status {
        return Ok(v);
    }
    Err(errcode_refusal(api, errcode, &v, ""))
}

/// An errcode as DingTalk writes it (a JSON integer), or the same digits in a string;
/// anything else is `Unreadable`.
fn read_errcode(api: &str, status: u16, raw: &Value) -> Result<i64, ChannelError> {
    let errcode = match raw {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    errcode.ok_or_else(|| ChannelError::Unreadable {
        api: api.into(),
        detail: format!("HTTP {status}, errcode is not a number"),
    })
}

/// The `Errcode` error for an answer's non-zero `errcode`, its `errmsg` quoted as the
/// module invariant says (with `sent_secret`, what the call carried, masked).
fn errcode_refusal(api: &str, errcode: i64, answer: &Value, sent_secret: &str) -> ChannelError {
    ChannelError::Errcode {
        api: api.into(),
        errcode,
        errmsg: quoted_field(answer, "errmsg", sent_secret),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &'static str) -> reqwest::Response {
        axum::http::Response::builder()
            .status(status)
            .body(body)
            .expect("a response")
            .into()
    }

    /// A webhook answer whose errcode cannot be read as a number is not a success: the
    /// message may not have been delivered, so the caller must not count it as sent.
    #[tokio::test]
    async fn an_errcode_that_is_not_a_readable_zero_is_never_success() {
        for body in [
            r#"{"errcode":"300001","errmsg":"session 不存在"}"#,
            r#"{"errcode":"-1","errmsg":"系统繁忙"}"#,
            r#"{"errcode":300001.0,"errmsg":"x"}"#,
            r#"{"errcode":null}"#,
            r#"{"errcode":true}"#,
            r#"{"errcode":"ok"}"#,
        ] {
            let read = read_errcode_response("sessionWebhook", answer(200, body)).await;
            assert!(read.is_err(), "{body} was read as success");
        }
        let session_gone = read_errcode_response(
            "sessionWebhook",
            answer(200, r#"{"errcode":"300001","errmsg":"session 不存在"}"#),
        )
        .await
        .unwrap_err();
        assert!(session_gone.is_session_gone(), "{session_gone}");
        for ok in [r#"{"errcode":0,"errmsg":"ok"}"#, r#"{"errcode":"0"}"#, "{}"] {
            assert!(read_errcode_response("sessionWebhook", answer(200, ok))
                .await
                .is_ok());
        }
    }
}
