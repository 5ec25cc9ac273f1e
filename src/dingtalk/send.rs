//! Proactive sends through the robot OpenAPI (docs/dingtalk-protocol.md §4.3): group messages and
//! one-to-one batch sends. `msgParam` is a JSON document serialized into a string.
//!
//! Invariant: users DingTalk reports in `flowControlledStaffIdList` are retried in the
//! background a bounded number of times ([`FLOW_RETRY_DELAYS`]); nothing retries forever.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::api::OpenApi;
use super::error::ChannelError;

pub const GROUP_SEND: &str = "/v1.0/robot/groupMessages/send";
pub const BATCH_SEND: &str = "/v1.0/robot/oToMessages/batchSend";
/// Most user ids per batchSend call.
pub const MAX_BATCH_USERS: usize = 20;
/// Waits before each retry of flow-controlled users.
pub const FLOW_RETRY_DELAYS: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(3),
    Duration::from_secs(9),
];

/// `(msgKey, msgParam)` for a text or markdown message.
pub fn msg_key_param(text: &str, markdown: bool) -> (&'static str, String) {
    if markdown {
        (
            "sampleMarkdown",
            json!({"title": markdown_title(text), "text": text}).to_string(),
        )
    } else {
        ("sampleText", json!({"content": text}).to_string())
    }
}

/// A short title for markdown messages (shown in notifications): the first non-empty line
/// without markdown markers (no `*` or backquotes anywhere), at most 20 chars.
pub fn markdown_title(text: &str) -> String {
    let line = text
        .lines()
        .map(|l| {
            l.trim_start_matches(['#', '>', '-', ' '])
                .replace(['*', '`'], "")
        })
        .find(|l| !l.trim().is_empty());
    let t: String = line
        .as_deref()
        .unwrap_or("Reply")
        .trim()
        .chars()
        .take(20)
        .collect();
    t.trim().to_string()
}

/// Sends to a group (`openConversationId` = the group's conversation id).
pub async fn group_send(
    api: &OpenApi,
    robot_code: &str,
    conversation_id: &str,
    text: &str,
    markdown: bool,
) -> Result<Option<String>, ChannelError> {
    let (key, param) = msg_key_param(text, markdown);
    let body = json!({"robotCode": robot_code, "openConversationId": conversation_id, "msgKey": key, "msgParam": param});
    let v = api.post(GROUP_SEND, &body).await?;
    Ok(process_query_key(&v))
}

/// Sends one-to-one messages to `users` (staff ids, ≤ [`MAX_BATCH_USERS`]). Flow-controlled
/// users are retried in the background; fails when DingTalk refused every user as invalid.
pub async fn batch_send(
    api: &Arc<OpenApi>,
    robot_code: &str,
    users: &[String],
    text: &str,
    markdown: bool,
) -> Result<Option<String>, ChannelError> {
    let (key, param) = msg_key_param(text, markdown);
    let body = batch_body(robot_code, users, key, &param);
    let v = api.post(BATCH_SEND, &body).await?;
    let invalid = string_list(&v, "invalidStaffIdList");
    let throttled = string_list(&v, "flowControlledStaffIdList");
    if !throttled.is_empty() {
        tracing::warn!(
            users = throttled.len(),
            "batchSend flow-controlled some users; retrying later"
        );
        tokio::spawn(retry_flow_controlled(
            api.clone(),
            robot_code.to_string(),
            throttled,
            key,
            param,
        ));
    }
    if !invalid.is_empty() && invalid.len() >= users.len() {
        return Err(ChannelError::Undelivered(
            invalid.len(),
            "invalidStaffIdList".into(),
        ));
    }
    Ok(process_query_key(&v))
}

fn batch_body(robot_code: &str, users: &[String], key: &str, param: &str) -> Value {
    json!({"robotCode": robot_code, "userIds": users, "msgKey": key, "msgParam": param})
}

async fn retry_flow_controlled(
    api: Arc<OpenApi>,
    robot_code: String,
    mut users: Vec<String>,
    key: &str,
    param: String,
) {
    for delay in FLOW_RETRY_DELAYS {
        tokio::time::sleep(delay).await;
        match api
            .post(BATCH_SEND, &batch_body(&robot_code, &users, key, &param))
            .await
        {
            Ok(v) => users = string_list(&v, "flowControlledStaffIdList"),
            Err(e) => tracing::warn!(error = %e, "batchSend retry failed"),
        }
        if users.is_empty() {
            return;
        }
    }
    tracing::error!(
        users = users.len(),
        "batchSend gave up on flow-controlled users"
    );
}

fn string_list(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn process_query_key(v: &Value) -> Option<String> {
    v.get("processQueryKey")
        .and_then(Value::as_str)
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msg_param_is_a_json_string() {
        let (k, p) = msg_key_param("### Build\nok \"quoted\"", true);
        assert_eq!(k, "sampleMarkdown");
        let v: Value = serde_json::from_str(&p).unwrap();
        assert_eq!(v["title"], "Build");
        assert_eq!(v["text"], "### Build\nok \"quoted\"");
        assert_eq!(markdown_title("**bold** news"), "bold news");
        assert_eq!(markdown_title("**bold**"), "bold");
        let (k, p) = msg_key_param("hi", false);
        assert_eq!((k, p.as_str()), ("sampleText", r#"{"content":"hi"}"#));
    }
}
