//! The fast path of [`super::message::parse_robot_message_str`]: a robot message of the
//! usual shape read into a borrowed struct instead of a `serde_json::Value`.
//!
//! Every message the bot answers is parsed once; read into a `Value` it allocated a map
//! entry and a string for each of its twenty-odd fields (`chatbotCorpId`, `atUsers`,
//! `robotCode`, ...) only for ten to be read. Here the unread fields are skipped and the
//! read ones borrow from the text where they have no escapes.
//!
//! Invariant: [`parse`] returns `Some` only when its result is exactly what the general
//! path gives for the same text, or when the general path refused the text only for a
//! field that is not read and that it could not build: nested deeper than serde_json's 128
//! levels, a number beyond `f64`, a string with a lone UTF-16 surrogate escape. Skipped
//! here unbuilt (without recursion, so a deep one cannot overflow the stack), such a field
//! does not cost the message its answer; nothing the bot reads is read differently. It
//! returns `None` for anything else it does not take in: a
//! `msgtype` other than text, a `conversationType` other than `"1"`/`"2"`, a read field of
//! another type, an expiry that is not a whole non-negative number, a repeated key,
//! invalid JSON. Tests compare the two over a corpus and over random messages.

use serde::Deserialize;

use super::message::{Fields, Inbound, ParseError};
use crate::config::ConversationKind;
use crate::json_object::{Object, Text};

/// Reads a robot message of the usual shape; `None` sends it to the general path (see the
/// module invariant).
pub(super) fn parse(data: &str, now_ms: u64) -> Option<Result<Inbound, ParseError>> {
    let Object(m) = serde_json::from_str::<Object<UsualMessage<'_>>>(data).ok()?;
    let kind = match m.conversation_type.as_deref() {
        Some("1") => ConversationKind::Direct,
        Some("2") => ConversationKind::Group,
        _ => return None,
    };
    if !matches!(m.msgtype.as_deref(), None | Some("" | "text")) {
        return None;
    }
    let fields = Fields {
        msg_id: m.msg_id.as_deref(),
        conversation_id: m.conversation_id.as_deref(),
        sender_id: m.sender_id.as_deref(),
        sender_staff_id: m.sender_staff_id.as_deref(),
        sender_nick: m.sender_nick.as_deref(),
        conversation_title: m.conversation_title.as_deref(),
        session_webhook: m.session_webhook.as_deref(),
        kind: Ok(kind),
        webhook_expiry: m.webhook_expiry.map(|ms| Some(i128::from(ms))),
        msgtype: m.msgtype.as_deref(),
        text: m.text.and_then(|Object(t)| t.content).map(|t| t.0),
    };
    Some(fields.into_inbound(now_ms))
}

/// The fields of a robot message that are read; every other field is skipped unread. A
/// `null` field reads as absent, as `Value::get(..).and_then(as_*)` does.
#[derive(Deserialize)]
struct UsualMessage<'a> {
    #[serde(rename = "msgId", default, borrow)]
    msg_id: Option<Text<'a>>,
    #[serde(rename = "conversationId", default, borrow)]
    conversation_id: Option<Text<'a>>,
    #[serde(rename = "conversationType", default, borrow)]
    conversation_type: Option<Text<'a>>,
    #[serde(rename = "senderId", default, borrow)]
    sender_id: Option<Text<'a>>,
    #[serde(rename = "senderStaffId", default, borrow)]
    sender_staff_id: Option<Text<'a>>,
    #[serde(rename = "senderNick", default, borrow)]
    sender_nick: Option<Text<'a>>,
    #[serde(rename = "conversationTitle", default, borrow)]
    conversation_title: Option<Text<'a>>,
    #[serde(rename = "sessionWebhook", default, borrow)]
    session_webhook: Option<Text<'a>>,
    #[serde(rename = "sessionWebhookExpiredTime", default)]
    webhook_expiry: Option<u64>,
    #[serde(default, borrow)]
    msgtype: Option<Text<'a>>,
    #[serde(default, borrow)]
    text: Option<Object<UsualText<'a>>>,
}

#[derive(Deserialize)]
struct UsualText<'a> {
    #[serde(default, borrow)]
    content: Option<Text<'a>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dingtalk::message::parse_robot_message;

    /// The general path: the text read into a `Value`, then parsed.
    fn general(data: &str) -> Result<Inbound, ParseError> {
        let v: serde_json::Value =
            serde_json::from_str(data).map_err(|e| ParseError::NotJson(e.to_string()))?;
        parse_robot_message(&v, NOW)
    }

    const NOW: u64 = 1_717_000_000_123;

    /// Messages of the shapes DingTalk sends, and of shapes it should not: each either
    /// reads here exactly as the general path reads it, or is left to it.
    const CORPUS: &[&str] = &[
        r#"{"msgId":"m1","msgtype":"text","createAt":1717000000000,"conversationType":"2","conversationId":"cid1==","senderId":"$:LWCP_v1:$u","senderNick":"Li Lei","senderStaffId":"0423001","senderCorpId":"corp","chatbotUserId":"$:LWCP_v1:$bot","chatbotCorpId":"corp","robotCode":"ding1","isAdmin":false,"isInAtList":true,"atUsers":[{"dingtalkId":"$:LWCP_v1:$bot"}],"sessionWebhook":"http://h/robot/sendBySession?session=ab","sessionWebhookExpiredTime":1717005400123,"conversationTitle":"Ops","text":{"content":"  deploy status? "}}"#,
        r#"{"msgId":"m2","conversationType":"1","conversationId":"cid2","text":{"content":"esc \"q\" \u4f60\n"}}"#,
        r#"{"msgId":"m3","conversationType":"1","conversationId":"cid3","msgtype":"","text":{"content":"   "}}"#,
        r#"{"msgId":"m4","conversationType":"1","conversationId":"cid4"}"#,
        r#"{"msgId":"m5","conversationType":"1","conversationId":"cid5","text":null,"senderNick":null,"sessionWebhookExpiredTime":null}"#,
        r#"{"msgId":"m6","conversationType":"1","conversationId":"cid6","text":{"content":null}}"#,
        r#"{"msgId":"","conversationType":"1","conversationId":"cid7"}"#,
        r#"{"conversationType":"2","conversationId":"cid8"}"#,
        r#"{"msgId":"m9","conversationType":"2"}"#,
        r#"{"msgId":"m10","conversationType":"2","conversationId":"c","senderStaffId":""}"#,
        r#"{"msgId":"m11","conversationType":"2","conversationId":"c","sessionWebhookExpiredTime":0}"#,
        r#"{"msgId":"m12","conversationType":"2","conversationId":"c","sessionWebhookExpiredTime":99999999999999999}"#,
        r#"{"msgId":"m13","conversationType":"2","conversationId":"c","sessionWebhookExpiredTime":-5}"#,
        r#"{"msgId":"m14","conversationType":"2","conversationId":"c","sessionWebhookExpiredTime":"1717005400123"}"#,
        r#"{"msgId":"m15","conversationType":"2","conversationId":"c","sessionWebhookExpiredTime":1.7e12}"#,
        r#"{"msgId":"m16","conversationType":2,"conversationId":"c"}"#,
        r#"{"msgId":"m17","conversationType":"9","conversationId":"c"}"#,
        r#"{"msgId":"m18","conversationId":"c"}"#,
        r#"{"msgId":"m19","conversationType":"2","conversationId":"c","msgtype":"audio","content":{"recognition":"hi"}}"#,
        r#"{"msgId":"m20","conversationType":"2","conversationId":"c","msgtype":"picture"}"#,
        r#"{"msgId":5,"conversationType":"2","conversationId":"c"}"#,
        r#"{"msgId":"m22","conversationType":"2","conversationId":"c","text":"flat"}"#,
        r#"{"msgId":"m23","conversationType":"2","conversationId":"c","text":["content"]}"#,
        r#"{"msgId":"m24","conversationType":"2","conversationId":"c","text":{"content":5}}"#,
        r#"{"msgId":"a","msgId":"b","conversationType":"2","conversationId":"c"}"#,
        r#"["m","c","2"]"#,
        r#"{"msgId":"m27","conversationType":"2","conversationId":"c","senderNick":7}"#,
        r#"{"msgId":"m28","conversationType":"2","conversationId":"c","text":{"content":"\ud800"}}"#,
        "",
        "{} trailing",
        "[]",
        "null",
    ];

    #[test]
    fn the_fast_path_reads_every_message_as_the_general_path_does_or_leaves_it() {
        let mut taken = 0;
        for data in CORPUS {
            if let Some(fast) = parse(data, NOW) {
                taken += 1;
                assert_eq!(fast, general(data), "message {data}");
            }
        }
        assert!(taken >= 12, "only {taken} messages took the fast path");
        let usual = parse(CORPUS[0], NOW).expect("the usual message is read here");
        assert_eq!(usual.unwrap().sender_nick, "Li Lei");
    }

    /// A field the bot does not read and the general path cannot build (too deep, a
    /// number beyond `f64`, a lone surrogate) does not cost the message its answer: it is
    /// read as the same message without that field.
    #[test]
    fn an_unread_field_the_general_path_cannot_build_is_skipped() {
        let usual =
            r#""msgId":"m","conversationType":"2","conversationId":"c","text":{"content":"hi"}"#;
        let without = parse(&format!("{{{usual}}}"), NOW).expect("usual");
        for unread in [
            format!(
                r#""hostingContext":{}1{}"#,
                "[".repeat(100_000),
                "]".repeat(100_000)
            ),
            r#""createAt":1e400"#.to_string(),
            format!(r#""robotCode":{}"#, "9".repeat(401)),
            r#""chatbotUserId":"x\ud800y""#.to_string(),
        ] {
            let data = format!("{{{unread},{usual}}}");
            assert!(
                general(&data).is_err(),
                "the general path builds {unread:.40}"
            );
            assert_eq!(parse(&data, NOW), Some(without.clone()), "{unread:.40}");
        }
        // In a read field the same is refused here too, and left to the general path.
        let lone = r#"{"msgId":"m\ud800","conversationType":"2","conversationId":"c"}"#;
        assert!(parse(lone, NOW).is_none());
        let deep_text = format!(
            r#"{{{usual},"text":{}{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert!(parse(&deep_text, NOW).is_none());
    }

    #[test]
    fn an_overlong_id_is_refused_by_name_on_the_fast_path_too() {
        let long = format!(
            r#"{{"msgId":"m","conversationType":"2","conversationId":"{}"}}"#,
            "c".repeat(super::super::message::MAX_ID_BYTES + 1)
        );
        assert_eq!(
            parse(&long, NOW),
            Some(Err(ParseError::TooLong("conversationId")))
        );
    }

    /// Any JSON built from a robot message's own keys, with any value at any place
    /// (objects, arrays, strings with escapes, numbers of every kind, null, repeated keys).
    fn message_like() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let key = prop::sample::select(vec![
            "msgId",
            "conversationId",
            "conversationType",
            "senderId",
            "senderStaffId",
            "senderNick",
            "conversationTitle",
            "sessionWebhook",
            "sessionWebhookExpiredTime",
            "msgtype",
            "text",
            "content",
            "atUsers",
        ]);
        let leaf = prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            Just(r#""1""#.to_string()),
            Just(r#""2""#.to_string()),
            Just(r#""text""#.to_string()),
            Just(r#""""#.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            (-1e3f64..1e3).prop_map(|f| format!("{f:?}")),
            "[a-z\\\"\u{4f60}\u{0} ]{0,6}".prop_map(|t| serde_json::to_string(&t).unwrap()),
        ];
        let value = leaf.prop_recursive(3, 24, 4, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3)
                    .prop_map(|items| format!("[{}]", items.join(","))),
                prop::collection::vec((key.clone(), inner), 0..4).prop_map(|fields| {
                    let fields: Vec<String> =
                        fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                    format!("{{{}}}", fields.join(","))
                }),
            ]
        });
        // Most messages carry the three fields the fast path needs, so that it is taken.
        let base = r#""msgId":"m","conversationId":"c","conversationType":"2""#;
        let key = prop_oneof![
            1 => prop::sample::select(vec!["msgId", "conversationId", "conversationType"]),
            4 => prop::sample::select(vec![
                "senderId",
                "senderNick",
                "sessionWebhookExpiredTime",
                "msgtype",
                "text",
                "atUsers",
            ]),
        ];
        let plain = prop_oneof![
            Just(r#""plain""#.to_string()),
            Just(r#"{"content":" hi \n"}"#.to_string()),
            (0u64..1_800_000_000_000).prop_map(|n| n.to_string()),
        ];
        let value = prop_oneof![2 => plain, 1 => value];
        (
            prop::bool::weighted(0.8),
            prop::collection::vec((key, value), 0..4),
        )
            .prop_map(move |(with_base, fields)| {
                let mut all: Vec<String> = if with_base {
                    vec![base.to_string()]
                } else {
                    Vec::new()
                };
                all.extend(fields.iter().map(|(k, v)| format!("\"{k}\":{v}")));
                format!("{{{}}}", all.join(","))
            })
    }

    /// Random messages read the same on either path, and enough of them take the fast
    /// path for that to say something.
    #[test]
    fn no_message_reads_differently_on_the_fast_path() {
        use proptest::test_runner::{Config, TestRunner};
        let taken = std::cell::Cell::new(0u32);
        let mut runner = TestRunner::new(Config {
            cases: 2000,
            failure_persistence: None,
            ..Config::default()
        });
        let run = runner.run(&message_like(), |data| {
            if let Some(fast) = parse(&data, NOW) {
                taken.set(taken.get() + 1);
                proptest::prop_assert_eq!(fast, general(&data), "message {}", data);
            }
            Ok(())
        });
        if let Err(e) = run {
            panic!("{e}");
        }
        let taken = taken.get();
        assert!(taken >= 200, "only {taken} of 2000 took the fast path");
    }
}
