//! Replies through a message's `sessionWebhook` (docs/dingtalk-protocol.md §3): no token, no
//! signing; the answer is `{"errcode":0}` or an errcode (300001 = session gone → caller falls back;
//! -1 = system busy → retried once here after [`BUSY_RETRY_DELAY`]).

use std::borrow::Cow;
use std::time::Duration;

use serde::Serialize;

use super::error::ChannelError;
use super::http::{read_errcode_response, transport};

const API: &str = "sessionWebhook";

/// Back-off before the one retry of a send answered errcode -1.
pub const BUSY_RETRY_DELAY: Duration = Duration::from_secs(1);

/// The webhook body for one chunk, as JSON bytes. `at_staff_id` mentions the asker
/// (groups): listed in `at.atUserIds`, and for markdown also written as `@id` in the text
/// so it renders. Serialized straight from the borrowed text, without a `Value` copy.
pub fn session_body(text: &str, markdown: bool, at_staff_id: Option<&str>) -> Vec<u8> {
    let at_ids: Vec<&str> = at_staff_id.into_iter().collect();
    let at = At {
        at_user_ids: &at_ids,
        at_mobiles: [],
        is_at_all: false,
    };
    let body = if markdown {
        let text = match at_staff_id {
            Some(id) => format!("{text}\n\n@{id}").into(),
            None => Cow::Borrowed(text),
        };
        let title = super::send::markdown_title(&text);
        SessionBody::Markdown {
            markdown: MarkdownPart { title, text },
            at,
        }
    } else {
        SessionBody::Text {
            text: TextPart { content: text },
            at,
        }
    };
    // Strings and booleans into a Vec: serializing cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

/// A session webhook's body (docs/dingtalk-protocol.md §3).
#[derive(Serialize)]
#[serde(tag = "msgtype", rename_all = "lowercase")]
enum SessionBody<'a> {
    Text {
        text: TextPart<'a>,
        at: At<'a>,
    },
    Markdown {
        markdown: MarkdownPart<'a>,
        at: At<'a>,
    },
}

#[derive(Serialize)]
struct TextPart<'a> {
    content: &'a str,
}

#[derive(Serialize)]
struct MarkdownPart<'a> {
    title: String,
    text: Cow<'a, str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct At<'a> {
    at_user_ids: &'a [&'a str],
    at_mobiles: [&'a str; 0],
    is_at_all: bool,
}

/// POSTs `body` to the session webhook `url`; an explicit "system busy" answer is retried
/// once (nothing was delivered), every other failure is returned as is.
pub async fn post_session(
    http: &reqwest::Client,
    url: &reqwest::Url,
    body: &[u8],
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
    body: &[u8],
) -> Result<(), ChannelError> {
    let resp = http
        .post(url.clone())
        .header("Accept", "*/*")
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_vec())
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
        let value = |b: Vec<u8>| serde_json::from_slice::<serde_json::Value>(&b).unwrap();
        let raw = String::from_utf8(session_body("say \"hi\"", false, Some("0423001"))).unwrap();
        assert_eq!(
            raw,
            r#"{"msgtype":"text","text":{"content":"say \"hi\""},"at":{"atUserIds":["0423001"],"atMobiles":[],"isAtAll":false}}"#
        );
        let m = value(session_body("## ok", true, Some("0423001")));
        assert_eq!(m["msgtype"], "markdown");
        assert_eq!(m["markdown"]["title"], "ok");
        assert_eq!(m["markdown"]["text"], "## ok\n\n@0423001");
        let d = value(session_body("hi", true, None));
        assert_eq!(d["markdown"]["text"], "hi");
        assert_eq!(d["at"]["atUserIds"].as_array().unwrap().len(), 0);
        assert_eq!(d["at"]["isAtAll"], false);
    }
}
