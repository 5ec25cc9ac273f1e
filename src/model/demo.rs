//! The built-in demo model for quickstart: an OpenAI-compatible endpoint that answers
//! `echo: <last user message>` at once, streamed (SSE) or not.
//!
//! The simulator mounts [`router`] under `/demo/v1`. It keeps nothing between requests
//! (no prompt is stored) and has no control routes: the scriptable fake model the tests
//! use lives in the dev-only `clawdbot-testkit` crate, never in this binary.

use axum::body::Bytes;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// The model id the demo endpoint reports and answers as.
const DEMO_MODEL_ID: &str = "demo-echo";

/// The demo endpoint's routes, relative to the OpenAI base URL.
pub(crate) fn router() -> Router {
    Router::new()
        .route("/models", get(models))
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/chat/completions", post(complete))
}

async fn models() -> Json<Value> {
    Json(json!({"object": "list",
        "data": [{"id": DEMO_MODEL_ID, "object": "model", "owned_by": "clawdbot"}]}))
}

async fn complete(body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        let error = json!({"error": {"message": "the request body is not JSON",
            "type": "invalid_request_error", "code": 400}});
        return (StatusCode::BAD_REQUEST, Json(error)).into_response();
    };
    let answer = format!("echo: {}", last_user_text(&request));
    if request["stream"].as_bool().unwrap_or(false) {
        streamed(&answer)
    } else {
        Json(json!({
            "id": "demo", "object": "chat.completion", "model": DEMO_MODEL_ID,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": answer}}],
        }))
        .into_response()
    }
}

/// The content of the last `user` message ("" when there is none).
fn last_user_text(request: &Value) -> &str {
    request["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
}

/// The whole answer as one SSE body: role, content, finish, `[DONE]`.
fn streamed(answer: &str) -> Response {
    let chunk = |delta: Value, finish: Option<&str>| {
        json!({"id": "demo", "object": "chat.completion.chunk", "model": DEMO_MODEL_ID,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let events = [
        chunk(json!({"role": "assistant", "content": ""}), None).to_string(),
        chunk(json!({"content": answer}), None).to_string(),
        chunk(json!({}), Some("stop")).to_string(),
        "[DONE]".to_string(),
    ];
    let body: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_user_message_is_echoed() {
        let request = json!({"messages": [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "echo: first"},
            {"role": "user", "content": "second"},
            {"role": "system", "content": "rules"}]});
        assert_eq!(last_user_text(&request), "second");
        assert_eq!(last_user_text(&json!({"messages": 3})), "");
    }
}
