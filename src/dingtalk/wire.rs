//! Stream-mode wire types (docs/dingtalk-protocol.md §1): the downstream frame, the upstream ACK
//! and the `connections/open` exchange. Shared by the channel and the simulator so both speak the
//! exact same shapes.
//!
//! Invariants: frame `headers` are a string map (non-string values are tolerated and
//! stringified on read); `data` is always a JSON document *encoded as a string*.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Topic of robot messages (`CALLBACK`).
pub const TOPIC_BOT_MESSAGE: &str = "/v1.0/im/bot/messages/get";
/// Topic of "delegate" robot messages; parsed like [`TOPIC_BOT_MESSAGE`].
pub const TOPIC_BOT_DELEGATE: &str = "/v1.0/im/bot/messages/delegate";
/// Topic of card action callbacks.
pub const TOPIC_CARD_CALLBACK: &str = "/v1.0/card/instances/callback";
/// SYSTEM topics.
pub const TOPIC_PING: &str = "ping";
pub const TOPIC_DISCONNECT: &str = "disconnect";

pub const TYPE_SYSTEM: &str = "SYSTEM";
pub const TYPE_EVENT: &str = "EVENT";
pub const TYPE_CALLBACK: &str = "CALLBACK";

/// One server → client frame.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Frame {
    #[serde(
        rename = "specVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub spec_version: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub headers: BTreeMap<String, Value>,
    /// A JSON document encoded as a string.
    #[serde(default)]
    pub data: String,
}

impl Frame {
    /// A header as a string (numbers and booleans are stringified; absent → `None`).
    pub fn header(&self, name: &str) -> Option<String> {
        match self.headers.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }

    pub fn topic(&self) -> String {
        self.header("topic").unwrap_or_default()
    }

    pub fn message_id(&self) -> Option<String> {
        self.header("messageId").filter(|s| !s.is_empty())
    }
}

/// One client → server ACK.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ack {
    pub code: u16,
    pub headers: BTreeMap<String, String>,
    pub message: String,
    /// A JSON document encoded as a string.
    pub data: String,
}

impl Ack {
    /// An ACK for the frame with `message_id` (empty when the frame had none).
    pub fn new(code: u16, message_id: Option<String>, message: &str, data: String) -> Ack {
        let mut headers = BTreeMap::new();
        headers.insert("contentType".to_string(), "application/json".to_string());
        if let Some(id) = message_id {
            headers.insert("messageId".to_string(), id);
        }
        Ack {
            code,
            headers,
            message: message.to_string(),
            data,
        }
    }
}

/// One subscription in `connections/open`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Subscription {
    #[serde(rename = "type")]
    pub kind: String,
    pub topic: String,
}

/// Body of `POST /v1.0/gateway/connections/open`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenRequest<'a> {
    pub client_id: &'a str,
    pub client_secret: &'a str,
    pub subscriptions: Vec<Subscription>,
    pub ua: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_ip: Option<String>,
}

/// Answer of `connections/open`; both fields must be non-empty.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenResponse {
    #[serde(default)]
    pub endpoint: String,
    #[serde(default)]
    pub ticket: String,
}

/// The subscriptions the bot registers.
pub fn bot_subscriptions() -> Vec<Subscription> {
    [TOPIC_BOT_MESSAGE, TOPIC_CARD_CALLBACK]
        .iter()
        .map(|t| Subscription {
            kind: TYPE_CALLBACK.into(),
            topic: (*t).into(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_tolerates_non_string_headers_and_unknown_fields() {
        let f: Frame = serde_json::from_str(
            r#"{"type":"SYSTEM","headers":{"topic":"ping","messageId":"m1","time":1717},"data":"{}","time":5}"#,
        )
        .unwrap();
        assert_eq!(f.topic(), "ping");
        assert_eq!(f.header("time").as_deref(), Some("1717"));
        assert_eq!(f.message_id().as_deref(), Some("m1"));
    }

    #[test]
    fn ack_carries_message_id_and_content_type() {
        let a = Ack::new(200, Some("m1".into()), "OK", "{\"response\":null}".into());
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["headers"]["messageId"], "m1");
        assert_eq!(v["headers"]["contentType"], "application/json");
        assert!(v["data"].is_string());
    }
}
