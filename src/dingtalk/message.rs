//! Robot message payload parsing (docs/dingtalk-protocol.md §2): the `data` of
//! `/v1.0/im/bot/messages/get` frames and the HTTP-callback body become an [`Inbound`].
//!
//! Invariants: parsing never panics on input; every documented `msgtype` maps to either
//! readable text or [`InboundContent::Unsupported`]; text is trimmed.

use std::borrow::Cow;

use serde_json::Value;

use crate::config::ConversationKind;

/// One message a user sent to the bot.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Inbound {
    pub msg_id: String,
    pub conversation_id: String,
    pub conversation_kind: ConversationKind,
    pub conversation_title: Option<String>,
    pub sender_id: String,
    pub sender_staff_id: Option<String>,
    pub sender_nick: String,
    pub content: InboundContent,
    pub session_webhook: Option<String>,
    pub session_webhook_expires_ms: Option<u64>,
    pub received_at_ms: u64,
    /// When this process read the message (its stream frame or callback), for the
    /// `clawdbot_turn_overhead_seconds` figure. Never stored: a message recovered from the
    /// journal or taken from the shared inbox has none (its time spans a restart or
    /// another replica).
    #[serde(skip)]
    pub read_at: Option<std::time::Instant>,
    /// Whether the sink that took the message made it durable yet (see
    /// [`super::durable`]): wait for it before anything outside the process sees the
    /// message's turn. Never stored: a stored message is durable.
    #[serde(skip)]
    pub durable: super::Durable,
}

/// What the message says, reduced to what the bot can answer.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum InboundContent {
    /// Trimmed text: `text` content, `audio` recognition, or the joined text parts of `richText`.
    Text(String),
    /// Pictures, files, videos, audio without a transcript, unknown types.
    Unsupported { msgtype: String },
}

/// Why a payload is not a usable robot message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    #[error("robot message is not JSON: {0}")]
    NotJson(String),
    #[error("robot message lacks required field `{0}`")]
    Missing(&'static str),
    /// The value, cut to [`QUOTED_VALUE_CHARS`] characters.
    #[error("robot message has unknown conversationType `{0}`")]
    BadConversationType(String),
    #[error("robot message's `{0}` is longer than {MAX_ID_BYTES} bytes (DingTalk's ids are far shorter)")]
    TooLong(&'static str),
}

/// The longest id (`msgId`, `conversationId`, `senderId`, `senderStaffId`) a message may
/// carry. DingTalk's are tens of bytes; these ids go into log lines and the status, which
/// a payload must not be able to fill.
pub const MAX_ID_BYTES: usize = 256;

/// The most characters of an unreadable field's value a [`ParseError`] quotes.
const QUOTED_VALUE_CHARS: usize = 40;

/// Parses a robot message from its JSON text (the frame's `data` string). A message of the
/// usual shape is read borrowed ([`super::usual_message`]); any other through a `Value`,
/// with the same result.
pub fn parse_robot_message_str(data: &str, now_ms: u64) -> Result<Inbound, ParseError> {
    if let Some(read) = super::usual_message::parse(data, now_ms) {
        return read;
    }
    let v: Value = serde_json::from_str(data).map_err(|e| ParseError::NotJson(e.to_string()))?;
    parse_robot_message(&v, now_ms)
}

/// Parses a robot message from its JSON value.
pub fn parse_robot_message(v: &Value, now_ms: u64) -> Result<Inbound, ParseError> {
    let s = |k: &str| v.get(k).and_then(Value::as_str);
    let kind = match v.get("conversationType") {
        Some(Value::String(t)) if t == "1" => Ok(ConversationKind::Direct),
        Some(Value::String(t)) if t == "2" => Ok(ConversationKind::Group),
        Some(Value::Number(n)) if n.as_u64() == Some(1) => Ok(ConversationKind::Direct),
        Some(Value::Number(n)) if n.as_u64() == Some(2) => Ok(ConversationKind::Group),
        None | Some(Value::Null) => Err(ParseError::Missing("conversationType")),
        Some(other) => {
            let quoted = other.to_string().chars().take(QUOTED_VALUE_CHARS).collect();
            Err(ParseError::BadConversationType(quoted))
        }
    };
    let webhook_expiry = v
        .get("sessionWebhookExpiredTime")
        .filter(|v| !v.is_null())
        .map(|v| match v {
            Value::Number(n) => n
                .as_u64()
                .map(i128::from)
                .or_else(|| n.as_i64().map(i128::from)),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        });
    let msgtype = s("msgtype");
    Fields {
        msg_id: s("msgId"),
        conversation_id: s("conversationId"),
        sender_id: s("senderId"),
        sender_staff_id: s("senderStaffId"),
        sender_nick: s("senderNick"),
        conversation_title: s("conversationTitle"),
        session_webhook: s("sessionWebhook"),
        kind,
        webhook_expiry,
        text: text_of(present(msgtype).unwrap_or("text"), v),
        msgtype,
    }
    .into_inbound(now_ms)
}

/// What a robot message says, borrowed from wherever it was read (a `Value`, or the text
/// of the usual shape), before it is checked. A string field is `None` when absent or not
/// a string.
pub(super) struct Fields<'a> {
    pub msg_id: Option<&'a str>,
    pub conversation_id: Option<&'a str>,
    pub sender_id: Option<&'a str>,
    pub sender_staff_id: Option<&'a str>,
    pub sender_nick: Option<&'a str>,
    pub conversation_title: Option<&'a str>,
    pub session_webhook: Option<&'a str>,
    /// `conversationType` read, or why it cannot be.
    pub kind: Result<ConversationKind, ParseError>,
    /// `sessionWebhookExpiredTime`: `None` when absent or `null`, `Some(None)` when it
    /// is not a whole number (see [`session_webhook_expiry`]).
    pub webhook_expiry: Option<Option<i128>>,
    pub msgtype: Option<&'a str>,
    /// The text the message type carries, untrimmed (see [`text_of`]).
    pub text: Option<Cow<'a, str>>,
}

impl Fields<'_> {
    /// The message, or the first thing wrong with it (ids in the order `msgId`,
    /// `conversationId`, `senderId`, `senderStaffId`, then `conversationType`). An empty
    /// string counts as absent.
    pub(super) fn into_inbound(self, now_ms: u64) -> Result<Inbound, ParseError> {
        let owned = |s: Option<&str>| present(s).map(str::to_string);
        let id = |k: &'static str, s: Option<&str>| match present(s) {
            Some(id) if id.len() > MAX_ID_BYTES => Err(ParseError::TooLong(k)),
            id => Ok(id.map(str::to_string)),
        };
        let msg_id = id("msgId", self.msg_id)?.ok_or(ParseError::Missing("msgId"))?;
        let conversation_id = id("conversationId", self.conversation_id)?
            .ok_or(ParseError::Missing("conversationId"))?;
        let sender_id = id("senderId", self.sender_id)?.unwrap_or_default();
        let sender_staff_id = id("senderStaffId", self.sender_staff_id)?;
        let conversation_kind = self.kind?;
        let msgtype = present(self.msgtype).unwrap_or("text");
        Ok(Inbound {
            msg_id,
            conversation_id,
            conversation_kind,
            conversation_title: owned(self.conversation_title),
            sender_id,
            sender_staff_id,
            sender_nick: owned(self.sender_nick).unwrap_or_default(),
            content: content(msgtype, self.text),
            session_webhook: owned(self.session_webhook),
            session_webhook_expires_ms: self
                .webhook_expiry
                .map(|ms| session_webhook_expiry(ms, now_ms)),
            received_at_ms: now_ms,
            read_at: None,
            durable: super::Durable::default(),
        })
    }
}

/// A string that is there and not empty.
fn present(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.is_empty())
}

/// The longest a session webhook can believably stay valid after it reaches us. DingTalk
/// grants about 90 minutes (docs/dingtalk-protocol.md §2); a day leaves room for clock skew and
/// then some.
pub const MAX_SESSION_WEBHOOK_LIFETIME_MS: u64 = 24 * 3_600_000;

/// A `sessionWebhookExpiredTime` that is there (`ms`: the whole number it holds, as a
/// number or a numeric string, ms since the epoch; `None` when it holds none) as the expiry
/// to honour. Anything that is not a believable expiry — zero, negative, not a whole number,
/// or more than [`MAX_SESSION_WEBHOOK_LIFETIME_MS`] after `now_ms` — becomes 0: already
/// expired, so the reply goes through the OpenAPI instead of trusting the webhook.
fn session_webhook_expiry(ms: Option<i128>, now_ms: u64) -> u64 {
    let latest = i128::from(now_ms) + i128::from(MAX_SESSION_WEBHOOK_LIFETIME_MS);
    match ms {
        Some(ms) if ms > 0 && ms <= latest => u64::try_from(ms).unwrap_or(0),
        _ => 0,
    }
}

/// The text a message of `msgtype` carries in `v`: `text.content`, an audio's
/// `content.recognition`, or the text parts of `content.richText` joined by lines.
fn text_of<'v>(msgtype: &str, v: &'v Value) -> Option<Cow<'v, str>> {
    match msgtype {
        "text" => v
            .pointer("/text/content")
            .and_then(Value::as_str)
            .map(Cow::Borrowed),
        "audio" => v
            .pointer("/content/recognition")
            .and_then(Value::as_str)
            .map(Cow::Borrowed),
        "richText" => v
            .pointer("/content/richText")
            .and_then(Value::as_array)
            .map(|parts| {
                let parts: Vec<&str> = parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .collect();
                Cow::Owned(parts.join("\n"))
            }),
        _ => None,
    }
}

/// A message's content from its type and text. Text-like content that ends up empty after
/// trimming (no transcript, no text parts) is reported as unsupported.
fn content(msgtype: &str, text: Option<Cow<'_, str>>) -> InboundContent {
    match text.as_deref().map(str::trim) {
        Some(t) if !t.is_empty() || msgtype == "text" => InboundContent::Text(t.to_string()),
        _ => InboundContent::Unsupported {
            msgtype: msgtype.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base(extra: Value) -> Value {
        let mut v = json!({"msgId":"msgA","conversationId":"cidX","conversationType":"2",
            "senderId":"$:LWCP_v1:$u","senderNick":"Li Lei","senderStaffId":"0423001",
            "conversationTitle":"Ops","sessionWebhook":"http://h/robot/sendBySession?session=ab",
            "sessionWebhookExpiredTime":1717005400123u64});
        if let (Some(m), Value::Object(e)) = (v.as_object_mut(), extra) {
            m.extend(e);
        }
        v
    }

    #[test]
    fn text_is_trimmed_and_fields_mapped() {
        let m = parse_robot_message(
            &base(json!({"msgtype":"text","text":{"content":"  deploy status? "}})),
            1717000000123,
        )
        .unwrap();
        assert_eq!(m.content, InboundContent::Text("deploy status?".into()));
        assert_eq!(m.conversation_kind, ConversationKind::Group);
        assert_eq!(m.sender_staff_id.as_deref(), Some("0423001"));
        assert_eq!(m.session_webhook_expires_ms, Some(1717005400123));
        assert_eq!(m.received_at_ms, 1717000000123);
    }

    #[test]
    fn unbelievable_webhook_expiry_counts_as_expired() {
        let now = 1_717_000_000_123u64;
        let expiry = |raw: Value| {
            parse_robot_message(&base(json!({"sessionWebhookExpiredTime": raw})), now)
                .unwrap()
                .session_webhook_expires_ms
        };
        // Believable values are kept as they are.
        assert_eq!(expiry(json!(now + 5_400_000)), Some(now + 5_400_000));
        assert_eq!(expiry(json!("1717005400123")), Some(1_717_005_400_123));
        assert_eq!(expiry(json!(now - 1)), Some(now - 1));
        // Absent stays unknown.
        assert_eq!(expiry(Value::Null), None);
        // Negative, zero, absurdly far, fractional or non-numeric: expired.
        for raw in [
            json!(-1),
            json!(-1_717_005_400_123i64),
            json!("-5"),
            json!(0),
            json!(now + MAX_SESSION_WEBHOOK_LIFETIME_MS + 1),
            json!(u64::MAX),
            json!("99999999999999999999999999"),
            json!(1.7e12),
            json!("soon"),
            json!(true),
            json!({"ms": 1}),
        ] {
            assert_eq!(expiry(raw.clone()), Some(0), "{raw}");
        }
    }

    #[test]
    fn every_documented_msgtype() {
        let cases = [
            (
                json!({"msgtype":"audio","content":{"downloadCode":"d","recognition":" hello "}}),
                Some("hello"),
            ),
            (
                json!({"msgtype":"audio","content":{"downloadCode":"d"}}),
                None,
            ),
            (
                json!({"msgtype":"richText","content":{"richText":[{"text":"a"},{"type":"picture","downloadCode":"x"},{"text":"b"}]}}),
                Some("a\nb"),
            ),
            (
                json!({"msgtype":"picture","content":{"downloadCode":"d"}}),
                None,
            ),
            (
                json!({"msgtype":"video","content":{"downloadCode":"d","duration":"5"}}),
                None,
            ),
            (
                json!({"msgtype":"file","content":{"fileName":"a.zip"}}),
                None,
            ),
            (
                json!({"msgtype":"unknownMsgType","content":{"unknownMsgType":"?"}}),
                None,
            ),
            (json!({"msgtype":"interactiveCard"}), None),
        ];
        for (extra, want) in cases {
            let t = extra["msgtype"].as_str().unwrap().to_string();
            let m = parse_robot_message(&base(extra), 0).unwrap();
            match want {
                Some(w) => assert_eq!(m.content, InboundContent::Text(w.into()), "{t}"),
                None => assert_eq!(
                    m.content,
                    InboundContent::Unsupported { msgtype: t.clone() },
                    "{t}"
                ),
            }
        }
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(parse_robot_message_str("not json", 0).is_err());
        assert!(parse_robot_message_str("[1,2]", 0).is_err());
        assert_eq!(
            parse_robot_message(&json!({"msgId":"m"}), 0),
            Err(ParseError::Missing("conversationId"))
        );
        let bad = base(json!({"conversationType":"9"}));
        assert!(matches!(
            parse_robot_message(&bad, 0),
            Err(ParseError::BadConversationType(_))
        ));
        let direct = base(json!({"conversationType":"1","text":{"content":5}}));
        assert_eq!(
            parse_robot_message(&direct, 0).unwrap().content,
            InboundContent::Unsupported {
                msgtype: "text".into()
            }
        );
    }

    /// An id longer than any DingTalk writes is refused by name, before it can fill a log
    /// line or the status; one at the limit is read. A bad `conversationType` is quoted
    /// cut short.
    #[test]
    fn overlong_ids_are_refused_by_name_and_bad_values_quoted_short() {
        let at_limit = "m".repeat(MAX_ID_BYTES);
        let read = parse_robot_message(&base(json!({"msgId": at_limit})), 0).unwrap();
        assert_eq!(read.msg_id.len(), MAX_ID_BYTES);
        for field in ["msgId", "conversationId", "senderId", "senderStaffId"] {
            let long = base(json!({ field: "中".repeat(MAX_ID_BYTES / 3 + 1) }));
            let refused = parse_robot_message(&long, 0).unwrap_err();
            assert_eq!(refused, ParseError::TooLong(field), "{field}");
            assert!(refused.to_string().contains(field), "{refused}");
        }
        let bad = base(json!({"conversationType": "9".repeat(100_000)}));
        let refused = parse_robot_message(&bad, 0).unwrap_err().to_string();
        assert!(refused.len() < 200, "{refused}");
    }
}
