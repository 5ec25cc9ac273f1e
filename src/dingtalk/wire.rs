//! Stream-mode wire types (docs/dingtalk-protocol.md §1): the downstream frame, the upstream ACK
//! and the `connections/open` exchange. Shared by the channel and the simulator so both speak the
//! exact same shapes.
//!
//! Invariants: frame `headers` are a string map (non-string values are tolerated and
//! stringified on read); `data` is always a JSON document *encoded as a string*.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::json_object::{Object, Text};

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

impl<'a> From<&'a Frame> for FrameView<'a> {
    /// The view of a frame read the general way (its headers stringified as [`Frame::header`]
    /// says).
    fn from(frame: &'a Frame) -> FrameView<'a> {
        FrameView {
            kind: Cow::Borrowed(&frame.kind),
            topic: Cow::Owned(frame.topic()),
            message_id: frame.message_id().map(Cow::Owned),
            data: Cow::Borrowed(&frame.data),
        }
    }
}

/// What the client reads of a frame: its kind, topic, `messageId` (absent when empty) and
/// data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameView<'a> {
    pub kind: Cow<'a, str>,
    pub topic: Cow<'a, str>,
    pub message_id: Option<Cow<'a, str>>,
    pub data: Cow<'a, str>,
}

impl<'a> FrameView<'a> {
    /// Reads a frame of the usual shape (an object whose `type`, `specVersion`, `data` and
    /// `topic` and `messageId` headers are strings, or `null` where optional), borrowing
    /// from `text` where a string has no escapes; `None` for any other text, which
    /// [`Frame`] then reads. Whenever this reads a frame, [`Frame`] reads the same view of
    /// it (tests hold the two together), so it only saves the general read's allocations:
    /// a map and a string for every header, and a `Value` for each header's value. The
    /// one exception: a header not read here that [`Frame`] cannot build (nested deeper
    /// than 128 levels, a number beyond `f64`, a lone surrogate escape) is skipped unbuilt,
    /// so such a frame is ACKed and handled instead of ignored.
    pub fn read_usual(text: &'a str) -> Option<FrameView<'a>> {
        let Object(frame) = serde_json::from_str::<Object<UsualFrame<'a>>>(text).ok()?;
        let Object(headers) = frame.headers;
        Some(FrameView {
            kind: frame.kind,
            topic: headers.topic.unwrap_or_default().0,
            message_id: headers
                .message_id
                .map(|id| id.0)
                .filter(|id| !id.is_empty()),
            data: frame.data,
        })
    }
}

/// A frame as [`FrameView::read_usual`] takes it: the fields [`Frame`] declares, each of
/// the type [`Frame`] gives it, with the headers that are read as strings.
#[derive(Deserialize)]
struct UsualFrame<'a> {
    #[serde(rename = "specVersion", default, borrow)]
    _spec_version: Option<Text<'a>>,
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    headers: Object<UsualHeaders<'a>>,
    #[serde(default, borrow)]
    data: Cow<'a, str>,
}

#[derive(Deserialize, Default)]
struct UsualHeaders<'a> {
    #[serde(default, borrow)]
    topic: Option<Text<'a>>,
    #[serde(rename = "messageId", default, borrow)]
    message_id: Option<Text<'a>>,
}

/// One client → server ACK, as the simulator reads it (the client writes [`ack_text`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ack {
    pub code: u16,
    pub headers: BTreeMap<String, String>,
    pub message: String,
    /// A JSON document encoded as a string.
    pub data: String,
}

/// The [`Ack`] for the frame with `message_id` (no `messageId` header when it had none),
/// as its JSON text, written straight from the borrowed parts.
pub fn ack_text(code: u16, message_id: Option<&str>, message: &str, data: &str) -> String {
    #[derive(Serialize)]
    struct AckOut<'a> {
        code: u16,
        headers: AckHeaders<'a>,
        message: &'a str,
        data: &'a str,
    }
    /// In [`Ack`]'s header order (its map's, sorted).
    #[derive(Serialize)]
    struct AckHeaders<'a> {
        #[serde(rename = "contentType")]
        content_type: &'static str,
        #[serde(rename = "messageId", skip_serializing_if = "Option::is_none")]
        message_id: Option<&'a str>,
    }
    let ack = AckOut {
        code,
        headers: AckHeaders {
            content_type: "application/json",
            message_id,
        },
        message,
        data,
    };
    serde_json::to_string(&ack).unwrap_or_default()
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
        let text = ack_text(200, Some("m\"1"), "OK", "{\"response\":null}");
        let a: Ack = serde_json::from_str(&text).unwrap();
        assert_eq!(a.code, 200);
        assert_eq!(a.headers["messageId"], "m\"1");
        assert_eq!(a.headers["contentType"], "application/json");
        assert_eq!(a.data, "{\"response\":null}");
        // Written as a map of the same headers would be.
        assert_eq!(text, serde_json::to_string(&a).unwrap());
        let none: Ack = serde_json::from_str(&ack_text(200, None, "OK", "{}")).unwrap();
        assert_eq!(none.headers.len(), 1);
    }

    /// A header not read that the general read cannot build is skipped, and the frame read
    /// as without it. (A field not read is skipped unbuilt by both reads.)
    #[test]
    fn an_unread_part_the_general_read_cannot_build_is_skipped() {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        for x in [deep.as_str(), "1e400", r#""\ud800""#] {
            let text = format!(
                r#"{{"type":"CALLBACK","data":"{{}}","headers":{{"topic":"t","messageId":"m","x":{x}}}}}"#
            );
            assert!(serde_json::from_str::<Frame>(&text).is_err(), "{text:.80}");
            let view = FrameView::read_usual(&text).expect("read here");
            assert_eq!((&*view.topic, view.message_id.as_deref()), ("t", Some("m")));
        }
    }

    /// Frames of the usual shapes are read borrowed exactly as the general read sees them;
    /// any other is left to it.
    #[test]
    fn the_usual_frame_reads_as_the_general_frame_or_is_left_to_it() {
        let corpus = [
            r#"{"specVersion":"1.0","type":"CALLBACK","headers":{"appId":"a","topic":"/v1.0/im/bot/messages/get","messageId":"m1","time":"1"},"data":"{\"msgId\":\"x\"}"}"#,
            r#"{"type":"SYSTEM","headers":{"topic":"ping","messageId":"m2"},"data":"{\"opaque\":\"o\"}"}"#,
            r#"{"type":"SYSTEM","headers":{"topic":"ping","messageId":""}}"#,
            r#"{"type":"EVENT","headers":{"topic":null,"messageId":null},"data":""}"#,
            r#"{"type":"EVENT"}"#,
            r#"{"type":"E\u0056ENT","headers":{"topic":"t\n"}}"#,
            r#"{"type":"SYSTEM","headers":{"topic":"ping","messageId":7},"data":"{}"}"#,
            r#"{"type":"SYSTEM","headers":{"topic":"a","topic":"b"}}"#,
            r#"{"type":"SYSTEM","headers":null}"#,
            r#"{"type":"SYSTEM","headers":["ping","m1"]}"#,
            r#"["1.0","SYSTEM",{"topic":"ping"},"{}"]"#,
            r#"{"type":"SYSTEM","specVersion":1}"#,
            r#"{"type":"SYSTEM","data":null}"#,
            r#"{"type":5}"#,
            r#"{"headers":{}}"#,
            r#"{"type":"SYSTEM","type":"EVENT"}"#,
            "not json",
        ];
        let mut taken = 0;
        for text in corpus {
            let general = serde_json::from_str::<Frame>(text).ok();
            if let Some(view) = FrameView::read_usual(text) {
                taken += 1;
                let general = general.expect("the general read takes it too");
                assert_eq!(view, FrameView::from(&general), "{text}");
            }
        }
        assert!(taken >= 6, "only {taken} frames were read borrowed");
    }
}
