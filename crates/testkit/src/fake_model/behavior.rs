//! What the fake model is told to do: per model name, a [`FakeBehavior`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What the fake model does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FakeMode {
    /// Answer `echo: <last user message>` (or `reply`).
    #[default]
    Echo,
    /// Answer `status` with `body` and `content_type`.
    Status,
    /// Stream: a content chunk, then `data: {"error":...}` and the end (no `[DONE]`).
    ErrorInStream,
    /// Never send a byte (not even headers), like a queued llama.cpp request.
    StallBeforeHeaders,
    /// Stream: a content chunk, then silence forever.
    StallMidStream,
    /// Stream: the role chunk, then only `: ping` comments every `ping_ms`, forever.
    PingForever,
    /// Stream: a content chunk, then the connection is aborted.
    DieMidStream,
    /// Stream: all content, then a clean end without `finish_reason` and `[DONE]`.
    EndWithoutDone,
    /// 200 with an empty body.
    Empty200,
    /// Answer JSON (non-streamed) even when asked to stream.
    JsonWhenStreaming,
    /// Stream: content chunks of `chunk_chars` characters forever, one every
    /// `chunk_interval_ms` (0: as fast as the client reads, so a chunk is always ready),
    /// never a `finish_reason` or `[DONE]`. `chunk_chars: 0` sends empty-content chunks.
    Endless,
}

/// How one model name behaves. Every delay is in milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FakeBehavior {
    pub mode: FakeMode,
    /// Before the response headers.
    pub latency_ms: u64,
    /// Streamed: between the role chunk and the first content chunk (non-streamed: added
    /// to `latency_ms`).
    pub first_token_ms: u64,
    /// Streamed: between content chunks.
    pub chunk_interval_ms: u64,
    /// Characters per content chunk (at least 1, except in `endless` mode).
    pub chunk_chars: usize,
    /// Streamed: send `: ping` comments this often while waiting.
    pub ping_ms: Option<u64>,
    /// Fixed answer instead of the echo.
    pub reply: Option<String>,
    /// Use `\r\n` line ends in the stream.
    pub crlf: bool,
    /// Stream the quirks real servers send: comments, a role-only chunk with null content,
    /// empty and null deltas, NUL and U+FFFD in content, and both usage-chunk shapes.
    pub quirks: bool,
    /// For `status` mode.
    pub status: u16,
    pub body: String,
    pub content_type: String,
}

impl Default for FakeBehavior {
    fn default() -> Self {
        FakeBehavior {
            mode: FakeMode::Echo,
            latency_ms: 0,
            first_token_ms: 0,
            chunk_interval_ms: 0,
            chunk_chars: 8,
            ping_ms: None,
            reply: None,
            crlf: false,
            quirks: false,
            status: 500,
            body: r#"{"error":{"message":"fake failure","type":"server_error","code":500}}"#.into(),
            content_type: "application/json".into(),
        }
    }
}

/// The whole fake server's configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FakeConfig {
    /// Behaviour for model names not in `per_model`.
    pub default: FakeBehavior,
    /// Behaviour by the request's `model` field.
    pub per_model: BTreeMap<String, FakeBehavior>,
    /// Server-side slots like llama.cpp `-np`: excess requests wait without a byte sent.
    pub slots: Option<usize>,
}

impl From<FakeBehavior> for FakeConfig {
    /// Every model behaves like `default`; no server-side slot limit.
    fn from(default: FakeBehavior) -> Self {
        FakeConfig {
            default,
            ..FakeConfig::default()
        }
    }
}
