//! The fake `chat/completions` endpoint: one request turned into a JSON answer, an error
//! status, a stall, or a scripted SSE stream.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::behavior::{FakeBehavior, FakeMode};
use super::state::{FakeState, InFlight, SeenRequest};

pub(super) async fn models() -> Json<Value> {
    Json(
        json!({"object": "list", "data": [{"id": "demo-echo", "object": "model", "owned_by": "clawdbot"}]}),
    )
}

pub(super) async fn complete(
    State(state): State<FakeState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": {"message": "bad JSON", "type": "invalid_request_error", "code": 400}})))
            .into_response();
    };
    let model = req["model"].as_str().unwrap_or("").to_string();
    let stream = req["stream"].as_bool().unwrap_or(false);
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let last_user = req["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_string();
    state.record(SeenRequest {
        model: model.clone(),
        authorization,
        body: req,
    });
    let b = state.behavior(&model);
    let mut guard = state.enter();
    guard.serve().await;
    if b.mode == FakeMode::StallBeforeHeaders {
        std::future::pending::<()>().await;
    }
    sleep_ms(b.latency_ms).await;
    let text = b
        .reply
        .clone()
        .unwrap_or_else(|| format!("echo: {last_user}"));
    match b.mode {
        FakeMode::Status => {
            let status =
                StatusCode::from_u16(b.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            guard.finish();
            (
                status,
                [(header::CONTENT_TYPE, b.content_type.clone())],
                b.body.clone(),
            )
                .into_response()
        }
        FakeMode::Empty200 => {
            guard.finish();
            let ct = if stream {
                "text/event-stream"
            } else {
                "application/json"
            };
            ([(header::CONTENT_TYPE, ct)], "").into_response()
        }
        _ if !stream || b.mode == FakeMode::JsonWhenStreaming => {
            sleep_ms(b.first_token_ms).await;
            guard.finish();
            Json(json!({
                "id": "fake", "object": "chat.completion", "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
            }))
            .into_response()
        }
        _ => sse_response(script(&b, &model, &text), b.ping_ms, b.crlf, guard),
    }
}

async fn sleep_ms(ms: u64) {
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// One step of a streamed answer.
#[derive(Debug, Clone)]
enum Step {
    Wait(u64),
    /// A `data:` event.
    Data(String),
    /// A raw line (comments).
    Raw(String),
    /// Silence until the client leaves, with pings every so many ms when set.
    Forever(Option<u64>),
    /// Abort the connection.
    Abort,
    /// This `data:` event again and again, every so many ms, until the client leaves.
    Repeat(String, u64),
}

fn chunk(model: &str, delta: Value, finish: Option<&str>) -> String {
    json!({"id": "fake", "object": "chat.completion.chunk", "model": model,
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    .to_string()
}

/// The events of a streamed answer for behaviour `b`.
fn script(b: &FakeBehavior, model: &str, text: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    if b.quirks {
        steps.push(Step::Raw(": ping - 2026-01-01 00:00:00".into()));
    }
    steps.push(Step::Data(chunk(
        model,
        json!({"role": "assistant", "content": null}),
        None,
    )));
    if b.mode == FakeMode::PingForever {
        steps.push(Step::Forever(Some(b.ping_ms.unwrap_or(50))));
        return steps;
    }
    if b.mode == FakeMode::Endless {
        steps.push(Step::Wait(b.first_token_ms));
        let piece: String = text.chars().cycle().take(b.chunk_chars).collect();
        steps.push(Step::Repeat(
            chunk(model, json!({"content": piece}), None),
            b.chunk_interval_ms,
        ));
        return steps;
    }
    steps.push(Step::Wait(b.first_token_ms));
    let chars: Vec<char> = text.chars().collect();
    let pieces: Vec<String> = chars
        .chunks(b.chunk_chars.max(1))
        .map(|c| c.iter().collect())
        .collect();
    let broken = matches!(
        b.mode,
        FakeMode::ErrorInStream | FakeMode::StallMidStream | FakeMode::DieMidStream
    );
    for (i, piece) in pieces.iter().enumerate() {
        if i > 0 {
            steps.push(Step::Wait(b.chunk_interval_ms));
        }
        steps.push(Step::Data(chunk(model, json!({"content": piece}), None)));
        if b.quirks && i == 0 {
            steps.push(Step::Raw(":".into()));
            steps.push(Step::Data(chunk(model, json!({"content": ""}), None)));
            steps.push(Step::Data(chunk(model, Value::Null, None)));
            steps.push(Step::Data(chunk(model, json!({"content": null}), None)));
        }
        if broken {
            break;
        }
    }
    match b.mode {
        FakeMode::ErrorInStream => {
            steps.push(Step::Data(
                json!({"error": {"message": "fake mid-stream failure", "type": "server_error", "code": 500}}).to_string(),
            ));
            return steps;
        }
        FakeMode::StallMidStream => {
            steps.push(Step::Forever(b.ping_ms));
            return steps;
        }
        FakeMode::DieMidStream => {
            steps.push(Step::Abort);
            return steps;
        }
        FakeMode::EndWithoutDone => return steps,
        _ => {}
    }
    if b.quirks {
        steps.push(Step::Data(chunk(
            model,
            json!({"content": "\u{0}\u{fffd}"}),
            None,
        )));
    }
    steps.push(Step::Data(chunk(model, json!({}), Some("stop"))));
    if b.quirks {
        let usage = json!({"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8});
        steps.push(Step::Data(
            json!({"object": "chat.completion.chunk", "choices": [], "usage": usage}).to_string(),
        ));
        steps.push(Step::Data(
            json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}}], "usage": usage}).to_string(),
        ));
    }
    steps.push(Step::Data("[DONE]".into()));
    steps
}

type Frame = Result<Bytes, std::io::Error>;

/// Streams `steps` as SSE; the in-flight guard lives until the stream ends or the client
/// goes away.
fn sse_response(steps: Vec<Step>, ping_ms: Option<u64>, crlf: bool, guard: InFlight) -> Response {
    let (tx, rx) = mpsc::channel::<Frame>(16);
    tokio::spawn(async move {
        // Move the whole guard in (not just the field the closure touches).
        let mut guard = guard;
        let nl = if crlf { "\r\n" } else { "\n" };
        let send = |tx: &mpsc::Sender<Frame>, s: String| {
            let tx = tx.clone();
            async move { tx.send(Ok(Bytes::from(s))).await.is_ok() }
        };
        for step in steps {
            let ok = match step {
                Step::Data(d) => send(&tx, format!("data: {d}{nl}{nl}")).await,
                Step::Raw(r) => send(&tx, format!("{r}{nl}{nl}")).await,
                Step::Wait(ms) => wait_with_pings(&tx, ms, ping_ms, nl).await,
                Step::Forever(pings) => {
                    wait_with_pings(&tx, u64::MAX, pings, nl).await;
                    false
                }
                Step::Repeat(d, ms) => loop {
                    if !send(&tx, format!("data: {d}{nl}{nl}")).await
                        || !wait_with_pings(&tx, ms, ping_ms, nl).await
                    {
                        break false;
                    }
                },
                Step::Abort => {
                    let _ = tx
                        .send(Err(std::io::Error::other("fake server died")))
                        .await;
                    false
                }
            };
            if !ok {
                return;
            }
        }
        guard.finish();
    });
    let body =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// Waits `ms` (u64::MAX = until the client leaves), sending `: ping` comments every
/// `ping_ms`. False when the client went away.
async fn wait_with_pings(
    tx: &mpsc::Sender<Frame>,
    ms: u64,
    ping_ms: Option<u64>,
    nl: &str,
) -> bool {
    let end = (ms != u64::MAX).then(|| tokio::time::Instant::now() + Duration::from_millis(ms));
    loop {
        let now = tokio::time::Instant::now();
        if end.is_some_and(|e| now >= e) {
            return true;
        }
        let next_ping = ping_ms.map(|p| now + Duration::from_millis(p.max(1)));
        let wake = match (end, next_ping) {
            (Some(e), Some(p)) => Some(e.min(p)),
            (e, p) => e.or(p),
        };
        let sleep = async {
            match wake {
                Some(w) => tokio::time::sleep_until(w).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tx.closed() => return false,
            _ = sleep => {
                if next_ping.is_some_and(|p| tokio::time::Instant::now() >= p)
                    && tx.send(Ok(Bytes::from(format!(": ping - fake{nl}{nl}")))).await.is_err()
                {
                    return false;
                }
            }
        }
    }
}
