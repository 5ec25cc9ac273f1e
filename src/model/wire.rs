//! The OpenAI chat-completions wire format: request bodies, response and chunk parsing,
//! and error-body classification. Pure functions over JSON, no I/O.

use serde::Serialize;
use serde_json::Value;

use super::error::{ModelError, ServerError};
use super::types::ChatMessage;
use crate::config::ModelConfig;

/// Longest error message kept from a server body.
const MAX_ERROR_MESSAGE_CHARS: usize = 300;

/// The request body for one call, as JSON bytes. `max_tokens` and `temperature` are sent
/// explicitly when configured (servers disagree on defaults); `stream_options` only when
/// asked for. Serialized straight from the borrowed prompt: no intermediate `Value` holding
/// a copy of every message (that copy, its drop and its re-encoding were ~1.4 % of the
/// daemon's CPU at 1 000 msg/s; issue 12).
pub fn request_body(cfg: &ModelConfig, messages: &[ChatMessage], stream: bool) -> Vec<u8> {
    let body = RequestBody {
        model: &cfg.model,
        messages,
        stream,
        max_tokens: cfg.max_tokens,
        temperature: cfg.temperature,
        stream_options: (stream && cfg.include_usage).then_some(StreamOptions {
            include_usage: true,
        }),
    };
    // Serializing plain strings, numbers and bools into a Vec cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The chat-completions request as sent (see [`request_body`]).
#[derive(Serialize)]
struct RequestBody<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

/// Token counts reported by the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// What one streamed chunk contributed.
#[derive(Debug, Default, PartialEq)]
pub struct ChunkDelta {
    /// Content text (may be empty: role-only, null or empty deltas).
    pub content: String,
    pub finish_reason: Option<String>,
    pub usage: Option<Usage>,
    /// The `model` field echoed by the server.
    pub model: Option<String>,
}

/// Parses one `data:` payload (not `[DONE]`). An `{"error":...}` event is an error. The
/// usual chunk is read by [`super::typed_chunk`] without building a `Value`; what it does
/// not take in is read by [`parse_chunk_generally`], with the same result.
pub fn parse_chunk(data: &str) -> Result<ChunkDelta, ModelError> {
    match super::typed_chunk::read(data) {
        Some(delta) => Ok(delta),
        None => parse_chunk_generally(data),
    }
}

/// [`parse_chunk`] for any payload, through a `Value`.
pub(crate) fn parse_chunk_generally(data: &str) -> Result<ChunkDelta, ModelError> {
    let v: Value = serde_json::from_str(data)
        .map_err(|e| ModelError::Stream(format!("undecodable chunk ({e})")))?;
    if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
        let server = server_error_from(err);
        return Err(if is_context_overflow(0, &server) {
            ModelError::ContextOverflow(server)
        } else {
            ModelError::Stream(format!("error event in stream{}", server.label()))
        });
    }
    let choice = v
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first());
    let content = choice
        .and_then(|c| c.get("delta"))
        .and_then(|d| d.get("content"))
        .and_then(Value::as_str)
        .map(clean_text)
        .unwrap_or_default();
    let finish_reason = choice
        .and_then(|c| c.get("finish_reason"))
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(ChunkDelta {
        content,
        finish_reason,
        usage: usage_of(&v),
        model: model_of(&v),
    })
}

/// A complete (non-streamed) answer.
#[derive(Debug, Default, PartialEq)]
pub struct Completion {
    pub text: String,
    pub finish_reason: Option<String>,
    pub usage: Option<Usage>,
    pub model: Option<String>,
    /// The answer reached `reply.max_answer_chars` and was cut (the model was not read
    /// further).
    pub cut: bool,
}

/// Parses a non-streamed 200 body. Extra fields are ignored; an `error` object inside a
/// 200 is an error.
pub fn parse_completion(body: &[u8]) -> Result<Completion, ModelError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ModelError::Empty);
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ModelError::Protocol(format!("body is not JSON ({e})")))?;
    if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
        let server = server_error_from(err);
        return Err(if is_context_overflow(0, &server) {
            ModelError::ContextOverflow(server)
        } else {
            ModelError::Protocol(format!("error object in a 200 body{}", server.label()))
        });
    }
    let choice = v
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or_else(|| ModelError::Protocol("no choices in the body".into()))?;
    let text = choice
        .get("message")
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .or_else(|| choice.get("text").and_then(Value::as_str))
        .map(clean_text)
        .unwrap_or_default();
    let finish_reason = choice
        .get("finish_reason")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(Completion {
        text,
        finish_reason,
        usage: usage_of(&v),
        model: model_of(&v),
        cut: false,
    })
}

/// Classifies a non-2xx response from its status and body (OpenAI-style JSON with int,
/// string or null `code`; `{"detail":...}`; `{"message":...}`; or plain text).
pub fn classify_http_error(status: u16, body: &[u8]) -> ModelError {
    let error = parse_error_body(body);
    if is_context_overflow(status, &error) {
        ModelError::ContextOverflow(error)
    } else if status == 401 || status == 403 {
        ModelError::Auth { status, error }
    } else {
        ModelError::Http { status, error }
    }
}

/// Reduces any error body to a [`ServerError`].
pub fn parse_error_body(body: &[u8]) -> ServerError {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => {
            if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
                server_error_from(err)
            } else if let Some(detail) = v.get("detail") {
                ServerError {
                    message: truncate(&value_text(detail)),
                    ..Default::default()
                }
            } else {
                server_error_from(&v)
            }
        }
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            ServerError {
                message: truncate(text.trim()),
                ..Default::default()
            }
        }
    }
}

/// `{"message","type","code"}` or a bare string.
fn server_error_from(err: &Value) -> ServerError {
    if let Some(s) = err.as_str() {
        return ServerError {
            message: truncate(s),
            ..Default::default()
        };
    }
    let field = |name: &str| err.get(name).map(value_text).unwrap_or_default();
    ServerError {
        kind: field("type"),
        code: field("code"),
        message: truncate(&field("message")),
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn is_context_overflow(status: u16, e: &ServerError) -> bool {
    if !(status == 0 || status == 400 || status == 413) {
        return false;
    }
    let kind = e.kind.to_ascii_lowercase();
    let code = e.code.to_ascii_lowercase();
    let msg = e.message.to_ascii_lowercase();
    kind.contains("context") && kind.contains("exceed")
        || code.contains("context_length")
        || msg.contains("context")
            && (msg.contains("exceed") || msg.contains("too long") || msg.contains("maximum"))
}

fn usage_of(v: &Value) -> Option<Usage> {
    let u = v.get("usage").filter(|u| u.is_object())?;
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    Some(Usage {
        prompt_tokens: n("prompt_tokens"),
        completion_tokens: n("completion_tokens"),
    })
}

fn model_of(v: &Value) -> Option<String> {
    v.get("model").and_then(Value::as_str).map(str::to_string)
}

/// Drops NUL characters (some chat clients and DingTalk reject them); keeps U+FFFD.
pub(crate) fn clean_text(s: &str) -> String {
    s.chars().filter(|&c| c != '\0').collect()
}

fn truncate(s: &str) -> String {
    s.chars().take(MAX_ERROR_MESSAGE_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_shapes() {
        let role =
            parse_chunk(r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":null}}]}"#)
                .unwrap();
        assert_eq!(role.content, "");
        let usage_only =
            parse_chunk(r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#)
                .unwrap();
        assert_eq!(
            usage_only.usage,
            Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 2
            })
        );
        let litellm =
            parse_chunk(r#"{"choices":[{"index":0,"delta":{}}],"usage":{"prompt_tokens":1}}"#)
                .unwrap();
        assert_eq!(litellm.content, "");
        let fin = parse_chunk(r#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#).unwrap();
        assert_eq!(fin.finish_reason.as_deref(), Some("stop"));
        let nul =
            parse_chunk("{\"choices\":[{\"delta\":{\"content\":\"a\\u0000b\\ufffd\"}}]}").unwrap();
        assert_eq!(nul.content, "ab\u{fffd}");
        let empty_delta = parse_chunk(r#"{"choices":[{"delta":null}]}"#).unwrap();
        assert_eq!(empty_delta, ChunkDelta::default());
    }

    #[test]
    fn error_event_in_stream() {
        let e =
            parse_chunk(r#"{"error":{"message":"boom secret","type":"server_error","code":500}}"#)
                .unwrap_err();
        assert!(matches!(e, ModelError::Stream(_)));
        assert!(!e.to_string().contains("secret"));
        assert!(e.failover_eligible());
    }

    #[test]
    fn a_server_error_type_or_code_that_is_not_an_identifier_is_not_shown() {
        let echoed = parse_chunk(
            r#"{"error":{"message":"m","type":"you said: my salary is 5k \n forged=1","code":"model_overloaded_v2"}}"#,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            echoed,
            "broken stream: error event in stream (type=<36 chars, not shown> code=model_overloaded_v2)"
        );
        let long = format!(
            r#"{{"error":{{"type":"{}","code":{{"nested":"x"}}}}}}"#,
            "a".repeat(5000)
        );
        let shown = classify_http_error(500, long.as_bytes()).to_string();
        assert_eq!(
            shown,
            "HTTP 500 (type=<5000 chars, not shown> code=<14 chars, not shown>)"
        );
        let usual = classify_http_error(
            429,
            br#"{"error":{"type":"rate_limit_error","code":"rate-limit.v1:x/y"}}"#,
        );
        assert!(usual
            .to_string()
            .contains("type=rate_limit_error code=rate-limit.v1:x/y"));
    }

    #[test]
    fn error_bodies() {
        let e = classify_http_error(
            503,
            br#"{"error":{"message":"Loading model","type":"unavailable_error","code":503}}"#,
        );
        assert!(matches!(e, ModelError::Http { status: 503, .. }) && e.failover_eligible());
        let e = classify_http_error(400, br#"{"error":{"code":400,"message":"request (4822 tokens) exceeds the available context size","type":"exceed_context_size_error"}}"#);
        assert!(matches!(e, ModelError::ContextOverflow(_)) && !e.failover_eligible());
        let e = classify_http_error(400, br#"{"error":{"message":"x","type":"invalid_request_error","code":"context_length_exceeded"}}"#);
        assert!(matches!(e, ModelError::ContextOverflow(_)));
        let e = classify_http_error(401, br#"{"detail":"Invalid API key"}"#);
        assert!(matches!(e, ModelError::Auth { status: 401, .. }) && !e.failover_eligible());
        assert_eq!(e.detail(), Some("Invalid API key"));
        let e = classify_http_error(500, b"Internal Server Error");
        assert_eq!(e.detail(), Some("Internal Server Error"));
        let e = classify_http_error(
            429,
            br#"{"error":{"message":"slots","type":"rate_limit_error","code":"429"}}"#,
        );
        assert!(e.failover_eligible());
        assert_eq!(e.to_string(), "HTTP 429 (type=rate_limit_error code=429)");
        let e = classify_http_error(
            404,
            br#"{"error":{"message":"nope","type":"not_found_error","code":null}}"#,
        );
        assert_eq!(
            e.to_string(),
            "HTTP 404 (type=not_found_error): not found (does base_url need /v1? is the model \
             one the server serves?)"
        );
        assert!(
            !e.to_string().contains("nope"),
            "the server's text stays out"
        );
        assert!(!e.failover_eligible());
    }

    #[test]
    fn completion_bodies() {
        let c = parse_completion(br#"{"choices":[{"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"timings":{},"x":1}"#).unwrap();
        assert_eq!(c.text, "hi");
        assert_eq!(parse_completion(b"").unwrap_err(), ModelError::Empty);
        assert!(matches!(
            parse_completion(b"<html>"),
            Err(ModelError::Protocol(_))
        ));
        assert!(matches!(
            parse_completion(br#"{"choices":[]}"#),
            Err(ModelError::Protocol(_))
        ));
    }

    fn model(extra: &str) -> ModelConfig {
        let yaml = format!(
            "kind: openai_compatible\nbase_url: http://127.0.0.1:1/v1\nmodel: qwen\n{extra}"
        );
        serde_yaml::from_str(&yaml).expect("model config")
    }

    #[test]
    fn the_request_body_carries_the_prompt_and_only_the_configured_options() {
        let prompt = [
            ChatMessage::system("policy"),
            ChatMessage::user("say \"hi\"\n你好"),
        ];
        let full = model("max_tokens: 64\ntemperature: 0.2\ninclude_usage: true");
        let body = String::from_utf8(request_body(&full, &prompt, true)).expect("utf-8");
        assert_eq!(
            body,
            r#"{"model":"qwen","messages":[{"role":"system","content":"policy"},{"role":"user","content":"say \"hi\"\n你好"}],"stream":true,"max_tokens":64,"temperature":0.2,"stream_options":{"include_usage":true}}"#
        );
        let plain = model("include_usage: true");
        let body: Value = serde_json::from_slice(&request_body(&plain, &prompt, false)).unwrap();
        assert_eq!(body["stream"], false);
        for absent in ["max_tokens", "temperature", "stream_options"] {
            assert!(body.get(absent).is_none(), "{absent} sent unasked: {body}");
        }
    }
}
