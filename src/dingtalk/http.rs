//! Shared HTTP helpers: the client, and reading DingTalk answers into values or
//! [`ChannelError`]s (new-API `{code,message}` shape, old-API `errcode`).

use std::time::Duration;

use serde_json::Value;

use super::error::ChannelError;

/// The HTTP client for every DingTalk call (bounded connect and total time).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
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

/// Reads a new-API answer: 2xx → JSON body; else `ChannelError::Api` from `{code,message}`.
pub async fn read_api_response(api: &str, resp: reqwest::Response) -> Result<Value, ChannelError> {
    let status = resp.status().as_u16();
    let text = resp.text().await.map_err(|e| transport(api, e))?;
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if (200..300).contains(&status) {
        if v.is_null() && !text.trim().is_empty() {
            return Err(ChannelError::Transport {
                api: api.into(),
                detail: "answer is not JSON".into(),
            });
        }
        return Ok(v);
    }
    let field = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    Err(ChannelError::Api {
        api: api.into(),
        status,
        code: field("code"),
        message: field("message"),
    })
}

/// Reads an old-API/webhook answer: `errcode` 0 → body; else `ChannelError::Errcode`.
pub async fn read_errcode_response(
    api: &str,
    resp: reqwest::Response,
) -> Result<Value, ChannelError> {
    let status = resp.status().as_u16();
    let text = resp.text().await.map_err(|e| transport(api, e))?;
    let v: Value = serde_json::from_str(&text).map_err(|_| ChannelError::Transport {
        api: api.into(),
        detail: format!("HTTP {status}, answer is not JSON"),
    })?;
    let errcode = match v.get("errcode").and_then(Value::as_i64) {
        Some(code) => code,
        None if (200..300).contains(&status) => 0,
        // No errcode on an error status: delivery is unknown, so never read it as "busy".
        None => {
            return Err(ChannelError::Transport {
                api: api.into(),
                detail: format!("HTTP {status} without an errcode"),
            })
        }
    };
    if errcode == 0 && (200..300).contains(&status) {
        return Ok(v);
    }
    let errmsg = v
        .get("errmsg")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    Err(ChannelError::Errcode {
        api: api.into(),
        errcode,
        errmsg,
    })
}
