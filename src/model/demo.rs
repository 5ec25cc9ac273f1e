//! The built-in demo model: an OpenAI-compatible endpoint that echoes the last user
//! message. The simulator serves it under `/demo/v1` so `quickstart` needs no model server.

use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// Routes relative to the OpenAI base URL: `/models` and `/chat/completions`.
pub fn router() -> Router {
    Router::new()
        .route("/models", get(models))
        .route("/chat/completions", post(complete))
}

async fn models() -> Json<Value> {
    Json(
        json!({"object": "list", "data": [{"id": "demo-echo", "object": "model", "owned_by": "clawdbot"}]}),
    )
}

async fn complete(Json(body): Json<Value>) -> Json<Value> {
    let last = body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or("");
    Json(json!({
        "id": "demo", "object": "chat.completion", "model": "demo-echo",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": format!("echo: {last}")}}]
    }))
}
