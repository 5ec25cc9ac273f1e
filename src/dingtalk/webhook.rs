//! Replies through a message's `sessionWebhook` (docs/dingtalk-protocol.md §3): no token, no
//! signing; the answer is `{"errcode":0}` or an errcode (300001 = session gone → caller falls back;
//! -1 = system busy → retried once here after [`BUSY_RETRY_DELAY`]).

use std::time::Duration;

use serde_json::{json, Value};

use super::error::ChannelError;
use super::http::{read_errcode_response, transport};

const API: &str = "sessionWebhook";

/// Back-off before the one retry of a send answered errcode -1.
pub const BUSY_RETRY_DELAY: Duration = Duration::from_secs(1);

/// The webhook body for one chunk. `at_staff_id` mentions the asker (groups): listed in
/// `at.atUserIds`, and for markdown also written as `@id` in the text so it renders.
pub fn session_body(text: &str, markdown: bool, at_staff_id: Option<&str>) -> Value {
    let at_ids: Vec<&str> = at_staff_id.into_iter().collect();
    let at = json!({"atUserIds": at_ids, "atMobiles": [], "isAtAll": false});
    if markdown {
        let text = match at_staff_id {
            Some(id) => format!("{text}\n\n@{id}"),
            None => text.to_string(),
        };
        let title = super::send::markdown_title(&text);
        json!({"msgtype": "markdown", "markdown": {"title": title, "text": text}, "at": at})
    } else {
        json!({"msgtype": "text", "text": {"content": text}, "at": at})
    }
}

/// POSTs `body` to the session webhook `url`; an explicit "system busy" answer is retried
/// once (nothing was delivered), every other failure is returned as is.
pub async fn post_session(
    http: &reqwest::Client,
    url: &reqwest::Url,
    body: &Value,
) -> Result<(), ChannelError> {
    match post_session_once(http, url, body).await {
        Err(e) if e.is_busy() => {
            tracing::warn!("session webhook answered errcode -1 (system busy); retrying once");
            tokio::time::sleep(BUSY_RETRY_DELAY).await;
            post_session_once(http, url, body).await
        }
        other => other,
    }
}

async fn post_session_once(
    http: &reqwest::Client,
    url: &reqwest::Url,
    body: &Value,
) -> Result<(), ChannelError> {
    let resp = http
        .post(url.clone())
        .header("Accept", "*/*")
        .json(body)
        .send()
        .await
        .map_err(|e| transport(API, e))?;
    read_errcode_response(API, resp).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies() {
        let t = session_body("hi", false, Some("0423001"));
        assert_eq!(t["text"]["content"], "hi");
        assert_eq!(t["at"]["atUserIds"][0], "0423001");
        let m = session_body("## ok", true, Some("0423001"));
        assert_eq!(m["msgtype"], "markdown");
        assert!(m["markdown"]["text"]
            .as_str()
            .unwrap()
            .ends_with("@0423001"));
        let d = session_body("hi", true, None);
        assert_eq!(d["markdown"]["text"], "hi");
        assert_eq!(d["at"]["atUserIds"].as_array().unwrap().len(), 0);
    }
}
