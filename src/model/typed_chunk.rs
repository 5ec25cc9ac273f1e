//! The fast path of [`super::wire::parse_chunk`]: a streamed chunk of the usual shape read
//! into borrowed structs instead of a `serde_json::Value`.
//!
//! A streamed answer is parsed once per token, so this runs hundreds of times per turn on a
//! real model. Reading it into a `Value` allocated a map and a string for every field of
//! every chunk (`id`, `object`, `created`, `system_fingerprint`, ...) only to read four of
//! them; here the unread fields are skipped and the read ones borrow from the chunk's text
//! where it has no escapes.
//!
//! Invariant: [`read`] returns `Some` only when its result is exactly what the general
//! path gives for the same text, or when the general path refused the chunk only for a
//! field that is not read (nested deeper than serde_json's 128 levels, or a number beyond
//! `f64`: skipped here without being built, without recursion, so a deep one cannot
//! overflow the stack). It returns `None` for anything it does not take in (an error
//! event, a read field of another type, a duplicate key, invalid JSON), which then goes
//! the general way. Tests compare the two over a corpus of odd chunks and over random
//! ones.

use serde::de::IgnoredAny;
use serde::Deserialize;

use super::wire::{clean_text, ChunkDelta, Usage};
use crate::json_object::{Object, Text};

/// Reads a chunk of the usual shape; `None` sends it to the general path (see the module
/// invariant).
pub(crate) fn read(data: &str) -> Option<ChunkDelta> {
    let Object(chunk) = serde_json::from_str::<Object<Chunk<'_>>>(data).ok()?;
    if chunk.error.is_some() {
        return None;
    }
    let choice = chunk.choices.as_ref().and_then(|c| c.first()).map(|c| &c.0);
    let content = choice
        .and_then(|c| c.delta.as_ref())
        .map(|d| &d.0)
        .and_then(|d| d.content.as_deref())
        .map(clean_text)
        .unwrap_or_default();
    let finish_reason = choice
        .and_then(|c| c.finish_reason.as_deref())
        .map(str::to_string);
    Some(ChunkDelta {
        content,
        finish_reason,
        usage: chunk.usage.map(|Object(u)| Usage {
            prompt_tokens: u.prompt_tokens.unwrap_or(0),
            completion_tokens: u.completion_tokens.unwrap_or(0),
        }),
        model: chunk.model.map(|m| m.0.into_owned()),
    })
}

/// The fields of a chunk that are read; every other field is skipped unread. A `null`
/// field reads as absent, as `Value::get(..).and_then(as_*)` does.
#[derive(Deserialize)]
struct Chunk<'a> {
    /// Present and not `null`: an error event, which the general path reads.
    #[serde(default)]
    error: Option<IgnoredAny>,
    #[serde(default, borrow)]
    choices: Option<Vec<Object<Choice<'a>>>>,
    #[serde(default)]
    usage: Option<Object<ChunkUsage>>,
    #[serde(default, borrow)]
    model: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(default, borrow)]
    delta: Option<Object<Delta<'a>>>,
    #[serde(default, borrow)]
    finish_reason: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(default, borrow)]
    content: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct ChunkUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::wire::parse_chunk_generally;

    /// Chunks of the shapes servers send, and of shapes they should not: each either reads
    /// here exactly as the general path reads it, or is left to it.
    const CORPUS: &[&str] = &[
        r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"qwen","system_fingerprint":"b1","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"logprobs":null,"finish_reason":null}]}"#,
        r#"{"choices":[{"index":0,"delta":{"content":"esc \"q\" \u4f60\n"}}]}"#,
        "{\"choices\":[{\"delta\":{\"content\":\"a\\u0000b\\ufffd\"}}]}",
        r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":null}}]}"#,
        r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#,
        r#"{"choices":[{"index":0,"delta":{}}],"usage":{"prompt_tokens":1}}"#,
        r#"{"choices":[{"delta":{},"finish_reason":"stop"}],"model":"m\u00e9"}"#,
        r#"{"choices":[{"delta":null}]}"#,
        r#"{"choices":null,"usage":null,"model":null,"error":null}"#,
        r#"{"choices":[{"delta":{"content":"x"}},{"delta":{"content":"second"}}]}"#,
        r#"{"choices":[{"delta":{"content":"x"}},7]}"#,
        r#"{"choices":[7]}"#,
        r#"{"choices":"no"}"#,
        r#"{"choices":[{"delta":{"content":5}}]}"#,
        r#"{"choices":[{"delta":"text"}]}"#,
        r#"{"choices":[{"finish_reason":3}]}"#,
        r#"{"usage":{"prompt_tokens":-1,"completion_tokens":2.5}}"#,
        r#"{"usage":{"prompt_tokens":"3"}}"#,
        r#"{"usage":[1,2]}"#,
        r#"{"usage":{}}"#,
        r#"{"choices":[[{"content":"in an array"}, "stop"]]}"#,
        r#"{"choices":[{"delta":["in an array"]}]}"#,
        r#"[null,[{"delta":{"content":"x"}}],null,"m"]"#,
        r#"{"model":5}"#,
        r#"{"model":"a","model":"b"}"#,
        r#"{"choices":[{"delta":{"content":"a","content":"b"}}]}"#,
        r#"{"error":{"message":"boom","type":"server_error","code":500}}"#,
        r#"{"error":"overloaded"}"#,
        r#"{"error":{"message":"context exceeds the maximum","type":"x"}}"#,
        r#"[]"#,
        r#""chunk""#,
        r#"{"choices":[{"delta":{"content":"cut"#,
        "",
        "{} trailing",
        r#"{"choices":[{"delta":{"content":"\ud800"}}]}"#,
    ];

    #[test]
    fn the_fast_path_reads_every_chunk_as_the_general_path_does_or_leaves_it() {
        let mut taken = 0;
        for chunk in CORPUS {
            let general = format!("{:?}", parse_chunk_generally(chunk));
            if let Some(fast) = read(chunk) {
                taken += 1;
                assert_eq!(format!("{:?}", Ok::<_, ()>(fast)), general, "chunk {chunk}");
            }
        }
        // The usual shapes are taken (so the fast path is in use), the odd ones left.
        assert!(taken >= 10, "only {taken} chunks took the fast path");
    }

    #[test]
    fn the_usual_chunk_takes_the_fast_path_and_an_error_event_does_not() {
        let usual = read(CORPUS[0]).expect("the usual chunk is read here");
        assert_eq!(usual.content, "Hi");
        assert_eq!(usual.model.as_deref(), Some("qwen"));
        assert!(read(r#"{"error":{"message":"boom"}}"#).is_none());
        assert!(read(r#"{"choices":[{"delta":{"content":5}}]}"#).is_none());
    }

    #[test]
    fn an_unread_field_too_deep_or_too_large_to_build_is_skipped_not_refused() {
        let deep = format!(
            r#"{{"x_debug":{}1{},"choices":[{{"delta":{{"content":"ok"}}}}]}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(parse_chunk_generally(&deep).is_err(), "too deep to build");
        assert_eq!(read(&deep).map(|d| d.content).as_deref(), Some("ok"));
        let huge = r#"{"created":1e999999,"choices":[{"delta":{"content":"ok"}}]}"#;
        assert!(parse_chunk_generally(huge).is_err(), "beyond f64");
        assert_eq!(read(huge).map(|d| d.content).as_deref(), Some("ok"));
        // In a read field the same is refused here too, and left to the general path.
        let deep_read = format!(r#"{{"usage":{}{}}}"#, "[".repeat(200), "]".repeat(200));
        assert!(read(&deep_read).is_none());
    }

    /// Any JSON built from a chunk's own keys, with any value at any place (objects,
    /// arrays, strings with escapes, numbers of every kind, null, repeated keys).
    fn chunk_like() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let key = prop::sample::select(vec![
            "choices",
            "delta",
            "content",
            "finish_reason",
            "usage",
            "prompt_tokens",
            "completion_tokens",
            "model",
            "error",
            "index",
            "role",
        ]);
        let leaf = prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            (-1e3f64..1e3).prop_map(|f| format!("{f:?}")),
            "[a-z\\\"\u{4f60}\u{0} ]{0,6}".prop_map(|t| serde_json::to_string(&t).unwrap()),
            Just(r#""\u0041\n""#.to_string()),
        ];
        leaf.prop_recursive(4, 40, 4, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|items| format!("[{}]", items.join(","))),
                prop::collection::vec((key.clone(), inner), 0..5).prop_map(|fields| {
                    let fields: Vec<String> =
                        fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                    format!("{{{}}}", fields.join(","))
                }),
            ]
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        #[test]
        fn no_chunk_reads_differently_on_the_fast_path(chunk in chunk_like()) {
            if let Some(fast) = read(&chunk) {
                proptest::prop_assert_eq!(
                    format!("{:?}", Ok::<_, ()>(fast)),
                    format!("{:?}", parse_chunk_generally(&chunk)),
                    "chunk {}", chunk
                );
            }
        }
    }
}
